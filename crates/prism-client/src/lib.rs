//! A Rust client for Prism.
//!
//! - [`Signaling`]: the `/ws` WebSocket with typed messages (and raw frames,
//!   for tests that send garbage).
//! - [`MediaClient`]: a whole participant: joins a room, publishes synthetic
//!   Opus and VP8 tracks on its publish leg, answers the server's offers on its
//!   subscribe leg, and counts and checks every packet it receives. Each peer
//!   connection is an `rtc` sans-I/O core on its own loopback UDP socket,
//!   driven by one task.
//!
//! Synthetic payloads carry (sender, track kind, sequence, send time, and
//! for simulcast the layer and its picture size) and a deterministic filler,
//! so a receiver can prove the bytes arrived intact, measure latency and
//! tell which layer it gets without decoding (see [`payload`]).
//!
//! Simulcast: [`ClientOptions::simulcast`] publishes the video as rid layers
//! exactly as browsers do ([`LayerSpec::three`]); each received track keeps
//! per-layer counts and the order of layers ([`ReceivedTrack::layers`],
//! [`ReceivedTrack::layer_runs`]); [`ClientOptions::max_receive_bitrate`]
//! makes a weak subscriber the server's allocator must fit.

pub mod client;
pub mod events;
pub mod histogram;
pub mod janus;
mod leg;
pub mod payload;
pub mod signaling;
pub mod state;

pub use client::{ClientCommand, ClientOptions, LayerSpec, MediaClient};
pub use histogram::Histogram;
pub use leg::sample_offer;
pub use payload::{LayerTag, Probe, ProbeError};
pub use signaling::Signaling;
pub use state::{ClientState, LayerRun, ReceivedLayer, ReceivedTrack, SentLayer, SeqWindow};
