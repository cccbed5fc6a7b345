//! The simulation's promises: determinism, the invariants over many seeds, a checker that catches
//! strategies breaking them, and the comparison the README reports.

use lifecycle_sim::strategy::{naive::Naive, runner_lifecycle::RunnerLifecycle, source_pr::SourcePr};
use lifecycle_sim::{driver, simulate, sweep, Faults, HandoverOutcomes, SimConfig, Strategy, Unacquired};

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
        throttle_episodes_per_day: 2.0,
        stop_path_failure_rate: 0.01,
        github_error_rate: 0.02,
        github_rate_limit_episodes_per_day: 2.0,
    };
    cfg
}

/// runner-lifecycle in each listener mode: JIT (the default), persistent, one-job.
const OURS: [Strategy; 3] = [
    Strategy::RunnerLifecycle,
    Strategy::RunnerLifecyclePersistent,
    Strategy::RunnerLifecycleOnce,
];

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
    // 40 seeds x 3 strategies x 2 days of a 30-instance fleet with heavy faults.
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
    let mut cfg = small(5);
    // The rival designs run upstream's service-mode listener (as `Strategy::listener_mode` says).
    cfg.listener_mode = lifecycle_core::ListenerMode::Persistent;
    let naive = driver::run_checked::<Naive>(&cfg, true);
    assert!(
        naive.violations.iter().any(|v| v.what.contains("Cancelled")),
        "{:?}",
        naive.violations
    );
    let source = driver::run_checked::<SourcePr>(&cfg, true);
    // Its stop path cancels the jobs dispatched in the ~11 s between Terminating:Wait and the stop.
    assert!(
        source.violations.iter().any(|v| v.what.contains("Cancelled")),
        "{:?}",
        source.violations
    );
    // A violation names its strategy and seed, so the failing world can be re-run.
    let first = naive.violations[0].to_string();
    assert!(first.starts_with("naive seed 5 at "), "{first}");
    let ours = driver::run_checked::<RunnerLifecycle>(&cfg, true);
    assert!(ours.violations.is_empty(), "{:?}", ours.violations);
    cfg.listener_mode = lifecycle_core::ListenerMode::default();
    let ours = driver::run_checked::<RunnerLifecycle>(&cfg, true);
    assert!(ours.violations.is_empty(), "JIT: {:?}", ours.violations);
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

/// The race this project exists for must be visible: a host picked for scale-in keeps its listener in
/// the broker's pool until something stops it, so jobs land on it after the pick, more of them the
/// longer the host takes to notice (IMDS lag), and the source PR's ~11 s stop path cancels them.
#[test]
fn picked_hosts_keep_taking_jobs_until_stopped() {
    let at_lag = |lag: u64| {
        let mut cfg = SimConfig::fleet(42, 60, 3.0);
        cfg.imds_lag = std::time::Duration::from_secs(lag);
        simulate(&cfg, &[Strategy::RunnerLifecycle, Strategy::SourcePr])
    };
    let (quick, slow) = (at_lag(0), at_lag(30));
    let after_pick = |r: &lifecycle_sim::Report, i: usize| r.strategies[i].metrics.jobs_dispatched_after_pick;
    assert!(
        after_pick(&slow, 0) > 3 * after_pick(&quick, 0).max(1),
        "dispatches after the pick grow with IMDS lag: {} at 0 s, {} at 30 s",
        after_pick(&quick, 0),
        after_pick(&slow, 0)
    );
    // The source PR waits for its stop path whatever the lag; the jobs that land meanwhile are killed.
    assert!(after_pick(&quick, 1) > 100, "{}", after_pick(&quick, 1));
    assert!(quick.strategies[1].jobs_killed_by_stop > 20);
}

/// Jobs killed by the stop over the heavy-fault sweep, at the default outcomes (W0 and W1
/// re-queued after GitHub's documented 60 s, W2 lost, deletes refused while a job is assigned):
/// below the goal of 1 per 10,000 scale-ins in every listener mode (none, measured). The
/// perf-log latch closes W1 and W2 in every mode; the release closes W0 for JIT.
#[test]
fn jobs_killed_by_the_stop_stay_bounded() {
    let report = sweep(&small(2000), 24, &OURS);
    let rate = |i: usize| report.strategies[i].jobs_killed_by_stop_per_10k_scale_ins;
    let scale_ins = report.strategies[0].metrics.scale_ins;
    assert!(scale_ins > 1000, "{scale_ins}");
    assert!(rate(0) < 1.0, "JIT: {:.1} per 10,000 scale-ins", rate(0));
    assert!(rate(1) < 1.0, "persistent: {:.1} per 10,000 scale-ins", rate(1));
    assert!(rate(2) < 1.0, "one-job: {:.1} per 10,000 scale-ins", rate(2));
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
}

