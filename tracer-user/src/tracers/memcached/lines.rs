//! The text protocol's grammar (doc/protocol.txt): request lines, classic and meta, with the
//! data block each announces and the responses each can get; response lines classified. The
//! parser ([`super::text`]) holds the state; this holds what a line means.

/// The responses a request can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Values,
    Storage,
    Delete,
    Arith,
    Touch,
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArith,
    MetaNoop,
    MetaDebug,
    Version,
    Stats,
    Ok,
    /// An unknown command: one line.
    Line,
    Nothing,
}

pub(super) struct Request {
    pub(super) command: &'static str,
    pub(super) expect: Expect,
    pub(super) keys: u32,
    pub(super) noreply: bool,
    pub(super) quiet: bool,
    pub(super) opaque: Option<Vec<u8>>,
    /// Data block bytes after the line (CRLF included).
    pub(super) block: u64,
    /// ms in a mode that needs the item (replace, append, prepend): NF is an answer it can
    /// get even when quiet.
    pub(super) needs_item: bool,
}

fn number(t: &[u8]) -> Option<u64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn is_number(t: &[u8]) -> bool {
    number(t).is_some()
}

/// Parses a request line (without its CRLF). None when it is not a command of the protocol.
pub(super) fn parse_request(line: &[u8]) -> Option<Request> {
    let mut tokens = line.split(|&c| c == b' ').filter(|t| !t.is_empty());
    let name = tokens.next()?;
    let rest: Vec<&[u8]> = tokens.collect();
    let noreply = rest.last().is_some_and(|t| *t == b"noreply");
    let meta_flags = |from: usize| rest.get(from..).unwrap_or_default();
    let quiet = |from: usize| meta_flags(from).iter().any(|t| *t == b"q");
    let opaque = |from: usize| {
        meta_flags(from)
            .iter()
            .find(|t| t.first() == Some(&b'O'))
            .map(|t| t[1..].to_vec())
    };
    let r = |command, expect, keys: usize, block: u64| Request {
        command,
        expect,
        keys: keys as u32,
        noreply,
        quiet: false,
        opaque: None,
        block,
        needs_item: false,
    };
    let n = rest.len();
    let storage = |command| {
        ((4..=5).contains(&n) && rest[1..4].iter().all(|t| is_number(t))).then(|| {
            r(
                command,
                Expect::Storage,
                1,
                number(rest[3]).unwrap_or(0) + 2,
            )
        })
    };
    let meta = |command, expect, block: u64, flags_from: usize| {
        let mut q = r(command, expect, 1, block);
        q.noreply = false;
        q.quiet = quiet(flags_from);
        q.opaque = opaque(flags_from);
        q.needs_item = meta_flags(flags_from).iter().any(|t| {
            t.len() == 2 && t[0] == b'M' && matches!(t[1], b'R' | b'r' | b'A' | b'a' | b'P' | b'p')
        });
        q
    };
    Some(match name {
        b"get" if n >= 1 => r("get", Expect::Values, n, 0),
        b"gets" if n >= 1 => r("gets", Expect::Values, n, 0),
        b"gat" if n >= 2 && is_number(rest[0]) => r("gat", Expect::Values, n - 1, 0),
        b"gats" if n >= 2 && is_number(rest[0]) => r("gats", Expect::Values, n - 1, 0),
        b"set" => storage("set")?,
        b"add" => storage("add")?,
        b"replace" => storage("replace")?,
        b"append" => storage("append")?,
        b"prepend" => storage("prepend")?,
        b"cas" if (5..=6).contains(&n) && rest[1..5].iter().all(|t| is_number(t)) => {
            r("cas", Expect::Storage, 1, number(rest[3]).unwrap_or(0) + 2)
        }
        b"delete" if (1..=3).contains(&n) => r("delete", Expect::Delete, 1, 0),
        b"incr" if (2..=3).contains(&n) => r("incr", Expect::Arith, 1, 0),
        b"decr" if (2..=3).contains(&n) => r("decr", Expect::Arith, 1, 0),
        b"touch" if (2..=3).contains(&n) => r("touch", Expect::Touch, 1, 0),
        b"mg" if n >= 1 => meta("mg", Expect::MetaGet, 0, 1),
        b"ms" if n >= 2 && is_number(rest[1]) => {
            meta("ms", Expect::MetaSet, number(rest[1]).unwrap_or(0) + 2, 2)
        }
        b"md" if n >= 1 => meta("md", Expect::MetaDelete, 0, 1),
        b"ma" if n >= 1 => meta("ma", Expect::MetaArith, 0, 1),
        b"mn" if n == 0 => r("mn", Expect::MetaNoop, 0, 0),
        b"me" if n >= 1 => r("me", Expect::MetaDebug, 1, 0),
        b"version" if n == 0 => r("version", Expect::Version, 0, 0),
        b"stats" => r("stats", Expect::Stats, 0, 0),
        b"flush_all" if n <= 2 => r("flush_all", Expect::Ok, 0, 0),
        b"verbosity" if (1..=2).contains(&n) => r("verbosity", Expect::Ok, 0, 0),
        b"quit" if n == 0 => r("quit", Expect::Nothing, 0, 0),
        _ => return None,
    })
}

