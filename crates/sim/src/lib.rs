//! # lifecycle-sim
//!
//! A deterministic fleet simulation. It drives the real decision core (`lifecycle-core`) through an
//! Auto Scaling group's scale-ins, bursty job arrivals and injected faults, checks runner-lifecycle's
//! invariants after every step that could break them, and compares it with the source PR's design and
//! a naive one on identical worlds (same seed, same jobs).
//!
//! Everything random derives from one `u64` seed and the clock is fake: it jumps to the next event.
//! IMDS is polled once a second in the agent; the simulation delivers a change at the first poll tick
//! after it becomes visible, which is observationally the same and a thousand times cheaper.

pub mod config;
pub mod driver;
pub mod metrics;
pub mod plot;
pub mod queue;
pub mod report;
pub mod strategy;
pub mod workload;
pub mod world;

pub use config::{Faults, SimConfig};
pub use metrics::{Metrics, Violation};
pub use report::{Report, StrategyReport};

use lifecycle_core::{ListenerMode, Rng};
use strategy::{naive::Naive, runner_lifecycle::RunnerLifecycle, source_pr::SourcePr};

/// A strategy to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// runner-lifecycle with a persistent listener (the agent's default).
    RunnerLifecycle,
    /// runner-lifecycle with the listener in one-job mode (`run --once`), relaunched between jobs.
    RunnerLifecycleOnce,
    /// The source PR's design.
    SourcePr,
    /// A termination hook and a stop on the event, no protection.
    Naive,
}

impl Strategy {
    /// All strategies, in report order.
    pub const ALL: [Strategy; 4] = [
        Strategy::RunnerLifecycle,
        Strategy::RunnerLifecycleOnce,
        Strategy::SourcePr,
        Strategy::Naive,
    ];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RunnerLifecycle => "runner-lifecycle",
            Strategy::RunnerLifecycleOnce => "runner-lifecycle-once",
            Strategy::SourcePr => "source-pr",
            Strategy::Naive => "naive",
        }
    }

    /// Parse a name as `name()` prints it.
    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|st| st.name() == s)
    }

    fn run(self, cfg: &SimConfig, jobs: &[workload::JobSpec]) -> driver::StrategyRun {
        let mut cfg = cfg.clone();
        match self {
            Strategy::RunnerLifecycle => {
                cfg.listener_mode = ListenerMode::Persistent;
                driver::run::<RunnerLifecycle>(&cfg, jobs)
            }
            Strategy::RunnerLifecycleOnce => {
                cfg.listener_mode = ListenerMode::OneJob;
                driver::run::<RunnerLifecycle>(&cfg, jobs).named(self.name())
            }
            Strategy::SourcePr => {
                cfg.listener_mode = ListenerMode::Persistent;
                driver::run::<SourcePr>(&cfg, jobs)
            }
            Strategy::Naive => {
                cfg.listener_mode = ListenerMode::Persistent;
                driver::run::<Naive>(&cfg, jobs)
            }
        }
    }
}

/// The job stream of a run: a function of the seed and the fleet size only.
pub fn jobs_for(cfg: &SimConfig) -> Vec<workload::JobSpec> {
    let mut rng = Rng::new(cfg.seed);
    let peak_busy = f64::from(cfg.instances) * cfg.peak_utilisation;
    workload::generate(&mut rng, cfg.duration, peak_busy)
}

/// Run `strategies` on one world each (same seed, same jobs), in parallel threads, and report.
pub fn simulate(cfg: &SimConfig, strategies: &[Strategy]) -> Report {
    let jobs = jobs_for(cfg);
    let runs: Vec<driver::StrategyRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = strategies
            .iter()
            .map(|&s| {
                let jobs = &jobs;
                scope.spawn(move || s.run(cfg, jobs))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    Report::from_runs(cfg, 1, runs)
}

/// Run `seeds` consecutive seeds from `cfg.seed` and aggregate per strategy.
pub fn sweep(cfg: &SimConfig, seeds: u64, strategies: &[Strategy]) -> Report {
    let mut total: Option<Report> = None;
    for k in 0..seeds {
        let mut c = cfg.clone();
        c.seed = cfg.seed.wrapping_add(k);
        let r = simulate(&c, strategies);
        match &mut total {
            None => total = Some(r),
            Some(t) => t.absorb(&r),
        }
    }
    let mut report = total.unwrap_or_else(|| Report::from_runs(cfg, 0, Vec::new()));
    report.seed = cfg.seed;
    report.seeds = seeds;
    report
}
