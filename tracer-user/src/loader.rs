//! Loads the kernel programs: writes each tracer's settings global, sizes the maps for this
//! machine, loads the object and attaches the probes it is given. What to write and attach comes
//! from the tracers (`crate::tracers`); this module knows none of them.

use aya::{
    Btf, Ebpf, EbpfLoader, Endianness, Pod,
    programs::{BtfTracePoint, ProgramError},
};
use aya_log::EbpfLogger;

use crate::{
    kernel::btf::{BtfError, KernelBtf},
    probes::Probe,
    settings::Settings,
    syscall_names::Arch,
};

/// The object built by build.rs from tracer-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The binary was built with AYA_BUILD_SKIP and carries no kernel programs.
    #[error("this scalp-bpf binary was built without its kernel programs (AYA_BUILD_SKIP)")]
    NoObject,
    #[error("cannot read /proc/sys/kernel/pid_max: {0}")]
    PidMax(std::io::Error),
    #[error("cannot count the possible CPUs (/sys/devices/system/cpu/possible): {0}")]
    Cpus(std::io::Error),
    /// The kernel refused the object or a map.
    #[error("the kernel refused scalp-bpf's programs: {0}")]
    Object(#[source] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("cannot attach {program} ({tracer}) to tracepoint {tracepoint}: {source}")]
    Attach {
        program: &'static str,
        tracer: &'static str,
        tracepoint: &'static str,
        source: Box<ProgramError>,
    },
    #[error("the object has no program {0}")]
    MissingProgram(&'static str),
    /// `--map-entries` named a map the object does not have.
    #[error("--map-entries: the kernel object has no map {0}")]
    UnknownMap(String),
    #[error("this architecture ({0}) is not supported")]
    Arch(String),
}

impl LoadError {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            LoadError::NoObject => crate::exit::ExitCode::Internal,
            LoadError::UnknownMap(_) => crate::exit::ExitCode::Usage,
            _ => crate::exit::ExitCode::KernelUnsupported,
        }
    }
}

/// What the tracers ask of the kernel side before it is loaded: their settings globals and the
/// sizes of their maps. Each tracer's `setup` fills in its part.
pub struct KernelSetup<'a> {
    pub settings: &'a Settings,
    pub btf: &'a KernelBtf,
    pub arch: Arch,
    /// The kernel's pid_max (largest PID + 1).
    pub pid_max: u32,
    /// Possible CPUs.
    pub nr_cpus: u32,
    globals: Vec<(&'static str, Vec<u8>)>,
    map_entries: Vec<(&'static str, u32)>,
}

impl<'a> KernelSetup<'a> {
    pub fn new(settings: &'a Settings, btf: &'a KernelBtf) -> Result<Self, LoadError> {
        Ok(KernelSetup {
            settings,
            btf,
            arch: Arch::host().map_err(LoadError::Arch)?,
            pid_max: crate::kernel::pid_max().map_err(LoadError::PidMax)?,
            nr_cpus: aya::util::nr_cpus().map_err(|(_, e)| LoadError::Cpus(e))? as u32,
            globals: Vec::new(),
            map_entries: Vec::new(),
        })
    }

    /// Sets the read-only global `name` (a tracer's settings) to `value`.
    pub fn global<T: Pod>(&mut self, name: &'static str, value: &T) {
        // SAFETY: `T: Pod` is plain old data without padding: its bytes are all initialized.
        let bytes =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        self.globals.retain(|(n, _)| *n != name);
        self.globals.push((name, bytes.to_vec()));
    }

    /// Sizes map `name` (entries, or bytes for a ring buffer).
    pub fn map_entries(&mut self, name: &'static str, entries: u32) {
        self.map_entries.retain(|(n, _)| *n != name);
        self.map_entries.push((name, entries));
    }
}

/// A probe to attach, and the tracer it belongs to (for messages).
pub struct Attach {
    pub tracer: &'static str,
    pub probe: &'static Probe,
}

/// The loaded, attached programs and their maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    pub arch: Arch,
}

/// Loads the object with `setup`'s globals and map sizes, and attaches `probes`.
pub fn load(setup: KernelSetup<'_>, probes: &[Attach]) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    for a in probes {
        setup.btf.require_tracepoint(a.probe.tracepoint)?;
    }
    let btf = Btf::parse_file(setup.btf.path(), Endianness::default())
        .map_err(|e| LoadError::Object(aya::EbpfError::BtfError(e)))?;
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    for (name, bytes) in &setup.globals {
        loader.override_global(name, bytes.as_slice(), true);
    }
    for (name, entries) in &setup.map_entries {
        loader.map_max_entries(name, *entries);
    }
    // Test-only overrides (`--map-entries`), after the tracers' own sizes.
    for (name, entries) in &setup.settings.map_entries {
        loader.map_max_entries(name, *entries);
    }
    let mut ebpf = loader.load(OBJECT).map_err(LoadError::Object)?;
    for (name, _) in &setup.settings.map_entries {
        if ebpf.map(name).is_none() {
            return Err(LoadError::UnknownMap(name.clone()));
        }
    }

    // Kernel-side diagnostics (aya-log) go to our log; absent when the object logs nothing.
    let logger = EbpfLogger::init(&mut ebpf).ok();

    for a in probes {
        let attach_err = |source| LoadError::Attach {
            program: a.probe.program,
            tracer: a.tracer,
            tracepoint: a.probe.tracepoint,
            source: Box::new(source),
        };
        let program: &mut BtfTracePoint = ebpf
            .program_mut(a.probe.program)
            .ok_or(LoadError::MissingProgram(a.probe.program))?
            .try_into()
            .map_err(attach_err)?;
        program.load(a.probe.tracepoint, &btf).map_err(attach_err)?;
        program.attach().map_err(attach_err)?;
        tracing::debug!(program = a.probe.program, tracer = a.tracer, "attached");
    }
    Ok(Loaded {
        ebpf,
        logger,
        arch: setup.arch,
    })
}
