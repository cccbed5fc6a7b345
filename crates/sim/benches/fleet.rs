//! `cargo bench -p lifecycle-sim`: how fast the fleet simulation runs. Prints figures; asserts nothing.
//!
//! Measures the README's headline run (`simulate --instances 1000 --days 30`, all strategies in
//! parallel threads, as the CLI runs it) and each strategy alone on one thread.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock by definition

use lifecycle_sim::{jobs_for, simulate, SimConfig, Strategy};
use std::time::Instant;

fn main() {
    let cfg = SimConfig::fleet(42, 1000, 30.0);
    let jobs = jobs_for(&cfg);
    let job_hours: f64 = jobs.iter().map(|j| j.duration.as_secs_f64()).sum::<f64>() / 3600.0;
    println!(
        "world: 1000 instances max, 30 days, seed 42: {} jobs, {job_hours:.0} job-hours",
        jobs.len()
    );

    let t = Instant::now();
    let report = simulate(&cfg, &Strategy::ALL);
    let wall = t.elapsed().as_secs_f64();
    let events: u64 = report.strategies.iter().map(|s| s.events).sum();
    let n = report.strategies.len() as f64;
    println!(
        "all {} strategies in parallel: {wall:.2} s wall, {:.1} M events/s, {:.0} simulated job-hours per wall second",
        report.strategies.len(),
        events as f64 / wall / 1e6,
        job_hours * n / wall
    );

    for s in Strategy::ALL {
        let t = Instant::now();
        let r = simulate(&cfg, &[s]);
        let wall = t.elapsed().as_secs_f64();
        let events = r.strategies[0].events;
        println!(
            "  {:<24} alone: {wall:.2} s, {:.1} M events, {:.0} ns/event, {:.0} job-hours/s",
            s.name(),
            events as f64 / 1e6,
            wall * 1e9 / events as f64,
            job_hours / wall
        );
    }
}
