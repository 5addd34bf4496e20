//! Python call sites: which CPython processes the kernel walks stacks of (`PY_PROCS`), and the
//! names of the frames it records — each code object's qualified name, file and, from its
//! location table, the line of the frame's instruction.

pub mod debug_offsets;
pub mod detect;
pub mod linetable;
pub mod memory;
pub mod offsets;

use std::{
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use tracer_common::python::{PY_PROCS, PyFrameRef};

use crate::{
    kernel::maps::{self, MapAccessError},
    processes::{ProcessKey, Processes},
    tracers::TracerError,
};
use offsets::{Lines, Offsets, Version};

/// A frame, named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The code's qualified name (`Class.method`, `<module>`).
    pub function: String,
    pub file: String,
    /// 0 when the instruction has no line.
    pub line: i32,
}

/// What a traced process's interpreter is.
#[derive(Debug)]
enum Interp {
    Python {
        version: Version,
        /// 3.12: the code object of the C stack's shim frames, which are left out.
        trampoline: Option<u64>,
    },
    NotPython,
    /// CPython that this table or reader does not know: why.
    Unsupported,
}

struct Seen {
    key: ProcessKey,
    /// exec changes it: the process is looked at again.
    command_line: String,
    interp: Interp,
    /// A CPython whose interpreter state could not be found yet (it may be starting up) is
    /// looked at again from this time on, until `give_up`.
    retry_at: Option<Instant>,
    give_up: Instant,
}

/// How long a CPython process that just started (or exec'd) is given to set its interpreter
/// up, and how often it is looked at meanwhile.
const STARTUP: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(100);

/// The database client stack (the first frame outside it is a statement's call site): the
/// ORMs, drivers and green-thread libraries OpenStack uses. The standard library and frozen
/// modules are skipped too.
pub const DATABASE_STACK: [&str; 8] = [
    "/sqlalchemy/",
    "/oslo_db/",
    "/pymysql/",
    "/psycopg2/",
    "/psycopg/",
    "/MySQLdb/",
    "/eventlet/",
    "/greenlet/",
];

struct Code {
    /// Not Python code: a C-stack shim frame (3.12's trampoline code, 3.13's `None`), left
    /// out of the stack.
    shim: bool,
    name: String,
    file: String,
    first_line: i32,
    table: Vec<u8>,
}

/// Code objects already read, per process and address (a code object lives as long as its
/// function; a process's entries go when it ends or execs).
const CODE_CACHE: usize = 100_000;

pub struct Python {
    procs: BpfHashMap<MapData, u32, tracer_common::python::PyProc>,
    seen: HashMap<u32, Seen>,
    codes: HashMap<(u32, u64), Option<Rc<Code>>>,
    skip: Vec<String>,
    /// Test only: the versions used (None: every one in the table).
    versions: Option<Vec<String>>,
}

impl Python {
    pub fn new(
        ebpf: &mut Ebpf,
        extra_skip: &[String],
        versions: Option<Vec<String>>,
    ) -> Result<Python, TracerError> {
        let mut skip: Vec<String> = DATABASE_STACK.iter().map(|s| (*s).to_owned()).collect();
        skip.extend(extra_skip.iter().cloned());
        Ok(Python {
            procs: maps::take_as(ebpf, PY_PROCS)?,
            seen: HashMap::new(),
            codes: HashMap::new(),
            skip,
            versions,
        })
    }

