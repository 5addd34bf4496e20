//! Which kernel program attaches where, and when: data, not `if`s. Each tracer lists its probe
//! rows in its registration (`crate::tracers`); this module holds the row type, decides each row
//! on a kernel ([`plan`]: the tracepoint it gets, what stands in for a missing one, what is lost),
//! and the empty programs `scalp-bpf calibrate` attaches.
//!
//! Every program is a BTF tracepoint (tp_btf). kprobes and fentry are not used: they are missing
//! or refused on some kernels (CONFIG_KPROBES=n, lockdown policies), while tp_btf needs only BTF
//! and costs the least per hit of the tracepoint kinds. A tp_btf program's return value is
//! ignored by the kernel, so other users of the same tracepoints (perf, ftrace) keep seeing every
//! event.

use crate::{
    kernel::support::{Attached, Facts, TracerSupport},
    settings::Settings,
};

/// What a tracer loses when a probe can be attached nowhere.
#[derive(Clone, Copy, Debug)]
pub enum IfMissing {
    /// The tracer cannot work without it.
    Required,
    /// Rows that name it in `stands_in_for` are attached instead; nothing is lost.
    StoodIn,
    /// The tracer works without it: every row of the same `feature` is left out too, and `lost`
    /// says what is not counted — when `only_with` is empty or one of those programs is
    /// attached (otherwise nothing depended on it).
    Optional {
        feature: &'static str,
        lost: &'static str,
        only_with: &'static [&'static str],
    },
}

/// One program of the object.
pub struct Probe {
    /// Function name in tracer-ebpf.
    pub program: &'static str,
    /// The tracepoint (`btf_trace_<name>` in the kernel's BTF).
    pub tracepoint: &'static str,
    /// Tracepoints that take its place, in order, on kernels without it (they pass what the
    /// program reads in the same places: older names of the same event).
    pub alternatives: &'static [&'static str],
    /// The arguments the program reads, in order: the struct a pointer argument points to, or
    /// "" for one it does not check (a scalar). A tracepoint that passes other types there is
    /// no place for it (the verifier would refuse it, or worse, accept it).
    pub args: &'static [&'static str],
    /// Whether these settings need it.
    pub wanted: fn(&Settings) -> bool,
    /// Programs (of the same tracer) it stands in for: it is also wanted when one of them has
    /// no tracepoint on this kernel.
    pub stands_in_for: &'static [&'static str],
    pub if_missing: IfMissing,
}

impl Probe {
    /// A required program every run of its tracer attaches to `tracepoint`.
    pub const fn new(
        program: &'static str,
        tracepoint: &'static str,
        args: &'static [&'static str],
    ) -> Probe {
        Probe {
            program,
            tracepoint,
            alternatives: &[],
            args,
            wanted: always,
            stands_in_for: &[],
            if_missing: IfMissing::Required,
        }
    }

    /// Attached only when `wanted` says so.
    pub const fn when(self, wanted: fn(&Settings) -> bool) -> Probe {
        Probe { wanted, ..self }
    }

    /// On kernels without its tracepoint, attached to the first of these that exists.
    pub const fn or(self, alternatives: &'static [&'static str]) -> Probe {
        Probe {
            alternatives,
            ..self
        }
    }

    /// Also attached when one of `programs` has nowhere to attach.
    pub const fn stands_in_for(self, programs: &'static [&'static str]) -> Probe {
        Probe {
            stands_in_for: programs,
            ..self
        }
    }

    pub const fn if_missing(self, if_missing: IfMissing) -> Probe {
        Probe { if_missing, ..self }
    }

    /// The tracepoint it attaches to on this kernel: its own, else the first alternative whose
    /// arguments fit; Err says why none fits.
    pub fn pick(&self, k: &dyn Facts) -> Result<&'static str, String> {
        let mut why = Vec::new();
        for tp in std::iter::once(&self.tracepoint).chain(self.alternatives) {
            match k.tracepoint_params(tp) {
                None => why.push(format!("no tracepoint {tp}")),
                Some(params) => match self.misfit(&params) {
                    None => return Ok(tp),
                    Some(w) => why.push(format!("tracepoint {tp} {w}")),
                },
            }
        }
        Err(why.join(", "))
    }

    /// None when `params` carry what the program reads where it reads it, else what differs.
    fn misfit(&self, params: &[String]) -> Option<String> {
        let fits = params.len() >= self.args.len()
            && self
                .args
                .iter()
                .zip(params)
                .all(|(want, got)| want.is_empty() || *got == format!("struct {want} *"));
        let shown = |v: Vec<String>| format!("({})", v.join(", "));
        (!fits).then(|| {
            let wanted = self
                .args
                .iter()
                .map(|a| {
                    if a.is_empty() {
                        "…".to_owned()
                    } else {
                        format!("struct {a} *")
                    }
                })
                .collect();
            format!(
                "passes {}, {} reads {}",
                shown(params.to_vec()),
                self.program,
                shown(wanted)
            )
        })
    }
}

