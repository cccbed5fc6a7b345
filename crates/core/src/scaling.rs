//! The fleet's scaling decision, with no IO: how many instances the group should have, from demand.
//!
//! Demand is what GitHub says about *jobs* (queued and in progress, from `workflow_job` webhooks and a
//! periodic reconcile against the REST API), never its runner `busy` flag, which lags a job's start by
//! 25-60 s (github-aws-runners #5228; shared/docs/domain.md section 3). The policy only sets the
//! group's desired capacity: which instance leaves on a scale-in is the group's choice, made safe by
//! the agent (busy hosts are protected; a picked host drains without cancelling a job).
//!
//! - Scale-out is immediate: every queued job beyond the idle runners gets an instance now, not one
//!   instance a minute as with step alarms.
//! - Scale-in waits until demand has stayed below capacity for `scale_in_after`, so a burst that
//!   ends and a burst that follows do not churn instances (each churn is a boot and a stop window).
//! - Missing demand data (a GitHub outage, a reconcile that failed) never lowers capacity.
//!
//! The controller (`controller scale`) and the simulator drive this same function.

use crate::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the group serves: jobs queued for its labels and jobs running on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    /// Jobs queued for a runner with the group's labels.
    pub queued: u32,
    /// Jobs in progress on the group's runners.
    pub running: u32,
}

/// The policy's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandPolicy {
    /// Idle runners kept warm beyond demand, so a new job starts at once.
    pub idle_target: u32,
    /// The group's minimum size.
    pub min: u32,
    /// The group's maximum size.
    pub max: u32,
    /// How long demand must stay below capacity before capacity drops.
    pub scale_in_after: Duration,
}

/// Why the policy changed the desired capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleReason {
    /// More demand than capacity.
    DemandAbove,
    /// Demand stayed below capacity for `scale_in_after`.
    DemandBelow,
    /// The current capacity lies outside the group's bounds.
    Bounds,
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum ScaleDecision {
    /// Set the desired capacity.
    Set {
        /// The new desired capacity.
        desired: u32,
        /// Why.
        reason: ScaleReason,
    },
    /// Keep it; decide again at `recheck_at` at the latest (a pending scale-in comes due then).
    Hold {
        /// When a held scale-in comes due, if one is pending.
        recheck_at: Option<Time>,
    },
}

/// What the policy remembers between evaluations (the controller keeps it in its state table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingState {
    /// Since when demand has been below the current capacity.
    pub below_since: Option<Time>,
}

impl DemandPolicy {
    /// The capacity demand calls for, within the group's bounds.
    pub fn wanted(&self, demand: Demand) -> u32 {
        let want = demand
            .running
            .saturating_add(demand.queued)
            .saturating_add(self.idle_target);
        want.clamp(self.min, self.max.max(self.min))
    }

    /// The demand the policy may act on: all of it when it is trusted (`fresh`: a reconcile against
    /// GitHub's REST API succeeded recently), else only enough to raise capacity (stale data may
    /// show a queue; it must not show an idle fleet): the policy then sees "unknown", which never
    /// lowers capacity.
    pub fn gate(&self, demand: Demand, current: u32, fresh: bool) -> Option<Demand> {
        (fresh || self.wanted(demand) > current).then_some(demand)
    }

    /// One evaluation of the group, the function the controller (webhooks, the reconcile, a
    /// reconcile without its state table) and the simulator all call: [`gate`](Self::gate) the
    /// demand, then [`decide`](Self::decide). A `Set` always differs from `current`.
    pub fn evaluate(
        &self,
        state: &mut ScalingState,
        current: u32,
        demand: Demand,
        fresh: bool,
        now: Time,
    ) -> ScaleDecision {
        self.decide(state, current, self.gate(demand, current, fresh), now)
    }

