//! GitHub's job broker: the queue, the dispatch pool of polling listeners (a picked host stays in it
//! until its listener is signalled), delivery, and what happens to a job handed to a stopping listener.

use super::*;

/// GitHub's side of the jobs: the jobs of the run, the queue, the dispatch pool and what GitHub's
/// runner list shows.
#[derive(Debug)]
pub(super) struct Broker {
    pub(super) jobs: JobStore,
    pub(super) job_queue: VecDeque<JobId>,
    /// Listeners polling for a job: the broker's dispatch pool. A host picked for scale-in stays in
    /// it until its listener is signalled (the listener long-polls until it is stopped).
    pub(super) idle: IndexedSet,
    /// Listeners online (polling, handed a job, or running one), as GitHub's runner list shows them.
    pub(super) online: u32,
    /// Online listeners whose job GitHub's `busy` flag already shows.
    pub(super) busy_flagged: u32,
    /// Listeners handed a job not yet running (W0 to W2): GitHub shows those jobs as queued.
    pub(super) claimed: u32,
}

impl Broker {
    /// GitHub's view of listener `inst` going from `old` to `new`: the online and handed-a-job
    /// counts, its `busy` flag (`busy_flag`, cleared unless the listener is busy), and the dispatch
    /// pool (a polling listener joins it unless its registration was deleted: that one is never
    /// assigned again and polls on regardless).
    pub(super) fn listener_changed(
        &mut self,
        inst: InstId,
        old: Listener,
        new: Listener,
        busy_flag: &mut bool,
        registration_removed: bool,
    ) {
        let online = |l: Listener| matches!(l, Listener::Polling | Listener::Claimed(_) | Listener::Busy(_));
        match (online(old), online(new)) {
            (false, true) => self.online += 1,
            (true, false) => self.online -= 1,
            _ => {}
        }
        let claimed = |l: Listener| matches!(l, Listener::Claimed(_));
        match (claimed(old), claimed(new)) {
            (false, true) => self.claimed += 1,
            (true, false) => self.claimed -= 1,
            _ => {}
        }
        if *busy_flag && !matches!(new, Listener::Busy(_)) {
            *busy_flag = false;
            self.busy_flagged -= 1;
        }
        if new == Listener::Polling {
            if !registration_removed {
                self.idle.insert(inst);
            }
        } else {
            self.idle.remove(inst);
        }
    }

    pub(super) fn new(jobs: JobStore) -> Self {
        Broker {
            jobs,
            job_queue: VecDeque::new(),
            idle: IndexedSet::default(),
            online: 0,
            busy_flagged: 0,
            claimed: 0,
        }
    }
}

impl World {
    pub(super) fn arrival(&mut self, job: JobId) {
        if let Some((id, at)) = self.broker.jobs.pull_next() {
            self.queue.push(at, Ev::Arrival(id));
        }
        self.metrics.jobs_total += 1;
        self.webhook();
        self.broker.job_queue.push_back(job);
        self.dispatch();
    }

    pub(super) fn make_idle(&mut self, inst: InstId) {
        self.set_listener(inst, Listener::Polling);
        self.dispatch();
    }

    /// The job `inst`'s listener was handed, left in its handover window by a stop, a death or an
    /// accepted delete of the registration: the window's policy (config `handover`) decides.
    /// Returns whether the job was lost (not queued again).
    pub(super) fn drop_unacquired(&mut self, inst: InstId, job: JobId, outcome: JobOutcome) -> bool {
        let window = self.fleet.instances[inst as usize].window;
        let h = self.cfg.handover;
        let policy = match window {
            Window::W0 => h.w0,
            Window::W1 => h.w1,
            Window::W2 => h.w2,
        };
        match policy {
            Unacquired::Lost => {
                self.finish_job(job, outcome);
                if outcome == JobOutcome::LostInStopWindow {
                    self.metrics.jobs_killed_in_window[window.index()] += 1;
                }
                true
            }
            Unacquired::Requeue { after } => {
                self.metrics.jobs_requeued += 1;
                self.metrics.jobs_requeued_from_window[window.index()] += 1;
                self.queue.push(self.now + after, Ev::Requeue(job));
                false
            }
        }
    }

    /// GitHub hands queued jobs to polling listeners; which one is not ours to choose. The handover
    /// starts (W0): the message is in transit on the listener's long poll.
    pub(super) fn dispatch(&mut self) {
        while !self.broker.idle.is_empty() {
            let Some(job) = self.broker.job_queue.pop_front() else {
                return;
            };
            let pick = self
                .broker
                .idle
                .get(self.faults.streams.dispatch.below(self.broker.idle.len() as u64) as usize);
            if matches!(
                self.fleet.instances[pick as usize].asg,
                AsgPhase::Wait { .. } | AsgPhase::Proceed
            ) {
                self.metrics.jobs_dispatched_after_pick += 1;
            }
            self.set_listener(pick, Listener::Claimed(job));
            let i = &mut self.fleet.instances[pick as usize];
            i.window = Window::W0;
            i.assignment_revoked = false;
            let lgen = i.listener_gen;
            let d = between(&mut self.faults.streams.lat, timing::W0_TRANSIT);
            self.queue.push(self.now + d, Ev::Received(pick, lgen, job));
            // A job on its way: the host is not idle (its handover may take seconds of acquire
            // retries).
            self.update_idle_wait(pick);
        }
    }