/// For probes every run of their tracer wants.
pub fn always(_: &Settings) -> bool {
    true
}

/// What became of a probe row on a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Attached to this tracepoint.
    Attach(&'static str),
    /// These settings do not need it.
    NotWanted,
    /// Nowhere to attach it (why).
    Missing(String),
    /// Left out with its optional feature (another row of it is missing).
    Dropped,
}

/// One tracer's probe rows decided on a kernel.
pub struct ProbePlan {
    pub rows: Vec<(&'static Probe, Outcome)>,
}

impl ProbePlan {
    /// The rows to attach, with their tracepoints.
    pub fn attached(&self) -> impl Iterator<Item = (&'static Probe, &'static str)> + '_ {
        self.rows.iter().filter_map(|(p, o)| match o {
            Outcome::Attach(tp) => Some((*p, *tp)),
            _ => None,
        })
    }

    /// Whether `program` is attached.
    pub fn attaches(&self, program: &str) -> bool {
        self.attached().any(|(p, _)| p.program == program)
    }

    fn outcome(&self, program: &str) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|(p, _)| p.program == program)
            .map(|(_, o)| o)
    }

    /// Writes what the rows came to into `s`: attachments, stand-ins and alternatives used,
    /// features lost, or why the tracer cannot run.
    pub fn report(&self, s: &mut TracerSupport) {
        for (p, tp) in self.attached() {
            s.attached.push(Attached {
                program: p.program,
                tracepoint: tp,
            });
            if tp != p.tracepoint {
                s.fallbacks
                    .push(format!("{} on {tp} (no {})", p.program, p.tracepoint));
            }
        }
        let missing: Vec<&str> = self
            .rows
            .iter()
            .filter(|(p, o)| {
                matches!(o, Outcome::Missing(_)) && matches!(p.if_missing, IfMissing::StoodIn)
            })
            .map(|(p, _)| p.program)
            .collect();
        if !missing.is_empty() {
            let standing_in: Vec<&str> = self
                .attached()
                .filter(|(p, _)| p.stands_in_for.iter().any(|m| missing.contains(m)))
                .map(|(p, _)| p.program)
                .collect();
            s.fallbacks.push(format!(
                "{} stand in for {} (not in this kernel)",
                standing_in.join(", "),
                missing.join(", ")
            ));
        }
        for (p, o) in &self.rows {
            let Outcome::Missing(why) = o else { continue };
            match p.if_missing {
                IfMissing::Required => s.refuse(format!("{}: {why}", p.program)),
                IfMissing::StoodIn => {}
                IfMissing::Optional {
                    lost, only_with, ..
                } => {
                    if only_with.is_empty() || only_with.iter().any(|w| self.attaches(w)) {
                        s.lose(format!("{lost} ({why})"));
                    } else {
                        s.fallbacks.push(format!(
                            "{} left out ({why}): nothing needs it here",
                            p.program
                        ));
                    }
                }
            }
        }
    }
}

