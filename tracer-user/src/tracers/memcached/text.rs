//! memcached's text protocol, classic and meta commands (doc/protocol.txt): a request is a line
//! (`get a b`, `set k 0 0 5 noreply` + a data block, `mg k v q`), a response one or more lines
//! (`VALUE k 0 5` + data block … `END`, `STORED`, `HD`, `VA 5` + data block, `EN`).
//!
//! Responses come in request order. Requests with `noreply` get none; meta requests with the
//! `q` flag get none for their common outcome (mg: EN, a miss; ms/md/ma: HD, a success), so a
//! quiet request at the head of the queue is answered either by the next response line, if that
//! line is one it can get, or by its silence: the line belongs to a later request (`mn`'s MN,
//! typically). Opaque tokens (`O…`) are matched when both sides carry them.
//!
//! Data blocks are skipped by their declared length, so values beyond the capture are never
//! needed. A line cut by the capture ends its syscall's parsing: clients write whole commands
//! per send, and the next send starts with the next command. A response line lost that way
//! cannot be found again in a stream of values, so the pending requests are dropped (counted)
//! and responses are ignored until a request sent after that is answered.

use std::collections::VecDeque;

use super::{
    CacheCounts, CacheOp,
    lines::{Expect, Request, Resp, find_crlf, parse_request, parse_response, quiet_gets},
};
use crate::tracers::sql::Chunk;

/// A line longer than this is not waited for (memcached's own limit for a key is 250 bytes; a
/// multi-get of hundreds of keys stays under it).
const MAX_LINE: usize = 64 * 1024;
/// Requests awaiting a response, per connection (quiet requests can wait long).
const MAX_PENDING: usize = 4096;
const END: &[u8] = b"END\r\n";

struct Pending {
    req: Request,
    op: CacheOp,
}

/// One direction's line buffer.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// Data block bytes still to pass.
    skip: u64,
}

/// A text-protocol connection.
pub struct TextParser {
    pending: VecDeque<Pending>,
    sent: Lines,
    received: Lines,
    /// A storage request whose data block is being sent.
    block_of: Option<Pending>,
    /// The head request completes when the received data block ends (mg's VA).
    complete_after_block: bool,
    /// Responses are not followed until a request sent after the loss is answered.
    lost: bool,
    counts: CacheCounts,
}

impl Default for TextParser {
    fn default() -> Self {
        Self::new()
    }
}

