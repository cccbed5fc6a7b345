//! The decision, pure: from the group's stored state, what to set and when. Every path of the
//! controller (a webhook's plan, the apply after it, the reconcile, the reconcile without its state
//! table) decides through [`target`], which is lifecycle-core's
//! [`DemandPolicy::evaluate`](lifecycle_core::scaling::DemandPolicy::evaluate), the function the
//! simulator calls too; [`plan`] adds the apply window (coalescing) on top.

use super::state::{GroupState, StoredCapacity};
use crate::settings::ScaleSettings;
use lifecycle_core::scaling::{Demand, DemandPolicy, ScaleDecision, ScaleReason, ScalingState};
use lifecycle_core::Time;

/// The policy for `cap`.
pub fn policy(s: &ScaleSettings, cap: StoredCapacity) -> DemandPolicy {
    DemandPolicy {
        idle_target: s.idle_target,
        min: cap.min,
        max: cap.max,
        scale_in_after: s.scale_in_after,
    }
}

/// The capacity to set now, if it changes: the policy for `cap` evaluates `demand` (trusted when
/// `fresh`) at `now`, updating `scaling`.
fn target(
    s: &ScaleSettings,
    scaling: &mut ScalingState,
    cap: StoredCapacity,
    demand: Demand,
    fresh: bool,
    now: i64,
) -> Option<(u32, ScaleReason)> {
    match policy(s, cap).evaluate(scaling, cap.desired, demand, fresh, time(now)) {
        ScaleDecision::Set { desired, reason } => Some((desired, reason)),
        ScaleDecision::Hold { .. } => None,
    }
}

/// Epoch seconds as the core's time (before 1970: zero).
pub(super) fn time(epoch: i64) -> Time {
    Time::from_secs(u64::try_from(epoch).unwrap_or(0))
}

/// What an update of the state asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to change (or another invocation will).
    Nothing,
    /// The capacity is unknown or a change is due and the window is claimed: describe and apply.
    Apply,
    /// A change is due inside a claimed window; this invocation owns the trailing apply at `until`.
    Defer {
        /// When the window opens (epoch s).
        until: i64,
    },
}

/// Decide on the stored capacity; claims the window (or the trailing apply) in `st`. The policy's
/// state changes only when the decision is held or applied, so a throttled scale-in stays due.
pub fn plan(s: &ScaleSettings, st: &mut GroupState, now: i64) -> Plan {
    let Some(cap) = st.capacity else {
        st.applied_at = Some(now);
        return Plan::Apply;
    };
    let (mut scaling, demand, fresh) = (st.scaling, st.demand(), st.fresh(s, now));
    if target(s, &mut scaling, cap, demand, fresh, now).is_none() {
        st.scaling = scaling;
        return Plan::Nothing;
    }
    let interval = i64::try_from(s.apply_interval.as_secs()).unwrap_or(i64::MAX);
    let window_end = st.applied_at.map_or(i64::MIN, |t| t.saturating_add(interval));
    if now >= window_end {
        st.applied_at = Some(now);
        st.deferred_until = None;
        Plan::Apply
    } else if st.deferred_until.is_some_and(|d| d >= now) {
        Plan::Nothing
    } else {
        st.deferred_until = Some(window_end);
        Plan::Defer { until: window_end }
    }
}

/// Decide on the group's real capacity `cap` (just described) and record it in `st`: the capacity
/// to set, if it changes. Used by the apply after a plan and by the reconcile.
pub fn decide_on(
    s: &ScaleSettings,
    st: &mut GroupState,
    cap: StoredCapacity,
    fresh: bool,
    now: i64,
) -> Option<(u32, ScaleReason)> {
    st.capacity = Some(cap);
    let demand = st.demand();
    let target = target(s, &mut st.scaling, cap, demand, fresh, now);
    if let Some((desired, _)) = target {
        st.capacity = Some(StoredCapacity { desired, ..cap });
    }
    target
}
