//! The user side of the `TRACED` map: mapped into our memory so that marking one process is a
//! single byte store that cannot clobber a neighbour the kernel marks at the same moment.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::{Map, MapData};
use tracer_common::process::{TGIDS_PER_ELEMENT, TRACED_FLAG, generation, next_traced_byte};

/// `TRACED`, mmapped.
pub struct TracedMap {
    base: NonNull<u8>,
    len: usize,
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory; all access goes through volatile byte operations.
unsafe impl Send for TracedMap {}

impl TracedMap {
    /// Maps the array (created with BPF_F_MMAPABLE) of `elements` 8-byte elements.
    pub fn new(map: Map, elements: u32) -> io::Result<TracedMap> {
        let Map::Array(map) = map else {
            return Err(io::Error::other("TRACED is not an array map"));
        };
        let len = elements as usize * TGIDS_PER_ELEMENT as usize;
        // SAFETY: mapping a BPF array fd of at least `len` bytes, shared, read-write; the result
        // is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(TracedMap {
            base,
            len,
            _map: map,
        })
    }

    fn slot(&self, tgid: u32) -> Option<*mut u8> {
        let i = tgid as usize;
        // SAFETY: in bounds of the mapping.
        (i < self.len).then(|| unsafe { self.base.as_ptr().add(i) })
    }

    /// The byte of `tgid` (0 beyond the map).
    pub fn get(&self, tgid: u32) -> u8 {
        // SAFETY: a valid byte of the mapping.
        self.slot(tgid).map_or(0, |p| unsafe { p.read_volatile() })
    }

    /// Marks `tgid` traced with a new generation; returns the generation, or None when the tgid
    /// is beyond pid_max or already traced (then its current generation is kept: Err).
    pub fn mark(&self, tgid: u32) -> Result<u8, MarkError> {
        let p = self.slot(tgid).ok_or(MarkError::OutOfRange)?;
        // SAFETY: a valid byte of the mapping.
        let old = unsafe { p.read_volatile() };
        if old & TRACED_FLAG != 0 {
            return Err(MarkError::AlreadyTraced(generation(old)));
        }
        let byte = next_traced_byte(old);
        // SAFETY: as above.
        unsafe { p.write_volatile(byte) };
        Ok(generation(byte))
    }

    /// Stops tracing `tgid` (keeps its generation).
    pub fn unmark(&self, tgid: u32) {
        if let Some(p) = self.slot(tgid) {
            // SAFETY: a valid byte of the mapping.
            unsafe { p.write_volatile(p.read_volatile() & !TRACED_FLAG) };
        }
    }
}

impl Drop for TracedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Why a process could not be marked.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkError {
    OutOfRange,
    AlreadyTraced(u8),
}
