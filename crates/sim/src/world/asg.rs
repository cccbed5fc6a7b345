//! The Auto Scaling side of the world: launches (fresh or from the warm pool), phases and their
//! counters, the scale-in pick, termination hooks and their timeouts, and the API calls a host can
//! make, answered as AWS would with injected faults.

use super::*;

/// The Auto Scaling group's books and its hosts: every instance, the counters by phase, the
/// scale-in candidates, the warm pool, and the slots that key each host's fault schedule.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) instances: Vec<Instance>,
    /// InService and unprotected: the scale-in candidates.
    pub(super) candidates: IndexedSet,
    /// In Terminating:Wait.
    pub(super) waiting: BTreeSet<InstId>,
    pub(super) pending: u32,
    pub(super) in_service: u32,
    pub(super) alive: u32,
    pub(super) desired: u32,
    /// Stopped instances in the warm pool, oldest first.
    pub(super) warm: VecDeque<InstId>,
    /// Instances launching into the warm pool.
    pub(super) warm_pending: u32,
    /// Workers alive (jobs running).
    pub(super) workers: u32,
    pub(super) pid_seq: u32,
    /// Free slots of the group (a launch takes the lowest), and how often each slot was launched.
    pub(super) free_slots: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    pub(super) slot_launches: Vec<u32>,
}

impl Fleet {
    /// Move `inst` to `phase`, keeping the counters and the waiting set; returns the old phase.
    pub(super) fn set_phase(&mut self, inst: InstId, phase: AsgPhase) -> AsgPhase {
        let old = std::mem::replace(&mut self.instances[inst as usize].asg, phase);
        for (p, sign) in [(old, -1i64), (phase, 1)] {
            let counter = match p {
                AsgPhase::Pending => Some(&mut self.pending),
                AsgPhase::InService => Some(&mut self.in_service),
                _ => None,
            };
            if let Some(c) = counter {
                *c = (i64::from(*c) + sign) as u32;
            }
        }
        if matches!(old, AsgPhase::Wait { .. }) && !matches!(phase, AsgPhase::Wait { .. }) {
            self.waiting.remove(&inst);
        }
        if matches!(phase, AsgPhase::Wait { .. }) {
            self.waiting.insert(inst);
        }
        if phase == AsgPhase::Gone && running(old) {
            self.alive -= 1;
        }
        old
    }

    /// Keep `inst` among the scale-in candidates exactly while it is InService and unprotected.
    pub(super) fn refresh_candidate(&mut self, inst: InstId) {
        let i = &self.instances[inst as usize];
        if i.asg == AsgPhase::InService && !i.protected {
            self.candidates.insert(inst);
        } else {
            self.candidates.remove(inst);
        }
    }

    /// A fresh process id on the hosts.
    pub(super) fn next_pid(&mut self) -> u32 {
        self.pid_seq += 1;
        self.pid_seq
    }

    pub(super) fn new(desired: u32) -> Self {
        Fleet {
            instances: Vec::new(),
            candidates: IndexedSet::default(),
            waiting: BTreeSet::new(),
            pending: 0,
            in_service: 0,
            alive: 0,
            desired,
            warm: VecDeque::new(),
            warm_pending: 0,
            workers: 0,
            pid_seq: 1000,
            free_slots: Default::default(),
            slot_launches: Vec::new(),
        }
    }
}

impl World {
    /// An Auto Scaling call, answered as AWS would, with injected faults. The effect applies now; the
    /// caller models the round trip.
    pub fn call(&mut self, inst: InstId, call: ApiCall) -> Result<ApiReply, ApiError> {
        let result = self.call_inner(inst, call);
        self.trace(inst, || format!("api {call:?} -> {result:?}"));
        self.record_mark(inst, "api", || {
            let ok = if result.is_ok() { "" } else { " (failed)" };
            format!("{call:?}{ok}")
        });
        result
    }

