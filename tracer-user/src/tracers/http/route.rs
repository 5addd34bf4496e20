//! `http_route`: a request path made into a template whose cardinality is bounded.
//!
//! Paths carry ids (`/v2.1/servers/0a3f…`), and a table keyed by raw path would grow with every
//! server, image or request id. Segments that look like ids become `{id}`: numbers, UUIDs (with
//! or without dashes), hex strings of 16 characters or more (sha1/sha256, request ids), long
//! token-like strings that mix letters and digits (Fernet tokens, base64 ids); an id after a short
//! alphabetic prefix keeps the prefix (`req-{id}`, `AUTH_{id}`, Swift's account). Names that a
//! service made up (`detail`, `os-hypervisors`, `v2.1`) stay. What slips through (an id
//! without digits, free-form names) is bounded by [`Routes`]: past N distinct routes per key
//! (process and method), further ones are `other`.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

/// The route of the requests beyond a key's limit.
pub const OTHER: &str = "other";

/// Routes are cut to this many bytes.
pub const MAX_ROUTE: usize = 256;

const ID: &str = "{id}";

fn is_hex(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) || c.is_ascii_hexdigit())
}

/// A segment that is an id by itself.
fn is_id(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    if s.bytes().all(|c| c.is_ascii_digit()) || is_uuid(s) || (s.len() >= 16 && is_hex(s)) {
        return true;
    }
    // Tokens: long, from the base64url alphabet, with both letters and digits.
    s.len() >= 24
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'.'))
        && s.bytes().any(|c| c.is_ascii_digit())
        && s.bytes().any(|c| c.is_ascii_alphabetic())
}

/// A segment's template: itself, `{id}`, or a short prefix and `{id}`.
fn segment(s: &str) -> Option<String> {
    // A prefix of up to 8 letters, then `-` or `_`, then an id.
    if let Some(sep) = s.bytes().take(9).position(|c| c == b'-' || c == b'_') {
        let (prefix, rest) = (&s[..sep], &s[sep + 1..]);
        if sep > 0 && prefix.bytes().all(|c| c.is_ascii_alphabetic()) && is_id(rest) {
            return Some(format!("{}{ID}", &s[..=sep]));
        }
    }
    is_id(s).then(|| ID.to_owned())
}

/// The route of a path: ids replaced by `{id}`, query string and fragment dropped.
pub fn template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len());
    for (i, s) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match segment(s) {
            Some(t) => out.push_str(&t),
            None => out.push_str(s),
        }
        if out.len() > MAX_ROUTE {
            break;
        }
    }
    if out.len() > MAX_ROUTE {
        let mut end = MAX_ROUTE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The routes seen per key (a process and a method, say), at most `limit` each.
pub struct Routes<K> {
    limit: usize,
    seen: HashMap<K, HashSet<String>>,
    overflowed: u64,
}

impl<K: Hash + Eq> Routes<K> {
    pub fn new(limit: usize) -> Routes<K> {
        Routes {
            limit,
            seen: HashMap::new(),
            overflowed: 0,
        }
    }

    /// The route of `path` under `key`: its template, or [`OTHER`] when `key` already has
    /// `limit` others.
    pub fn route(&mut self, key: K, path: &str) -> String {
        let t = template(path);
        let seen = self.seen.entry(key).or_default();
        if seen.contains(&t) {
            return t;
        }
        if seen.len() >= self.limit {
            self.overflowed += 1;
            return OTHER.to_owned();
        }
        seen.insert(t.clone());
        t
    }

    /// Requests put in [`OTHER`] since the last call.
    pub fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.overflowed)
    }

    /// Forgets the keys `keep` refuses (processes that ended).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_templates() {
        for (path, route) in [
            ("/", "/"),
            ("", "/"),
            ("/v2.1/servers/detail", "/v2.1/servers/detail"),
            (
                "/v2.1/servers/6f1a9d5c-3b1e-4e0f-9a43-2c6de0b7a8f1/action",
                "/v2.1/servers/{id}/action",
            ),
            (
                "/v3/users/0123456789abcdef0123456789abcdef",
                "/v3/users/{id}",
            ),
            ("/items/42?x=1", "/items/{id}"),
            (
                "/v2/images/6F1A9D5C3B1E4E0F9A432C6DE0B7A8F1/file",
                "/v2/images/{id}/file",
            ),
            (
                "/v1/AUTH_0123456789abcdef0123456789abcdef/c/o",
                "/v1/AUTH_{id}/c/o",
            ),
            ("/r/req-6f1a9d5c-3b1e-4e0f-9a43-2c6de0b7a8f1", "/r/req-{id}"),
            (
                "/v3/auth/tokens/gAAAAABk3x7Q9yZ_abc-DEF123ghiJKL456mnoPQR789",
                "/v3/auth/tokens/{id}",
            ),
            (
                "/blobs/da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "/blobs/{id}",
            ),
            ("/os-hypervisors/statistics", "/os-hypervisors/statistics"),
            ("/flavors/m1.small", "/flavors/m1.small"),
            ("/a//b/", "/a//b/"),
            ("/deadbeef", "/deadbeef"),
            ("/v2.1/os-availability-zone", "/v2.1/os-availability-zone"),
        ] {
            assert_eq!(template(path), route, "{path}");
        }
        assert!(template(&format!("/{}", "a/".repeat(500))).len() <= MAX_ROUTE);
    }

    #[test]
    fn routes_are_bounded_per_key() {
        let mut r = Routes::new(3);
        for i in 0..3 {
            assert_eq!(
                r.route((1, "GET"), &format!("/name{}", "x".repeat(i))),
                format!("/name{}", "x".repeat(i))
            );
        }
        assert_eq!(r.route((1, "GET"), "/new"), OTHER);
        assert_eq!(r.route((1, "GET"), "/name"), "/name", "known routes stay");
        assert_eq!(
            r.route((1, "POST"), "/new"),
            "/new",
            "another key has its own"
        );
        assert_eq!(r.route((2, "GET"), "/items/1"), "/items/{id}");
        assert_eq!(r.route((2, "GET"), "/items/2"), "/items/{id}");
        assert_eq!(r.take_overflowed(), 1);
        r.retain(|k| k.0 != 1);
        assert_eq!(r.route((1, "GET"), "/new"), "/new");
    }
}
