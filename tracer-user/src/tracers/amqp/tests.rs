//! The AMQP layers together on hand-built streams: the edge cases real traffic seldom shows.

use super::{
    AmqpConnection, Counts, Direction, Event, Kind, RpcTracker, Sniffed, chunk,
    frame::{BODY, HEADER, HEARTBEAT, METHOD, PROTOCOL_HEADER, frame_bytes},
    method::{Method, build},
    sniff,
};
use crate::tracers::sql::Chunk;

fn wrap(inner: &str) -> String {
    serde_json::json!({"oslo.version": "2.0", "oslo.message": inner}).to_string()
}

/// A whole message as kombu publishes it (or RabbitMQ delivers it): method, header, one body
/// frame per `frame_max` bytes.
fn message(method: Vec<u8>, body: &[u8], expiration: Option<&str>, frame_max: usize) -> Vec<u8> {
    let mut v = frame_bytes(METHOD, 1, &method);
    v.extend(frame_bytes(
        HEADER,
        1,
        &build::header(body.len() as u64, None, expiration),
    ));
    for part in body.chunks(frame_max) {
        v.extend(frame_bytes(BODY, 1, part));
    }
    v
}

fn call_body(method: &str, id: &str) -> String {
    wrap(&format!(
        r#"{{"method": "{method}", "args": {{}}, "_msg_id": "{id}", "_reply_q": "reply_1", "_unique_id": "u"}}"#
    ))
}

fn reply_body(id: &str, failure: bool) -> String {
    let failure = if failure {
        r#""{\"class\": \"E\"}""#
    } else {
        "null"
    };
    wrap(&format!(
        r#"{{"result": 1, "failure": {failure}, "ending": true, "_msg_id": "{id}"}}"#
    ))
}

fn messages(events: Vec<Event>) -> Vec<super::Message> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            Event::Method { .. } => None,
        })
        .collect()
}

#[test]
fn client_call_paired_with_its_reply_on_another_connection() {
    let mut publisher = AmqpConnection::new(true, 65536);
    let mut listener = AmqpConnection::new(true, 65536);
    let mut tracker = RpcTracker::new(100);
    let mut ev = Vec::new();
    publisher.feed(&chunk(true, 1, PROTOCOL_HEADER), &mut ev);
    assert!(publisher.seen_from_start());
    let call = message(
        build::publish("openstack", "compute.host1"),
        call_body("build_instance", "m1").as_bytes(),
        Some("60000"),
        131072,
    );
    publisher.feed(&chunk(true, 100, &call), &mut ev);
    let published = messages(std::mem::take(&mut ev));
    assert_eq!(published.len(), 1);
    assert!(published[0].body_whole);
    assert_eq!(published[0].wire_bytes, call.len() as u64);
    let mut records = Vec::new();
    tracker.message(&7u32, &published[0], &mut records);
    assert!(records.is_empty());
    assert_eq!(tracker.pending(), 1);
    // The reply, received frame by frame in py-amqp's 7 / payload / 1 pattern.
    let reply = message(
        build::deliver(1, "", "reply_1"),
        reply_body("m1", true).as_bytes(),
        None,
        131072,
    );
    let mut at = 0;
    let mut t = 500;
    while at < reply.len() {
        let size = u32::from_be_bytes(reply[at + 3..at + 7].try_into().unwrap()) as usize;
        for part in [7, size, 1] {
            listener.feed(&chunk(false, t, &reply[at..at + part]), &mut ev);
            at += part;
            t += 1;
        }
    }
    let delivered = messages(std::mem::take(&mut ev));
    assert_eq!(delivered.len(), 1);
    tracker.message(&7u32, &delivered[0], &mut records);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.direction, r.kind, r.method.as_str(), r.error),
        (Direction::Client, Kind::Call, "build_instance", true)
    );
    assert_eq!(
        (r.exchange.as_str(), r.routing_key.as_str()),
        ("openstack", "compute.host1")
    );
    assert_eq!(r.duration_ns, Some(t - 1 - 100));
    assert_eq!(
        (r.bytes_sent, r.bytes_received),
        (call.len() as u64, reply.len() as u64)
    );
    assert_eq!(tracker.pending(), 0);
    assert_eq!(listener.take_counts(), Counts::default());
}

