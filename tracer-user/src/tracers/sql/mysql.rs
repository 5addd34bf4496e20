//! The MySQL/MariaDB client protocol, seen from the client.
//!
//! A statement is one command packet (sequence 0) and its response. The response ends with:
//! an OK (0x00) or ERR (0xFF) packet; for a result set, the EOF (0xFE, 5-byte payload) or OK
//! packet with a 0xFE header (CLIENT_DEPRECATE_EOF) after the rows, unless its status says more
//! results follow; for COM_STMT_PREPARE, the last parameter or column definition (and its EOF).
//! COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA have no response: they end when sent.
//! Latency runs from the return of the send that carried the command to the return of the
//! receive that carried the ending packet.

use std::collections::HashMap;

use super::{
    Chunk, Protocol, Request, Statement, cstr,
    framing::{Framer, Framing, Message},
    truncated_text,
};

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
/// A packet of this length continues in the next one.
const MAX_PACKET: u32 = 0xff_ffff;

/// The command bytes that start a statement, and their names.
fn command_name(cmd: u8) -> Option<&'static str> {
    Some(match cmd {
        0x01 => "QUIT",
        0x02 => "INIT_DB",
        0x03 => "QUERY",
        0x04 => "FIELD_LIST",
        0x08 => "SHUTDOWN",
        0x09 => "STATISTICS",
        0x0e => "PING",
        0x11 => "CHANGE_USER",
        0x16 => "STMT_PREPARE",
        0x17 => "STMT_EXECUTE",
        0x18 => "STMT_SEND_LONG_DATA",
        0x19 => "STMT_CLOSE",
        0x1a => "STMT_RESET",
        0x1b => "SET_OPTION",
        0x1c => "STMT_FETCH",
        0x1f => "RESET_CONNECTION",
        _ => return None,
    })
}

/// Where a response is.
#[derive(Debug, PartialEq, Eq)]
enum Response {
    /// Waiting for the first packet.
    First,
    /// Column definitions of a result set still to come.
    Columns(u64),
    /// After the column definitions: an EOF (classic) or the first row (DEPRECATE_EOF).
    AfterColumns,
    Rows,
    /// COM_STMT_PREPARE: definitions still to come (params, then columns), EOF after each group
    /// when the session uses EOF packets.
    PrepareDefs {
        params: u64,
        columns: u64,
        eof_after_params: bool,
    },
}

struct Pending {
    cmd: u8,
    request: Request,
    start_ns: u64,
    bytes_sent: u64,
    bytes_received: u64,
    response: Response,
    /// COM_STMT_PREPARE: the text, remembered under the statement id from the response.
    prepare_text: Option<String>,
}

enum Phase {
    /// Greeting seen, login under way.
    Handshake,
    /// Commands (also for connections first seen mid-stream).
    Command,
}

pub struct Mysql {
    client: Framer,
    server: Framer,
    phase: Phase,
    from_start: bool,
    server_version: Option<String>,
    /// None until known; EOF packets after column definitions tell it anyway.
    deprecate_eof: Option<bool>,
    database: Option<String>,
    pending: Option<Pending>,
    prepared: HashMap<u32, String>,
    /// The previous server packet was MAX_PACKET long: this one continues it.
    continuation: bool,
    text_bytes: usize,
    closed: bool,
    desyncs: u64,
    messages: Vec<Message>,
}

impl Mysql {
    pub fn new(text_bytes: usize) -> Mysql {
        Mysql {
            client: Framer::new(Framing::Mysql, text_bytes + 16),
            server: Framer::new(Framing::Mysql, 512),
            phase: Phase::Command,
            from_start: false,
            server_version: None,
            deprecate_eof: None,
            database: None,
            pending: None,
            prepared: HashMap::new(),
            continuation: false,
            text_bytes,
            closed: false,
            desyncs: 0,
            messages: Vec::new(),
        }
    }

    fn complete(&mut self, end_ns: u64, error: Option<String>, out: &mut Vec<Statement>) {
        if let Some(p) = self.pending.take() {
            out.push(Statement {
                request: p.request,
                start_ns: p.start_ns,
                end_ns,
                error,
                bytes_sent: p.bytes_sent,
                bytes_received: p.bytes_received,
            });
        }
    }

