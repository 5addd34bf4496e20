//! Real oslo.messaging traffic (testdata/oslo_rpc.txt, see its header) through the connection
//! parser and the RPC tracker: exact counts, mid-stream pickup, small captures.

use std::collections::{BTreeMap, HashMap};

use super::{AmqpConnection, Counts, Direction, Event, Kind, RpcRecord, RpcTracker, fixture};
use crate::tracers::sql::Chunk;

/// Feeds a capture through connections (picked up from their start, or from `from_ns` on, mid
/// stream) and one tracker; capture size `capture` per syscall.
fn run_capture(
    capture: usize,
    from_ns: u64,
) -> (Vec<RpcRecord<u32>>, Counts, RpcTracker<u32>, usize) {
    let cap = fixture::load(include_str!("testdata/oslo_rpc.txt"));
    let mut conns: HashMap<u32, AmqpConnection> = HashMap::new();
    let mut tracker = RpcTracker::new(1000);
    let mut records = Vec::new();
    let mut counts = Counts::default();
    let mut ev = Vec::new();
    let mut methods = 0;
    for s in cap.syscalls.iter().filter(|s| s.time_ns >= from_ns) {
        let c = conns
            .entry(s.conn)
            .or_insert_with(|| AmqpConnection::new(from_ns == 0, 65536));
        let data = &s.data[..s.data.len().min(capture)];
        c.feed(
            &Chunk {
                sent: s.sent,
                time_ns: s.time_ns,
                len: s.len,
                data,
            },
            &mut ev,
        );
        for e in ev.drain(..) {
            match e {
                Event::Message(m) => tracker.message(&cap.process[&s.conn], &m, &mut records),
                Event::Method { .. } => methods += 1,
            }
        }
        let n = c.take_counts();
        counts.desyncs += n.desyncs;
        counts.skipped_frames += n.skipped_frames;
        counts.unsynced_chunks += n.unsynced_chunks;
    }
    (records, counts, tracker, methods)
}

const CLIENT: u32 = 20370;
const SERVER: u32 = 20372;

/// (process, direction, kind, method, error, paired) → records.
fn tally(records: &[RpcRecord<u32>]) -> BTreeMap<(u32, &str, &str, &str, bool, bool), u32> {
    let mut t = BTreeMap::new();
    for r in records {
        let k = (
            r.key,
            r.direction.as_str(),
            r.kind.as_str(),
            r.method.as_str(),
            r.error,
            r.duration_ns.is_some(),
        );
        *t.entry(k).or_insert(0) += 1;
    }
    t
}

