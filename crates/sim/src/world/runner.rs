//! The runner's processes as upstream behaves: the listener (start, SIGINT, SIGKILL, exit), its workers
//! and job hooks, and what a host observes of them.

use super::*;

impl World {
    /// Set a listener's state, keeping the broker's pool and GitHub's view in step.
    pub(super) fn set_listener(&mut self, inst: InstId, new: Listener) {
        let idx = inst as usize;
        let old = std::mem::replace(&mut self.fleet.instances[idx].listener, new);
        let i = &mut self.fleet.instances[idx];
        self.broker
            .listener_changed(inst, old, new, &mut i.busy_flag, i.registration_removed);
        // The host serves again: time since the last job's end, unless it began draining.
        if new == Listener::Polling {
            if let Some(from) = self.fleet.instances[idx].serve_gap_from.take() {
                let gap = self.now.since(from);
                self.metrics.record_serve_gap(gap);
            }
        }
        if new == Listener::Down && old != Listener::Down {
            // A JIT registration whose listener never took a job: it stays until swept.
            if std::mem::take(&mut self.fleet.instances[idx].jit_registration_unused) {
                self.metrics.jit_configs_unused += 1;
            }
        }
        if old != new {
            let state = match new {
                Listener::Down => "Down".to_string(),
                Listener::Starting => "Starting".to_string(),
                Listener::Polling => "Polling".to_string(),
                Listener::Claimed(j) => format!("Handed job {j}"),
                Listener::Busy(j) => format!("Busy job {j}"),
                Listener::Exiting => "Exiting".to_string(),
            };
            self.record_span(inst, "listener", state);
        }
    }

    /// Start the listener (no-op unless it is down and the host running).
    pub fn start_listener(&mut self, inst: InstId) {
        let now = self.now;
        let i = &self.fleet.instances[inst as usize];
        if i.listener != Listener::Down || !running(i.asg) {
            return;
        }
        self.jit_listener_starts(inst);
        self.set_listener(inst, Listener::Starting);
        let i = &mut self.fleet.instances[inst as usize];
        i.listener_gen += 1;
        i.listener_jobs = 0;
        // A new incarnation: its own registration (JIT) and a fresh perf-log directory.
        i.registration_removed = false;
        i.victim = false;
        i.perf_unseen = false;
        let gen = i.listener_gen;
        let d = between(&mut self.faults.streams.lat, timing::LISTENER_START);
        self.queue.push(now + d, Ev::ListenerReady(inst, gen));
    }

    /// SIGINT to the listener. Upstream, that cancels a running job (actions/runner
    /// src/Runner.Listener/Runner.cs); a job already handed to it is lost the same way.
    pub fn signal_listener(&mut self, inst: InstId) {
        let now = self.now;
        let idx = inst as usize;
        let exit_after = match self.fleet.instances[idx].listener {
            Listener::Down | Listener::Exiting => return,
            Listener::Starting | Listener::Polling => timing::IDLE_EXIT,
            Listener::Claimed(job) => {
                // A job an accepted delete took back is GitHub's already.
                let revoked = self.fleet.instances[idx].assignment_revoked;
                if !revoked && self.drop_unacquired(inst, job, JobOutcome::LostInStopWindow) {
                    let earlier_jobs = self.fleet.instances[idx].listener_jobs;
                    self.count_stop_window_race(inst, earlier_jobs);
                }
                timing::IDLE_EXIT
            }
            Listener::Busy(job) => {
                // A worker the host's software was not yet told about is the stop window; one it knew
                // of is a cancel.
                let seen = self.fleet.instances[idx].worker_seen;
                let outcome = if seen {
                    JobOutcome::Cancelled
                } else {
                    let earlier_jobs = self.fleet.instances[idx].listener_jobs.saturating_sub(1);
                    self.count_stop_window_race(inst, earlier_jobs);
                    // W3: the worker runs, the host's software was not told yet.
                    self.metrics.jobs_killed_in_window[3] += 1;
                    JobOutcome::LostInStopWindow
                };
                self.finish_job(job, outcome);
                let exit = between(&mut self.faults.streams.lat, timing::CANCEL_EXIT);
                self.queue.push(now + exit, Ev::WorkerExit(inst, job, false));
                exit
            }
        };
        self.record_mark(inst, "listener", || "SIGINT".into());
        self.set_listener(inst, Listener::Exiting);
        let gen = self.fleet.instances[idx].listener_gen;
        self.queue.push(now + exit_after, Ev::ListenerExit(inst, gen, Some(0)));
    }

