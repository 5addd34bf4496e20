//! memcached's binary protocol (deprecated by memcached, still spoken by some clients): packets
//! of a 24-byte header (magic 0x80 request / 0x81 response, opcode, key and extras lengths,
//! status, total body length, opaque, cas) and a body skipped by its length.
//!
//! Responses come in order and echo the request's opcode and opaque. Quiet opcodes (GETQ,
//! SETQ, DELETEQ…) send nothing for their common outcome (a miss for gets, a success for the
//! others): a quiet request at the head of the queue whose opcode or opaque differs from the
//! response's was answered by its silence. STAT answers with one packet per statistic and an
//! empty-key packet last.

use std::collections::VecDeque;

use super::{CacheCounts, CacheOp};
use crate::tracers::sql::Chunk;

pub const REQUEST: u8 = 0x80;
pub const RESPONSE: u8 = 0x81;
const HEADER: usize = 24;
/// memcached's item size limit can be raised to 1 GiB, but no client sends bodies near it.
const MAX_BODY: u32 = 64 << 20;
const MAX_PENDING: usize = 4096;

const STATUS_OK: u16 = 0;
const STATUS_NOT_FOUND: u16 = 1;
const STATUS_EXISTS: u16 = 2;
const STATUS_NOT_STORED: u16 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Found (status 0) is a hit, not found a miss.
    Get,
    /// delete, incr/decr, touch: status 0 a hit, not found a miss.
    Keyed,
    Store,
    /// One response per statistic, then one with an empty key.
    Stat,
    Other,
}

