//! The uwsgi protocol's request packet (what nginx's `uwsgi_pass` and Apache's
//! `mod_proxy_uwsgi` send): a 4-byte header — modifier1, the vars' size as 16-bit little-endian,
//! modifier2 — then the vars, each a 16-bit LE key length, the key, a 16-bit LE value length, the
//! value; then CONTENT_LENGTH bytes of body. The response is plain HTTP written by the
//! application, so it is read like any HTTP response.

use super::{
    MAX_HOST, OTHER_METHOD, head::BodyKind, head::RequestHead, head::is_tchar, known_method,
    target_path, text,
};

/// Request modifiers (modifier1) of uWSGI's languages: 0 WSGI, 5 PSGI, 6 Lua, 7 Rack, 9 CGI,
/// 14 PHP, 30 WSGI with SCRIPT_NAME stripped. Others are management or cluster packets.
pub(super) const REQUEST_MODIFIERS: [u8; 7] = [0, 5, 6, 7, 9, 14, 30];

/// Whether a 4-byte header starts a request packet, and the vars' size.
pub(super) fn header(h: &[u8]) -> Option<usize> {
    match h {
        [m1, lo, hi, 0, ..] if REQUEST_MODIFIERS.contains(m1) => {
            let size = usize::from(u16::from_le_bytes([*lo, *hi]));
            // The smallest useful packet holds REQUEST_METHOD and a value.
            (size >= 4 + 14).then_some(size)
        }
        _ => None,
    }
}

/// A key's bytes: CGI variable names (uWSGI takes any printable name nginx passes).
fn key_ok(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= 256 && k.iter().all(|&c| c.is_ascii_graphic())
}

/// Walks the vars in `b`: calls `f(key, value)` for each complete one. Returns how many bytes
/// they took, or None when a key is not a plausible name or a length overruns `size`.
pub(super) fn walk_vars<'a>(
    b: &'a [u8],
    size: usize,
    mut f: impl FnMut(&'a [u8], &'a [u8]),
) -> Option<usize> {
    let mut at = 0;
    while at + 2 <= b.len() {
        let klen = usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
        if klen == 0 || at + 2 + klen + 2 > size {
            return None;
        }
        let Some(key) = b.get(at + 2..at + 2 + klen) else {
            return Some(at);
        };
        if !key_ok(key) {
            return None;
        }
        let v = at + 2 + klen;
        let Some(vl) = b.get(v..v + 2) else {
            return Some(at);
        };
        let vlen = usize::from(u16::from_le_bytes([vl[0], vl[1]]));
        if v + 2 + vlen > size {
            return None;
        }
        let Some(value) = b.get(v + 2..v + 2 + vlen) else {
            return Some(at);
        };
        f(key, value);
        at = v + 2 + vlen;
    }
    Some(at)
}

/// The request the vars describe; None when they do not describe one.
pub(super) fn parse_vars(vars: &[u8]) -> Option<RequestHead> {
    let (mut method, mut uri, mut script, mut path_info) = (None, None, None, None);
    let (mut length, mut host) = (None, None);
    let used = walk_vars(vars, vars.len(), |k, v| match k {
        b"REQUEST_METHOD" => method = Some(v),
        b"REQUEST_URI" => uri = Some(v),
        b"SCRIPT_NAME" => script = Some(v),
        b"PATH_INFO" => path_info = Some(v),
        b"CONTENT_LENGTH" => length = Some(v),
        b"HTTP_HOST" => host = Some(v),
        _ => {}
    })?;
    if used != vars.len() {
        return None;
    }
    let method =
        method.filter(|m| !m.is_empty() && m.len() <= 32 && m.iter().all(|&c| is_tchar(c)))?;
    let path = match uri {
        Some(u) if !u.is_empty() => target_path(u),
        _ => {
            let mut p = script.unwrap_or_default().to_vec();
            p.extend_from_slice(path_info.unwrap_or_default());
            if p.is_empty() {
                p.push(b'/');
            }
            target_path(&p)
        }
    };
    let length = match length {
        None | Some(b"") => 0,
        Some(l) => {
            if l.len() > 19 || !l.iter().all(u8::is_ascii_digit) {
                return None;
            }
            l.iter().try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })?
        }
    };
    Some(RequestHead {
        method: known_method(method).unwrap_or(OTHER_METHOD),
        path,
        host: host.map(|h| text(h, MAX_HOST)),
        body: if length > 0 {
            BodyKind::Length(length)
        } else {
            BodyKind::None
        },
    })
}