    /// Decide, given the group's current desired capacity and the demand (`None`: unknown). A `Set`
    /// always differs from `current`.
    pub fn decide(&self, state: &mut ScalingState, current: u32, demand: Option<Demand>, now: Time) -> ScaleDecision {
        let hi = self.max.max(self.min);
        if current < self.min || current > hi {
            state.below_since = None;
            return ScaleDecision::Set {
                desired: current.clamp(self.min, hi),
                reason: ScaleReason::Bounds,
            };
        }
        let Some(demand) = demand else {
            // No data, no scale-in: an outage must not shrink a busy fleet.
            return ScaleDecision::Hold { recheck_at: None };
        };
        let want = self.wanted(demand);
        if want > current {
            state.below_since = None;
            return ScaleDecision::Set {
                desired: want,
                reason: ScaleReason::DemandAbove,
            };
        }
        if want == current {
            state.below_since = None;
            return ScaleDecision::Hold { recheck_at: None };
        }
        let since = *state.below_since.get_or_insert(now);
        let due = since + self.scale_in_after;
        if now >= due {
            state.below_since = None;
            ScaleDecision::Set {
                desired: want,
                reason: ScaleReason::DemandBelow,
            }
        } else {
            ScaleDecision::Hold { recheck_at: Some(due) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DemandPolicy {
        DemandPolicy {
            idle_target: 2,
            min: 1,
            max: 20,
            scale_in_after: Duration::from_secs(120),
        }
    }

    fn at(s: u64) -> Time {
        Time::ZERO + Duration::from_secs(s)
    }

    fn demand(queued: u32, running: u32) -> Option<Demand> {
        Some(Demand { queued, running })
    }

    #[test]
    fn scale_out_is_immediate_and_sized_to_demand() {
        let mut st = ScalingState::default();
        let d = policy().decide(&mut st, 3, demand(10, 1), at(0));
        assert_eq!(
            d,
            ScaleDecision::Set {
                desired: 13,
                reason: ScaleReason::DemandAbove
            }
        );
        let d = policy().decide(&mut st, 3, demand(100, 10), at(0));
        assert_eq!(
            d,
            ScaleDecision::Set {
                desired: 20,
                reason: ScaleReason::DemandAbove
            },
            "capped at max"
        );
    }

    #[test]
    fn scale_in_waits_for_demand_to_stay_low() {
        let mut st = ScalingState::default();
        let p = policy();
        assert_eq!(
            p.decide(&mut st, 10, demand(0, 3), at(0)),
            ScaleDecision::Hold {
                recheck_at: Some(at(120))
            }
        );
        assert_eq!(
            p.decide(&mut st, 10, demand(0, 3), at(119)),
            ScaleDecision::Hold {
                recheck_at: Some(at(120))
            }
        );
        assert_eq!(
            p.decide(&mut st, 10, demand(0, 3), at(120)),
            ScaleDecision::Set {
                desired: 5,
                reason: ScaleReason::DemandBelow
            }
        );
    }

    #[test]
    fn a_burst_in_between_restarts_the_wait() {
        let mut st = ScalingState::default();
        let p = policy();
        let _ = p.decide(&mut st, 10, demand(0, 0), at(0));
        assert_eq!(
            p.decide(&mut st, 10, demand(6, 2), at(60)),
            ScaleDecision::Hold { recheck_at: None }
        );
        assert_eq!(
            p.decide(&mut st, 10, demand(0, 0), at(100)),
            ScaleDecision::Hold {
                recheck_at: Some(at(220))
            }
        );
    }

    #[test]
    fn unknown_demand_never_scales_in() {
        let mut st = ScalingState::default();
        let p = policy();
        let _ = p.decide(&mut st, 10, demand(0, 0), at(0));
        for t in [200, 400, 10_000] {
            assert_eq!(
                p.decide(&mut st, 10, None, at(t)),
                ScaleDecision::Hold { recheck_at: None }
            );
        }
    }

    #[test]
    fn capacity_outside_the_bounds_is_corrected() {
        let mut st = ScalingState::default();
        assert_eq!(
            policy().decide(&mut st, 0, demand(0, 0), at(0)),
            ScaleDecision::Set {
                desired: 1,
                reason: ScaleReason::Bounds
            }
        );
        assert_eq!(
            policy().decide(&mut st, 25, None, at(0)),
            ScaleDecision::Set {
                desired: 20,
                reason: ScaleReason::Bounds
            }
        );
    }

    #[test]
    fn stale_demand_only_raises_capacity() {
        let p = policy();
        let mut st = ScalingState::default();
        // Stale and low: unknown, so held however long.
        for t in [0, 200, 10_000] {
            assert_eq!(
                p.evaluate(&mut st, 10, Demand::default(), false, at(t)),
                ScaleDecision::Hold { recheck_at: None }
            );
        }
        // Stale and high: acted on.
        assert_eq!(
            p.evaluate(&mut st, 3, Demand { queued: 5, running: 0 }, false, at(0)),
            ScaleDecision::Set {
                desired: 7,
                reason: ScaleReason::DemandAbove
            }
        );
        // Fresh: the same as `decide`.
        let (mut a, mut b) = (ScalingState::default(), ScalingState::default());
        assert_eq!(
            p.evaluate(&mut a, 10, Demand::default(), true, at(0)),
            p.decide(&mut b, 10, demand(0, 0), at(0))
        );
        assert_eq!(a, b);
    }

    #[test]
    fn a_set_always_changes_the_capacity() {
        let p = policy();
        for current in 0..25 {
            for queued in 0..25 {
                let mut st = ScalingState {
                    below_since: Some(at(0)),
                };
                let d = Demand { queued, running: 0 };
                if let ScaleDecision::Set { desired, .. } = p.evaluate(&mut st, current, d, queued % 2 == 0, at(500)) {
                    assert_ne!(desired, current);
                }
            }
        }
    }

    #[test]
    fn huge_demand_saturates() {
        let d = Demand {
            queued: u32::MAX,
            running: u32::MAX,
        };
        assert_eq!(policy().wanted(d), 20);
    }
}
