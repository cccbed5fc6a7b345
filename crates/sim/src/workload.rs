//! The job stream: bursty, diurnal arrivals with heavy-tailed durations, fixed by the seed alone so
//! every strategy sees exactly the same jobs.

use lifecycle_core::{Rng, Time};
use std::time::Duration;

/// One job as GitHub queues it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobSpec {
    /// When it is queued.
    pub arrival: Time,
    /// How long its steps run once started.
    pub duration: Duration,
}

/// Median job length: 5 min. CI jobs are log-normal-ish with a long tail (builds, integration tests).
const MEDIAN_JOB: Duration = Duration::from_secs(300);
/// Log-normal sigma: with 1.0 the mean is e^0.5 x median, about 8.2 min, and 5% of jobs exceed 26 min.
const SIGMA: f64 = 1.0;
/// GitHub's default job timeout (`timeout-minutes`: 360).
const MAX_JOB: Duration = Duration::from_secs(6 * 3600);
/// Jobs per push, on average (a workflow with a small matrix).
const MEAN_BURST: f64 = 3.0;

/// Mean job length implied by the constants above.
pub fn mean_job() -> Duration {
    MEDIAN_JOB.mul_f64((SIGMA * SIGMA / 2.0).exp())
}

/// Relative load by hour of a week: working hours busy, nights and weekends quiet.
fn load_factor(t: Time) -> f64 {
    let hours = t.as_secs_f64() / 3600.0;
    let day = (hours / 24.0).floor() as u64 % 7;
    let hour = hours % 24.0;
    let weekend = day >= 5;
    let working = (8.0..18.0).contains(&hour);
    match (weekend, working) {
        (false, true) => 1.0,
        (false, false) => 0.15,
        (true, true) => 0.2,
        (true, false) => 0.05,
    }
}

/// The job stream of a synthetic run, generated as the simulation reaches each arrival so memory does
/// not grow with the run's length. Same seed, same jobs, for every strategy (common random numbers).
#[derive(Clone, Debug)]
pub struct JobStream {
    rng: Rng,
    end: Time,
    /// The current push's time and how many of its jobs are still to come.
    t: Time,
    burst_left: u32,
    mean_gap: Duration,
}

impl JobStream {
    /// At peak, the offered load keeps `peak_busy` runners busy on average.
    pub fn new(rng: Rng, horizon: Duration, peak_busy: f64) -> Self {
        // Little's law: busy = arrival rate x mean duration; pushes carry MEAN_BURST jobs each.
        let peak_push_rate = peak_busy / mean_job().as_secs_f64() / MEAN_BURST;
        JobStream {
            rng,
            end: Time::ZERO + horizon,
            t: Time::ZERO,
            burst_left: 0,
            mean_gap: Duration::from_secs_f64(1.0 / peak_push_rate.max(1e-9)),
        }
    }
}

impl Iterator for JobStream {
    type Item = JobSpec;

    fn next(&mut self) -> Option<JobSpec> {
        while self.burst_left == 0 {
            // Thinning (Lewis and Shedler): draw at the peak rate, keep with probability load_factor.
            self.t = self.t + self.rng.exponential(self.mean_gap);
            if self.t >= self.end {
                self.t = self.end;
                return None;
            }
            if !self.rng.chance(load_factor(self.t)) {
                continue;
            }
            // Geometric burst size with the given mean.
            let mut burst = 1;
            while self.rng.chance(1.0 - 1.0 / MEAN_BURST) && burst < 50 {
                burst += 1;
            }
            self.burst_left = burst;
        }
        self.burst_left -= 1;
        let duration = MEDIAN_JOB
            .mul_f64((SIGMA * self.rng.normal()).exp())
            .clamp(Duration::from_secs(5), MAX_JOB);
        Some(JobSpec {
            arrival: self.t,
            duration,
        })
    }
}

/// Generate every job of a run at once (tests and the benchmark's job-hour count).
pub fn generate(rng: &mut Rng, horizon: Duration, peak_busy: f64) -> Vec<JobSpec> {
    JobStream::new(rng.fork(), horizon, peak_busy).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_jobs_and_plausible_load() {
        let a = generate(&mut Rng::new(9), Duration::from_secs(7 * 86400), 50.0);
        let b = generate(&mut Rng::new(9), Duration::from_secs(7 * 86400), 50.0);
        assert_eq!(a, b);
        let busy_seconds: f64 = a.iter().map(|j| j.duration.as_secs_f64()).sum();
        let avg_busy = busy_seconds / (7.0 * 86400.0);
        // Average over the week: weekdays 10 h at 1.0 and 14 h at 0.15, weekends 0.2/0.05.
        let expected = 50.0 * (5.0 * (10.0 + 14.0 * 0.15) + 2.0 * (10.0 * 0.2 + 14.0 * 0.05)) / (7.0 * 24.0);
        assert!(
            (avg_busy / expected - 1.0).abs() < 0.2,
            "avg busy {avg_busy:.1}, expected {expected:.1}"
        );
        assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }
}
