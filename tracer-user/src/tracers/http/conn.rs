//! One connection's exchanges: the request stream (HTTP heads or uwsgi packets, then bodies) and
//! the response stream (HTTP, interim 1xx responses included) read independently, paired in
//! order (HTTP/1.1 answers pipelined requests in the order they came).
//!
//! When a stream's framing is lost, bytes are not guessed at:
//! - requests: the stream is picked up at the next chunk that starts a request (clients write a
//!   request from its first byte; servers read one from its first byte unless pipelined). The
//!   bytes in between are charged to the request whose body was lost, if any — they are its body.
//! - responses: a response whose head was lost is dropped (its status is unknown); one whose
//!   body was lost ends where the next response's status line begins, or at the close
//!   ([`Ending::Resync`]).

use std::collections::VecDeque;

use super::{
    Chunk, Drops, Ending, Exchange, Protocol, Side,
    body::Body,
    head::{self, BodyKind, HeadBuf, RequestHead},
    sniff::{self, Sniffed},
    uwsgi,
};

/// Requests sent ahead of their answers that are followed (pipelining is rare; more are dropped).
const MAX_PENDING: usize = 64;

struct Pending {
    id: u64,
    head: RequestHead,
    start_ns: u64,
    request_bytes: u64,
    request_end_ns: u64,
    /// The final status, once its head was read.
    status: Option<u16>,
    response_start_ns: u64,
    response_bytes: u64,
    /// When the last response byte so far was carried.
    last_ns: u64,
}

enum Requests {
    /// Gathering a head in `req_head`.
    Head,
    /// Gathering a uwsgi packet in `packet`.
    Packet,
    /// The body of request `id` (None: it was dropped).
    Body(Option<u64>, Body),
    /// Framing lost; bytes go to request `id` until a request starts.
    Lost(Option<u64>),
}

enum Responses {
    /// Gathering a head in `resp_head`.
    Head,
    /// The body of the response to request `id` (None: a response without a request).
    Body(Option<u64>, Body),
    Lost,
    /// After a uwsgi exchange: what the application writes after its response (a body to a HEAD
    /// request) is not another response, until another request comes.
    Drain,
    /// After a 101 or a CONNECT tunnel: not HTTP any more.
    Ignored,
}

/// One connection's parser.
pub struct Connection {
    side: Side,
    protocol: Protocol,
    requests: Requests,
    responses: Responses,
    // The buffers live outside the states so that they are reused, not allocated per message.
    req_head: HeadBuf,
    packet: uwsgi::PacketBuf,
    resp_head: HeadBuf,
    pending: VecDeque<Pending>,
    next_id: u64,
    drops: Drops,
    closed: bool,
}

impl Connection {
    /// A connection whose next request-carrying chunk starts a request (as [`sniff`] found).
    ///
    /// [`sniff`]: super::sniff()
    pub fn new(side: Side, protocol: Protocol) -> Connection {
        Connection {
            side,
            protocol,
            requests: Self::request_state(protocol),
            responses: Responses::Head,
            req_head: HeadBuf::default(),
            packet: uwsgi::PacketBuf::default(),
            resp_head: HeadBuf::default(),
            pending: VecDeque::new(),
            next_id: 0,
            drops: Drops::default(),
            closed: false,
        }
    }

    /// From what [`sniff`](super::sniff()) said about a chunk; None unless it was a request.
    pub fn from_sniffed(sniffed: Sniffed, accepted: bool) -> Option<Connection> {
        let protocol = match sniffed {
            Sniffed::Http => Protocol::Http,
            Sniffed::Uwsgi => Protocol::Uwsgi,
            Sniffed::Partial | Sniffed::No => return None,
        };
        Some(Connection::new(Side::from_accepted(accepted), protocol))
    }

    pub fn side(&self) -> Side {
        self.side
    }

    #[cfg(test)]
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Requests read whose response has not ended (a thread serving one is busy with it).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// What could not be followed since the last call.
    pub fn take_drops(&mut self) -> Drops {
        std::mem::take(&mut self.drops)
    }

