//! Log lines while top owns the terminal: written to stderr they would land in the middle of the
//! screen (and vanish with the alternate screen), so they are held, bounded, and printed once
//! the terminal is restored.

use std::{
    io::{self, Write as _},
    sync::Mutex,
};

/// Bytes of log held at most; beyond, lines are counted, not kept.
const HELD_MAX: usize = 1 << 20;

/// The held log (None: write through to stderr), and the bytes that did not fit.
static HELD: Mutex<Option<(Vec<u8>, usize)>> = Mutex::new(None);

/// From now on, hold log lines.
pub fn hold() {
    if let Ok(mut h) = HELD.lock() {
        *h = Some((Vec::new(), 0));
    }
}

/// Writes what was held to stderr and writes through again.
pub fn release() {
    let held = HELD.lock().ok().and_then(|mut h| h.take());
    if let Some((buf, lost)) = held {
        let mut err = io::stderr();
        let _ = err.write_all(&buf);
        if lost > 0 {
            let _ = writeln!(
                err,
                "scalp-bpf: {lost} bytes of log were not kept while top ran"
            );
        }
    }
}

/// The log's writer: stderr, or the held buffer while top runs.
pub struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if let Ok(mut h) = HELD.lock()
            && let Some((buf, lost)) = h.as_mut()
        {
            if buf.len() + b.len() <= HELD_MAX {
                buf.extend_from_slice(b);
            } else {
                *lost += b.len();
            }
            return Ok(b.len());
        }
        io::stderr().write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
