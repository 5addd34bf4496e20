//! Types that scalp-bpf's kernel programs write and its loader reads, one module per tracer.
//!
//! Every type here is `#[repr(C)]`, made of fixed-width fields with padding written out, and has
//! its size pinned by a `const` assertion, because the two sides are compiled for different
//! targets (bpfel-unknown-none and the host) and must agree byte for byte.
//!
//! Each tracer's module holds its map names, its map key/value types, its drop reasons and its
//! kernel configuration (a read-only global of its own, named by its `CONFIG` constant, which
//! the loader fills in before loading).
#![no_std]

pub mod blockio;
pub mod dispatch;
pub mod drops;
pub mod fileio;
pub mod hist;
pub mod process;
pub mod python;
pub mod slots;
pub mod sockets;
pub mod syscalls;

/// Marks types that may be copied in and out of BPF maps (user side only).
#[macro_export]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, holds only integers, and has no implicit
            // padding (each has a size assertion next to its definition).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

/// A syscall number no architecture uses.
pub const NO_SYSCALL: u32 = u32::MAX - 1;
