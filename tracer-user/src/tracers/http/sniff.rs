//! Telling HTTP/1.x and uwsgi connections by a chunk's first bytes.
//!
//! Only chunks that would carry requests are looked at (received on a socket the process
//! accepted, sent on one it connected), and only a request's start is recognized: a known method,
//! one space, a request target (origin-form `/…`, absolute-form `http://…`, `*` for OPTIONS, an
//! authority for CONNECT), one space, `HTTP/1.0` or `HTTP/1.1`, the line's end; or a uwsgi
//! header with a request modifier whose vars parse and name a method. A connection first seen in
//! the middle of an exchange (a body, a chunk of a pipelined batch) is thus picked up at its next
//! request, and binary protocols (TLS, MySQL, PostgreSQL, memcached, Redis) are not taken for
//! either: their first bytes never pass both checks.

use super::{Side, known_method, uwsgi};

/// What a chunk's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// It starts an HTTP/1.x request.
    Http,
    /// It starts a uwsgi request packet (server side only).
    Uwsgi,
    /// So far like a request's start, but too short to tell: look at the next chunk.
    Partial,
    /// It does not start a request (the connection may still carry HTTP: a connection seen
    /// mid-exchange is recognized at its next request).
    No,
}

/// Whether `data`, sent (`sent`) or received on a socket the process accepted (`accepted`) or
/// connected, starts an HTTP/1.x request or a uwsgi request packet.
pub fn sniff(data: &[u8], sent: bool, accepted: bool) -> Sniffed {
    if !Side::from_accepted(accepted).carries_requests(sent) {
        return Sniffed::No;
    }
    match data.first() {
        None => Sniffed::Partial,
        Some(c) if c.is_ascii_uppercase() => http_request(data),
        Some(_) if accepted => uwsgi_request(data),
        Some(_) => Sniffed::No,
    }
}

/// A request line longer than the capture is taken for one when this much of it looked right.
const LONG_LINE: usize = 1024;

/// Whether `data` starts with an HTTP/1.x request line.
pub(super) fn http_request(data: &[u8]) -> Sniffed {
    let longest = "OPTIONS".len();
    let Some(sp) = data.iter().take(longest + 1).position(|&c| c == b' ') else {
        let prefix = data.len() <= longest
            && super::METHODS
                .iter()
                .any(|m| m.as_bytes().starts_with(data));
        return if prefix {
            Sniffed::Partial
        } else {
            Sniffed::No
        };
    };
    let Some(method) = known_method(&data[..sp]) else {
        return Sniffed::No;
    };
    let rest = &data[sp + 1..];
    let Some(&first) = rest.first() else {
        return Sniffed::Partial;
    };
    let start_ok = match first {
        b'/' => true,
        b'*' => method == "OPTIONS",
        b'h' | b'H' => {
            let n = rest.len().min(8);
            b"http://".starts_with(&rest[..n.min(7)].to_ascii_lowercase())
                || b"https://".starts_with(&rest[..n].to_ascii_lowercase())
        }
        c => method == "CONNECT" && (c.is_ascii_alphanumeric() || c == b'['),
    };
    if !start_ok {
        return Sniffed::No;
    }
    let Some(end) = rest.iter().position(|&c| c <= b' ' || c == 0x7f) else {
        return if data.len() >= LONG_LINE {
            Sniffed::Http
        } else {
            Sniffed::Partial
        };
    };
    if rest[end] != b' ' {
        return Sniffed::No;
    }
    let after = &rest[end + 1..];
    let n = after.len().min(8);
    if !(b"HTTP/1.1".starts_with(&after[..n]) || b"HTTP/1.0".starts_with(&after[..n])) {
        return Sniffed::No;
    }
    match after.get(8..) {
        None | Some([]) | Some([b'\r']) => Sniffed::Partial,
        Some([b'\r', b'\n', ..] | [b'\n', ..]) => Sniffed::Http,
        Some(_) => Sniffed::No,
    }
}