    /// Looks at every traced process not looked at yet (or exec'd since): a CPython of a known
    /// version gets its interpreter's address and offsets in `PY_PROCS`.
    pub fn examine(&mut self, processes: &Processes) -> Result<(), TracerError> {
        for p in processes.live() {
            let pid = p.pid();
            let now = Instant::now();
            let mut give_up = now + STARTUP;
            if let Some(s) = self.seen.get(&pid)
                && s.key == p.key
                && s.command_line == p.command_line
            {
                if s.retry_at.is_none_or(|at| now < at) {
                    continue;
                }
                give_up = s.give_up;
            }
            self.codes.retain(|(tgid, _), _| *tgid != pid);
            let mut retry_at = None;
            let interp = match detect::interpreter(pid) {
                detect::Found::NotPython => Interp::NotPython,
                detect::Found::Unsupported(_) if now < give_up => {
                    retry_at = Some(now + RETRY);
                    Interp::Unsupported
                }
                detect::Found::Unsupported(why) => {
                    tracing::info!("PID {pid}: no Python call sites: {why}");
                    Interp::Unsupported
                }
                detect::Found::Python {
                    major,
                    minor,
                    interp,
                } => match offsets::of(major, minor)
                    .filter(|_| {
                        self.versions
                            .as_ref()
                            .is_none_or(|v| v.contains(&format!("{major}.{minor}")))
                    })
                    .and_then(|v| Some((v, v.offsets.kernel(interp)?)))
                {
                    Some((version, _))
                        if let Some(why) = check_runtime(pid, interp, version.offsets) =>
                    {
                        tracing::info!("PID {pid}: no Python call sites: {why}");
                        Interp::Unsupported
                    }
                    Some((version, kernel)) => {
                        self.procs
                            .insert(pid, kernel, 0)
                            .map_err(MapAccessError::of(PY_PROCS))?;
                        let trampoline = version.offsets.interp_trampoline.and_then(|o| {
                            memory::u64_at(pid, interp + u64::from(o)).filter(|&a| a != 0)
                        });
                        Interp::Python {
                            version,
                            trampoline,
                        }
                    }
                    None => {
                        tracing::info!(
                            "PID {pid}: no Python call sites: CPython {major}.{minor} is not among {}",
                            offsets::supported().join(", ")
                        );
                        Interp::Unsupported
                    }
                },
            };
            if !matches!(interp, Interp::Python { .. }) {
                let _ = self.procs.remove(&pid);
            }
            self.seen.insert(
                pid,
                Seen {
                    key: p.key,
                    command_line: p.command_line.clone(),
                    interp,
                    retry_at,
                    give_up,
                },
            );
        }
        Ok(())
    }

    /// Whether the process runs a CPython whose stacks cannot be read (its statements have no
    /// call site, and are counted as such).
    pub fn unsupported(&self, tgid: u32) -> bool {
        self.seen
            .get(&tgid)
            .is_some_and(|s| matches!(s.interp, Interp::Unsupported))
    }

    /// Forgets processes that ended.
    pub fn reap(&mut self, ended: &[ProcessKey]) {
        for key in ended {
            if self.seen.get(&key.tgid).is_some_and(|s| s.key == *key) {
                self.seen.remove(&key.tgid);
                let _ = self.procs.remove(&key.tgid);
                self.codes.retain(|(tgid, _), _| *tgid != key.tgid);
            }
        }
    }

    /// Names a recorded stack (innermost first); `None` for a frame whose code cannot be read.
    /// The C stack's shim frames (3.12+) are left out.
    pub fn frames(&mut self, tgid: u32, refs: &[PyFrameRef]) -> Vec<Option<Frame>> {
        let Some(Seen {
            interp:
                Interp::Python {
                    version,
                    trampoline,
                },
            ..
        }) = self.seen.get(&tgid)
        else {
            return vec![None; refs.len()];
        };
        let (version, trampoline) = (*version, *trampoline);
        if self.codes.len() > CODE_CACHE {
            self.codes.clear();
        }
        refs.iter()
            .filter_map(|r| {
                let Some(code) = self
                    .codes
                    .entry((tgid, r.code))
                    .or_insert_with(|| {
                        read_code(tgid, version.offsets, r.code, trampoline).map(Rc::new)
                    })
                    .clone()
                else {
                    return Some(None);
                };
                if code.shim {
                    return None;
                }
                let line = line_of(version, &code, r);
                Some(Some(Frame {
                    function: code.name.clone(),
                    file: code.file.clone(),
                    line: line.unwrap_or(0),
                }))
            })
            .collect()
    }

    /// The first frame outside the database stack, from the innermost.
    pub fn call_site<'a>(&self, frames: &'a [Option<Frame>]) -> Option<&'a Frame> {
        frames
            .iter()
            .flatten()
            .find(|f| !in_database_stack(&f.file, &self.skip))
    }
}

