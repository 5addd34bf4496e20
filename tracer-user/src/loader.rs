//! Loads the kernel programs: decides per tracer what the running kernel allows ([`plan`]: its
//! probe rows and its choices, from the kernel's BTF), writes each tracer's settings global,
//! sizes the maps for this machine, loads the object and attaches the probes. What to write and
//! attach comes from the tracers (`crate::tracers`); this module knows none of them beyond which
//! are the core ([`CORE`]) and which need another ([`NEEDS`]).
//!
//! A tracer the kernel cannot run (a missing tracepoint, type or helper its tables have no way
//! around, or a program the verifier refuses) is left out with one line on stderr and in run.json;
//! only the core failing fails the run.

use aya::{
    Btf, Ebpf, EbpfLoader, Endianness, Pod,
    programs::{BtfTracePoint, ProgramError},
};
use aya_log::EbpfLogger;

use crate::{
    kernel::{
        btf::{BtfError, KernelBtf},
        support::{Choice, Status, TracerSupport},
    },
    probes::{self, Probe, ProbePlan},
    settings::Settings,
    syscall_names::Arch,
    tracers::{self, Registration},
};

/// The tracers a run cannot go without: process tracking, the syscall dispatch and the syscall
/// counts. When one of them cannot run on a kernel, nothing can (exit 4).
pub const CORE: &[&str] = &["process", "dispatch", "syscalls", "drops"];

/// Tracers that work through another: (tracer, the one it needs).
pub const NEEDS: &[(&str, &str)] = &[("sql", "sockets"), ("http", "sockets")];

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
    #[error(
        "cannot attach {program} ({tracer}) to tracepoint {tracepoint}: {}",
        first_line(source)
    )]
    Attach {
        program: &'static str,
        tracer: &'static str,
        tracepoint: &'static str,
        source: Box<ProgramError>,
    },
    /// A core tracer cannot run on this kernel.
    #[error("this kernel cannot run scalp-bpf's {tracer} tracer: {why}")]
    Core { tracer: &'static str, why: String },
    #[error("the object has no program {0}")]
    MissingProgram(&'static str),
    /// `--map-entries` named a map the object does not have.
    #[error("--map-entries: the kernel object has no map {0}")]
    UnknownMap(String),
    /// `--map-entries` gave a map its programs index by a mask a size they cannot index.
    #[error("--map-entries {map}={entries}: {map} must have {shape} entries")]
    MapShape {
        map: &'static str,
        entries: u32,
        shape: String,
    },
    #[error("this architecture ({0}) is not supported")]
    Arch(String),
}

/// aya's message up to the verifier's log (which `-vv` prints): one line.
fn first_line(e: &ProgramError) -> String {
    let text = e.to_string();
    match text.split_once(". Verifier output:") {
        Some((head, _)) => format!("{head} (the verifier refused it; -vv shows its log)"),
        None => text.lines().next().unwrap_or_default().to_owned(),
    }
}

impl LoadError {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            LoadError::NoObject => crate::exit::ExitCode::Internal,
            LoadError::UnknownMap(_) | LoadError::MapShape { .. } => crate::exit::ExitCode::Usage,
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
    /// A test-only size (`--map-entries`) a tracer's indexing cannot use.
    bad_shape: Option<LoadError>,
    /// The tracer being set up: its probe rows as decided on this kernel, and its report.
    current: Option<(ProbePlan, TracerSupport)>,
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
            bad_shape: None,
            current: None,
        })
    }

    /// Takes the first way of `choice` the kernel allows and records it in the tracer's report;
    /// returns its value. None when no way fits and the tracer goes on without it; an error when
    /// the tracer cannot go on.
    pub fn choose(&mut self, choice: &Choice) -> Result<Option<u32>, BtfError> {
        let decision = choice.decide(self.btf, self.arch.name());
        if let Some((_, support)) = &mut self.current {
            support.record(choice, &decision);
            if support.status == Status::Unavailable {
                return Err(BtfError::Unsupported {
                    why: support.why.clone().unwrap_or_default(),
                });
            }
        } else if decision.way.is_none() {
            return Err(BtfError::Unsupported {
                why: format!("{}: {}", choice.what, decision.because.join("; ")),
            });
        }
        Ok(choice.value(&decision))
    }

    /// Whether the tracer being set up attaches `program` on this kernel (its probe rows as
    /// decided by [`plan`]).
    pub fn attaches(&self, program: &str) -> bool {
        self.current
            .as_ref()
            .is_some_and(|(probes, _)| probes.attaches(program))
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

    /// The test-only size (`--map-entries`) of map `name`, if one is given (the last).
    pub fn test_entries(&self, name: &str) -> Option<u32> {
        self.settings
            .map_entries
            .iter()
            .rev()
            .find(|(m, _)| m == name)
            .map(|(_, n)| *n)
    }

    /// The entries map `name` will have: the test-only size (`--map-entries`) when one is
    /// given, `entries` otherwise. For a map the programs index by a mask (`ways` entries per
    /// set, `ways × 2^k` in all): its settings must follow the size the map really gets, or
    /// lookups past its end would fail and lose events uncounted. A size of another shape
    /// fails the run (exit 2) once the tracers are set up.
    pub fn masked_entries(&mut self, name: &'static str, entries: u32, ways: u32) -> u32 {
        let Some(n) = self.test_entries(name) else {
            return entries;
        };
        let sets = n / ways;
        if n % ways == 0 && sets.is_power_of_two() {
            return n;
        }
        if self.bad_shape.is_none() {
            let shape = if ways == 1 {
                "2^k".to_owned()
            } else {
                format!("{ways} × 2^k")
            };
            self.bad_shape = Some(LoadError::MapShape {
                map: name,
                entries: n,
                shape,
            });
        }
        entries
    }
}

