//! What the running kernel allows each tracer, decided from its BTF before anything is loaded:
//! the facts a decision reads ([`Facts`]), the tables tracers write their kernel-dependent ways of
//! doing something in ([`Choice`]: the ways, best first, and what each needs), and the report
//! every run writes to run.json and `scalp-bpf check` prints ([`TracerSupport`]).
//!
//! Probe rows (which tracepoint a program attaches to, and what stands in for it) are decided in
//! `crate::probes`; the loader (`crate::loader::plan`) puts both together per tracer.

use serde::Serialize;

use super::btf::KernelBtf;

/// What decisions read from a kernel (its BTF), so that they can be tested on made-up kernels.
pub trait Facts {
    /// The arguments tracepoint `name` passes to BTF programs, as C spells their types; None
    /// when the kernel has no such tracepoint.
    fn tracepoint_params(&self, name: &str) -> Option<Vec<String>>;
    /// Whether BPF helper `name` exists (`task_pt_regs` for `BPF_FUNC_task_pt_regs`).
    fn has_helper(&self, name: &str) -> bool;
    /// The C spelling of the type of `strukt.field`; None when there is no such field.
    fn field_type(&self, strukt: &str, field: &str) -> Option<String>;
    /// Whether the BTF names a type or function `name`.
    fn has_type(&self, name: &str) -> bool;
}

impl Facts for KernelBtf {
    fn tracepoint_params(&self, name: &str) -> Option<Vec<String>> {
        KernelBtf::tracepoint_params(self, name)
    }

    fn has_helper(&self, name: &str) -> bool {
        KernelBtf::has_helper(self, name)
    }

    fn field_type(&self, strukt: &str, field: &str) -> Option<String> {
        KernelBtf::field_type(self, strukt, field)
    }

    fn has_type(&self, name: &str) -> bool {
        KernelBtf::has_type(self, name)
    }
}

/// One condition a way of doing something puts on the kernel.
#[derive(Debug)]
pub enum Need {
    /// A BPF helper, by its `bpf_func_id` name without `BPF_FUNC_`.
    Helper(&'static str),
    /// A struct field, whatever its type.
    Field(&'static str, &'static str),
    /// A struct field of exactly this type (as C spells it: `struct hd_struct *`).
    FieldType(&'static str, &'static str, &'static str),
    /// One of these architectures (`uname -m`).
    Arch(&'static [&'static str]),
    /// No type or function of this name (`kasan_report`: a KASAN kernel).
    NoType(&'static str),
}

impl Need {
    /// None when the kernel meets it, else why not.
    pub fn unmet(&self, k: &dyn Facts, arch: &str) -> Option<String> {
        match self {
            Need::Helper(h) => (!k.has_helper(h)).then(|| format!("no helper bpf_{h}")),
            Need::Field(s, f) => k.field_type(s, f).is_none().then(|| format!("no {s}.{f}")),
            Need::FieldType(s, f, want) => match k.field_type(s, f) {
                None => Some(format!("no {s}.{f}")),
                Some(t) if t == *want => None,
                Some(t) => Some(format!("{s}.{f} is {t}")),
            },
            Need::Arch(archs) => (!archs.contains(&arch)).then(|| format!("not on {arch}")),
            Need::NoType(t) => k.has_type(t).then(|| format!("{t} is in this kernel")),
        }
    }
}

/// One way of doing something.
#[derive(Debug)]
pub struct Way {
    /// What the kernel side is told (a value of the tracer's settings global).
    pub value: u32,
    /// How it is done, in words (run.json, `check`).
    pub name: &'static str,
    pub needs: &'static [Need],
}

/// What a tracer loses when no way fits.
#[derive(Debug)]
pub enum Otherwise {
    /// The tracer cannot work.
    Unavailable,
    /// It works without this; the text says what is lost.
    Lost(&'static str),
}

/// Something a tracer does differently on different kernels: the ways, best first. The first way
/// whose needs the kernel meets is taken; a later one is a fallback (as exact, unless it says
/// what it loses through [`Otherwise`]).
#[derive(Debug)]
pub struct Choice {
    /// What is chosen ("device of a request").
    pub what: &'static str,
    pub ways: &'static [Way],
    pub otherwise: Otherwise,
}

/// What a [`Choice`] came to on a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The way taken, by index; None when none fits.
    pub way: Option<usize>,
    /// Why each better way (or every way, when none fits) does not fit.
    pub because: Vec<String>,
}

impl Choice {
    /// Takes the first way whose needs `k` meets.
    pub fn decide(&self, k: &dyn Facts, arch: &str) -> Decision {
        let mut because = Vec::new();
        for (i, way) in self.ways.iter().enumerate() {
            let unmet: Vec<String> = way.needs.iter().filter_map(|n| n.unmet(k, arch)).collect();
            if unmet.is_empty() {
                return Decision {
                    way: Some(i),
                    because,
                };
            }
            because.push(unmet.join(", "));
        }
        Decision { way: None, because }
    }

    /// The value of the way taken.
    pub fn value(&self, d: &Decision) -> Option<u32> {
        d.way.map(|i| self.ways[i].value)
    }
}

/// Whether a tracer works on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything it counts is counted (maybe by a fallback: see `fallbacks`).
    Ok,
    /// It runs, but something is lost (see `lost`).
    Degraded,
    /// It cannot run (see `why`); a run goes on without it.
    Unavailable,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Unavailable => "unavailable",
        }
    }
}

