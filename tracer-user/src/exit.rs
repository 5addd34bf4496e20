//! Exit codes. Every way scalp-bpf can end has one, documented in the README.

/// The process exit code for each outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Ok,
    /// `diff`: a regression was found.
    Regression,
    /// A bad flag or value on the command line.
    Usage,
    /// Not root, or missing CAP_BPF / CAP_PERFMON.
    NotPermitted,
    /// The kernel lacks what scalp-bpf needs (BTF, a tracepoint) or refused a program.
    KernelUnsupported,
    /// The output directory cannot be used (not writable, not empty, a file).
    OutputUnusable,
    /// No process matches a target, or a target PID is gone.
    TargetNotFound,
    /// Writing the output failed during the run (disk full, directory removed). Everything
    /// written before stays readable.
    OutputFailed,
    /// `summary`/`diff`: the input is not a readable scalp-bpf run.
    BadRun,
    /// `diff`: the runs cannot be compared (different table sets or schema versions).
    Incomparable,
    /// `top`: standard output is not a terminal (or the terminal cannot be used).
    NoTerminal,
    /// A bug: an internal invariant failed.
    Internal,
    /// `run -- CMD`: CMD exists but cannot be executed.
    CommandNotExecutable,
    /// `run -- CMD`: CMD was not found.
    CommandNotFound,
    /// `run -- CMD`: CMD's own exit status (128 + N when killed by signal N).
    Command(u8),
}

impl ExitCode {
    pub fn code(self) -> u8 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Regression => 1,
            ExitCode::Usage => 2,
            ExitCode::NotPermitted => 3,
            ExitCode::KernelUnsupported => 4,
            ExitCode::OutputUnusable => 5,
            ExitCode::TargetNotFound => 6,
            ExitCode::OutputFailed => 7,
            ExitCode::BadRun => 8,
            ExitCode::Incomparable => 9,
            ExitCode::NoTerminal => 10,
            ExitCode::Internal => 70,
            ExitCode::CommandNotExecutable => 126,
            ExitCode::CommandNotFound => 127,
            ExitCode::Command(code) => code,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}