/// A probe to attach, and the tracer it belongs to (for messages). It goes to the tracepoint
/// [`Probe::pick`] finds on this kernel (its own, or an older name of it).
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

/// What the running kernel allows the enabled tracers: their settings globals written, the
/// probes to attach, and what each one uses and loses.
pub struct Plan<'a> {
    pub setup: KernelSetup<'a>,
    pub probes: Vec<Attach>,
    /// The enabled tracers that can run, in registry order.
    pub enabled: Vec<&'static Registration>,
    /// Every enabled tracer, those that cannot run included, in registry order.
    pub support: Vec<TracerSupport>,
}

/// Decides, for every tracer `settings` enable, what this kernel allows ([`survey`]); fails when
/// a core tracer cannot run.
pub fn plan<'a>(settings: &'a Settings, btf: &'a KernelBtf) -> Result<Plan<'a>, LoadError> {
    let plan = survey(settings, btf)?;
    if let Some(s) = plan
        .support
        .iter()
        .find(|s| CORE.contains(&s.tracer) && s.status == Status::Unavailable)
    {
        return Err(LoadError::Core {
            tracer: s.tracer,
            why: s.why.clone().unwrap_or_default(),
        });
    }
    Ok(plan)
}

/// Whether every core tracer can run.
pub fn core_ok(support: &[TracerSupport]) -> bool {
    support
        .iter()
        .all(|s| !CORE.contains(&s.tracer) || s.status != Status::Unavailable)
}

