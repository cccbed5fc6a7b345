//! The HTTP/1.1 responder of `GET /metrics` on a loopback address (`agent.metrics_listen`).
//!
//! Hand-written on purpose: the agent needs one read-only endpoint, and a server framework would add
//! more code to the binary than this whole module. One request per connection, `Connection: close`,
//! no keep-alive, no TLS, no authentication (hence loopback only).

use super::{lock, Metrics, Shared};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long one connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request head (a scraper sends it at once).
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `addr` may serve metrics: loopback only, because the endpoint has no authentication.
pub fn check_listen(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "`{addr}` is not a loopback address; the metrics endpoint has no authentication and listens on \
             127.0.0.0/8 or [::1] only (e.g. 127.0.0.1:9464); scrape it from the host or through a local proxy"
        ))
    }
}

/// Bind the endpoint (refusing anything but loopback).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    check_listen(addr).map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    TcpListener::bind(addr).await
}

/// Serve `GET /metrics` forever.
pub async fn serve(listener: TcpListener, metrics: Shared) {
    // Idle connections and clients that never read cannot starve scrapes (crate::conns).
    let limiter = crate::conns::Limiter::new(MAX_CONNECTIONS);
    crate::conns::serve(
        listener,
        limiter,
        CONNECTION_TIMEOUT,
        "metrics endpoint: accept failed",
        |stream, slot| {
            let metrics = metrics.clone();
            async move { handle(stream, &metrics, &slot).await }
        },
    )
    .await;
}

async fn handle(mut stream: TcpStream, metrics: &Mutex<Metrics>, slot: &crate::conns::Slot) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        loop {
            if head_end(&head).is_some() || head.len() > MAX_HEAD {
                break;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(READ_TIMEOUT, read_head).await.is_err() || head.is_empty() {
        return;
    }
    slot.answering();
    let response = respond(&head, || lock(metrics).render());
    // Rendered: a client that does not read its answer gives its slot to the next one (crate::conns),
    // and has READ_TIMEOUT to take it.
    slot.served();
    let write = async {
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, write).await;
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"))
}

/// The whole HTTP response to a request head. `body` renders the metrics (only for a scrape).
pub fn respond(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    if head.len() > MAX_HEAD || head_end(head).is_none() {
        return reply(400, "Bad Request", &[], "incomplete or oversized request\n", true);
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(first) else {
        return reply(400, "Bad Request", &[], "request line is not text\n", true);
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reply(400, "Bad Request", &[], "malformed request line\n", true);
    };
    if !version.starts_with("HTTP/1.") {
        return reply(400, "Bad Request", &[], "HTTP/1.x only\n", true);
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return reply(404, "Not Found", &[], "not found; metrics are at /metrics\n", true);
    }
    match method {
        "GET" => reply(200, "OK", &[], &body(), true),
        "HEAD" => reply(200, "OK", &[], &body(), false),
        _ => reply(
            405,
            "Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            "only GET and HEAD\n",
            true,
        ),
    }
}

fn reply(code: u16, text: &str, extra: &[(&str, &str)], body: &str, with_body: bool) -> Vec<u8> {
    let content_type = if code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::{Action, Notice, Time};
    use std::sync::Arc;

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    fn parse(resp: &[u8]) -> (u16, String, String) {
        let text = String::from_utf8(resp.to_vec()).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let code = head[9..12].parse().expect("code");
        (code, head.to_string(), body.to_string())
    }

    #[test]
    fn responder_serves_metrics_and_refuses_everything_else() {
        let (code, head, body) = parse(&respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || "m 1\n".into()));
        assert_eq!((code, body.as_str()), (200, "m 1\n"));
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        assert!(
            head.contains("Content-Length: 4\r\n") && head.contains("Connection: close"),
            "{head}"
        );
        let (code, head, body) = parse(&respond(b"HEAD /metrics?x=1 HTTP/1.0\n\n", || "m 1\n".into()));
        assert_eq!((code, body.as_str()), (200, ""));
        assert!(head.contains("Content-Length: 4"), "{head}");

        let never = || -> String { panic!("rendered for a refused request") };
        assert_eq!(parse(&respond(b"GET / HTTP/1.1\r\n\r\n", never)).0, 404);
        let (code, head, _) = parse(&respond(b"POST /metrics HTTP/1.1\r\n\r\n", never));
        assert_eq!(code, 405);
        assert!(head.contains("Allow: GET, HEAD"));
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(&respond(bad, never)).0, 400, "{bad:?}");
        }
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&respond(huge.as_bytes(), never)).0, 400);
    }

    #[test]
    fn only_loopback_addresses_may_serve() {
        for ok in ["127.0.0.1:9464", "127.1.2.3:1", "[::1]:9464"] {
            assert!(check_listen(ok.parse().expect(ok)).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:9464", "10.0.0.5:9464", "[::]:9464", "169.254.169.254:80"] {
            let e = check_listen(bad.parse().expect(bad)).expect_err(bad);
            assert!(e.contains("loopback"), "{e}");
        }
    }

    #[test]
    fn serves_over_tcp_on_loopback() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let shared: Shared = Arc::new(Mutex::new(Metrics::new()));
            lock(&shared).on_action(&Action::Notify(Notice::JobAssigned), Time::ZERO, true);
            tokio::spawn(serve(listener, shared.clone()));
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .expect("write");
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await.expect("read");
            let (code, _, body) = parse(&resp);
            assert_eq!(code, 200);
            assert_eq!(value(&body, "runner_lifecycle_jobs_assigned_total"), 1.0);
            assert!(bind("0.0.0.0:0".parse().expect("addr")).await.is_err());
        });
    }

    /// Sequential scrapes against the real endpoint (a fresh connection each, as Prometheus does
    /// when the target closes): the figures in the module docs.
    #[test]
    #[ignore = "a measurement: cargo test --release -p lifecycle-agent --lib -- --ignored scrape_latency --nocapture"]
    fn scrape_latency() {
        use std::io::{Read as _, Write as _};
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
        let n = 5_000;
        let mut took = Vec::with_capacity(n);
        let all = tokio::time::Instant::now();
        for _ in 0..n {
            let t = tokio::time::Instant::now();
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
        let us = |q: f64| took[((n as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
        println!(
            "{n} scrapes in {:.3} s: {:.0}/s; latency p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(1.0)
        );
    }
}
