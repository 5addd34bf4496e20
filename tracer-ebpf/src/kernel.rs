//! Reading kernel memory at offsets the loader found in BTF (aya-ebpf has no CO-RE).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

/// Reads a `T` at `base + offset` in kernel memory; None if `base` is null or the read faults.
#[inline(always)]
pub fn read_at<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies through a fault-safe path; a bad address only fails.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// Reads a pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read_at::<u64>(base, offset)
        .map(|p| p as *const u8)
        .filter(|p| !p.is_null())
}

/// The current `task_struct`, for probe reads.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: the helper has no preconditions; the address is only used with probe reads.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// A field of a BTF-typed tracepoint argument at a constant offset (the verifier turns the load
/// into a fault-safe one and checks it against the type).
#[inline(always)]
pub fn btf_field<T: Copy>(ptr: *const u8, offset: u32) -> T {
    // SAFETY: `ptr` is a BTF pointer argument of a tp_btf program; the offset comes from the
    // kernel's BTF for that type.
    unsafe { core::ptr::read_volatile(ptr.add(offset as usize) as *const T) }
}
