//! Cutting one direction of an AMQP 0-9-1 connection into frames: type (1 byte), channel
//! (2, big-endian), payload size (4), payload, frame-end 0xCE.
//!
//! Only the first bytes of each syscall are captured; a payload that runs into an uncaptured
//! stretch is skipped by its size (the frame is delivered with the bytes that were seen). A
//! header that falls into an uncaptured stretch loses the stream. It is found again at the
//! start of a later syscall: py-amqp reads a frame as three receives (7-byte header, payload,
//! frame-end) and every client writes whole frames, so syscalls start at frame boundaries. A
//! header taken that way is tentative until its frame-end byte is seen to be 0xCE. For clients
//! that read in larger buffers, the first whole frame (checked end to end) inside a syscall is
//! taken instead.

/// Frame types (AMQP 0-9-1 §4.2.3; 8 is RabbitMQ's and the spec's heartbeat value).
pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// The protocol header a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Above any frame_max brokers negotiate (RabbitMQ's default is 128 KiB): a larger size is not
/// a frame header.
pub const MAX_FRAME: u32 = 4 << 20;
/// RabbitMQ's default channel_max is 2047; the protocol allows 65535, clients rarely go far.
pub const MAX_CHANNEL: u16 = 4095;

/// A frame cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    /// Payload size from the header.
    pub size: u32,
    /// The payload's first bytes: up to the keep limit, fewer if they were not captured.
    pub payload: Vec<u8>,
    /// Whether `payload` holds every byte of the payload.
    pub whole: bool,
    /// When the syscall that carried the frame's first byte returned.
    pub start_ns: u64,
    /// When the syscall that completed the frame returned.
    pub end_ns: u64,
}

/// Whether 7 bytes can be a frame header.
pub fn plausible_header(h: &[u8]) -> Option<(u8, u16, u32)> {
    let h: &[u8; 7] = h.get(..7)?.try_into().ok()?;
    let kind = h[0];
    let channel = u16::from_be_bytes([h[1], h[2]]);
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
    let ok = match kind {
        // A method payload has at least its class and method ids.
        METHOD => (4..=MAX_FRAME).contains(&size) && channel <= MAX_CHANNEL,
        // class id, weight, body size, property flags.
        HEADER => (14..=MAX_FRAME).contains(&size) && channel <= MAX_CHANNEL,
        BODY => size <= MAX_FRAME && channel <= MAX_CHANNEL,
        HEARTBEAT => channel == 0 && size == 0,
        _ => false,
    };
    ok.then_some((kind, channel, size))
}

/// What the bytes at a position are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A whole frame of this many bytes: plausible header, known method or content class,
    /// 0xCE where the size puts it.
    Frame(usize),
    /// A plausible start whose end is past the bytes given.
    Start,
    No,
}

/// Checks for a frame at the start of `data`.
pub fn check(data: &[u8]) -> Check {
    let Some((kind, _, size)) = plausible_header(data) else {
        return Check::No;
    };
    let payload = &data[7..];
    if payload.len() >= 4 {
        let ids = [payload[0], payload[1], payload[2], payload[3]];
        let known = match kind {
            METHOD => super::method::method_name(
                u16::from_be_bytes([ids[0], ids[1]]),
                u16::from_be_bytes([ids[2], ids[3]]),
            )
            .is_some(),
            // Basic class (60), weight 0.
            HEADER => ids == [0, 60, 0, 0],
            _ => true,
        };
        if !known {
            return Check::No;
        }
    }
    let end = 7 + size as usize;
    match data.get(end) {
        Some(&FRAME_END) => Check::Frame(end + 1),
        Some(_) => Check::No,
        None => Check::Start,
    }
}

enum State {
    Header {
        buf: [u8; 7],
        have: usize,
    },
    Payload {
        frame: Frame,
        remaining: u32,
    },
    /// Payload done; the frame-end byte is next.
    End {
        frame: Frame,
    },
    Lost,
}

/// Why the stream was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Bytes that could not be a frame header.
    BadHeader,
    /// A frame-end byte other than 0xCE.
    BadFrameEnd,
    /// A header fell into bytes the capture did not keep.
    Uncaptured,
}

/// One direction's frame reader.
pub struct FrameReader {
    state: State,
    keep: usize,
    /// The current frame's header was taken at a syscall start after a loss: not trusted until
    /// its frame-end is checked.
    tentative: bool,
}

