//! The controller's JIT mint as an agent reaches it: the Lambda function URL (SigV4, AWS_IAM auth),
//! DescribeAutoScalingInstances of the calling instance (refused unless InService), then GitHub's
//! `POST .../actions/runners/generate-jitconfig`, which creates an ephemeral registration. Also the
//! world's book of those registrations: held by a host, used by a listener that took a job, or
//! unused (minted, never used).

use super::*;

impl World {
    /// Mint a JIT config for `inst`'s next listener. The effect applies now (as for every call in the
    /// world); the caller delivers the answer after the returned round trip.
    pub fn mint_jit_config(&mut self, inst: InstId) -> (Duration, Result<ApiReply, ApiError>) {
        let mut took = between(&mut self.streams.github, timing::MINT_FUNCTION_URL);
        if self.streams.github.chance(timing::LAMBDA_COLD_START_RATE) {
            took += between(&mut self.streams.github, timing::LAMBDA_COLD_START);
        }
        let result = self.mint_inner(inst, &mut took);
        match &result {
            Ok(_) => {
                self.metrics.jit_configs_minted += 1;
                self.instances[inst as usize].jit_configs_held += 1;
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
            *took += between(&mut self.streams.github, timing::API_LATENCY);
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
        match self.instances[inst as usize].asg {
            AsgPhase::InService => {}
            AsgPhase::Gone => {
                return Err(ApiError::new(
                    ApiErrorKind::InstanceNotFound,
                    format!("controller: i-{inst} is in no Auto Scaling group"),
                ))
            }
            // A config minted for a host that may not serve would be a registration no listener uses.
            phase => {
                return Err(ApiError::new(
                    ApiErrorKind::NotInService,
                    format!("controller: i-{inst} is {}, not InService", phase_name(phase)),
                ))
            }
        }
        // GitHub. Rate limits: the client sleeps out a `Retry-After` within its budget, else fails
        // and the agent is answered "throttled" with the wait as its Retry-After, which its core
        // honours (no retry before it).
        let mut attempts = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            self.metrics.github_calls += 1;
            let answer =
                timing::GITHUB_JITCONFIG.mul_f64((timing::GITHUB_JITCONFIG_SIGMA * self.streams.github.normal()).exp());
            *took += answer;
            let at = self.now + *took;
            if at < self.github_limited_until {
                let wait = self.github_limited_until.since(at);
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
            if self.streams.github.chance(self.cfg.faults.github_error_rate) {
                if attempts >= timing::GITHUB_ATTEMPTS {
                    return Err(ApiError::new(
                        ApiErrorKind::Transient,
                        "controller: GitHub generate-jitconfig: HTTP 502 after its retries",
                    ));
                }
                let base = timing::GITHUB_RETRY_BASE.saturating_mul(1 << (attempts - 1));
                *took += base.mul_f64(0.5 + 0.5 * self.streams.github.unit());
                continue;
            }
            return Ok(ApiReply::Done);
        }
    }

    /// One DescribeAutoScalingInstances by the controller: counted with the strategy's Auto Scaling
    /// calls, failing like any other call (`None`: answered).
    fn controller_describe_fault(&mut self) -> Option<ApiErrorKind> {
        self.metrics.asg_api_calls += 1;
        self.metrics.controller_asg_calls += 1;
        let faults = &self.cfg.faults;
        let (mut throttle, error) = (faults.throttle_rate, faults.error_rate);
        if self.now < self.throttled_until {
            throttle = throttle.max(timing::EPISODE_THROTTLE);
        }
        if self.streams.api.chance(throttle) {
            return Some(ApiErrorKind::Throttled);
        }
        self.streams.api.chance(error).then_some(ApiErrorKind::Transient)
    }

    /// A GitHub rate-limit episode begins: every request is refused until it ends.
    pub(super) fn github_rate_limit_episode(&mut self) {
        let now = self.now;
        let len = between(&mut self.streams.github_episodes, timing::GITHUB_RATE_LIMIT_EPISODE);
        self.github_limited_until = now + len;
        self.metrics.github_rate_limit_episodes += 1;
        let rate = self.cfg.faults.github_rate_limit_episodes_per_day;
        if let Some(at) = next_fault(&mut self.streams.github_episodes, now + len, rate) {
            self.queue.push(at, Ev::GitHubRateLimit);
        }
    }

    /// A JIT listener starts with one of the host's configs.
    pub(super) fn jit_listener_starts(&mut self, inst: InstId) {
        if self.listener_mode != ListenerMode::Jit {
            return;
        }
        let i = &mut self.instances[inst as usize];
        if i.jit_configs_held == 0 {
            if self.check_invariants {
                self.violate(inst, "JIT listener started without a config");
            }
        } else {
            i.jit_configs_held -= 1;
        }
        self.instances[inst as usize].jit_registration_unused = true;
    }

    /// The host's agent lost what it held in memory (a crash) or the host is gone: its configs will
    /// never be used.
    pub(crate) fn jit_configs_lost(&mut self, inst: InstId) {
        let i = &mut self.instances[inst as usize];
        self.metrics.jit_configs_unused += u64::from(std::mem::take(&mut i.jit_configs_held));
    }
}