/// The handover race, on worlds where it happens. A host picked for scale-in keeps its idle JIT
/// listener in GitHub's dispatch pool until the agent sees the pick (IMDS lag plus a poll); a job
/// dispatched then reaches the listener in steps (W0 in transit, W1 acknowledge and acquire, W2 the
/// first renewal, then the worker), and a SIGINT before the worker loses it. Unguarded (the agent
/// as it was before the handover guard: only the worker is looked at), stops land in W1 and W2 and
/// lose jobs whenever GitHub does not re-queue them (here every window's job counts as lost, the
/// pessimistic reading, so W1 shows too). Guarded, the perf-log latch closes W1 and W2 (the
/// listener wrote `MessageReceived_RunnerJobRequest` before it acknowledged), and the release of
/// the registration closes W0 (GitHub refuses to delete a runner with an assigned job, and a
/// deleted one is never assigned again): no loss in any window, on the same worlds. A seed that
/// breaks this is printed; add it to the list below as a regression.
#[test]
fn the_handover_guard_closes_the_windows_the_unguarded_agent_loses_jobs_in() {
    const SEEDS: [u64; 8] = [4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007];
    let mut unguarded_w12 = 0;
    let mut failing = Vec::new();
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.imds_lag = std::time::Duration::from_secs(10);
        cfg.handover = HandoverOutcomes::all(Unacquired::Lost);
        let r = simulate(&cfg, &[Strategy::RunnerLifecycle, Strategy::RunnerLifecycleUnguarded]);
        let (guarded, unguarded) = (&r.strategies[0].metrics, &r.strategies[1].metrics);
        unguarded_w12 += unguarded.jobs_killed_in_window[1] + unguarded.jobs_killed_in_window[2];
        let k = guarded.jobs_killed_in_window;
        if k[1] + k[2] + k[3] > 0 || guarded.jobs_cancelled > 0 || !r.violation_list.is_empty() {
            failing.push((seed, k, r.violation_list.clone()));
        }
        // At the default outcomes (W0 and W1 re-queued after 60 s, W2 lost) nothing at all.
        cfg.handover = HandoverOutcomes::default();
        let d = simulate(&cfg, &[Strategy::RunnerLifecycle]);
        if d.strategies[0].jobs_killed_by_stop > 0 || !d.violation_list.is_empty() {
            failing.push((
                seed,
                d.strategies[0].metrics.jobs_killed_in_window,
                d.violation_list.clone(),
            ));
        }
    }
    assert!(
        unguarded_w12 > 0,
        "the world must produce the loss the guard prevents (unguarded, W1 + W2)"
    );
    assert!(
        failing.is_empty(),
        "guarded losses (seed, W0..W3, violations): {failing:?}"
    );
}

/// Common random numbers: every strategy faces the same jobs and the same per-instance fault schedule.
#[test]
fn strategies_face_the_same_world() {
    let report = simulate(&small(11), &Strategy::ALL);
    let jobs: Vec<u64> = report.strategies.iter().map(|s| s.metrics.jobs_total).collect();
    assert!(jobs.windows(2).all(|w| w[0] == w[1]), "{jobs:?}");
    let episodes: Vec<u64> = report.strategies.iter().map(|s| s.metrics.throttle_episodes).collect();
    assert!(episodes.windows(2).all(|w| w[0] == w[1]), "{episodes:?}");
    // Spot notices hit instance indices, not strategies; fleets differ a little in how many instances
    // they launch, so the counts are close rather than equal.
    // (The demand-scaling strategy launches more instances, so it is left out of this comparison.)
    let spot: Vec<u64> = report
        .strategies
        .iter()
        .filter(|s| s.scaling == "idle-alarms")
        .map(|s| s.metrics.spot_interruptions)
        .collect();
    let (lo, hi) = (
        spot.iter().min().copied().unwrap_or(0),
        spot.iter().max().copied().unwrap_or(0),
    );
    assert!(hi - lo <= hi / 4 + 2, "{spot:?}");
}

