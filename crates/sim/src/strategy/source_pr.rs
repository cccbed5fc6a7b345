//! The design of the source PR (InfraHouse puppet-code #265, terraform-aws-actions-runner #81), as
//! shared/docs domain brief section 4 describes it, modelled faithfully including its weaknesses.

use super::{relaunch_like_runner_service, Controller};
use crate::config::timing;
use crate::world::{ApiCall, Deferred, HookKind, HookRun, HostEvent, InstId, JobId, World};
use lifecycle_core::{ApiErrorKind, ApiReply, AsgState, DescribedInstance, Time};
use std::time::Duration;

/// The heartbeat timer: first run 2 min after boot, then every 10 min, AccuracySec 1 min.
const TIMER_FIRST: Duration = Duration::from_secs(120);
const TIMER_PERIOD: Duration = Duration::from_secs(600);
const TIMER_ACCURACY: Duration = Duration::from_secs(60);
/// Its scripts call the AWS CLI, whose default (legacy) retry mode makes up to 5 attempts on
/// throttling and 5xx (botocore `_retry.json`, `max_attempts: 5`).
const CLI_ATTEMPTS: u32 = 5;

/// One host under the source PR's units and Lambda.
#[derive(Debug)]
pub struct SourcePr {
    stopping: bool,
    timer_at: Time,
}

fn is_wait(reply: &Result<ApiReply, lifecycle_core::ApiError>) -> bool {
    matches!(
        reply,
        Ok(ApiReply::Described(Some(DescribedInstance {
            state: AsgState::TerminatingWait,
            ..
        })))
    )
}

fn is_terminating(reply: &Result<ApiReply, lifecycle_core::ApiError>) -> bool {
    matches!(reply, Ok(ApiReply::Described(Some(d))) if d.state.is_terminating())
}

/// gha_prerun.sh's call: protect; tolerate Terminating:*; exit 1 on any other failure.
fn prerun_protect(w: &mut World, inst: InstId) -> HookRun {
    let done = HookRun {
        took: Duration::ZERO,
        fails_job: false,
    };
    match w.call_retrying(inst, ApiCall::SetProtection(true), CLI_ATTEMPTS) {
        Ok(_) => done,
        Err(e) if e.kind == ApiErrorKind::NotInService => done,
        Err(_) => {
            let state = w.call_retrying(inst, ApiCall::Describe, CLI_ATTEMPTS);
            HookRun {
                took: w.cli_latency(),
                fails_job: !is_terminating(&state),
            }
        }
    }
}

impl Controller for SourcePr {
    const NAME: &'static str = "source-pr";
    // Its Lambda completes warm-pool trims at once (domain brief section 4).
    const CENTRAL_COMPLETES_TRIMS: bool = true;

    fn start(w: &mut World, inst: InstId, _restart: bool) -> Self {
        w.start_listener(inst);
        SourcePr {
            stopping: false,
            timer_at: w.now + TIMER_FIRST,
        }
    }

    fn on_event(&mut self, w: &mut World, inst: InstId, ev: HostEvent) {
        match ev {
            // Lambda -> SSM `systemctl stop`: SIGTERM to runsvc.sh, SIGINT to the listener, which
            // cancels a running job (domain brief 4, weakness 1).
            HostEvent::TerminationEvent => {
                self.stopping = true;
                w.signal_listener(inst);
            }
            HostEvent::ListenerExited(_) if self.stopping => {
                // ExecStopPost runs once the unit has stopped: a describe, then a completion, each an
                // `aws` CLI call that takes its time.
                let after = w.cli_latency();
                w.defer(inst, after, Deferred::StopPostDescribe);
            }
            HostEvent::ListenerExited(code) => relaunch_like_runner_service(w, inst, code),
            HostEvent::Deferred(Deferred::StopPostDescribe) => {
                // Complete when the state is Terminating:*; a describe that fails after the CLI's own
                // retries is a silent no-op (weakness 4), and nothing retries the completion.
                let state = w.call_retrying(inst, ApiCall::Describe, CLI_ATTEMPTS);
                if is_terminating(&state) {
                    let after = w.cli_latency();
                    w.defer(inst, after, Deferred::StopPostComplete);
                }
            }
            HostEvent::Deferred(Deferred::StopPostComplete) => {
                let _ = w.call_retrying(inst, ApiCall::Complete, CLI_ATTEMPTS);
            }
            HostEvent::Deferred(Deferred::PrerunCall(job)) => {
                let run = prerun_protect(w, inst);
                w.hook_finished(inst, job, HookKind::Started, run);
            }
            _ => {}
        }
    }

    fn job_hook(_host: Option<&mut Self>, w: &mut World, inst: InstId, job: JobId, kind: HookKind) -> Option<HookRun> {
        match kind {
            // gha_prerun.sh: `chown` of the work tree first, then the protection call; its effect comes
            // later, so the group can still pick this busy host meanwhile.
            HookKind::Started => {
                let before = w.latency(timing::PRERUN_BEFORE_CALL) + w.cli_latency();
                w.defer(inst, before, Deferred::PrerunCall(job));
                None
            }
            // gha_postrun.sh: unprotect; a failure fails the (green) job.
            HookKind::Completed => {
                let failed = w
                    .call_retrying(inst, ApiCall::SetProtection(false), CLI_ATTEMPTS)
                    .is_err();
                Some(HookRun {
                    took: w.cli_latency(),
                    fails_job: failed,
                })
            }
        }
    }

    fn next_wake(&self) -> Option<Time> {
        Some(self.timer_at)
    }

    fn on_wake(&mut self, w: &mut World, inst: InstId) {
        if w.now < self.timer_at {
            return;
        }
        // The heartbeater heartbeats whenever the state is Terminating:Wait, job or not (weakness 3).
        let state = w.call_retrying(inst, ApiCall::Describe, CLI_ATTEMPTS);
        if is_wait(&state) {
            let _ = w.call_retrying(inst, ApiCall::Heartbeat, CLI_ATTEMPTS);
        }
        self.timer_at = w.now + TIMER_PERIOD + w.rng.jitter(TIMER_ACCURACY, 0.0, 1.0);
    }
}
