//! The group's scaling state as stored in the DynamoDB table: the jobs the webhooks and the
//! reconcile told of, the completed ids, the policy's memory, the capacity and the apply window.

use crate::ports::Capacity;
use crate::settings::ScaleSettings;
use crate::webhook::{JobAction, JobEvent};
use lifecycle_core::scaling::{Demand, ScalingState};
use lifecycle_github::WorkflowJob;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Jobs tracked per group at most (keeps the item far below DynamoDB's 400 KB; demand beyond any
/// sane MaxSize does not change the decision).
pub const MAX_JOBS: usize = 4000;
/// Completed job ids remembered at most, and for how long (a `queued` delivered after its
/// `completed` must not count again).
pub const MAX_DONE: usize = 2000;
/// Seconds a completed job id is remembered.
pub const DONE_KEEP_S: i64 = 3600;

/// One job the group serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Running (in progress) rather than queued.
    #[serde(rename = "r")]
    pub running: bool,
    /// When it was queued (epoch s).
    #[serde(rename = "q")]
    pub queued_at: i64,
    /// When a webhook last told of it (epoch s; 0: known from a reconcile only).
    #[serde(rename = "s")]
    pub seen_at: i64,
}

/// A group's scaling state, as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// Jobs queued or running, by id.
    #[serde(default)]
    pub jobs: BTreeMap<u64, Job>,
    /// Completed job ids and when.
    #[serde(default)]
    pub done: BTreeMap<u64, i64>,
    /// The policy's memory.
    #[serde(default)]
    pub scaling: ScalingState,
    /// The capacity last seen or applied.
    #[serde(default)]
    pub capacity: Option<StoredCapacity>,
    /// When the last apply window opened (epoch s).
    #[serde(default)]
    pub applied_at: Option<i64>,
    /// An invocation waits to apply at this time (the trailing edge).
    #[serde(default)]
    pub deferred_until: Option<i64>,
    /// The last successful reconcile (epoch s).
    #[serde(default)]
    pub reconciled_at: Option<i64>,
}

/// [`Capacity`], stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCapacity {
    /// DesiredCapacity.
    pub desired: u32,
    /// MinSize.
    pub min: u32,
    /// MaxSize.
    pub max: u32,
}

impl From<Capacity> for StoredCapacity {
    fn from(c: Capacity) -> Self {
        StoredCapacity {
            desired: c.desired,
            min: c.min,
            max: c.max,
        }
    }
}

impl GroupState {
    /// The demand the jobs make.
    pub fn demand(&self) -> Demand {
        let running = self.jobs.values().filter(|j| j.running).count();
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        Demand {
            queued: n(self.jobs.len() - running),
            running: n(running),
        }
    }

    /// Count one webhook; the job's queue time (s) when it started.
    pub fn apply_event(&mut self, ev: &JobEvent, now: i64) -> Option<i64> {
        self.prune(now);
        if self.done.contains_key(&ev.job_id) {
            return None;
        }
        match ev.action {
            JobAction::Completed => {
                self.jobs.remove(&ev.job_id);
                self.done.insert(ev.job_id, now);
                None
            }
            JobAction::Queued => {
                if !self.jobs.contains_key(&ev.job_id) && self.jobs.len() < MAX_JOBS {
                    self.jobs.insert(
                        ev.job_id,
                        Job {
                            running: false,
                            queued_at: ev.created_at.unwrap_or(now),
                            seen_at: now,
                        },
                    );
                }
                None
            }
            JobAction::InProgress => {
                if !self.jobs.contains_key(&ev.job_id) && self.jobs.len() >= MAX_JOBS {
                    return None;
                }
                let job = self.jobs.entry(ev.job_id).or_insert(Job {
                    running: false,
                    queued_at: ev.created_at.unwrap_or(now),
                    seen_at: now,
                });
                let was_running = std::mem::replace(&mut job.running, true);
                job.seen_at = now;
                let started = ev.started_at.unwrap_or(now);
                (!was_running).then(|| started.saturating_sub(ev.created_at.unwrap_or(job.queued_at)).max(0))
            }
        }
    }

    /// Replace the jobs with the REST API's view (`jobs` already filtered to the group's labels),
    /// keeping what a webhook told since `since` (it may be newer than the API's answer). Returns
    /// how many jobs were repaired: missing, extra, or in the wrong state.
    pub fn replace_jobs(&mut self, jobs: &[WorkflowJob], since: i64, now: i64) -> u32 {
        self.prune(now);
        let mut next: BTreeMap<u64, Job> = BTreeMap::new();
        let mut repaired = 0u32;
        for j in jobs {
            if next.len() >= MAX_JOBS || self.done.contains_key(&j.id) {
                continue;
            }
            let running = j.status == "in_progress";
            let queued_at = j
                .created_at
                .as_deref()
                .and_then(lifecycle_github::time::parse_rfc3339)
                .unwrap_or(now);
            match self.jobs.get(&j.id) {
                Some(old) if old.seen_at >= since => {
                    next.insert(j.id, *old);
                    continue;
                }
                Some(old) if old.running == running => {}
                _ => repaired += 1,
            }
            next.insert(
                j.id,
                Job {
                    running,
                    queued_at,
                    seen_at: 0,
                },
            );
        }
        for (id, old) in &self.jobs {
            if next.contains_key(id) {
                continue;
            }
            if old.seen_at >= since {
                next.insert(*id, *old);
            } else {
                repaired += 1;
            }
        }
        self.jobs = next;
        repaired
    }

    fn prune(&mut self, now: i64) {
        self.done.retain(|_, t| now.saturating_sub(*t) <= DONE_KEEP_S);
        while self.done.len() > MAX_DONE {
            let oldest = self.done.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id);
            match oldest {
                Some(id) => self.done.remove(&id),
                None => break,
            };
        }
    }

    /// Whether a reconcile succeeded within `fresh_for`: demand may then lower capacity.
    pub fn fresh(&self, s: &ScaleSettings, now: i64) -> bool {
        self.reconciled_at
            .is_some_and(|t| now.saturating_sub(t) <= i64::try_from(s.fresh_for.as_secs()).unwrap_or(i64::MAX))
    }
}
