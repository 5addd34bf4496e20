//! HTTP/1.x message heads: gathered across syscalls until their empty line, then parsed for what
//! frames the body (RFC 9112 §6) and what the exchange reports.

use super::{MAX_HOST, OTHER_METHOD, known_method, target_path, text};

/// A head longer than this is not followed (servers refuse much less: 8 KiB is common).
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Responses only: until the connection closes.
    UntilClose,
    /// A 101 or a 2xx to CONNECT: what follows is another protocol.
    Tunnel,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct RequestHead {
    pub method: &'static str,
    pub path: String,
    pub host: Option<String>,
    pub body: BodyKind,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct ResponseHead {
    pub status: u16,
    pub body: BodyKind,
}

pub(super) enum Push {
    /// The head is complete after `consumed` bytes of the data.
    Complete { consumed: usize },
    /// All the data was taken; the head goes on.
    Partial,
    /// Longer than [`MAX_HEAD`].
    TooLong,
}

/// A head being gathered. Empty lines before it are skipped (RFC 9112 §2.2 lets servers ignore
/// a CRLF sent after a body) and counted as its bytes.
#[derive(Default)]
pub(super) struct HeadBuf {
    buf: Vec<u8>,
    line_start: usize,
    started: bool,
    skipped: u64,
    first_ns: Option<u64>,
}

impl HeadBuf {
    /// When the syscall carrying its first byte returned.
    pub fn first_ns(&self) -> Option<u64> {
        self.first_ns
    }

    /// The head's bytes (valid once complete).
    pub fn head(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes on the wire so far.
    pub fn wire(&self) -> u64 {
        self.buf.len() as u64 + self.skipped
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.line_start = 0;
        self.started = false;
        self.skipped = 0;
        self.first_ns = None;
    }

    pub fn push(&mut self, data: &[u8], time_ns: u64) -> Push {
        if !data.is_empty() && self.first_ns.is_none() {
            self.first_ns = Some(time_ns);
        }
        let mut i = 0;
        while i < data.len() {
            let Some(off) = data[i..].iter().position(|&c| c == b'\n') else {
                if self.buf.len() + data.len() - i > MAX_HEAD {
                    return Push::TooLong;
                }
                self.buf.extend_from_slice(&data[i..]);
                return Push::Partial;
            };
            let nl = i + off;
            let part = &data[i..nl];
            let pending = &self.buf[self.line_start..];
            let len = pending.len() + part.len();
            let empty = len == 0 || (len == 1 && (part == b"\r" || pending == b"\r"));
            if self.buf.len() + part.len() + 1 > MAX_HEAD {
                return Push::TooLong;
            }
            if empty && !self.started {
                self.skipped += (len + 1) as u64;
                self.buf.clear();
                self.line_start = 0;
            } else {
                self.buf.extend_from_slice(&data[i..=nl]);
                self.line_start = self.buf.len();
                self.started = true;
                if empty {
                    return Push::Complete { consumed: nl + 1 };
                }
            }
            i = nl + 1;
        }
        Push::Partial
    }
}

/// The lines of a head, without their CR LF; the final empty line excluded.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// tchar of RFC 9110 §5.6.2.
pub(super) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The fields that frame a body, and the host.
#[derive(Default)]
struct Fields<'a> {
    length: Option<u64>,
    /// The last transfer coding, when Transfer-Encoding was given.
    coding: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
}

fn fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Fields<'a>> {
    let mut f = Fields::default();
    for line in lines {
        // A line without a colon (an obsolete folded continuation) frames nothing.
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_u64(value)?;
            // Two different lengths make the message unframeable (RFC 9112 §6.3).
            if f.length.is_some_and(|m| m != n) {
                return None;
            }
            f.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&c| c == b',').next().map(trim);
            f.coding = last.filter(|c| !c.is_empty()).or(f.coding);
        } else if name.eq_ignore_ascii_case(b"host") {
            f.host = Some(value);
        }
    }
    Some(f)
}

