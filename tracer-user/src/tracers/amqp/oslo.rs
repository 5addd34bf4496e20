//! oslo.messaging's message bodies: what kind of message (RPC call, cast, reply, notification)
//! and the few fields that name and pair it, read from the JSON without keeping the rest.
//!
//! The rabbit driver (kombu, py-amqp) sends JSON. RPC messages are wrapped:
//! `{"oslo.version": "2.0", "oslo.message": "<the message as a JSON string>"}`; the
//! `messaging` notification driver sends the plain dict. Seen on the wire (oslo.messaging 18):
//! - call: `{"method", "args", "_msg_id", "_reply_q": "reply_<uuid>", "_timeout",
//!   "_unique_id", "_context_*"...}`, published to the control exchange with the topic as
//!   routing key and an AMQP `expiration` property (the call's timeout);
//! - cast: the same without `_msg_id`/`_reply_q`/`_timeout`, and without `expiration`;
//! - reply: `{"result", "failure", "ending": true, "_msg_id", "_unique_id"}` to the default
//!   exchange with the caller's `reply_<uuid>` queue as routing key; `failure` is null or the
//!   serialized exception; `ending: false` is a call-monitor heartbeat, not the answer;
//! - notification: `{"message_id", "publisher_id", "event_type", "priority", "payload",
//!   "timestamp", "_unique_id"}`.
//!
//! Bodies may be cut (capture size, body cap): the scanner reads the JSON as far as it goes and
//! keeps the fields it passed. `_msg_id` comes after `args` (calls) or `result` (replies), so a
//! large argument or result can leave a message without it.

/// What an oslo.messaging message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Call,
    Cast,
    Reply,
    Notification,
    /// Not oslo.messaging JSON, or cut before it could be told.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Cast => "cast",
            Kind::Reply => "reply",
            Kind::Notification => "notification",
            Kind::Other => "other",
        }
    }
}

/// The fields kept from a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Oslo {
    pub method: Option<String>,
    pub msg_id: Option<String>,
    pub reply_q: Option<String>,
    pub unique_id: Option<String>,
    pub event_type: Option<String>,
    pub publisher_id: Option<String>,
    /// A reply with a non-null `failure`.
    pub failure: bool,
    /// A reply's `ending` (absent in replies of old versions, which sent a last empty reply).
    pub ending: Option<bool>,
    /// Whether the reply keys (`result`, `failure`, `ending`) were seen.
    pub reply_keys: bool,
    /// The JSON was read to its end.
    pub complete: bool,
}

impl Oslo {
    /// The kind, from the keys seen. `expiration`: the AMQP property, which the rabbit driver
    /// sets on calls only; it tells a call whose `_msg_id` was cut off from a cast.
    pub fn kind(&self, expiration: bool) -> Kind {
        if self.reply_keys {
            Kind::Reply
        } else if self.event_type.is_some() {
            Kind::Notification
        } else if self.method.is_some() {
            // A body cut before `_msg_id` is a cast unless the expiration says call.
            if self.msg_id.is_some() || (!self.complete && expiration) {
                Kind::Call
            } else {
                Kind::Cast
            }
        } else {
            Kind::Other
        }
    }
}

/// Strings longer than this are cut (method names, ids, event types are short).
const FIELD_MAX: usize = 256;

/// Reads an oslo.messaging body. None when it is not a JSON object.
pub fn parse(body: &[u8]) -> Option<Oslo> {
    let mut o = Oslo::default();
    let mut inner: Option<(String, bool)> = None;
    let complete = members(body, &mut |key, v| match (key, v) {
        ("oslo.message", Value::Str(s, whole)) => inner = Some((s, whole)),
        (k, v) => field(&mut o, k, v),
    })?;
    o.complete = complete;
    if let Some((text, whole)) = inner {
        // The wrapped message: its fields replace the envelope's (it has no others).
        let mut m = Oslo::default();
        let done = members(text.as_bytes(), &mut |k, v| field(&mut m, k, v));
        m.complete = whole && done == Some(true);
        return Some(m);
    }
    Some(o)
}

