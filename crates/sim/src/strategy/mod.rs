//! The strategies compared on identical worlds. Each is a per-host controller driven by the world's
//! events; only `runner_lifecycle` uses the decision core, the others model designs we compare with.

pub mod naive;
pub mod runner_lifecycle;
pub mod source_pr;

use crate::world::{HookKind, HookRun, HostEvent, InstId, JobId, World};
use lifecycle_core::Time;

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