#[test]
fn real_oslo_messaging_traffic_gives_exact_counts() {
    let (records, counts, tracker, methods) = run_capture(16384, 0);
    assert_eq!(counts, Counts::default());
    assert_eq!(tracker.pending(), 0);
    // The workload: echo ×2, divide ×2 (one raising), a cast of each, two notifications.
    let expected: BTreeMap<_, _> = [
        ((CLIENT, "client", "call", "echo", false, true), 2),
        ((CLIENT, "client", "call", "divide", false, true), 1),
        ((CLIENT, "client", "call", "divide", true, true), 1),
        ((CLIENT, "client", "cast", "echo", false, false), 1),
        ((CLIENT, "client", "cast", "divide", false, false), 1),
        (
            (
                CLIENT,
                "client",
                "notification",
                "scalp.test.start",
                false,
                false,
            ),
            1,
        ),
        (
            (
                CLIENT,
                "client",
                "notification",
                "scalp.test.end",
                false,
                false,
            ),
            1,
        ),
        ((SERVER, "server", "call", "echo", false, true), 2),
        ((SERVER, "server", "call", "divide", false, true), 1),
        ((SERVER, "server", "call", "divide", true, true), 1),
        ((SERVER, "server", "cast", "echo", false, false), 1),
        ((SERVER, "server", "cast", "divide", false, false), 1),
        (
            (
                SERVER,
                "server",
                "notification",
                "scalp.test.start",
                false,
                false,
            ),
            1,
        ),
        (
            (
                SERVER,
                "server",
                "notification",
                "scalp.test.end",
                false,
                false,
            ),
            1,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(tally(&records), expected);
    for r in &records {
        if r.kind == Kind::Call {
            let d = r.duration_ns.unwrap();
            assert!(d > 0 && d < 1_000_000_000, "{r:?}");
            assert_eq!(r.exchange, "openstack");
            assert_eq!(r.routing_key, "scalp_rpc");
            assert!(r.bytes_sent > 0 && r.bytes_received > 0);
        }
    }
    // The client waited longer than the server worked, call by call.
    let client: u64 = records
        .iter()
        .filter(|r| r.direction == Direction::Client && r.kind == Kind::Call)
        .map(|r| r.duration_ns.unwrap())
        .sum();
    let server: u64 = records
        .iter()
        .filter(|r| r.direction == Direction::Server && r.kind == Kind::Call)
        .map(|r| r.duration_ns.unwrap())
        .sum();
    assert!(client > server, "client {client} server {server}");
    // Everything else: connection setup, declares, consumes, acks and publisher confirms.
    assert!(methods > 100, "{methods}");
}

#[test]
fn real_traffic_picked_up_mid_stream() {
    let (all, ..) = run_capture(16384, 0);
    // From the second call's publish on: the first call is over on both sides by then.
    let cap = fixture::load(include_str!("testdata/oslo_rpc.txt"));
    let publishes: Vec<u64> = cap
        .syscalls
        .iter()
        .filter(|s| s.sent && s.conn == 3 && s.data.len() > 300)
        .map(|s| s.time_ns)
        .collect();
    let from = publishes[1];
    let (records, counts, tracker, _) = run_capture(16384, from);
    assert_eq!(tracker.pending(), 0);
    assert_eq!(counts.desyncs, 0);
    let started_after = |r: &RpcRecord<u32>| r.time_ns - r.duration_ns.unwrap_or(0) >= from;
    let expected: Vec<_> = all.iter().filter(|r| started_after(r)).cloned().collect();
    assert_eq!(
        expected.len(),
        all.len() - 2,
        "all but the first call's two records"
    );
    assert_eq!(tally(&records), tally(&expected));
}

#[test]
fn real_traffic_with_a_small_capture() {
    // 200 bytes a syscall. A publish is one send of method, header and body frames: its body
    // is cut after ~100 bytes, before `_msg_id` (and before a notification's event_type). A
    // delivered body is received apart and keeps its first 200 bytes, `_msg_id` included.
    let (records, counts, tracker, _) = run_capture(200, 0);
    assert_eq!(counts, Counts::default(), "frames are still followed");
    let expected: BTreeMap<_, _> = [
        // Calls told from casts by the expiration property, unpaired for lack of an id.
        ((CLIENT, "client", "call", "echo", false, false), 2),
        ((CLIENT, "client", "call", "divide", false, false), 2),
        ((CLIENT, "client", "cast", "echo", false, false), 1),
        ((CLIENT, "client", "cast", "divide", false, false), 1),
        ((CLIENT, "client", "other", "", false, false), 2),
        // Their replies: the failure is still seen.
        ((CLIENT, "client", "reply", "", false, false), 3),
        ((CLIENT, "client", "reply", "", true, false), 1),
        ((SERVER, "server", "reply", "", false, false), 3),
        ((SERVER, "server", "reply", "", true, false), 1),
        ((SERVER, "server", "cast", "echo", false, false), 1),
        ((SERVER, "server", "cast", "divide", false, false), 1),
        (
            (
                SERVER,
                "server",
                "notification",
                "scalp.test.start",
                false,
                false,
            ),
            1,
        ),
        (
            (
                SERVER,
                "server",
                "notification",
                "scalp.test.end",
                false,
                false,
            ),
            1,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(tally(&records), expected);
    // The server's calls wait for replies it cannot recognize: the timeout flushes them.
    let mut tracker = tracker;
    assert_eq!(tracker.pending(), 4);
    let mut flushed = Vec::new();
    tracker.expire(u64::MAX, 60_000_000_000, &mut flushed);
    assert_eq!(flushed.len(), 4);
    assert!(
        flushed
            .iter()
            .all(|r| r.timed_out && r.direction == Direction::Server)
    );
}

#[test]
fn real_traffic_cut_anywhere_never_panics_nor_invents_calls() {
    // Every capture size from 1 byte: frames lost and found again, bodies cut anywhere.
    for capture in 1..=420 {
        let (records, counts, tracker, _) = run_capture(capture, 0);
        let paired = records.iter().filter(|r| r.duration_ns.is_some()).count();
        assert!(paired <= 8, "capture {capture}: {paired} paired");
        assert!(records.len() + tracker.pending() <= 24, "capture {capture}");
        if capture >= 420 {
            assert_eq!(counts, Counts::default());
        }
    }
}