/// Why the process's own struct offsets (3.13+: `_Py_DebugOffsets` at the start of its runtime
/// state) disagree with the table's, if they do; `None` for versions without them.
fn check_runtime(pid: u32, interp: u64, o: &Offsets) -> Option<String> {
    let at = o.interp_runtime?;
    let Some(debug) = memory::u64_at(pid, interp + u64::from(at))
        .and_then(|runtime| memory::read(pid, runtime, debug_offsets::SIZE))
    else {
        return Some("its _Py_DebugOffsets cannot be read".to_owned());
    };
    debug_offsets::disagreement(o, &debug)
}

/// The line of a frame's position in its code; the definition's line when it has not started.
fn line_of(version: Version, code: &Code, r: &PyFrameRef) -> Option<i32> {
    let o = version.offsets;
    // Before 3.11 the position is the int f_lasti (the low half of the word read), -1 before
    // the first instruction.
    let lasti = r.instr as u32 as i32;
    match version.lines() {
        Lines::Locations => {
            let base = r.code + u64::from(o.code_adaptive?);
            if r.instr < base {
                Some(code.first_line)
            } else {
                linetable::line_at(&code.table, code.first_line, r.instr - base)
            }
        }
        _ if lasti < 0 => Some(code.first_line),
        Lines::Lnotab => Some(linetable::lnotab_line(
            &code.table,
            code.first_line,
            lasti as u32,
        )),
        Lines::Pep626 => linetable::pep626_line(&code.table, code.first_line, 2 * lasti as u32),
    }
}

/// Type names are read from `PyTypeObject.tp_name` (`ob_type` at 8 in every object, `tp_name`
/// at 24 in every version: after the variable-size object header).
const OB_TYPE: u64 = 8;
const TP_NAME: u64 = 24;

fn read_code(pid: u32, o: &Offsets, code: u64, trampoline: Option<u64>) -> Option<Code> {
    let shim = || Code {
        shim: true,
        name: String::new(),
        file: String::new(),
        first_line: 0,
        table: vec![],
    };
    if trampoline == Some(code) {
        return Some(shim());
    }
    // 3.13's shim frames hold None where the code object is.
    let type_name = memory::u64_at(pid, code + OB_TYPE)
        .and_then(|t| memory::u64_at(pid, t + TP_NAME))
        .and_then(|n| memory::read(pid, n, 5))?;
    if type_name != b"code\0" {
        return (type_name == b"NoneT").then(shim);
    }
    let ptr = |off: u32| memory::u64_at(pid, code + u64::from(off));
    Some(Code {
        shim: false,
        name: memory::string(pid, o, ptr(o.code_qualname.unwrap_or(o.code_name))?)?,
        file: memory::string(pid, o, ptr(o.code_filename)?)?,
        first_line: memory::i32_at(pid, code + u64::from(o.code_firstlineno))?,
        table: memory::bytes(pid, o, ptr(o.code_linetable)?)?,
    })
}

/// Whether a frame's file is part of the database stack: a listed package, the standard
/// library (under `lib/pythonX.Y/`, not in a `*-packages` directory) or a frozen module.
pub fn in_database_stack(file: &str, skip: &[String]) -> bool {
    if file.starts_with('<') || skip.iter().any(|s| file.contains(s.as_str())) {
        return true;
    }
    match file.find("/lib/python3") {
        Some(at) => !file[at..].contains("-packages/"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_site_is_the_first_frame_outside_the_database_stack() {
        let skip: Vec<String> = DATABASE_STACK.iter().map(|s| (*s).to_owned()).collect();
        for file in [
            "/venv/lib/python3.11/site-packages/pymysql/connections.py",
            "/usr/lib/python3/dist-packages/sqlalchemy/engine/base.py",
            "/usr/lib/python3.11/socket.py",
            "<frozen importlib._bootstrap>",
            "/opt/stack/oslo.db/oslo_db/api.py",
        ] {
            assert!(in_database_stack(file, &skip), "{file}");
        }
        for file in [
            "/opt/stack/nova/nova/objects/instance.py",
            "/venv/lib/python3.11/site-packages/nova/db/main/api.py",
            "/srv/app.py",
        ] {
            assert!(!in_database_stack(file, &skip), "{file}");
        }
    }
}
