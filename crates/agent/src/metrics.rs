//! Prometheus metrics (docs/agent.md, "Metrics"): counters, gauges and histograms fed from the
//! decision core's actions and notices and from the Auto Scaling results in the agent's main loop,
//! served in the Prometheus text exposition format (version 0.0.4) at `GET /metrics` by a small
//! HTTP/1.1 responder on a loopback address (`agent.metrics_listen`, off by default).
//!
//! Hand-written on purpose: the agent needs one read-only endpoint, and a server framework or a
//! metrics crate would add more code to the binary than this whole module. One request per
//! connection, `Connection: close`, no keep-alive, no TLS, no authentication (hence loopback only).

use lifecycle_core::Time;
use lifecycle_core::{Action, ApiError, ApiReply, Call, Detection, DrainCause, JobLoss, Notice, Reason, RequestId};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The metrics shared between the main loop (writer) and the HTTP responder (reader).
pub type Shared = Arc<Mutex<Metrics>>;

/// Lock the metrics; a panic elsewhere while holding the lock leaves plain counters, still valid.
pub fn lock(m: &Mutex<Metrics>) -> MutexGuard<'_, Metrics> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Upper bounds of the detection latency buckets, seconds (the default IMDS poll is 1 s).
const DETECTION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
/// Upper bounds of the drain duration buckets, seconds (an idle drain takes seconds, a busy one
/// as long as its job).
const DRAIN_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// A cumulative Prometheus histogram.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; summed when rendered).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The `reason` label of a listener start: the start reason's own spelling.
fn start_label(reason: Reason) -> &'static str {
    match reason {
        Reason::Relaunch | Reason::NextJob => reason.name(),
        _ => Reason::Serving.name(),
    }
}

/// Every metric of the agent, and the bookkeeping that turns actions into them.
#[derive(Clone, Debug)]
pub struct Metrics {
    jobs_assigned: u64,
    jobs_ended: u64,
    jobs_lost: BTreeMap<&'static str, u64>,
    protection_calls: BTreeMap<(&'static str, &'static str), u64>,
    termination_detected: BTreeMap<&'static str, u64>,
    drains_started: BTreeMap<&'static str, u64>,
    detection_latency: Histogram,
    drain_duration: Histogram,
    heartbeats_sent: u64,
    heartbeats_failed: u64,
    hooks_completed: [u64; 2],
    hooks_gone: u64,
    global_timeout_warnings: u64,
    api_calls: BTreeMap<&'static str, u64>,
    api_errors: BTreeMap<(&'static str, &'static str), u64>,
    listener_starts: BTreeMap<&'static str, u64>,
    job_alive: bool,
    draining: bool,
    protected: Option<bool>,
    hook_pending: bool,

    // Bookkeeping.
    /// SetInstanceProtection requests in flight: protect (true) or unprotect.
    protect_requests: BTreeMap<RequestId, bool>,
    /// When the IMDS read that said `Terminated` was made.
    imds_terminated_read: Option<Time>,
    /// An IMDS detection on an idle host, waiting for the listener's stop signal.
    detection_started: Option<Time>,
    drain_started: Option<Time>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Everything at zero; label sets with few values are present from the start, so dashboards
    /// and `rate()` see them before the first event.
    pub fn new() -> Metrics {
        Metrics {
            jobs_assigned: 0,
            jobs_ended: 0,
            jobs_lost: JobLoss::ALL.iter().map(|c| (c.name(), 0)).collect(),
            protection_calls: BTreeMap::new(),
            termination_detected: Detection::ALL.iter().map(|d| (d.name(), 0)).collect(),
            drains_started: DrainCause::ALL.iter().map(|c| (c.name(), 0)).collect(),
            detection_latency: Histogram::new(DETECTION_BUCKETS),
            drain_duration: Histogram::new(DRAIN_BUCKETS),
            heartbeats_sent: 0,
            heartbeats_failed: 0,
            hooks_completed: [0, 0],
            hooks_gone: 0,
            global_timeout_warnings: 0,
            api_calls: Call::ALL.iter().map(|c| (c.name(), 0)).collect(),
            api_errors: BTreeMap::new(),
            listener_starts: [Reason::Serving, Reason::Relaunch, Reason::NextJob]
                .iter()
                .map(|r| (r.name(), 0))
                .collect(),
            job_alive: false,
            draining: false,
            protected: None,
            hook_pending: false,
            protect_requests: BTreeMap::new(),
            imds_terminated_read: None,
            detection_started: None,
            drain_started: None,
        }
    }