#[test]
fn server_side_deliver_then_reply_publish_and_casts() {
    let mut c = AmqpConnection::new(true, 65536);
    let mut tracker = RpcTracker::new(100);
    let mut ev = Vec::new();
    let mut records = Vec::new();
    // Several frames and messages in one receive, split mid-frame into the next.
    let stream = [
        message(
            build::deliver(1, "openstack", "scalp_rpc"),
            call_body("echo", "m2").as_bytes(),
            Some("30000"),
            50,
        ),
        frame_bytes(HEARTBEAT, 0, b""),
        message(
            build::deliver(2, "openstack", "scalp_rpc"),
            wrap(r#"{"method": "echo", "args": {}, "_unique_id": "u"}"#).as_bytes(),
            None,
            131072,
        ),
    ]
    .concat();
    c.feed(&chunk(false, 10, &stream[..stream.len() - 30]), &mut ev);
    c.feed(&chunk(false, 20, &stream[stream.len() - 30..]), &mut ev);
    for m in messages(std::mem::take(&mut ev)) {
        tracker.message(&1u8, &m, &mut records);
    }
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].direction, records[0].kind),
        (Direction::Server, Kind::Cast)
    );
    let reply = message(
        build::publish("", "reply_1"),
        reply_body("m2", false).as_bytes(),
        None,
        131072,
    );
    c.feed(&chunk(true, 90, &reply), &mut ev);
    for m in messages(std::mem::take(&mut ev)) {
        tracker.message(&1u8, &m, &mut records);
    }
    let r = &records[1];
    assert_eq!(
        (r.direction, r.kind, r.method.as_str(), r.error),
        (Direction::Server, Kind::Call, "echo", false)
    );
    assert_eq!(r.routing_key, "scalp_rpc");
    // The call's body ended in the first receive (at 10).
    assert_eq!(r.duration_ns, Some(80));
    assert_eq!(c.take_counts(), Counts::default());
}

#[test]
fn large_bodies_beyond_the_capture_are_skipped_by_size() {
    let mut c = AmqpConnection::new(true, 1024);
    let mut ev = Vec::new();
    let big = call_body("resize", &"x".repeat(20_000));
    let wire = message(
        build::publish("nova", "compute"),
        big.as_bytes(),
        None,
        8192,
    );
    // One send of everything, 300 bytes captured.
    let sent = Chunk {
        sent: true,
        time_ns: 5,
        len: wire.len() as u32,
        data: &wire[..300],
    };
    c.feed(&sent, &mut ev);
    // The next frames are still followed.
    let ack = frame_bytes(METHOD, 1, &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    c.feed(&chunk(true, 6, &ack), &mut ev);
    assert_eq!(
        c.take_counts().desyncs,
        1,
        "one syscall of several frames, cut"
    );
    // That was several frames in one cut syscall: the first body frame's end is past the
    // capture and the next header with it. A single-frame cut is skipped without loss:
    let mut c = AmqpConnection::new(true, 1024);
    let one = message(
        build::publish("nova", "compute"),
        big.as_bytes(),
        None,
        131072,
    );
    let (head, body) = one.split_at(one.len() - big.len() - 8);
    c.feed(&chunk(true, 5, head), &mut ev);
    let body_send = Chunk {
        sent: true,
        time_ns: 6,
        len: body.len() as u32,
        data: &body[..100],
    };
    c.feed(&body_send, &mut ev);
    c.feed(&chunk(true, 7, &ack), &mut ev);
    let ms = messages(std::mem::take(&mut ev));
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].body_size, big.len() as u64);
    assert_eq!(
        ms[0].body.len(),
        100 - 7,
        "the captured bytes after the frame header"
    );
    assert!(!ms[0].body_whole);
    assert_eq!(c.take_counts(), Counts::default());
}

#[test]
fn sniffs_the_start_and_whole_frames_but_not_other_protocols() {
    assert_eq!(sniff(b"AMQP\x00\x00\x09\x01"), Some(Sniffed::Start));
    let publish = message(build::publish("x", "y"), b"{}", None, 100);
    assert_eq!(sniff(&publish), Some(Sniffed::MidStream));
    // The method frame is 19 bytes: its frame-end is the check.
    assert_eq!(sniff(&publish[..18]), None, "no frame-end seen");
    assert_eq!(sniff(&publish[..19]), Some(Sniffed::MidStream));
    let mut bad_end = publish.clone();
    bad_end[18] = 0;
    assert_eq!(sniff(&bad_end), None);
    assert_eq!(
        sniff(&frame_bytes(HEARTBEAT, 0, b"")),
        Some(Sniffed::MidStream)
    );
    let unknown_method = frame_bytes(METHOD, 1, &[0, 61, 0, 40]);
    assert_eq!(sniff(&unknown_method), None);
    for other in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x21\x00\x00\x00\x03SELECT 1",
        b"Q\x00\x00\x00\x0dSELECT 1;\x00",
        b"get foo\r\n",
        b"\x80\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00foo",
        b"{\"oslo.version\": \"2.0\"}",
        b"",
    ] {
        assert_eq!(sniff(other), None, "{other:?}");
    }
    // Random bytes: a type byte of 1/2/3/8, a small channel, a size that ends inside, and 0xCE
    // there almost never line up.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hits = 0;
    for _ in 0..100_000 {
        let mut buf = [0u8; 64];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        hits += u32::from(sniff(&buf).is_some());
    }
    assert_eq!(hits, 0);
}

/// A message as the connection would hand it over.
fn msg(sent: bool, method: Vec<u8>, body: &str, end_ns: u64) -> super::Message {
    let mut c = AmqpConnection::new(true, 65536);
    let mut ev = Vec::new();
    c.feed(
        &chunk(
            sent,
            end_ns,
            &message(method, body.as_bytes(), None, 131072),
        ),
        &mut ev,
    );
    messages(ev).pop().unwrap()
}

