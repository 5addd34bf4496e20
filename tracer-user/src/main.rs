//! scalp-bpf: per-process syscall, I/O and SQL accounting with eBPF, written as Parquet.
//!
//! The data path is the architecture: kernel program (tracer-ebpf) → per-CPU map → interval
//! [`snapshot`] → Arrow batch ([`tracers`]) → Parquet [`sink`].

mod analysis;
mod cli;
mod devices;
mod exit;
mod kernel;
mod loader;
mod probes;
mod processes;
mod report;
mod run;
mod settings;
mod sink;
mod snapshot;
mod syscall_names;
mod targets;
mod tracers;

use clap::{Parser as _, error::ErrorKind};

use crate::{
    cli::{Cli, Command},
    exit::ExitCode,
};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::Ok.into();
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::Usage.into();
        }
        Err(e) => {
            // One line, not clap's usage block: the first line of its message.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("scalp-bpf: {}", first.trim_start_matches("error: "));
            return ExitCode::Usage.into();
        }
    };
    init_logging(cli.verbose);
    let argv: Vec<String> = std::env::args().collect();
    let code = match cli.command {
        Command::Run(args) => run::main(args, argv),
        Command::Calibrate(args) => cli::calibrate::main(args),
        Command::Summary(args) => cli::summary::main(args),
        Command::Diff(args) => cli::diff::main(args),
        Command::Units(args) => cli::units::main(args),
    };
    code.into()
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCALP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