/// Whether `data` is at the start of a request, for picking a lost stream up again: a request
/// line, or the beginning of one as far as the chunk goes (method, space, target's start).
pub(super) fn resumes_http(data: &[u8]) -> bool {
    match http_request(data) {
        Sniffed::Http => true,
        Sniffed::Partial => data
            .iter()
            .position(|&c| c == b' ')
            .is_some_and(|sp| data.len() > sp + 1),
        _ => false,
    }
}

/// Whether `data` starts a uwsgi request packet.
pub(super) fn uwsgi_request(data: &[u8]) -> Sniffed {
    if data.len() < 4 {
        let plausible = match data {
            [m1, ..] if !uwsgi::REQUEST_MODIFIERS.contains(m1) => false,
            [_, _, _] | [_, _] | [_] => true,
            _ => false,
        };
        return if plausible {
            Sniffed::Partial
        } else {
            Sniffed::No
        };
    }
    let Some(size) = uwsgi::header(data) else {
        return Sniffed::No;
    };
    let vars = &data[4..data.len().min(4 + size)];
    if vars.len() == size {
        return match uwsgi::parse_vars(vars) {
            Some(_) => Sniffed::Uwsgi,
            None => Sniffed::No,
        };
    }
    let mut seen = 0;
    match uwsgi::walk_vars(vars, size, |_, _| seen += 1) {
        None => Sniffed::No,
        Some(_) if seen >= 2 => Sniffed::Uwsgi,
        Some(_) => Sniffed::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracers::http::uwsgi::packet;

    #[test]
    fn http_requests_on_either_side() {
        let get = b"GET /v2.1/servers?x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(sniff(get, false, true), Sniffed::Http);
        assert_eq!(sniff(get, true, false), Sniffed::Http);
        // The other direction is never a request.
        assert_eq!(sniff(get, true, true), Sniffed::No);
        assert_eq!(sniff(get, false, false), Sniffed::No);
        for ok in [
            &b"OPTIONS * HTTP/1.1\r\n"[..],
            b"CONNECT example.org:443 HTTP/1.1\r\n",
            b"PUT http://h/x HTTP/1.0\n",
            b"DELETE / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                sniff(ok, true, false),
                Sniffed::Http,
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        let mut long = b"GET /".to_vec();
        long.extend(vec![b'a'; LONG_LINE]);
        assert_eq!(sniff(&long, false, true), Sniffed::Http);
    }

    #[test]
    fn partial_starts_wait_for_more() {
        for p in [
            &b"G"[..],
            b"GET",
            b"GET ",
            b"GET /a",
            b"GET /a HTTP/1",
            b"POST /a HTTP/1.1\r",
        ] {
            assert_eq!(
                sniff(p, false, true),
                Sniffed::Partial,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        assert!(!resumes_http(b"GET "));
        assert!(resumes_http(b"GET /a"));
    }

    #[test]
    fn not_http() {
        for no in [
            &b"get / HTTP/1.1\r\n"[..],
            b"GET / HTTP/2.0\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET /a HTTP/1.1x",
            b"OPTIONS x HTTP/1.1\r\n",
            b"FETCH / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SELECT 1",
            b"*1\r\n$4\r\nPING\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET\t/ HTTP/1.1\r\n",
        ] {
            assert_eq!(
                sniff(no, false, true),
                Sniffed::No,
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
    }

    #[test]
    fn uwsgi_packets_server_side_only() {
        let p = packet(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ]);
        assert_eq!(sniff(&p, false, true), Sniffed::Uwsgi);
        assert_eq!(sniff(&p, true, false), Sniffed::No);
        assert_eq!(sniff(&p[..3], false, true), Sniffed::Partial);
        assert_eq!(sniff(&p[..10], false, true), Sniffed::Partial);
        assert_eq!(sniff(&p[..p.len() - 1], false, true), Sniffed::Uwsgi);
        // MySQL's handshake response (sequence 1), PostgreSQL's startup, TLS.
        for no in [
            &b"\x55\x00\x00\x01\x85\xa6\xff\x01"[..],
            b"\x00\x00\x00\x52\x00\x03\x00\x00user\0",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(sniff(no, false, true), Sniffed::No);
        }
        let no_method = packet(&[("PATH_INFO", "/a"), ("REQUEST_URI", "/a")]);
        assert_eq!(sniff(&no_method, false, true), Sniffed::No);
    }
}