    /// An IMDS read at `at` said `Terminated` (called before that reading goes to the core).
    pub fn imds_saw_terminated(&mut self, at: Time) {
        self.imds_terminated_read.get_or_insert(at);
    }

    /// The agent is about to carry out `action` at `now`; `job_alive` is the core's view.
    pub fn on_action(&mut self, action: &Action, now: Time, job_alive: bool) {
        match action {
            Action::StartListener { reason } => {
                *self.listener_starts.entry(start_label(*reason)).or_default() += 1;
            }
            Action::StopListener { cancels_job, .. } => {
                if !cancels_job {
                    if let Some(seen) = self.detection_started.take() {
                        self.detection_latency.observe(now.since(seen));
                    }
                }
            }
            Action::SetProtection { id, protect, .. } => {
                self.protect_requests.insert(*id, *protect);
            }
            Action::Heartbeat { .. } => self.heartbeats_sent += 1,
            Action::Notify(notice) => self.on_notice(notice, now, job_alive),
            Action::KillListener { .. }
            | Action::Describe { .. }
            | Action::CompleteLifecycleAction { .. }
            | Action::Exit { .. } => {}
        }
    }

    fn on_notice(&mut self, notice: &Notice, now: Time, job_alive: bool) {
        match notice {
            Notice::TerminationDetected { via } => {
                *self.termination_detected.entry(via.name()).or_default() += 1;
                // Measured on idle hosts only: a busy host's listener is signalled when its job
                // ends, which is the drain's time, not detection's.
                if *via == Detection::Imds && !job_alive {
                    self.detection_started = Some(self.imds_terminated_read.unwrap_or(now));
                }
            }
            Notice::DrainStarted { cause } => {
                *self.drains_started.entry(cause.name()).or_default() += 1;
                self.drain_started.get_or_insert(now);
            }
            Notice::JobAssigned => self.jobs_assigned += 1,
            Notice::JobEnded => self.jobs_ended += 1,
            Notice::HookCompleted { already_done } => {
                self.hooks_completed[usize::from(*already_done)] += 1;
                if let Some(start) = self.drain_started.take() {
                    self.drain_duration.observe(now.since(start));
                }
            }
            Notice::HookGone => self.hooks_gone += 1,
            // The core reports each lost job once, with its cause.
            Notice::JobLost { cause } => *self.jobs_lost.entry(cause.name()).or_default() += 1,
            Notice::GlobalTimeoutNear { .. } => self.global_timeout_warnings += 1,
            Notice::ListenerDiedWithJob
            | Notice::ForcingStopWithJob
            | Notice::StateConfirmed { .. }
            | Notice::ApiFailed { .. }
            | Notice::ListenerGaveUp { .. }
            | Notice::RebalanceRecommended
            | Notice::NotInGroup
            | Notice::HookClaimDropped => {}
        }
    }

