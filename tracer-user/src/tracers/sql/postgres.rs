//! The PostgreSQL v3 frontend/backend protocol, seen from the client.
//!
//! Statements are simple Query ('Q') messages and extended-protocol Execute ('E') messages (whose
//! text comes from the Parse of the statement the portal was bound to). An Execute ends at its
//! CommandComplete ('C'), EmptyQueryResponse ('I'), PortalSuspended ('s') or ErrorResponse ('E');
//! a Query ends at ReadyForQuery ('Z'), failed if an ErrorResponse came before. Executes after an
//! error in the same batch are skipped by the server until Sync and are not counted. Latency runs
//! from the return of the send that carried the Query/Execute to the return of the receive that
//! carried the ending message.

use std::collections::{HashMap, VecDeque};

use super::{
    Chunk, Protocol, Request, Statement, cstr,
    framing::{Framer, Framing, Message},
    truncated_text,
};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

#[derive(Debug)]
struct Pending {
    /// Query ('Q') or Execute ('E').
    kind: u8,
    request: Request,
    start_ns: u64,
    bytes_sent: u64,
    bytes_received: u64,
    error: Option<String>,
}

pub struct Postgres {
    client: Framer,
    server: Framer,
    from_start: bool,
    database: Option<String>,
    prepared: HashMap<String, String>,
    portals: HashMap<String, String>,
    queue: VecDeque<Pending>,
    /// Client bytes since the last statement (Parse, Bind, Describe, Sync…), charged to the next.
    unassigned_sent: u64,
    /// An error in an extended batch: the server skips to the next Sync.
    skipping: bool,
    /// TLS was negotiated: nothing more can be read.
    encrypted: bool,
    text_bytes: usize,
    closed: bool,
    desyncs: u64,
    messages: Vec<Message>,
}

impl Postgres {
    pub fn new(text_bytes: usize) -> Postgres {
        Postgres {
            // Until the first message shows otherwise, a connection may be at its start.
            client: Framer::new(Framing::PgTyped, text_bytes + 256),
            server: Framer::new(Framing::PgTyped, 256),
            from_start: false,
            database: None,
            prepared: HashMap::new(),
            portals: HashMap::new(),
            queue: VecDeque::new(),
            unassigned_sent: 0,
            skipping: false,
            encrypted: false,
            text_bytes,
            closed: false,
            desyncs: 0,
            messages: Vec::new(),
        }
    }

    fn push_pending(&mut self, kind: u8, request: Request, m: &Message) {
        let bytes_sent = self.unassigned_sent + u64::from(m.wire);
        self.unassigned_sent = 0;
        self.queue.push_back(Pending {
            kind,
            request,
            start_ns: m.time_ns,
            bytes_sent,
            bytes_received: 0,
            error: None,
        });
    }