/// A program and the tracepoint it is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub program: &'static str,
    pub tracepoint: &'static str,
}

/// What a choice took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Used {
    pub what: &'static str,
    /// The way, or None when no way fits.
    pub way: Option<&'static str>,
    /// Whether it is the best way (else a fallback, listed in `fallbacks` with the reason).
    pub best: bool,
}

/// What a tracer uses and loses on this kernel (run.json's `kernel_support`, `scalp-bpf check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TracerSupport {
    pub tracer: &'static str,
    pub status: Status,
    /// Its programs and where they are attached.
    pub attached: Vec<Attached>,
    /// The way each of its choices took.
    pub uses: Vec<Used>,
    /// Where it does not use the best way, and why (results as exact).
    pub fallbacks: Vec<String>,
    /// What it does not count on this kernel.
    pub lost: Vec<String>,
    /// Why it cannot run.
    pub why: Option<String>,
}

impl TracerSupport {
    pub fn new(tracer: &'static str) -> TracerSupport {
        TracerSupport {
            tracer,
            status: Status::Ok,
            attached: Vec::new(),
            uses: Vec::new(),
            fallbacks: Vec::new(),
            lost: Vec::new(),
            why: None,
        }
    }

    /// Records what `choice` came to.
    pub fn record(&mut self, choice: &Choice, d: &Decision) {
        let way = d.way.map(|i| choice.ways[i].name);
        self.uses.push(Used {
            what: choice.what,
            way,
            best: d.way == Some(0),
        });
        match (way, &choice.otherwise) {
            // Why the best way does not fit says enough.
            (Some(name), _) if d.way != Some(0) => self.fallbacks.push(format!(
                "{}: {name} ({})",
                choice.what,
                d.because.first().map_or("", String::as_str)
            )),
            (Some(_), _) => {}
            (None, Otherwise::Lost(lost)) => self.lose(format!(
                "{lost} ({}: {})",
                choice.what,
                d.because.join("; ")
            )),
            (None, Otherwise::Unavailable) => {
                self.refuse(format!("{}: {}", choice.what, d.because.join("; ")))
            }
        }
    }

    /// Something is lost: degraded (unless already unavailable).
    pub fn lose(&mut self, what: String) {
        self.lost.push(what);
        self.status = self.status.max(Status::Degraded);
    }

    /// The tracer cannot run; the first reason is kept.
    pub fn refuse(&mut self, why: String) {
        self.status = Status::Unavailable;
        self.why.get_or_insert(why);
    }

