//! A small IMDSv2 client (EC2 User Guide, "Use the Instance Metadata Service to access instance
//! metadata", IMDSv2): `PUT /latest/api/token` with a TTL header, then GETs carrying the token.
//!
//! Plain HTTP/1.1 over a fresh loopback-local TCP connection per request: IMDS is link-local and the
//! requests are tiny. The token is refreshed before it expires and whenever IMDS answers 401; 404
//! means "nothing there"; the base URL is injectable for tests. The token is a credential: it is
//! never logged.
//!
//! Not `aws_config::imds::client::Client` (also in the binary, for the credential chain): measured,
//! it panics on a token TTL of `u64::MAX`, keeps a token IMDS has forgotten (every read 401 until
//! the token's 6 h expire) and retries a 500 for 4.6 s; docs/agent.md, "Why the agent keeps its own
//! IMDS client".

use crate::clock::now_instant;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, the longest TTL IMDS grants: one token request per six hours when all goes well.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// IMDS answers in well under a millisecond on the host; a second means it is not answering.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Metadata answers are short; anything bigger is not IMDS.
const MAX_RESPONSE: usize = 64 * 1024;

/// Where IMDS listens: `http://host[:port]` (IMDS speaks plain HTTP only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parse a base URL such as `http://169.254.169.254`, `http://127.0.0.1:8080/` or
    /// `http://[fd00:ec2::254]`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: IMDS endpoints are http:// URLs"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{url}`: junk after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            None => 80,
        };
        Ok(Endpoint { host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why an IMDS read failed.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// No answer: connection refused, reset or timed out.
    #[error("IMDS unreachable at {endpoint}: {message}")]
    Unreachable {
        /// host:port.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// IMDS answered with an unexpected status.
    #[error("IMDS answered {status} for {path}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The path asked for.
        path: String,
    },
    /// The answer was not HTTP as expected.
    #[error("IMDS answer malformed: {0}")]
    Protocol(String),
}

struct Response {
    status: u16,
    ttl: Option<u64>,
    body: String,
}

/// An IMDSv2 client holding its session token.
#[derive(Debug)]
pub struct ImdsClient {
    endpoint: Endpoint,
    ttl: Duration,
    timeout: Duration,
    token: Option<Token>,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself: it grants metadata access, credentials included.
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

impl ImdsClient {
    /// A client for `endpoint` with the default token TTL and request timeout.
    pub fn new(endpoint: Endpoint) -> ImdsClient {
        ImdsClient {
            endpoint,
            ttl: DEFAULT_TOKEN_TTL,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            token: None,
        }
    }

    /// Use another token TTL (1 s to 6 h; tests use a short one to exercise refreshes).
    pub fn with_token_ttl(mut self, ttl: Duration) -> ImdsClient {
        self.ttl = ttl.clamp(Duration::from_secs(1), DEFAULT_TOKEN_TTL);
        self
    }

    /// Use another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> ImdsClient {
        self.timeout = timeout;
        self
    }

    /// GET `/latest/<path>`. `Ok(None)` when IMDS answers 404 (no such item, e.g. no spot notice).
    pub async fn get(&mut self, path: &str) -> Result<Option<String>, ImdsError> {
        let full = format!("/latest/{path}");
        for attempt in 0..2 {
            let token = self.token().await?;
            let request = format!(
                "GET {full} HTTP/1.1\r\nHost: {}\r\n{TOKEN_HEADER}: {token}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                self.endpoint.authority()
            );
            let resp = self.exchange(&request).await?;
            match resp.status {
                200 => return Ok(Some(resp.body)),
                404 => return Ok(None),
                // 401: the token expired or IMDS restarted and forgot it. Get a new one, once.
                401 if attempt == 0 => self.token = None,
                status => return Err(ImdsError::Status { status, path: full }),
            }
        }
        Err(ImdsError::Status {
            status: 401,
            path: full,
        })
    }

    /// GET with bounded backoff (100 ms doubling to 1 s) until `deadline` passes; for the one-off
    /// reads at start (instance id, region) where an IMDS restart should not fail the agent.
    pub async fn get_retrying(&mut self, path: &str, deadline: Duration) -> Result<Option<String>, ImdsError> {
        // Unjittered (IMDS is the host's own service, no fleet shares it): the nominal waits of the
        // one backoff rule.
        const BACKOFF: lifecycle_core::Backoff =
            lifecycle_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let start = now_instant();
        let mut failures = 0u32;
        loop {
            match self.get(path).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = BACKOFF.nominal(failures);
                    if start.elapsed().saturating_add(delay) >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn token(&mut self) -> Result<String, ImdsError> {
        if let Some(t) = &self.token {
            if now_instant() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let request = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {}\r\nX-aws-ec2-metadata-token-ttl-seconds: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.endpoint.authority(),
            self.ttl.as_secs()
        );
        let obtained = now_instant();
        let resp = self.exchange(&request).await?;
        if resp.status != 200 {
            self.token = None;
            return Err(ImdsError::Status {
                status: resp.status,
                path: "/latest/api/token".into(),
            });
        }
        let value = resp.body.trim().to_string();
        if value.is_empty() || value.contains(['\r', '\n']) {
            return Err(ImdsError::Protocol("empty or multi-line token".into()));
        }
        self.token = Some(Token {
            value: value.clone(),
            refresh_at: refresh_at(obtained, resp.ttl, self.ttl),
        });
        Ok(value)
    }

    async fn exchange(&self, request: &str) -> Result<Response, ImdsError> {
        let authority = self.endpoint.authority();
        let unreachable = |message: String| ImdsError::Unreachable {
            endpoint: authority.clone(),
            message,
        };
        let io = async {
            let mut stream = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 2048];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE {
                    break;
                }
                if response_complete(&buf) {
                    break;
                }
            }
            Ok::<_, std::io::Error>(buf)
        };
        let buf = match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {:?}", self.timeout))),
        };
        if buf.is_empty() {
            return Err(unreachable("connection closed without an answer".into()));
        }
        parse_response(&buf)
    }
}

