//! `cargo bench -p lifecycle-agent --bench metrics_scrape`: how fast the agent's `GET /metrics`
//! answers. Sequential scrapes against the real endpoint on loopback, a fresh connection each (as
//! Prometheus does when the target closes). Prints figures; asserts only that each answer is a 200.
//! The figures in `crates/agent/src/metrics/http.rs` come from here.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock by definition

use lifecycle_agent::metrics::{bind, lock, serve, Metrics, Shared};
use lifecycle_core::{Action, Notice, Time};
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Scrapes per run.
const SCRAPES: usize = 5_000;

fn main() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
            let shared: Shared = Arc::new(Mutex::new(Metrics::new()));
            for _ in 0..3 {
                lock(&shared).on_action(&Action::Notify(Notice::JobAssigned), Time::ZERO, true);
            }
            tx.send(listener.local_addr().expect("addr")).expect("send");
            serve(listener, shared).await;
        });
    });
    let addr = rx.recv().expect("addr");
    let mut took = Vec::with_capacity(SCRAPES);
    let all = Instant::now();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read");
        took.push(t.elapsed());
        assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp));
    }
    let total = all.elapsed();
    took.sort();
    let us = |q: f64| took[((SCRAPES as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{SCRAPES} scrapes in {:.3} s: {:.0}/s; latency p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        total.as_secs_f64(),
        SCRAPES as f64 / total.as_secs_f64(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(1.0)
    );
}
