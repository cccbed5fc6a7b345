//! The controller's JIT mint as an agent reaches it: the Lambda function URL (SigV4, AWS_IAM auth),
//! DescribeAutoScalingInstances of the calling instance (refused unless InService or Pending*, the
//! core's rule), then GitHub's `POST .../actions/runners/generate-jitconfig`, which creates an
//! ephemeral registration. Also the world's book of those registrations: held by a host, used by a
//! listener that took a job, or unused (minted, never used).

use super::*;

impl World {
    /// Mint a JIT config for `inst`'s next listener. The effect applies now (as for every call in the
    /// world); the caller delivers the answer after the returned round trip.
    pub fn mint_jit_config(&mut self, inst: InstId) -> (Duration, Result<ApiReply, ApiError>) {
        let mut took = self.function_url();
        let result = self.mint_inner(inst, &mut took);
        match &result {
            Ok(_) => {
                self.metrics.jit_configs_minted += 1;
                self.fleet.instances[inst as usize].jit_configs_held += 1;
            }
            Err(e) if matches!(e.kind, ApiErrorKind::NotInService | ApiErrorKind::InstanceNotFound) => {
                self.metrics.mints_refused += 1;
            }
            Err(_) => self.metrics.mints_failed += 1,
        }
        self.trace(inst, || format!("mint -> {result:?} after {took:?}"));
        self.record_mark(inst, "api", || {
            let ok = if result.is_ok() { "" } else { " (failed)" };
            format!("MintJitConfig{ok}")
        });
        (took, result)
    }

    fn mint_inner(&mut self, inst: InstId, took: &mut Duration) -> Result<ApiReply, ApiError> {
        // The controller's describe: the Auto Scaling API's faults (shared token bucket, episodes),
        // retried by its SDK.
        let mut failed = None;
        for _ in 0..timing::MINT_DESCRIBE_ATTEMPTS {
            *took += between(&mut self.faults.streams.github, timing::API_LATENCY);
            failed = self.controller_describe_fault();
            if failed.is_none() {
                break;
            }
        }
        if let Some(kind) = failed {
            return Err(ApiError::new(
                kind,
                "controller: DescribeAutoScalingInstances failed after its retries",
            ));
        }
        match self.fleet.instances[inst as usize].asg {
            AsgPhase::Gone => {
                return Err(ApiError::new(
                    ApiErrorKind::InstanceNotFound,
                    format!("controller: i-{inst} is in no Auto Scaling group"),
                ))
            }
            // The controller's rule (lifecycle_core::AsgState::runner): a config minted for a host that
            // may not serve would be a registration no listener uses.
            phase if !lifecycle_core::lifecycle_state_may_mint(phase_name(phase)) => {
                return Err(ApiError::new(
                    ApiErrorKind::NotInService,
                    format!("controller: i-{inst} is {}, not InService", phase_name(phase)),
                ))
            }
            _ => {}
        }
        self.github_request(took, "generate-jitconfig").map(|()| ApiReply::Done)
    }

    /// The agent's call to the controller's function URL: HTTPS, SigV4 checked, a warm invocation
    /// (or, now and then, a cold start) and the response, without the work the function does.
    fn function_url(&mut self) -> Duration {
        let mut took = between(&mut self.faults.streams.github, timing::MINT_FUNCTION_URL);
        if self.faults.streams.github.chance(timing::LAMBDA_COLD_START_RATE) {
            took += between(&mut self.faults.streams.github, timing::LAMBDA_COLD_START);
        }
        took
    }