    /// An Auto Scaling call finished.
    pub fn on_api_result(&mut self, id: RequestId, call: Call, result: &Result<ApiReply, ApiError>) {
        *self.api_calls.entry(call.name()).or_default() += 1;
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => {
                *self.api_errors.entry((call.name(), e.kind.name())).or_default() += 1;
                e.kind.name()
            }
        };
        match call {
            Call::SetProtection => {
                let action = match self.protect_requests.remove(&id) {
                    Some(false) => "unprotect",
                    _ => "protect",
                };
                *self.protection_calls.entry((action, outcome)).or_default() += 1;
            }
            Call::Heartbeat if result.is_err() => self.heartbeats_failed += 1,
            _ => {}
        }
    }

    /// The gauges, from the core's current view.
    pub fn set_gauges(&mut self, job_alive: bool, draining: bool, protected: Option<bool>, hook_pending: bool) {
        self.job_alive = job_alive;
        self.draining = draining;
        self.protected = protected;
        self.hook_pending = hook_pending;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        header(
            o,
            "build_info",
            "gauge",
            "Always 1; the label carries the agent's version.",
        );
        sample(o, "build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

        header(
            o,
            "jobs_assigned_total",
            "counter",
            "Jobs that became assigned on this host (a Runner.Worker appeared or the job-started hook reported).",
        );
        sample(o, "jobs_assigned_total", &[], self.jobs_assigned);
        header(
            o,
            "jobs_ended_total",
            "counter",
            "Assigned jobs that ended (no worker left and no open job-started hook).",
        );
        sample(o, "jobs_ended_total", &[], self.jobs_ended);
        header(o, "jobs_lost_total", "counter", "Jobs lost on this host, by cause: stop-window (a worker appeared after a non-forced stop signal), listener-died (the listener exited under a job), forced-stop (a forced stop cancelled a job).");
        for (cause, n) in &self.jobs_lost {
            sample(o, "jobs_lost_total", &[("cause", cause)], *n);
        }
        header(
            o,
            "protection_calls_total",
            "counter",
            "Finished SetInstanceProtection calls, by action (protect, unprotect) and result (ok, or the error kind).",
        );
        for ((action, result), n) in &self.protection_calls {
            sample(
                o,
                "protection_calls_total",
                &[("action", action), ("result", result)],
                *n,
            );
        }
        header(
            o,
            "termination_detected_total",
            "counter",
            "Terminations noticed, by the signal that revealed them first (imds, protection-refused, describe).",
        );
        for (via, n) in &self.termination_detected {
            sample(o, "termination_detected_total", &[("via", via)], *n);
        }
        header(
            o,
            "drains_started_total",
            "counter",
            "Drains started, by cause (terminating, stop-requested, spot-interruption, rebalance).",
        );
        for (cause, n) in &self.drains_started {
            sample(o, "drains_started_total", &[("cause", cause)], *n);
        }
        histogram(o, "termination_detection_seconds", "From the IMDS read that saw target-lifecycle-state Terminated to the stop signal to the idle listener (hosts idle at detection only).", &self.detection_latency);
        histogram(
            o,
            "drain_seconds",
            "From the start of a drain to the completion of the lifecycle hook.",
            &self.drain_duration,
        );
        header(
            o,
            "heartbeats_sent_total",
            "counter",
            "RecordLifecycleActionHeartbeat calls made.",
        );
        sample(o, "heartbeats_sent_total", &[], self.heartbeats_sent);
        header(
            o,
            "heartbeats_failed_total",
            "counter",
            "RecordLifecycleActionHeartbeat calls that failed (any error, including no active lifecycle action).",
        );
        sample(o, "heartbeats_failed_total", &[], self.heartbeats_failed);
        header(
            o,
            "hooks_completed_total",
            "counter",
            "Lifecycle actions completed; already_done=\"true\" when AWS said none was active any more.",
        );
        sample(
            o,
            "hooks_completed_total",
            &[("already_done", "false")],
            self.hooks_completed[0],
        );
        sample(
            o,
            "hooks_completed_total",
            &[("already_done", "true")],
            self.hooks_completed[1],
        );
        header(
            o,
            "hooks_gone_total",
            "counter",
            "Heartbeats that found no active lifecycle action (completed elsewhere or timed out).",
        );
        sample(o, "hooks_gone_total", &[], self.hooks_gone);
        header(
            o,
            "global_timeout_warnings_total",
            "counter",
            "Warnings that a lifecycle action's global timeout is near while a job runs.",
        );
        sample(o, "global_timeout_warnings_total", &[], self.global_timeout_warnings);
        header(
            o,
            "api_calls_total",
            "counter",
            "Finished Auto Scaling calls, by call (set-protection, describe, heartbeat, complete).",
        );
        for (call, n) in &self.api_calls {
            sample(o, "api_calls_total", &[("call", call)], *n);
        }
        header(
            o,
            "api_errors_total",
            "counter",
            "Failed Auto Scaling calls, by call and error kind.",
        );
        for ((call, kind), n) in &self.api_errors {
            sample(o, "api_errors_total", &[("call", call), ("kind", kind)], *n);
        }
        header(o, "listener_starts_total", "counter", "Listener launches, by reason: serving (first start), relaunch (after an exit asking for it), next-job (one-job mode).");
        for (reason, n) in &self.listener_starts {
            sample(o, "listener_starts_total", &[("reason", reason)], *n);
        }
        header(o, "job_alive", "gauge", "1 while a job is assigned.");
        sample(o, "job_alive", &[], u64::from(self.job_alive));
        header(o, "draining", "gauge", "1 while the runner drains (no new jobs).");
        sample(o, "draining", &[], u64::from(self.draining));
        header(
            o,
            "protected",
            "gauge",
            "1 if the instance is protected from scale-in, 0 if not; absent while unknown.",
        );
        if let Some(p) = self.protected {
            sample(o, "protected", &[], u64::from(p));
        }
        header(
            o,
            "hook_pending",
            "gauge",
            "1 while a termination lifecycle action waits for this host (Terminating:Wait).",
        );
        sample(o, "hook_pending", &[], u64::from(self.hook_pending));
        out
    }
}

