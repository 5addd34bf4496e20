//! `scalp-bpf run`.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use super::parse_duration;
use crate::{kernel::btf::DEFAULT_PATH, settings::LatencyMode, targets::TargetSpec};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  scalp-bpf run --pid nova-api --duration 5m\n  scalp-bpf run --output out -- python3 workload.py"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    // Boxed: the output flags would make `run` much larger than the other subcommands.
    #[command(flatten)]
    pub output: Box<OutputArgs>,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub tracers: TracerArgs,
    #[command(flatten)]
    pub syscalls: SyscallArgs,
    #[command(flatten)]
    pub sql: SqlArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// The kernel's BTF (type information); tracing needs it.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH, help_heading = "Kernel")]
    pub kernel_btf: PathBuf,
    /// A command to start and trace from its first syscall, with its children. scalp-bpf exits
    /// with its exit code.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Targets")]
pub struct TargetArgs {
    /// A process to trace, with its threads and children: a PID, or a name matched against the
    /// comm, argv[0] and an interpreter's script (like `pgrep -f` for OpenStack services).
    /// Repeatable.
    #[arg(short, long = "pid", value_name = "PID|NAME")]
    pub pids: Vec<TargetSpec>,
    /// When a name matches no process yet, wait for one to start instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Directory to write (must be new or empty) [default: ./scalp-<host>-<UTC time>]
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Seal each table's rows into one Parquet file this often (files per table per day:
    /// 144 at the default).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub rotate: Duration,
    /// Also seal once the period's write-ahead log reaches SIZE (K, M, G are powers of 1024;
    /// 0: no limit), so that no file grows much past it.
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = parse_rotate_size, allow_hyphen_values = true)]
    pub rotate_size: u64,
    /// fsync the write-ahead log at most this often: a power loss loses at most this much more
    /// than the interval in progress (a `kill -9` loses only the interval in progress).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub sync_every: Duration,
    /// Upload each Parquet file once sealed to s3://BUCKET/PREFIX (credentials and endpoint
    /// from the AWS_* environment variables) or file:///DIR, as
    /// table=T/date=D/host=H/RUN-N.parquet. Failed uploads are retried; files stay local.
    #[arg(long, value_name = "URL", value_parser = crate::sink::ship::parse_url)]
    pub ship: Option<url::Url>,
    /// The host name written in run.json, every file and the shipped paths [default: the
    /// machine's].
    #[arg(long, value_name = "NAME", value_parser = parse_host)]
    pub host: Option<String>,
    /// Deprecated: the layout before the write-ahead log, one Parquet part per table every
    /// DURATION (fsync'd, renamed into place). Many small files; kept for comparison.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true,
          conflicts_with = "ship", hide_short_help = true)]
    pub flush_every: Option<Duration>,
    /// Stop tracing before the output directory grows past SIZE, so that a forgotten run cannot
    /// fill a disk (K, M, G, T are powers of 1024; 0: no limit). The files stay complete; with
    /// `-- CMD`, CMD goes on untraced and scalp-bpf still exits with its code.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_max_size, allow_hyphen_values = true)]
    pub max_size: MaxSize,
    /// Units of work this run did (requests, test cases), stored for per-unit comparisons.
    #[arg(long, value_name = "N", value_parser = super::units::parse_units)]
    pub units: Option<f64>,
}

/// `--max-size` in bytes; `None` for no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxSize(pub Option<u64>);

fn parse_max_size(s: &str) -> Result<MaxSize, String> {
    crate::sink::budget::parse_size(s).map(MaxSize)
}

fn parse_rotate_size(s: &str) -> Result<u64, String> {
    crate::sink::budget::parse_size(s).map(|n| n.unwrap_or(0))
}

/// A host name for paths and metadata: letters, digits, `.`, `-`, `_`.
fn parse_host(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a host name (letters, digits, '.', '-', '_')"
        ))
    }
}

impl OutputArgs {
    /// The sink's settings for a run with this interval.
    pub fn sink_options(&self, interval: Duration) -> crate::sink::SinkOptions {
        let layout = match self.flush_every {
            Some(flush_every) => crate::sink::Layout::Parts { flush_every },
            None => crate::sink::Layout::Periods(crate::sink::PeriodOptions {
                rotate: self.rotate,
                rotate_size: self.rotate_size,
                sync_every: self.sync_every,
            }),
        };
        crate::sink::SinkOptions {
            interval,
            layout,
            ship: self.ship.clone(),
        }
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Timing")]
pub struct TimingArgs {
    /// Length of one interval (one set of rows per table).
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C, SIGTERM, or the traced command/PIDs end).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
}

/// Intervals shorter than 10 ms would spend more time reading maps than tracing.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".to_owned());
    }
    Ok(d)
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Tracers")]
pub struct TracerArgs {
    /// Tracers to run, comma-separated (syscalls always runs; the kernel ones build on it;
    /// `system` reads the machine's counters from /proc).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = crate::tracers::default_selection(),
        value_parser = clap::builder::PossibleValuesParser::new(crate::tracers::selectable()),
    )]
    pub tracers: Vec<String>,
    /// Also write the N files with the most bytes per process and interval (`files` table).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20", value_parser = clap::value_parser!(u16).range(1..))]
    pub files: Option<u16>,
    /// Do not write the machine's CPU, memory, disk and network tables (`system*`); the same
    /// as leaving `system` out of --tracers.
    #[arg(long)]
    pub no_system: bool,
    /// Test only: the size of a kernel map (entries), to make it overflow on purpose.
    /// Repeatable.
    #[arg(long, value_name = "MAP=N", value_parser = parse_map_entries, hide = true)]
    pub map_entries: Vec<(String, u32)>,
    /// Test only: a block request in flight longer than this is stale (its entry reclaimed,
    /// its completion not charged), instead of two minutes.
    #[arg(long, value_name = "MS", hide = true)]
    pub block_stale_ms: Option<u32>,
}