    /// One GitHub REST request of the controller, starting `took` from now; `took` grows by its
    /// answer time. Rate limits: the client sleeps out a `Retry-After` within its budget, else fails
    /// and the agent is answered "throttled" with the wait as its Retry-After, which its core
    /// honours (no retry before it). 5xx and timeouts are retried (`GITHUB_ATTEMPTS`).
    fn github_request(&mut self, took: &mut Duration, what: &str) -> Result<(), ApiError> {
        let mut attempts = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            self.metrics.github_calls += 1;
            let answer = timing::GITHUB_JITCONFIG
                .mul_f64((timing::GITHUB_JITCONFIG_SIGMA * self.faults.streams.github.normal()).exp());
            *took += answer;
            let at = self.now + *took;
            if at < self.faults.github_limited_until {
                let wait = self.faults.github_limited_until.since(at);
                if waited + wait > timing::GITHUB_MAX_RATE_LIMIT_WAIT {
                    return Err(ApiError::new(
                        ApiErrorKind::Throttled,
                        format!("controller: GitHub rate limit: retry in {} s", wait.as_secs()),
                    )
                    .with_retry_after(Some(wait)));
                }
                waited += wait;
                *took += wait;
                continue;
            }
            attempts += 1;
            if self.faults.streams.github.chance(self.cfg.faults.github_error_rate) {
                if attempts >= timing::GITHUB_ATTEMPTS {
                    return Err(ApiError::new(
                        ApiErrorKind::Transient,
                        format!("controller: GitHub {what}: HTTP 502 after its retries"),
                    ));
                }
                *took += lifecycle_core::Backoff::new(timing::GITHUB_RETRY_BASE, timing::GITHUB_RETRY_CAP)
                    .delay(attempts, &mut self.faults.streams.github);
                continue;
            }
            return Ok(());
        }
    }

    /// The controller's round trip for a registration: the function URL (for the agent's release;
    /// not for the controller's own scale-in), `GET .../actions/runners?name=`, then `DELETE`.
    /// Returns how long until the DELETE has answered, and whether it got that far.
    pub(super) fn delete_registration(&mut self, via_function_url: bool) -> (Duration, Result<(), ApiError>) {
        let mut took = if via_function_url {
            self.function_url()
        } else {
            Duration::ZERO
        };
        let before = self.metrics.github_calls;
        let mut result = Ok(());
        for what in ["GET runners?name=", "DELETE runner"] {
            result = self.github_request(&mut took, what);
            if result.is_err() {
                break;
            }
        }
        self.metrics.github_release_calls += self.metrics.github_calls - before;
        (took, result)
    }

    /// The agent asks the controller to release (delete) its listener's registration before a stop
    /// (lifecycle-core `Action::ReleaseRunner`). The DELETE takes effect when it reaches GitHub;
    /// the answer goes back to the host then (`HostEvent::Released`). The round trip and the watch
    /// after a removal are the guard's legitimate holds.
    pub fn release_runner(&mut self, inst: InstId) {
        let now = self.now;
        self.metrics.releases += 1;
        let (took, result) = if self.fleet.instances[inst as usize].registration_removed {
            // Deleted already (a demand victim, or an accepted delete the agent asks again after a
            // restart): the controller answers from what it remembers, without GitHub.
            (self.function_url(), Ok(()))
        } else {
            self.delete_registration(true)
        };
        self.allow_guard_hold(inst, took + HandoverConfig::default().release_watch);
        self.record_mark(inst, "api", || "ReleaseRunner".into());
        let i = &self.fleet.instances[inst as usize];
        let (gen, lgen) = (i.agent_gen, i.listener_gen);
        match result {
            Ok(()) => self.queue.push(now + took, Ev::ReleaseEffect(inst, lgen, gen)),
            Err(e) => {
                self.trace(inst, || format!("release -> {e}"));
                self.metrics.releases_failed += 1;
                self.queue
                    .push(now + took, Ev::Host(inst, gen, HostEvent::Released(None)));
            }
        }
    }

    /// What GitHub does with the DELETE of listener `lgen`'s registration, now.
    pub(super) fn delete_effect(&mut self, inst: InstId, lgen: u32) -> Release {
        let idx = inst as usize;
        let i = &self.fleet.instances[idx];
        if i.listener_gen != lgen || !running(i.asg) || i.registration_removed {
            // The registration of a listener gone since, or one deleted already (GitHub would
            // answer 404; the controller remembers what it deleted and answers "removed", so the
            // agent does not hold its stop for a job that cannot come): nothing to refuse.
            return Release::Removed;
        }
        match i.listener {
            Listener::Busy(_) => Release::Busy,
            Listener::Claimed(job) if !i.assignment_revoked => match self.cfg.release_while_assigned {
                ReleaseWhileAssigned::Refused => {
                    let consumed = self.listener_mode == ListenerMode::Jit
                        && self.faults.streams.github.chance(self.cfg.release_not_found);
                    if consumed {
                        Release::NotFound
                    } else {
                        Release::Busy
                    }
                }
                // An acquired job is running as far as GitHub knows (runner#4461: busy "flips on
                // commitment"): still refused.
                ReleaseWhileAssigned::Accepted if i.window == Window::W2 => Release::Busy,
                ReleaseWhileAssigned::Accepted => {
                    self.metrics.jobs_released_while_assigned += 1;
                    if self.drop_unacquired(inst, job, JobOutcome::LostInStopWindow) {
                        let earlier_jobs = self.fleet.instances[idx].listener_jobs;
                        self.count_stop_window_race(inst, earlier_jobs);
                    }
                    self.fleet.instances[idx].assignment_revoked = true;
                    if self.fleet.instances[idx].window == Window::W1 {
                        // The message is in: the agent holds for its worker, up to the bound.
                        self.allow_guard_hold(inst, HandoverConfig::default().bound);
                    }
                    self.remove_registration(inst);
                    self.update_idle_wait(inst);
                    Release::Removed
                }
            },
            _ => {
                self.remove_registration(inst);
                Release::Removed
            }
        }
    }

    /// The agent's release reaches GitHub.
    pub(super) fn release_effect(&mut self, inst: InstId, lgen: u32, gen: u32) {
        let outcome = self.delete_effect(inst, lgen);
        *match outcome {
            Release::Removed => &mut self.metrics.releases_removed,
            Release::Busy => &mut self.metrics.releases_busy,
            Release::NotFound => &mut self.metrics.releases_not_found,
        } += 1;
        self.trace(inst, || format!("release -> {outcome:?}"));
        self.queue
            .push(self.now, Ev::Host(inst, gen, HostEvent::Released(Some(outcome))));
    }

    /// The registration is gone: out of the broker's pool at once, never assigned again.
    fn remove_registration(&mut self, inst: InstId) {
        self.fleet.instances[inst as usize].registration_removed = true;
        self.broker.idle.remove(inst);
    }

    /// One Auto Scaling call by the controller (DescribeAutoScalingInstances for a mint,
    /// TerminateInstanceInAutoScalingGroup for a demand victim): counted with the strategy's Auto
    /// Scaling calls, failing like any other call (`None`: answered).
    pub(super) fn controller_describe_fault(&mut self) -> Option<ApiErrorKind> {
        self.metrics.asg_api_calls += 1;
        self.metrics.controller_asg_calls += 1;
        let faults = &self.cfg.faults;
        let (mut throttle, error) = (faults.throttle_rate, faults.error_rate);
        if self.now < self.faults.throttled_until {
            throttle = throttle.max(timing::EPISODE_THROTTLE);
        }
        if self.faults.streams.api.chance(throttle) {
            return Some(ApiErrorKind::Throttled);
        }
        self.faults.streams.api.chance(error).then_some(ApiErrorKind::Transient)
    }

    /// A GitHub rate-limit episode begins: every request is refused until it ends.
    pub(super) fn github_rate_limit_episode(&mut self) {
        let now = self.now;
        let len = between(
            &mut self.faults.streams.github_episodes,
            timing::GITHUB_RATE_LIMIT_EPISODE,
        );
        self.faults.github_limited_until = now + len;
        self.metrics.github_rate_limit_episodes += 1;
        let rate = self.cfg.faults.github_rate_limit_episodes_per_day;
        if let Some(at) = next_fault(&mut self.faults.streams.github_episodes, now + len, rate) {
            self.queue.push(at, Ev::GitHubRateLimit);
        }
    }

    /// A JIT listener starts with one of the host's configs.
    pub(super) fn jit_listener_starts(&mut self, inst: InstId) {
        if self.listener_mode != ListenerMode::Jit {
            return;
        }
        let i = &mut self.fleet.instances[inst as usize];
        if i.jit_configs_held == 0 {
            if self.check_invariants {
                self.violate(inst, "JIT listener started without a config");
            }
        } else {
            i.jit_configs_held -= 1;
        }
        self.fleet.instances[inst as usize].jit_registration_unused = true;
    }

    /// The host's agent lost what it held in memory (a crash) or the host is gone: its configs will
    /// never be used.
    pub(crate) fn jit_configs_lost(&mut self, inst: InstId) {
        let i = &mut self.fleet.instances[inst as usize];
        self.metrics.jit_configs_unused += u64::from(std::mem::take(&mut i.jit_configs_held));
    }
}