/// A sweep's figures do not depend on how the seeds were split between threads.
#[test]
fn a_sweep_equals_the_sum_of_its_seeds() {
    let cfg = small(300);
    let whole = sweep(&cfg, 20, &[Strategy::RunnerLifecycle]);
    let mut jobs = 0;
    let mut killed = 0;
    for k in 0..20 {
        let mut c = cfg.clone();
        c.seed = 300 + k;
        let r = simulate(&c, &[Strategy::RunnerLifecycle]);
        jobs += r.strategies[0].metrics.jobs_total;
        killed += r.strategies[0].jobs_killed_by_stop;
    }
    assert_eq!(whole.strategies[0].metrics.jobs_total, jobs);
    assert_eq!(whole.strategies[0].jobs_killed_by_stop, killed);
    assert_eq!(whole.seeds, 20);
}

/// Warm-pool trims stop in `Warmed:Terminating:Wait` with no agent; only a central handler completes
/// them. The naive design has none and each trim waits out its HeartbeatTimeout.
#[test]
fn warm_pool_trims_need_a_central_handler() {
    let mut cfg = SimConfig::fleet(9, 30, 2.0);
    cfg.warm_pool = 5;
    cfg.warm_trims_per_day = 2.0;
    let report = simulate(&cfg, &[Strategy::RunnerLifecycle, Strategy::Naive]);
    let (ours, naive) = (&report.strategies[0].metrics, &report.strategies[1].metrics);
    assert!(ours.warm_trims > 5, "{}", ours.warm_trims);
    assert_eq!(ours.warm_trims_timed_out, 0);
    assert!(ours.warm_trims_completed >= ours.warm_trims - 1);
    assert!(naive.warm_trims_timed_out > 0);
    assert!(naive.warm_trim_wait_seconds > 100.0 * ours.warm_trim_wait_seconds.max(1.0));
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
}

/// With `unacquired = requeue`, a job handed to a stopping listener is offered again, not lost. The
/// persistent listener: in this world its next-job race hands jobs to stopping listeners (the JIT
/// listener's idle-listener race happens not to fire in it).
#[test]
fn unacquired_jobs_can_be_requeued() {
    let mut cfg = SimConfig::fleet(21, 60, 3.0);
    cfg.imds_lag = std::time::Duration::from_secs(30);
    cfg.handover = HandoverOutcomes::all(Unacquired::Lost);
    let lost = simulate(&cfg, &[Strategy::RunnerLifecyclePersistent]);
    cfg.handover = HandoverOutcomes::all(Unacquired::REQUEUE_60);
    let requeued = simulate(&cfg, &[Strategy::RunnerLifecyclePersistent]);
    let (a, b) = (&lost.strategies[0].metrics, &requeued.strategies[0].metrics);
    assert_eq!(a.jobs_requeued, 0);
    assert!(b.jobs_requeued > 0);
    assert!(b.jobs_lost_in_stop_window <= a.jobs_lost_in_stop_window);
}

/// The source PR's zombie: a stop path that never reaches the host leaves it heartbeated in
/// Terminating:Wait until the lifecycle action's global timeout.
#[test]
fn a_lost_stop_path_makes_the_source_pr_a_zombie() {
    let mut cfg = SimConfig::fleet(3, 30, 4.0);
    cfg.faults = Faults::none();
    cfg.faults.stop_path_failure_rate = 0.05;
    let report = simulate(&cfg, &[Strategy::RunnerLifecycle, Strategy::SourcePr]);
    let (ours, pr) = (&report.strategies[0].metrics, &report.strategies[1].metrics);
    assert!(pr.stop_paths_lost > 0);
    assert!(
        pr.hooks_hit_global_timeout > 0,
        "zombies heartbeated to the global timeout"
    );
    assert_eq!(ours.hooks_hit_global_timeout, 0, "the agent needs no stop path");
    assert!(pr.terminating_idle_seconds > 20.0 * ours.terminating_idle_seconds);
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
            ..Faults::default()
        };
        let report = simulate(&cfg, &OURS);
        assert_eq!(report.strategies.len(), 3, "JIT, persistent and one-job");
        assert!(
            report.violation_list.is_empty(),
            "regression '{}' (seed {}): {:?}",
            r.what,
            r.seed,
            report.violation_list
        );
    }
}

