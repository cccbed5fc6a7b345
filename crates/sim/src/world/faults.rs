//! Injected faults, each instance with its own schedule (common random numbers).

use super::*;

impl World {
    pub(crate) fn schedule_faults(&mut self, inst: InstId) {
        let f = self.cfg.faults.clone();
        let now = self.now;
        let rng = &mut self.instances[inst as usize].faults_rng;
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
        let rng = &mut self.instances[inst as usize].faults_rng;
        if let Some(at) = next_fault(rng, self.now, rate) {
            self.queue.push(at, ev);
        }
    }
}
