//! Reading kernel memory at offsets the loader found in BTF (aya-ebpf has no CO-RE).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel};

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

/// The current `task_struct` as a BTF pointer: its fields can be read with [`btf_field`].
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    // SAFETY: no preconditions; the result is a trusted pointer to the running task.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// Whether the current task is a kernel thread (PF_KTHREAD).
#[inline(always)]
pub fn current_is_kthread() -> bool {
    const PF_KTHREAD: u32 = 0x0020_0000;
    let flags: u32 = btf_field(
        current_task_btf(),
        crate::config::setting!(task_flags_offset),
    );
    flags & PF_KTHREAD != 0
}

/// A field of a BTF-typed pointer (a tracepoint argument, or a pointer loaded from one) at a
/// constant offset: a plain load the verifier makes fault-safe and checks against the type.
#[inline(always)]
pub fn btf_field<T: Copy>(ptr: *const u8, offset: u32) -> T {
    // SAFETY: `ptr` is a BTF pointer argument of a tp_btf program; the offset comes from the
    // kernel's BTF for that type.
    unsafe { core::ptr::read_volatile(ptr.add(offset as usize) as *const T) }
}

/// A kernel pointer's address as a plain number. The verifier keeps a pointer a pointer through
/// casts, spills and fills, and refuses arithmetic on it; copied out of the stack by a helper, it
/// is a number. One helper call, far cheaper than a hash map keyed by the pointer.
#[inline(always)]
pub fn address_of(ptr: *const u8) -> u64 {
    let slot = [ptr];
    // SAFETY: the helper reads 8 bytes of `slot`, on this program's stack.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot.as_ptr() as *const u64) }.unwrap_or(0)
}

/// A u32 in global data that all CPUs update with atomic adds (BPF_ATOMIC | BPF_ADD).
#[repr(transparent)]
pub struct SharedCounter(core::cell::UnsafeCell<u32>);

// SAFETY: every write is an atomic add; reads are single aligned loads.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    pub const fn new() -> SharedCounter {
        SharedCounter(core::cell::UnsafeCell::new(0))
    }

    #[inline(always)]
    pub fn add(&self, v: u32) {
        // SAFETY: an aligned u32 in map memory; the add is atomic.
        unsafe {
            core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
                self.0.get(),
                v,
            );
        }
    }

    #[inline(always)]
    pub fn sub(&self, v: u32) {
        self.add(0u32.wrapping_sub(v));
    }

    #[inline(always)]
    pub fn get(&self) -> u32 {
        // SAFETY: an aligned u32; a torn read is impossible for one word.
        unsafe { core::ptr::read_volatile(self.0.get()) }
    }
}
