//! The memcached parsers: real pymemcache, meta and binary traffic (testdata/pymemcache.txt,
//! with the workload's own counts in pymemcache.json) and hand-made edge cases.

use std::collections::{BTreeMap, HashMap};

use super::{CacheCounts, CacheOp, Flavor, MemcachedConnection, sniff};
use crate::tracers::{amqp::fixture, sql::Chunk};

fn chunk(sent: bool, time_ns: u64, data: &[u8]) -> Chunk<'_> {
    Chunk {
        sent,
        time_ns,
        len: data.len() as u32,
        data,
    }
}

/// Feeds (sent, bytes) pairs at times 1, 2, 3…; returns the ops and the counts.
fn run(flavor: Option<Flavor>, script: &[(bool, &[u8])]) -> (Vec<CacheOp>, CacheCounts, usize) {
    let mut c = MemcachedConnection::new(flavor);
    let mut out = Vec::new();
    for (i, (sent, data)) in script.iter().enumerate() {
        c.feed(&chunk(*sent, i as u64 + 1, data), &mut out);
    }
    (out, c.take_counts(), c.pending())
}

fn summary(ops: &[CacheOp]) -> Vec<(&'static str, u32, u32, bool)> {
    ops.iter()
        .map(|o| (o.command, o.hits, o.misses, o.error))
        .collect()
}

#[test]
fn multi_get_counts_hits_and_misses_per_key() {
    let response = b"VALUE a 0 1\r\nx\r\nVALUE c 5 3 99\r\nxyz\r\nEND\r\n";
    let (ops, counts, pending) = run(None, &[(true, b"get a b c\r\n"), (false, response)]);
    assert_eq!(summary(&ops), [("get", 2, 1, false)]);
    let op = &ops[0];
    assert_eq!((op.keys, op.start_ns, op.end_ns), (3, 1, Some(2)));
    assert_eq!(op.duration_ns(), Some(1));
    assert_eq!(
        (op.bytes_sent, op.bytes_received),
        (11, response.len() as u64)
    );
    assert_eq!((counts, pending), (CacheCounts::default(), 0));
}

#[test]
fn pipelined_requests_noreply_and_responses_split_anywhere() {
    let requests: &[u8] =
        b"set k 0 0 5 noreply\r\nhello\r\nset k2 0 0 2\r\nab\r\ndelete k\r\nincr n 1\r\ntouch k2 9\r\ngets k2 zz\r\n";
    let responses: &[u8] =
        b"STORED\r\nDELETED\r\nNOT_FOUND\r\nTOUCHED\r\nVALUE k2 0 2 7\r\nab\r\nEND\r\n";
    let expected = [
        ("set", 0, 0, false),
        ("set", 0, 0, false),
        ("delete", 1, 0, false),
        ("incr", 0, 1, false),
        ("touch", 1, 0, false),
        ("gets", 1, 1, false),
    ];
    for split in 0..=responses.len() {
        let (ops, counts, pending) = run(
            None,
            &[
                (true, requests),
                (false, &responses[..split]),
                (false, &responses[split..]),
            ],
        );
        assert_eq!(summary(&ops), expected, "split at {split}");
        assert_eq!(ops[0].end_ns, None, "noreply");
        assert_eq!((counts, pending), (CacheCounts::default(), 0));
    }
    // Requests split anywhere too, data blocks included.
    for split in 0..=requests.len() {
        let (ops, counts, _) = run(
            None,
            &[
                (true, &requests[..split]),
                (true, &requests[split..]),
                (false, responses),
            ],
        );
        assert_eq!(summary(&ops), expected, "split at {split}");
        assert_eq!(counts, CacheCounts::default());
    }
}