    fn client_message(&mut self, m: &Message) {
        let b = &m.prefix;
        match m.tag {
            0 => {
                // Startup, SSL or GSS request.
                self.from_start = true;
                let code = b
                    .get(..4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                match code {
                    Some(SSL_REQUEST) | Some(GSSENC_REQUEST) => {
                        self.server.set_framing(Framing::RawByte);
                        self.client.set_framing(Framing::PgUntyped);
                    }
                    _ => {
                        self.startup_params(&b[4.min(b.len())..]);
                        self.client.set_framing(Framing::PgTyped);
                    }
                }
            }
            b'Q' => {
                let text = cstr(b, 0).map_or_else(
                    || truncated_text(b, self.text_bytes),
                    |(s, _)| truncated_text(s.as_bytes(), self.text_bytes),
                );
                self.push_pending(b'Q', Request::Sql(text), m);
            }
            b'P' => {
                self.unassigned_sent += u64::from(m.wire);
                if let Some((name, at)) = cstr(b, 0) {
                    let text = match cstr(b, at) {
                        Some((t, _)) => truncated_text(t.as_bytes(), self.text_bytes),
                        // Longer than what was kept: its beginning is enough.
                        None => truncated_text(&b[at.min(b.len())..], self.text_bytes),
                    };
                    self.prepared.insert(name.to_owned(), text);
                }
            }
            b'B' => {
                self.unassigned_sent += u64::from(m.wire);
                if let Some((portal, at)) = cstr(b, 0)
                    && let Some((stmt, _)) = cstr(b, at)
                {
                    let text = self.prepared.get(stmt).cloned().unwrap_or_default();
                    self.portals.insert(portal.to_owned(), text);
                }
            }
            b'E' => {
                let text = cstr(b, 0).and_then(|(portal, _)| self.portals.get(portal).cloned());
                let request = match text {
                    Some(t) if !t.is_empty() => Request::Sql(t),
                    _ => Request::Command("EXECUTE"),
                };
                self.push_pending(b'E', request, m);
            }
            b'C' => {
                self.unassigned_sent += u64::from(m.wire);
                // Close: 'S' statement or 'P' portal, then its name.
                if let (Some(&what), Some((name, _))) = (b.first(), cstr(b, 1)) {
                    if what == b'S' {
                        self.prepared.remove(name);
                    } else {
                        self.portals.remove(name);
                    }
                }
            }
            b'X' => self.closed = true,
            _ => self.unassigned_sent += u64::from(m.wire),
        }
    }

    fn startup_params(&mut self, b: &[u8]) {
        let mut at = 0;
        while let Some((key, next)) = cstr(b, at) {
            if key.is_empty() {
                break;
            }
            let Some((value, after)) = cstr(b, next) else {
                break;
            };
            if key == "database" {
                self.database = Some(value.to_owned());
            }
            at = after;
        }
    }

    fn server_message(&mut self, m: &Message, out: &mut Vec<Statement>) {
        if let Some(p) = self.queue.front_mut() {
            p.bytes_received += u64::from(m.wire);
        }
        match m.tag {
            b'C' | b'I' | b's' if self.queue.front().is_some_and(|p| p.kind == b'E') => {
                self.finish_front(m.time_ns, out);
            }
            b'E' => {
                let code = error_code(&m.prefix);
                match self.queue.front().map(|p| p.kind) {
                    Some(b'E') => {
                        if let Some(p) = self.queue.front_mut() {
                            p.error = code;
                        }
                        self.finish_front(m.time_ns, out);
                        self.skipping = true;
                    }
                    Some(_) => {
                        if let Some(p) = self.queue.front_mut() {
                            p.error = code;
                        }
                    }
                    None => {}
                }
            }
            b'Z' => {
                // A Query ends here; Executes still queued were skipped after an error.
                while let Some(p) = self.queue.front() {
                    if p.kind == b'Q' {
                        self.finish_front(m.time_ns, out);
                        break;
                    }
                    self.queue.pop_front();
                }
                self.skipping = false;
            }
            // The answer to an SSL or GSS request: 'S'/'G' means encryption from here on.
            b'S' | b'G' if m.len == 0 => self.encrypted = true,
            _ => {}
        }
    }

    fn finish_front(&mut self, end_ns: u64, out: &mut Vec<Statement>) {
        if let Some(p) = self.queue.pop_front() {
            out.push(Statement {
                request: p.request,
                start_ns: p.start_ns,
                end_ns,
                error: p.error,
                bytes_sent: p.bytes_sent,
                bytes_received: p.bytes_received,
            });
        }
    }

    /// Whether a client syscall's first bytes start a startup-phase message.
    fn looks_untyped(data: &[u8]) -> bool {
        data.len() >= 8
            && u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize <= 10_000
            && matches!(
                u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                0x0003_0000 | SSL_REQUEST | GSSENC_REQUEST
            )
    }
}

/// The SQLSTATE ('C' field) of an ErrorResponse: (type byte, C string) pairs.
fn error_code(b: &[u8]) -> Option<String> {
    let mut at = 0;
    while let Some(&field) = b.get(at) {
        if field == 0 {
            break;
        }
        let (value, next) = cstr(b, at + 1)?;
        if field == b'C' {
            return Some(value.to_owned());
        }
        at = next;
    }
    Some("XX000".to_owned())
}

impl Protocol for Postgres {
    fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Statement>) {
        if self.encrypted {
            return;
        }
        let missing = chunk.len.saturating_sub(chunk.data.len() as u32);
        let mut messages = std::mem::take(&mut self.messages);
        messages.clear();
        if chunk.sent {
            if !self.client.at_boundary() || self.client.is_lost() {
                self.client.resync();
            }
            if Self::looks_untyped(chunk.data) {
                self.client.set_framing(Framing::PgUntyped);
            }
            if !self
                .client
                .push(chunk.data, missing, chunk.time_ns, &mut messages)
            {
                self.desyncs += 1;
            }
            for m in &messages {
                self.client_message(m);
            }
        } else {
            if self.server.is_lost() {
                // Resync where an answer must start: the next receive after all answers are in.
                if self.queue.is_empty() {
                    self.server.resync();
                } else {
                    self.messages = messages;
                    return;
                }
            }
            if !self
                .server
                .push(chunk.data, missing, chunk.time_ns, &mut messages)
            {
                self.desyncs += 1;
                // The answers cannot be followed: count what was asked, without an end.
                while !self.queue.is_empty() {
                    self.finish_front(chunk.time_ns, out);
                }
            }
            for m in &messages {
                self.server_message(m, out);
            }
        }
        self.messages = messages;
    }

