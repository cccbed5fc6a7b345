//! The scaling metrics: gauges of the group's state and counters of one invocation, as one
//! CloudWatch embedded-metric-format line.

use super::state::GroupState;
use crate::emf::Line;

/// Metrics of one invocation, for [`metrics_line`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleMetrics {
    /// Jobs queued.
    pub queued: Option<u32>,
    /// Runners busy (jobs in progress).
    pub busy: Option<u32>,
    /// Runners idle (capacity minus busy).
    pub idle: Option<u32>,
    /// Queue time of a job that started (s).
    pub queue_time_s: Option<i64>,
    /// SetDesiredCapacity calls made.
    pub scale_actions: u32,
    /// Jobs the reconcile repaired.
    pub repaired: Option<u32>,
}

/// The metrics of a scaling invocation.
pub mod names {
    use crate::emf::Metric;
    /// Jobs queued.
    pub const QUEUED_JOBS: Metric = Metric::count("QueuedJobs");
    /// Runners busy.
    pub const BUSY_RUNNERS: Metric = Metric::count("BusyRunners");
    /// Runners idle.
    pub const IDLE_RUNNERS: Metric = Metric::count("IdleRunners");
    /// Queue time of a job that started.
    pub const QUEUE_TIME: Metric = Metric::seconds("QueueTime");
    /// SetDesiredCapacity calls made.
    pub const SCALE_ACTIONS: Metric = Metric::count("ScaleActions");
    /// Jobs the reconcile repaired.
    pub const WEBHOOKS_REPAIRED: Metric = Metric::count("WebhooksRepaired");
}

/// The CloudWatch embedded-metric-format line for `m` (namespace `RunnerLifecycle`, dimension
/// `AutoScalingGroupName`, [`crate::emf`]).
pub fn metrics_line(group: &str, m: &ScaleMetrics, timestamp_ms: i64) -> String {
    use names::*;
    let mut line = Line::for_group(group, timestamp_ms);
    line.put_some(QUEUED_JOBS, m.queued)
        .put_some(BUSY_RUNNERS, m.busy)
        .put_some(IDLE_RUNNERS, m.idle)
        .put_some(QUEUE_TIME, m.queue_time_s)
        .put(SCALE_ACTIONS, m.scale_actions)
        .put_some(WEBHOOKS_REPAIRED, m.repaired);
    line.render()
}

/// The gauges of `st`: queued, busy and idle.
pub(super) fn gauges(m: &mut ScaleMetrics, st: &GroupState) {
    let d = st.demand();
    m.queued = Some(d.queued);
    m.busy = Some(d.running);
    m.idle = st.capacity.map(|c| c.desired.saturating_sub(d.running));
}