fn parse_map_entries(s: &str) -> Result<(String, u32), String> {
    let (map, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write MAP=N, e.g. SYSCALL_STATS=64"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{n:?} is not a positive number of entries"))?;
    Ok((map.trim().to_owned(), n))
}

#[derive(Debug, Args)]
#[command(next_help_heading = "SQL")]
pub struct SqlArgs {
    /// Another TCP server port whose connections are SQL (3306 and 5432 always are).
    /// Repeatable.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub sql_port: Vec<u16>,
    /// Bytes of each statement's text kept for its fingerprint.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u16).range(16..=4096))]
    pub sql_text_bytes: u16,
    /// Bytes captured per send/receive on a SQL connection (a power of two, 1024..=16384).
    /// Larger messages are still framed exactly as long as their headers are captured.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = parse_capture)]
    pub sql_capture_bytes: u32,
    /// Also write one raw statement text per row (db_query_sample). Off by default: statements
    /// carry passwords, tokens and personal data in their literals.
    #[arg(long)]
    pub sql_raw_text: bool,
    /// MiB of the ring buffer that carries SQL traffic to user space.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = parse_ring_mib)]
    pub sql_ring_mib: u32,
    /// A file path fragment (`/myorm/`) of Python frames that belong to the database stack, so
    /// that a statement's call site (code_* columns) is the first frame outside it; added to
    /// SQLAlchemy, oslo.db, PyMySQL, psycopg(2), MySQLdb, eventlet, greenlet and the standard
    /// library. Repeatable.
    #[arg(long, value_name = "FRAGMENT")]
    pub sql_code_skip: Vec<String>,
    /// Python call sites of SQL statements (the code_* columns, the sql_stacks table): read
    /// the sending thread's CPython stack at each SQL send. Off by default while its cost
    /// (~4 µs of kernel time per statement for a 20-frame stack) is above its 3 µs target.
    #[arg(long)]
    pub sql_code: bool,
    /// Test only: the CPython versions (`3.11`) whose offsets are used; others count as
    /// unsupported, as a version missing from the table does.
    #[arg(long, value_name = "X.Y", hide = true)]
    pub sql_code_versions: Option<Vec<String>>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP, RPC, cache")]
pub struct HttpArgs {
    /// Bytes captured per send/receive on an HTTP or uwsgi connection (a power of two,
    /// 1024..=16384). Heads must fit: bodies are skipped by length.
    #[arg(long, value_name = "N", default_value_t = 8192, value_parser = parse_capture)]
    pub http_capture_bytes: u32,
    /// Another TCP server port whose connections are AMQP (5672 always is). Repeatable.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub rpc_port: Vec<u16>,
    /// Another TCP server port whose connections are memcached (11211 always is). Repeatable.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub cache_port: Vec<u16>,
}

fn parse_capture(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(1024..=tracer_common::sockets::CAPTURE_MAX).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two from 1024 to 16384".to_owned());
    }
    Ok(n)
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(1..=1024).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two from 1 to 1024".to_owned());
    }
    Ok(n)
}

impl SqlArgs {
    pub fn settings(&self) -> crate::settings::SqlSettings {
        let mut ports = vec![3306, 5432];
        ports.extend(&self.sql_port);
        ports.sort_unstable();
        ports.dedup();
        crate::settings::SqlSettings {
            ports,
            capture: self.sql_capture_bytes,
            text_bytes: usize::from(self.sql_text_bytes),
            raw_text: self.sql_raw_text,
            ring_bytes: self.sql_ring_mib << 20,
            code_skip: self.sql_code_skip.clone(),
            code: self.sql_code,
            code_versions: self.sql_code_versions.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LatencyArg {
    /// Time every call of rare syscalls; sample frequent ones to about --latency-target timed
    /// calls per second each (counts stay exact; sums and histograms are weighted estimates).
    Auto,
    /// Time every syscall.
    Exact,
    /// Time one syscall in --latency-sample, at random (counts stay exact).
    Sampled,
    /// Count calls and errors only (cheapest).
    Off,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Syscalls")]
pub struct SyscallArgs {
    /// How syscall latency is measured.
    #[arg(long, value_enum, default_value = "auto")]
    pub syscall_latency: LatencyArg,
    /// With --syscall-latency sampled: time one call in N (a power of two, 2..=1024).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_sample)]
    pub latency_sample: u32,
    /// With --syscall-latency auto: timed calls per second to aim for, per syscall.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub latency_target: u32,
}

fn parse_sample(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(2..=1024).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two from 2 to 1024".to_owned());
    }
    Ok(n)
}

impl SyscallArgs {
    pub fn mode(&self) -> LatencyMode {
        match self.syscall_latency {
            LatencyArg::Auto => LatencyMode::Auto {
                target: self.latency_target,
            },
            LatencyArg::Exact => LatencyMode::Exact,
            LatencyArg::Off => LatencyMode::Off,
            LatencyArg::Sampled => LatencyMode::Sampled {
                shift: self.latency_sample.trailing_zeros() as u8,
            },
        }
    }
}
