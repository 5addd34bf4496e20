//! One AMQP connection seen from the client: both directions cut into frames ([`super::frame`]),
//! methods decoded ([`super::method`]), and each content-bearing method (Basic.Publish sent;
//! Basic.Deliver, Basic.Get-Ok, Basic.Return received) joined with its content header and body
//! frames into a [`Message`]. Frames of one channel's content are consecutive on the wire
//! (spec §4.2.6), but channels interleave, so contents are assembled per channel.

use std::collections::HashMap;

use super::{
    frame::{BODY, FrameReader, HEADER, HEARTBEAT, METHOD, PROTOCOL_HEADER},
    header::{ContentHeader, Properties, decode_header},
    method::{CONNECTION, Method, decode},
};
use crate::tracers::sql::Chunk;

/// A message published or received, with what the tracer may keep of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Published by the traced process (Basic.Publish) or received by it.
    pub sent: bool,
    pub channel: u16,
    /// Basic.Publish, Basic.Deliver, Basic.Get-Ok or Basic.Return, with exchange and routing key.
    pub method: Method,
    pub properties: Properties,
    pub body_size: u64,
    /// The body's first bytes, up to the body cap, without gaps: it stops where the capture
    /// missed bytes.
    pub body: Vec<u8>,
    /// `body` is the whole body.
    pub body_whole: bool,
    /// When the syscall carrying the method frame returned.
    pub start_ns: u64,
    /// When the syscall completing the body returned.
    pub end_ns: u64,
    /// Bytes of the method, header and body frames on the wire.
    pub wire_bytes: u64,
}

impl Message {
    pub fn exchange(&self) -> &str {
        match &self.method {
            Method::Publish { exchange, .. }
            | Method::Deliver { exchange, .. }
            | Method::GetOk { exchange, .. }
            | Method::Return { exchange, .. } => exchange,
            _ => "",
        }
    }

    pub fn routing_key(&self) -> &str {
        match &self.method {
            Method::Publish { routing_key, .. }
            | Method::Deliver { routing_key, .. }
            | Method::GetOk { routing_key, .. }
            | Method::Return { routing_key, .. } => routing_key,
            _ => "",
        }
    }
}

/// What a connection yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// Any other method (Basic.Ack, Queue.Declare, Channel.Close…).
    Method {
        sent: bool,
        channel: u16,
        method: Method,
        time_ns: u64,
    },
}

/// Counts of what could not be followed, since the last [`AmqpConnection::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// The frame stream was lost (bad header, bad frame-end, uncaptured header).
    pub desyncs: u64,
    /// Frames dropped: content frames whose method was not seen (picked up mid-message, or
    /// after a loss), methods that could not be decoded, messages cut by a loss.
    pub skipped_frames: u64,
    /// Syscalls skipped while looking for a frame start (picked up mid-stream, or after a loss).
    pub unsynced_chunks: u64,
}

struct Content {
    method: Method,
    header: Option<ContentHeader>,
    body: Vec<u8>,
    /// Body bytes so far, by size.
    received: u64,
    /// No gap in `body` so far.
    contiguous: bool,
    start_ns: u64,
    wire: u64,
}

/// Both directions of one connection.
pub struct AmqpConnection {
    /// [sent, received].
    readers: [FrameReader; 2],
    content: [HashMap<u16, Content>; 2],
    body_cap: usize,
    from_start: bool,
    /// [sent, received]: frames are being read (from the start, or since one was found).
    following: [bool; 2],
    closed: bool,
    counts: Counts,
    frames: Vec<super::frame::Frame>,
}

impl AmqpConnection {
    /// `from_start`: the connection's first bytes will be fed (else it was picked up mid-stream
    /// and frames are looked for, see [`FrameReader::push`]). Message bodies are kept up to
    /// `body_cap` bytes (oslo.messaging's JSON is read from them; 64 KiB is plenty).
    pub fn new(from_start: bool, body_cap: usize) -> AmqpConnection {
        // Method and header frames are small; a body frame is kept up to the body cap.
        let keep = body_cap.max(4096);
        AmqpConnection {
            readers: [
                FrameReader::new(keep, !from_start),
                FrameReader::new(keep, !from_start),
            ],
            content: [HashMap::new(), HashMap::new()],
            body_cap,
            from_start: false,
            following: [from_start, from_start],
            closed: false,
            counts: Counts::default(),
            frames: Vec::new(),
        }
    }

    /// The protocol header was seen (the connection's start).
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests use it"))]
    pub fn seen_from_start(&self) -> bool {
        self.from_start
    }

