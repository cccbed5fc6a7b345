//! Prometheus metrics (docs/agent.md, "Metrics"): the counters, gauges and histograms of the agent,
//! fed from the decision core's actions and notices and from the Auto Scaling results in the agent's
//! main loop (this module: counting only), written from one table of families ([`exposition`]) and
//! served at `GET /metrics` by hyper's HTTP/1.1 server on a loopback address ([`http`]).

pub mod exposition;
pub mod http;

pub use exposition::{Family, Kind, Spec, PREFIX};
pub use http::{bind, check_listen, respond, serve};

use exposition::{counts, header, histogram, sample, Histogram};
use lifecycle_core::Time;
use lifecycle_core::{
    Action, ApiError, ApiReply, Call, Detection, DrainCause, HoldReason, HookPhase, Host, JobLoss, Notice, Release,
    RequestId, StartReason, Step,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// The gauges: the core's current view (the step from its plan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// A job is assigned.
    pub job_alive: bool,
    /// The runner drains.
    pub draining: bool,
    /// Believed scale-in protection.
    pub protected: Option<bool>,
    /// A termination lifecycle action waits.
    pub hook_pending: bool,
    /// The plan's main step ([`Step::name`]).
    pub next_step: Option<&'static str>,
}

impl Gauges {
    /// The gauges of the core, read after every pass of the agent's loop: the few values they
    /// show, not a whole [`Host::snapshot`] (which clones the states and errors for `status`).
    pub fn of(core: &Host) -> Gauges {
        Gauges {
            job_alive: core.job_alive(),
            draining: core.draining().is_some(),
            protected: core.protected(),
            hook_pending: matches!(core.hook_phase(), HookPhase::Pending { .. }),
            next_step: core.next_step().step.map(|step| step.name()),
        }
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
    stops_held: BTreeMap<&'static str, u64>,
    releases: BTreeMap<&'static str, u64>,
    job_alive: bool,
    draining: bool,
    protected: Option<bool>,
    hook_pending: bool,
    next_step: Option<&'static str>,

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
            listener_starts: StartReason::ALL.iter().map(|r| (r.name(), 0)).collect(),
            stops_held: HoldReason::ALL.iter().map(|r| (r.name(), 0)).collect(),
            releases: Release::ALL.iter().map(|r| (r.name(), 0)).collect(),
            job_alive: false,
            draining: false,
            protected: None,
            hook_pending: false,
            next_step: None,
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
                *self.listener_starts.entry(reason.name()).or_default() += 1;
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
            | Action::ConfirmIdle { .. }
            | Action::FetchJitConfig { .. }
            | Action::ReleaseRunner { .. }
            | Action::LeaveGroup { .. }
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
            | Notice::LeftGroup
            | Notice::HookClaimDropped => {}
            Notice::StopHeld { reason, .. } => *self.stops_held.entry(reason.name()).or_default() += 1,
            Notice::RunnerReleased { outcome } => *self.releases.entry(outcome.name()).or_default() += 1,
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
    pub fn set_gauges(&mut self, g: Gauges) {
        self.job_alive = g.job_alive;
        self.draining = g.draining;
        self.protected = g.protected;
        self.hook_pending = g.hook_pending;
        self.next_step = g.next_step;
    }

    /// The text exposition format: every family of [`Family::ALL`], in that order.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        for family in Family::ALL {
            self.render_family(&mut out, *family);
        }
        out
    }

    /// One family: its HELP and TYPE lines, then its samples. The match is exhaustive, so a family
    /// in the table cannot go unrendered.
    fn render_family(&self, o: &mut String, f: Family) {
        let spec = f.spec();
        if spec.kind == Kind::Histogram {
            let h = match f {
                Family::TerminationDetectionSeconds => &self.detection_latency,
                _ => &self.drain_duration,
            };
            return histogram(o, spec, h);
        }
        header(o, spec);
        let n = spec.name;
        let label = spec.labels;
        match f {
            Family::BuildInfo => sample(o, n, &[(label[0], env!("CARGO_PKG_VERSION"))], 1),
            Family::JobsAssigned => sample(o, n, &[], self.jobs_assigned),
            Family::JobsEnded => sample(o, n, &[], self.jobs_ended),
            Family::JobsLost => counts(o, spec, &self.jobs_lost),
            Family::ProtectionCalls => {
                for ((action, result), v) in &self.protection_calls {
                    sample(o, n, &[(label[0], action), (label[1], result)], *v);
                }
            }
            Family::TerminationDetected => counts(o, spec, &self.termination_detected),
            Family::DrainsStarted => counts(o, spec, &self.drains_started),
            Family::HeartbeatsSent => sample(o, n, &[], self.heartbeats_sent),
            Family::HeartbeatsFailed => sample(o, n, &[], self.heartbeats_failed),
            Family::HooksCompleted => {
                sample(o, n, &[(label[0], "false")], self.hooks_completed[0]);
                sample(o, n, &[(label[0], "true")], self.hooks_completed[1]);
            }
            Family::HooksGone => sample(o, n, &[], self.hooks_gone),
            Family::GlobalTimeoutWarnings => sample(o, n, &[], self.global_timeout_warnings),
            Family::ApiCalls => counts(o, spec, &self.api_calls),
            Family::ApiErrors => {
                for ((call, kind), v) in &self.api_errors {
                    sample(o, n, &[(label[0], call), (label[1], kind)], *v);
                }
            }
            Family::ListenerStarts => counts(o, spec, &self.listener_starts),
            Family::StopsHeld => counts(o, spec, &self.stops_held),
            Family::Releases => counts(o, spec, &self.releases),
            Family::JobAlive => sample(o, n, &[], u64::from(self.job_alive)),
            Family::Draining => sample(o, n, &[], u64::from(self.draining)),
            Family::Protected => {
                if let Some(p) = self.protected {
                    sample(o, n, &[], u64::from(p));
                }
            }
            Family::HookPending => sample(o, n, &[], u64::from(self.hook_pending)),
            Family::NextStep => {
                for step in Step::NAMES {
                    sample(o, n, &[(label[0], step)], u64::from(self.next_step == Some(*step)));
                }
            }
            Family::TerminationDetectionSeconds | Family::DrainSeconds => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::{ApiErrorKind, CompleteReason, HeartbeatReason, LifecycleResult, ProtectReason, StopReason};

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
        assert_eq!(families, 24, "{text}");
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

    /// docs/agent.md's metric table: (name, type, labels) per row.
    fn documented() -> Vec<(String, String, Vec<String>)> {
        let docs = include_str!("../../../../docs/agent.md");
        let table = crate::doc_table::table(docs, "| metric | type | labels | meaning |")
            .expect("the metric table in docs/agent.md");
        crate::doc_table::rows(table)
            .map(|cells| {
                let name = cells[0].trim_matches('`').to_string();
                let labels = cells[2]
                    .split(',')
                    .map(|l| l.trim().trim_matches('`').to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                (name, cells[1].to_string(), labels)
            })
            .collect()
    }

    #[test]
    fn the_docs_metric_table_is_the_code_table() {
        let code: Vec<(String, String, Vec<String>)> = Family::ALL
            .iter()
            .map(|f| {
                let s = f.spec();
                (
                    format!("{PREFIX}{}", s.name),
                    s.kind.name().to_string(),
                    s.labels.iter().map(|l| (*l).to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(documented(), code);
        // And the exposition has exactly these families, in this order.
        let text = Metrics::new().render();
        let rendered: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let names: Vec<&str> = code.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(rendered, names);
    }

    #[test]
    fn a_job_and_an_idle_scale_in_move_the_right_counters() {
        let mut m = Metrics::new();
        m.on_action(
            &Action::StartListener {
                reason: StartReason::Serving,
            },
            t(0),
            false,
        );
        m.on_action(&Action::Notify(Notice::JobAssigned), t(1000), true);
        let protect = Action::SetProtection {
            id: RequestId(1),
            protect: true,
            reason: ProtectReason::JobAssigned,
        };
        m.on_action(&protect, t(1000), true);
        m.on_api_result(RequestId(1), Call::SetProtection, &Ok(ApiReply::Done));
        m.on_action(&Action::Notify(Notice::JobEnded), t(5000), false);
        let unprotect = Action::SetProtection {
            id: RequestId(2),
            protect: false,
            reason: ProtectReason::Idle,
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
            reason: StopReason::TerminatingIdle,
            cancels_job: false,
        };
        m.on_action(&stop, t(40_300), false);
        m.on_action(
            &Action::CompleteLifecycleAction {
                id: RequestId(3),
                result: LifecycleResult::Continue,
                reason: CompleteReason::RunnerIdleAndStopped,
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
        m.set_gauges(Gauges {
            draining: true,
            protected: Some(false),
            next_step: Some("complete-hook"),
            ..Gauges::default()
        });

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
                reason: HeartbeatReason::JobRunning,
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
            reason: StopReason::TerminatingIdle,
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
                reason: StartReason::Relaunch,
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
}
