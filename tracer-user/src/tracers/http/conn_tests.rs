//! Connection scenarios: a server or client fed syscall by syscall, as the capture delivers them.

use super::{
    Chunk, Connection, Drops, Ending, Exchange, Protocol, Side, Sniffed, sniff, uwsgi::packet,
};

/// A connection and the exchanges it completed.
struct Wire {
    c: Connection,
    out: Vec<Exchange>,
    t: u64,
    /// Bytes captured per syscall.
    capture: usize,
}

impl Wire {
    fn new(side: Side, protocol: Protocol) -> Wire {
        Wire {
            c: Connection::new(side, protocol),
            out: Vec::new(),
            t: 0,
            capture: 16 * 1024,
        }
    }

    fn server() -> Wire {
        Wire::new(Side::Server, Protocol::Http)
    }

    fn io(&mut self, sent: bool, bytes: &[u8]) -> u64 {
        self.t += 10;
        let data = &bytes[..bytes.len().min(self.capture)];
        self.c.feed(
            &Chunk {
                sent,
                time_ns: self.t,
                len: bytes.len() as u32,
                data,
            },
            &mut self.out,
        );
        self.t
    }

    /// What the peer sent arrives (server: a request; client: a response).
    fn inbound(&mut self, bytes: &[u8]) -> u64 {
        self.io(false, bytes)
    }

    fn outbound(&mut self, bytes: &[u8]) -> u64 {
        self.io(true, bytes)
    }

    fn close(&mut self) {
        self.t += 10;
        self.c.close(self.t, &mut self.out);
    }