impl FrameReader {
    /// `lost`: start lost (the connection was picked up mid-stream) and look for a frame at the
    /// start of the next syscall.
    pub fn new(keep: usize, lost: bool) -> FrameReader {
        FrameReader {
            state: if lost {
                State::Lost
            } else {
                State::Header {
                    buf: [0; 7],
                    have: 0,
                }
            },
            keep,
            tentative: false,
        }
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Whether the last frame read was followed: no frame under way, or one whose header was
    /// confirmed.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Feeds one syscall: `data` captured, then `missing` bytes that were not. Frames completed
    /// are appended to `out`; a loss is returned (the rest of the syscall is then ignored).
    pub fn push(
        &mut self,
        data: &[u8],
        missing: u32,
        time_ns: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), Loss> {
        let mut data = data;
        if self.is_lost() {
            // py-amqp's syscalls start at frame boundaries (see the module docs): a plausible
            // header there is taken, to be confirmed by its frame-end. Clients that read in
            // larger buffers start anywhere: a whole, checked frame further in is taken.
            match check(data) {
                Check::Start | Check::Frame(_) => self.tentative = true,
                Check::No => {
                    let found = (1..data.len())
                        .find(|&i| matches!(check(&data[i..]), Check::Frame(_)))
                        .ok_or(Loss::BadHeader)?;
                    data = &data[found..];
                }
            }
            self.state = State::Header {
                buf: [0; 7],
                have: 0,
            };
        }
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return Err(Loss::BadHeader),
                State::Header { buf, have } => {
                    let take = (7 - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 7 {
                        let Some((kind, channel, size)) = plausible_header(buf) else {
                            self.state = State::Lost;
                            return Err(Loss::BadHeader);
                        };
                        let frame = Frame {
                            kind,
                            channel,
                            size,
                            payload: Vec::new(),
                            whole: true,
                            start_ns: time_ns,
                            end_ns: time_ns,
                        };
                        self.state = if size == 0 {
                            State::End { frame }
                        } else {
                            State::Payload {
                                frame,
                                remaining: size,
                            }
                        };
                    }
                }
                State::Payload { frame, remaining } => {
                    let take = (*remaining as usize).min(data.len());
                    let room = self.keep.saturating_sub(frame.payload.len()).min(take);
                    frame.payload.extend_from_slice(&data[..room]);
                    *remaining -= take as u32;
                    data = &data[take..];
                    if *remaining == 0 {
                        self.payload_done();
                    }
                }
                State::End { .. } => {
                    let end = data[0];
                    data = &data[1..];
                    if end != FRAME_END {
                        self.state = State::Lost;
                        self.tentative = false;
                        return Err(Loss::BadFrameEnd);
                    }
                    self.finish(time_ns, out);
                }
            }
        }
        if missing > 0 {
            self.skip(missing, time_ns, out)?;
        }
        Ok(())
    }

    fn payload_done(&mut self) {
        let old = std::mem::replace(&mut self.state, State::Lost);
        self.state = match old {
            State::Payload { frame, .. } => State::End { frame },
            other => other,
        };
    }

    /// Bytes the capture did not keep: inside a payload they are skipped; the frame-end byte
    /// may be among them (unchecked); anything past it would be a header.
    fn skip(&mut self, missing: u32, time_ns: u64, out: &mut Vec<Frame>) -> Result<(), Loss> {
        let room = match &mut self.state {
            State::Payload { frame, remaining } => {
                frame.whole = false;
                *remaining + 1
            }
            State::End { .. } => 1,
            _ => 0,
        };
        if missing > room {
            self.state = State::Lost;
            self.tentative = false;
            return Err(Loss::Uncaptured);
        }
        if let State::Payload { remaining, .. } = &mut self.state {
            *remaining -= missing.min(*remaining);
            if *remaining == 0 {
                self.payload_done();
            }
        }
        if missing == room {
            // The frame-end byte went by unseen.
            self.finish(time_ns, out);
        }
        Ok(())
    }