/// When to refresh a token obtained at `obtained` for which IMDS announced `granted` seconds after
/// `asked` was requested. IMDS may grant less than asked, so its TTL header is trusted, but only
/// within 1 s and `asked` (itself at most 6 h, the longest IMDS grants): whatever answers on the
/// IMDS address may be an impostor, and `u64::MAX` seconds would overflow the clock. Refresh at
/// 80% of the lifetime so a token never expires between the check and the request.
fn refresh_at(obtained: Instant, granted: Option<u64>, asked: Duration) -> Instant {
    let asked = asked.clamp(Duration::from_secs(1), DEFAULT_TOKEN_TTL);
    let ttl = granted.map_or(asked, |s| Duration::from_secs(s).clamp(Duration::from_secs(1), asked));
    let early = ttl.saturating_sub(ttl / 5);
    obtained.checked_add(early).unwrap_or(obtained)
}

/// A spot interruption notice (`meta-data/spot/instance-action`, EC2 User Guide, "Spot Instance
/// interruption notices"): `{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpotNotice {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// When it happens (RFC 3339), as IMDS wrote it.
    pub time: String,
}

/// Parse a spot notice. The notice's existence is what matters (the agent drains either way);
/// this is for the log, so anything but the documented shape is an error, never a panic.
pub fn parse_spot_notice(body: &str) -> Result<SpotNotice, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        action: String,
        time: String,
    }
    let raw: Raw = serde_json::from_str(body.trim()).map_err(|e| format!("not a spot notice: {e}"))?;
    if !matches!(raw.action.as_str(), "terminate" | "stop" | "hibernate") {
        return Err(format!(
            "unknown spot action `{}`",
            lifecycle_escape::clip(&raw.action, 40)
        ));
    }
    let time_ok = raw.time.len() <= 40
        && !raw.time.is_empty()
        && raw
            .time
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:.+".contains(&b));
    if !time_ok {
        return Err(format!(
            "spot notice time `{}` is not a timestamp",
            lifecycle_escape::clip(&raw.time, 40)
        ));
    }
    Ok(SpotNotice {
        action: raw.action,
        time: raw.time,
    })
}