/// Seed 293 (20 instances, 1 day, default faults): a job was delivered to a host 50 ms before its IMDS
/// poll showed the scale-in, and the /proc scan that saw the worker fell on the same instant but after
/// the IMDS reading. The agent stopped a listener it believed idle: the stop window, which the world
/// used to misfile as a cancel because the worker was "old enough" to have been seen.
#[test]
fn regression_seed_293_same_instant_observations() {
    let report = simulate(&SimConfig::fleet(293, 20, 1.0), &OURS);
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
    for s in &report.strategies {
        assert_eq!(s.metrics.jobs_cancelled, 0, "{}", s.name);
    }
}

/// The controller's demand scaling against the source PR's idle alarms, same jobs, both with the
/// agent's default (JIT) listener: a far lower p95 queue wait at fewer idle instance-hours on the
/// default fleet (100 instances, a week). It scales in more often, and each scale-in is one more
/// exposure to the idle-listener race; the README reports that trade-off.
#[test]
fn demand_scaling_cuts_queue_wait_and_idle_time() {
    let report = simulate(
        &SimConfig::fleet(42, 100, 7.0),
        &[Strategy::RunnerLifecycle, Strategy::RunnerLifecycleDemand],
    );
    let (alarms, demand) = (&report.strategies[0], &report.strategies[1]);
    assert_eq!((alarms.scaling, demand.scaling), ("idle-alarms", "demand"));
    assert!(
        demand.queue_wait_p95_s * 3.0 < alarms.queue_wait_p95_s,
        "{} vs {}",
        demand.queue_wait_p95_s,
        alarms.queue_wait_p95_s
    );
    assert!(demand.idle_instance_hours < alarms.idle_instance_hours);
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
}

/// Startup under throttling: every agent reads its identity and discovers its group through the
/// world's faulty Auto Scaling API (lifecycle-core `Startup`, jittered backoff). With most calls
/// throttled the fleet still starts, serves its jobs and keeps every invariant.
#[test]
fn startup_under_heavy_throttling() {
    let mut cfg = SimConfig::fleet(11, 20, 1.0);
    cfg.faults = Faults {
        throttle_rate: 0.6,
        error_rate: 0.05,
        imds_outages_per_day: 4.0,
        agent_crashes_per_day: 4.0,
        throttle_episodes_per_day: 4.0,
        ..Faults::default()
    };
    let report = simulate(&cfg, &OURS);
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
    for s in &report.strategies {
        assert_eq!(s.metrics.jobs_cancelled, 0, "{}", s.name);
        assert!(
            s.metrics.jobs_succeeded > 100,
            "{}: {}",
            s.name,
            s.metrics.jobs_succeeded
        );
    }
}

/// Seeds 1710, 5079 and 6913 (20 instances, 1 day, default faults): a restarted agent's discovery
/// was throttled, its startup backed off up to 13 s, and the scale-in came meanwhile; the drain
/// waited for the retry. The world now allows for a pending startup retry, as it does for an agent
/// restart or an IMDS outage already under way.
#[test]
fn regression_seeds_startup_backoff_during_a_scale_in() {
    for seed in [1710, 5079, 6913] {
        // Every runner-lifecycle strategy: JIT, unguarded, persistent, one-job, demand.
        let report = simulate(&SimConfig::fleet(seed, 20, 1.0), &Strategy::ALL[..5]);
        assert!(
            report.violation_list.is_empty(),
            "seed {seed}: {:?}",
            report.violation_list
        );
    }
}

/// `runner-lifecycle` is always the agent's default configuration; the other modes carry a suffix.
#[test]
fn strategy_names_follow_the_agents_default() {
    let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "runner-lifecycle",
            "runner-lifecycle-unguarded",
            "runner-lifecycle-persistent",
            "runner-lifecycle-once",
            "runner-lifecycle-demand",
            "runner-lifecycle-one-per-instance",
            "source-pr",
            "naive"
        ]
    );
    for s in Strategy::ALL {
        assert_eq!(Strategy::from_name(s.name()), Some(s));
    }
    use lifecycle_core::ListenerMode;
    assert_eq!(Strategy::RunnerLifecycle.listener_mode(), ListenerMode::default());
    assert_eq!(Strategy::RunnerLifecycleDemand.listener_mode(), ListenerMode::default());
    assert_eq!(
        Strategy::RunnerLifecycleDemand.scaling(),
        lifecycle_sim::config::Scaling::Demand
    );
    assert_eq!(
        Strategy::RunnerLifecyclePersistent.listener_mode(),
        ListenerMode::Persistent
    );
    assert_eq!(Strategy::RunnerLifecycleOnce.listener_mode(), ListenerMode::OneJob);
    let report = simulate(&SimConfig::fleet(5, 20, 0.5), &Strategy::ALL);
    let reported: Vec<&str> = report.strategies.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(reported, names, "reports carry the same names");
}