    pub(super) fn call_inner(&mut self, inst: InstId, call: ApiCall) -> Result<ApiReply, ApiError> {
        self.metrics.asg_api_calls += 1;
        let faults = &self.cfg.faults;
        let (mut throttle, error) = (faults.throttle_rate, faults.error_rate);
        if self.now < self.faults.throttled_until {
            throttle = throttle.max(timing::EPISODE_THROTTLE);
        }
        if self.faults.streams.api.chance(throttle) {
            self.note_api_fault(inst, call);
            return Err(ApiError::new(ApiErrorKind::Throttled, "Rate exceeded"));
        }
        if self.faults.streams.api.chance(error) {
            self.note_api_fault(inst, call);
            return Err(ApiError::new(ApiErrorKind::Transient, "InternalFailure (500)"));
        }
        let now = self.now;
        let idx = inst as usize;
        let asg = self.fleet.instances[idx].asg;
        match call {
            ApiCall::Describe => Ok(ApiReply::Described(match asg {
                AsgPhase::Gone => None,
                phase => Some(DescribedInstance {
                    state: asg_state(phase),
                    protected: self.fleet.instances[idx].protected,
                }),
            })),
            // The group's one termination hook (its configuration never changes in the model).
            ApiCall::DescribeHooks => Ok(ApiReply::Done),
            ApiCall::SetProtection(true) => match asg {
                AsgPhase::InService => {
                    self.set_protected(inst, true);
                    Ok(ApiReply::Done)
                }
                _ => Err(ApiError::new(
                    ApiErrorKind::NotInService,
                    format!("The instance i-{inst} is not in InService or EnteringStandby or Standby."),
                )),
            },
            ApiCall::SetProtection(false) => {
                self.set_protected(inst, false);
                // A scale-in deferred because everything was protected takes this instance at once.
                self.reconcile();
                Ok(ApiReply::Done)
            }
            ApiCall::Heartbeat => match asg {
                AsgPhase::Wait { seq, since, global, .. } => {
                    if self.check_invariants {
                        let i = &self.fleet.instances[idx];
                        // A job alive or just ended, or one landing (the guard holds for its worker), or
                        // a hold the guard is allowed (release, watch, a skipped message).
                        let job_recent = i.worker.is_some()
                            || now.since(i.last_worker_exit) <= timing::WORKER_OBSERVATION * 2
                            || matches!(i.listener, Listener::Claimed(_))
                            || now <= i.hold_allowed_until;
                        if !job_recent {
                            self.violate(inst, "heartbeat while no job was alive");
                        }
                    }
                    let deadline = (now + self.cfg.hook_timeout).min(global);
                    self.fleet.instances[idx].asg = AsgPhase::Wait {
                        seq,
                        since,
                        deadline,
                        global,
                    };
                    self.metrics.heartbeats += 1;
                    Ok(ApiReply::Done)
                }
                _ => Err(no_active_action(inst)),
            },
            ApiCall::Complete => match asg {
                AsgPhase::WarmTrimWait { .. } => {
                    self.metrics.warm_trims_completed += 1;
                    self.leave_trim_wait(inst);
                    self.gone(inst, false);
                    Ok(ApiReply::Done)
                }
                AsgPhase::Wait { .. } => {
                    self.metrics.hooks_completed += 1;
                    if self.check_invariants {
                        if self.fleet.instances[idx].worker.is_some() {
                            self.violate(inst, "lifecycle action completed while a job was alive");
                        }
                        self.check_idle_wait(inst, true);
                    }
                    self.proceed(inst);
                    Ok(ApiReply::Done)
                }
                _ => Err(no_active_action(inst)),
            },
            ApiCall::TerminateInGroup => match asg {
                AsgPhase::InService => {
                    // Protection does not stand in the way of an explicit termination; the instance
                    // goes through the termination hook like a scale-in, and the group, its desired
                    // capacity unchanged, launches a replacement.
                    self.metrics.group_leaves += 1;
                    self.begin_termination_as(inst, false);
                    self.reconcile();
                    Ok(ApiReply::Done)
                }
                AsgPhase::Gone => Err(ApiError::new(
                    ApiErrorKind::InstanceNotFound,
                    format!("Instance Id not found - No managed instance found for instance ID: i-{inst}"),
                )),
                _ => Err(ApiError::new(
                    ApiErrorKind::Other,
                    format!("The instance i-{inst} is not in a state that can be terminated."),
                )),
            },
        }
    }

