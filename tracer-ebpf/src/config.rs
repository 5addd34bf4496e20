//! The read-only settings the loader fills in before loading (see `tracer_common::config`).

use tracer_common::config::Config;

/// Overwritten by the loader (`EbpfLoader::set_global`); never read directly: use [`setting!`].
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::UNSET;

/// Reads one field of [`CONFIG`]. The volatile read keeps the compiler from folding in the
/// compiled-in value; the verifier then folds the loaded one, since the map is frozen.
macro_rules! setting {
    ($field:ident) => {
        $crate::config::read(&$crate::config::CONFIG.$field)
    };
}
pub(crate) use setting;

/// A volatile read of a field of [`CONFIG`].
#[inline(always)]
pub fn read<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid, aligned reference; the read has no side effects.
    unsafe { core::ptr::read_volatile(field) }
}
