//! The strategies compared on identical worlds. Each is a per-host controller driven by the world's
//! events; only `runner_lifecycle` uses the decision core, the others model designs we compare with.

pub mod naive;
pub mod runner_lifecycle;
pub mod source_pr;

use crate::config::{self, SimConfig};
use crate::driver;
use crate::world::{HookKind, HookRun, HostEvent, InstId, JobId, World};
use lifecycle_core::{ListenerMode, Time};
use naive::Naive;
use runner_lifecycle::RunnerLifecycle;
use source_pr::SourcePr;

/// One host's controlling software under a strategy.
pub trait Controller: Sized {
    /// The strategy's name in reports.
    const NAME: &'static str;
    /// Whether the strategy runs an agent that can crash (the agent-crash fault applies). No, unless
    /// a strategy says so: the designs we compare with run none.
    const HAS_AGENT: bool = false;
    /// Whether the strategy promises the invariants (only runner-lifecycle does).
    const CHECKS_INVARIANTS: bool = false;
    /// Whether a central handler completes warm-pool trims, where no agent runs (runner-lifecycle's
    /// controller and the source PR's Lambda do).
    const CENTRAL_COMPLETES_TRIMS: bool;

    /// The host's software starts: at boot, or when a crashed agent is restarted (`restart`).
    fn start(w: &mut World, inst: InstId, restart: bool) -> Self;
    /// Something happened on the host.
    fn on_event(&mut self, w: &mut World, inst: InstId, ev: HostEvent);
    /// A job hook of `job` runs. `host` is `None` while the strategy's agent is down. `None` means the
    /// hook's effect comes later: the strategy calls `World::hook_finished` itself then.
    fn job_hook(host: Option<&mut Self>, w: &mut World, inst: InstId, job: JobId, kind: HookKind) -> Option<HookRun>;
    /// When the controller wants to be woken.
    fn next_wake(&self) -> Option<Time>;
    /// The wake-up it asked for.
    fn on_wake(&mut self, w: &mut World, inst: InstId);
}

/// The listener relaunch rule every strategy inherits from RunnerService.js: 0, 1 and 5 stop, other
/// codes relaunch after 5 s.
pub(crate) fn relaunch_like_runner_service(w: &mut World, inst: InstId, code: Option<i32>) {
    if !matches!(code, Some(0 | 1 | 5)) {
        w.relaunch_listener_later(inst, crate::config::timing::RELAUNCH);
    }
}

/// A strategy to simulate.
///
/// `runner-lifecycle` is always the agent's default configuration (lifecycle-core
/// `ListenerMode::default()`, today just-in-time runners); the other listener modes carry a suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// runner-lifecycle as the agent runs by default: just-in-time runners, one registration per job,
    /// each config minted by the controller.
    RunnerLifecycle,
    /// runner-lifecycle as by default (JIT) with the handover guard off (lifecycle-core
    /// `HandoverConfig::off()`: no perf-log latch, no release of the registration): the design
    /// before the guard, to show the loss the guard prevents.
    RunnerLifecycleUnguarded,
    /// runner-lifecycle with a persistent listener that takes job after job (`run --startuptype
    /// service`): the agent's default before JIT.
    RunnerLifecyclePersistent,
    /// runner-lifecycle with the listener in one-job mode (`run --once`), relaunched between jobs.
    RunnerLifecycleOnce,
    /// runner-lifecycle in its default mode (JIT) with the controller's demand scaling instead of the
    /// source PR's idle alarms.
    RunnerLifecycleDemand,
    /// runner-lifecycle as by default (JIT) with one instance per job: after its job the host leaves
    /// the group (terminated without decrement; the group launches a fresh instance).
    RunnerLifecycleOnePerInstance,
    /// The source PR's design.
    SourcePr,
    /// A termination hook and a stop on the event, no protection.
    Naive,
}

impl Strategy {
    /// All strategies, in report order.
    pub const ALL: [Strategy; 8] = [
        Strategy::RunnerLifecycle,
        Strategy::RunnerLifecycleUnguarded,
        Strategy::RunnerLifecyclePersistent,
        Strategy::RunnerLifecycleOnce,
        Strategy::RunnerLifecycleDemand,
        Strategy::RunnerLifecycleOnePerInstance,
        Strategy::SourcePr,
        Strategy::Naive,
    ];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RunnerLifecycle => "runner-lifecycle",
            Strategy::RunnerLifecycleUnguarded => "runner-lifecycle-unguarded",
            Strategy::RunnerLifecyclePersistent => "runner-lifecycle-persistent",
            Strategy::RunnerLifecycleOnce => "runner-lifecycle-once",
            Strategy::RunnerLifecycleDemand => "runner-lifecycle-demand",
            Strategy::RunnerLifecycleOnePerInstance => "runner-lifecycle-one-per-instance",
            Strategy::SourcePr => "source-pr",
            Strategy::Naive => "naive",
        }
    }

    /// Parse a name as `name()` prints it.
    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|st| st.name() == s)
    }

    /// The scaling policy the strategy runs under.
    pub fn scaling(self) -> config::Scaling {
        match self {
            Strategy::RunnerLifecycleDemand => config::Scaling::Demand,
            _ => config::Scaling::IdleAlarms,
        }
    }

    /// How the strategy runs the runner listener. The rival designs run upstream's service mode.
    pub fn listener_mode(self) -> ListenerMode {
        match self {
            Strategy::RunnerLifecycle
            | Strategy::RunnerLifecycleUnguarded
            | Strategy::RunnerLifecycleDemand
            | Strategy::RunnerLifecycleOnePerInstance => ListenerMode::default(),
            Strategy::RunnerLifecycleOnce => ListenerMode::OneJob,
            Strategy::RunnerLifecyclePersistent | Strategy::SourcePr | Strategy::Naive => ListenerMode::Persistent,
        }
    }

    /// One world under this strategy.
    pub(crate) fn run(self, cfg: &SimConfig) -> driver::StrategyRun {
        let mut cfg = cfg.clone();
        cfg.scaling = self.scaling();
        cfg.listener_mode = self.listener_mode();
        cfg.handover_guard = self != Strategy::RunnerLifecycleUnguarded;
        cfg.one_job_per_instance = self == Strategy::RunnerLifecycleOnePerInstance;
        match self {
            Strategy::RunnerLifecycle
            | Strategy::RunnerLifecycleUnguarded
            | Strategy::RunnerLifecyclePersistent
            | Strategy::RunnerLifecycleOnce
            | Strategy::RunnerLifecycleDemand
            | Strategy::RunnerLifecycleOnePerInstance => driver::run::<RunnerLifecycle>(&cfg).named(self.name()),
            Strategy::SourcePr => driver::run::<SourcePr>(&cfg),
            Strategy::Naive => driver::run::<Naive>(&cfg),
        }
    }
}