impl TextParser {
    pub fn new() -> TextParser {
        TextParser {
            pending: VecDeque::new(),
            sent: Lines::default(),
            received: Lines::default(),
            block_of: None,
            complete_after_block: false,
            // Picked up from the start or not, a response before any request is an orphan.
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
        if chunk.sent {
            self.feed_sent(chunk, out);
        } else {
            self.feed_received(chunk, out);
        }
    }

    fn feed_sent(&mut self, chunk: &Chunk<'_>, out: &mut Vec<CacheOp>) {
        let t = chunk.time_ns;
        let missing = u64::from(chunk.len.saturating_sub(chunk.data.len() as u32));
        let mut buf = std::mem::take(&mut self.sent.buf);
        buf.extend_from_slice(chunk.data);
        let mut at = 0;
        loop {
            if self.sent.skip > 0 {
                let take = self.sent.skip.min((buf.len() - at) as u64);
                self.sent.skip -= take;
                at += take as usize;
                if self.sent.skip > 0 {
                    break;
                }
                self.block_sent(t, out);
                continue;
            }
            let Some(end) = find_crlf(&buf[at..]) else {
                break;
            };
            let line = &buf[at..at + end];
            at += end + 2;
            self.request_line(line, t, out);
        }
        buf.drain(..at);
        if missing > 0 {
            if self.sent.skip >= missing {
                self.sent.skip -= missing;
                if self.sent.skip == 0 {
                    self.block_sent(t, out);
                }
            } else if self.sent.skip == 0 && !buf.is_empty() {
                // A line cut by the capture (a long multi-get): what it names is known, the
                // rest of the send is taken as its end.
                let line = std::mem::take(&mut buf);
                self.request_line(&line, t, out);
                self.sent.skip = 0;
                if self.block_of.is_some() {
                    // Its data block's end is beyond the capture too.
                    self.block_sent(t, out);
                }
            } else {
                self.sent.skip = 0;
                if self.block_of.is_some() {
                    self.block_sent(t, out);
                }
            }
            buf.clear();
        }
        if buf.len() > MAX_LINE {
            buf.clear();
            self.counts.desyncs += 1;
        }
        self.sent.buf = buf;
    }

    fn request_line(&mut self, line: &[u8], t: u64, out: &mut Vec<CacheOp>) {
        let req = parse_request(line).unwrap_or(Request {
            command: "other",
            expect: Expect::Line,
            keys: 0,
            noreply: false,
            quiet: false,
            opaque: None,
            block: 0,
            needs_item: false,
        });
        let op = CacheOp {
            command: req.command,
            keys: req.keys,
            hits: 0,
            misses: 0,
            error: false,
            start_ns: t,
            end_ns: None,
            bytes_sent: line.len() as u64 + 2 + req.block,
            bytes_received: 0,
        };
        let p = Pending { req, op };
        if p.req.block > 0 {
            self.sent.skip = p.req.block;
            self.block_of = Some(p);
        } else {
            self.queue(p, out);
        }
    }

    fn block_sent(&mut self, t: u64, out: &mut Vec<CacheOp>) {
        if let Some(mut p) = self.block_of.take() {
            p.op.start_ns = t;
            self.queue(p, out);
        }
    }

    fn queue(&mut self, p: Pending, out: &mut Vec<CacheOp>) {
        if p.req.noreply || p.req.expect == Expect::Nothing {
            out.push(p.op);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.counts.lost_requests += 1;
        }
        self.pending.push_back(p);
    }

    fn feed_received(&mut self, chunk: &Chunk<'_>, out: &mut Vec<CacheOp>) {
        let t = chunk.time_ns;
        if self.lost {
            if self.pending.is_empty() {
                self.counts.orphan_responses += 1;
                return;
            }
            // A request is waiting: its response starts this receive.
            self.lost = false;
            self.received = Lines::default();
            self.complete_after_block = false;
        }
        let missing = u64::from(chunk.len.saturating_sub(chunk.data.len() as u32));
        let mut buf = std::mem::take(&mut self.received.buf);
        buf.extend_from_slice(chunk.data);
        let mut at = 0;
        while !self.lost {
            if self.received.skip > 0 {
                let take = self.received.skip.min((buf.len() - at) as u64);
                self.skip_received(take, t, out);
                at += take as usize;
                if self.received.skip > 0 {
                    break;
                }
                continue;
            }
            let Some(end) = find_crlf(&buf[at..]) else {
                break;
            };
            let line = buf[at..at + end].to_vec();
            at += end + 2;
            self.response_line(&line, t, out);
        }
        if self.lost {
            self.received = Lines::default();
            return;
        }
        buf.drain(..at);
        if missing > 0 {
            if self.received.skip >= missing {
                self.skip_received(missing, t, out);
            } else if self.end_past_capture(missing) {
                // A large value read in one syscall: its block, then the END that must follow
                // (every key found), past the capture.
                let skip = self.received.skip;
                self.skip_received(skip, t, out);
                if let Some(head) = self.pending.front_mut() {
                    head.op.bytes_received += END.len() as u64;
                }
                self.complete(t, out);
                buf.clear();
            } else {
                // Response lines went by uncaptured.
                self.desync();
                return;
            }
        }
        if buf.len() > MAX_LINE {
            self.desync();
            return;
        }
        self.received.buf = buf;
    }

    /// Whether the uncaptured `missing` bytes are the rest of a value's block and the END line
    /// of a retrieval whose keys were all found (nothing else can follow then).
    fn end_past_capture(&self, missing: u64) -> bool {
        let Some(head) = self.pending.front() else {
            return false;
        };
        head.req.expect == Expect::Values
            && self.received.buf.is_empty()
            && head.op.hits == head.op.keys
            && missing == self.received.skip + END.len() as u64
    }

    fn skip_received(&mut self, n: u64, t: u64, out: &mut Vec<CacheOp>) {
        self.received.skip -= n;
        if let Some(head) = self.pending.front_mut() {
            head.op.bytes_received += n;
        }
        if self.received.skip == 0 && self.complete_after_block {
            self.complete_after_block = false;
            self.complete(t, out);
        }
    }

    fn desync(&mut self) {
        self.counts.desyncs += 1;
        self.counts.lost_requests += self.pending.len() as u64;
        self.pending.clear();
        self.lost = true;
        self.received = Lines::default();
        self.complete_after_block = false;
    }

    fn complete(&mut self, t: u64, out: &mut Vec<CacheOp>) {
        if let Some(mut p) = self.pending.pop_front() {
            p.op.end_ns = Some(t);
            // A failed retrieval found nothing, and missed nothing either (as memcached counts).
            if p.req.expect == Expect::Values && !p.op.error {
                p.op.misses = p.op.keys.saturating_sub(p.op.hits);
            }
            out.push(p.op);
        }
    }

    fn response_line(&mut self, line: &[u8], t: u64, out: &mut Vec<CacheOp>) {
        let r = parse_response(line);
        // Quiet requests answered by their silence.
        while let Some(head) = self.pending.front() {
            let opaque_differs = match (&head.req.opaque, &r) {
                (
                    Some(mine),
                    Resp::Meta {
                        opaque: Some(theirs),
                        ..
                    },
                ) => mine[..] != theirs[..],
                _ => false,
            };
            if !head.req.quiet || (quiet_gets(&head.req, &r) && !opaque_differs) {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            match p.req.expect {
                Expect::MetaGet => p.op.misses = 1,
                Expect::MetaDelete | Expect::MetaArith => p.op.hits = 1,
                _ => {}
            }
            p.op.end_ns = Some(t);
            out.push(p.op);
        }
        let Some(head) = self.pending.front_mut() else {
            self.counts.orphan_responses += 1;
            self.lost = true;
            return;
        };
        head.op.bytes_received += line.len() as u64 + 2;
        let expect = head.req.expect;
        let hit = |head: &mut Pending| head.op.hits += 1;
        let miss = |head: &mut Pending| head.op.misses += 1;
        let done = match (expect, &r) {
            (_, Resp::Error) => {
                head.op.error = true;
                true
            }
            (Expect::Values, Resp::Value { block }) => {
                hit(head);
                self.received.skip = *block;
                false
            }
            (Expect::Values, Resp::End) => true,
            (Expect::Storage, Resp::Stored | Resp::NotStored | Resp::Exists | Resp::NotFound) => {
                true
            }
            (Expect::Delete, Resp::Deleted)
            | (Expect::Arith, Resp::Number)
            | (Expect::Touch, Resp::Touched) => {
                hit(head);
                true
            }
            (Expect::Delete | Expect::Arith | Expect::Touch, Resp::NotFound) => {
                miss(head);
                true
            }
            (Expect::Stats, Resp::Stat) => false,
            (Expect::Stats, Resp::End | Resp::Ok)
            | (Expect::Ok, Resp::Ok)
            | (Expect::Version, Resp::Version)
            | (Expect::Line, _) => true,
            (meta, Resp::Meta { code, block, .. }) => {
                let (fits, found) = match (meta, code) {
                    (Expect::MetaGet, b"VA" | b"HD") => (true, Some(true)),
                    (Expect::MetaGet, b"EN") => (true, Some(false)),
                    (Expect::MetaSet, b"HD" | b"NS" | b"EX" | b"NF") => (true, None),
                    (Expect::MetaDelete, b"HD") => (true, Some(true)),
                    (Expect::MetaDelete, b"NF") => (true, Some(false)),
                    (Expect::MetaDelete, b"EX") => (true, None),
                    (Expect::MetaArith, b"HD" | b"VA") => (true, Some(true)),
                    (Expect::MetaArith, b"NF") => (true, Some(false)),
                    (Expect::MetaArith, b"NS" | b"EX") => (true, None),
                    (Expect::MetaNoop, b"MN") => (true, None),
                    (Expect::MetaDebug, b"ME") => (true, Some(true)),
                    (Expect::MetaDebug, b"EN") => (true, Some(false)),
                    _ => (false, None),
                };
                if !fits {
                    self.desync();
                    return;
                }
                match found {
                    Some(true) => hit(head),
                    Some(false) => miss(head),
                    None => {}
                }
                if *block > 0 {
                    self.received.skip = *block;
                    self.complete_after_block = true;
                    false
                } else {
                    true
                }
            }
            _ => {
                self.desync();
                return;
            }
        };
        if done {
            self.complete(t, out);
        }
    }
}
