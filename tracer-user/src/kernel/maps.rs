//! Taking the kernel programs' maps out of the loaded object, with errors that name the map;
//! mapping an array created with BPF_F_MMAPABLE into our memory.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};

/// A map could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum MapAccessError {
    /// The object lacks a map the user side expects (the two sides were built apart).
    #[error("the kernel object has no map {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("cannot use map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    /// An mmapable array could not be mapped into our memory.
    #[error("cannot map {map} into memory: {source}")]
    Mmap {
        map: &'static str,
        #[source]
        source: io::Error,
    },
}

impl MapAccessError {
    /// A closure naming `map` in its errors, for `map_err`.
    pub fn of(map: &'static str) -> impl Fn(MapError) -> MapAccessError {
        move |source| MapAccessError::Map { map, source }
    }
}

/// Takes map `name` out of the loaded object.
pub fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, MapAccessError> {
    ebpf.take_map(name).ok_or(MapAccessError::Missing(name))
}

/// Takes map `name` out of the object as the typed map `M`.
pub fn take_as<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, MapAccessError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    M::try_from(take(ebpf, name)?).map_err(MapAccessError::of(name))
}

/// An array map created with BPF_F_MMAPABLE, mapped shared and read-write: its elements are plain
/// memory the kernel programs read and write at the same time (access it with volatile loads and
/// stores of aligned words).
pub struct Mapped {
    base: NonNull<u8>,
    len: usize,
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory, valid until drop.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps the first `len` bytes of array map `name`.
    pub fn new(map: Map, name: &'static str, len: usize) -> Result<Mapped, MapAccessError> {
        let error = |source| MapAccessError::Mmap { map: name, source };
        let Map::Array(map) = map else {
            return Err(error(io::Error::other("not an array map")));
        };
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
            return Err(error(io::Error::last_os_error()));
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| error(io::Error::other("mmap gave NULL")))?;
        Ok(Mapped {
            base,
            len,
            _map: map,
        })
    }

    /// The mapping's first byte.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