const PREFIX: &str = "runner_lifecycle_";

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(o, "# TYPE {PREFIX}{name} {kind}");
}

/// One sample. Label values are this module's own constants: nothing to escape.
fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    let _ = write!(o, "{PREFIX}{name}");
    if !labels.is_empty() {
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = write!(o, "{{{}}}", inner.join(","));
    }
    let _ = writeln!(o, " {value}");
}

fn histogram(o: &mut String, name: &str, help: &str, h: &Histogram) {
    header(o, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        sample(o, &bucket, &[("le", &bound.to_string())], cumulative);
    }
    sample(o, &bucket, &[("le", "+Inf")], h.count);
    sample(o, &format!("{name}_sum"), &[], h.sum);
    sample(o, &format!("{name}_count"), &[], h.count);
}

// ----- the HTTP responder -----

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
    // Idle connections cannot starve scrapes: at the cap the oldest idle one is closed (crate::conns).
    let limiter = crate::conns::Limiter::new(MAX_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Some(slot) = limiter.admit() else {
                    drop(stream);
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, &metrics, &slot)).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, metrics: &Mutex<Metrics>, slot: &crate::conns::Slot) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let evicted = slot.idle();
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
    tokio::select! {
        r = tokio::time::timeout(READ_TIMEOUT, read_head) => if r.is_err() { return },
        _ = evicted => return,
    }
    slot.busy();
    if head.is_empty() {
        return;
    }
    let response = respond(&head, || lock(metrics).render());
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
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
    use lifecycle_core::{ApiErrorKind, LifecycleResult};

    fn line(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .map(str::to_string)
    }

    fn value(text: &str, name: &str) -> f64 {
        line(text, name)
            .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn fresh_metrics_render_every_family_with_help_and_type() {
        let text = Metrics::new().render();
        let mut families = 0;
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                families += 1;
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
                assert!(name.starts_with(PREFIX), "{name}");
            } else if !l.starts_with('#') {
                // name{labels} value
                let (series, v) = l.rsplit_once(' ').expect("sample");
                assert!(v.parse::<f64>().is_ok(), "{l}");
                assert!(series.starts_with(PREFIX), "{l}");
                assert_eq!(series.matches('{').count(), series.matches('}').count(), "{l}");
            }
        }
        assert_eq!(families, 21, "{text}");
        assert_eq!(value(&text, "runner_lifecycle_jobs_assigned_total"), 0.0);
        assert_eq!(
            value(&text, "runner_lifecycle_termination_detected_total{via=\"imds\"}"),
            0.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_hooks_completed_total{already_done=\"false\"}"),
            0.0
        );
        assert!(
            line(&text, "runner_lifecycle_protected").is_none(),
            "unknown protection has no sample"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::new(&[0.5, 1.0, 5.0]);
        for ms in [200, 300, 900, 4000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut o = String::new();
        histogram(&mut o, "x_seconds", "test", &h);
        assert_eq!(
            o,
            "# HELP runner_lifecycle_x_seconds test\n\
             # TYPE runner_lifecycle_x_seconds histogram\n\
             runner_lifecycle_x_seconds_bucket{le=\"0.5\"} 2\n\
             runner_lifecycle_x_seconds_bucket{le=\"1\"} 3\n\
             runner_lifecycle_x_seconds_bucket{le=\"5\"} 4\n\
             runner_lifecycle_x_seconds_bucket{le=\"+Inf\"} 5\n\
             runner_lifecycle_x_seconds_sum 65.4\n\
             runner_lifecycle_x_seconds_count 5\n"
        );
    }

    #[test]
    fn a_job_and_an_idle_scale_in_move_the_right_counters() {
        let mut m = Metrics::new();
        m.on_action(
            &Action::StartListener {
                reason: Reason::Serving,
            },
            t(0),
            false,
        );
        m.on_action(&Action::Notify(Notice::JobAssigned), t(1000), true);
        let protect = Action::SetProtection {
            id: RequestId(1),
            protect: true,
            reason: Reason::JobAssigned,
        };
        m.on_action(&protect, t(1000), true);
        m.on_api_result(RequestId(1), Call::SetProtection, &Ok(ApiReply::Done));
        m.on_action(&Action::Notify(Notice::JobEnded), t(5000), false);
        let unprotect = Action::SetProtection {
            id: RequestId(2),
            protect: false,
            reason: Reason::Idle,
        };
        m.on_action(&unprotect, t(35_000), false);
        let throttled = Err(ApiError::new(ApiErrorKind::Throttled, "Rate exceeded"));
        m.on_api_result(RequestId(2), Call::SetProtection, &throttled);

        // Scale-in of the idle host: IMDS read at 40.0 s, detected at 40.1 s, SIGINT at 40.3 s.
        m.imds_saw_terminated(t(40_000));
        let detected = Notice::TerminationDetected { via: Detection::Imds };
        m.on_action(&Action::Notify(detected), t(40_100), false);
        m.on_action(
            &Action::Notify(Notice::DrainStarted {
                cause: DrainCause::Terminating,
            }),
            t(40_100),
            false,
        );
        let stop = Action::StopListener {
            reason: Reason::TerminatingIdle,
            cancels_job: false,
        };
        m.on_action(&stop, t(40_300), false);
        m.on_action(
            &Action::CompleteLifecycleAction {
                id: RequestId(3),
                result: LifecycleResult::Continue,
                reason: Reason::RunnerIdleAndStopped,
            },
            t(41_000),
            false,
        );
        m.on_api_result(RequestId(3), Call::Complete, &Ok(ApiReply::Done));
        m.on_action(
            &Action::Notify(Notice::HookCompleted { already_done: false }),
            t(41_100),
            false,
        );
        m.set_gauges(false, true, Some(false), false);

        let text = m.render();
        assert_eq!(value(&text, "runner_lifecycle_jobs_assigned_total"), 1.0);
        assert_eq!(value(&text, "runner_lifecycle_jobs_ended_total"), 1.0);
        assert_eq!(
            value(
                &text,
                "runner_lifecycle_protection_calls_total{action=\"protect\",result=\"ok\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "runner_lifecycle_protection_calls_total{action=\"unprotect\",result=\"throttled\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "runner_lifecycle_api_errors_total{call=\"set-protection\",kind=\"throttled\"}"
            ),
            1.0
        );
        assert_eq!(value(&text, "runner_lifecycle_api_calls_total{call=\"complete\"}"), 1.0);
        assert_eq!(
            value(&text, "runner_lifecycle_termination_detected_total{via=\"imds\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_drains_started_total{cause=\"terminating\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_termination_detection_seconds_count"),
            1.0
        );
        assert!((value(&text, "runner_lifecycle_termination_detection_seconds_sum") - 0.3).abs() < 1e-9);
        assert_eq!(
            value(
                &text,
                "runner_lifecycle_termination_detection_seconds_bucket{le=\"0.25\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &text,
                "runner_lifecycle_termination_detection_seconds_bucket{le=\"0.5\"}"
            ),
            1.0
        );
        assert!((value(&text, "runner_lifecycle_drain_seconds_sum") - 1.0).abs() < 1e-9);
        assert_eq!(
            value(&text, "runner_lifecycle_hooks_completed_total{already_done=\"false\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_listener_starts_total{reason=\"serving\"}"),
            1.0
        );
        assert_eq!(value(&text, "runner_lifecycle_draining"), 1.0);
        assert_eq!(value(&text, "runner_lifecycle_protected"), 0.0);
        assert_eq!(
            value(&text, "runner_lifecycle_jobs_lost_total{cause=\"stop-window\"}"),
            0.0
        );
    }

    #[test]
    fn busy_detection_is_not_timed_and_stop_window_losses_count_once() {
        let mut m = Metrics::new();
        m.imds_saw_terminated(t(0));
        m.on_action(
            &Action::Notify(Notice::TerminationDetected { via: Detection::Imds }),
            t(10),
            true,
        );
        m.on_action(
            &Action::Heartbeat {
                id: RequestId(1),
                reason: Reason::JobRunning,
            },
            t(100_000),
            true,
        );
        let gone = Err(ApiError::new(
            ApiErrorKind::NoActiveLifecycleAction,
            "No active Lifecycle Action found",
        ));
        m.on_api_result(RequestId(1), Call::Heartbeat, &gone);
        let stop = Action::StopListener {
            reason: Reason::TerminatingIdle,
            cancels_job: false,
        };
        m.on_action(&stop, t(600_000), false);
        // A worker shows up after the stop signal: the core reports it lost in the stop window,
        // once; the listener then exits under it, which only the log mentions.
        m.on_action(
            &Action::Notify(Notice::JobLost {
                cause: JobLoss::StopWindow,
            }),
            t(600_100),
            true,
        );
        m.on_action(&Action::Notify(Notice::ListenerDiedWithJob), t(600_500), true);
        let text = m.render();
        assert_eq!(
            value(&text, "runner_lifecycle_termination_detection_seconds_count"),
            0.0
        );
        assert_eq!(value(&text, "runner_lifecycle_heartbeats_sent_total"), 1.0);
        assert_eq!(value(&text, "runner_lifecycle_heartbeats_failed_total"), 1.0);
        assert_eq!(
            value(&text, "runner_lifecycle_jobs_lost_total{cause=\"stop-window\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_jobs_lost_total{cause=\"listener-died\"}"),
            0.0
        );

        // A new listener: a later crash under a job is a listener death again.
        m.on_action(
            &Action::StartListener {
                reason: Reason::Relaunch,
            },
            t(700_000),
            false,
        );
        m.on_action(&Action::Notify(Notice::ListenerDiedWithJob), t(800_000), true);
        m.on_action(
            &Action::Notify(Notice::JobLost {
                cause: JobLoss::ListenerDied,
            }),
            t(800_000),
            true,
        );
        let text = m.render();
        assert_eq!(
            value(&text, "runner_lifecycle_jobs_lost_total{cause=\"stop-window\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_jobs_lost_total{cause=\"listener-died\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "runner_lifecycle_listener_starts_total{reason=\"relaunch\"}"),
            1.0
        );
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
            lock(&shared).on_action(&Action::Notify(Notice::JobAssigned), t(0), true);
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
}
