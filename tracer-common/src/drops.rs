//! What the kernel side could not record. Each tracer counts its own losses in a per-CPU array
//! of its own (`<TRACER>_DROPS`), indexed by a `#[repr(u32)]` reason enum that implements
//! [`Reasons`]; user space reads every tracer's array each interval. Nothing is dropped
//! silently.

/// A tracer's drop reasons.
pub trait Reasons: Copy + 'static {
    /// The tracer, as written to the `drops` table.
    const TRACER: &'static str;
    /// The name of its `PerCpuArray<u64>` map.
    const MAP: &'static str;
    /// Every reason, in index order (`ALL[i] as u32 == i`).
    const ALL: &'static [Self];
    /// The index in the map.
    fn index(self) -> u32;
    /// The reason, as written to the `drops` table.
    fn name(self) -> &'static str;
}

/// Defines a tracer's drop reasons: the enum, its [`Reasons`] impl and a check that the
/// indexes follow each other.
#[macro_export]
macro_rules! drop_reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident for ($tracer:literal, $map:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $index:literal => $reason:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $index, )*
        }

        impl $crate::drops::Reasons for $name {
            const TRACER: &'static str = $tracer;
            const MAP: &'static str = $map;
            const ALL: &'static [Self] = &[$($name::$variant),*];

            #[inline(always)]
            fn index(self) -> u32 {
                self as u32
            }

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $reason,)*
                }
            }
        }

        // The user side reads the array by position.
        const _: () = {
            let all: &[$name] = <$name as $crate::drops::Reasons>::ALL;
            let mut i = 0;
            while i < all.len() {
                assert!(all[i] as usize == i);
                i += 1;
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::Reasons;

    crate::drop_reasons! {
        /// Reasons for the test.
        pub enum TestDrop for ("test", "TEST_DROPS") {
            /// First.
            First = 0 => "first",
            Second = 1 => "second",
        }
    }

    #[test]
    fn reasons_are_listed_in_index_order_with_their_names() {
        assert_eq!(TestDrop::ALL, &[TestDrop::First, TestDrop::Second]);
        assert_eq!(TestDrop::Second.index(), 1);
        assert_eq!(TestDrop::Second.name(), "second");
        assert_eq!(TestDrop::TRACER, "test");
        assert_eq!(TestDrop::MAP, "TEST_DROPS");
    }
}