#[test]
fn values_beyond_the_capture_are_skipped_by_length() {
    let mut c = MemcachedConnection::new(Some(Flavor::Text));
    let mut out = Vec::new();
    let value = vec![b'v'; 100_000];
    let mut set = b"set big 0 0 100000\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    fn captured(sent: bool, t: u64, all: &[u8]) -> Chunk<'_> {
        Chunk {
            sent,
            time_ns: t,
            len: all.len() as u32,
            data: &all[..all.len().min(16384)],
        }
    }
    c.feed(&captured(true, 1, &set), &mut out);
    c.feed(&chunk(false, 2, b"STORED\r\n"), &mut out);
    c.feed(&chunk(true, 3, b"get big\r\n"), &mut out);
    let mut resp = b"VALUE big 0 100000\r\n".to_vec();
    resp.extend_from_slice(&value);
    resp.extend_from_slice(b"\r\nEND\r\n");
    // Received in 4096-byte reads like pymemcache's, each one captured whole, then one big
    // read with most of it uncaptured.
    c.feed(&chunk(false, 4, &resp[..4096]), &mut out);
    c.feed(&captured(false, 5, &resp[4096..]), &mut out);
    assert_eq!(summary(&out), [("set", 0, 0, false), ("get", 1, 0, false)]);
    assert_eq!(out[1].bytes_received, resp.len() as u64);
    assert_eq!(out[0].bytes_sent, set.len() as u64);
    assert_eq!(c.take_counts(), CacheCounts::default());
    // A big read whose uncaptured part holds response lines cannot be followed.
    c.feed(&chunk(true, 6, b"get a\r\n"), &mut out);
    let lines = b"VALUE a 0 1\r\nx\r\nEND\r\n";
    c.feed(
        &Chunk {
            sent: false,
            time_ns: 7,
            len: lines.len() as u32,
            data: &lines[..5],
        },
        &mut out,
    );
    let counts = c.take_counts();
    assert_eq!((counts.desyncs, counts.lost_requests), (1, 1));
    // It picks up again with the next request.
    c.feed(&chunk(true, 8, b"get a\r\n"), &mut out);
    c.feed(&chunk(false, 9, b"END\r\n"), &mut out);
    assert_eq!(summary(&out[2..]), [("get", 0, 1, false)]);
}

#[test]
fn errors_stats_version_and_unknown_commands() {
    let (ops, counts, pending) = run(
        None,
        &[
            (true, b"get\r\n"),
            (false, b"ERROR\r\n"),
            (true, b"incr n x\r\n"),
            (false, b"CLIENT_ERROR invalid numeric delta argument\r\n"),
            (true, b"set k 0 0 1\r\nx\r\n"),
            (false, b"SERVER_ERROR out of memory storing object\r\n"),
            (true, b"stats\r\n"),
            (false, b"STAT pid 1\r\nSTAT uptime 2\r\n"),
            (false, b"END\r\n"),
            (true, b"version\r\nlru_crawler metadump all\r\nquit\r\n"),
            (false, b"VERSION 1.6.18\r\nERROR\r\n"),
        ],
    );
    assert_eq!(
        summary(&ops),
        [
            ("other", 0, 0, true),
            ("incr", 0, 0, true),
            ("set", 0, 0, true),
            ("stats", 0, 0, false),
            ("quit", 0, 0, false),
            ("version", 0, 0, false),
            ("other", 0, 0, true),
        ]
    );
    assert_eq!(ops[3].end_ns, Some(9));
    assert_eq!((counts, pending), (CacheCounts::default(), 0));
}

#[test]
fn meta_quiet_requests_are_answered_by_their_silence() {
    let (ops, counts, pending) = run(
        None,
        &[
            // A miss (EN suppressed), a hit, a quiet set (HD suppressed), a quiet delete of
            // a missing key (NF is still sent), then mn.
            (
                true,
                b"mg a v q O1\r\nmg b v q O2\r\nms c 2 q\r\nhi\r\nmd d q\r\nmn\r\n",
            ),
            (false, b"VA 3 O2\r\nabc\r\nNF\r\nMN\r\n"),
            (true, b"mg b\r\nma n v\r\nmd b\r\n"),
            (false, b"HD\r\nVA 2\r\n11\r\nHD\r\n"),
        ],
    );
    assert_eq!(
        summary(&ops),
        [
            ("mg", 0, 1, false),
            ("mg", 1, 0, false),
            ("ms", 0, 0, false),
            ("md", 0, 1, false),
            ("mn", 0, 0, false),
            ("mg", 1, 0, false),
            ("ma", 1, 0, false),
            ("md", 1, 0, false),
        ]
    );
    assert!(ops.iter().all(|o| o.end_ns.is_some()));
    assert_eq!((counts, pending), (CacheCounts::default(), 0));
}