    fn client_message(&mut self, m: &Message, out: &mut Vec<Statement>) {
        if let Phase::Handshake = self.phase {
            if m.tag == 1 {
                self.login(&m.prefix);
            }
            return;
        }
        if m.tag != 0 {
            // The rest of a long command, or an authentication exchange.
            if let Some(p) = &mut self.pending {
                p.bytes_sent += u64::from(m.wire);
            }
            return;
        }
        let Some(&cmd) = m.prefix.first() else {
            return;
        };
        let Some(name) = command_name(cmd) else {
            self.desyncs += 1;
            return;
        };
        if self.pending.is_some() {
            // A new command while the previous answer is incomplete: it was lost in the stream.
            self.desyncs += 1;
            self.pending = None;
        }
        let body = &m.prefix[1..];
        let text = || truncated_text(body, self.text_bytes);
        let (request, prepare_text) = match cmd {
            0x03 => (Request::Sql(text()), None),
            0x16 => (Request::Command(name), Some(text())),
            0x17 => {
                let id = body
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                match id.and_then(|id| self.prepared.get(&id)) {
                    Some(t) => (Request::Sql(t.clone()), None),
                    None => (Request::Command(name), None),
                }
            }
            0x02 => {
                self.database = Some(text());
                (Request::Command(name), None)
            }
            _ => (Request::Command(name), None),
        };
        if cmd == 0x19
            && let Some(b) = body.get(..4)
        {
            self.prepared
                .remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        self.pending = Some(Pending {
            cmd,
            request,
            start_ns: m.time_ns,
            bytes_sent: u64::from(m.wire),
            bytes_received: 0,
            response: Response::First,
            prepare_text,
        });
        // Commands the server does not answer end here.
        if matches!(cmd, 0x01 | 0x18 | 0x19) {
            if cmd == 0x01 {
                self.closed = true;
            }
            self.complete(m.time_ns, None, out);
        }
    }

    /// The handshake response: capabilities, user, auth data, database.
    fn login(&mut self, b: &[u8]) {
        let Some(caps) = b
            .get(..4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        else {
            return;
        };
        self.deprecate_eof = Some(caps & (1 << 24) != 0 && self.deprecate_eof.unwrap_or(true));
        // caps(4) max packet(4) charset(1) filler(23), then the user name.
        let Some((_user, mut at)) = cstr(b, 32) else {
            return;
        };
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            let Some((n, used)) = lenenc(&b[at.min(b.len())..]) else {
                return;
            };
            at += used + n as usize;
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            at += 1 + usize::from(*b.get(at).unwrap_or(&0));
        } else if let Some((_, next)) = cstr(b, at) {
            at = next;
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0
            && let Some((db, _)) = cstr(b, at)
            && !db.is_empty()
        {
            self.database = Some(db.to_owned());
        }
    }

    fn server_message(&mut self, m: &Message, out: &mut Vec<Statement>) {
        let continues = self.continuation;
        self.continuation = m.len == MAX_PACKET;
        let first = m.prefix.first().copied();
        if let Phase::Handshake = self.phase {
            match first {
                Some(0x00) => self.phase = Phase::Command,
                Some(0xff) => self.phase = Phase::Command,
                _ => {}
            }
            return;
        }
        if m.tag == 0 && first == Some(0x0a) && self.pending.is_none() {
            self.greeting(&m.prefix);
            return;
        }
        if continues {
            if let Some(p) = &mut self.pending {
                p.bytes_received += u64::from(m.wire);
            }
            return;
        }
        let Some(p) = &mut self.pending else {
            return;
        };
        p.bytes_received += u64::from(m.wire);
        let is_eof = first == Some(0xfe) && m.len < 9;
        let is_ok_fe = first == Some(0xfe) && m.len < MAX_PACKET && !is_eof;
        match p.response {
            Response::First => match first {
                Some(0x00) if p.cmd == 0x16 => {
                    // stmt id(4) columns(2) params(2) filler(1) warnings(2)
                    let b = &m.prefix;
                    if b.len() >= 9 {
                        let id = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
                        let columns = u64::from(u16::from_le_bytes([b[5], b[6]]));
                        let params = u64::from(u16::from_le_bytes([b[7], b[8]]));
                        if let Some(text) = p.prepare_text.take() {
                            self.prepared.insert(id, text);
                        }
                        let eof = self.deprecate_eof != Some(true);
                        if params == 0 && columns == 0 {
                            self.complete(m.time_ns, None, out);
                        } else {
                            p.response = Response::PrepareDefs {
                                params: params + u64::from(eof && params > 0),
                                columns: columns + u64::from(eof && columns > 0),
                                eof_after_params: eof && params > 0,
                            };
                        }
                    } else {
                        self.complete(m.time_ns, None, out);
                    }
                }
                Some(0x00) if status_of_ok(&m.prefix) & SERVER_MORE_RESULTS_EXISTS == 0 => {
                    self.complete(m.time_ns, None, out);
                }
                // More results follow the OK: stay at First.
                Some(0x00) => {}
                Some(0xff) => {
                    let code = err_code(&m.prefix);
                    self.complete(m.time_ns, code, out);
                }
                Some(0xfe) | Some(0xfb) => self.complete(m.time_ns, None, out),
                Some(_) => match lenenc(&m.prefix) {
                    Some((n, _)) if n > 0 => p.response = Response::Columns(n),
                    _ => self.complete(m.time_ns, None, out),
                },
                None => {}
            },
            Response::Columns(n) => {
                p.response = if n > 1 {
                    Response::Columns(n - 1)
                } else {
                    Response::AfterColumns
                };
            }
            Response::AfterColumns => {
                if is_eof && m.len == 5 {
                    // The EOF after the column definitions: rows follow.
                    self.deprecate_eof.get_or_insert(false);
                    p.response = Response::Rows;
                } else if is_ok_fe || is_eof {
                    self.deprecate_eof.get_or_insert(true);
                    self.end_of_rows(m, out);
                } else if first == Some(0xff) {
                    let code = err_code(&m.prefix);
                    self.complete(m.time_ns, code, out);
                } else {
                    p.response = Response::Rows;
                }
            }
            Response::Rows => {
                if is_eof || is_ok_fe {
                    self.end_of_rows(m, out);
                } else if first == Some(0xff) {
                    let code = err_code(&m.prefix);
                    self.complete(m.time_ns, code, out);
                }
            }
            Response::PrepareDefs {
                params,
                columns,
                eof_after_params,
            } => {
                let (params, columns) = if params > 0 {
                    (params - 1, columns)
                } else {
                    (0, columns.saturating_sub(1))
                };
                if params == 0 && columns == 0 {
                    self.complete(m.time_ns, None, out);
                } else {
                    p.response = Response::PrepareDefs {
                        params,
                        columns,
                        eof_after_params,
                    };
                }
            }
        }
    }

    fn end_of_rows(&mut self, m: &Message, out: &mut Vec<Statement>) {
        let b = &m.prefix;
        // EOF: 0xfe, warnings(2), status(2). OK with a 0xfe header: affected rows, insert id
        // (length-encoded), status(2).
        let status = if m.len == 5 && b.len() >= 5 {
            u16::from_le_bytes([b[3], b[4]])
        } else {
            status_of_ok(b)
        };
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            if let Some(p) = &mut self.pending {
                p.response = Response::First;
            }
        } else {
            self.complete(m.time_ns, None, out);
        }
    }

    /// The server's greeting: protocol 10, version string, connection id, auth data, caps.
    fn greeting(&mut self, b: &[u8]) {
        self.from_start = true;
        self.phase = Phase::Handshake;
        if let Some((version, at)) = cstr(b, 1) {
            self.server_version = Some(version.to_owned());
            // conn id(4) auth1(8) filler(1) caps low(2) charset(1) status(2) caps high(2)
            let caps_at = at + 4 + 8 + 1;
            if let (Some(lo), Some(hi)) =
                (b.get(caps_at..caps_at + 2), b.get(caps_at + 5..caps_at + 7))
            {
                let caps = u32::from(u16::from_le_bytes([lo[0], lo[1]]))
                    | u32::from(u16::from_le_bytes([hi[0], hi[1]])) << 16;
                self.deprecate_eof = Some(caps & (1 << 24) != 0);
            }
        }
    }
}

/// A length-encoded integer: (value, bytes used).
pub fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    Some(match first {
        0..=0xfa => (u64::from(first), 1),
        0xfc => (
            u64::from(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xfd => {
            let s = b.get(1..4)?;
            (
                u64::from(s[0]) | u64::from(s[1]) << 8 | u64::from(s[2]) << 16,
                4,
            )
        }
        0xfe => (u64::from_le_bytes(b.get(1..9)?.try_into().ok()?), 9),
        _ => return None,
    })
}

/// Status flags of an OK packet (header byte, affected rows, last insert id, status).
fn status_of_ok(b: &[u8]) -> u16 {
    let Some((_, a)) = b.get(1..).and_then(lenenc) else {
        return 0;
    };
    let Some((_, c)) = b.get(1 + a..).and_then(lenenc) else {
        return 0;
    };
    b.get(1 + a + c..3 + a + c)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// The error number of an ERR packet.
fn err_code(b: &[u8]) -> Option<String> {
    Some(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?).to_string())
}

impl Protocol for Mysql {
    fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Statement>) {
        let missing = chunk.len.saturating_sub(chunk.data.len() as u32);
        let mut messages = std::mem::take(&mut self.messages);
        messages.clear();
        if chunk.sent {
            // A client writes a command whole, at a packet boundary: that resyncs both sides.
            if self.client.is_lost() || !self.client.at_boundary() {
                self.client.resync();
            }
            // No pipelining in this protocol: whatever the server side was in the middle of is
            // over when the client sends a command.
            if self.server.is_lost() || !self.server.at_boundary() {
                self.server.resync();
                self.continuation = false;
            }
            if !self
                .client
                .push(chunk.data, missing, chunk.time_ns, &mut messages)
            {
                self.desyncs += 1;
            }
            for m in &messages {
                self.client_message(m, out);
            }
        } else {
            if self.server.is_lost() {
                self.messages = messages;
                return;
            }
            if !self
                .server
                .push(chunk.data, missing, chunk.time_ns, &mut messages)
            {
                self.desyncs += 1;
                // The answer cannot be followed: the statement is counted without an end.
                if self.pending.is_some() {
                    self.complete(chunk.time_ns, None, out);
                }
            }
            for m in &messages {
                self.server_message(m, out);
            }
        }
        self.messages = messages;
    }

    fn system(&self) -> Option<&'static str> {
        let v = self.server_version.as_deref()?;
        Some(if v.contains("MariaDB") {
            "mariadb"
        } else {
            "mysql"
        })
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

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn sent(p: &mut Mysql, t: u64, bytes: &[u8], out: &mut Vec<Statement>) {
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

    fn received(p: &mut Mysql, t: u64, bytes: &[u8], out: &mut Vec<Statement>) {
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

    fn query(text: &str) -> Vec<u8> {
        packet(0, &[&[0x03][..], text.as_bytes()].concat())
    }

    /// A classic result set: column count, one column definition, EOF, rows, EOF.
    fn result_set(rows: usize) -> Vec<u8> {
        let mut v = packet(1, &[1]);
        v.extend(packet(
            2,
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00",
        ));
        v.extend(packet(3, &[0xfe, 0, 0, 0x22, 0]));
        for i in 0..rows {
            v.extend(packet(4 + i as u8, &[1, b'1']));
        }
        v.extend(packet(4 + rows as u8, &[0xfe, 0, 0, 0x22, 0]));
        v
    }

    #[test]
    fn a_query_and_its_result_set() {
        let mut p = Mysql::new(256);
        let mut out = Vec::new();
        sent(&mut p, 100, &query("SELECT a FROM t"), &mut out);
        let rs = result_set(3);
        // The answer arrives in two reads; only the second completes it.
        received(&mut p, 150, &rs[..20], &mut out);
        assert!(out.is_empty());
        received(&mut p, 200, &rs[20..], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request, Request::Sql("SELECT a FROM t".into()));
        assert_eq!(
            (out[0].start_ns, out[0].end_ns, out[0].error.as_deref()),
            (100, 200, None)
        );
        assert_eq!(out[0].bytes_received, rs.len() as u64);
    }

    #[test]
    fn ok_err_ping_and_deprecate_eof() {
        let mut p = Mysql::new(256);
        let mut out = Vec::new();
        sent(&mut p, 1, &query("INSERT INTO t VALUES (1)"), &mut out);
        received(&mut p, 2, &packet(1, &[0, 1, 0, 2, 0, 0, 0]), &mut out);
        sent(&mut p, 3, &query("SELEC oops"), &mut out);
        received(
            &mut p,
            4,
            &packet(1, b"\xff\x28\x04#42000You have an error"),
            &mut out,
        );
        sent(&mut p, 5, &packet(0, &[0x0e]), &mut out);
        received(&mut p, 6, &packet(1, &[0, 0, 0, 2, 0, 0, 0]), &mut out);
        // A result set without EOF packets: the rows end with an OK packet headed 0xfe.
        sent(&mut p, 7, &query("SELECT 1"), &mut out);
        let mut rs = packet(1, &[1]);
        rs.extend(packet(
            2,
            b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
        ));
        rs.extend(packet(3, &[1, b'1']));
        rs.extend(packet(4, &[0xfe, 0, 0, 0x02, 0, 0, 0]));
        received(&mut p, 8, &rs, &mut out);
        let summary: Vec<_> = out.iter().map(|s| (s.end_ns, s.error.clone())).collect();
        assert_eq!(
            summary,
            [(2, None), (4, Some("1064".into())), (6, None), (8, None)]
        );
        assert_eq!(out[2].request, Request::Command("PING"));
    }

    #[test]
    fn prepared_statements_carry_their_text_to_execute() {
        let mut p = Mysql::new(256);
        let mut out = Vec::new();
        sent(
            &mut p,
            1,
            &packet(0, &[&[0x16][..], b"SELECT ?"].concat()),
            &mut out,
        );
        // OK: id 7, 1 column, 1 param; then param def + EOF, column def + EOF.
        let mut r = packet(1, &[0, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
        r.extend(packet(
            2,
            b"\x03def\x00\x00\x00\x01?\x00\x0c\x3f\x00\x00\x00\x00\x00\xfd\x80\x00\x00\x00\x00",
        ));
        r.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
        r.extend(packet(
            4,
            b"\x03def\x00\x00\x00\x01?\x00\x0c\x3f\x00\x00\x00\x00\x00\xfd\x80\x00\x00\x00\x00",
        ));
        r.extend(packet(5, &[0xfe, 0, 0, 2, 0]));
        received(&mut p, 2, &r, &mut out);
        sent(
            &mut p,
            3,
            &packet(0, &[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]),
            &mut out,
        );
        received(&mut p, 4, &packet(1, &[0, 0, 0, 2, 0, 0, 0]), &mut out);
        sent(&mut p, 5, &packet(0, &[0x19, 7, 0, 0, 0]), &mut out);
        let requests: Vec<_> = out.iter().map(|s| s.request.clone()).collect();
        assert_eq!(
            requests,
            [
                Request::Command("STMT_PREPARE"),
                Request::Sql("SELECT ?".into()),
                Request::Command("STMT_CLOSE")
            ]
        );
        assert_eq!(out[1].end_ns, 4);
    }

    #[test]
    fn greeting_tells_mariadb_and_login_the_database() {
        let mut p = Mysql::new(256);
        let mut out = Vec::new();
        let mut g = vec![0x0a];
        g.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]); // connection id
        g.extend_from_slice(b"12345678\0");
        g.extend_from_slice(&[0xff, 0xf7, 8, 2, 0, 0xff, 0x81]); // caps low, charset, status, caps high
        received(&mut p, 1, &packet(0, &g), &mut out);
        assert_eq!(p.system(), Some("mariadb"));
        let mut login = Vec::new();
        let caps: u32 = CLIENT_CONNECT_WITH_DB | CLIENT_SECURE_CONNECTION | (1 << 9);
        login.extend_from_slice(&caps.to_le_bytes());
        login.extend_from_slice(&[0; 4]);
        login.push(33);
        login.extend_from_slice(&[0; 23]);
        login.extend_from_slice(b"scalp\0");
        login.push(3);
        login.extend_from_slice(b"abc");
        login.extend_from_slice(b"nova\0");
        sent(&mut p, 2, &packet(1, &login), &mut out);
        received(&mut p, 3, &packet(2, &[0, 0, 0, 2, 0, 0, 0]), &mut out);
        assert_eq!(p.namespace(), Some("nova"));
        assert!(p.seen_from_start());
        sent(&mut p, 4, &query("SELECT 1"), &mut out);
        received(&mut p, 5, &packet(1, &[0, 0, 0, 2, 0, 0, 0]), &mut out);
        assert_eq!(out.len(), 1, "the login is not a statement");
    }

    #[test]
    fn a_connection_first_seen_mid_stream_syncs_at_the_next_command() {
        let mut p = Mysql::new(256);
        let mut out = Vec::new();
        // The tail of an earlier answer, then a command.
        received(&mut p, 1, &[0x33, 0x44, 0x55], &mut out);
        sent(&mut p, 2, &query("SELECT 2"), &mut out);
        received(&mut p, 3, &packet(1, &[0, 0, 0, 2, 0, 0, 0]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request, Request::Sql("SELECT 2".into()));
    }
}