/// Opcode → (text name, quiet, class). Quiet ones answer only when they have to.
fn opcode(op: u8) -> Option<(&'static str, bool, Class)> {
    Some(match op {
        0x00 | 0x0c => ("get", false, Class::Get),
        0x09 | 0x0d => ("get", true, Class::Get),
        0x01 => ("set", false, Class::Store),
        0x11 => ("set", true, Class::Store),
        0x02 => ("add", false, Class::Store),
        0x12 => ("add", true, Class::Store),
        0x03 => ("replace", false, Class::Store),
        0x13 => ("replace", true, Class::Store),
        0x0e => ("append", false, Class::Store),
        0x19 => ("append", true, Class::Store),
        0x0f => ("prepend", false, Class::Store),
        0x1a => ("prepend", true, Class::Store),
        0x04 => ("delete", false, Class::Keyed),
        0x14 => ("delete", true, Class::Keyed),
        0x05 => ("incr", false, Class::Keyed),
        0x15 => ("incr", true, Class::Keyed),
        0x06 => ("decr", false, Class::Keyed),
        0x16 => ("decr", true, Class::Keyed),
        0x1c => ("touch", false, Class::Keyed),
        0x1d | 0x23 => ("gat", false, Class::Get),
        0x1e | 0x24 => ("gat", true, Class::Get),
        0x07 => ("quit", false, Class::Other),
        0x17 => ("quit", true, Class::Other),
        0x08 => ("flush_all", false, Class::Other),
        0x18 => ("flush_all", true, Class::Other),
        0x0a => ("noop", false, Class::Other),
        0x0b => ("version", false, Class::Other),
        0x10 => ("stats", false, Class::Stat),
        0x1b => ("verbosity", false, Class::Other),
        0x20..=0x22 => ("sasl", false, Class::Other),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug)]
struct Header {
    magic: u8,
    opcode: u8,
    key_len: u16,
    status: u16,
    body: u32,
    opaque: u32,
}

fn header(b: &[u8]) -> Option<Header> {
    let b: &[u8; HEADER] = b.get(..HEADER)?.try_into().ok()?;
    let key_len = u16::from_be_bytes([b[2], b[3]]);
    let extras = u32::from(b[4]);
    let body = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    // Data type 0 (raw bytes) is the only one defined.
    let ok = (b[0] == REQUEST || b[0] == RESPONSE)
        && opcode(b[1]).is_some()
        && b[5] == 0
        && u32::from(key_len) + extras <= body
        && body <= MAX_BODY;
    ok.then(|| Header {
        magic: b[0],
        opcode: b[1],
        key_len,
        status: u16::from_be_bytes([b[6], b[7]]),
        body,
        opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// Packets of `magic` from the first byte, lengths consistent, at least one header whole.
pub fn sniff(data: &[u8], magic: u8) -> bool {
    let mut at = 0;
    let mut seen = 0;
    while data.len() - at >= HEADER {
        match header(&data[at..]) {
            Some(h) if h.magic == magic => {
                seen += 1;
                at += HEADER + h.body as usize;
            }
            _ => return false,
        }
    }
    seen > 0
}

/// One direction's packet reader.
#[derive(Default)]
struct Packets {
    head: Vec<u8>,
    /// Body bytes still to pass.
    skip: u64,
    /// The packet whose body is being passed.
    current: Option<Header>,
}

struct Pending {
    opcode: u8,
    opaque: u32,
    quiet: bool,
    class: Class,
    op: CacheOp,
}

/// A binary-protocol connection.
pub struct BinaryParser {
    pending: VecDeque<Pending>,
    sent: Packets,
    received: Packets,
    lost: bool,
    counts: CacheCounts,
}

impl Default for BinaryParser {
    fn default() -> Self {
        Self::new()
    }
}

impl BinaryParser {
    pub fn new() -> BinaryParser {
        BinaryParser {
            pending: VecDeque::new(),
            sent: Packets::default(),
            received: Packets::default(),
            lost: true,
            counts: CacheCounts::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn take_counts(&mut self) -> CacheCounts {
        std::mem::take(&mut self.counts)
    }

    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<CacheOp>) {
        let sent = chunk.sent;
        if !sent && self.lost {
            if self.pending.is_empty() {
                self.counts.orphan_responses += 1;
                return;
            }
            self.lost = false;
            self.received = Packets::default();
        }
        let t = chunk.time_ns;
        let missing = u64::from(chunk.len.saturating_sub(chunk.data.len() as u32));
        let mut data = chunk.data;
        loop {
            let dir = if sent {
                &mut self.sent
            } else {
                &mut self.received
            };
            if dir.current.is_some() {
                let take = dir.skip.min(data.len() as u64);
                dir.skip -= take;
                data = &data[take as usize..];
                if !sent && let Some(head) = self.pending.front_mut() {
                    head.op.bytes_received += take;
                }
                if self.finish_packet(sent, t, out).is_none() {
                    break;
                }
                continue;
            }
            if data.is_empty() {
                break;
            }
            let need = HEADER - dir.head.len();
            let take = need.min(data.len());
            dir.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if dir.head.len() < HEADER {
                break;
            }
            let Some(h) = header(&dir.head) else {
                self.desync(sent);
                return;
            };
            dir.head.clear();
            dir.current = Some(h);
            dir.skip = u64::from(h.body);
            self.start_packet(sent, h, t, out);
            if self.lost && !sent {
                return;
            }
        }
        if missing > 0 {
            let dir = if sent {
                &mut self.sent
            } else {
                &mut self.received
            };
            if dir.current.is_some() && dir.skip >= missing {
                dir.skip -= missing;
                if !sent && let Some(head) = self.pending.front_mut() {
                    head.op.bytes_received += missing;
                }
                self.finish_packet(sent, t, out);
            } else {
                self.desync(sent);
            }
        }
    }

    fn start_packet(&mut self, sent: bool, h: Header, t: u64, out: &mut Vec<CacheOp>) {
        let Some((command, quiet, class)) = opcode(h.opcode) else {
            return;
        };
        if sent {
            let op = CacheOp {
                command,
                keys: u32::from(h.key_len > 0),
                hits: 0,
                misses: 0,
                error: false,
                start_ns: t,
                end_ns: None,
                bytes_sent: HEADER as u64 + u64::from(h.body),
                bytes_received: 0,
            };
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.counts.lost_requests += 1;
            }
            self.pending.push_back(Pending {
                opcode: h.opcode,
                opaque: h.opaque,
                quiet,
                class,
                op,
            });
            return;
        }
        // Quiet requests before this response's own were answered by their silence.
        while let Some(head) = self.pending.front() {
            if !head.quiet || (head.opcode == h.opcode && head.opaque == h.opaque) {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            match p.class {
                Class::Get => p.op.misses = 1,
                Class::Keyed => p.op.hits = 1,
                _ => {}
            }
            p.op.end_ns = Some(t);
            out.push(p.op);
        }
        match self.pending.front_mut() {
            Some(head) if head.opcode == h.opcode => {
                head.op.bytes_received += HEADER as u64;
                match (head.class, h.status) {
                    (Class::Get | Class::Keyed, STATUS_OK) => head.op.hits = 1,
                    (Class::Get | Class::Keyed, STATUS_NOT_FOUND) => head.op.misses = 1,
                    (_, STATUS_OK | STATUS_NOT_FOUND | STATUS_EXISTS | STATUS_NOT_STORED) => {}
                    _ => head.op.error = true,
                }
            }
            Some(_) => self.desync(false),
            None => {
                self.counts.orphan_responses += 1;
                self.lost = true;
            }
        }
    }

    /// Ends the packet whose body has been passed; None while body bytes remain.
    fn finish_packet(&mut self, sent: bool, t: u64, out: &mut Vec<CacheOp>) -> Option<()> {
        let dir = if sent {
            &mut self.sent
        } else {
            &mut self.received
        };
        if dir.skip > 0 {
            return None;
        }
        let h = dir.current.take()?;
        if sent {
            // The request is whole: its latency starts now; quiet ones may never be answered
            // by a packet of their own.
            if let Some(p) = self.pending.back_mut() {
                p.op.start_ns = t;
            }
            if h.opcode == 0x17 {
                // QUITQ: no answer ever.
                if let Some(p) = self.pending.pop_back() {
                    out.push(p.op);
                }
            }
            return Some(());
        }
        // STAT: one packet per statistic, the last with no key.
        let more = self
            .pending
            .front()
            .is_some_and(|p| p.class == Class::Stat && h.key_len > 0 && h.status == STATUS_OK);
        if !more && let Some(mut p) = self.pending.pop_front() {
            p.op.end_ns = Some(t);
            out.push(p.op);
        }
        Some(())
    }

    fn desync(&mut self, sent: bool) {
        self.counts.desyncs += 1;
        if sent {
            // Requests resync at the next send.
            self.sent = Packets::default();
            return;
        }
        self.counts.lost_requests += self.pending.len() as u64;
        self.pending.clear();
        self.received = Packets::default();
        self.lost = true;
    }
}