#[test]
fn picked_up_mid_stream_responses_before_a_request_are_orphans() {
    let (ops, counts, pending) = run(
        Some(Flavor::Text),
        &[
            (false, b"x\r\nEND\r\n"),
            (true, b"get a\r\n"),
            (false, b"END\r\n"),
        ],
    );
    assert_eq!(summary(&ops), [("get", 0, 1, false)]);
    assert_eq!(
        (counts.orphan_responses, counts.desyncs, pending),
        (1, 0, 0)
    );
}

fn binary(magic: u8, op: u8, key: &[u8], value: &[u8], status: u16, opaque: u32) -> Vec<u8> {
    let body = (key.len() + value.len()) as u32;
    let mut v = vec![magic, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(&body.to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

#[test]
fn binary_quiet_gets_stats_and_errors() {
    let req = |op, key: &[u8], opaque| binary(0x80, op, key, b"", 0, opaque);
    let resp =
        |op, key: &[u8], value: &[u8], status, opaque| binary(0x81, op, key, value, status, opaque);
    let requests = [
        req(0x0d, b"hit", 1),  // getkq
        req(0x0d, b"miss", 2), // getkq: silent
        req(0x14, b"gone", 3), // deleteq: silent on success
        req(0x0a, b"", 4),     // noop
        req(0x10, b"", 5),     // stat
        req(0x05, b"n", 6),    // incr on a non-number
    ]
    .concat();
    let responses = [
        resp(0x0d, b"hit", b"value", 0, 1),
        resp(0x0a, b"", b"", 0, 4),
        resp(0x10, b"pid", b"1", 0, 5),
        resp(0x10, b"", b"", 0, 5),
        resp(0x05, b"", b"Non-numeric server-side value", 6, 6),
    ]
    .concat();
    for split in [0, 1, 23, 24, 25, 30, responses.len()] {
        let (ops, counts, pending) = run(
            None,
            &[
                (true, &requests),
                (false, &responses[..split]),
                (false, &responses[split..]),
            ],
        );
        assert_eq!(
            summary(&ops),
            [
                ("get", 1, 0, false),
                ("get", 0, 1, false),
                ("delete", 1, 0, false),
                ("noop", 0, 0, false),
                ("stats", 0, 0, false),
                ("incr", 0, 0, true),
            ],
            "split at {split}"
        );
        assert_eq!(ops[0].bytes_received, 24 + 8);
        assert_eq!((counts, pending), (CacheCounts::default(), 0));
    }
    // The first request's magic tells the protocol.
    let mut c = MemcachedConnection::new(None);
    c.feed(&chunk(false, 1, &responses), &mut Vec::new());
    assert_eq!(c.flavor(), None, "a response does not tell");
    c.feed(&chunk(true, 2, &requests), &mut Vec::new());
    assert_eq!(c.flavor(), Some(Flavor::Binary));
}

#[test]
fn sniffer_accepts_memcached_and_little_else() {
    for (data, sent) in [
        (&b"get a b c\r\n"[..], true),
        (b"set k 0 300 5 noreply\r\nhello\r\nget k\r\n", true),
        (b"mg key v q O1\r\nmn\r\n", true),
        (b"delete k\r\n", true),
        (b"version\r\n", true),
        (b"VALUE k 0 5\r\nhello\r\nEND\r\n", false),
        (b"END\r\n", false),
        (b"STORED\r\n", false),
        (b"VA 2 O1\r\nhi\r\nMN\r\n", false),
        (b"set k 0 0 100000\r\nvvvv", true),
    ] {
        assert_eq!(sniff(data, sent), Some(Flavor::Text), "{data:?}");
    }
    let bin = binary(0x80, 0x00, b"k", b"", 0, 0);
    assert_eq!(sniff(&bin, true), Some(Flavor::Binary));
    assert_eq!(
        sniff(&binary(0x81, 0x00, b"", b"v", 1, 0), false),
        Some(Flavor::Binary)
    );
    assert_eq!(
        sniff(&bin, false),
        None,
        "a request where a response should be"
    );
    for (data, sent) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], true),
        (b"HTTP/1.1 200 OK\r\n\r\n", false),
        (b"ERROR\r\n", false),
        (b"15\r\n", false),
        (b"get\r\n", true),
        (b"set k 0 0\r\n", true),
        (b"*1\r\n$4\r\nPING\r\n", true),
        (b"+OK\r\n", false),
        (b"AMQP\x00\x00\x09\x01", true),
        (b"\x80\x99\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", true),
        (b"", true),
    ] {
        assert_eq!(sniff(data, sent), None, "{data:?}");
    }
}

