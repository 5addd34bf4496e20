//! Cutting one direction of a connection's byte stream into protocol messages.
//!
//! The kernel side captures the first bytes of each syscall (up to the capture size); the rest is
//! known only by its length. A message body that falls in an uncaptured stretch is skipped by
//! length; a header that does is lost, and the stream stays lost until the protocol resyncs it at
//! the next request (clients send requests whole, in one syscall, at a message boundary).

/// How messages are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// MySQL packets: 3-byte little-endian length, 1-byte sequence id, payload.
    Mysql,
    /// PostgreSQL typed messages: 1-byte type, 4-byte big-endian length (itself included).
    PgTyped,
    /// PostgreSQL startup-phase client message: 4-byte length, then a protocol code.
    PgUntyped,
    /// A single raw byte (PostgreSQL's answer to an SSL or GSS request).
    RawByte,
}

/// A message cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// MySQL: the sequence id. PostgreSQL: the type byte (0 for an untyped message, the byte
    /// itself for a raw byte).
    pub tag: u8,
    /// Payload length (without the header).
    pub len: u32,
    /// The first bytes of the payload (up to the keep limit; fewer if they were not captured).
    pub prefix: Vec<u8>,
    /// When the syscall that completed the message returned.
    pub time_ns: u64,
    /// Bytes of the message on the wire (header included).
    pub wire: u32,
}

enum State {
    Header {
        buf: [u8; 5],
        have: usize,
    },
    Body {
        tag: u8,
        len: u32,
        prefix: Vec<u8>,
        remaining: u32,
    },
    Lost,
}

/// One direction's framer.
pub struct Framer {
    framing: Framing,
    state: State,
    keep: usize,
}

impl Framer {
    pub fn new(framing: Framing, keep: usize) -> Framer {
        Framer {
            framing,
            state: State::Header {
                buf: [0; 5],
                have: 0,
            },
            keep,
        }
    }

    /// The framing of the next message (a protocol changes it: startup → typed, SSL answer).
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Whether the stream is at a message boundary.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Starts again at a message boundary.
    pub fn resync(&mut self) {
        self.state = State::Header {
            buf: [0; 5],
            have: 0,
        };
    }

    fn header_len(&self) -> usize {
        match self.framing {
            Framing::Mysql => 4,
            Framing::PgTyped => 5,
            Framing::PgUntyped => 4,
            Framing::RawByte => 1,
        }
    }

