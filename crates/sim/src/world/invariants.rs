//! runner-lifecycle's promises checked as the world runs, idle time in Terminating:Wait, and the
//! `--trace-instance` output (stderr and the plot's timeline).

use super::*;

impl World {
    pub(super) fn update_idle_wait(&mut self, inst: InstId) {
        let i = &self.fleet.instances[inst as usize];
        let waiting = matches!(i.asg, AsgPhase::Wait { .. });
        // A job an accepted delete took back leaves the listener as idle as before.
        let landing = matches!(i.listener, Listener::Claimed(_)) && !i.assignment_revoked;
        let idle = i.worker.is_none() && !landing;
        self.update_idle_wait_to(inst, waiting && idle);
    }

    pub(super) fn update_idle_wait_to(&mut self, inst: InstId, idle_now: bool) {
        let now = self.now;
        let i = &mut self.fleet.instances[inst as usize];
        match (i.idle_in_wait_since, idle_now) {
            (None, true) => i.idle_in_wait_since = Some(now),
            (Some(since), false) => {
                self.metrics.terminating_idle_seconds += now.since(since).as_secs_f64();
                i.idle_in_wait_since = None;
            }
            _ => {}
        }
    }

    /// The invariant: an idle runner leaves Terminating:Wait within a few seconds (plus the time its
    /// faults cost). `final_check` is the moment of completion.
    pub(super) fn check_idle_wait(&mut self, inst: InstId, final_check: bool) {
        let now = self.now;
        let i = &self.fleet.instances[inst as usize];
        let (Some(idle_since), AsgPhase::Wait { since, .. }) = (i.idle_in_wait_since, i.asg) else {
            return;
        };
        // The clock starts when the agent can know: IMDS shows the change, or the runner went idle.
        let start = idle_since.max(since + self.cfg.imds_lag);
        let limit = self.cfg.idle_wait_limit() + i.fault_allowance;
        let waited = now.since(start);
        if waited > limit {
            let what = format!(
                "idle runner left in Terminating:Wait for {:.1} s (limit {:.1} s){}",
                waited.as_secs_f64(),
                limit.as_secs_f64(),
                if final_check { "" } else { ", still waiting" }
            );
            self.violate(inst, &what);
            // Report each stuck host once.
            self.fleet.instances[inst as usize].fault_allowance += Duration::from_secs(86400 * 365);
        }
    }

    /// The handover guard may hold this host's stop for `d` from now, legitimately: the release's
    /// round trip and the watch after it, or a job message whose worker never comes (its acquire
    /// skipped), up to the bound. Nothing else extends the idle-wait limit.
    pub(super) fn allow_guard_hold(&mut self, inst: InstId, d: Duration) {
        let now = self.now;
        let i = &mut self.fleet.instances[inst as usize];
        // Holds that overlap count once.
        let until = now + d;
        let extra = until.since(i.hold_allowed_until.max(now).min(until));
        if matches!(i.asg, AsgPhase::Wait { .. }) {
            i.fault_allowance += extra;
        }
        i.hold_allowed_until = i.hold_allowed_until.max(until);
    }

    pub(super) fn violate(&mut self, inst: InstId, what: &str) {
        self.violations.push(Violation {
            strategy: String::new(),
            seed: self.cfg.seed,
            at: self.now,
            instance: Some(inst),
            what: what.to_string(),
        });
    }

    /// Print a line about `inst` if it is being traced.
    pub fn trace(&self, inst: InstId, what: impl FnOnce() -> String) {
        if self.cfg.trace_instance == Some(inst) {
            eprintln!("{} i{inst} {}", self.now, what());
        }
    }

    /// The timeline recorder, if `inst` is the traced instance.
    pub(super) fn timeline_of(&mut self, inst: InstId) -> Option<&mut TimelineRecorder> {
        self.timeline.as_mut().filter(|t| t.instance() == inst)
    }

    /// Record a state change on one lane of the traced instance's timeline.
    pub(super) fn record_span(&mut self, inst: InstId, lane: &'static str, state: String) {
        let now = self.now;
        if let Some(t) = self.timeline_of(inst) {
            t.state(lane, now, state);
        }
    }

    /// Record a point event on the traced instance's timeline.
    pub fn record_mark(&mut self, inst: InstId, lane: &'static str, label: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(t) = self.timeline_of(inst) {
            t.mark(lane, now, label());
        }
    }
}
