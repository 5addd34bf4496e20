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

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// An array map created with BPF_F_MMAPABLE, mapped shared and read-write: its elements are plain
/// memory the kernel programs read and write at the same time (access it with volatile loads and
/// stores of aligned words).
pub struct Mapped {
    base: NonNull<u8>,
    len: usize,
    /// Keeps the map (and so the mapping's backing) alive; None for test memory.
    _map: Option<MapData>,
}

// SAFETY: the mapping is plain shared memory, valid until drop.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Maps the first `len` bytes of array map `name`.
    fn new(map: Map, name: &'static str, len: usize) -> Result<Mapped, MapAccessError> {
        let error = |source| MapAccessError::Mmap { map: name, source };
        let Map::Array(map) = map else {
            return Err(error(io::Error::other("not an array map")));
        };
        let (base, len) = mmap(Some(map.fd().as_fd().as_raw_fd()), len).map_err(error)?;
        Ok(Mapped {
            base,
            len,
            _map: Some(map),
        })
    }

    /// Maps all of array map `name`, whose values must be `value_size` bytes (a multiple of 8,
    /// so that they lie `value_size` apart); returns the mapping and its number of values.
    pub fn whole(
        map: Map,
        name: &'static str,
        value_size: usize,
    ) -> Result<(Mapped, usize), MapAccessError> {
        let error = |what: String| MapAccessError::Mmap {
            map: name,
            source: io::Error::other(what),
        };
        let Map::Array(data) = &map else {
            return Err(error("not an array map".into()));
        };
        let info = data.info().map_err(MapAccessError::of(name))?;
        if info.map_flags() & BPF_F_MMAPABLE == 0 || info.value_size() as usize != value_size {
            return Err(error(format!(
                "not an mmapable array of {value_size}-byte values (flags {:#x}, {} bytes)",
                info.map_flags(),
                info.value_size()
            )));
        }
        let entries = info.max_entries() as usize;
        Ok((Mapped::new(map, name, entries * value_size)?, entries))
    }

    /// Zeroed anonymous memory standing in for a map in tests.
    #[cfg(test)]
    pub fn anonymous(len: usize) -> Mapped {
        let (base, len) = mmap(None, len).expect("anonymous mapping");
        Mapped {
            base,
            len,
            _map: None,
        }
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

/// Maps `len` bytes of `fd` (anonymous memory without one), shared, read-write.
fn mmap(fd: Option<i32>, len: usize) -> io::Result<(NonNull<u8>, usize)> {
    let (flags, fd) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd),
        None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a new shared read-write mapping of `len` bytes (of a BPF array fd at least that
    // long, or anonymous); the result is checked below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
    Ok((base, len))
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