    /// Which race a job lost in the stop window came from: a listener that took the next job as its
    /// last one ended, while a drain was due (the same listener ran a job that ended less than
    /// `timing::NEXT_JOB_RACE_WINDOW` ago), or an idle listener dispatched to in the instant it was
    /// stopped (anything else, however many jobs it ran long before).
    pub(super) fn count_stop_window_race(&mut self, inst: InstId, earlier_jobs: u32) {
        let recent =
            self.now.since(self.fleet.instances[inst as usize].last_worker_exit) < timing::NEXT_JOB_RACE_WINDOW;
        if earlier_jobs > 0 && recent {
            self.metrics.jobs_killed_next_job_race += 1;
        } else {
            self.metrics.jobs_killed_idle_listener_race += 1;
        }
    }

    /// SIGKILL to the listener: it is gone at once, and its worker with it.
    pub fn kill_listener(&mut self, inst: InstId) {
        self.listener_dies(inst, None, JobOutcome::Failed(crate::metrics::FailCause::Killed));
    }

    pub(super) fn worker_alive_with(&self, inst: InstId, job: JobId) -> bool {
        self.fleet.instances[inst as usize]
            .worker
            .is_some_and(|(j, _, _)| j == job)
            && !self.broker.jobs.finished(job)
    }

    /// A job hook finished; a strategy whose hook takes effect later calls this itself.
    pub fn hook_finished(&mut self, inst: InstId, job: JobId, kind: HookKind, run: HookRun) {
        let now = self.now;
        if !self.worker_alive_with(inst, job) {
            return;
        }
        if run.fails_job {
            self.finish_job(job, JobOutcome::Failed(crate::metrics::FailCause::HookFailed));
            self.queue
                .push(now + run.took + timing::TEARDOWN, Ev::WorkerExit(inst, job, false));
            return;
        }
        match kind {
            HookKind::Started => {
                let d = self.broker.jobs.duration(job);
                self.queue.push(now + run.took + d, Ev::JobDone(inst, job));
            }
            HookKind::Completed => {
                self.queue
                    .push(now + run.took + timing::TEARDOWN, Ev::WorkerExit(inst, job, true));
            }
        }
    }

    pub(crate) fn hook_due(&self, inst: InstId, job: JobId) -> bool {
        self.worker_alive_with(inst, job)
    }

