//! The loop that runs one strategy over one world: pop the next event, jump the clock, route it.

use crate::config::timing;
use crate::config::SimConfig;
use crate::metrics::{Metrics, Violation};
use crate::plot::Timeline;
use crate::strategy::Controller;
use crate::world::{Ev, InstId, Routed, World};

/// What one strategy did in one world.
#[derive(Clone, Debug)]
pub struct StrategyRun {
    /// The strategy's name.
    pub name: &'static str,
    /// Its scaling policy.
    pub scaling: crate::config::Scaling,
    /// Its counters.
    pub metrics: Metrics,
    /// Invariant violations (only checked for runner-lifecycle).
    pub violations: Vec<Violation>,
    /// Events processed (for the benchmark).
    pub events: u64,
    /// The traced instance's timeline, when one was asked for.
    pub timeline: Option<Timeline>,
}

impl StrategyRun {
    /// Set the strategy's name, on the run and on each of its violations.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        if let Some(t) = &mut self.timeline {
            t.strategy = name.to_string();
        }
        for v in &mut self.violations {
            v.strategy = name.to_string();
        }
        self
    }
}

/// Run strategy `C` over the world described by `cfg` (its jobs come from `cfg`: see `job_source`).
pub fn run<C: Controller>(cfg: &SimConfig) -> StrategyRun {
    run_checked::<C>(cfg, C::CHECKS_INVARIANTS)
}

/// Like `run`, choosing whether to check runner-lifecycle's invariants (tests check that the checker
/// catches strategies that break them).
pub fn run_checked<C: Controller>(cfg: &SimConfig, check_invariants: bool) -> StrategyRun {
    let listener_mode = cfg.listener_mode;
    let source = crate::jobs::job_source(cfg);
    let mut w = World::new(
        cfg.clone(),
        source,
        check_invariants,
        listener_mode,
        C::CENTRAL_COMPLETES_TRIMS,
    );
    let mut hosts: Vec<Option<C>> = Vec::new();
    let end = lifecycle_core::Time::ZERO + cfg.duration;
    // The initial group boots at time zero; its boot events are queued like any other.
    w.start();
    let mut events = 0u64;
    while let Some((at, ev)) = w.queue.pop() {
        if at > end {
            break;
        }
        events += 1;
        w.now = at;
        if let Some(inst) = ev.instance() {
            w.trace(inst, || format!("event {ev:?}"));
        }
        let routed = w.handle(ev);
        let touched = match routed {
            Routed::Nothing => None,
            Routed::Booted(inst) => {
                start_host(&mut w, &mut hosts, inst, false);
                Some(inst)
            }
            Routed::Host(inst, gen, hev) => {
                if let Some(h) = live_host(&w, &mut hosts, inst, gen) {
                    h.on_event(&mut w, inst, hev);
                }
                Some(inst)
            }
            Routed::Wake(inst, gen, at) => {
                let i = &mut w.fleet.instances[inst as usize];
                if i.wake_at == Some(at) {
                    i.wake_at = None;
                    if let Some(h) = live_host(&w, &mut hosts, inst, gen) {
                        h.on_wake(&mut w, inst);
                    }
                }
                Some(inst)
            }
            Routed::Hook(inst, job, kind) => {
                if w.hook_due(inst, job) {
                    let up = w.fleet.instances[inst as usize].agent_up;
                    let host = if up {
                        hosts.get_mut(inst as usize).and_then(Option::as_mut)
                    } else {
                        None
                    };
                    // A hook whose effect comes later reports its end itself (`World::hook_finished`).
                    if let Some(run) = C::job_hook(host, &mut w, inst, job, kind) {
                        w.hook_finished(inst, job, kind, run);
                    }
                }
                Some(inst)
            }
            Routed::AgentCrash(inst) => {
                if C::HAS_AGENT && w.fleet.instances[inst as usize].agent_up {
                    hosts[inst as usize] = None;
                    // JIT configs the agent held in memory die with it; the restarted one mints anew.
                    w.jit_configs_lost(inst);
                    let i = &mut w.fleet.instances[inst as usize];
                    i.agent_up = false;
                    i.agent_gen += 1;
                    i.wake_at = None;
                    if matches!(i.asg, crate::world::AsgPhase::Wait { .. }) {
                        i.fault_allowance_add(timing::AGENT_RESTART);
                    }
                    w.queue.push(w.now + timing::AGENT_RESTART, Ev::AgentRestart(inst));
                }
                None
            }
            Routed::AgentRestart(inst) => {
                start_host(&mut w, &mut hosts, inst, true);
                Some(inst)
            }
        };
        if let Some(inst) = touched {
            schedule_wake(&mut w, &hosts, inst);
        }
    }
    w.now = w.now.max(end);
    w.finish();
    for v in &mut w.violations {
        v.strategy = C::NAME.to_string();
    }
    StrategyRun {
        name: C::NAME,
        scaling: cfg.scaling,
        timeline: w.timeline.take().map(|t| t.into_timeline(C::NAME)),
        metrics: w.metrics,
        violations: w.violations,
        events,
    }
}

fn start_host<C: Controller>(w: &mut World, hosts: &mut Vec<Option<C>>, inst: InstId, restart: bool) {
    let idx = inst as usize;
    if hosts.len() <= idx {
        hosts.resize_with(idx + 1, || None);
    }
    w.fleet.instances[idx].agent_up = true;
    hosts[idx] = Some(C::start(w, inst, restart));
}

fn live_host<'a, C: Controller>(w: &World, hosts: &'a mut [Option<C>], inst: InstId, gen: u32) -> Option<&'a mut C> {
    let i = &w.fleet.instances[inst as usize];
    let slot = hosts.get_mut(inst as usize)?;
    if !i.agent_up {
        *slot = None; // the host is gone: drop its controller
        return None;
    }
    if i.agent_gen != gen {
        return None; // meant for an agent that has since crashed
    }
    slot.as_mut()
}

fn schedule_wake<C: Controller>(w: &mut World, hosts: &[Option<C>], inst: InstId) {
    let idx = inst as usize;
    let Some(Some(h)) = hosts.get(idx) else { return };
    let i = &w.fleet.instances[idx];
    if !i.agent_up {
        return;
    }
    if let Some(t) = h.next_wake() {
        if i.wake_at != Some(t) && t >= w.now {
            let gen = i.agent_gen;
            w.fleet.instances[idx].wake_at = Some(t);
            w.queue.push(t, Ev::Wake(inst, gen, t));
        }
    }
}
