//! The core's timers, by name: which one comes due next and why (quinn-proto style).

use crate::io::Call;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A deadline the core keeps. [`Host::next_timer`](crate::Host::next_timer) names the earliest one
/// armed; [`Host::handle_timeout`](crate::Host::handle_timeout) is level-triggered, so a driver that
/// wakes for one timer lets every other one that is due act too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// `drain.stop_deadline` after a stop request: the stop is forced (a running job is cancelled).
    ForceStop,
    /// A failed Auto Scaling call may be retried.
    Retry(Call),
    /// The next slow DescribeAutoScalingInstances poll (launching, or IMDS down).
    DescribePoll,
    /// IMDS has failed for `imds_down_after`: from then on it counts as down.
    ImdsDown,
    /// The listener may be (re)started.
    ListenerRelaunch,
    /// The stop grace ends: SIGKILL to the listener (unless a job landed in the stop window).
    ListenerKill,
    /// An idle host's scale-in protection is cleared (`drain.unprotect_delay` after its last job).
    Unprotect,
    /// The next lifecycle heartbeat (only while a job runs).
    Heartbeat,
    /// The lifecycle action's global timeout is near: warn once.
    GlobalTimeoutWarning,
    /// An unbacked `job-started` report is dropped (`hook_grace` without a `Runner.Worker`).
    HookClaimExpiry,
    /// The end of a hold of the stop (handover latch, refused release, watch after a release).
    HandoverHold,
}

impl Timer {
    /// Every timer, in the order [`Host::next_timer`](crate::Host::next_timer) breaks ties.
    pub const ALL: [Timer; 16] = [
        Timer::ForceStop,
        Timer::Retry(Call::Describe),
        Timer::DescribePoll,
        Timer::Retry(Call::SetProtection),
        Timer::Retry(Call::Complete),
        Timer::Retry(Call::Heartbeat),
        Timer::Retry(Call::MintJitConfig),
        Timer::Retry(Call::LeaveGroup),
        Timer::ImdsDown,
        Timer::ListenerRelaunch,
        Timer::ListenerKill,
        Timer::Unprotect,
        Timer::Heartbeat,
        Timer::GlobalTimeoutWarning,
        Timer::HookClaimExpiry,
        Timer::HandoverHold,
    ];

    /// The one spelling of this timer in logs, status and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Timer::ForceStop => "force-stop",
            Timer::Retry(Call::SetProtection) => "retry-set-protection",
            Timer::Retry(Call::Describe) => "retry-describe",
            Timer::Retry(Call::Heartbeat) => "retry-heartbeat",
            Timer::Retry(Call::Complete) => "retry-complete",
            Timer::Retry(Call::MintJitConfig) => "retry-mint-jit-config",
            Timer::Retry(Call::ReleaseRunner) => "retry-release-runner",
            Timer::Retry(Call::LeaveGroup) => "retry-leave-group",
            Timer::DescribePoll => "describe-poll",
            Timer::ImdsDown => "imds-down",
            Timer::ListenerRelaunch => "listener-relaunch",
            Timer::ListenerKill => "listener-kill",
            Timer::Unprotect => "unprotect",
            Timer::Heartbeat => "heartbeat",
            Timer::GlobalTimeoutWarning => "global-timeout-warning",
            Timer::HookClaimExpiry => "hook-claim-expiry",
            Timer::HandoverHold => "handover-hold",
        }
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Timer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Timer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Timer::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown timer `{name}`")))
    }
}
