//! Each finished job as the GitHub export needs it (which host, when, how), recorded only when
//! `SimConfig::record_jobs` is set: crate::github_export turns the log into GitHub's records.

use super::{JobId, Listener, World};
use crate::github_export::JobRecord;
use crate::metrics::JobOutcome;
use lifecycle_core::Time;

impl World {
    /// Log a job's end (called where its outcome is counted, `finish_job`).
    pub(super) fn log_job(&mut self, job: JobId, outcome: JobOutcome, arrival: Time, started: Option<Time>) {
        if !self.cfg.record_jobs {
            return;
        }
        let host = self.fleet.instances.iter().position(|i| {
            i.worker.is_some_and(|(j, _, _)| j == job)
                || i.listener == Listener::Claimed(job)
                || i.listener == Listener::Busy(job)
        });
        let record = JobRecord {
            job,
            arrival,
            started,
            ended: self.now,
            instance: host.and_then(|h| u32::try_from(h).ok()),
            outcome,
        };
        self.metrics.job_log.get_or_insert_with(Vec::new).push(record);
    }
}
