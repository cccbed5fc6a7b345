//! GitHub's job broker: the queue, the dispatch pool of polling listeners (a picked host stays in it
//! until its listener is signalled), delivery, and what happens to a job handed to a stopping listener.

use super::*;

impl World {
    pub(super) fn arrival(&mut self, job: JobId) {
        if let Some((id, at)) = self.jobs.pull_next() {
            self.queue.push(at, Ev::Arrival(id));
        }
        self.metrics.jobs_total += 1;
        self.webhook();
        self.job_queue.push_back(job);
        self.dispatch();
    }

    pub(super) fn make_idle(&mut self, inst: InstId) {
        self.set_listener(inst, Listener::Polling);
        self.dispatch();
    }

    /// A job handed to a listener that stopped or died before acquiring it (config `unacquired`).
    /// Returns whether the job was lost (not queued again).
    pub(super) fn drop_unacquired(&mut self, job: JobId, outcome: JobOutcome) -> bool {
        match self.cfg.unacquired {
            Unacquired::Lost => {
                self.finish_job(job, outcome);
                true
            }
            Unacquired::Requeue { after } => {
                self.metrics.jobs_requeued += 1;
                self.queue.push(self.now + after, Ev::Requeue(job));
                false
            }
        }
    }

    /// GitHub hands queued jobs to polling listeners; which one is not ours to choose.
    pub(super) fn dispatch(&mut self) {
        while !self.idle.is_empty() {
            let Some(job) = self.job_queue.pop_front() else { return };
            let pick = self
                .idle
                .get(self.streams.dispatch.below(self.idle.len() as u64) as usize);
            if matches!(
                self.instances[pick as usize].asg,
                AsgPhase::Wait { .. } | AsgPhase::Proceed
            ) {
                self.metrics.jobs_dispatched_after_pick += 1;
            }
            self.set_listener(pick, Listener::Claimed(job));
            let d = between(&mut self.streams.lat, timing::DISPATCH);
            self.queue.push(self.now + d, Ev::Deliver(pick, job));
        }
    }

    pub(super) fn deliver(&mut self, inst: InstId, job: JobId) {
        let now = self.now;
        let idx = inst as usize;
        if self.instances[idx].listener != Listener::Claimed(job) {
            return; // the listener stopped or died meanwhile; the job was accounted for then
        }
        let pid = self.next_pid();
        self.set_listener(inst, Listener::Busy(job));
        self.record_span(inst, "worker", format!("job {job}"));
        self.workers += 1;
        self.webhook();
        let i = &mut self.instances[idx];
        i.worker = Some((job, pid, now));
        i.worker_seen = false;
        i.listener_jobs += 1;
        i.jit_registration_unused = false;
        self.jobs.start(job, now);
        let gen = i.agent_gen;
        let lgen = i.listener_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::WorkerStarted(pid)),
        );
        let flag = between(&mut self.streams.lat, self.cfg.busy_flag_lag);
        self.queue.push(now + flag, Ev::BusyFlag(inst, lgen, job));
        let setup = between(&mut self.streams.lat, timing::SETUP);
        self.queue.push(now + setup, Ev::HookStart(inst, job));
        self.update_idle_wait(inst);
    }

    /// Jobs still queued for a runner right now.
    pub fn queued_jobs(&self) -> usize {
        self.job_queue.len()
    }
}
