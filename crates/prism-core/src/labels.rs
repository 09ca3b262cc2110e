//! Enums whose variants are metric label values, declared once with
//! [`labelled_enum!`], and [`Counts`]: one plain counter per value. Every
//! such enum gets its list (`ALL`), its size (`COUNT`), its index and its
//! labels from the one table, so a value added later can never be missing
//! from the list, the labels or the counters (the drift that made a ninth
//! drop reason panic on the packet path).

use std::marker::PhantomData;

/// An enum declared by [`labelled_enum!`].
pub trait Label: Copy + 'static {
    /// Every value, in declaration order: `ALL[v.index()] == v`.
    const ALL: &'static [Self];
    fn index(self) -> usize;
    /// The metric label.
    fn as_str(self) -> &'static str;
}

/// The most values a [`labelled_enum!`] may have (checked at compile time),
/// so [`Counts`] is a plain array: no allocation, `Copy`.
pub const MAX_LABELS: usize = 16;

/// Declares an enum whose variants are label values:
///
/// ```
/// prism_core::labelled_enum! {
///     /// Why something happened.
///     pub enum Why {
///         /// One reason.
///         One => "one",
///         Two => "two",
///     }
/// }
/// assert_eq!(Why::ALL, &[Why::One, Why::Two]);
/// assert_eq!((Why::Two.index(), Why::Two.as_str(), Why::COUNT), (1, "two", 2));
/// ```
#[macro_export]
macro_rules! labelled_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$doc:meta])* $variant:ident => $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$doc])* $variant, )*
        }

        impl $name {
            /// Every value, in declaration order: `ALL[v.index()] == v`.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The number of values.
            pub const COUNT: usize = Self::ALL.len();

            /// This value's slot in a [`Counts`]($crate::labels::Counts).
            #[inline]
            pub fn index(self) -> usize {
                self as usize
            }

            /// The metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }

        const _: () = assert!(
            $name::COUNT <= $crate::labels::MAX_LABELS,
            "more label values than labels::Counts holds"
        );

        impl $crate::labels::Label for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn index(self) -> usize {
                $name::index(self)
            }
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

/// One plain counter per value of `L`, summed across rooms and shards.
pub struct Counts<L> {
    n: [u64; MAX_LABELS],
    _label: PhantomData<L>,
}

impl<L> Clone for Counts<L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L> Copy for Counts<L> {}
impl<L> Default for Counts<L> {
    fn default() -> Self {
        Counts {
            n: [0; MAX_LABELS],
            _label: PhantomData,
        }
    }
}
impl<L> PartialEq for Counts<L> {
    fn eq(&self, o: &Self) -> bool {
        self.n == o.n
    }
}
impl<L> Eq for Counts<L> {}
impl<L: Label + std::fmt::Debug> std::fmt::Debug for Counts<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<L: Label> Counts<L> {
    #[inline]
    pub fn inc(&mut self, l: L) {
        self.n[l.index()] += 1;
    }

    #[inline]
    pub fn add_n(&mut self, l: L, n: u64) {
        self.n[l.index()] += n;
    }

    pub fn get(&self, l: L) -> u64 {
        self.n[l.index()]
    }

    /// Adds another set of counts (another room's, another shard's).
    pub fn add(&mut self, o: &Counts<L>) {
        for (a, b) in self.n.iter_mut().zip(o.n) {
            *a += b;
        }
    }

    /// What was counted since `earlier` (an earlier copy of these counts).
    pub fn since(&self, earlier: &Counts<L>) -> Counts<L> {
        let mut d = *self;
        for (a, b) in d.n.iter_mut().zip(earlier.n) {
            *a = a.saturating_sub(b);
        }
        d
    }

    /// (label, count) for the values counted at least once.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        self.iter()
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (l.as_str(), n))
            .collect()
    }

    /// (value, count) for every value, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL.iter().map(|l| (*l, self.get(*l)))
    }

    pub fn total(&self) -> u64 {
        self.n.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::labelled_enum! {
        /// Three values.
        enum Abc {
            A => "a",
            B => "b",
            C => "c",
        }
    }

    #[test]
    fn counts_follow_the_enum() {
        let mut c = Counts::<Abc>::default();
        c.inc(Abc::C);
        c.add_n(Abc::A, 4);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(
            sum.iter().collect::<Vec<_>>(),
            vec![(Abc::A, 8), (Abc::B, 0), (Abc::C, 2)]
        );
        assert_eq!(sum.total(), 10);
        assert_eq!(sum.since(&c).nonzero(), vec![("a", 4), ("c", 1)]);
        assert_eq!(
            Abc::ALL.iter().map(|v| v.as_str()).collect::<String>(),
            "abc"
        );
        assert!(Abc::ALL.iter().enumerate().all(|(i, v)| v.index() == i));
    }
}
