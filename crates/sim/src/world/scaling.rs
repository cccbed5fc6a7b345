//! The group's scaling policies: the source PR's idle-runner alarms, and the controller's demand
//! policy (lifecycle-core `scaling`) fed by `workflow_job` webhooks and a reconcile each minute.

use super::*;

/// The scaling control plane: the idle alarms' periods and cooldowns, the demand policy's memory,
/// the demand controller's victims, and whether the strategy's central handler completes trims.
#[derive(Debug)]
pub(super) struct ControlPlane {
    pub(super) above_target_periods: u32,
    pub(super) below_target_periods: u32,
    /// The demand policy's memory.
    pub(super) demand_state: lifecycle_core::scaling::ScalingState,
    /// A webhook-triggered demand evaluation is already on its way.
    pub(super) demand_eval_pending: bool,
    pub(super) last_scale_in: Option<Time>,
    pub(super) last_scale_out: Option<Time>,
    /// Victims the demand controller is releasing (not yet terminated or given up).
    pub(super) victims_pending: u32,
    /// The desired capacity a demand scale-in by victims is working towards.
    pub(super) victims_target: Option<u32>,
    /// Whether the strategy's central handler completes warm-pool trims.
    pub(super) central_completes_trims: bool,
}

impl ControlPlane {
    /// The source PR's step alarms, one evaluation: `idle` runners online and not busy, `pending`
    /// instances booting, the group at `desired` between `target` (its minimum and the idle target)
    /// and `max`. The new desired capacity, if it changes (by one, after the alarm's periods and
    /// outside its cooldown).
    pub(super) fn idle_alarms(
        &mut self,
        idle: u32,
        pending: u32,
        desired: u32,
        target: u32,
        max: u32,
        now: Time,
    ) -> Option<u32> {
        let min = target;
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
            && desired > min
        {
            self.last_scale_in = Some(now);
            Some(desired - 1)
        } else if self.below_target_periods >= timing::SCALE_IN_PERIODS
            && cooled(self.last_scale_out, timing::SCALE_OUT_COOLDOWN)
            && desired < max
        {
            self.last_scale_out = Some(now);
            Some(desired + 1)
        } else {
            None
        }
    }

    /// Demand scaling by victims: the scale-in `decision` owes stays owed (as the group defers a
    /// termination while every instance is protected) until enough idle hosts were found, never
    /// below what demand (`wanted`) calls for, and is dropped when demand comes back. How many
    /// more victims to pick, if a scale-in is owed.
    pub(super) fn victims_owed(
        &mut self,
        decision: lifecycle_core::scaling::ScaleDecision,
        wanted: u32,
        desired: u32,
    ) -> Option<u32> {
        use lifecycle_core::scaling::ScaleDecision;
        self.victims_target = match decision {
            ScaleDecision::Set { desired: d, .. } if d < desired => Some(d),
            ScaleDecision::Set { .. } => None,
            ScaleDecision::Hold { .. } => self.victims_target,
        }
        .map(|t| t.max(wanted))
        .filter(|&t| t < desired);
        self.victims_target
            .map(|t| (desired - t).saturating_sub(self.victims_pending))
    }

    pub(super) fn new(central_completes_trims: bool) -> Self {
        ControlPlane {
            above_target_periods: 0,
            below_target_periods: 0,
            demand_state: Default::default(),
            demand_eval_pending: false,
            last_scale_in: None,
            last_scale_out: None,
            victims_pending: 0,
            victims_target: None,
            central_completes_trims,
        }
    }
}

impl World {
    pub(super) fn scaling_eval(&mut self) {
        let now = self.now;
        self.queue.push(now + timing::SCALING_PERIOD, Ev::ScalingEval);
        let period = timing::SCALING_PERIOD.as_secs_f64();
        self.metrics.instance_seconds += f64::from(self.fleet.alive) * period;
        self.metrics.idle_instance_seconds += f64::from(self.fleet.alive.saturating_sub(self.fleet.workers)) * period;
        match self.cfg.scaling {
            Scaling::IdleAlarms => self.idle_alarms(),
            // The minute's reconcile: demand read back from GitHub's API repairs dropped webhooks.
            Scaling::Demand => self.demand_eval(),
        }
        if self.check_invariants {
            let waiting: Vec<InstId> = self.fleet.waiting.iter().copied().collect();
            for inst in waiting {
                self.check_idle_wait(inst, false);
            }
        }
    }

