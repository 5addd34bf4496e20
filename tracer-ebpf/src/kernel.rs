//! What every tracer's kernel module shares: reading its settings, counting its drops, and
//! reading kernel memory at offsets the loader found in BTF (aya-ebpf has no CO-RE).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel},
    maps::PerCpuArray,
};

/// A tracer's settings: a read-only global, overwritten by the loader before loading
/// (`EbpfLoader::override_global`). Starts all zero: the settings types hold only integers.
macro_rules! config_global {
    ($name:ident: $ty:ty) => {
        #[unsafe(no_mangle)]
        pub static $name: $ty = {
            // SAFETY: the type is a #[repr(C)] struct of integers, for which all-zero is valid.
            unsafe { core::mem::zeroed() }
        };
    };
}
pub(crate) use config_global;

/// Reads one field of a settings global. The volatile read keeps the compiler from folding in
/// the compiled-in zero; the verifier then folds the loaded value, since the map is frozen, so
/// branches on settings cost nothing at run time.
macro_rules! setting {
    ($global:ident . $field:ident) => {
        $crate::kernel::read_setting(&$global.$field)
    };
}
pub(crate) use setting;

/// A volatile read of a field of a settings global.
#[inline(always)]
pub fn read_setting<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid, aligned reference; the read has no side effects.
    unsafe { core::ptr::read_volatile(field) }
}

/// Counts one drop in a tracer's `<TRACER>_DROPS` per-CPU array.
#[inline(always)]
pub fn count_drop(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; programs on one CPU do not run concurrently on it.
        unsafe { *counter += 1 };
    }
}

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

/// The current `task_struct` as a BTF pointer: its fields can be read with [`btf_field`]. Only
/// on kernels that have the helper (5.11+): callers check their settings' `task_btf` first, and
/// the verifier never sees the call on older kernels (a branch on a read-only setting is pruned).
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    // SAFETY: no preconditions; the result is a trusted pointer to the running task.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A field of the current task: a plain load through the BTF pointer when `btf`, else a probe
/// read.
#[inline(always)]
pub fn current_task_field<T: Copy + Default>(offset: u32, btf: bool) -> T {
    if btf {
        btf_field(current_task_btf(), offset)
    } else {
        read_at(current_task(), offset).unwrap_or_default()
    }
}

/// Whether the current task is a kernel thread (PF_KTHREAD).
#[inline(always)]
pub fn current_is_kthread(flags_offset: u32, btf: bool) -> bool {
    const PF_KTHREAD: u32 = 0x0020_0000;
    current_task_field::<u32>(flags_offset, btf) & PF_KTHREAD != 0
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

/// A u32 in global data that all CPUs update with atomic adds (BPF_ATOMIC | BPF_ADD), alone in
/// its cache line: one counter's writes (the in-flight count, at every traced request) must not
/// take the line of another that is read at every event and rarely written.
#[repr(C, align(64))]
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
