//! A zeroed source for initializing new hash map entries.
//!
//! `insert(&key, &Stats::ZERO)` would point the helper at a constant in .rodata; with several
//! such constants the relocation of all but the first went to the wrong offset (new entries started
//! as a copy of CONFIG). Map memory is zeroed by the kernel and never written here.

use aya_ebpf::{bindings::BPF_F_RDONLY_PROG, macros::map, maps::Array};

/// Bytes of the largest value initialized from here.
const ZERO_BYTES: usize = 512;

#[map]
static ZERO: Array<[u64; ZERO_BYTES / 8]> = Array::with_max_entries(1, BPF_F_RDONLY_PROG);

/// A zeroed `T` in map memory, for `insert`.
#[inline(always)]
pub fn zeroed<T>() -> Option<&'static T> {
    const { assert!(core::mem::size_of::<T>() <= ZERO_BYTES) };
    let p = ZERO.get_ptr(0)?;
    // SAFETY: the element is ZERO_BYTES of zeroes, at least size_of::<T>() and 8-aligned, and T is
    // plain old data whose all-zero bit pattern is valid.
    Some(unsafe { &*(p as *const T) })
}
