//! Taking the kernel programs' maps out of the loaded object, with errors that name the map.

use aya::{Ebpf, maps::MapError};

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
