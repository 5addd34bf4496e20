//! scalp-bpf: per-process syscall, I/O and SQL accounting with eBPF, written as Parquet.
//!
//! The data path is the architecture: kernel program (tracer-ebpf) → per-CPU map → interval
//! [`snapshot`] → Arrow batch ([`tracers`]) → Parquet [`sink`].

mod analysis;
mod cli;
mod devices;
mod dump;
mod exit;
mod html_report;
mod kernel;
mod loader;
mod probes;
mod processes;
mod python;
mod report;
mod run;
mod settings;
mod sink;
mod snapshot;
mod syscall_names;
mod targets;
mod top;
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
            eprintln!("scalp-bpf: {}", one_line(&e.render().to_string()));
            return ExitCode::Usage.into();
        }
    };
    init_logging(cli.verbose);
    let argv: Vec<String> = std::env::args().collect();
    let code = match cli.command {
        Command::Run(args) => run::main(args, argv),
        Command::Top(args) => top::main(args, argv),
        Command::Calibrate(args) => cli::calibrate::main(args),
        Command::Summary(args) => cli::summary::main(args),
        Command::Diff(args) => cli::diff::main(args),
        Command::Units(args) => cli::units::main(args),
        Command::Report(args) => cli::report::main(args),
        Command::Recover(args) => cli::recover::main(args),
        Command::Ship(args) => cli::ship::main(args),
        Command::Check(args) => cli::check::main(args),
        Command::Dump(args) => dump::main(args),
    };
    code.into()
}

/// Clap's message in one line, not its usage block: the first line, with the possible values
/// or the suggestion clap puts on the lines below.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim);
    let mut out = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    for line in lines {
        if let Some(values) = line
            .strip_prefix("[possible values: ")
            .and_then(|v| v.strip_suffix(']'))
        {
            out.push_str(&format!(" (possible values: {values})"));
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            out.push_str(&format!("; {tip}"));
        }
    }
    out
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // py-spy's reader logs its fallbacks (a symbol it could not use, a memory scan); what it
    // could not do reaches the user through scalp-bpf's own messages.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCALP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},py_spy=off,remoteprocess=off"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| top::logs::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_errors_fit_one_line() {
        let text = "error: invalid value 'x' for '--mode <MODE>'\n  [possible values: a, b]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(text),
            "invalid value 'x' for '--mode <MODE>' (possible values: a, b)"
        );
        let text = "error: unexpected argument '--file' found\n\n  tip: a similar argument exists: '--files'\n\nUsage: x\n";
        assert_eq!(
            super::one_line(text),
            "unexpected argument '--file' found; a similar argument exists: '--files'"
        );
    }
}