/// The fixture through one parser per connection, from the `skip`-th syscall of each.
fn run_fixture(skip: usize) -> (Vec<(u32, CacheOp)>, CacheCounts, usize) {
    let cap = fixture::load(include_str!("testdata/pymemcache.txt"));
    let mut conns: HashMap<u32, (usize, MemcachedConnection)> = HashMap::new();
    let mut ops = Vec::new();
    let mut counts = CacheCounts::default();
    let mut out = Vec::new();
    for s in &cap.syscalls {
        let (seen, c) = conns
            .entry(s.conn)
            .or_insert_with(|| (0, MemcachedConnection::new(None)));
        *seen += 1;
        if *seen <= skip {
            continue;
        }
        c.feed(
            &Chunk {
                sent: s.sent,
                time_ns: s.time_ns,
                len: s.len,
                data: &s.data,
            },
            &mut out,
        );
        ops.extend(out.drain(..).map(|o| (s.conn, o)));
        let n = c.take_counts();
        counts.desyncs += n.desyncs;
        counts.lost_requests += n.lost_requests;
        counts.orphan_responses += n.orphan_responses;
    }
    let pending = conns.values().map(|(_, c)| c.pending()).sum();
    (ops, counts, pending)
}

#[test]
fn real_pymemcache_meta_and_binary_traffic_gives_exact_counts() {
    let cap = fixture::load(include_str!("testdata/pymemcache.txt"));
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("testdata/pymemcache.json")).unwrap();
    let (ops, counts, pending) = run_fixture(0);
    assert_eq!((counts, pending), (CacheCounts::default(), 0));
    for transport in ["tcp", "unix"] {
        let mut got: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for (conn, o) in &ops {
            let unix = cap.endpoint[conn].starts_with("UNIX");
            if unix != (transport == "unix") {
                continue;
            }
            let t = got.entry(o.command.to_owned()).or_default();
            t[0] += 1;
            t[1] += u64::from(o.hits);
            t[2] += u64::from(o.misses);
            t[3] += u64::from(o.error);
        }
        let want: BTreeMap<String, [u64; 4]> = expected[transport]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let n = |f: &str| v[f].as_u64().unwrap();
                (k.clone(), [n("calls"), n("hits"), n("misses"), n("errors")])
            })
            .collect();
        assert_eq!(got, want, "{transport}");
    }
    // pymemcache's sets are noreply by default: no latency for those, all others have one.
    let noreply = ops.iter().filter(|(_, o)| o.end_ns.is_none()).count();
    assert_eq!(noreply, 8, "4 keys × 2 transports");
    assert!(ops.iter().all(|(_, o)| o.bytes_sent > 0));
}

#[test]
fn real_traffic_picked_up_mid_stream() {
    let (all, ..) = run_fixture(0);
    // From the 7th syscall of each connection on; whichever way it falls (a send or a
    // receive), nothing is invented and what follows the first whole exchange is exact.
    for skip in 1..12 {
        let (ops, counts, pending) = run_fixture(skip);
        assert_eq!(counts.desyncs, 0, "skip {skip}");
        assert_eq!(pending, 0);
        assert!(counts.orphan_responses <= 4, "at most one per connection");
        for (conn, o) in &ops {
            assert!(
                all.iter().any(|(c, a)| c == conn && a == o),
                "skip {skip}: {o:?} not in the full run"
            );
        }
        let lost = all.len() - ops.len();
        assert!(lost <= 4 * skip, "skip {skip}: {lost} lost");
    }
}