/// Decides, for every tracer `settings` enable, what this kernel allows: its probe rows
/// (`crate::probes::plan`), then its setup (which writes its settings global and takes its
/// choices, [`KernelSetup::choose`]). A tracer that cannot run is left out, with the tracers that
/// work through it.
pub fn survey<'a>(settings: &'a Settings, btf: &'a KernelBtf) -> Result<Plan<'a>, LoadError> {
    let mut setup = KernelSetup::new(settings, btf)?;
    let mut support: Vec<TracerSupport> = Vec::new();
    let mut planned = Vec::new();
    for r in tracers::enabled(settings) {
        let probes = probes::plan(r.probes, settings, btf);
        let mut s = TracerSupport::new(r.name);
        probes.report(&mut s);
        setup.current = Some((probes, s));
        let result = (r.setup)(&mut setup);
        let Some((probes, mut s)) = setup.current.take() else {
            continue;
        };
        if let Err(e) = result {
            s.refuse(e.reason());
        }
        planned.push((r, probes));
        support.push(s);
    }
    if let Some(e) = setup.bad_shape.take() {
        return Err(e);
    }
    // Tracers that work through one that cannot run cannot run either.
    for (t, needed) in NEEDS {
        let down = support
            .iter()
            .any(|s| s.tracer == *needed && s.status == Status::Unavailable);
        if let (true, Some(s)) = (down, support.iter_mut().find(|s| s.tracer == *t)) {
            s.refuse(format!("it works through {needed}, which cannot run"));
        }
    }
    let up = |name: &str| {
        support
            .iter()
            .any(|s| s.tracer == name && s.status != Status::Unavailable)
    };
    let enabled: Vec<&'static Registration> = planned
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| up(r.name))
        .collect();
    let probes = planned
        .iter()
        .filter(|(r, _)| up(r.name))
        .flat_map(|(r, p)| {
            p.attached()
                .map(|(probe, _)| Attach {
                    tracer: r.name,
                    probe,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Plan {
        setup,
        probes,
        enabled,
        support,
    })
}

/// What [`load_plan`] does with the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Load and attach them (a run).
    Attach,
    /// Only have the verifier load them (`scalp-bpf check`).
    VerifyOnly,
}

/// The tracers of a loaded [`Plan`]: those that run, and what every enabled one got.
pub struct Tracers {
    pub enabled: Vec<&'static Registration>,
    pub support: Vec<TracerSupport>,
}

/// Loads a [`Plan`]: the object with its globals and map sizes, then each program. A program the
/// kernel refuses takes its tracer out (with the tracers that work through it; their programs
/// loaded so far are unloaded, the report says why), unless the tracer is a core one: an error
/// when attaching, recorded like the others when only verifying.
pub fn load_plan(plan: Plan<'_>, mode: Mode) -> Result<(Loaded, Tracers), LoadError> {
    let Plan {
        setup,
        probes,
        mut enabled,
        mut support,
    } = plan;
    let (mut loaded, btf) = load_object(&setup)?;
    let mut out: Vec<&'static str> = Vec::new();
    for a in &probes {
        if out.contains(&a.tracer) {
            continue;
        }
        let Err(e) = attach(&mut loaded.ebpf, a, &btf, setup.btf, mode) else {
            continue;
        };
        // The verifier's log, which the one-line message leaves out.
        tracing::debug!("{e:?}");
        if CORE.contains(&a.tracer) && mode == Mode::Attach {
            return Err(e);
        }
        let why = match &e {
            LoadError::Attach {
                program, source, ..
            } => format!("the kernel refused {program}: {}", first_line(source)),
            other => other.to_string(),
        };
        if let Some(s) = support.iter_mut().find(|s| s.tracer == a.tracer) {
            s.refuse(why);
        }
        out.push(a.tracer);
        for (t, _) in NEEDS.iter().filter(|(_, n)| *n == a.tracer) {
            if let Some(s) = support.iter_mut().find(|s| s.tracer == *t) {
                s.refuse(format!("it works through {}, which cannot run", a.tracer));
            }
            out.push(*t);
        }
        for gone in probes.iter().filter(|o| out.contains(&o.tracer)) {
            let program: Option<&mut BtfTracePoint> = loaded
                .ebpf
                .program_mut(gone.probe.program)
                .and_then(|p| p.try_into().ok());
            if let Some(p) = program {
                // Loaded (and attached) or not yet: either way it goes.
                let _ = p.unload();
            }
        }
    }
    enabled.retain(|r| !out.contains(&r.name));
    Ok((loaded, Tracers { enabled, support }))
}

/// Loads the object with `setup`'s globals and map sizes, and attaches `probes`; any failure is
/// an error (`scalp-bpf calibrate`).
pub fn load(setup: KernelSetup<'_>, probes: &[Attach]) -> Result<Loaded, LoadError> {
    for a in probes {
        a.probe
            .pick(setup.btf)
            .map_err(|what| BtfError::MissingType { what })?;
    }
    let (mut loaded, btf) = load_object(&setup)?;
    for a in probes {
        attach(&mut loaded.ebpf, a, &btf, setup.btf, Mode::Attach)?;
    }
    Ok(loaded)
}

/// The object, loaded with `setup`'s globals and map sizes (no program yet), and the kernel's
/// BTF as aya reads it.
fn load_object(setup: &KernelSetup<'_>) -> Result<(Loaded, Btf), LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
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
    Ok((
        Loaded {
            ebpf,
            logger,
            arch: setup.arch,
        },
        btf,
    ))
}

/// Loads one program for its tracepoint on this kernel and, in [`Mode::Attach`], attaches it.
fn attach(
    ebpf: &mut Ebpf,
    a: &Attach,
    btf: &Btf,
    kernel: &KernelBtf,
    mode: Mode,
) -> Result<(), LoadError> {
    let tracepoint = a
        .probe
        .pick(kernel)
        .map_err(|what| BtfError::MissingType { what })?;
    let attach_err = |source| LoadError::Attach {
        program: a.probe.program,
        tracer: a.tracer,
        tracepoint,
        source: Box::new(source),
    };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(a.probe.program)
        .ok_or(LoadError::MissingProgram(a.probe.program))?
        .try_into()
        .map_err(attach_err)?;
    program.load(tracepoint, btf).map_err(attach_err)?;
    if mode == Mode::Attach {
        program.attach().map_err(attach_err)?;
    }
    tracing::debug!(
        program = a.probe.program,
        tracer = a.tracer,
        tracepoint,
        "loaded"
    );
    Ok(())
}

/// One line on stderr per tracer this kernel does not fully allow.
pub fn notify(support: &[TracerSupport]) {
    for s in support {
        if let Some(line) = s.notice() {
            eprintln!("scalp-bpf: {line}");
        }
    }
}