/// A request packet being gathered.
#[derive(Default)]
pub(super) struct PacketBuf {
    buf: Vec<u8>,
    size: Option<usize>,
    first_ns: Option<u64>,
}

pub(super) enum Push {
    Complete { consumed: usize, head: RequestHead },
    Partial,
    Bad,
}

impl PacketBuf {
    pub fn first_ns(&self) -> Option<u64> {
        self.first_ns
    }

    /// Bytes of the packet (header included), once complete.
    pub fn wire(&self) -> u64 {
        self.buf.len() as u64
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.size = None;
        self.first_ns = None;
    }

    pub fn push(&mut self, data: &[u8], time_ns: u64) -> Push {
        if !data.is_empty() && self.first_ns.is_none() {
            self.first_ns = Some(time_ns);
        }
        let mut used = 0;
        if self.size.is_none() {
            let take = (4 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            used = take;
            if self.buf.len() < 4 {
                return Push::Partial;
            }
            match header(&self.buf) {
                Some(size) => self.size = Some(size),
                None => return Push::Bad,
            }
        }
        let size = self.size.unwrap_or_default();
        let take = (4 + size - self.buf.len()).min(data.len() - used);
        self.buf.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.buf.len() < 4 + size {
            return Push::Partial;
        }
        match parse_vars(&self.buf[4..]) {
            Some(head) => Push::Complete {
                consumed: used,
                head,
            },
            None => Push::Bad,
        }
    }
}

#[cfg(test)]
pub(super) fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in vars {
        body.extend_from_slice(&(k.len() as u16).to_le_bytes());
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    let mut p = vec![0];
    p.extend_from_slice(&(body.len() as u16).to_le_bytes());
    p.push(0);
    p.extend(body);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_packet_in_pieces() {
        let p = packet(&[
            ("QUERY_STRING", "a=1"),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "12"),
            ("REQUEST_URI", "/items?a=1"),
            ("PATH_INFO", "/items"),
            ("HTTP_HOST", "localhost:8080"),
        ]);
        let mut b = PacketBuf::default();
        assert!(matches!(b.push(&p[..2], 1), Push::Partial));
        assert!(matches!(b.push(&p[2..30], 2), Push::Partial));
        let mut data = p[30..].to_vec();
        data.extend_from_slice(b"body");
        let Push::Complete { consumed, head } = b.push(&data, 3) else {
            panic!("complete")
        };
        assert_eq!(consumed, p.len() - 30);
        assert_eq!(b.wire(), p.len() as u64);
        assert_eq!(b.first_ns(), Some(1));
        assert_eq!(
            head,
            RequestHead {
                method: "POST",
                path: "/items".into(),
                host: Some("localhost:8080".into()),
                body: BodyKind::Length(12)
            }
        );
    }

    #[test]
    fn path_from_script_name_and_path_info() {
        let p = packet(&[
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/compute"),
            ("PATH_INFO", "/v2.1/servers"),
            ("CONTENT_LENGTH", ""),
        ]);
        let head = parse_vars(&p[4..]).expect("parses");
        assert_eq!(
            (head.path.as_str(), head.body),
            ("/compute/v2.1/servers", BodyKind::None)
        );
    }

    #[test]
    fn bad_packets() {
        assert!(
            header(&[1, 40, 0, 0]).is_none(),
            "modifier1 1 is not a request"
        );
        assert!(header(&[0, 40, 0, 1]).is_none());
        assert!(header(&[0, 3, 0, 0]).is_none());
        let p = packet(&[("PATH_INFO", "/")]);
        assert!(parse_vars(&p[4..]).is_none(), "no method");
        let mut p = packet(&[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "x")]);
        assert!(parse_vars(&p[4..]).is_none());
        p[6] = b'\n';
        assert!(walk_vars(&p[4..], p.len() - 4, |_, _| {}).is_none());
    }
}