    fn request_state(protocol: Protocol) -> Requests {
        match protocol {
            Protocol::Http => Requests::Head,
            Protocol::Uwsgi => Requests::Packet,
        }
    }

    /// The request stream is at a request's start.
    fn request_start(&mut self) {
        self.req_head.reset();
        self.packet.reset();
        self.requests = Self::request_state(self.protocol);
    }

    /// The response stream is at a response's start.
    fn response_start(&mut self) {
        self.resp_head.reset();
        self.responses = Responses::Head;
    }

    /// Feeds one syscall's bytes; exchanges that completed are appended to `out`.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Exchange>) {
        if self.closed {
            return;
        }
        let data = &chunk.data[..chunk.data.len().min(chunk.len as usize)];
        let missing = u64::from(chunk.len) - data.len() as u64;
        if self.side.carries_requests(chunk.sent) {
            self.feed_requests(data, missing, chunk.time_ns);
        } else {
            self.feed_responses(data, missing, chunk.time_ns, out);
        }
    }

    /// The connection closed at `time_ns`: a response delimited by the close ends; requests
    /// still unanswered are dropped.
    pub fn close(&mut self, time_ns: u64, out: &mut Vec<Exchange>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let ending = match &self.responses {
            Responses::Body(Some(_), body) => Some(Ending::Close {
                truncated: !body.until_close(),
            }),
            Responses::Lost => Some(Ending::Resync),
            _ => None,
        };
        if let Some(ending) = ending
            && let Some(p) = self.pending.front_mut()
            && p.status.is_some()
        {
            if p.last_ns == 0 {
                p.last_ns = time_ns;
            }
            self.finish(None, ending, out);
        }
        self.drops.requests += self.pending.len() as u64;
        self.pending.clear();
    }

    fn pending_mut(&mut self, id: Option<u64>) -> Option<&mut Pending> {
        let id = id?;
        // The request being read is the newest; the response being read is for the oldest.
        self.pending.iter_mut().rev().find(|p| p.id == id)
    }

    fn feed_requests(&mut self, mut data: &[u8], missing: u64, time_ns: u64) {
        if let Requests::Lost(id) = self.requests {
            let resumes = match self.protocol {
                Protocol::Http => sniff::resumes_http(data),
                Protocol::Uwsgi => matches!(sniff::uwsgi_request(data), Sniffed::Uwsgi),
            };
            if !resumes {
                if let Some(p) = self.pending_mut(id) {
                    p.request_bytes += data.len() as u64 + missing;
                }
                return;
            }
            self.request_start();
        }
        while !data.is_empty() {
            let used = match &mut self.requests {
                Requests::Head => match self.req_head.push(data, time_ns) {
                    head::Push::Partial => data.len(),
                    head::Push::TooLong => return self.lose_requests(None, 0),
                    head::Push::Complete { consumed } => {
                        let hb = &self.req_head;
                        let Some(head) = head::parse_request(hb.head()) else {
                            return self.lose_requests(None, 0);
                        };
                        let (wire, start) = (hb.wire(), hb.first_ns().unwrap_or(time_ns));
                        self.request_read(head, wire, start, time_ns);
                        consumed
                    }
                },
                Requests::Packet => match self.packet.push(data, time_ns) {
                    uwsgi::Push::Partial => data.len(),
                    uwsgi::Push::Bad => return self.lose_requests(None, 0),
                    uwsgi::Push::Complete { consumed, head } => {
                        let pb = &self.packet;
                        let (wire, start) = (pb.wire(), pb.first_ns().unwrap_or(time_ns));
                        self.request_read(head, wire, start, time_ns);
                        consumed
                    }
                },
                Requests::Body(id, body) => {
                    let id = *id;
                    let Ok((used, done)) = body.push(data) else {
                        return self.lose_requests(id, data.len() as u64 + missing);
                    };
                    self.request_body(id, used as u64, done, time_ns);
                    used
                }
                Requests::Lost(_) => return,
            };
            data = &data[used..];
        }
        if missing == 0 {
            return;
        }
        match &mut self.requests {
            Requests::Body(id, body) => {
                let id = *id;
                match body.skip(missing) {
                    Ok(done) => self.request_body(id, missing, done, time_ns),
                    Err(_) => self.lose_requests(id, missing),
                }
            }
            // A head in the uncaptured stretch.
            Requests::Head | Requests::Packet => self.lose_requests(None, 0),
            Requests::Lost(_) => {}
        }
    }

    /// The request stream's framing is lost in request `id`'s body: the syscall's `rest` bytes
    /// not yet counted are charged to it, like all until a request starts.
    fn lose_requests(&mut self, id: Option<u64>, rest: u64) {
        self.drops.desyncs += 1;
        if let Some(p) = self.pending_mut(id) {
            p.request_bytes += rest;
        }
        self.requests = Requests::Lost(id);
    }

    /// A request's head (or uwsgi packet) was read.
    fn request_read(&mut self, head: RequestHead, wire: u64, start_ns: u64, time_ns: u64) {
        let body = Body::new(head.body);
        let id = if self.pending.len() < MAX_PENDING {
            let id = self.next_id;
            self.next_id += 1;
            self.pending.push_back(Pending {
                id,
                head,
                start_ns,
                request_bytes: wire,
                request_end_ns: 0,
                status: None,
                response_start_ns: 0,
                response_bytes: 0,
                last_ns: 0,
            });
            Some(id)
        } else {
            self.drops.requests += 1;
            None
        };
        if let Responses::Drain = self.responses {
            self.response_start();
        }
        match body {
            Some(body) => self.requests = Requests::Body(id, body),
            None => {
                if let Some(p) = self.pending_mut(id) {
                    p.request_end_ns = time_ns;
                }
                self.request_start();
            }
        }
    }

    fn request_body(&mut self, id: Option<u64>, bytes: u64, done: bool, time_ns: u64) {
        if let Some(p) = self.pending_mut(id) {
            p.request_bytes += bytes;
            if done {
                p.request_end_ns = time_ns;
            }
        }
        if done {
            self.request_start();
        }
    }

    fn feed_responses(
        &mut self,
        mut data: &[u8],
        missing: u64,
        time_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        if let Responses::Lost = self.responses {
            if !status_line_start(data) {
                if let Some(p) = self.pending.front_mut() {
                    p.response_bytes += data.len() as u64 + missing;
                    p.last_ns = time_ns;
                }
                return;
            }
            // The response whose body was lost ended before this one.
            if self.pending.front().is_some_and(|p| p.status.is_some()) {
                self.finish(None, Ending::Resync, out);
            }
            self.response_start();
        }
        while !data.is_empty() {
            let used = match &mut self.responses {
                Responses::Head => match self.resp_head.push(data, time_ns) {
                    head::Push::Partial => data.len(),
                    head::Push::TooLong => return self.lose_responses(0, time_ns),
                    head::Push::Complete { consumed } => {
                        let hb = &mut self.resp_head;
                        let front = self.pending.front().map(|p| p.head.method);
                        let Some(resp) = head::parse_response(hb.head(), front) else {
                            return self.lose_responses(0, time_ns);
                        };
                        let (wire, first) = (hb.wire(), hb.first_ns().unwrap_or(time_ns));
                        hb.reset();
                        self.response_read(resp, wire, first, time_ns, out);
                        consumed
                    }
                },
                Responses::Body(id, body) => {
                    let id = *id;
                    let Ok((used, done)) = body.push(data) else {
                        return self.lose_responses(data.len() as u64 + missing, time_ns);
                    };
                    self.response_body(id, used as u64, done, time_ns, out);
                    used
                }
                Responses::Lost | Responses::Drain | Responses::Ignored => return,
            };
            data = &data[used..];
        }
        if missing == 0 {
            return;
        }
        match &mut self.responses {
            Responses::Body(id, body) => {
                let id = *id;
                match body.skip(missing) {
                    Ok(done) => self.response_body(id, missing, done, time_ns, out),
                    Err(_) => self.lose_responses(missing, time_ns),
                }
            }
            Responses::Head => self.lose_responses(0, time_ns),
            Responses::Lost | Responses::Drain | Responses::Ignored => {}
        }
    }

    /// The response stream's framing is lost: a response whose head was not read is dropped;
    /// one in its body is charged the syscall's `rest` bytes not yet counted, like all until
    /// the next status line.
    fn lose_responses(&mut self, rest: u64, time_ns: u64) {
        self.drops.desyncs += 1;
        match &self.responses {
            Responses::Head if self.pending.pop_front().is_some() => self.drops.requests += 1,
            Responses::Body(Some(id), _) => {
                let id = *id;
                if let Some(p) = self.pending.front_mut()
                    && p.id == id
                {
                    p.response_bytes += rest;
                    p.last_ns = time_ns;
                }
            }
            _ => {}
        }
        self.responses = Responses::Lost;
    }

    fn response_read(
        &mut self,
        resp: head::ResponseHead,
        wire: u64,
        first_ns: u64,
        time_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(p) = self.pending.front_mut() else {
            // Nothing was asked (or it was not seen): follow its framing, report nothing.
            self.drops.responses += 1;
            self.responses = match Body::new(resp.body) {
                Some(body) => Responses::Body(None, body),
                None if resp.body == BodyKind::Tunnel => Responses::Ignored,
                None => Responses::Head,
            };
            return;
        };
        if p.response_start_ns == 0 {
            p.response_start_ns = first_ns;
        }
        p.response_bytes += wire;
        p.last_ns = time_ns;
        if resp.status < 200 && resp.status != 101 {
            // Interim (100 Continue, 103 Early Hints): the final response follows.
            return;
        }
        p.status = Some(resp.status);
        let id = p.id;
        match Body::new(resp.body) {
            Some(body) => self.responses = Responses::Body(Some(id), body),
            None => {
                self.finish(Some(time_ns), Ending::Framed, out);
                if resp.body == BodyKind::Tunnel {
                    self.tunnel();
                }
            }
        }
    }

    fn response_body(
        &mut self,
        id: Option<u64>,
        bytes: u64,
        done: bool,
        time_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        if let Some(p) = self.pending.front_mut()
            && Some(p.id) == id
        {
            p.response_bytes += bytes;
            p.last_ns = time_ns;
        }
        if done {
            self.response_start();
            if id.is_some() {
                self.finish(Some(time_ns), Ending::Framed, out);
            }
        }
    }

    /// The front request's response ended (at `end_ns`, else at its last byte).
    fn finish(&mut self, end_ns: Option<u64>, ending: Ending, out: &mut Vec<Exchange>) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        out.push(Exchange {
            protocol: self.protocol,
            side: self.side,
            method: p.head.method,
            path: p.head.path,
            host: p.head.host,
            status: p.status.unwrap_or_default(),
            request_bytes: p.request_bytes,
            response_bytes: p.response_bytes,
            start_ns: p.start_ns,
            request_end_ns: p.request_end_ns,
            response_start_ns: p.response_start_ns,
            end_ns: end_ns.unwrap_or(p.last_ns),
            ending,
        });
        // uwsgi carries one request per connection: whatever the application writes after its
        // response (a body to a HEAD request) is not another response.
        if self.protocol == Protocol::Uwsgi && self.pending.is_empty() {
            self.responses = Responses::Drain;
        }
    }

    /// After a 101 or CONNECT: neither stream is HTTP any more.
    fn tunnel(&mut self) {
        self.responses = Responses::Ignored;
        self.requests = Requests::Lost(None);
        self.drops.requests += self.pending.len() as u64;
        self.pending.clear();
        self.closed = true;
    }
}

/// Whether a chunk starts with a status line as far as it goes (`HTTP/1.1 2`).
fn status_line_start(data: &[u8]) -> bool {
    data.len() >= 10
        && (data.starts_with(b"HTTP/1.1 ") || data.starts_with(b"HTTP/1.0 "))
        && data[9].is_ascii_digit()
        && (1..=5).contains(&(data[9] - b'0'))
}