/// Decides a tracer's probe rows on kernel `k` for `settings`.
pub fn plan(probes: &'static [Probe], settings: &Settings, k: &dyn Facts) -> ProbePlan {
    let decide = |p: &Probe, wanted: bool| {
        if !wanted {
            return Outcome::NotWanted;
        }
        match p.pick(k) {
            Ok(tp) => Outcome::Attach(tp),
            Err(why) => Outcome::Missing(why),
        }
    };
    // The rows that stand in for nothing first: whether stand-ins are wanted depends on them.
    let mut plan = ProbePlan {
        rows: probes
            .iter()
            .map(|p| {
                let outcome = if p.stands_in_for.is_empty() {
                    decide(p, (p.wanted)(settings))
                } else {
                    Outcome::NotWanted
                };
                (p, outcome)
            })
            .collect(),
    };
    for i in 0..plan.rows.len() {
        let p = plan.rows[i].0;
        if p.stands_in_for.is_empty() {
            continue;
        }
        let needed = p
            .stands_in_for
            .iter()
            .any(|m| matches!(plan.outcome(m), Some(Outcome::Missing(_))));
        plan.rows[i].1 = decide(p, (p.wanted)(settings) || needed);
    }
    // An optional feature goes whole: its other rows are not attached either.
    let lost: Vec<&str> = plan
        .rows
        .iter()
        .filter_map(|(p, o)| match (p.if_missing, o) {
            (IfMissing::Optional { feature, .. }, Outcome::Missing(_)) => Some(feature),
            _ => None,
        })
        .collect();
    for (p, o) in &mut plan.rows {
        if let (IfMissing::Optional { feature, .. }, Outcome::Attach(_)) = (p.if_missing, &*o)
            && lost.contains(&feature)
        {
            *o = Outcome::Dropped;
        }
    }
    plan
}

