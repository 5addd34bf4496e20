//! `scalp-bpf ship RUN URL`: uploads a finished run's Parquet files to object storage in the
//! fleet's Hive layout (what `run --ship` does as files are sealed). Files already there (same
//! name and size) are not uploaded again, so `ship` can be repeated until it succeeds.

use std::path::PathBuf;

use clap::Args;
use url::Url;

use crate::{
    analysis::load::Run,
    exit::ExitCode,
    sink::{layout, seal::RunLock, ship},
};

#[derive(Debug, Args)]
#[command(
    after_help = "Credentials and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,\nAWS_ENDPOINT (an S3-compatible server) and AWS_ALLOW_HTTP=true (a server without TLS).\n\nExit codes: 0 every file shipped, 7 some could not be, 8 not a finished run."
)]
pub struct ShipArgs {
    /// A directory written by `scalp-bpf run` (finished, or recovered).
    pub run: PathBuf,
    /// s3://BUCKET/PREFIX or file:///DIR.
    #[arg(value_parser = ship::parse_url)]
    pub url: Url,
}

pub fn main(args: ShipArgs) -> ExitCode {
    if let Err(e) = Run::metadata(&args.run) {
        eprintln!("scalp-bpf: {e}");
        return e.exit_code();
    }
    let dir = args.run.display();
    if !layout::wals(&args.run).is_empty() {
        let live = matches!(RunLock::try_take(&args.run), Ok(None));
        if live {
            eprintln!(
                "scalp-bpf: {dir} is being written by a running scalp-bpf (ship it once that run has ended, or use run --ship)"
            );
        } else {
            eprintln!(
                "scalp-bpf: {dir} has intervals not sealed yet (the run was killed); seal them with: scalp-bpf recover {dir}"
            );
        }
        return ExitCode::BadRun;
    }
    let report = match ship::ship_run(&args.run, &args.url) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            return ExitCode::Usage;
        }
    };
    let total = report.uploaded + report.present + report.failed.len();
    if let Some((part, error)) = report.failed.last() {
        eprintln!(
            "scalp-bpf: {} of {total} files not shipped to {} (last: {}: {error}); run the same command again to retry",
            report.failed.len(),
            report.url,
            part.display()
        );
        return ExitCode::OutputFailed;
    }
    eprintln!(
        "scalp-bpf: shipped {dir} to {}: {} files uploaded, {} there already",
        report.url, report.uploaded, report.present
    );
    ExitCode::Ok
}
