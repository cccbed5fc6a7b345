//! The group's scaling policies: the source PR's idle-runner alarms, and the controller's demand
//! policy (lifecycle-core `scaling`) fed by `workflow_job` webhooks and a reconcile each minute.

use super::*;

impl World {
    pub(super) fn scaling_eval(&mut self) {
        let now = self.now;
        self.queue.push(now + timing::SCALING_PERIOD, Ev::ScalingEval);
        let period = timing::SCALING_PERIOD.as_secs_f64();
        self.metrics.instance_seconds += f64::from(self.alive) * period;
        self.metrics.idle_instance_seconds += f64::from(self.alive.saturating_sub(self.workers)) * period;
        match self.cfg.scaling {
            Scaling::IdleAlarms => self.idle_alarms(),
            // The minute's reconcile: demand read back from GitHub's API repairs dropped webhooks.
            Scaling::Demand => self.demand_eval(),
        }
        if self.check_invariants {
            let waiting: Vec<InstId> = self.waiting.iter().copied().collect();
            for inst in waiting {
                self.check_idle_wait(inst, false);
            }
        }
    }

    /// A `workflow_job` webhook (queued, in progress, completed) for the demand policy: it reaches the
    /// controller after a short delay unless dropped; webhooks arriving meanwhile are coalesced into
    /// the same evaluation.
    pub(super) fn webhook(&mut self) {
        if self.cfg.scaling != Scaling::Demand || self.demand_eval_pending {
            return;
        }
        if self.streams.webhooks.chance(self.cfg.webhook_drop_rate) {
            self.metrics.webhooks_dropped += 1;
            return;
        }
        self.demand_eval_pending = true;
        let d = between(&mut self.streams.lat, timing::WEBHOOK_LATENCY);
        self.queue.push(self.now + d, Ev::DemandEval);
    }

    pub(super) fn demand_eval(&mut self) {
        use lifecycle_core::scaling::{Demand, DemandPolicy, ScaleDecision};
        let policy = DemandPolicy {
            idle_target: self.cfg.demand_idle_target,
            min: self.cfg.idle_target,
            max: self.cfg.instances,
            scale_in_after: self.cfg.scale_in_after,
        };
        // Jobs GitHub shows as queued (including those handed to a listener but not yet started) and
        // in progress.
        let demand = Demand {
            queued: (self.job_queue.len() as u32)
                .saturating_add(self.online.saturating_sub(self.idle.len() as u32 + self.workers)),
            running: self.workers,
        };
        let now = self.now;
        if let ScaleDecision::Set { desired, .. } =
            policy.decide(&mut self.demand_state, self.desired, Some(demand), now)
        {
            if desired != self.desired {
                self.desired = desired;
                self.metrics.scale_actions += 1;
                self.reconcile();
            }
        }
    }

    pub(super) fn idle_alarms(&mut self) {
        let now = self.now;
        // The source PR's metric: GitHub's `online && !busy` runners, sampled once a minute. It counts
        // listeners on hosts already picked for termination, and a just-started job's runner until its
        // busy flag shows (config `busy_flag_lag`).
        let idle = self.online - self.busy_flagged;
        let pending = self.pending;
        let target = self.cfg.idle_target;
        let (min, max) = (target, self.cfg.instances);
        self.above_target_periods = if idle > target {
            self.above_target_periods + 1
        } else {
            0
        };
        self.below_target_periods = if idle + pending < target {
            self.below_target_periods + 1
        } else {
            0
        };
        let cooled = |last: Option<Time>, cd: Duration| last.is_none_or(|t| now.since(t) >= cd);
        if self.above_target_periods >= timing::SCALE_IN_PERIODS
            && cooled(self.last_scale_in, timing::SCALE_IN_COOLDOWN)
            && self.desired > min
        {
            self.desired -= 1;
            self.last_scale_in = Some(now);
            self.metrics.scale_actions += 1;
        } else if self.below_target_periods >= timing::SCALE_IN_PERIODS
            && cooled(self.last_scale_out, timing::SCALE_OUT_COOLDOWN)
            && self.desired < max
        {
            self.desired += 1;
            self.last_scale_out = Some(now);
            self.metrics.scale_actions += 1;
        }
        self.reconcile();
    }
}
