//! The jobs of a run, kept only while they matter: a job is pulled from its source when the previous
//! one arrives, and forgotten once it and every older job have ended. Memory follows the jobs alive at
//! once (bounded by the longest job), not the length of the run.

use crate::config::SimConfig;
use crate::streams;
use crate::workload::{JobSpec, JobStream};
use lifecycle_core::Time;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Where jobs come from.
#[derive(Debug)]
pub enum JobSource {
    /// The synthetic stream, generated as it goes.
    Synthetic(JobStream),
    /// A replayed trace (`simulate --trace`), shared read-only between strategies.
    Trace(Arc<Vec<JobSpec>>, usize),
}

impl JobSource {
    fn next(&mut self) -> Option<JobSpec> {
        match self {
            JobSource::Synthetic(s) => s.next(),
            JobSource::Trace(jobs, i) => {
                let j = jobs.get(*i).copied();
                *i += 1;
                j
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Job {
    spec: JobSpec,
    started: Option<Time>,
    /// The job has ended (its outcome went to the run's metrics).
    ended: bool,
}

/// Jobs by id; ids count up from 0 in arrival order.
#[derive(Debug)]
pub struct JobStore {
    source: JobSource,
    /// The id of `live[0]`.
    base: u32,
    live: VecDeque<Job>,
}

impl JobStore {
    /// An empty store over `source`.
    pub fn new(source: JobSource) -> Self {
        JobStore {
            source,
            base: 0,
            live: VecDeque::new(),
        }
    }

    /// Take the next job from the source: its id and arrival time.
    pub fn pull_next(&mut self) -> Option<(u32, Time)> {
        let spec = self.source.next()?;
        let id = self.base + self.live.len() as u32;
        self.live.push_back(Job {
            spec,
            started: None,
            ended: false,
        });
        Some((id, spec.arrival))
    }

    fn get(&self, id: u32) -> Option<&Job> {
        id.checked_sub(self.base).and_then(|k| self.live.get(k as usize))
    }

    /// Whether the job has ended (forgotten jobs have).
    pub fn finished(&self, id: u32) -> bool {
        self.get(id).is_none_or(|j| j.ended)
    }

    /// How long the job's steps run.
    pub fn duration(&self, id: u32) -> Duration {
        self.get(id).map_or(Duration::ZERO, |j| j.spec.duration)
    }

    /// The job's worker started.
    pub fn start(&mut self, id: u32, now: Time) {
        if let Some(j) = id.checked_sub(self.base).and_then(|k| self.live.get_mut(k as usize)) {
            j.started = Some(now);
        }
    }

    /// End the job; returns its arrival and start, or `None` if it had already ended.
    pub fn finish(&mut self, id: u32) -> Option<(Time, Option<Time>)> {
        let j = id.checked_sub(self.base).and_then(|k| self.live.get_mut(k as usize))?;
        if j.ended {
            return None;
        }
        j.ended = true;
        let ended = (j.spec.arrival, j.started);
        while self.live.front().is_some_and(|j| j.ended) {
            self.live.pop_front();
            self.base += 1;
        }
        Some(ended)
    }

    /// Jobs that arrived by `now` and have not ended.
    pub fn unfinished(&self, now: Time) -> u64 {
        self.live.iter().filter(|j| !j.ended && j.spec.arrival <= now).count() as u64
    }

    /// Jobs held in memory right now (for the memory test).
    pub fn held(&self) -> usize {
        self.live.len()
    }
}

/// Where a run's jobs come from: the trace if one is given, else the synthetic stream, a function of
/// the seed and the fleet size only, so every strategy sees exactly the same jobs.
pub fn job_source(cfg: &SimConfig) -> JobSource {
    match &cfg.trace {
        Some(jobs) => JobSource::Trace(Arc::clone(jobs), 0),
        None => {
            let peak_busy = f64::from(cfg.instances) * cfg.peak_utilisation;
            let rng = streams::stream(cfg.seed, streams::JOBS);
            JobSource::Synthetic(JobStream::new(rng, cfg.duration, peak_busy))
        }
    }
}

/// Every job of a run at once (tests and the benchmark; the simulation itself streams them).
pub fn jobs_for(cfg: &SimConfig) -> Vec<JobSpec> {
    match job_source(cfg) {
        JobSource::Synthetic(stream) => stream.collect(),
        JobSource::Trace(jobs, _) => jobs.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: u64) -> JobSpec {
        JobSpec {
            arrival: Time::ZERO + Duration::from_secs(s),
            duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn forgets_a_prefix_of_finished_jobs_only() {
        let mut st = JobStore::new(JobSource::Trace(Arc::new(vec![spec(1), spec(2), spec(3)]), 0));
        assert_eq!(st.pull_next(), Some((0, Time::ZERO + Duration::from_secs(1))));
        assert_eq!(st.pull_next().map(|x| x.0), Some(1));
        assert_eq!(st.pull_next().map(|x| x.0), Some(2));
        assert_eq!(st.pull_next(), None);
        assert!(st.finish(1).is_some());
        assert_eq!(st.held(), 3, "job 0 still runs");
        assert!(st.finish(1).is_none(), "twice is a no-op");
        assert!(st.finish(0).is_some());
        assert_eq!(st.held(), 1);
        assert!(st.finished(0) && st.finished(1) && !st.finished(2));
        assert_eq!(st.unfinished(Time::ZERO + Duration::from_secs(10)), 1);
        assert_eq!(st.duration(2), Duration::from_secs(60));
    }
}
