//! The resolved settings of a run, shared by the loader and the tracers.

/// How syscall latency is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyMode {
    /// Count calls and errors only (sys_exit alone is attached).
    Off,
    /// Time every call.
    Exact,
    /// Time one call in `2^shift` (chosen at random); counts stay exact.
    Sampled { shift: u8 },
    /// Per syscall number, time every call while it is rare and sample it once it is frequent,
    /// so that about `target` calls per second of each are timed.
    Auto { target: u32 },
}

impl LatencyMode {
    pub fn measures(self) -> bool {
        self != LatencyMode::Off
    }

    /// As written to run metadata.
    pub fn describe(self) -> String {
        match self {
            LatencyMode::Off => "off".to_owned(),
            LatencyMode::Exact => "exact".to_owned(),
            LatencyMode::Sampled { shift } => format!("sampled 1/{}", 1u64 << shift),
            LatencyMode::Auto { target } => format!("auto ({target} timed calls/s per syscall)"),
        }
    }
}

/// Everything the loader and tracers need to know.
#[derive(Clone, Debug)]
pub struct Settings {
    pub syscall_latency: LatencyMode,
    /// Send exec events of every process (some targets are names, so late starters count).
    pub watch_exec: bool,
    /// The file I/O tracer.
    pub fileio: bool,
    /// `--files N`: the N files with the most bytes per interval.
    pub files: Option<usize>,
    /// The block I/O tracer.
    pub blockio: bool,
}