#[test]
fn tracker_heartbeats_timeouts_ended_processes_and_overflow() {
    let mut t = RpcTracker::new(2);
    let mut out = Vec::new();
    let publish = || build::publish("openstack", "conductor");
    t.message(
        &1u32,
        &msg(true, publish(), &call_body("a", "m1"), 100),
        &mut out,
    );
    t.message(
        &2u32,
        &msg(true, publish(), &call_body("b", "m2"), 150),
        &mut out,
    );
    // Full: the third call is recorded unpaired at once.
    t.message(
        &2u32,
        &msg(true, publish(), &call_body("c", "m3"), 160),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].method.as_str(), out[0].duration_ns), ("c", None));
    // A call-monitor heartbeat completes nothing.
    let beat = wrap(r#"{"result": null, "failure": null, "ending": false, "_msg_id": "m1"}"#);
    t.message(
        &1u32,
        &msg(false, build::deliver(1, "", "reply_1"), &beat, 200),
        &mut out,
    );
    assert_eq!((out.len(), t.pending()), (1, 2));
    // The same id from another process is another call: no reply for process 2 here.
    t.message(
        &2u32,
        &msg(
            false,
            build::deliver(2, "", "reply_1"),
            &reply_body("m1", false),
            210,
        ),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!((out[1].kind, out[1].key), (Kind::Reply, 2));
    // m1 waited 150 at 250: not yet with a 200 timeout; m2 too. At 360, m1 has.
    t.expire(250, 200, &mut out);
    assert_eq!(out.len(), 2);
    t.expire(301, 200, &mut out);
    assert_eq!(out.len(), 3);
    assert!(out[2].timed_out && out[2].method == "a" && out[2].time_ns == 301);
    // Process 2 ends: its pending call goes too.
    t.end(&2u32, 400, &mut out);
    assert!(out[3].timed_out && out[3].method == "b");
    assert_eq!(t.pending(), 0);
    // Basic.Return of a reply whose queue is gone.
    let mut ret = vec![0, 60, 0, 50, 1, 56];
    build::shortstr(&mut ret, "NO_ROUTE");
    build::shortstr(&mut ret, "");
    build::shortstr(&mut ret, "reply_gone");
    t.message(
        &1u32,
        &msg(false, ret, &reply_body("m9", false), 500),
        &mut out,
    );
    assert_eq!(out.len(), 4);
    let counts: super::RpcCounts = t.take_counts();
    assert_eq!(
        (
            counts.overflow,
            counts.heartbeats,
            counts.returned,
            counts.duplicate_ids
        ),
        (1, 1, 1, 0)
    );
    // A second call with a pending id: the first is recorded unanswered.
    t.message(
        &1u32,
        &msg(true, publish(), &call_body("x", "dup"), 600),
        &mut out,
    );
    t.message(
        &1u32,
        &msg(true, publish(), &call_body("y", "dup"), 700),
        &mut out,
    );
    assert!(out[4].timed_out && out[4].method == "x");
    assert_eq!(t.take_counts().duplicate_ids, 1);
}

#[test]
fn close_codes_and_other_methods_come_out_as_events() {
    let mut c = AmqpConnection::new(true, 1024);
    let mut ev = Vec::new();
    let mut close = vec![0, 20, 0, 40, 1, 148];
    build::shortstr(&mut close, "NOT_FOUND - no queue 'q'");
    close.extend_from_slice(&[0, 50, 0, 10]);
    c.feed(&chunk(false, 1, &frame_bytes(METHOD, 1, &close)), &mut ev);
    c.feed(
        &chunk(false, 2, &frame_bytes(METHOD, 0, &[0, 10, 0, 51])),
        &mut ev,
    );
    assert!(matches!(
        &ev[0],
        Event::Method {
            sent: false,
            channel: 1,
            method: Method::Close {
                reply_code: 404,
                ..
            },
            ..
        }
    ));
    assert!(c.closed());
}

#[test]
fn picked_up_mid_stream_inside_large_reads() {
    // A client reading 100 bytes at a time (not frame by frame), picked up 37 bytes into the
    // stream: the first whole frame inside a read is found, the message it starts is lost only
    // if it was under way.
    let one = |i: u64| {
        message(
            build::deliver(i, "openstack", "scalp_rpc"),
            call_body("echo", &format!("m{i}")).as_bytes(),
            None,
            131072,
        )
    };
    let stream: Vec<u8> = (1..=20).flat_map(one).collect();
    let mut c = AmqpConnection::new(false, 65536);
    let mut ev = Vec::new();
    for (i, part) in stream[37..].chunks(100).enumerate() {
        c.feed(&chunk(false, i as u64, part), &mut ev);
    }
    let got = messages(ev);
    let counts = c.take_counts();
    assert_eq!(counts.desyncs, 0);
    // The first message was under way: its header and body frames are skipped; every later
    // one is whole.
    assert_eq!(got.len(), 19);
    assert!(matches!(
        got[0].method,
        Method::Deliver {
            delivery_tag: 2,
            ..
        }
    ));
    assert!(got.iter().all(|m| m.body_whole));
    assert!(counts.skipped_frames <= 2, "{counts:?}");
}
