//! The user side of the `TRACED` map: mapped into our memory so that marking one process is a
//! single byte store that cannot clobber a neighbour the kernel marks at the same moment.

use aya::maps::Map;
use tracer_common::process::{
    TGIDS_PER_ELEMENT, TRACED, TRACED_FLAG, generation, next_traced_byte,
};

use crate::kernel::maps::{MapAccessError, Mapped};

/// `TRACED`, mmapped.
pub struct TracedMap {
    mapped: Mapped,
}

impl TracedMap {
    /// Maps the whole array (created with BPF_F_MMAPABLE, 8-byte elements).
    pub fn new(map: Map) -> Result<TracedMap, MapAccessError> {
        let (mapped, _) = Mapped::whole(map, TRACED, TGIDS_PER_ELEMENT as usize)?;
        Ok(TracedMap { mapped })
    }

    fn slot(&self, tgid: u32) -> Option<*mut u8> {
        let i = tgid as usize;
        // SAFETY: in bounds of the mapping.
        (i < self.mapped.len()).then(|| unsafe { self.mapped.base().add(i) })
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

/// Why a process could not be marked.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkError {
    OutOfRange,
    AlreadyTraced(u8),
}