/// Empty programs on the syscall and block tracepoints (`scalp-bpf calibrate`).
pub const CALIBRATION: &[Probe] = &[
    Probe::new("calibrate_sys_enter", "sys_enter", &[]),
    Probe::new("calibrate_sys_exit", "sys_exit", &[]),
    Probe::new("calibrate_block_io_start", "block_io_start", &[]),
    Probe::new("calibrate_block_rq_issue", "block_rq_issue", &[]),
    Probe::new("calibrate_block_io_done", "block_io_done", &[]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::support::{Status, fake};

    fn fallback(s: &Settings) -> bool {
        s.block_fallback
    }

    const WRITEBACK: IfMissing = IfMissing::Optional {
        feature: "writeback",
        lost: "writeback is not attributed",
        only_with: &[],
    };

    /// The block tracer's shape: stand-ins, an alternative, an optional feature, an optional
    /// probe that matters only with another.
    static ROWS: &[Probe] = &[
        Probe::new("block_io_start", "block_io_start", &["request"]).if_missing(IfMissing::StoodIn),
        Probe::new("block_rq_insert", "block_rq_insert", &["request"])
            .when(fallback)
            .stands_in_for(&["block_io_start", "block_io_done"]),
        Probe::new("block_rq_issue", "block_rq_issue", &["request"]),
        Probe::new("block_rq_error", "block_rq_error", &["request"]).if_missing(
            IfMissing::Optional {
                feature: "block_rq_error",
                lost: "errors at block_io_done are not counted",
                only_with: &["block_io_done"],
            },
        ),
        Probe::new(
            "block_rq_complete",
            "block_rq_complete",
            &["request", "", ""],
        )
        .when(fallback)
        .stands_in_for(&["block_io_start", "block_io_done"]),
        Probe::new("block_io_done", "block_io_done", &["request"]).if_missing(IfMissing::StoodIn),
        Probe::new(
            "writeback_dirty_folio",
            "writeback_dirty_folio",
            &["", "address_space"],
        )
        .or(&["writeback_dirty_page"])
        .if_missing(WRITEBACK),
        Probe::new(
            "writeback_single_inode_start",
            "writeback_single_inode_start",
            &["inode"],
        )
        .if_missing(WRITEBACK),
    ];

    const RQ: &str = "struct request *";

    fn kernel_5_10() -> fake::Kernel {
        fake::Kernel::default()
            .tracepoint("block_rq_insert", &[RQ])
            .tracepoint("block_rq_issue", &[RQ])
            .tracepoint("block_rq_complete", &[RQ, "int", "unsigned int"])
            .tracepoint(
                "writeback_dirty_page",
                &["struct page *", "struct address_space *"],
            )
            .tracepoint("writeback_single_inode_start", &["struct inode *"])
    }

    fn kernel_6_12() -> fake::Kernel {
        fake::Kernel::default()
            .tracepoint("block_io_start", &[RQ])
            .tracepoint("block_io_done", &[RQ])
            .tracepoint("block_rq_insert", &[RQ])
            .tracepoint("block_rq_issue", &[RQ])
            .tracepoint("block_rq_error", &[RQ, "blk_status_t", "unsigned int"])
            .tracepoint("block_rq_complete", &[RQ, "blk_status_t", "unsigned int"])
            .tracepoint(
                "writeback_dirty_folio",
                &["struct folio *", "struct address_space *"],
            )
            .tracepoint("writeback_single_inode_start", &["struct inode *"])
    }

    fn report(p: &ProbePlan) -> TracerSupport {
        let mut s = TracerSupport::new("blockio");
        p.report(&mut s);
        s
    }

    #[test]
    fn a_new_kernel_gets_its_own_tracepoints_and_no_stand_ins() {
        let p = plan(ROWS, &Settings::minimal(), &kernel_6_12());
        let attached: Vec<&str> = p.attached().map(|(_, tp)| tp).collect();
        assert_eq!(
            attached,
            [
                "block_io_start",
                "block_rq_issue",
                "block_rq_error",
                "block_io_done",
                "writeback_dirty_folio",
                "writeback_single_inode_start"
            ]
        );
        let s = report(&p);
        assert_eq!(
            (s.status, s.fallbacks.len(), s.lost.len()),
            (Status::Ok, 0, 0)
        );
    }

    #[test]
    fn settings_can_still_ask_for_the_stand_ins() {
        let mut settings = Settings::minimal();
        settings.block_fallback = true;
        let p = plan(ROWS, &settings, &kernel_6_12());
        assert!(p.attaches("block_rq_insert") && p.attaches("block_io_start"));
        assert!(report(&p).fallbacks.is_empty(), "not the kernel's doing");
    }

    #[test]
    fn an_old_kernel_gets_stand_ins_and_alternatives_and_loses_nothing() {
        let p = plan(ROWS, &Settings::minimal(), &kernel_5_10());
        let attached: Vec<(&str, &str)> = p.attached().map(|(p, tp)| (p.program, tp)).collect();
        assert_eq!(
            attached,
            [
                ("block_rq_insert", "block_rq_insert"),
                ("block_rq_issue", "block_rq_issue"),
                ("block_rq_complete", "block_rq_complete"),
                ("writeback_dirty_folio", "writeback_dirty_page"),
                (
                    "writeback_single_inode_start",
                    "writeback_single_inode_start"
                ),
            ]
        );
        let s = report(&p);
        assert_eq!(s.status, Status::Ok, "{s:?}");
        assert_eq!(
            s.fallbacks,
            [
                "writeback_dirty_folio on writeback_dirty_page (no writeback_dirty_folio)",
                "block_rq_insert, block_rq_complete stand in for block_io_start, block_io_done \
                 (not in this kernel)",
                "block_rq_error left out (no tracepoint block_rq_error): nothing needs it here",
            ]
        );
    }

    #[test]
    fn a_missing_optional_feature_goes_whole_and_degrades() {
        let mut k = kernel_6_12();
        k.tracepoints.remove("writeback_single_inode_start");
        let p = plan(ROWS, &Settings::minimal(), &k);
        assert!(!p.attaches("writeback_dirty_folio"), "its feature is gone");
        let s = report(&p);
        assert_eq!(s.status, Status::Degraded);
        assert_eq!(
            s.lost,
            ["writeback is not attributed (no tracepoint writeback_single_inode_start)"]
        );
    }

    #[test]
    fn a_tracepoint_with_other_arguments_is_no_place_for_the_program() {
        // Before 5.11 the request-based block tracepoints passed the queue first.
        let k = kernel_5_10().tracepoint("block_rq_insert", &["struct request_queue *", RQ]);
        let p = plan(ROWS, &Settings::minimal(), &k);
        let s = report(&p);
        assert_eq!(s.status, Status::Unavailable);
        assert_eq!(
            s.why.as_deref(),
            Some(
                "block_rq_insert: tracepoint block_rq_insert passes (struct request_queue *, \
                 struct request *), block_rq_insert reads (struct request *)"
            )
        );
        let k = kernel_6_12().tracepoint("block_rq_issue", &[]);
        assert_eq!(
            report(&plan(ROWS, &Settings::minimal(), &k)).status,
            Status::Unavailable
        );
    }

    #[test]
    fn no_place_for_a_required_probe_makes_the_tracer_unavailable() {
        let mut k = kernel_5_10();
        k.tracepoints.remove("block_rq_insert");
        let s = report(&plan(ROWS, &Settings::minimal(), &k));
        assert_eq!(s.status, Status::Unavailable);
        assert_eq!(
            s.why.as_deref(),
            Some("block_rq_insert: no tracepoint block_rq_insert")
        );
    }
}