/// Parses a complete request head; None when it is not one.
pub(super) fn parse_request(head: &[u8]) -> Option<RequestHead> {
    let mut lines = lines(head);
    let line = lines.next()?;
    let mut parts = line.split(|&c| c == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || method.len() > 32
        || !method.iter().all(|&c| is_tchar(c))
        || target.is_empty()
        || target.iter().any(|&c| c <= b' ' || c == 0x7f)
        || !matches!(version, b"HTTP/1.1" | b"HTTP/1.0")
    {
        return None;
    }
    let f = fields(lines)?;
    let body = match (f.coding, f.length) {
        (Some(c), _) if c.eq_ignore_ascii_case(b"chunked") => BodyKind::Chunked,
        // A request whose length cannot be known is refused by servers (RFC 9112 §6.3).
        (Some(_), _) => return None,
        (None, Some(n)) if n > 0 => BodyKind::Length(n),
        _ => BodyKind::None,
    };
    Some(RequestHead {
        method: known_method(method).unwrap_or(OTHER_METHOD),
        path: target_path(target),
        host: f.host.map(|h| text(h, MAX_HOST)),
        body,
    })
}

/// Parses a complete response head to a request made with `method` (None: not known).
pub(super) fn parse_response(head: &[u8], method: Option<&str>) -> Option<ResponseHead> {
    let mut lines = lines(head);
    let line = lines.next()?;
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&c| c != b' ') {
        return None;
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return None;
    }
    let f = fields(lines)?;
    let body = if status == 101 || (method == Some("CONNECT") && (200..300).contains(&status)) {
        BodyKind::Tunnel
    } else if method == Some("HEAD") || status < 200 || status == 204 || status == 304 {
        BodyKind::None
    } else {
        match (f.coding, f.length) {
            (Some(c), _) if c.eq_ignore_ascii_case(b"chunked") => BodyKind::Chunked,
            (Some(_), _) => BodyKind::UntilClose,
            (None, Some(0)) => BodyKind::None,
            (None, Some(n)) => BodyKind::Length(n),
            (None, None) => BodyKind::UntilClose,
        }
    };
    Some(ResponseHead { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(hb: &mut HeadBuf, data: &[u8]) -> Option<usize> {
        match hb.push(data, 7) {
            Push::Complete { consumed } => Some(consumed),
            _ => None,
        }
    }

    #[test]
    fn gathers_heads_across_pushes_and_skips_leading_empty_lines() {
        let mut hb = HeadBuf::default();
        assert!(complete(&mut hb, b"\r\n\r\nGET / HTTP/1.1\r").is_none());
        assert!(complete(&mut hb, b"\nHost: a\r\n\r").is_none());
        assert_eq!(complete(&mut hb, b"\nBODY"), Some(1));
        assert_eq!(hb.head(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(hb.wire(), 4 + 27);
        assert_eq!(hb.first_ns(), Some(7));
        hb.reset();
        // Bare LF line ends are accepted.
        assert_eq!(complete(&mut hb, b"GET / HTTP/1.0\n\nx"), Some(16));
        hb.reset();
        assert!(matches!(hb.push(&[b'a'; MAX_HEAD + 1], 1), Push::TooLong));
    }

    #[test]
    fn request_heads() {
        let r =
            parse_request(b"POST /v2/items?x=1 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            r,
            Some(RequestHead {
                method: "POST",
                path: "/v2/items".into(),
                host: Some("api".into()),
                body: BodyKind::Length(5)
            })
        );
        let r = parse_request(
            b"PUT /a HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(r.map(|r| r.body), Some(BodyKind::Chunked));
        let r = parse_request(b"BREW /pot HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            r.map(|r| (r.method, r.body)),
            Some(("_OTHER", BodyKind::None))
        );
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_heads_and_their_bodies() {
        let body = |h: &[u8], m| parse_response(h, m).map(|r| (r.status, r.body));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(body(ok, Some("GET")), Some((200, BodyKind::Length(12))));
        assert_eq!(body(ok, Some("HEAD")), Some((200, BodyKind::None)));
        assert_eq!(
            body(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                None
            ),
            Some((200, BodyKind::Chunked))
        );
        assert_eq!(
            body(b"HTTP/1.0 500 Oops\r\n\r\n", None),
            Some((500, BodyKind::UntilClose))
        );
        assert_eq!(
            body(b"HTTP/1.1 204\r\nContent-Length: 9\r\n\r\n", None),
            Some((204, BodyKind::None))
        );
        assert_eq!(
            body(b"HTTP/1.1 304 Not Modified\r\n\r\n", None),
            Some((304, BodyKind::None))
        );
        assert_eq!(
            body(b"HTTP/1.1 100 Continue\r\n\r\n", None),
            Some((100, BodyKind::None))
        );
        assert_eq!(
            body(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", None),
            Some((101, BodyKind::Tunnel))
        );
        assert_eq!(
            body(
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                Some("CONNECT")
            ),
            Some((200, BodyKind::Tunnel))
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None),
            Some((200, BodyKind::None))
        );
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
        ] {
            assert_eq!(parse_response(bad, None), None);
        }
    }
}
