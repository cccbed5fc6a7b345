//! # lifecycle-core
//!
//! The decisions of runner-lifecycle, with no IO: when to protect an instance from scale-in, when to
//! stop the runner listener (never while a job runs), when to heartbeat the termination hook (only
//! while a job runs) and when to complete it (as soon as the runner is idle and stopped).
//!
//! [`Host`] is a sans-IO state machine in the style of quinn-proto: inputs carry `now`, side effects
//! come out as [`Action`]s, and [`Host::poll_timeout`] names the next deadline. The agent, the
//! controller and the fleet simulator all drive this same code.

pub mod aws;
pub mod config;
pub mod host;
pub mod io;
pub mod rng;
pub mod scaling;
pub mod time;

pub use aws::{ApiError, ApiErrorKind, AsgState, TargetState};
pub use config::{CoreConfig, HookConfig, ListenerMode};
pub use host::{HookPhase, Host, ListenerState, Snapshot};
pub use io::{
    Action, ApiReply, Call, DescribedInstance, Detection, DrainCause, Input, LifecycleResult, Notice, Reason, RequestId,
};
pub use rng::Rng;
pub use time::Time;

#[cfg(test)]
mod tests;