    /// A `workflow_job` webhook (queued, in progress, completed) for the demand policy: it reaches the
    /// controller after a short delay unless dropped; webhooks arriving meanwhile are coalesced into
    /// the same evaluation.
    pub(super) fn webhook(&mut self) {
        if self.cfg.scaling != Scaling::Demand || self.control.demand_eval_pending {
            return;
        }
        if self.faults.streams.webhooks.chance(self.cfg.webhook_drop_rate) {
            self.metrics.webhooks_dropped += 1;
            return;
        }
        self.control.demand_eval_pending = true;
        let d = between(&mut self.faults.streams.lat, timing::WEBHOOK_LATENCY);
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
            queued: (self.broker.job_queue.len() as u32).saturating_add(self.broker.claimed),
            running: self.fleet.workers,
        };
        let now = self.now;
        let victims = self.cfg.demand_scale_in == DemandScaleIn::Victims && self.listener_mode == ListenerMode::Jit;
        // The controller's own evaluation (lifecycle-core `DemandPolicy::evaluate`, as `controller
        // scale` and its webhooks call it); the world's demand is always fresh.
        let decision = policy.evaluate(&mut self.control.demand_state, self.fleet.desired, demand, true, now);
        if victims {
            // A scale-in decided stays owed until enough idle hosts were found (as the group
            // defers a termination while every instance is protected), unless demand comes back.
            if let Some(n) = self
                .control
                .victims_owed(decision, policy.wanted(demand), self.fleet.desired)
            {
                self.pick_victims(n);
            }
            if let ScaleDecision::Set { desired, .. } = decision {
                if desired > self.fleet.desired {
                    self.fleet.desired = desired;
                    self.metrics.scale_actions += 1;
                    self.reconcile();
                }
            }
            return;
        }
        if let ScaleDecision::Set { desired, .. } = decision {
            if desired != self.fleet.desired {
                self.fleet.desired = desired;
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
            let candidates: Vec<InstId> = (0..self.fleet.instances.len() as InstId)
                .filter(|&k| {
                    let i = &self.fleet.instances[k as usize];
                    i.asg == AsgPhase::InService
                        && i.worker.is_none()
                        && matches!(i.listener, Listener::Polling | Listener::Claimed(_))
                        && !i.victim
                })
                .collect();
            if candidates.is_empty() {
                return;
            }
            let inst = candidates[self.faults.streams.asg.below(candidates.len() as u64) as usize];
            self.metrics.victims_picked += 1;
            let (took, result) = self.delete_registration(false);
            if result.is_err() {
                self.metrics.victims_refused += 1;
                continue;
            }
            let i = &mut self.fleet.instances[inst as usize];
            i.victim = true;
            let lgen = i.listener_gen;
            self.control.victims_pending += 1;
            self.queue.push(self.now + took, Ev::VictimRelease(inst, lgen));
        }
    }

    /// The demand controller's DELETE of a victim's registration reaches GitHub: refused (a job
    /// landed on it meanwhile) skips the victim; removed, `TerminateInstanceInAutoScalingGroup`
    /// with `ShouldDecrementDesiredCapacity` (the SDK retries it).
    pub(super) fn victim_release(&mut self, inst: InstId, lgen: u32) {
        self.control.victims_pending = self.control.victims_pending.saturating_sub(1);
        let idx = inst as usize;
        self.fleet.instances[idx].victim = false;
        let i = &self.fleet.instances[idx];
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
            self.fleet.instances[idx].victim = true;
            self.control.victims_pending += 1;
            self.queue
                .push(self.now + timing::RELAUNCH, Ev::VictimRelease(inst, lgen));
            return;
        }
        self.metrics.victims_terminated += 1;
        self.metrics.scale_actions += 1;
        self.fleet.desired -= 1;
        self.begin_termination(inst);
    }

    pub(super) fn idle_alarms(&mut self) {
        // The source PR's metric: GitHub's `online && !busy` runners, sampled once a minute. It counts
        // listeners on hosts already picked for termination, and a just-started job's runner until its
        // busy flag shows (config `busy_flag_lag`).
        let idle = self.broker.online - self.broker.busy_flagged;
        let (target, max) = (self.cfg.idle_target, self.cfg.instances);
        let desired = self
            .control
            .idle_alarms(idle, self.fleet.pending, self.fleet.desired, target, max, self.now);
        if let Some(desired) = desired {
            self.fleet.desired = desired;
            self.metrics.scale_actions += 1;
        }
        self.reconcile();
    }
}