/// The new per-strategy figures: job end to serving again, Auto Scaling and GitHub calls per job.
/// A persistent listener polls again the moment its worker exits (0 s); a one-job or JIT listener
/// exits and a new one starts (seconds); JIT mints one config per listener, so about one GitHub call
/// per job, plus the controller's describe per mint.
#[test]
fn serving_gaps_and_calls_per_job_by_listener_mode() {
    let mut cfg = SimConfig::fleet(31, 30, 2.0);
    cfg.faults = Faults::none();
    let report = simulate(&cfg, &Strategy::ALL);
    let by = |name: &str| report.strategies.iter().find(|s| s.name == name).cloned().expect("ran");
    let (jit, persistent, once, pr) = (
        by("runner-lifecycle"),
        by("runner-lifecycle-persistent"),
        by("runner-lifecycle-once"),
        by("source-pr"),
    );
    assert_eq!(persistent.job_end_to_serving_p95_s, 0.0);
    assert_eq!(pr.job_end_to_serving_p95_s, 0.0);
    for s in [&jit, &once] {
        assert!(s.metrics.serve_gaps() > 1000, "{}: {}", s.name, s.metrics.serve_gaps());
        // Listener exit (0.3 s) + a new listener's session (2 to 5 s), the config already held.
        assert!(
            (2.0..6.0).contains(&s.job_end_to_serving_p50_s) && s.job_end_to_serving_p95_s < 6.0,
            "{}: {} / {}",
            s.name,
            s.job_end_to_serving_p50_s,
            s.job_end_to_serving_p95_s
        );
    }
    for s in [&persistent, &once, &pr] {
        assert_eq!(s.metrics.github_calls, 0, "{}", s.name);
        assert_eq!(s.github_calls_per_job, 0.0, "{}", s.name);
        assert_eq!(s.metrics.jit_configs_minted, 0, "{}", s.name);
    }
    let m = &jit.metrics;
    // No faults: one GitHub call and one controller describe per mint, every mint answered; the
    // releases before stops add a GET and a DELETE each.
    assert_eq!(m.github_calls - m.github_release_calls, m.jit_configs_minted);
    assert_eq!(m.github_release_calls, 2 * m.releases);
    assert_eq!(m.controller_asg_calls, m.jit_configs_minted + m.mints_refused);
    assert_eq!(m.mints_failed, 0);
    let mints_per_job = (m.github_calls - m.github_release_calls) as f64 / m.jobs_total as f64;
    assert!(
        (1.0..1.2).contains(&mints_per_job),
        "one mint per job, plus configs never used: {mints_per_job}"
    );
    assert!(jit.github_calls_per_job > mints_per_job, "and the releases");
    // Unused: a registration whose idle listener was stopped by a scale-in, or a config held by a
    // host that then drained.
    assert!(m.jit_configs_unused > 0 && m.jit_configs_unused <= m.jit_configs_minted);
    assert!(m.jit_configs_unused <= m.scale_ins + m.mints_refused + 10, "{m:?}");
    let expected = (m.asg_api_calls as f64) / (m.jobs_total as f64);
    assert!((jit.asg_calls_per_job - expected).abs() < 1e-9);
    assert!(
        jit.asg_calls_per_job > persistent.asg_calls_per_job,
        "the controller's describes"
    );
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
}

/// The controller refuses a host that is not InService: a host picked for scale-in whose agent has
/// not yet seen it (IMDS lag) and prefetches for a job dispatched after the pick is refused, so no
/// registration is minted for a listener that will never run.
#[test]
fn the_controller_refuses_hosts_not_in_service() {
    let mut cfg = SimConfig::fleet(21, 60, 3.0);
    cfg.faults = Faults::none();
    cfg.imds_lag = std::time::Duration::from_secs(30);
    let report = simulate(&cfg, &[Strategy::RunnerLifecycle]);
    let m = &report.strategies[0].metrics;
    assert!(m.jobs_dispatched_after_pick > 0);
    assert!(m.mints_refused > 0, "{m:?}");
    assert_eq!(m.mints_failed, 0);
    assert!(report.violation_list.is_empty(), "{:?}", report.violation_list);
}

