//! Criterion benches live in `benches/`; see docs/performance.md.
