//! `scalp-bpf recover RUN`: seals what a run that was killed (or stopped by a write error) left
//! in its write-ahead log, and removes the hidden files of a seal it was in the middle of.
//! Idempotent: a run with nothing to seal is left as it is.

use std::path::PathBuf;

use clap::Args;

use crate::{
    analysis::load::Run,
    exit::ExitCode,
    sink::{
        SinkError,
        seal::{self, RecoverError},
    },
};

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// A directory written by `scalp-bpf run`.
    pub run: PathBuf,
}

pub fn main(args: RecoverArgs) -> ExitCode {
    if let Err(e) = Run::metadata(&args.run) {
        eprintln!("scalp-bpf: {e}");
        return e.exit_code();
    }
    let done = match seal::recover(&args.run) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            return match e {
                RecoverError::Live { .. } | RecoverError::Sink(SinkError::Corrupt { .. }) => {
                    ExitCode::BadRun
                }
                RecoverError::Sink(_) => ExitCode::OutputFailed,
            };
        }
    };
    let dir = args.run.display();
    if done.logs.is_empty() && done.removed.is_empty() {
        eprintln!("scalp-bpf: {dir}: nothing to recover");
        return ExitCode::Ok;
    }
    let parts: usize = done.logs.iter().map(|(_, s)| s.parts.len()).sum();
    let rows: u64 = done
        .logs
        .iter()
        .flat_map(|(_, s)| &s.parts)
        .map(|p| p.rows)
        .sum();
    let intervals: u64 = done.logs.iter().map(|(_, s)| s.commits).sum();
    let torn: u64 = done.logs.iter().map(|(_, s)| s.tail.torn_bytes).sum();
    let dropped = done.logs.iter().filter(|(_, s)| s.tail.dropped()).count();
    let mut line = format!(
        "scalp-bpf: recovered {dir}: {intervals} intervals from {} logs sealed into {parts} files ({rows} rows)",
        done.logs.len()
    );
    if dropped > 0 {
        line.push_str(&format!(
            "; dropped the interval in progress ({torn} bytes of a write the run did not finish)"
        ));
    }
    if !done.removed.is_empty() {
        line.push_str(&format!(
            "; removed {} half-written files",
            done.removed.len()
        ));
    }
    eprintln!("{line}");
    ExitCode::Ok
}