    fn finish(&mut self, time_ns: u64, out: &mut Vec<Frame>) {
        let old = std::mem::replace(
            &mut self.state,
            State::Header {
                buf: [0; 7],
                have: 0,
            },
        );
        if let State::End { mut frame } = old {
            frame.end_ns = time_ns;
            frame.whole &= frame.payload.len() == frame.size as usize;
            self.tentative = false;
            out.push(frame);
        }
    }

    /// Whether the frame under way was taken after a loss and is not yet confirmed.
    #[cfg(test)]
    pub fn tentative(&self) -> bool {
        self.tentative
    }
}

#[cfg(test)]
pub(crate) fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(FRAME_END);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_and_packed_into_syscalls() {
        let mut r = FrameReader::new(1024, false);
        let mut out = Vec::new();
        let stream = [
            frame_bytes(METHOD, 1, b"\x00\x3c\x00\x28abc"),
            frame_bytes(HEARTBEAT, 0, b""),
            frame_bytes(BODY, 1, b"hello"),
        ]
        .concat();
        // py-amqp's receive pattern: header, payload, frame-end.
        assert_eq!(r.push(&stream[..7], 0, 1, &mut out), Ok(()));
        assert_eq!(r.push(&stream[7..14], 0, 2, &mut out), Ok(()));
        assert!(out.is_empty());
        assert_eq!(r.push(&stream[14..15], 0, 3, &mut out), Ok(()));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, out[0].channel, out[0].size), (METHOD, 1, 7));
        assert_eq!((out[0].start_ns, out[0].end_ns), (1, 3));
        // The rest in one syscall.
        assert_eq!(r.push(&stream[15..], 0, 4, &mut out), Ok(()));
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].kind, HEARTBEAT);
        assert_eq!(out[2].payload, b"hello");
        assert!(out[2].whole && r.at_boundary());
    }

    #[test]
    fn uncaptured_payload_is_skipped_by_size() {
        let mut r = FrameReader::new(4, false);
        let mut out = Vec::new();
        let big = frame_bytes(BODY, 1, &[7u8; 100]);
        // 20 bytes captured, the other 88 not: the payload's tail and the frame-end.
        assert_eq!(r.push(&big[..20], 88, 5, &mut out), Ok(()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, vec![7u8; 4]);
        assert!(!out[0].whole);
        assert!(r.at_boundary());
        // A gap past the frame-end swallows the next header.
        let two = [frame_bytes(BODY, 1, &[1; 10]), frame_bytes(BODY, 1, b"x")].concat();
        assert_eq!(
            r.push(&two[..5], (two.len() - 5) as u32, 6, &mut out),
            Err(Loss::Uncaptured)
        );
        assert!(r.is_lost());
    }

    #[test]
    fn bad_frame_end_loses_the_stream_and_a_syscall_start_finds_it_again() {
        let mut r = FrameReader::new(64, false);
        let mut out = Vec::new();
        let mut bad = frame_bytes(METHOD, 1, b"\x00\x3c\x00\x50x");
        *bad.last_mut().unwrap() = 0;
        assert_eq!(r.push(&bad, 0, 1, &mut out), Err(Loss::BadFrameEnd));
        assert!(r.is_lost());
        // Not a header: stays lost.
        assert_eq!(
            r.push(b"{\"json\": 1}", 0, 2, &mut out),
            Err(Loss::BadHeader)
        );
        let good = frame_bytes(METHOD, 1, b"\x00\x3c\x00\x50x");
        assert_eq!(r.push(&good[..7], 0, 3, &mut out), Ok(()));
        assert!(r.tentative());
        assert_eq!(r.push(&good[7..], 0, 4, &mut out), Ok(()));
        assert!(!r.tentative());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn header_plausibility() {
        assert!(plausible_header(&[1, 0, 1, 0, 0, 0, 13]).is_some());
        assert!(plausible_header(&[8, 0, 0, 0, 0, 0, 0]).is_some());
        assert!(plausible_header(&[8, 0, 1, 0, 0, 0, 0]).is_none());
        assert!(plausible_header(&[4, 0, 1, 0, 0, 0, 0]).is_none());
        assert!(plausible_header(&[1, 0, 1, 0, 0, 0, 2]).is_none());
        assert!(plausible_header(&[3, 0, 1, 0xff, 0, 0, 0]).is_none());
        assert!(plausible_header(b"GET / H").is_none());
        assert!(plausible_header(&[1, 0, 1]).is_none());
    }
}
