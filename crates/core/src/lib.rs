//! # lifecycle-core
//!
//! The decisions of runner-lifecycle, with no IO: when to protect an instance from scale-in, when to
//! stop the runner listener (never while a job runs), when to heartbeat the termination hook (only
//! while a job runs) and when to complete it (as soon as the runner is idle and stopped).
//!
//! [`Host`] is a sans-IO state machine in the style of quinn-proto: inputs carry `now`, side effects
//! come out as [`Action`]s, [`Host::next_timer`] names the next deadline and which [`Timer`] it is,
//! and [`Host::next_step`] says what the core will do next. The shells only carry these out and word
//! them. The agent, the controller and the fleet simulator all drive this same code.

/// The one wire spelling (kebab-case) of each of the core's small enums, used alike in logs, the
/// status answer and metric labels; `ALL` lists every value (metrics show each from the start).
macro_rules! wire_names {
    ($($ty:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// Its one wire spelling (the serde spelling too).
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    )+};
}

pub mod aws;
pub mod backoff;
pub mod config;
pub mod duration;
pub mod host;
pub mod io;
pub mod rng;
pub mod scaling;
pub mod startup;
pub mod step;
pub mod time;
pub mod timer;

pub use aws::{lifecycle_state_may_mint, ApiError, ApiErrorKind, AsgState, RunnerRule, TargetState};
pub use backoff::Backoff;
pub use config::{CoreConfig, HandoverConfig, HookConfig, ListenerMode};
pub use host::{HookPhase, Host, ListenerState, Snapshot};
pub use io::{
    Action, ApiReply, Call, CompleteReason, DescribeReason, DescribedInstance, Detection, DrainCause, FetchReason,
    HeartbeatReason, HoldReason, Input, JobLoss, KillReason, LifecycleResult, Notice, ProtectReason, Release,
    RequestId, StartReason, StopReason,
};
pub use rng::Rng;
pub use startup::{
    HookReport, Startup, StartupAction, StartupConfig, StartupExit, StartupInput, StartupPhase, StartupStep,
    StartupTimer,
};
pub use step::{
    AfterStop, CallProgress, DescribeStep, DescribeWhen, ExitStep, FetchStep, HeartbeatWhen, HookStep, JobProtection,
    LeaveStep, ListenerStep, NextStep, Plan, PlanArea, PlanEntry, ProtectionStep, Step,
};
pub use time::Time;
pub use timer::Timer;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;