    /// A call made through a client that retries throttling and 5xx by itself, up to `attempts` tries
    /// in all (AWS CLI legacy retry mode: 5; AWS SDKs' standard mode: 3). Every try is an API call.
    pub fn call_retrying(&mut self, inst: InstId, call: ApiCall, attempts: u32) -> Result<ApiReply, ApiError> {
        let mut result = self.call(inst, call);
        for _ in 1..attempts {
            match &result {
                Err(e) if e.kind.is_retryable_soon() => result = self.call(inst, call),
                _ => break,
            }
        }
        result
    }

    pub(super) fn note_api_fault(&mut self, inst: InstId, call: ApiCall) {
        // Retries after a failure are part of the idle-wait allowance: describe backs off up to 30 s,
        // completion up to 4 s (lifecycle-core CoreConfig defaults).
        let extra = match call {
            ApiCall::Describe | ApiCall::DescribeHooks => Duration::from_secs(30),
            ApiCall::Complete => Duration::from_secs(4),
            _ => Duration::ZERO,
        };
        self.fleet.instances[inst as usize].fault_allowance += extra;
    }

    pub(super) fn launch(&mut self, in_service: bool) -> InstId {
        self.metrics.boots += 1;
        if let Some(inst) = self.fleet.warm.pop_front() {
            // Scale-out takes a stopped instance from the warm pool first; the pool is refilled.
            self.set_phase(inst, AsgPhase::Pending);
            self.fleet.alive += 1;
            let boot = between(&mut self.faults.streams.lat, timing::WARM_START);
            self.queue.push(self.now + boot, Ev::Boot(inst));
            self.launch_into_pool(false);
            return inst;
        }
        let inst = self.new_instance();
        self.fleet.alive += 1;
        self.set_phase(inst, AsgPhase::Pending);
        let boot = if in_service {
            Duration::ZERO
        } else {
            between(&mut self.faults.streams.lat, timing::BOOT)
        };
        self.queue.push(self.now + boot, Ev::Boot(inst));
        inst
    }

    /// Launch an instance into the warm pool: it boots, then is stopped (not billed as running).
    pub(super) fn launch_into_pool(&mut self, at_start: bool) {
        let inst = self.new_instance();
        self.fleet.instances[inst as usize].asg = AsgPhase::WarmPending;
        self.fleet.warm_pending += 1;
        let boot = if at_start {
            Duration::ZERO
        } else {
            between(&mut self.faults.streams.lat, timing::BOOT)
        };
        self.queue.push(self.now + boot, Ev::WarmReady(inst));
    }

    pub(super) fn new_instance(&mut self) -> InstId {
        let inst = self.fleet.instances.len() as InstId;
        // The host's identity for its faults: the lowest free slot, and that slot's launch count.
        let slot = match self.fleet.free_slots.pop() {
            Some(std::cmp::Reverse(s)) => s,
            None => {
                self.fleet.slot_launches.push(0);
                (self.fleet.slot_launches.len() - 1) as u32
            }
        };
        let launch = self.fleet.slot_launches[slot as usize];
        self.fleet.slot_launches[slot as usize] += 1;
        let poll_phase = self.faults.streams.lat.jitter(timing::IMDS_POLL, 0.0, 1.0);
        self.fleet.instances.push(Instance {
            // Not yet counted anywhere: the caller moves it to Pending or keeps it in the pool.
            asg: AsgPhase::WarmPending,
            protected: false,
            target: Target::InService,
            target_visible_at: Time::ZERO,
            imds_down_until: Time::ZERO,
            poll_phase,
            spot_notice: false,
            listener: Listener::Down,
            listener_gen: 0,
            listener_pid: 0,
            worker: None,
            last_worker_exit: Time::ZERO,
            agent_up: false,
            agent_gen: 0,
            wake_at: None,
            idle_in_wait_since: None,
            fault_allowance: Duration::ZERO,
            global_timeout_hit: false,
            terminations: 0,
            busy_flag: false,
            startup_retry_until: None,
            worker_seen: false,
            faults_rng: streams::instance_faults(self.cfg.seed, slot, launch),
            jit_configs_held: 0,
            jit_registration_unused: false,
            listener_jobs: 0,
            serve_gap_from: None,
            window: Window::W0,
            assignment_revoked: false,
            perf_unseen: false,
            registration_removed: false,
            victim: false,
            hold_allowed_until: Time::ZERO,
            slot,
        });
        inst
    }

