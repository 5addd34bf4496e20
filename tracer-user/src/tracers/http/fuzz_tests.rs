//! Random bytes and mutated messages, fed as random syscalls: nothing panics, and valid messages
//! among the garbage still make exchanges.

use super::{Chunk, Connection, Protocol, Side, uwsgi::packet};

/// xorshift64*: deterministic pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn random_bytes_and_mutated_messages_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: [&[u8]; 5] = [
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ];
    let uw = packet(&[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "3")]);
    let mut exchanges = 0;
    for round in 0..3000 {
        let side = if round % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let protocol = if round % 3 == 0 {
            Protocol::Uwsgi
        } else {
            Protocol::Http
        };
        let mut c = Connection::new(side, protocol);
        let mut out = Vec::new();
        for step in 0..rng.below(40) {
            let mut bytes: Vec<u8> = match rng.below(3) {
                0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                1 if protocol == Protocol::Uwsgi && rng.below(2) == 0 => uw.clone(),
                _ => seeds[rng.below(seeds.len() as u64) as usize].to_vec(),
            };
            for _ in 0..rng.below(4) {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] = rng.next() as u8;
                }
            }
            let cut = rng.below(bytes.len() as u64 + 1) as usize;
            let len = (bytes.len() as u64 + rng.below(3) * rng.below(1 << 20)) as u32;
            c.feed(
                &Chunk {
                    sent: rng.below(2) == 0,
                    time_ns: step,
                    len,
                    data: &bytes[..cut],
                },
                &mut out,
            );
        }
        c.close(1 << 40, &mut out);
        let _ = c.take_drops();
        exchanges += out.len();
    }
    assert!(exchanges > 0, "some valid messages still made it through");
}