#[test]
fn every_command_with_each_of_its_answers() {
    // A request, its response, and what the op must say: (command, hits, misses, error).
    type Case<'a> = (&'a [u8], &'a [u8], (&'a str, u32, u32, bool));
    let cases: &[Case] = &[
        (
            b"gat 60 a b\r\n",
            b"VALUE a 0 1\r\nx\r\nEND\r\n",
            ("gat", 1, 1, false),
        ),
        (
            b"gats 60 a\r\n",
            b"VALUE a 0 1 5\r\nx\r\nEND\r\n",
            ("gats", 1, 0, false),
        ),
        (
            b"cas a 0 0 1 99\r\nx\r\n",
            b"EXISTS\r\n",
            ("cas", 0, 0, false),
        ),
        (
            b"cas a 0 0 1 99\r\nx\r\n",
            b"NOT_FOUND\r\n",
            ("cas", 0, 0, false),
        ),
        (
            b"append a 0 0 1\r\nx\r\n",
            b"NOT_STORED\r\n",
            ("append", 0, 0, false),
        ),
        (
            b"prepend a 0 0 1\r\nx\r\n",
            b"STORED\r\n",
            ("prepend", 0, 0, false),
        ),
        (
            b"replace a 0 0 1\r\nx\r\n",
            b"STORED\r\n",
            ("replace", 0, 0, false),
        ),
        (b"decr n 1\r\n", b"0\r\n", ("decr", 1, 0, false)),
        (b"touch a 10\r\n", b"NOT_FOUND\r\n", ("touch", 0, 1, false)),
        (b"flush_all\r\n", b"OK\r\n", ("flush_all", 0, 0, false)),
        (b"verbosity 1\r\n", b"OK\r\n", ("verbosity", 0, 0, false)),
        (b"stats reset\r\n", b"RESET\r\n", ("stats", 0, 0, false)),
        (
            b"me a\r\n",
            b"ME a exp=-1 la=2 cas=3 fetch=no cls=1 size=63\r\n",
            ("me", 1, 0, false),
        ),
        (b"me b\r\n", b"EN\r\n", ("me", 0, 1, false)),
        (b"mg a\r\n", b"HD\r\n", ("mg", 1, 0, false)),
        (
            b"mg a k v t\r\n",
            b"VA 1 ka t-1\r\nx\r\n",
            ("mg", 1, 0, false),
        ),
        (b"ms a 1 MR\r\nx\r\n", b"NF\r\n", ("ms", 0, 0, false)),
        (
            b"ms a 1 MR q\r\nx\r\nmn\r\n",
            b"NF\r\nMN\r\n",
            ("ms", 0, 0, false),
        ),
        (b"ms a 1 q\r\nx\r\nmn\r\n", b"MN\r\n", ("ms", 0, 0, false)),
        (b"ma n q\r\nmn\r\n", b"MN\r\n", ("ma", 1, 0, false)),
        (b"ma n q\r\nmn\r\n", b"NF\r\nMN\r\n", ("ma", 0, 1, false)),
        (b"ma n v MD\r\n", b"VA 1\r\n4\r\n", ("ma", 1, 0, false)),
        (
            b"get a\r\n",
            b"SERVER_ERROR out of memory\r\n",
            ("get", 0, 0, true),
        ),
    ];
    for (request, response, expected) in cases {
        let (ops, counts, pending) = run(None, &[(true, request), (false, response)]);
        let first = (ops[0].command, ops[0].hits, ops[0].misses, ops[0].error);
        assert_eq!(first, *expected, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(
            (counts, pending),
            (CacheCounts::default(), 0),
            "{request:?}"
        );
        assert_eq!(
            ops.iter().map(|o| o.bytes_received).sum::<u64>(),
            response.len() as u64
        );
    }
}