    /// Connection.Close-Ok went by.
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests use it"))]
    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Feeds one syscall's bytes; messages and methods completed are appended to `out`.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Event>) {
        let dir = usize::from(!chunk.sent);
        let mut data = chunk.data;
        let missing = chunk.len.saturating_sub(data.len() as u32);
        let reader = &self.readers[0];
        if chunk.sent
            && data.starts_with(PROTOCOL_HEADER)
            && (reader.at_boundary() || reader.is_lost())
        {
            // The connection's start (or a client's reconnection on the same socket, which
            // AMQP does not have; restarting is harmless).
            self.from_start = true;
            data = &data[PROTOCOL_HEADER.len()..];
            let keep = self.body_cap.max(4096);
            self.readers = [FrameReader::new(keep, false), FrameReader::new(keep, false)];
            self.following = [true, true];
        }
        if data.is_empty() && missing == 0 {
            return;
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let result = self.readers[dir].push(data, missing, chunk.time_ns, &mut frames);
        for f in frames.drain(..) {
            self.following[dir] = true;
            self.frame(dir, f, out);
        }
        self.frames = frames;
        match result {
            Ok(()) => {}
            // Still looking for a first frame: nothing was being followed.
            Err(_) if !self.following[dir] => self.counts.unsynced_chunks += 1,
            Err(_) => {
                // Lost what was followed: messages under way in this direction are gone.
                self.counts.desyncs += 1;
                self.counts.skipped_frames += self.content[dir].len() as u64;
                self.content[dir].clear();
                self.following[dir] = false;
            }
        }
    }

    fn frame(&mut self, dir: usize, f: super::frame::Frame, out: &mut Vec<Event>) {
        let sent = dir == 0;
        let wire = 8 + u64::from(f.size);
        match f.kind {
            METHOD => {
                let Ok(method) = decode(&f.payload) else {
                    self.counts.skipped_frames += 1;
                    return;
                };
                if method.has_content() {
                    let old = self.content[dir].insert(
                        f.channel,
                        Content {
                            method,
                            header: None,
                            body: Vec::new(),
                            received: 0,
                            contiguous: true,
                            start_ns: f.start_ns,
                            wire,
                        },
                    );
                    // A content method while another's content was under way on the channel.
                    self.counts.skipped_frames += u64::from(old.is_some());
                    return;
                }
                if method.ids() == (CONNECTION, 51) {
                    self.closed = true;
                }
                out.push(Event::Method {
                    sent,
                    channel: f.channel,
                    method,
                    time_ns: f.end_ns,
                });
            }
            HEADER => {
                let Some(c) = self.content[dir].get_mut(&f.channel) else {
                    self.counts.skipped_frames += 1;
                    return;
                };
                let Ok(h) = decode_header(&f.payload) else {
                    self.counts.skipped_frames += 1;
                    self.content[dir].remove(&f.channel);
                    return;
                };
                c.wire += wire;
                let done = h.body_size == 0;
                c.header = Some(h);
                if done {
                    self.complete(dir, f.channel, f.end_ns, out);
                }
            }
            BODY => {
                let Some(c) = self.content[dir].get_mut(&f.channel) else {
                    self.counts.skipped_frames += 1;
                    return;
                };
                let Some(h) = &c.header else {
                    self.counts.skipped_frames += 1;
                    self.content[dir].remove(&f.channel);
                    return;
                };
                c.wire += wire;
                if c.contiguous {
                    let room = self.body_cap.saturating_sub(c.body.len());
                    c.body
                        .extend_from_slice(&f.payload[..f.payload.len().min(room)]);
                    c.contiguous = f.whole;
                }
                c.received += u64::from(f.size);
                if c.received >= h.body_size {
                    self.complete(dir, f.channel, f.end_ns, out);
                }
            }
            HEARTBEAT => {}
            _ => self.counts.skipped_frames += 1,
        }
    }

    fn complete(&mut self, dir: usize, channel: u16, end_ns: u64, out: &mut Vec<Event>) {
        let Some(c) = self.content[dir].remove(&channel) else {
            return;
        };
        let Some(h) = c.header else { return };
        let body_whole = c.body.len() as u64 == h.body_size;
        out.push(Event::Message(Message {
            sent: dir == 0,
            channel,
            method: c.method,
            properties: h.properties,
            body_size: h.body_size,
            body: c.body,
            body_whole,
            start_ns: c.start_ns,
            end_ns,
            wire_bytes: c.wire,
        }));
    }
}
