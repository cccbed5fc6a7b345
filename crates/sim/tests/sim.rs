//! The simulation's promises: determinism, the invariants over many seeds, a checker that catches
//! strategies breaking them, and the comparison the README reports.

use lifecycle_sim::strategy::{naive::Naive, runner_lifecycle::RunnerLifecycle, source_pr::SourcePr};
use lifecycle_sim::{driver, jobs_for, simulate, sweep, Faults, SimConfig, Strategy};

/// A small, busy, faulty fleet: many scale-ins and races per simulated day.
fn small(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::fleet(seed, 30, 2.0);
    cfg.faults = Faults {
        throttle_rate: 0.05,
        error_rate: 0.02,
        imds_outages_per_day: 2.0,
        agent_crashes_per_day: 2.0,
        runner_crashes_per_day: 0.5,
        spot_interruptions_per_day: 0.5,
    };
    cfg
}

const OURS: [Strategy; 2] = [Strategy::RunnerLifecycle, Strategy::RunnerLifecycleOnce];

#[test]
fn same_seed_same_report() {
    let a = simulate(&small(7), &Strategy::ALL).to_json();
    let b = simulate(&small(7), &Strategy::ALL).to_json();
    assert_eq!(a, b);
    let c = simulate(&small(8), &Strategy::ALL).to_json();
    assert_ne!(a, c);
}

#[test]
fn invariants_hold_over_a_sweep_of_seeds() {
    // 40 seeds x 2 strategies x 2 days of a 30-instance fleet with heavy faults.
    let report = sweep(&small(1000), 40, &OURS);
    let listing: Vec<String> = report.violation_list.iter().map(ToString::to_string).collect();
    assert!(
        listing.is_empty(),
        "violations (reproduce with the seed):\n{}",
        listing.join("\n")
    );
    for s in &report.strategies {
        assert_eq!(s.metrics.jobs_cancelled, 0, "{}", s.name);
        assert_eq!(s.metrics.hooks_timed_out, 0, "{}", s.name);
        assert_eq!(
            s.metrics.failed_instance_terminated + s.metrics.failed_hook,
            0,
            "{}",
            s.name
        );
        assert!(
            s.metrics.scale_ins > 100,
            "the sweep must exercise scale-in: {}",
            s.metrics.scale_ins
        );
        assert!(s.metrics.jobs_succeeded > 10_000);
    }
}

#[test]
fn invariants_hold_without_faults_too() {
    let mut cfg = small(77);
    cfg.faults = Faults::none();
    let report = sweep(&cfg, 10, &OURS);
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
    for s in &report.strategies {
        assert_eq!(s.metrics.jobs_failed, 0, "no faults, no failures: {}", s.name);
        assert_eq!(s.metrics.jobs_killed_by_interruption, 0);
    }
}

/// The checker is not vacuous: the rival designs, checked by the same rules, break them.
#[test]
fn the_invariant_checker_catches_the_rival_designs() {
    let cfg = small(5);
    let jobs = jobs_for(&cfg);
    let naive = driver::run_checked::<Naive>(&cfg, &jobs, true);
    assert!(
        naive.violations.iter().any(|v| v.what.contains("Cancelled")),
        "{:?}",
        naive.violations
    );
    let source = driver::run_checked::<SourcePr>(&cfg, &jobs, true);
    // Its stop path cancels the jobs dispatched in the ~11 s between Terminating:Wait and the stop.
    assert!(
        source.violations.iter().any(|v| v.what.contains("Cancelled")),
        "{:?}",
        source.violations
    );
    let ours = driver::run_checked::<RunnerLifecycle>(&cfg, &jobs, true);
    assert!(ours.violations.is_empty(), "{:?}", ours.violations);
}

#[test]
fn runner_lifecycle_beats_the_rivals_on_identical_worlds() {
    let report = simulate(&SimConfig::fleet(42, 60, 3.0), &Strategy::ALL);
    let by = |name: &str| {
        report
            .strategies
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .expect("strategy ran")
    };
    let ours = by("runner-lifecycle");
    let pr = by("source-pr");
    let naive = by("naive");
    assert_eq!(ours.metrics.jobs_total, pr.metrics.jobs_total, "same jobs for everyone");
    assert!(
        naive.metrics.jobs_cancelled > 0,
        "no protection: busy runners get picked and cancelled"
    );
    let lost = |s: &lifecycle_sim::StrategyReport| s.metrics.jobs_cancelled + s.metrics.failed_hook;
    assert!(lost(&pr) > 0, "the source PR's race window cancels jobs");
    assert_eq!(lost(&ours), 0);
    // Idle hosts wait for the event -> Lambda -> SSM path (~11 s) instead of leaving in seconds.
    assert!(pr.metrics.terminating_idle_seconds > 2.0 * ours.metrics.terminating_idle_seconds);
    // Protection on every job costs API calls; the source PR adds a describe every 10 minutes per host.
    assert!(pr.asg_calls_per_instance_hour > ours.asg_calls_per_instance_hour);
}

/// A world that once broke an invariant, kept forever (see the README, "Regression seeds").
struct Regression {
    seed: u64,
    instances: u32,
    days: f64,
    hook_timeout_s: u64,
    imds_lag_s: u64,
    peak_utilisation: f64,
    what: &'static str,
}

/// Worlds use the heavy faults of `simulate --throttle-rate 0.1 --error-rate 0.05
/// --imds-outages-per-day 4 --agent-crashes-per-day 4 --runner-crashes-per-day 1
/// --spot-interruptions-per-day 1`.
const REGRESSIONS: &[Regression] = &[
    Regression {
        seed: 116,
        instances: 20,
        days: 2.0,
        hook_timeout_s: 30,
        imds_lag_s: 5,
        peak_utilisation: 0.9,
        what: "IMDS down during a scale-in: a 30 s fallback describe noticed Terminating:Wait 29.5 s in and a 30 s hook expired",
    },
    Regression {
        seed: 60,
        instances: 20,
        days: 2.0,
        hook_timeout_s: 30,
        imds_lag_s: 5,
        peak_utilisation: 0.9,
        what: "the same with a one-job listener",
    },
];

#[test]
fn regression_seeds() {
    for r in REGRESSIONS {
        let mut cfg = SimConfig::fleet(r.seed, r.instances, r.days);
        cfg.hook_timeout = std::time::Duration::from_secs(r.hook_timeout_s);
        cfg.imds_lag = std::time::Duration::from_secs(r.imds_lag_s);
        cfg.peak_utilisation = r.peak_utilisation;
        cfg.faults = Faults {
            throttle_rate: 0.1,
            error_rate: 0.05,
            imds_outages_per_day: 4.0,
            agent_crashes_per_day: 4.0,
            runner_crashes_per_day: 1.0,
            spot_interruptions_per_day: 1.0,
        };
        let report = simulate(&cfg, &OURS);
        assert!(
            report.violation_list.is_empty(),
            "regression '{}' (seed {}): {:?}",
            r.what,
            r.seed,
            report.violation_list
        );
    }
}
