//! Common random numbers: one independent random stream per concern, each derived from the run's one
//! seed, so that every strategy faces the same world (the same fault schedule per instance, the same
//! account-wide episodes, the same API fault draws in the same order where their calls coincide) and
//! a comparison between strategies is paired rather than drowned in sampling noise.

use lifecycle_core::Rng;

/// Stream tags. Any distinct constants would do; these spell what they are for.
const API: u64 = 0x4150_4920; // "API "
const LATENCY: u64 = 0x4C41_5420; // "LAT "
const DISPATCH: u64 = 0x4449_5350; // "DISP"
const ASG: u64 = 0x4153_4720; // "ASG "
const ACCOUNT: u64 = 0x4143_4354; // "ACCT"
const GITHUB: u64 = 0x4748_5542; // "GHUB"
const GITHUB_EPISODES: u64 = 0x4748_4550; // "GHEP"
const WEBHOOKS: u64 = 0x5748_4F4B; // "WHOK"
const INSTANCE_FAULTS: u64 = 0x4641_4C54_0000_0000; // "FALT" << 32, plus the instance index
/// The strategies' own stream (their timers and the cores' seeds).
pub const CONTROLLERS: u64 = 0x4354_524C; // "CTRL"
/// The job stream (arrivals and durations).
pub const JOBS: u64 = 0x4A4F_4253; // "JOBS"

/// An independent stream for `tag` under `seed`. SplitMix64 states that differ are independent
/// enough for simulation noise once passed through one output step (`fork`).
pub fn stream(seed: u64, tag: u64) -> Rng {
    Rng::new(seed ^ tag.wrapping_mul(0xD6E8_FEB8_6659_FD93)).fork()
}

/// The fault schedule of the `inst`-th instance launched (spot notices, crashes, IMDS outages, its
/// stop path): the same for that instance index in every strategy's world.
pub fn instance_faults(seed: u64, inst: u32) -> Rng {
    stream(seed, INSTANCE_FAULTS | u64::from(inst))
}

/// The world's streams.
#[derive(Debug)]
pub struct Streams {
    /// Auto Scaling call faults (throttling, 5xx).
    pub api: Rng,
    /// Latencies: boots, listener starts, dispatch, job setup, exits.
    pub lat: Rng,
    /// The broker's choice of listener.
    pub dispatch: Rng,
    /// The group's choice of instance to terminate.
    pub asg: Rng,
    /// Account-wide events: throttling episodes, warm-pool trims.
    pub account: Rng,
    /// The controller's JIT mints: GitHub request faults, latencies and Lambda cold starts. Only the
    /// JIT strategies draw from it, so the other strategies' worlds are unchanged by its existence.
    pub github: Rng,
    /// GitHub rate-limit episodes (their own stream: the same schedule for every strategy).
    pub github_episodes: Rng,
    /// Dropped `workflow_job` webhooks (demand scaling only). Their own stream: drawing them from
    /// `account` shifted the demand strategy's throttling episodes away from the other strategies'.
    pub webhooks: Rng,
}

impl Streams {
    /// All streams of a run.
    pub fn new(seed: u64) -> Self {
        Streams {
            api: stream(seed, API),
            lat: stream(seed, LATENCY),
            dispatch: stream(seed, DISPATCH),
            asg: stream(seed, ASG),
            account: stream(seed, ACCOUNT),
            github: stream(seed, GITHUB),
            github_episodes: stream(seed, GITHUB_EPISODES),
            webhooks: stream(seed, WEBHOOKS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        let a = Streams::new(1);
        let b = Streams::new(1);
        assert_eq!(a.api, b.api);
        let mut firsts: Vec<u64> = [
            a.api,
            a.lat,
            a.dispatch,
            a.asg,
            a.account,
            a.github,
            a.github_episodes,
            a.webhooks,
        ]
        .into_iter()
        .map(|mut r| r.next_u64())
        .collect();
        firsts.push(instance_faults(1, 0).next_u64());
        firsts.push(instance_faults(1, 1).next_u64());
        let n = firsts.len();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), n, "every stream starts differently");
    }
}