    /// Whether `inst`'s listener `lgen` holds `job` in `window`.
    fn in_window(&self, inst: InstId, lgen: u32, job: JobId, window: Window) -> bool {
        let i = &self.fleet.instances[inst as usize];
        i.listener_gen == lgen && i.listener == Listener::Claimed(job) && i.window == window
    }

    /// W0 -> W1: the long poll returned the message. The listener appends its perf line first of all
    /// (Runner.cs:606-607), then acknowledges (best effort, 5 s timeout, Runner.cs:691-710) and
    /// acquires (up to 5 attempts 5-15 s apart, RunServer.cs:63-72).
    pub(super) fn received(&mut self, inst: InstId, lgen: u32, job: JobId) {
        if !self.in_window(inst, lgen, job, Window::W0) {
            return;
        }
        let now = self.now;
        let i = &mut self.fleet.instances[inst as usize];
        i.window = Window::W1;
        i.perf_unseen = true;
        let gen = i.agent_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::JobMessage),
        );
        self.record_mark(inst, "listener", || format!("MessageReceived job {job}"));
        let revoked = self.fleet.instances[inst as usize].assignment_revoked;
        if revoked {
            // Its registration was deleted with the job assigned: the agent holds the stop for a
            // worker that never comes, up to the bound.
            self.allow_guard_hold(inst, HandoverConfig::default().bound);
        }
        let lat = &mut self.faults.streams.lat;
        let mut took = between(lat, timing::LISTENER_ROUND_TRIP).min(timing::ACK_TIMEOUT);
        // A job taken back answers 404/409, which `acquirejob` does not retry (RunServer.cs:63-72).
        let attempts = if revoked { 1 } else { timing::ACQUIRE_ATTEMPTS };
        let mut acquired = false;
        for attempt in 1..=attempts {
            took += between(lat, timing::LISTENER_ROUND_TRIP);
            if !lat.chance(self.cfg.acquire_failure_rate) {
                acquired = true;
                break;
            }
            if attempt < attempts {
                took += between(lat, timing::ACQUIRE_BACKOFF);
            }
        }
        self.queue.push(now + took, Ev::Acquired(inst, lgen, job, acquired));
    }

    /// W1 -> W2: `acquirejob` answered. A job taken back by an accepted delete (404/409) or an acquire
    /// that failed every attempt is skipped (Runner.cs:737-757): the listener polls on, the job is
    /// GitHub's again.
    pub(super) fn acquired(&mut self, inst: InstId, lgen: u32, job: JobId, ok: bool) {
        if !self.in_window(inst, lgen, job, Window::W1) {
            return;
        }
        let revoked = std::mem::take(&mut self.fleet.instances[inst as usize].assignment_revoked);
        if revoked || !ok {
            if !revoked {
                // Assigned, never acquired: GitHub's documented 60 s re-queue.
                self.metrics.jobs_requeued += 1;
                self.queue.push(self.now + timing::DOCUMENTED_REQUEUE, Ev::Requeue(job));
            }
            self.metrics.job_messages_skipped += 1;
            // The agent saw the message and holds a stop for a worker that never comes, up to the
            // bound: a legitimate hold.
            self.allow_guard_hold(inst, HandoverConfig::default().bound);
            self.make_idle(inst);
            self.update_idle_wait(inst);
            return;
        }
        self.fleet.instances[inst as usize].window = Window::W2;
        let d = between(&mut self.faults.streams.lat, timing::LISTENER_ROUND_TRIP)
            + between(&mut self.faults.streams.lat, timing::WORKER_SPAWN);
        self.queue.push(self.now + d, Ev::Deliver(inst, job));
    }

    /// W2 -> the worker: the first `renewjob` answered and `Runner.Worker` spawned.
    pub(super) fn deliver(&mut self, inst: InstId, job: JobId) {
        let now = self.now;
        let idx = inst as usize;
        if self.fleet.instances[idx].listener != Listener::Claimed(job)
            || self.fleet.instances[idx].window != Window::W2
        {
            return; // the listener stopped or died meanwhile; the job was accounted for then
        }
        let pid = self.fleet.next_pid();
        self.set_listener(inst, Listener::Busy(job));
        self.record_span(inst, "worker", format!("job {job}"));
        self.fleet.workers += 1;
        self.webhook();
        let i = &mut self.fleet.instances[idx];
        i.worker = Some((job, pid, now));
        i.worker_seen = false;
        i.listener_jobs += 1;
        i.jit_registration_unused = false;
        self.broker.jobs.start(job, now);
        let gen = i.agent_gen;
        let lgen = i.listener_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::WorkerStarted(pid)),
        );
        let flag = between(&mut self.faults.streams.lat, self.cfg.busy_flag_lag);
        self.queue.push(now + flag, Ev::BusyFlag(inst, lgen, job));
        let setup = between(&mut self.faults.streams.lat, timing::SETUP);
        self.queue.push(now + setup, Ev::HookStart(inst, job));
        self.update_idle_wait(inst);
    }

    /// Jobs still queued for a runner right now.
    pub fn queued_jobs(&self) -> usize {
        self.broker.job_queue.len()
    }
}
