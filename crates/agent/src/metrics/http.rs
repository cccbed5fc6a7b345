//! `GET /metrics` on a loopback address (`agent.metrics_listen`), served by hyper's HTTP/1.1
//! server (`hyper::server::conn::http1`), which the binary already links for the AWS SDK's and the
//! GitHub client's HTTP.
//!
//! Why hyper, measured (issue 17; a 2-core machine shared with other builds): it replaced a
//! hand-written request parser and response writer of about 130 lines and costs little.
//! - Binary: `cargo build --release -p runner-lifecycle`, `strip` a copy, `ls -l`: 18,906,816
//!   bytes before, 18,984,592 after (+77,776 B, +76 KiB: hyper's server half and `httpdate`).
//! - Latency: `cargo bench -p lifecycle-agent --bench metrics_scrape` (5,000 sequential scrapes, a
//!   new connection each; measured then as an ignored test of this module), 4 runs of each alternated:
//!   p50 36-37 us before, 37-38 us after; p99 93-124 us before, 72-269 us after; 17.4k-21.0k
//!   scrapes/s before, 17.9k-22.6k after. The same within the noise. Re-run later on the same
//!   machine, quieter but slower, 4 runs each alternated, the hand-written responder (e1021dc)
//!   against this one with the `next_step` gauge's 25 more samples: p50 83-85 us against 87-97 us,
//!   9.8k-10.6k scrapes/s against 9.3k-10.2k: about 5 % slower, some microseconds per scrape.
//! - Memory: that measurement's peak RSS (`/usr/bin/time -f %M`): 4.5-4.6 MiB before, 5.1-5.3 MiB after.
//! - What it buys: a maintained HTTP/1.1 parser (HTTP/1.0, bare newlines, `HEAD` without a body,
//!   431 for oversized heads) instead of one of our own, on input from anything on loopback.
//!
//! One request per connection (keep-alive off, `Connection: close`), no TLS, no authentication
//! (hence loopback only). Each connection goes through [`crate::conns`] (16 at once, the idle ones
//! evicted first, 5 s in all) and hyper's own limits: the request head within 2 s
//! (`header_read_timeout`, counted from the connection's start) and within 8 KiB (`max_buf_size`;
//! larger: 431), and once the answer is rendered the client has 2 s to take it.