fn field(o: &mut Oslo, key: &str, v: Value) {
    let text = |v: Value| match v {
        Value::Str(s, _) => Some(s),
        _ => None,
    };
    match key {
        "method" => o.method = text(v),
        "_msg_id" => o.msg_id = text(v),
        "_reply_q" => o.reply_q = text(v),
        "_unique_id" => o.unique_id = text(v),
        "event_type" => o.event_type = text(v),
        "publisher_id" => o.publisher_id = text(v),
        "result" => o.reply_keys = true,
        "failure" => {
            o.reply_keys = true;
            o.failure = !matches!(v, Value::Null | Value::Cut);
        }
        "ending" => {
            o.reply_keys = true;
            o.ending = match v {
                Value::Bool(b) => Some(b),
                _ => None,
            };
        }
        _ => {}
    }
}

/// A member's value, as far as it matters here.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    /// A string, decoded; false when the text ended inside it.
    Str(String, bool),
    Null,
    Bool(bool),
    /// Numbers, objects, arrays: skipped.
    Other,
    /// The text ended inside the value.
    Cut,
}

/// Calls `f` for each member of the top-level object in order; string values of the envelope's
/// `oslo.message` are decoded whole, other strings up to [`FIELD_MAX`]. Returns whether the
/// object was read to its closing brace; None if the text does not start an object.
fn members(b: &[u8], f: &mut dyn FnMut(&str, Value)) -> Option<bool> {
    let mut p = Parser { b, at: 0 };
    p.ws();
    if p.next()? != b'{' {
        return None;
    }
    loop {
        p.ws();
        match p.peek() {
            None => return Some(false),
            Some(b'}') => return Some(true),
            Some(b',') => {
                p.at += 1;
                continue;
            }
            Some(b'"') => {}
            Some(_) => return Some(false),
        }
        let Some((key, true)) = p.string(FIELD_MAX) else {
            return Some(false);
        };
        p.ws();
        if p.next() != Some(b':') {
            return Some(false);
        }
        p.ws();
        let value = match p.peek() {
            None => return Some(false),
            Some(b'"') => {
                let max = if key == "oslo.message" {
                    usize::MAX
                } else {
                    FIELD_MAX
                };
                let Some((s, whole)) = p.string(max) else {
                    return Some(false);
                };
                Value::Str(s, whole)
            }
            Some(b'n') if p.literal(b"null") => Value::Null,
            Some(b't') if p.literal(b"true") => Value::Bool(true),
            Some(b'f') if p.literal(b"false") => Value::Bool(false),
            Some(_) => {
                if !p.skip_value() {
                    // The key was seen, its value not.
                    f(&key, Value::Cut);
                    return Some(false);
                }
                Value::Other
            }
        };
        let cut = matches!(value, Value::Str(_, false));
        f(&key, value);
        if cut {
            return Some(false);
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// A string at `at` (its opening quote), decoded up to `max` bytes (the rest is passed
    /// over). Returns it and whether its closing quote was reached.
    fn string(&mut self, max: usize) -> Option<(String, bool)> {
        if self.next()? != b'"' {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        let push = |out: &mut Vec<u8>, bytes: &[u8]| {
            if out.len() < max {
                out.extend_from_slice(&bytes[..bytes.len().min(max - out.len())]);
            }
        };
        loop {
            // Runs without escapes are copied at once.
            let run = self.b[self.at..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .unwrap_or(self.b.len() - self.at);
            push(&mut out, &self.b[self.at..self.at + run]);
            self.at += run;
            match self.next() {
                None => return Some((lossy(out), false)),
                Some(b'"') => return Some((lossy(out), true)),
                _ => {}
            }
            let Some(e) = self.next() else {
                return Some((lossy(out), false));
            };
            let c = match e {
                b'n' => '\n',
                b't' => '\t',
                b'r' => '\r',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'u' => match self.unicode_escape() {
                    Some(c) => c,
                    None => return Some((lossy(out), false)),
                },
                other => char::from(other),
            };
            let mut buf = [0u8; 4];
            push(&mut out, c.encode_utf8(&mut buf).as_bytes());
        }
    }

    /// The 4 hex digits after `\u` (and a low surrogate's `\uXXXX` after a high one).
    fn unicode_escape(&mut self) -> Option<char> {
        let hex = |p: &mut Self| -> Option<u32> {
            let s = p.b.get(p.at..p.at + 4)?;
            p.at += 4;
            u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
        };
        let hi = hex(self)?;
        if (0xd800..0xdc00).contains(&hi) && self.b[self.at..].starts_with(b"\\u") {
            self.at += 2;
            let lo = hex(self)?;
            let c = 0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
            return Some(char::from_u32(c).unwrap_or('\u{fffd}'));
        }
        Some(char::from_u32(hi).unwrap_or('\u{fffd}'))
    }

    /// Passes over a number, object or array. False if the text ends first.
    fn skip_value(&mut self) -> bool {
        let mut depth = 0usize;
        loop {
            let Some(c) = self.peek() else { return false };
            match c {
                b'"' => {
                    if !matches!(self.string(0), Some((_, true))) {
                        return false;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => return true,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return true;
                    }
                }
                b',' if depth == 0 => return true,
                _ => {}
            }
            self.at += 1;
        }
    }
}

fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope as oslo.messaging's serialize_msg writes it.
    pub fn wrap(inner: &str) -> String {
        serde_json::json!({"oslo.version": "2.0", "oslo.message": inner}).to_string()
    }

    #[test]
    fn call_cast_reply_notification() {
        let call = wrap(
            r#"{"method": "echo", "args": {"value": "v0", "nested": {"a": [1, "}"]}}, "_msg_id": "m1", "_reply_q": "reply_q1", "_timeout": null, "_unique_id": "u1", "_context_user": "x"}"#,
        );
        let o = parse(call.as_bytes()).unwrap();
        assert_eq!(o.method.as_deref(), Some("echo"));
        assert_eq!(o.msg_id.as_deref(), Some("m1"));
        assert_eq!(o.reply_q.as_deref(), Some("reply_q1"));
        assert_eq!(o.unique_id.as_deref(), Some("u1"));
        assert!(o.complete);
        assert_eq!(o.kind(true), Kind::Call);
        let cast = wrap(r#"{"method": "divide", "args": {"a": 0, "b": 1}, "_unique_id": "u2"}"#);
        assert_eq!(parse(cast.as_bytes()).unwrap().kind(false), Kind::Cast);
        let reply = wrap(
            r#"{"result": null, "failure": "{\"class\": \"DivisionRefused\", \"tb\": [\"x\\n\"]}", "ending": true, "_msg_id": "m1", "_unique_id": "u3"}"#,
        );
        let o = parse(reply.as_bytes()).unwrap();
        assert_eq!(o.kind(false), Kind::Reply);
        assert!(o.failure);
        assert_eq!(o.ending, Some(true));
        assert_eq!(o.msg_id.as_deref(), Some("m1"));
        let ok = wrap(
            r#"{"result": {"big": [1,2,3]}, "failure": null, "ending": true, "_msg_id": "m2"}"#,
        );
        assert!(!parse(ok.as_bytes()).unwrap().failure);
        // The messaging (v1) notification driver: no envelope.
        let n = br#"{"message_id": "5cd3", "publisher_id": "compute.host1", "event_type": "compute.instance.create.end", "priority": "INFO", "payload": {"i": 0}, "timestamp": "2026-11-27 12:11:14.543211", "_unique_id": "4f28"}"#;
        let o = parse(n).unwrap();
        assert_eq!(o.kind(false), Kind::Notification);
        assert_eq!(o.event_type.as_deref(), Some("compute.instance.create.end"));
        assert_eq!(o.publisher_id.as_deref(), Some("compute.host1"));
    }

    #[test]
    fn cut_bodies_keep_what_came_before_the_cut() {
        let call = wrap(&format!(
            r#"{{"method": "build", "args": {{"blob": "{}"}}, "_msg_id": "m9", "_reply_q": "reply_x"}}"#,
            "z".repeat(500)
        ));
        let cut = &call.as_bytes()[..200];
        let o = parse(cut).unwrap();
        assert_eq!(o.method.as_deref(), Some("build"));
        assert_eq!(o.msg_id, None);
        assert!(!o.complete);
        // The expiration property tells a call; without it the kind stays unknown.
        assert_eq!(o.kind(true), Kind::Call);
        assert_eq!(o.kind(false), Kind::Cast);
        // Cut inside a key, a literal, an escape.
        for n in 1..call.len() {
            let _ = parse(&call.as_bytes()[..n]);
        }
        assert_eq!(parse(b"not json"), None);
        assert_eq!(parse(b"[1, 2]"), None);
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn unicode_escapes_and_long_fields() {
        let j = r#"{"method": "caf\u00e9 \ud83d\ude00", "event_type": "x"}"#;
        let o = parse(j.as_bytes()).unwrap();
        assert_eq!(o.method.as_deref(), Some("café 😀"));
        let long = format!(r#"{{"method": "{}"}}"#, "m".repeat(1000));
        assert_eq!(
            parse(long.as_bytes()).unwrap().method.unwrap().len(),
            FIELD_MAX
        );
    }
}
