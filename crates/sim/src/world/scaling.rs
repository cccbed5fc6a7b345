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
            queued: (self.job_queue.len() as u32).saturating_add(self.claimed),
            running: self.workers,
        };
        let now = self.now;
        let victims = self.cfg.demand_scale_in == DemandScaleIn::Victims && self.listener_mode == ListenerMode::Jit;
        let decision = policy.decide(&mut self.demand_state, self.desired, Some(demand), now);
        if victims {
            // A scale-in decided stays owed until enough idle hosts were found (as the group
            // defers a termination while every instance is protected), unless demand comes back.
            self.victims_target = match decision {
                ScaleDecision::Set { desired, .. } if desired < self.desired => Some(desired),
                ScaleDecision::Set { .. } => None,
                ScaleDecision::Hold { .. } => self.victims_target,
            }
            .map(|t| t.max(policy.wanted(demand)))
            .filter(|&t| t < self.desired);
            if let Some(t) = self.victims_target {
                let n = (self.desired - t).saturating_sub(self.victims_pending);
                self.pick_victims(n);
            }
            if let ScaleDecision::Set { desired, .. } = decision {
                if desired > self.desired {
                    self.desired = desired;
                    self.metrics.scale_actions += 1;
                    self.reconcile();
                }
            }
            return;
        }
        if let ScaleDecision::Set { desired, .. } = decision {
            if desired != self.desired {
                self.desired = desired;
                self.metrics.scale_actions += 1;
                self.reconcile();
            }
        }
    }

    /// Demand scaling picks its victims (`DemandScaleIn::Victims`): hosts with no job as the
    /// controller knows from `workflow_job` webhooks (no worker: a job still in its handover is
    /// not visible to it), InService. For each: delete its registration (GET, DELETE); once that
    /// takes effect, `victim_release` terminates it with decrement, or skips it if GitHub refused.
    fn pick_victims(&mut self, n: u32) {
        for _ in 0..n {
            let candidates: Vec<InstId> = (0..self.instances.len() as InstId)
                .filter(|&k| {
                    let i = &self.instances[k as usize];
                    i.asg == AsgPhase::InService
                        && i.worker.is_none()
                        && matches!(i.listener, Listener::Polling | Listener::Claimed(_))
                        && !i.victim
                })
                .collect();
            if candidates.is_empty() {
                return;
            }
            let inst = candidates[self.streams.asg.below(candidates.len() as u64) as usize];
            self.metrics.victims_picked += 1;
            let (took, result) = self.delete_registration(false);
            if result.is_err() {
                self.metrics.victims_refused += 1;
                continue;
            }
            let i = &mut self.instances[inst as usize];
            i.victim = true;
            let lgen = i.listener_gen;
            self.victims_pending += 1;
            self.queue.push(self.now + took, Ev::VictimRelease(inst, lgen));
        }
    }

    /// The demand controller's DELETE of a victim's registration reaches GitHub: refused (a job
    /// landed on it meanwhile) skips the victim; removed, `TerminateInstanceInAutoScalingGroup`
    /// with `ShouldDecrementDesiredCapacity` (the SDK retries it).
    pub(super) fn victim_release(&mut self, inst: InstId, lgen: u32) {
        self.victims_pending = self.victims_pending.saturating_sub(1);
        let idx = inst as usize;
        self.instances[idx].victim = false;
        let i = &self.instances[idx];
        // A host whose listener changed since the pick (a job came and went) runs under another
        // registration than the one deleted: left for the next pick.
        let usable = i.asg == AsgPhase::InService && i.worker.is_none() && i.listener_gen == lgen;
        let outcome = usable.then(|| self.delete_effect(inst, lgen));
        if outcome != Some(Release::Removed) {
            self.metrics.victims_refused += 1;
            return;
        }
        let mut failed = true;
        for _ in 0..timing::MINT_DESCRIBE_ATTEMPTS {
            if self.controller_describe_fault().is_none() {
                failed = false;
                break;
            }
        }
        if failed {
            // Its registration is gone: the controller retries the termination shortly rather
            // than leave a host that can take no job.
            self.instances[idx].victim = true;
            self.victims_pending += 1;
            self.queue
                .push(self.now + timing::RELAUNCH, Ev::VictimRelease(inst, lgen));
            return;
        }
        self.metrics.victims_terminated += 1;
        self.metrics.scale_actions += 1;
        self.desired -= 1;
        self.begin_termination(inst);
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
