//! Types that scalp-bpf's kernel programs write and its loader reads.
//!
//! Every type here is `#[repr(C)]`, made of fixed-width fields with padding written out, and has
//! its size pinned by a `const` assertion, because the two sides are compiled for different
//! targets (bpfel-unknown-none and the host) and must agree byte for byte.
#![no_std]

pub mod blockio;
pub mod config;
pub mod drops;
pub mod fileio;
pub mod hist;
pub mod maps;
pub mod process;
pub mod sql;
pub mod syscalls;

/// Marks types that may be copied in and out of BPF maps (user side only).
#[cfg(feature = "user")]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the type is `#[repr(C)]`, `Copy`, holds only integers, and has no implicit
            // padding (each has a size assertion next to its definition).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

#[cfg(feature = "user")]
pod!(
    config::Config,
    process::ProcessEvent,
    syscalls::SyscallKey,
    syscalls::SyscallStats,
    syscalls::InFlight,
    fileio::FileIoKey,
    fileio::FileIoStats,
    fileio::FileKey,
    fileio::FileStats,
    blockio::BlockKey,
    blockio::BlockStats,
    blockio::BlockInflight,
    blockio::Owner,
    sql::SqlEventHeader,
    sql::SqlConnInfo,
    sql::SqlSock,
);