/// GitHub trouble: rate-limit episodes refuse every mint for 1 to 15 minutes and 5xx fail requests.
/// The controller's client waits out short Retry-Afters and retries 5xx; the rest reach the agent,
/// whose core backs off and retries. Hosts wait longer to serve again, but nothing is lost and every
/// invariant holds.
#[test]
fn github_faults_delay_serving_but_lose_nothing() {
    let mut quiet = SimConfig::fleet(8, 30, 2.0);
    quiet.faults = Faults::none();
    let mut stormy = quiet.clone();
    stormy.faults.github_error_rate = 0.2;
    stormy.faults.github_rate_limit_episodes_per_day = 24.0;
    let a = simulate(&quiet, &[Strategy::RunnerLifecycle]);
    let b = simulate(&stormy, &[Strategy::RunnerLifecycle]);
    let (a, b) = (&a.strategies[0], &b.strategies[0]);
    assert!(b.metrics.github_rate_limit_episodes > 20);
    assert!(b.metrics.mints_failed > 0);
    assert!(b.github_calls_per_job > a.github_calls_per_job);
    assert!(b.job_end_to_serving_p95_s > a.job_end_to_serving_p95_s);
    assert_eq!(b.metrics.jobs_cancelled + b.metrics.jobs_failed, 0);
    assert_eq!(b.violations, 0);
}

/// Demand scaling that picks its victims (`--demand-scale-in victims`): the controller deletes an
/// idle host's registration before it terminates the host with decrement, skips a host GitHub
/// refuses (a job assigned), and answers the agent's own release of it from memory. On the same
/// world it kills no job, terminates only hosts it released, and keeps every invariant; its
/// capacity follows demand as closely as lowering the desired capacity does.
#[test]
fn demand_scaling_can_pick_its_victims() {
    let mut cfg = small(6000);
    cfg.imds_lag = std::time::Duration::from_secs(0);
    let desired = sweep(&cfg, 4, &[Strategy::RunnerLifecycleDemand]);
    cfg.demand_scale_in = lifecycle_sim::DemandScaleIn::Victims;
    let victims = sweep(&cfg, 4, &[Strategy::RunnerLifecycleDemand]);
    let (d, v) = (&desired.strategies[0], &victims.strategies[0]);
    assert!(victims.violation_list.is_empty(), "{:?}", victims.violation_list);
    assert_eq!(v.jobs_killed_by_stop, 0);
    let m = &v.metrics;
    assert!(m.victims_terminated > 100, "{m:?}");
    assert_eq!(
        m.victims_terminated, m.scale_ins,
        "every scale-in is a victim the controller released"
    );
    assert!(
        m.victims_refused > 0,
        "GitHub refuses hosts a job was assigned to meanwhile"
    );
    assert_eq!(
        m.releases_busy + m.releases_not_found,
        0,
        "the agent's release is answered from memory"
    );
    assert!(
        (v.instance_hours - d.instance_hours).abs() < 0.02 * d.instance_hours,
        "{} vs {}",
        v.instance_hours,
        d.instance_hours
    );
}

/// One instance per job: every job's host leaves the group and is replaced, the invariants hold
/// (the hook is completed at once, no heartbeat without a job), and nothing is lost to a stop.
#[test]
fn one_instance_per_job_replaces_each_host_after_its_job() {
    let report = sweep(&small(2000), 10, &[Strategy::RunnerLifecycleOnePerInstance]);
    let listing: Vec<String> = report.violation_list.iter().map(ToString::to_string).collect();
    assert!(listing.is_empty(), "violations:\n{}", listing.join("\n"));
    let s = &report.strategies[0];
    assert_eq!(s.name, "runner-lifecycle-one-per-instance");
    assert_eq!(s.metrics.jobs_cancelled, 0);
    assert_eq!(s.metrics.hooks_timed_out, 0);
    assert!(s.metrics.jobs_succeeded > 1_000, "{}", s.metrics.jobs_succeeded);
    // Nearly every job ends its host (a few hosts die of other causes first: spot, scale-in).
    assert!(
        s.metrics.group_leaves * 10 >= s.metrics.jobs_succeeded * 9,
        "leaves {} for {} jobs",
        s.metrics.group_leaves,
        s.metrics.jobs_succeeded
    );
    assert!(s.boots_per_job > 0.9, "{}", s.boots_per_job);
}
