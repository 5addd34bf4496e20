//! Does a process answer to a name? The rules `pgrep -f` users expect for OpenStack services:
//! the comm (even cut to 15 characters), the basename of argv[0], the name setproctitle puts
//! before a colon (`nova-api: master process`), and for interpreters the script (or `-m` module)
//! they run.

use super::procfs::ProcInfo;

/// Longest comm the kernel keeps (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// Interpreters whose first positional argument is the program (version suffixes stripped).
const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "node", "nodejs", "bash", "sh", "dash", "zsh", "php", "lua",
];

/// Interpreter options that take the next argument as their value.
const OPTIONS_WITH_VALUE: &[&str] = &["-W", "-X", "-Q", "-I", "-r", "--require"];

/// Options after which there is no script file (the program is inline).
const INLINE_PROGRAM_OPTIONS: &[&str] = &["-c", "-e", "-E", "--eval"];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_interpreter(program: &str) -> bool {
    let stem = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&stem)
}

/// The names a process answers to, most specific first, without duplicates.
pub fn names(p: &ProcInfo) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: &str| {
        if !n.is_empty() && !names.iter().any(|m| m == n) {
            names.push(n.to_owned());
        }
    };
    if let Some(argv0) = p.argv.first() {
        // setproctitle style: "nova-api: master process [...]".
        if let Some((title, _)) = argv0.split_once(": ")
            && !title.contains(' ')
        {
            push(basename(title));
        }
        let program = basename(argv0.split(' ').next().unwrap_or(argv0));
        push(program);
        if is_interpreter(program)
            && let Some(script) = script_of(&p.argv[1..])
        {
            push(&script);
        }
    }
    push(&p.comm);
    names
}

/// The script (basename) or `-m` module an interpreter runs.
fn script_of(args: &[String]) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let a = arg.as_str();
        if a == "-m" {
            return args.next().cloned();
        }
        if let Some(module) = a.strip_prefix("-m")
            && !module.is_empty()
            && !a.starts_with("--")
        {
            return Some(module.to_owned());
        }
        if INLINE_PROGRAM_OPTIONS.contains(&a) || a == "-" {
            return None;
        }
        if OPTIONS_WITH_VALUE.contains(&a) {
            args.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        return Some(basename(a).to_owned());
    }
    None
}

/// Whether `p` answers to `name`.
pub fn matches(name: &str, p: &ProcInfo) -> bool {
    if names(p).iter().any(|n| n == name) {
        return true;
    }
    // A name longer than the kernel keeps: the comm is its first 15 bytes.
    p.comm.len() == COMM_MAX
        && name.len() > COMM_MAX
        && name.as_bytes().starts_with(p.comm.as_bytes())
}

/// Up to five names of running processes that look like `name` (for "did you mean").
pub fn close_matches(name: &str, procs: &[ProcInfo]) -> Vec<String> {
    let wanted = name.to_lowercase();
    let mut scored: Vec<(f64, String)> = Vec::new();
    for p in procs {
        for candidate in names(p) {
            let lower = candidate.to_lowercase();
            let score = if lower.contains(&wanted) || (wanted.contains(&lower) && lower.len() >= 3)
            {
                1.0
            } else {
                strsim::jaro_winkler(&wanted, &lower)
            };
            if score >= 0.85 && !scored.iter().any(|(_, c)| *c == candidate) {
                scored.push((score, candidate));
            }
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(5).map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(comm: &str, argv: &[&str]) -> ProcInfo {
        ProcInfo {
            pid: 100,
            ppid: 1,
            comm: comm.to_owned(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            start_ticks: 1,
            dead: false,
        }
    }

    #[test]
    fn matches_comm_and_argv0() {
        let p = proc(
            "nova-api",
            &["/usr/bin/nova-api", "--config-file", "/etc/nova/nova.conf"],
        );
        assert!(matches("nova-api", &p));
        assert!(!matches("nova", &p));
        let renamed = proc("worker", &["/opt/bin/glance-api"]);
        assert!(matches("glance-api", &renamed));
        assert!(matches("worker", &renamed));
    }

    #[test]
    fn matches_the_script_an_interpreter_runs() {
        let p = proc(
            "python3",
            &[
                "python3",
                "-u",
                "-W",
                "ignore",
                "/usr/bin/nova-api",
                "--config-file",
                "x",
            ],
        );
        assert!(matches("nova-api", &p));
        assert!(matches("python3", &p));
        assert!(!matches("x", &p));
        let versioned = proc(
            "python3.11",
            &["/usr/bin/python3.11", "/usr/local/bin/cinder-volume"],
        );
        assert!(matches("cinder-volume", &versioned));
        let module = proc("python3", &["python3", "-m", "nova.cmd.api"]);
        assert!(matches("nova.cmd.api", &module));
        let inline = proc("python3", &["python3", "-c", "print(1)"]);
        assert_eq!(names(&inline), ["python3"]);
    }

    #[test]
    fn matches_a_comm_cut_to_15_characters() {
        let p = proc(
            "keystone-wsgi-p",
            &["uwsgi", "--ini", "/etc/keystone/keystone-uwsgi-public.ini"],
        );
        assert!(matches("keystone-wsgi-public", &p));
        assert!(matches(
            "keystone-wsgi-admin",
            &proc("keystone-wsgi-a", &[])
        ));
        assert!(!matches(
            "keystone-wsgi-public",
            &proc("keystone-wsgi-a", &["uwsgi"])
        ));
        // A 15-character name must match exactly.
        assert!(!matches("keystone-wsgi-x", &p));
    }

    #[test]
    fn matches_setproctitle_names() {
        let p = proc(
            "python3",
            &["nova-api: master process [/usr/local/bin/nova-api --config-file x]"],
        );
        assert!(matches("nova-api", &p));
        let worker = proc("python3", &["nova-conductor: ConductorManager worker(0)"]);
        assert!(matches("nova-conductor", &worker));
    }

    #[test]
    fn close_matches_suggest_similar_names() {
        let procs = [
            proc("nova-api", &["/usr/bin/nova-api"]),
            proc("sshd", &["/usr/sbin/sshd"]),
        ];
        assert_eq!(close_matches("nova-apl", &procs), ["nova-api"]);
        assert_eq!(close_matches("nova", &procs), ["nova-api"]);
        assert!(close_matches("zzzzzz", &procs).is_empty());
    }
}
