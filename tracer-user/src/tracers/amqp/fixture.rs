//! Captured traffic for the tests: one syscall a line, `<conn> <S|R> <time ns> <bytes moved>
//! <hex>`, and `# conn <n>: process <pid> ...` lines naming each connection's process (the
//! format tests/tools/strace2fixture.py writes).

use std::collections::HashMap;

pub struct Syscall {
    pub conn: u32,
    pub sent: bool,
    pub time_ns: u64,
    pub len: u32,
    pub data: Vec<u8>,
}

pub struct Capture {
    /// In the order they happened.
    pub syscalls: Vec<Syscall>,
    /// Connection → process.
    pub process: HashMap<u32, u32>,
    /// Connection → its endpoint as the trace named it (`127.0.0.1:36612`, `UNIX-STREAM:[…]`).
    pub endpoint: HashMap<u32, String>,
}

pub fn load(text: &str) -> Capture {
    let mut syscalls = Vec::new();
    let mut process = HashMap::new();
    let mut endpoint = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# conn ") {
            let mut w = rest.split_whitespace();
            let conn = w.next().unwrap().trim_end_matches(':').parse().unwrap();
            assert_eq!(w.next(), Some("process"));
            process.insert(conn, w.next().unwrap().parse().unwrap());
            endpoint.insert(conn, w.next().unwrap_or_default().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        let data = (0..f[4].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&f[4][i..i + 2], 16).unwrap())
            .collect();
        syscalls.push(Syscall {
            conn: f[0].parse().unwrap(),
            sent: f[1] == "S",
            time_ns: f[2].parse().unwrap(),
            len: f[3].parse().unwrap(),
            data,
        });
    }
    // strace lines of different threads can be a few µs out of order.
    syscalls.sort_by_key(|s| s.time_ns);
    Capture {
        syscalls,
        process,
        endpoint,
    }
}
