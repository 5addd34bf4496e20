//! `scalp-bpf report RUN [--base RUN] [--output report.html]`: one self-contained HTML page of a
//! run (and of its comparison with a base run).

use std::path::PathBuf;

use clap::Args;

use crate::{exit::ExitCode, html_report};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run: what `summary` reads (a run directory, a directory of runs, a shipped fleet).
    pub run: PathBuf,
    /// A base run to compare with: `diff BASE RUN`'s verdicts, side by side.
    #[arg(long, value_name = "RUN")]
    pub base: Option<PathBuf>,
    /// Where to write the page.
    #[arg(long, short, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
}

pub fn main(args: ReportArgs) -> ExitCode {
    match html_report::write(&args.run, args.base.as_deref(), &args.output) {
        Ok(w) => {
            eprintln!(
                "scalp-bpf: wrote {} ({} bytes, {} services, {} intervals)",
                args.output.display(),
                w.bytes,
                w.services,
                w.intervals
            );
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}
