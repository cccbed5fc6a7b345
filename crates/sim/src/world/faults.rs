//! Injected faults, each instance with its own schedule (common random numbers).

use super::*;

/// The world's randomness, one stream per concern so that strategies face the same world, and the
/// account-wide fault episodes under way.
#[derive(Debug)]
pub(super) struct FaultState {
    pub(super) streams: Streams,
    /// Until then an account-wide throttling episode is under way.
    pub(super) throttled_until: Time,
    /// Until then GitHub refuses the controller's requests (a rate-limit episode).
    pub(super) github_limited_until: Time,
}

impl FaultState {
    pub(super) fn new(streams: Streams) -> Self {
        FaultState {
            streams,
            throttled_until: Time::ZERO,
            github_limited_until: Time::ZERO,
        }
    }
}

impl World {
    pub(crate) fn schedule_faults(&mut self, inst: InstId) {
        let f = self.cfg.faults.clone();
        let now = self.now;
        let rng = &mut self.fleet.instances[inst as usize].faults_rng;
        let plan = [
            (next_fault(rng, now, f.agent_crashes_per_day), Ev::AgentCrash(inst)),
            (next_fault(rng, now, f.runner_crashes_per_day), Ev::RunnerCrash(inst)),
            (next_fault(rng, now, f.imds_outages_per_day), Ev::ImdsOutage(inst)),
            (next_fault(rng, now, f.spot_interruptions_per_day), Ev::SpotNotice(inst)),
        ];
        for (at, ev) in plan {
            if let Some(at) = at {
                self.queue.push(at, ev);
            }
        }
    }

    pub(super) fn reschedule_fault(&mut self, inst: InstId, rate: f64, ev: Ev) {
        let rng = &mut self.fleet.instances[inst as usize].faults_rng;
        if let Some(at) = next_fault(rng, self.now, rate) {
            self.queue.push(at, ev);
        }
    }
}