    /// Feeds a syscall's bytes: `data` captured, then `missing` bytes not captured. Returns false
    /// if the stream got lost.
    pub fn push(
        &mut self,
        data: &[u8],
        missing: u32,
        time_ns: u64,
        out: &mut Vec<Message>,
    ) -> bool {
        let mut data = data;
        while !data.is_empty() {
            let need = self.header_len();
            match &mut self.state {
                State::Lost => return false,
                State::Header { buf, have } => {
                    let take = (need - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == need {
                        let buf = *buf;
                        match self.parse_header(&buf) {
                            Some((tag, len)) => {
                                self.state = State::Body {
                                    tag,
                                    len,
                                    prefix: Vec::new(),
                                    remaining: len,
                                };
                            }
                            None => {
                                self.state = State::Lost;
                                return false;
                            }
                        }
                    }
                }
                State::Body {
                    prefix, remaining, ..
                } => {
                    let take = (*remaining as usize).min(data.len());
                    let room = self.keep.saturating_sub(prefix.len()).min(take);
                    prefix.extend_from_slice(&data[..room]);
                    *remaining -= take as u32;
                    data = &data[take..];
                }
            }
            self.finish_if_complete(time_ns, out);
        }
        // Bodies at the end with no bytes left to read (length 0) complete now too.
        self.finish_if_complete(time_ns, out);
        if missing > 0 {
            match &mut self.state {
                State::Body { remaining, .. } if *remaining >= missing => {
                    *remaining -= missing;
                    self.finish_if_complete(time_ns, out);
                }
                _ => {
                    self.state = State::Lost;
                    return false;
                }
            }
        }
        true
    }

    fn finish_if_complete(&mut self, time_ns: u64, out: &mut Vec<Message>) {
        if let State::Body { remaining: 0, .. } = &self.state {
            let State::Body {
                tag, len, prefix, ..
            } = std::mem::replace(
                &mut self.state,
                State::Header {
                    buf: [0; 5],
                    have: 0,
                },
            )
            else {
                unreachable!("matched above")
            };
            let wire = len + self.header_len() as u32;
            out.push(Message {
                tag,
                len,
                prefix,
                time_ns,
                wire,
            });
            // The answer to an SSL request is one byte; what follows is typed again.
            if self.framing == Framing::RawByte {
                self.framing = Framing::PgTyped;
            }
        }
    }

    /// (tag, payload length) from a header, or None when it cannot be one.
    fn parse_header(&self, b: &[u8; 5]) -> Option<(u8, u32)> {
        match self.framing {
            Framing::Mysql => {
                let len = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
                Some((b[3], len))
            }
            Framing::PgTyped => {
                let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
                // Lengths include themselves; 1 GiB is PostgreSQL's limit.
                if !(4..=(1 << 30)).contains(&len) || !b[0].is_ascii_graphic() {
                    return None;
                }
                Some((b[0], len - 4))
            }
            Framing::PgUntyped => {
                let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if !(8..=10_000).contains(&len) {
                    return None;
                }
                Some((0, len - 4))
            }
            Framing::RawByte => Some((b[0], 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn cuts_packets_split_across_and_packed_into_syscalls() {
        let mut f = Framer::new(Framing::Mysql, 64);
        let mut out = Vec::new();
        let mut stream = mysql_packet(0, b"\x03SELECT 1");
        stream.extend(mysql_packet(1, b"\x00\x00\x00"));
        // Split in the middle of the first header, then the rest in one syscall.
        assert!(f.push(&stream[..2], 0, 1, &mut out));
        assert!(out.is_empty());
        assert!(f.push(&stream[2..], 0, 2, &mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].prefix, b"\x03SELECT 1");
        assert_eq!(
            (out[0].tag, out[0].len, out[0].wire, out[0].time_ns),
            (0, 9, 13, 2)
        );
        assert_eq!(out[1].tag, 1);
        assert!(f.at_boundary());
    }

    #[test]
    fn skips_uncaptured_bodies_by_length_and_gets_lost_in_uncaptured_headers() {
        let mut f = Framer::new(Framing::Mysql, 4);
        let mut out = Vec::new();
        let big = mysql_packet(2, &[7u8; 100]);
        // 10 bytes captured, 94 not: all inside the body.
        assert!(f.push(&big[..10], 94, 5, &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].prefix, vec![7u8; 4]);
        assert_eq!(out[0].len, 100);
        // A gap that swallows a header loses the stream.
        let two = [mysql_packet(0, b"ab"), mysql_packet(1, b"cd")].concat();
        assert!(!f.push(&two[..3], 9, 6, &mut Vec::new()));
        assert!(f.is_lost());
        f.resync();
        assert!(f.at_boundary());
    }

    #[test]
    fn postgres_typed_untyped_and_raw() {
        let mut f = Framer::new(Framing::PgUntyped, 64);
        let mut out = Vec::new();
        let startup = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]; // SSLRequest
        assert!(f.push(&startup, 0, 1, &mut out));
        assert_eq!((out[0].tag, out[0].len), (0, 4));
        let mut f = Framer::new(Framing::RawByte, 64);
        assert!(f.push(b"NR\0\0\0\x08\0\0\0\0", 0, 2, &mut out));
        assert_eq!(out[1].tag, b'N');
        assert_eq!((out[2].tag, out[2].len), (b'R', 4));
        let mut f = Framer::new(Framing::PgTyped, 64);
        assert!(!f.push(b"\x01\xff\xff\xff\xff", 0, 3, &mut out));
    }
}
