//! `scalp-bpf calibrate` (hidden): attach empty programs to the syscall tracepoints until
//! SIGINT/SIGTERM, so that benchmarks can tell the attach point's own cost from scalp-bpf's.

use std::path::PathBuf;

use clap::Args;

use crate::{
    exit::ExitCode,
    kernel::{
        btf::{BtfError, KernelBtf},
        privileges::{self, PrivilegeError},
    },
    loader::{self, Attach, KernelSetup, LoadError},
    probes::CALIBRATION,
    settings::Settings,
    tracers,
};

#[derive(Debug, thiserror::Error)]
enum CalibrateError {
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl CalibrateError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CalibrateError::Privilege(_) => ExitCode::NotPermitted,
            CalibrateError::Btf(_) => ExitCode::KernelUnsupported,
            CalibrateError::Load(e) => e.exit_code(),
        }
    }
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Attach only the sys_exit program (the counts-only configuration).
    #[arg(long)]
    pub exit_only: bool,
    /// Also attach empty programs to block_io_start, block_rq_issue and block_io_done.
    #[arg(long)]
    pub block: bool,
    #[arg(long, value_name = "FILE", default_value = crate::kernel::btf::DEFAULT_PATH)]
    pub kernel_btf: PathBuf,
}

pub fn main(args: CalibrateArgs) -> ExitCode {
    let result = (|| -> Result<(), CalibrateError> {
        privileges::check()?;
        let kbtf = KernelBtf::open(&args.kernel_btf)?;
        // The object's globals must be set for it to load, even though the empty programs read
        // none of them.
        let settings = Settings::minimal();
        let mut setup = KernelSetup::new(&settings, &kbtf)?;
        for r in tracers::enabled(&settings) {
            (r.setup)(&mut setup)?;
        }
        let probes: Vec<Attach> = CALIBRATION
            .iter()
            .filter(|p| !args.exit_only || p.tracepoint == "sys_exit")
            .filter(|p| args.block || p.tracepoint.starts_with("sys_"))
            .map(|probe| Attach {
                tracer: "calibrate",
                probe,
            })
            .collect();
        let _loaded = loader::load(setup, &probes)?;
        println!("ready");
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut sig = 0;
        // SAFETY: standard sigwait setup on a local set; blocking SIGINT/SIGTERM in this
        // single-threaded process makes sigwait receive them.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            libc::sigwait(set.as_ptr(), &mut sig);
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}
