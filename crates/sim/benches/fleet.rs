//! `cargo bench -p lifecycle-sim`: how fast and how lean the fleet simulation runs. Prints figures;
//! asserts nothing.
//!
//! 1. The README's headline run (`simulate --instances 1000 --days 30`, all strategies in parallel
//!    threads, as the CLI runs it), then each strategy alone on one thread.
//! 2. A sweep of 10,000 seeds x 20 instances x 1 day, all strategies, on every core (target: under
//!    2 minutes on 2 cores).
//! 3. 10,000 instances x 30 days, one strategy: peak RSS stays bounded because jobs are generated as
//!    they arrive and forgotten once they end (set `FLEET_BENCH_BIG=0` to skip it).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock by definition

use lifecycle_sim::{jobs_for, simulate, sweep, SimConfig, Strategy};
use std::time::Instant;

/// Peak resident set size of this process so far, from /proc (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let cfg = SimConfig::fleet(42, 1000, 30.0);
    let jobs = jobs_for(&cfg);
    let job_hours: f64 = jobs.iter().map(|j| j.duration.as_secs_f64()).sum::<f64>() / 3600.0;
    println!(
        "world: 1000 instances max, 30 days, seed 42: {} jobs, {job_hours:.0} job-hours",
        jobs.len()
    );
    drop(jobs);

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

    let small = SimConfig::fleet(1, 20, 1.0);
    let t = Instant::now();
    let r = sweep(&small, 10_000, &Strategy::ALL);
    println!(
        "sweep 10,000 seeds x 20 instances x 1 day, {} strategies, {} threads: {:.1} s wall, {} scale-ins per strategy",
        r.strategies.len(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        t.elapsed().as_secs_f64(),
        r.strategies[0].metrics.scale_ins
    );
    println!("peak RSS so far: {:.0} MiB", peak_rss_mib());

    if std::env::var("FLEET_BENCH_BIG").as_deref() != Ok("0") {
        let big = SimConfig::fleet(42, 10_000, 30.0);
        let t = Instant::now();
        let r = simulate(&big, &[Strategy::RunnerLifecycle]);
        println!(
            "10,000 instances x 30 days, runner-lifecycle: {:.1} s wall, {} jobs, {:.1} M events, peak RSS {:.0} MiB",
            t.elapsed().as_secs_f64(),
            r.strategies[0].metrics.jobs_total,
            r.strategies[0].events as f64 / 1e6,
            peak_rss_mib()
        );
    }
}