    pub(super) fn worker_exit(&mut self, inst: InstId, job: JobId, succeeded: bool) {
        let now = self.now;
        let idx = inst as usize;
        let Some((j, pid, _)) = self.fleet.instances[idx].worker else {
            return;
        };
        if j != job {
            return;
        }
        if succeeded {
            self.finish_job(job, JobOutcome::Succeeded);
        }
        if let Some(t) = self.timeline_of(inst) {
            t.end("worker", now);
        }
        self.fleet.workers -= 1;
        self.webhook();
        let i = &mut self.fleet.instances[idx];
        i.worker = None;
        i.last_worker_exit = now;
        let gen = i.agent_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::WorkerExited(pid)),
        );
        if self.fleet.instances[idx].listener == Listener::Busy(job) {
            // The job ended and its listener lives (not a crash): from here the host is between jobs
            // until its next listener is ready, unless it is draining.
            let i = &mut self.fleet.instances[idx];
            if i.asg == AsgPhase::InService && !i.spot_notice {
                i.serve_gap_from = Some(now);
            }
            match self.listener_mode {
                // A persistent listener polls again at once and may take the next job right away
                // (actions/runner src/Runner.Listener/Runner.cs message loop).
                ListenerMode::Persistent => self.make_idle(inst),
                // In one-job and JIT mode it exits 0 once its job completes (Runner.cs,
                // `RunOnce || settings.Ephemeral`).
                ListenerMode::OneJob | ListenerMode::Jit => {
                    self.set_listener(inst, Listener::Exiting);
                    let gen = self.fleet.instances[idx].listener_gen;
                    self.queue
                        .push(now + timing::IDLE_EXIT, Ev::ListenerExit(inst, gen, Some(0)));
                }
            }
        }
        self.update_idle_wait(inst);
    }

    pub(super) fn listener_exit(&mut self, inst: InstId, gen: u32, code: Option<i32>) {
        let idx = inst as usize;
        let i = &self.fleet.instances[idx];
        if i.listener_gen != gen || i.listener != Listener::Exiting {
            return;
        }
        self.set_listener(inst, Listener::Down);
        let agent_gen = self.fleet.instances[idx].agent_gen;
        self.queue
            .push(self.now, Ev::Host(inst, agent_gen, HostEvent::ListenerExited(code)));
    }

    pub(super) fn listener_dies(&mut self, inst: InstId, code: Option<i32>, job_outcome: JobOutcome) {
        let now = self.now;
        let idx = inst as usize;
        match self.fleet.instances[idx].listener {
            Listener::Down => return,
            Listener::Claimed(job) if !self.fleet.instances[idx].assignment_revoked => {
                self.drop_unacquired(inst, job, job_outcome);
            }
            _ => {}
        }
        self.set_listener(inst, Listener::Down);
        let i = &mut self.fleet.instances[idx];
        i.listener_gen += 1;
        if let Some((job, _, _)) = self.fleet.instances[idx].worker {
            // The worker loses its channel to the listener and the job fails.
            self.finish_job(job, job_outcome);
            self.worker_exit(inst, job, false);
        }
        let i = &mut self.fleet.instances[idx];
        let gen = i.agent_gen;
        self.queue
            .push(now, Ev::Host(inst, gen, HostEvent::ListenerExited(code)));
        self.update_idle_wait(inst);
    }

    pub(super) fn finish_job(&mut self, job: JobId, outcome: JobOutcome) {
        let now = self.now;
        let Some((arrival, started)) = self.broker.jobs.finish(job) else {
            return; // already accounted for
        };
        self.metrics.record_job(outcome, arrival, started, now);
        self.log_job(job, outcome, arrival, started);
        if self.check_invariants && outcome.is_tool_fault() {
            self.violations.push(Violation {
                strategy: String::new(),
                seed: self.cfg.seed,
                at: now,
                instance: None,
                what: format!("job {job} ended {outcome:?}"),
            });
        }
    }

    /// Schedule a relaunch of the listener (RunnerService.js style), used by strategies without the core.
    pub fn relaunch_listener_later(&mut self, inst: InstId, after: Duration) {
        let gen = self.fleet.instances[inst as usize].listener_gen;
        self.queue.push(self.now + after, Ev::Relaunch(inst, gen));
    }

    /// The host's agent is starting and will retry a failed step at `until` (`None`: not waiting).
    /// A drain that begins meanwhile may take that much longer: the invariant allows for it.
    pub fn note_startup_retry(&mut self, inst: InstId, until: Option<Time>) {
        let now = self.now;
        let i = &mut self.fleet.instances[inst as usize];
        i.startup_retry_until = until;
        if let (Some(until), AsgPhase::Wait { .. }) = (until, i.asg) {
            i.fault_allowance += until.since(now);
        }
    }

    /// What a freshly started agent finds on its host.
    pub fn observe(&mut self, inst: InstId) -> Observation {
        let i = &mut self.fleet.instances[inst as usize];
        i.worker_seen |= i.worker.is_some();
        let i = &self.fleet.instances[inst as usize];
        let listener_pid = match i.listener {
            Listener::Down | Listener::Starting => None,
            _ => Some(i.listener_pid),
        };
        Observation {
            listener_pid,
            worker_pid: i.worker.map(|(_, pid, _)| pid),
            target: if self.now >= i.imds_down_until {
                Some(self.visible_target(i))
            } else {
                None
            },
            spot_notice: i.spot_notice,
            job_message: matches!(i.listener, Listener::Claimed(_)) && i.window != Window::W0,
        }
    }

    /// The agent's last look at the listener's perf log before a SIGINT: whether a job message came
    /// since its last poll (it has read it now).
    pub fn take_unseen_job_message(&mut self, inst: InstId) -> bool {
        std::mem::take(&mut self.fleet.instances[inst as usize].perf_unseen)
    }

    /// Whether the instance's IMDS answers now (an agent reading its identity needs it).
    pub fn imds_up(&self, inst: InstId) -> bool {
        self.now >= self.fleet.instances[inst as usize].imds_down_until
    }

    pub(super) fn visible_target(&self, i: &Instance) -> Target {
        if self.now >= i.target_visible_at {
            i.target
        } else {
            Target::InService
        }
    }

    /// When the agent's once-a-second IMDS poll first sees something visible from `t` on.
    pub(crate) fn next_poll_after(&self, inst: InstId, t: Time) -> Time {
        let i = &self.fleet.instances[inst as usize];
        let t = t.max(i.imds_down_until);
        let period = timing::IMDS_POLL.as_millis() as u64;
        let phase = i.poll_phase.as_millis() as u64;
        let ms = t.as_millis();
        let k = ms.saturating_sub(phase).div_ceil(period);
        Time::from_millis(phase + k * period).max(t)
    }

    /// Run a strategy's step on `inst` after `after` (work that takes time before its effect).
    pub fn defer(&mut self, inst: InstId, after: Duration, what: Deferred) {
        let gen = self.fleet.instances[inst as usize].agent_gen;
        self.queue.push(self.now + after, Ev::Deferred(inst, gen, what));
    }

    /// The latency of one `aws` CLI call from a bash script (the source PR's hooks and units).
    pub fn cli_latency(&mut self) -> Duration {
        timing::AWS_CLI.mul_f64(0.8 + 0.4 * self.faults.streams.lat.unit())
    }

    /// A duration drawn from the world's latency stream, uniform in the range.
    pub fn latency(&mut self, range: (Duration, Duration)) -> Duration {
        between(&mut self.faults.streams.lat, range)
    }
}
