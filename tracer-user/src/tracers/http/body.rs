//! Message bodies, skipped by length: only chunk-size lines and trailers must be seen, so a body
//! (or a chunk's data) may lie in an uncaptured stretch of a syscall.

use super::head::BodyKind;

/// A chunk-size line or trailer line longer than this is taken for garbage.
const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunked {
    /// In a chunk-size line: the size so far, and whether an extension (or whitespace) began.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        len: usize,
    },
    Data(u64),
    /// The CR LF after a chunk's data.
    DataEnd {
        cr: bool,
    },
    /// Trailer lines after the last chunk, until an empty one.
    Trailer {
        len: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// The framing was lost.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Lost;

impl Body {
    /// The reader of a body of that kind; None when there is none to read.
    pub fn new(kind: BodyKind) -> Option<Body> {
        match kind {
            BodyKind::None | BodyKind::Tunnel | BodyKind::Length(0) => None,
            BodyKind::Length(n) => Some(Body::Length(n)),
            BodyKind::Chunked => Some(Body::Chunked(Chunked::Size {
                size: 0,
                digits: 0,
                ext: false,
                len: 0,
            })),
            BodyKind::UntilClose => Some(Body::UntilClose),
        }
    }

    pub fn until_close(&self) -> bool {
        matches!(self, Body::UntilClose)
    }

    /// Reads body bytes from `data`: how many belong to the body, and whether it ended there.
    pub fn push(&mut self, data: &[u8]) -> Result<(usize, bool), Lost> {
        match self {
            Body::Length(left) => {
                let take = (*left).min(data.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            Body::UntilClose => Ok((data.len(), false)),
            Body::Chunked(c) => {
                let mut i = 0;
                while i < data.len() {
                    let (used, done) = c.step(&data[i..])?;
                    i += used;
                    if done {
                        return Ok((i, true));
                    }
                }
                Ok((i, false))
            }
        }
    }

    /// Skips `n` bytes that were not captured; whether the body ended with them.
    pub fn skip(&mut self, n: u64) -> Result<bool, Lost> {
        match self {
            Body::Length(left) if *left >= n => {
                *left -= n;
                Ok(*left == 0)
            }
            Body::UntilClose => Ok(false),
            Body::Chunked(Chunked::Data(left)) if *left >= n => {
                *left -= n;
                if *left == 0 {
                    *self = Body::Chunked(Chunked::DataEnd { cr: false });
                }
                Ok(false)
            }
            _ if n == 0 => Ok(false),
            _ => Err(Lost),
        }
    }
}

impl Chunked {
    /// One step of the chunked decoder: bytes used, and whether the body ended.
    fn step(&mut self, data: &[u8]) -> Result<(usize, bool), Lost> {
        match self {
            Chunked::Size {
                size,
                digits,
                ext,
                len,
            } => {
                let mut i = 0;
                while let Some(&c) = data.get(i) {
                    i += 1;
                    *len += 1;
                    if *len > MAX_LINE {
                        return Err(Lost);
                    }
                    if c == b'\n' {
                        if *digits == 0 {
                            return Err(Lost);
                        }
                        *self = if *size == 0 {
                            Chunked::Trailer { len: 0 }
                        } else {
                            Chunked::Data(*size)
                        };
                        return Ok((i, false));
                    }
                    if *ext || c == b'\r' {
                        // Extensions (and the CR) are skipped: only the size frames.
                        *ext = true;
                        continue;
                    }
                    match (c as char).to_digit(16) {
                        Some(d) if *digits < 15 => {
                            *size = *size << 4 | u64::from(d);
                            *digits += 1;
                        }
                        None if (c == b';' || c == b' ' || c == b'\t') && *digits > 0 => {
                            *ext = true
                        }
                        _ => return Err(Lost),
                    }
                }
                Ok((i, false))
            }
            Chunked::Data(left) => {
                let take = (*left).min(data.len() as u64);
                *left -= take;
                if *left == 0 {
                    *self = Chunked::DataEnd { cr: false };
                }
                Ok((take as usize, false))
            }
            Chunked::DataEnd { cr } => match (data[0], *cr) {
                (b'\r', false) => {
                    *cr = true;
                    Ok((1, false))
                }
                (b'\n', _) => {
                    *self = Chunked::Size {
                        size: 0,
                        digits: 0,
                        ext: false,
                        len: 0,
                    };
                    Ok((1, false))
                }
                _ => Err(Lost),
            },
            Chunked::Trailer { len } => {
                let mut i = 0;
                while let Some(&c) = data.get(i) {
                    i += 1;
                    if c == b'\n' {
                        if *len == 0 {
                            return Ok((i, true));
                        }
                        *len = 0;
                    } else if c != b'\r' || *len > 0 {
                        *len += 1;
                        if *len > MAX_LINE {
                            return Err(Lost);
                        }
                    }
                }
                Ok((i, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked() -> Body {
        Body::new(BodyKind::Chunked).expect("a body")
    }

    #[test]
    fn lengths_and_until_close() {
        let mut b = Body::new(BodyKind::Length(10)).expect("a body");
        assert_eq!(b.push(b"abcd"), Ok((4, false)));
        assert_eq!(b.skip(5), Ok(false));
        assert_eq!(b.push(b"xyz"), Ok((1, true)));
        let mut b = Body::new(BodyKind::Length(3)).expect("a body");
        assert_eq!(b.skip(4), Err(Lost));
        let mut b = Body::new(BodyKind::UntilClose).expect("a body");
        assert_eq!(b.push(b"abc"), Ok((3, false)));
        assert_eq!(b.skip(1 << 40), Ok(false));
        assert!(Body::new(BodyKind::Length(0)).is_none());
    }

    #[test]
    fn chunked_bodies_in_pieces_with_extensions_and_trailers() {
        let stream =
            b"5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        // Whole, and byte by byte.
        let mut b = chunked();
        assert_eq!(b.push(stream), Ok((stream.len() - 4, true)));
        let mut b = chunked();
        for (i, c) in stream.iter().enumerate() {
            let (used, done) = b.push(std::slice::from_ref(c)).expect("parses");
            assert_eq!(used, 1);
            if done {
                assert_eq!(i, stream.len() - 5);
                break;
            }
        }
        let mut b = chunked();
        assert_eq!(b.push(b"0\n\n"), Ok((3, true)));
    }

    #[test]
    fn uncaptured_chunk_data_is_skipped_but_not_a_size_line() {
        let mut b = chunked();
        assert_eq!(b.push(b"10000\r\nab"), Ok((9, false)));
        assert_eq!(b.skip(0x10000 - 2), Ok(false));
        assert_eq!(b.push(b"\r\n0\r\n\r\n"), Ok((7, true)));
        let mut b = chunked();
        assert_eq!(b.push(b"2\r\nab"), Ok((5, false)));
        assert_eq!(b.skip(3), Err(Lost));
    }

    #[test]
    fn garbage_loses_the_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"12345678901234567\r\n",
        ] {
            let mut b = chunked();
            assert_eq!(b.push(bad), Err(Lost), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut b = chunked();
        assert_eq!(b.push(&[b'1'; MAX_LINE + 1][..]).map(|_| ()), Err(Lost));
    }
}