    fn system(&self) -> Option<&'static str> {
        Some("postgresql")
    }

    fn namespace(&self) -> Option<&str> {
        self.database.as_deref()
    }

    fn closed(&self) -> bool {
        self.closed
    }

    fn seen_from_start(&self) -> bool {
        self.from_start
    }

    fn take_desyncs(&mut self) -> u64 {
        std::mem::take(&mut self.desyncs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn sent(p: &mut Postgres, t: u64, bytes: &[u8], out: &mut Vec<Statement>) {
        p.feed(
            &Chunk {
                sent: true,
                time_ns: t,
                len: bytes.len() as u32,
                data: bytes,
            },
            out,
        );
    }

    fn received(p: &mut Postgres, t: u64, bytes: &[u8], out: &mut Vec<Statement>) {
        p.feed(
            &Chunk {
                sent: false,
                time_ns: t,
                len: bytes.len() as u32,
                data: bytes,
            },
            out,
        );
    }

    #[test]
    fn startup_with_ssl_refused_then_a_simple_query() {
        let mut p = Postgres::new(256);
        let mut out = Vec::new();
        sent(&mut p, 1, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], &mut out);
        received(&mut p, 2, b"N", &mut out);
        let mut startup = vec![0, 3, 0, 0];
        startup.extend_from_slice(b"user\0scalp\0database\0nova\0\0");
        let mut m = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend(startup);
        sent(&mut p, 3, &m, &mut out);
        received(
            &mut p,
            4,
            &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat(),
            &mut out,
        );
        assert_eq!(p.namespace(), Some("nova"));
        sent(&mut p, 5, &msg(b'Q', b"SELECT 1\0"), &mut out);
        received(
            &mut p,
            6,
            &[msg(b'T', b"\0\x01x"), msg(b'D', b"\0\x01\0\0\0\x011")].concat(),
            &mut out,
        );
        received(
            &mut p,
            7,
            &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat(),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ns, out[0].end_ns), (5, 7));
        assert_eq!(out[0].request, Request::Sql("SELECT 1".into()));
        assert!(p.seen_from_start());
    }

    #[test]
    fn extended_protocol_batch_with_an_error() {
        let mut p = Postgres::new(256);
        let mut out = Vec::new();
        let batch = [
            msg(b'P', b"\0SELECT $1\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'P', b"\0SELEC bad\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        sent(&mut p, 10, &batch, &mut out);
        let answers = [
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'D', b"\0\x01\0\0\0\x011"),
            msg(b'C', b"SELECT 1\0"),
            msg(b'E', b"SERROR\0C42601\0Msyntax error\0\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        received(&mut p, 20, &answers, &mut out);
        assert_eq!(
            out.len(),
            2,
            "the Execute after the error was skipped by the server"
        );
        assert_eq!(out[0].request, Request::Sql("SELECT $1".into()));
        assert_eq!(out[0].error, None);
        assert_eq!(out[1].request, Request::Sql("SELEC bad".into()));
        assert_eq!(out[1].error.as_deref(), Some("42601"));
        assert_eq!(out[1].end_ns, 20);
    }

    #[test]
    fn a_failed_simple_query_ends_at_ready_for_query() {
        let mut p = Postgres::new(256);
        let mut out = Vec::new();
        sent(&mut p, 1, &msg(b'Q', b"SELECT * FROM missing\0"), &mut out);
        received(
            &mut p,
            2,
            &msg(b'E', b"SERROR\0VERROR\0C42P01\0\0"),
            &mut out,
        );
        assert!(out.is_empty());
        received(&mut p, 3, &msg(b'Z', b"I"), &mut out);
        assert_eq!(out[0].error.as_deref(), Some("42P01"));
        assert_eq!(out[0].end_ns, 3);
    }
}