    /// One line for stderr when the tracer is not fully there, else None.
    pub fn notice(&self) -> Option<String> {
        match self.status {
            Status::Ok => None,
            Status::Degraded => Some(format!(
                "{} degraded on this kernel: {}",
                self.tracer,
                self.lost.join("; ")
            )),
            Status::Unavailable => Some(format!(
                "{} unavailable on this kernel, tracing goes on without it: {}",
                self.tracer,
                self.why.as_deref().unwrap_or("")
            )),
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A made-up kernel for decision tests.
    use std::collections::BTreeMap;

    use super::Facts;

    #[derive(Default)]
    pub struct Kernel {
        pub tracepoints: BTreeMap<&'static str, Vec<&'static str>>,
        pub helpers: Vec<&'static str>,
        pub fields: BTreeMap<(&'static str, &'static str), &'static str>,
        pub types: Vec<&'static str>,
    }

    impl Kernel {
        pub fn tracepoint(mut self, name: &'static str, params: &[&'static str]) -> Kernel {
            self.tracepoints.insert(name, params.to_vec());
            self
        }

        pub fn helper(mut self, name: &'static str) -> Kernel {
            self.helpers.push(name);
            self
        }

        pub fn field(mut self, s: &'static str, f: &'static str, ty: &'static str) -> Kernel {
            self.fields.insert((s, f), ty);
            self
        }
    }

    impl Facts for Kernel {
        fn tracepoint_params(&self, name: &str) -> Option<Vec<String>> {
            self.tracepoints
                .get(name)
                .map(|p| p.iter().map(|s| (*s).to_owned()).collect())
        }

        fn has_helper(&self, name: &str) -> bool {
            self.helpers.contains(&name)
        }

        fn field_type(&self, s: &str, f: &str) -> Option<String> {
            self.fields
                .iter()
                .find(|((ss, ff), _)| *ss == s && *ff == f)
                .map(|(_, t)| (*t).to_owned())
        }

        fn has_type(&self, name: &str) -> bool {
            self.types.contains(&name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: Choice = Choice {
        what: "device of a request",
        ways: &[
            Way {
                value: 1,
                name: "block_device.bd_dev",
                needs: &[Need::FieldType("request", "part", "struct block_device *")],
            },
            Way {
                value: 2,
                name: "hd_struct.__dev.devt",
                needs: &[
                    Need::FieldType("request", "part", "struct hd_struct *"),
                    Need::Field("hd_struct", "__dev"),
                ],
            },
        ],
        otherwise: Otherwise::Unavailable,
    };

    #[test]
    fn the_first_way_that_fits_is_taken_and_the_better_ones_say_why_not() {
        let new = fake::Kernel::default().field("request", "part", "struct block_device *");
        let d = DEVICE.decide(&new, "x86_64");
        assert_eq!(d.way, Some(0));
        assert_eq!(DEVICE.value(&d), Some(1));

        let old = fake::Kernel::default()
            .field("request", "part", "struct hd_struct *")
            .field("hd_struct", "__dev", "struct device");
        let d = DEVICE.decide(&old, "x86_64");
        assert_eq!(DEVICE.value(&d), Some(2));
        assert_eq!(d.because, ["request.part is struct hd_struct *"]);
        let mut s = TracerSupport::new("blockio");
        s.record(&DEVICE, &d);
        assert_eq!(s.status, Status::Ok, "a fallback loses nothing");
        assert_eq!(
            s.fallbacks,
            ["device of a request: hd_struct.__dev.devt (request.part is struct hd_struct *)"]
        );
    }

    #[test]
    fn a_type_no_way_knows_makes_the_tracer_unavailable_never_a_guess() {
        let odd = fake::Kernel::default().field("request", "part", "struct gendisk *");
        let d = DEVICE.decide(&odd, "x86_64");
        assert_eq!(d.way, None);
        let mut s = TracerSupport::new("blockio");
        s.record(&DEVICE, &d);
        assert_eq!(s.status, Status::Unavailable);
        assert_eq!(
            s.why.as_deref(),
            Some(
                "device of a request: request.part is struct gendisk *; request.part is struct gendisk *, no hd_struct.__dev"
            )
        );
        assert!(s.notice().unwrap().starts_with("blockio unavailable"));
    }

    #[test]
    fn no_way_with_a_loss_degrades() {
        const EXIT: Choice = Choice {
            what: "syscall number at thread exit",
            ways: &[Way {
                value: 1,
                name: "bpf_task_pt_regs",
                needs: &[Need::Helper("task_pt_regs"), Need::Arch(&["x86_64"])],
            }],
            otherwise: Otherwise::Lost("exit and exit_group are not counted"),
        };
        let k = fake::Kernel::default();
        let d = EXIT.decide(&k, "aarch64");
        assert_eq!(d.because, ["no helper bpf_task_pt_regs, not on aarch64"]);
        let mut s = TracerSupport::new("process");
        s.record(&EXIT, &d);
        assert_eq!(s.status, Status::Degraded);
        assert_eq!(
            s.notice().unwrap(),
            "process degraded on this kernel: exit and exit_group are not counted \
             (syscall number at thread exit: no helper bpf_task_pt_regs, not on aarch64)"
        );
        s.refuse("x".into());
        s.lose("y".into());
        assert_eq!(
            s.status,
            Status::Unavailable,
            "unavailable stays unavailable"
        );
    }
}