use super::{lock, Metrics, Shared};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The longest request head accepted (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;
/// How long one connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request head (a scraper sends it at once), and to
/// take its answer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

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

async fn handle(stream: TcpStream, metrics: &Mutex<Metrics>, slot: &crate::conns::Slot) {
    let answered = tokio::sync::Notify::new();
    let service = hyper::service::service_fn(|req: Request<Incoming>| {
        slot.answering();
        let response = respond(req.method(), req.uri().path(), || lock(metrics).render());
        // Rendered: a client that does not read its answer gives its slot to the next one
        // (crate::conns), and has READ_TIMEOUT to take it.
        slot.served();
        answered.notify_one();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        // Done: answered and closed, or no request (closed, timed out, malformed: hyper's 4xx).
        _ = connection.as_mut() => return,
        () = answered.notified() => {}
    }
    let _ = tokio::time::timeout(READ_TIMEOUT, connection).await;
}

/// The answer to a request for `path` (the target without its query). `body` renders the metrics
/// (only for a scrape; `HEAD` renders them too, for `Content-Length`, and hyper sends no body).
pub fn respond(method: &Method, path: &str, body: impl FnOnce() -> String) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n".into());
    }
    match *method {
        Method::GET | Method::HEAD => reply(StatusCode::OK, body()),
        _ => {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let content_type = if status == StatusCode::OK {
        PROMETHEUS_TEXT
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::{Action, Notice, Time};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    /// Status, head (header names lower-cased), body.
    fn parse(resp: &[u8]) -> (u16, String, String) {
        let text = String::from_utf8(resp.to_vec()).expect("utf-8");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {text:?}"));
        let code = head[9..12].parse().expect("code");
        let mut lower = String::new();
        for line in head.split("\r\n") {
            match line.split_once(':') {
                Some((k, v)) => lower.push_str(&format!("{}:{v}\r\n", k.to_ascii_lowercase())),
                None => lower.push_str(&format!("{line}\r\n")),
            }
        }
        (code, lower, body.to_string())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// A served endpoint with one job assigned.
    async fn endpoint() -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared: Shared = Arc::new(Mutex::new(Metrics::new()));
        lock(&shared).on_action(&Action::Notify(Notice::JobAssigned), Time::ZERO, true);
        tokio::spawn(serve(listener, shared));
        addr
    }

    /// Send `request` (then end the writing side if `end`), read to the end: what came back.
    async fn exchange(addr: SocketAddr, request: &[u8], end: bool) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        if end {
            s.shutdown().await.expect("shutdown");
        }
        let mut resp = Vec::new();
        tokio::time::timeout(READ_TIMEOUT * 2, s.read_to_end(&mut resp))
            .await
            .expect("closed in time")
            .expect("read");
        resp
    }

    #[test]
    fn responder_serves_metrics_and_refuses_everything_else() {
        block_on(async {
            let addr = endpoint().await;
            let (code, head, body) = parse(&exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false).await);
            assert_eq!(code, 200);
            assert_eq!(value(&body, "runner_lifecycle_jobs_assigned_total"), 1.0);
            assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}\r\n", body.len())) && head.contains("connection: close"),
                "{head}"
            );
            // HEAD, HTTP/1.0, a query, bare newlines, and a client that half-closes.
            let (code, head, body) = parse(&exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\n\n", true).await);
            assert_eq!((code, body.as_str()), (200, ""));
            assert!(
                head.contains("content-length: ") && !head.contains("content-length: 0"),
                "{head}"
            );

            assert_eq!(parse(&exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false).await).0, 404);
            let (code, head, _) = parse(&exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n", false).await);
            assert_eq!(code, 405);
            assert!(head.contains("allow: GET, HEAD"), "{head}");
            for bad in [
                &b"GET /metrics\r\n\r\n"[..],
                b"GET /metrics HTTP/2\r\n\r\n",
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
                b"GET  /metrics HTTP/1.1\r\n\r\n",
            ] {
                let code = parse(&exchange(addr, bad, false).await).0;
                assert!((400..500).contains(&code), "{bad:?}: {code}");
            }
            let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
            assert_eq!(parse(&exchange(addr, huge.as_bytes(), false).await).0, 431);
            // An unfinished head, then the end: closed, never a scrape.
            let resp = exchange(addr, b"GET /metrics HTTP/1.1\r\n", true).await;
            assert!(resp.is_empty() || parse(&resp).0 == 400, "{resp:?}");
        });
    }

    #[test]
    fn a_client_that_never_speaks_is_closed_and_idle_ones_never_starve_a_scrape() {
        block_on(async {
            let addr = endpoint().await;
            // Silent: closed once the head timeout runs out.
            let started = tokio::time::Instant::now();
            let resp = exchange(addr, b"", false).await;
            assert!(resp.is_empty(), "{resp:?}");
            let took = started.elapsed();
            assert!(
                took >= READ_TIMEOUT - Duration::from_millis(100) && took < READ_TIMEOUT * 2,
                "{took:?}"
            );
            // Twice the cap of idle connections, and a reader that never reads: a scrape still gets in.
            let mut idle = Vec::new();
            for _ in 0..2 * MAX_CONNECTIONS {
                idle.push(TcpStream::connect(addr).await.expect("connect"));
            }
            let mut deaf = TcpStream::connect(addr).await.expect("connect");
            deaf.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.expect("write");
            tokio::time::sleep(crate::conns::FRESH_GRACE * 2).await;
            let started = tokio::time::Instant::now();
            let resp = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", false).await;
            assert_eq!(parse(&resp).0, 200);
            assert!(started.elapsed() < READ_TIMEOUT, "{:?}", started.elapsed());
            drop((idle, deaf));
        });
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
        block_on(async {
            assert!(bind("0.0.0.0:0".parse().expect("addr")).await.is_err());
        });
    }
}
