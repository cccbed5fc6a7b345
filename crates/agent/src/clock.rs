//! The agent's only window on the clock. The decision core takes time as an argument; this module
//! maps the process's monotonic clock onto the core's `Time` and is the one place that reads it.
// Reading the clock is this module's whole job (clippy.toml bans it elsewhere for determinism).
#![allow(clippy::disallowed_methods)]

use lifecycle_core::Time;
use std::time::{Duration, Instant, SystemTime};

/// Monotonic time since the agent started, as the core's `Time`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Clock {
        Clock { epoch: Instant::now() }
    }

    /// Now, on the core's timeline.
    pub fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The tokio instant at which the core's `t` falls (for `sleep_until`).
    pub fn instant_of(&self, t: Time) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(t.as_millis()))
    }
}

/// The current monotonic instant (token expiry, retry deadlines).
pub fn now_instant() -> Instant {
    Instant::now()
}

/// A seed for the core's jitter that differs between hosts and restarts: a fleet that scales in at
/// once must not heartbeat or retry in lockstep.
pub fn jitter_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A short blocking pause, for the few waits between two jobs that the main loop does in place
/// (a killed cgroup emptying, the cleaner finishing; both bounded).
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}