/// Whether `buf` holds a whole response (headers plus a Content-Length or chunked body).
fn response_complete(buf: &[u8]) -> bool {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= len;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return find(body, b"0\r\n\r\n").is_some();
    }
    false // read to EOF
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn parse_response(buf: &[u8]) -> Result<Response, ImdsError> {
    let head_end = find(buf, b"\r\n\r\n").ok_or_else(|| ImdsError::Protocol("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("http/1.") {
        return Err(ImdsError::Protocol(format!(
            "not an HTTP/1 status line: `{}`",
            lifecycle_escape::clip(status_line, 80)
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ImdsError::Protocol(format!("bad status line `{}`", lifecycle_escape::clip(status_line, 80))))?;
    let raw_body = &buf[head_end + 4..];
    let body = if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        raw_body
            .get(..len)
            .ok_or_else(|| ImdsError::Protocol("body shorter than Content-Length".into()))?
            .to_vec()
    } else if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    let ttl = header(&head, TTL_HEADER).and_then(|v| v.parse().ok());
    let body = String::from_utf8(body).map_err(|_| ImdsError::Protocol("body is not UTF-8".into()))?;
    Ok(Response { status, ttl, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, ImdsError> {
    let bad = || ImdsError::Protocol("bad chunked body".into());
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&raw[..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| bad())?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = raw.get(..size).ok_or_else(bad)?;
        out.extend_from_slice(data);
        raw = raw.get(size + 2..).ok_or_else(bad)?;
    }
}

/// The paths the agent polls (EC2 User Guide, "Instance metadata categories").
pub mod paths {
    /// Where the Auto Scaling group is taking the instance.
    pub const TARGET_LIFECYCLE_STATE: &str = "meta-data/autoscaling/target-lifecycle-state";
    /// A spot interruption notice (404 until there is one).
    pub const SPOT_INSTANCE_ACTION: &str = "meta-data/spot/instance-action";
    /// A rebalance recommendation (404 until there is one).
    pub const REBALANCE: &str = "meta-data/events/recommendations/rebalance";
    /// The instance id.
    pub const INSTANCE_ID: &str = "meta-data/instance-id";
    /// The region.
    pub const REGION: &str = "meta-data/placement/region";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("http://169.254.169.254").expect("v4"),
            Endpoint {
                host: "169.254.169.254".into(),
                port: 80
            }
        );
        assert_eq!(Endpoint::parse("http://127.0.0.1:8080/").expect("port").port, 8080);
        let v6 = Endpoint::parse("http://[fd00:ec2::254]").expect("v6");
        assert_eq!(v6.authority(), "[fd00:ec2::254]:80");
        for bad in [
            "https://x",
            "169.254.169.254",
            "http://",
            "http://h:port",
            "http://[::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_parse_with_length_chunks_or_eof() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\nTerminated",
        )
        .expect("len");
        assert_eq!((r.status, r.ttl, r.body.as_str()), (200, Some(60), "Terminated"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nIn\r\n\r\n5\r\nServi\r\n2\r\nce\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(r.body, "In\r\nService");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nNot Found").expect("eof");
        assert_eq!(r.status, 404);
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    /// A one-route fake IMDS: counts token requests, can expire tokens (401) or fail.
    async fn fake_imds(expire_first_get: bool, token_ttl_answer: Option<u64>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tokens = Arc::new(AtomicUsize::new(0));
        let t = tokens.clone();
        tokio::spawn(async move {
            let gets = AtomicUsize::new(0);
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let resp = if req.starts_with("PUT /latest/api/token") {
                    let k = t.fetch_add(1, Ordering::SeqCst);
                    let ttl = token_ttl_answer
                        .map(|v| format!("X-aws-ec2-metadata-token-ttl-seconds: {v}\r\n"))
                        .unwrap_or_default();
                    let body = format!("tok{k}");
                    format!("HTTP/1.1 200 OK\r\n{ttl}Content-Length: {}\r\n\r\n{body}", body.len())
                } else if !req.contains("X-aws-ec2-metadata-token: tok")
                    || (expire_first_get && gets.fetch_add(1, Ordering::SeqCst) == 0)
                {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string()
                } else if req.starts_with("GET /latest/meta-data/instance-id") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ni-0abc1234".to_string()
                } else if req.starts_with("GET /latest/meta-data/boom") {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found".to_string()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, tokens)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn reuses_its_token_maps_404_to_none_and_reports_errors() {
        rt().block_on(async {
            let (port, tokens) = fake_imds(false, None).await;
            let mut c = ImdsClient::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("ep"));
            assert_eq!(
                c.get(paths::INSTANCE_ID).await.expect("get").as_deref(),
                Some("i-0abc1234")
            );
            assert_eq!(c.get(paths::SPOT_INSTANCE_ACTION).await.expect("404"), None);
            assert_eq!(tokens.load(Ordering::SeqCst), 1, "one token for both reads");
            let e = c.get("meta-data/boom").await.expect_err("500");
            assert!(matches!(e, ImdsError::Status { status: 500, .. }), "{e}");
            assert!(!format!("{c:?}").contains("tok0"), "the token must never be printed");
        });
    }

    #[test]
    fn refreshes_the_token_on_401_and_before_expiry() {
        rt().block_on(async {
            let (port, tokens) = fake_imds(true, None).await;
            let mut c = ImdsClient::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("ep"));
            assert_eq!(
                c.get(paths::INSTANCE_ID).await.expect("retried").as_deref(),
                Some("i-0abc1234")
            );
            assert_eq!(tokens.load(Ordering::SeqCst), 2, "401 fetched a second token");

            // A token granted for 1 s is refreshed at 80% of that, before IMDS would refuse it.
            let (port, tokens) = fake_imds(false, Some(1)).await;
            let mut c = ImdsClient::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("ep"));
            c.get(paths::INSTANCE_ID).await.expect("first");
            c.get(paths::INSTANCE_ID).await.expect("second");
            assert_eq!(tokens.load(Ordering::SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(850)).await;
            c.get(paths::INSTANCE_ID).await.expect("third");
            assert_eq!(tokens.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn absurd_token_ttls_are_clamped() {
        let t0 = now_instant();
        let asked = DEFAULT_TOKEN_TTL;
        // Regression: `u64::MAX` seconds overflowed `Instant + Duration` and aborted the agent.
        assert_eq!(
            refresh_at(t0, Some(u64::MAX), asked),
            t0 + Duration::from_secs(17_280),
            "at most what was asked, refreshed at 80%"
        );
        assert_eq!(refresh_at(t0, Some(0), asked), t0 + Duration::from_millis(800));
        assert_eq!(refresh_at(t0, Some(60), asked), t0 + Duration::from_secs(48));
        assert_eq!(
            refresh_at(t0, None, Duration::from_secs(10)),
            t0 + Duration::from_secs(8)
        );
        assert_eq!(
            refresh_at(t0, Some(7200), Duration::from_secs(10)),
            t0 + Duration::from_secs(8),
            "never longer than asked"
        );
        assert_eq!(refresh_at(t0, None, Duration::MAX), t0 + Duration::from_secs(17_280));
    }

    #[test]
    fn a_hostile_ttl_header_does_not_crash_the_client() {
        rt().block_on(async {
            let (port, tokens) = fake_imds(false, Some(u64::MAX)).await;
            let mut c = ImdsClient::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("ep"));
            for _ in 0..2 {
                assert_eq!(
                    c.get(paths::INSTANCE_ID).await.expect("get").as_deref(),
                    Some("i-0abc1234")
                );
            }
            assert_eq!(tokens.load(Ordering::SeqCst), 1, "the clamped token is reused");
        });
    }

    #[test]
    fn spot_notices_parse() {
        assert_eq!(
            parse_spot_notice("{\"action\": \"terminate\", \"time\": \"2017-09-18T08:22:00Z\"}\n"),
            Ok(SpotNotice {
                action: "terminate".into(),
                time: "2017-09-18T08:22:00Z".into()
            })
        );
        for bad in [
            "",
            "terminate",
            "{}",
            "{\"action\": \"explode\", \"time\": \"2017-09-18T08:22:00Z\"}",
            "{\"action\": \"stop\", \"time\": \"\\u001b[2J\"}",
            "{\"action\": 5, \"time\": \"x\"}",
        ] {
            let e = parse_spot_notice(bad).expect_err(bad);
            assert!(!e.contains('\u{1b}'), "{e}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn head() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("HTTP/1.1 200 OK".to_string()),
                Just("HTTP/1.1 404 Not Found".to_string()),
                Just("HTTP/1.0 401 Unauthorized".to_string()),
                "[ -~]{0,30}",
            ]
        }

        fn header_line() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| format!("X-aws-ec2-metadata-token-ttl-seconds: {n}")),
                "[ -~]{0,30}".prop_map(|v| format!("x-aws-ec2-metadata-token-ttl-seconds: {v}")),
                any::<u64>().prop_map(|n| format!("Content-Length: {n}")),
                (0usize..64).prop_map(|n| format!("Content-Length: {n}")),
                Just("Transfer-Encoding: chunked".to_string()),
                "[ -~]{0,40}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Arbitrary bytes as an IMDS answer: a response or an error, never a panic.
            #[test]
            fn any_bytes_parse_or_fail(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = response_complete(&raw);
                if let Err(e) = parse_response(&raw) {
                    // The error reaches the log: short, and no control character of the answer.
                    let text = e.to_string();
                    prop_assert!(text.len() < 600 && !text.chars().any(lifecycle_escape::is_unsafe), "{:?}", text);
                }
                let _ = dechunk(&raw);
            }

            /// HTTP-shaped answers with hostile headers and bodies (TTLs, lengths, chunk sizes).
            #[test]
            fn http_shaped_answers_parse_or_fail(
                status in head(),
                headers in proptest::collection::vec(header_line(), 0..5),
                body in proptest::collection::vec(any::<u8>(), 0..128),
                secs_asked in any::<u64>(),
            ) {
                let mut raw = format!("{status}\r\n{}\r\n\r\n", headers.join("\r\n")).into_bytes();
                raw.extend_from_slice(&body);
                let _ = response_complete(&raw);
                if let Ok(r) = parse_response(&raw) {
                    let t0 = now_instant();
                    let at = refresh_at(t0, r.ttl, Duration::from_secs(secs_asked));
                    prop_assert!(at > t0 && at <= t0 + DEFAULT_TOKEN_TTL);
                }
            }

            #[test]
            fn any_ttl_refreshes_within_six_hours(granted in proptest::option::of(any::<u64>()), asked in any::<u64>()) {
                let t0 = now_instant();
                let at = refresh_at(t0, granted, Duration::from_millis(asked));
                prop_assert!(at > t0 && at <= t0 + DEFAULT_TOKEN_TTL);
            }

            /// IMDS bodies the agent interprets: target-lifecycle-state and the spot notice.
            #[test]
            fn target_states_and_spot_notices_never_panic(body in any::<String>()) {
                let state = lifecycle_core::TargetState::parse(&body);
                let _ = state.to_string();
                if let Ok(n) = parse_spot_notice(&body) {
                    prop_assert!(matches!(n.action.as_str(), "terminate" | "stop" | "hibernate"));
                }
            }

            #[test]
            fn spot_shaped_json_parses_or_fails(action in any::<String>(), time in any::<String>()) {
                let body = serde_json::json!({ "action": action, "time": time }).to_string();
                if let Ok(n) = parse_spot_notice(&body) {
                    prop_assert!(!n.time.chars().any(lifecycle_escape::is_unsafe));
                }
            }

            #[test]
            fn endpoints_parse_or_fail(url in any::<String>()) {
                let _ = Endpoint::parse(&url);
                let _ = Endpoint::parse(&format!("http://{url}"));
            }
        }
    }

    #[test]
    fn unreachable_imds_fails_fast_and_retrying_gives_up_at_its_deadline() {
        rt().block_on(async {
            // Bind then drop: nothing listens on this port any more.
            let port = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port();
            let mut c = ImdsClient::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("ep"))
                .with_timeout(Duration::from_millis(300));
            let e = c.get(paths::INSTANCE_ID).await.expect_err("refused");
            assert!(matches!(e, ImdsError::Unreachable { .. }), "{e}");
            let started = now_instant();
            assert!(c
                .get_retrying(paths::INSTANCE_ID, Duration::from_millis(500))
                .await
                .is_err());
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_secs(3),
                "{took:?}"
            );
        });
    }
}
