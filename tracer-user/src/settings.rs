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

/// Everything the loader and tracers need to know. A tracer with options of its own keeps them
/// in a struct here (its flags are parsed in `cli::run`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The tracers asked for (`--tracers`; the always-on ones are enabled whatever this says).
    pub tracers: Vec<String>,
    pub syscall_latency: LatencyMode,
    /// Send exec events of every process (some targets are names, so late starters count).
    pub watch_exec: bool,
    /// `--files N`: the N files with the most bytes per interval.
    pub files: Option<usize>,
    /// The SQL tracer.
    pub sql: SqlSettings,
    /// Bytes captured per send/receive on HTTP and uwsgi connections.
    pub http_capture: u32,
    /// TCP server ports whose connections are AMQP (5672 always) and memcached (11211 always).
    pub rpc_ports: Vec<u16>,
    pub cache_ports: Vec<u16>,
    /// Some blk-mq device does not account I/O: use the block_rq_insert/complete stand-ins.
    pub block_fallback: bool,
    /// Test-only map sizes (`--map-entries MAP=N`), to make the kernel side's maps overflow.
    pub map_entries: Vec<(String, u32)>,
    /// Test-only (`--block-stale-ms`): how old a block request's in-flight entry must be to
    /// count as stale (two minutes when None).
    pub block_stale_ms: Option<u32>,
}

impl Settings {
    /// Settings with every optional tracer off (the base of `calibrate` and of tests).
    pub fn minimal() -> Settings {
        Settings {
            tracers: Vec::new(),
            syscall_latency: LatencyMode::Off,
            watch_exec: false,
            files: None,
            sql: SqlSettings::default(),
            http_capture: 8192,
            rpc_ports: vec![5672],
            cache_ports: vec![11211],
            block_fallback: false,
            map_entries: Vec::new(),
            block_stale_ms: None,
        }
    }

    /// Whether `--tracers` asked for `name`.
    pub fn asked_for(&self, name: &str) -> bool {
        self.tracers.iter().any(|t| t == name)
    }
}

/// The SQL tracer's settings.
#[derive(Clone, Debug)]
pub struct SqlSettings {
    /// TCP server ports whose connections are SQL (3306 and 5432 always).
    pub ports: Vec<u16>,
    /// Bytes captured per send/receive syscall (a power of two ≤ SQL_CAPTURE_MAX).
    pub capture: u32,
    /// Bytes of each statement's text kept for fingerprinting.
    pub text_bytes: usize,
    /// Write one raw statement text (with its literals) per row.
    pub raw_text: bool,
    /// Bytes of the SOCKET_EVENTS ring buffer.
    pub ring_bytes: u32,
    /// File path fragments of frames that are part of the database stack, beyond the built-in
    /// ones (a statement's call site is the first frame outside it).
    pub code_skip: Vec<String>,
    /// Read the Python stacks of SQL sends (the code_* columns).
    pub code: bool,
    /// Test only: the CPython versions whose offsets are used (None: the whole table).
    pub code_versions: Option<Vec<String>>,
}

impl Default for SqlSettings {
    fn default() -> Self {
        SqlSettings {
            ports: vec![3306, 5432],
            capture: tracer_common::sockets::CAPTURE_MAX,
            text_bytes: 256,
            raw_text: false,
            ring_bytes: tracer_common::sockets::SOCKET_EVENTS_BYTES,
            code_skip: Vec::new(),
            code: false,
            code_versions: None,
        }
    }
}

/// Whether some blk-mq block device has I/O accounting off (`queue/iostats` 0): its requests
/// pass neither block_io_start nor block_io_done.
pub fn block_devices_without_iostats() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    dir.flatten().any(|d| {
        let p = d.path();
        p.join("mq").exists()
            && std::fs::read_to_string(p.join("queue/iostats")).is_ok_and(|v| v.trim() == "0")
    })
}