    /// Move an instance to a new Auto Scaling phase, keeping the counters and candidate sets true.
    pub(super) fn set_phase(&mut self, inst: InstId, phase: AsgPhase) {
        let old = self.fleet.set_phase(inst, phase);
        if old != phase {
            self.record_span(inst, "asg", phase_name(phase).to_string());
        }
        self.fleet.refresh_candidate(inst);
    }

    pub(super) fn set_protected(&mut self, inst: InstId, protected: bool) {
        self.fleet.instances[inst as usize].protected = protected;
        self.fleet.refresh_candidate(inst);
    }

    /// Launch or pick instances until the group matches its desired capacity.
    pub(super) fn reconcile(&mut self) {
        let active = self.fleet.pending + self.fleet.in_service;
        for _ in active..self.fleet.desired {
            self.launch(false);
        }
        if active <= self.fleet.desired {
            return;
        }
        for _ in self.fleet.desired..active {
            // The default termination policy (AZ balance, oldest launch template, nearest billing hour)
            // is arbitrary within one AZ and template: pick at random among the unprotected.
            if self.fleet.candidates.is_empty() {
                return; // all protected: termination deferred until one is unprotected
            }
            let pick = self
                .fleet
                .candidates
                .get(self.faults.streams.asg.below(self.fleet.candidates.len() as u64) as usize);
            self.begin_termination(pick);
        }
    }

    pub(super) fn begin_termination(&mut self, inst: InstId) {
        self.begin_termination_as(inst, true);
    }

    /// Termination through the hook: a scale-in (`scale_in`), or the instance's own request to leave.
    pub(super) fn begin_termination_as(&mut self, inst: InstId, scale_in: bool) {
        let now = self.now;
        let global = now
            + self
                .cfg
                .hook_timeout
                .saturating_mul(100)
                .min(Duration::from_secs(48 * 3600));
        let idx = inst as usize;
        if scale_in {
            self.metrics.scale_ins += 1;
        }
        self.fleet.instances[idx].terminations += 1;
        let seq = self.fleet.instances[idx].terminations;
        self.set_phase(
            inst,
            AsgPhase::Wait {
                seq,
                since: now,
                deadline: now + self.cfg.hook_timeout,
                global,
            },
        );
        let i = &mut self.fleet.instances[idx];
        i.target = Target::Terminated;
        i.target_visible_at = now + self.cfg.imds_lag;
        i.serve_gap_from = None;
        // Faults already under way delay this drain too.
        i.fault_allowance = if i.agent_up {
            Duration::ZERO
        } else {
            timing::AGENT_RESTART
        };
        if i.imds_down_until > now {
            i.fault_allowance += i.imds_down_until.since(now) + Duration::from_secs(40);
        }
        // A guard hold already under way (a skipped job message) delays the drain too.
        if i.hold_allowed_until > now {
            i.fault_allowance += i.hold_allowed_until.since(now);
        }
        // An agent still starting waits out its discovery backoff first (seeds 1710, 5079, 6913).
        if let Some(until) = i.startup_retry_until.filter(|t| *t > now) {
            i.fault_allowance += until.since(now);
        }
        self.queue.push(now + self.cfg.hook_timeout, Ev::HookExpire(inst, seq));
        let seen = self.next_poll_after(inst, now + self.cfg.imds_lag);
        let gen = self.fleet.instances[idx].agent_gen;
        self.queue
            .push(seen, Ev::Host(inst, gen, HostEvent::Imds(Target::Terminated)));
        // The fire-and-forget stop path of the designs that need one (EventBridge -> Lambda -> SSM).
        // Drawn from the instance's own stream, so every strategy faces the same losses.
        let i = &mut self.fleet.instances[idx];
        let stop_after = self
            .cfg
            .event_to_stop
            .mul_f64((timing::EVENT_TO_STOP_SIGMA * i.faults_rng.normal()).exp());
        if i.faults_rng.chance(self.cfg.faults.stop_path_failure_rate) {
            self.metrics.stop_paths_lost += 1;
        } else {
            self.queue
                .push(now + stop_after, Ev::Host(inst, gen, HostEvent::TerminationEvent));
        }
        // The listener stays in the broker's pool: it long-polls until something stops it.
        self.update_idle_wait(inst);
    }