    fn summary(&self) -> Vec<(&'static str, &str, u16, u64, u64)> {
        self.out
            .iter()
            .map(|e| {
                (
                    e.method,
                    e.path.as_str(),
                    e.status,
                    e.request_bytes,
                    e.response_bytes,
                )
            })
            .collect()
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn keep_alive_requests_one_after_the_other() {
    let mut w = Wire::server();
    let get = b"GET /items/1?x=2 HTTP/1.1\r\nHost: h\r\n\r\n";
    for i in 0..100 {
        let start = w.inbound(get);
        let end = w.outbound(OK);
        assert_eq!(w.out.len(), i + 1);
        let e = &w.out[i];
        assert_eq!(
            (e.start_ns, e.request_end_ns, e.response_start_ns, e.end_ns),
            (start, start, end, end)
        );
    }
    let e = &w.out[99];
    assert_eq!(
        (e.method, e.path.as_str(), e.host.as_deref(), e.status),
        ("GET", "/items/1", Some("h"), 200)
    );
    assert_eq!(
        (e.request_bytes, e.response_bytes),
        (get.len() as u64, OK.len() as u64)
    );
    assert_eq!(
        (e.protocol, e.side, e.ending),
        (Protocol::Http, Side::Server, Ending::Framed)
    );
    assert!(w.c.take_drops().is_empty());
}

#[test]
fn pipelined_requests_in_one_read_answered_in_order() {
    let mut w = Wire::server();
    let reqs = [
        &b"GET /a HTTP/1.1\r\n\r\n"[..],
        b"HEAD /b HTTP/1.1\r\n\r\n",
        b"DELETE /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz",
    ];
    w.inbound(&reqs.concat());
    assert_eq!(w.c.in_flight(), 3);
    // Answers in one write: the HEAD's carries a Content-Length but no body.
    let answers = [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ];
    w.outbound(&answers.concat());
    assert_eq!(
        w.summary(),
        vec![
            (
                "GET",
                "/a",
                200,
                reqs[0].len() as u64,
                answers[0].len() as u64
            ),
            (
                "HEAD",
                "/b",
                200,
                reqs[1].len() as u64,
                answers[1].len() as u64
            ),
            (
                "DELETE",
                "/c",
                404,
                reqs[2].len() as u64,
                answers[2].len() as u64
            ),
        ]
    );
}

#[test]
fn bodies_split_and_uncaptured_are_skipped_by_length() {
    let mut w = Wire::server();
    w.capture = 100;
    let mib = 1 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nContent-Length: {mib}\r\n\r\n");
    let mut req = head.clone().into_bytes();
    req.extend(vec![b'x'; 40_000]);
    let start = w.inbound(&req);
    let rest = mib - (req.len() - head.len());
    w.inbound(&vec![b'y'; rest - 5]);
    let last = w.inbound(b"yyyyy");
    let mut resp = b"HTTP/1.1 201 Created\r\nContent-Length: 70000\r\n\r\n".to_vec();
    let resp_head = resp.len();
    resp.extend(vec![b'z'; 70_000]);
    let end = w.outbound(&resp);
    let e = &w.out[0];
    assert_eq!(
        (e.status, e.start_ns, e.request_end_ns, e.end_ns),
        (201, start, last, end)
    );
    assert_eq!(e.request_bytes, (head.len() + mib) as u64);
    assert_eq!(e.response_bytes, (resp_head + 70_000) as u64);
    assert!(w.c.take_drops().is_empty());
}

#[test]
fn chunked_request_with_100_continue_then_chunked_response() {
    let mut w = Wire::server();
    let head = b"PUT /obj HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let start = w.inbound(head);
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let first = w.outbound(cont);
    assert!(w.out.is_empty());
    let body = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n";
    w.inbound(&body[..10]);
    let last = w.inbound(&body[10..]);
    let resp_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    w.outbound(resp_head);
    w.outbound(b"5\r\nhello\r\n");
    let end = w.outbound(b"0\r\n\r\n");
    let e = &w.out[0];
    assert_eq!(
        (
            e.status,
            e.start_ns,
            e.request_end_ns,
            e.response_start_ns,
            e.end_ns
        ),
        (200, start, last, first, end)
    );
    assert_eq!(e.request_bytes, (head.len() + body.len()) as u64);
    assert_eq!(
        e.response_bytes,
        (cont.len() + resp_head.len() + 10 + 5) as u64
    );
}

#[test]
fn no_body_statuses_and_early_hints() {
    let mut w = Wire::server();
    for (status, resp) in [
        (204, &b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        (304, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
        (200, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ] {
        w.inbound(b"GET / HTTP/1.1\r\n\r\n");
        w.outbound(resp);
        let e = w.out.last().expect("an exchange");
        assert_eq!((e.status, e.response_bytes), (status, resp.len() as u64));
    }
    assert_eq!(w.out.len(), 3);
}

#[test]
fn response_delimited_by_close() {
    let mut w = Wire::server();
    w.inbound(b"GET /stream HTTP/1.0\r\n\r\n");
    w.outbound(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    w.outbound(b"part one ");
    let end = w.outbound(b"part two");
    assert!(w.out.is_empty());
    w.close();
    let e = &w.out[0];
    assert_eq!(
        (e.status, e.end_ns, e.ending),
        (200, end, Ending::Close { truncated: false })
    );
    assert_eq!(e.response_bytes, 45 + 17);
    // Nothing more after the close.
    w.inbound(b"GET / HTTP/1.1\r\n\r\n");
    w.outbound(OK);
    assert_eq!(w.out.len(), 1);
}

#[test]
fn close_drops_unanswered_requests_and_ends_truncated_responses() {
    let mut w = Wire::server();
    w.inbound(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    w.outbound(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    w.close();
    assert_eq!(w.out[0].ending, Ending::Close { truncated: true });
    assert_eq!(
        w.c.take_drops(),
        Drops {
            requests: 1,
            ..Drops::default()
        }
    );
}

#[test]
fn a_head_in_an_uncaptured_stretch_is_a_desync_and_the_next_request_resyncs() {
    let mut w = Wire::server();
    w.capture = 30;
    // The second request's head lies beyond the capture of the read that carried both.
    w.inbound(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHost: xxxxxxxxxxxx\r\n\r\n");
    w.capture = 16 * 1024;
    w.outbound(OK);
    w.outbound(OK);
    // The response without a request is followed by its framing and counted.
    assert_eq!(
        w.c.take_drops(),
        Drops {
            desyncs: 1,
            requests: 0,
            responses: 1
        }
    );
    assert_eq!(w.summary(), vec![("GET", "/a", 200, 19, 40)]);
    w.inbound(b"GET /c HTTP/1.1\r\n\r\n");
    w.outbound(OK);
    assert_eq!(w.out.last().map(|e| e.path.as_str()), Some("/c"));
}

#[test]
fn a_lost_response_body_ends_at_the_next_status_line() {
    let mut w = Wire::server();
    w.capture = 64;
    w.inbound(b"GET /a HTTP/1.1\r\n\r\n");
    // Several chunks in one write: the second size line is not captured.
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec();
    resp.extend(b"40\r\n");
    resp.extend(vec![b'q'; 64]);
    resp.extend(b"\r\n0\r\n\r\n");
    w.outbound(&resp);
    assert_eq!(w.c.take_drops().desyncs, 1);
    assert!(w.out.is_empty());
    w.inbound(b"GET /b HTTP/1.1\r\n\r\n");
    w.outbound(OK);
    assert_eq!(
        w.summary(),
        vec![
            ("GET", "/a", 200, 19, resp.len() as u64),
            ("GET", "/b", 200, 19, 40)
        ]
    );
    assert_eq!(
        (w.out[0].ending, w.out[1].ending),
        (Ending::Resync, Ending::Framed)
    );
}

#[test]
fn a_lost_request_body_keeps_its_bytes_until_the_next_request() {
    let mut w = Wire::server();
    let head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    w.inbound(head);
    // The second chunk's size line is not captured.
    w.capture = 20;
    let body = [&b"9\r\nabcdefghi\r\n"[..], b"5\r\nhello\r\n0\r\n\r\n"].concat();
    w.inbound(&body);
    w.capture = 16 * 1024;
    assert_eq!(w.c.take_drops().desyncs, 1);
    w.outbound(OK);
    let e = &w.out[0];
    assert_eq!(
        (e.status, e.request_bytes, e.request_end_ns),
        (200, (head.len() + body.len()) as u64, 0)
    );
    w.inbound(b"garbage");
    w.inbound(b"GET /next HTTP/1.1\r\n\r\n");
    w.outbound(OK);
    assert_eq!(w.out[1].path, "/next");
}

#[test]
fn upgrade_stops_parsing() {
    let mut w = Wire::server();
    let req = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    w.inbound(req);
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    w.outbound(&[&resp[..], b"\x81\x05hello"].concat());
    w.inbound(b"\x81\x85garbage");
    w.close();
    assert_eq!(
        w.summary(),
        vec![("GET", "/ws", 101, req.len() as u64, resp.len() as u64)]
    );
    assert!(w.c.take_drops().is_empty());
}

#[test]
fn uwsgi_request_and_response_until_close() {
    let mut w = Wire::new(Side::Server, Protocol::Uwsgi);
    let p = packet(&[
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/items?a=1"),
        ("CONTENT_LENGTH", "5"),
        ("HTTP_HOST", "api"),
    ]);
    let start = w.inbound(&p[..4]);
    w.inbound(&p[4..]);
    let last = w.inbound(b"hello");
    let resp = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{}";
    let end = w.outbound(resp);
    w.close();
    let e = &w.out[0];
    assert_eq!(
        (e.protocol, e.method, e.path.as_str(), e.status),
        (Protocol::Uwsgi, "POST", "/items", 201)
    );
    assert_eq!((e.start_ns, e.request_end_ns, e.end_ns), (start, last, end));
    assert_eq!(
        (e.request_bytes, e.response_bytes),
        (p.len() as u64 + 5, resp.len() as u64)
    );
    assert_eq!(e.ending, Ending::Close { truncated: false });
}

#[test]
fn uwsgi_head_request_with_a_body_written_anyway() {
    let mut w = Wire::new(Side::Server, Protocol::Uwsgi);
    let p = packet(&[("REQUEST_METHOD", "HEAD"), ("PATH_INFO", "/x")]);
    w.inbound(&p);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
    w.outbound(head);
    w.outbound(b"body");
    w.close();
    assert_eq!(
        w.summary(),
        vec![("HEAD", "/x", 200, p.len() as u64, head.len() as u64)]
    );
    assert!(w.c.take_drops().is_empty());
}

#[test]
fn client_side_requests_sent_responses_received() {
    let mut w = Wire::new(Side::Client, Protocol::Http);
    let req = b"POST http://placement/allocations/0a3f9d5c-3b1e-4e0f-9a43-2c6de0b7a8f1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
    let start = w.outbound(req);
    w.outbound(b"{}");
    w.inbound(b"HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\n\r\n");
    let end = w.inbound(b"nope");
    let e = &w.out[0];
    assert_eq!(
        (e.side, e.status, e.start_ns, e.end_ns),
        (Side::Client, 409, start, end)
    );
    assert_eq!(e.path, "/allocations/0a3f9d5c-3b1e-4e0f-9a43-2c6de0b7a8f1");
    assert_eq!(e.request_bytes, req.len() as u64 + 2);
}

#[test]
fn garbage_mid_stream_desyncs_once_and_resyncs() {
    let mut w = Wire::server();
    w.inbound(b"GET / HTTP/1.1\r\nBad Header Line With No End\r\n\r\n");
    w.outbound(OK);
    assert_eq!(w.out.len(), 1, "lines without a colon are ignored");
    w.inbound(b"GET /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
    w.inbound(b"\x00\x01\x02 more garbage");
    w.outbound(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        w.c.take_drops(),
        Drops {
            desyncs: 1,
            requests: 0,
            responses: 1
        }
    );
    w.inbound(b"GET /y HTTP/1.1\r\n\r\n");
    w.outbound(OK);
    assert_eq!(w.out.last().map(|e| e.path.as_str()), Some("/y"));
}

#[test]
fn sniffed_mid_stream_then_followed() {
    // A keep-alive connection first seen in a request body: not a request start.
    let body = b"{\"name\": \"x\"}";
    assert_eq!(sniff(body, false, true), Sniffed::No);
    assert!(Connection::from_sniffed(Sniffed::No, true).is_none());
    let req = b"POST /items HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    let sniffed = sniff(req, false, true);
    let mut c = Connection::from_sniffed(sniffed, true).expect("a request start");
    assert_eq!((c.side(), c.protocol()), (Side::Server, Protocol::Http));
    assert_eq!((c.side().name(), c.protocol().name()), ("server", "http"));
    let mut out = Vec::new();
    for (sent, bytes) in [(false, &req[..]), (true, OK)] {
        let chunk = Chunk {
            sent,
            time_ns: 1,
            len: bytes.len() as u32,
            data: bytes,
        };
        c.feed(&chunk, &mut out);
    }
    assert_eq!(out.len(), 1);
    let uw = packet(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]);
    let c = Connection::from_sniffed(sniff(&uw, false, true), true).expect("uwsgi");
    assert_eq!(c.protocol().name(), "uwsgi");
    let mut total = Drops::default();
    total.add(Drops {
        desyncs: 1,
        requests: 2,
        responses: 3,
    });
    total.add(total);
    assert_eq!((total.desyncs, total.requests, total.responses), (2, 4, 6));
}

/// The syscall shapes strace showed on the real servers (tests/servers.py).
#[test]
fn shapes_of_the_real_servers() {
    // uWSGI http-socket, a generator without Content-Length: writev(head + first piece), one
    // write per piece, close.
    let mut w = Wire::server();
    w.inbound(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    let piece = [b'x'; 1001];
    w.outbound(&[&head[..], &piece].concat());
    let mut last = 0;
    for _ in 1..40 {
        last = w.outbound(&piece);
    }
    w.close();
    assert_eq!(w.out[0].response_bytes, (head.len() + 40 * 1001) as u64);
    assert_eq!(
        (w.out[0].end_ns, w.out[0].ending),
        (last, Ending::Close { truncated: false })
    );
    // nginx → uWSGI: the vars packet and the body in one read (4100 bytes asked), the response
    // in one writev, then uWSGI closes.
    let mut w = Wire::new(Side::Server, Protocol::Uwsgi);
    let p = packet(&[
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "application/json"),
        ("CONTENT_LENGTH", "18"),
        ("REQUEST_URI", "/items"),
        ("PATH_INFO", "/items"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ]);
    w.inbound(&[&p[..], b"{\"name\": \"item-0\"}"].concat());
    let resp =
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    w.outbound(resp);
    w.close();
    assert_eq!(
        w.summary(),
        vec![(
            "POST",
            "/items",
            201,
            p.len() as u64 + 18,
            resp.len() as u64
        )]
    );
    assert_eq!(w.out[0].ending, Ending::Framed);
    // eventlet, keep-alive, a generator: head and the first chunk (5 pieces gathered) in one
    // send, then a send per chunk, then the last chunk alone.
    let mut w = Wire::server();
    w.inbound(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = [&b"138d\r\n"[..], &[b'x'; 5005], b"\r\n"].concat();
    w.outbound(&[&head[..], &chunk].concat());
    for _ in 1..8 {
        w.outbound(&chunk);
    }
    assert!(w.out.is_empty());
    let end = w.outbound(b"0\r\n\r\n");
    assert_eq!((w.out[0].end_ns, w.out[0].ending), (end, Ending::Framed));
    assert_eq!(
        w.out[0].response_bytes,
        (head.len() + 8 * chunk.len() + 5) as u64
    );
    assert!(w.c.take_drops().is_empty());
}
