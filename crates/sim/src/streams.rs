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

/// The fault schedule of one host (spot notices, crashes, IMDS outages, its stop path), keyed by its
/// identity rather than by the order of launches in one strategy's world: the `launch`-th host
/// launched into `slot`, where a launch takes the lowest slot no live host holds (the group's
/// instances numbered 0, 1, 2, ... as a fleet with a fixed size would number them). The first
/// hosts of every slot meet the same faults in every strategy's world, whatever the strategies
/// launched elsewhere meanwhile; keyed by launch index, one extra launch early in a run shifted
/// every later host's schedule to another host.
pub fn instance_faults(seed: u64, slot: u32, launch: u32) -> Rng {
    let base = stream(seed, INSTANCE_FAULTS | u64::from(slot)).next_u64();
    Rng::new(base ^ u64::from(launch).wrapping_mul(0x9E37_79B9_7F4A_7C15)).fork()
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
        firsts.push(instance_faults(1, 0, 0).next_u64());
        firsts.push(instance_faults(1, 1, 0).next_u64());
        firsts.push(instance_faults(1, 0, 1).next_u64());
        let n = firsts.len();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), n, "every stream starts differently");
    }
}