    pub(super) fn proceed(&mut self, inst: InstId) {
        self.leave_wait(inst);
        self.set_phase(inst, AsgPhase::Proceed);
        self.queue.push(self.now + timing::SHUTDOWN, Ev::Gone(inst));
    }

    pub(super) fn leave_wait(&mut self, inst: InstId) {
        self.update_idle_wait_to(inst, false);
    }

    pub(super) fn gone(&mut self, inst: InstId, interrupted: bool) {
        let idx = inst as usize;
        if self.fleet.instances[idx].asg == AsgPhase::Gone {
            return;
        }
        let in_pool = !running(self.fleet.instances[idx].asg);
        let outcome = if interrupted {
            JobOutcome::KilledByInterruption
        } else if self.fleet.instances[idx].global_timeout_hit {
            JobOutcome::Failed(crate::metrics::FailCause::GlobalTimeout)
        } else {
            JobOutcome::Failed(crate::metrics::FailCause::InstanceTerminated)
        };
        if let Listener::Claimed(job) = self.fleet.instances[idx].listener {
            if !self.fleet.instances[idx].assignment_revoked {
                self.drop_unacquired(inst, job, outcome);
            }
        }
        if let Some((job, _, _)) = self.fleet.instances[idx].worker {
            self.finish_job(job, outcome);
            self.fleet.instances[idx].worker = None;
            self.fleet.workers -= 1;
        }
        if interrupted && matches!(self.fleet.instances[idx].asg, AsgPhase::Wait { .. }) {
            self.metrics.hooks_lost_to_interruption += 1;
        }
        self.leave_wait(inst);
        self.set_listener(inst, Listener::Down);
        self.jit_configs_lost(inst);
        self.fleet.instances[idx].serve_gap_from = None;
        self.set_phase(inst, AsgPhase::Gone);
        let slot = self.fleet.instances[idx].slot;
        self.fleet.free_slots.push(std::cmp::Reverse(slot));
        let now = self.now;
        if let Some(t) = self.timeline_of(inst) {
            t.gone(now);
        }
        let i = &mut self.fleet.instances[idx];
        i.agent_up = false;
        i.agent_gen += 1;
        if in_pool {
            // A trimmed pool instance is replaced in the pool.
            self.launch_into_pool(false);
        } else {
            // A dead host is replaced to keep the desired capacity.
            self.reconcile();
        }
    }

    /// A warm-pool trim: the oldest stopped instance enters `Warmed:Terminating:Wait`.
    pub(super) fn warm_trim(&mut self) {
        let now = self.now;
        let rate = self.cfg.warm_trims_per_day * f64::from(self.cfg.warm_pool);
        if let Some(at) = next_fault(&mut self.faults.streams.account, now, rate) {
            self.queue.push(at, Ev::WarmTrim);
        }
        let Some(inst) = self.fleet.warm.pop_front() else {
            return;
        };
        self.metrics.warm_trims += 1;
        let deadline = now + self.cfg.hook_timeout;
        self.set_phase(inst, AsgPhase::WarmTrimWait { deadline });
        let to_handler = between(&mut self.faults.streams.lat, timing::EVENT_TO_HANDLER);
        self.queue.push(now + to_handler, Ev::TrimEvent(inst));
        self.queue.push(deadline, Ev::TrimExpire(inst));
        self.fleet.instances[inst as usize].idle_in_wait_since = Some(now);
    }

    pub(super) fn leave_trim_wait(&mut self, inst: InstId) {
        if let Some(since) = self.fleet.instances[inst as usize].idle_in_wait_since.take() {
            self.metrics.warm_trim_wait_seconds += self.now.since(since).as_secs_f64();
        }
    }

    /// The Auto Scaling state of an instance, as a describe would show it.
    pub fn asg_state(&self, inst: InstId) -> Option<AsgState> {
        match self.fleet.instances[inst as usize].asg {
            AsgPhase::Gone => None,
            phase => Some(asg_state(phase)),
        }
    }
}