/// A response line, classified.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resp<'a> {
    /// VALUE <key> <flags> <bytes> [<cas>]: a data block of `block` bytes follows.
    Value {
        block: u64,
    },
    End,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    Number,
    Error,
    Version,
    Stat,
    Ok,
    /// A meta response: a two-letter code (HD, VA, EN, NF, NS, EX, MN, ME), a data block for
    /// VA, the opaque token if any.
    Meta {
        code: [u8; 2],
        block: u64,
        opaque: Option<&'a [u8]>,
    },
    Unknown,
}

pub(super) fn parse_response(line: &[u8]) -> Resp<'_> {
    let mut tokens = line.split(|&c| c == b' ').filter(|t| !t.is_empty());
    let Some(first) = tokens.next() else {
        return Resp::Unknown;
    };
    let rest: Vec<&[u8]> = tokens.collect();
    match first {
        b"VALUE" if (3..=4).contains(&rest.len()) => match number(rest[2]) {
            Some(n) => Resp::Value { block: n + 2 },
            None => Resp::Unknown,
        },
        b"END" => Resp::End,
        b"STORED" => Resp::Stored,
        b"NOT_STORED" => Resp::NotStored,
        b"EXISTS" => Resp::Exists,
        b"NOT_FOUND" => Resp::NotFound,
        b"DELETED" => Resp::Deleted,
        b"TOUCHED" => Resp::Touched,
        b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => Resp::Error,
        b"VERSION" => Resp::Version,
        b"STAT" => Resp::Stat,
        b"OK" | b"RESET" => Resp::Ok,
        _ if rest.is_empty() && is_number(first) => Resp::Number,
        [a, b]
            if matches!(
                [*a, *b],
                [b'H', b'D']
                    | [b'V', b'A']
                    | [b'E', b'N']
                    | [b'N', b'F']
                    | [b'N', b'S']
                    | [b'E', b'X']
                    | [b'M', b'N']
                    | [b'M', b'E']
            ) =>
        {
            let va = [*a, *b] == *b"VA";
            let block = if va {
                match rest.first().and_then(|t| number(t)) {
                    Some(n) => n + 2,
                    None => return Resp::Unknown,
                }
            } else {
                0
            };
            let flags = if va { rest.get(1..) } else { rest.get(..) };
            let opaque = flags
                .unwrap_or_default()
                .iter()
                .find(|t| t.first() == Some(&b'O'))
                .map(|t| &t[1..]);
            Resp::Meta {
                code: [*a, *b],
                block,
                opaque,
            }
        }
        _ => Resp::Unknown,
    }
}

/// Whether a quiet request can get this response (else its answer was its silence).
pub(super) fn quiet_gets(req: &Request, r: &Resp<'_>) -> bool {
    let code = match r {
        Resp::Error => return true,
        Resp::Meta { code, .. } => code,
        _ => return false,
    };
    match req.expect {
        Expect::MetaGet => matches!(code, b"VA" | b"HD"),
        Expect::MetaSet => matches!(code, b"NS" | b"EX") || (req.needs_item && code == b"NF"),
        Expect::MetaDelete => matches!(code, b"NF" | b"EX"),
        Expect::MetaArith => matches!(code, b"NF" | b"NS" | b"EX" | b"VA"),
        _ => true,
    }
}

pub(super) fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Every complete line of `data` is a request (with its data block where the syntax says).
pub fn sniff_requests(data: &[u8]) -> bool {
    let mut at = 0;
    let mut seen = 0;
    while at < data.len() {
        let Some(end) = find_crlf(&data[at..]) else {
            break;
        };
        let Some(r) = parse_request(&data[at..at + end]) else {
            return false;
        };
        at += end + 2 + r.block as usize;
        seen += 1;
    }
    seen > 0
}

/// Every complete line of `data` is a response, one at least not a bare number or error.
pub fn sniff_responses(data: &[u8]) -> bool {
    let mut at = 0;
    let mut telling = 0;
    while at < data.len() {
        let Some(end) = find_crlf(&data[at..]) else {
            break;
        };
        let r = parse_response(&data[at..at + end]);
        at += end + 2;
        match r {
            Resp::Unknown => return false,
            Resp::Number | Resp::Error | Resp::Ok => {}
            Resp::Value { block } | Resp::Meta { block, .. } => {
                at += block as usize;
                telling += 1;
            }
            _ => telling += 1,
        }
    }
    telling > 0
}
