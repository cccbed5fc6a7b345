//! `runner-lifecycle simulate`: the deterministic fleet simulation, strategies side by side.

use crate::exit_code::ExitCode;
use crate::simulate_ranges as ranges;
use clap::Args;
use lifecycle_sim::trace_file::{load_trace, TraceOptions};
use lifecycle_sim::{DemandScaleIn, Faults, HandoverOutcomes, ReleaseWhileAssigned, SimConfig, Strategy, Unacquired};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `simulate`. Defaults: a 100-instance fleet for a week, moderate faults, seed 42. Every
/// numeric flag's parser and allowed range come from `simulate_ranges::RANGES`, which also appends
/// the range to the flag's help.
#[derive(Debug, Args)]
#[command(mut_args = ranges::annotate)]
pub struct SimulateArgs {
    /// The seed every random choice derives from.
    #[arg(long, default_value_t = 42, value_parser = ranges::whole::<u64>("seed"))]
    seed: u64,
    /// Run this many consecutive seeds (from --seed) and aggregate.
    #[arg(long, default_value_t = 1, value_parser = ranges::whole::<u64>("seeds"))]
    seeds: u64,
    /// The group's maximum size.
    #[arg(long, default_value_t = 100, value_parser = ranges::whole::<u32>("instances"))]
    instances: u32,
    /// Simulated days (default 7; with --trace, as long as the trace).
    #[arg(long, value_parser = ranges::real("days"))]
    days: Option<f64>,
    /// Strategies to run (repeat the flag); default: all.
    #[arg(long = "strategy", value_parser = parse_strategy)]
    strategies: Vec<Strategy>,
    /// Seconds IMDS lags behind the Auto Scaling state.
    #[arg(long, default_value = "2", value_parser = ranges::seconds("imds-lag"))]
    imds_lag: Duration,
    /// The termination hook's HeartbeatTimeout in seconds.
    #[arg(long, default_value = "1800", value_parser = ranges::seconds("hook-timeout"))]
    hook_timeout: Duration,
    /// Share of the group busy at the weekday peak.
    #[arg(long, default_value_t = 0.6, value_parser = ranges::real("peak-utilisation"))]
    peak_utilisation: f64,
    /// Turn every fault off.
    #[arg(long)]
    no_faults: bool,
    /// Probability that an Auto Scaling call is throttled.
    #[arg(long, value_parser = ranges::real("throttle-rate"))]
    throttle_rate: Option<f64>,
    /// Probability that an Auto Scaling call fails with a 5xx.
    #[arg(long, value_parser = ranges::real("error-rate"))]
    error_rate: Option<f64>,
    /// IMDS outages per instance-day.
    #[arg(long, value_parser = ranges::real("imds-outages-per-day"))]
    imds_outages_per_day: Option<f64>,
    /// Agent crashes per instance-day.
    #[arg(long, value_parser = ranges::real("agent-crashes-per-day"))]
    agent_crashes_per_day: Option<f64>,
    /// Runner listener crashes per instance-day.
    #[arg(long, value_parser = ranges::real("runner-crashes-per-day"))]
    runner_crashes_per_day: Option<f64>,
    /// Spot interruptions per instance-day.
    #[arg(long, value_parser = ranges::real("spot-interruptions-per-day"))]
    spot_interruptions_per_day: Option<f64>,
    /// Account-wide throttling episodes per day (another tool draining the shared API token bucket).
    #[arg(long, value_parser = ranges::real("throttle-episodes-per-day"))]
    throttle_episodes_per_day: Option<f64>,
    /// Probability that a fire-and-forget stop path (EventBridge -> Lambda -> SSM) never stops the runner.
    #[arg(long, value_parser = ranges::real("stop-path-failure-rate"))]
    stop_path_failure_rate: Option<f64>,
    /// Probability that one GitHub request of the controller's JIT mint fails with a 5xx (it tries
    /// each request 3 times).
    #[arg(long, value_parser = ranges::real("github-error-rate"))]
    github_error_rate: Option<f64>,
    /// GitHub rate-limit episodes per day (1 to 15 minutes each): every mint is refused meanwhile.
    #[arg(long, value_parser = ranges::real("github-rate-limit-episodes-per-day"))]
    github_rate_limit_episodes_per_day: Option<f64>,
    /// Seconds until GitHub's REST busy flag shows a started job (fixed; default: uniform 25-60 s).
    #[arg(long, value_parser = ranges::seconds("busy-flag-lag"))]
    busy_flag_lag: Option<Duration>,
    /// Median seconds from scale-in to the source PR's `systemctl stop` (its CloudTrail timeline: 11).
    #[arg(long, default_value = "11", value_parser = ranges::seconds("event-to-stop"))]
    event_to_stop: Duration,
    /// What GitHub does with a job whose listener stops in any window of the handover (W0 to W2):
    /// `lost` (counted as killed by the stop) or `requeue:SECONDS` (offered again after that long).
    /// Sets all three windows; --handover-w0/-w1/-w2 override one each. `--unacquired lost` is the
    /// fully pessimistic reading.
    #[arg(long, value_parser = parse_unacquired)]
    unacquired: Option<Unacquired>,
    /// W0, the job message in transit on the long poll (default requeue:60, GitHub's documented
    /// re-queue of an assigned job nobody picks up).
    #[arg(long, value_name = "POLICY", value_parser = parse_unacquired)]
    handover_w0: Option<Unacquired>,
    /// W1, the message received, acknowledge/acquire in flight (default requeue:60).
    #[arg(long, value_name = "POLICY", value_parser = parse_unacquired)]
    handover_w1: Option<Unacquired>,
    /// W2, the job acquired, the worker not spawned (default lost: nothing completes it; requeue:600
    /// if GitHub re-queues it when its 10-minute lease lapses).
    #[arg(long, value_name = "POLICY", value_parser = parse_unacquired)]
    handover_w2: Option<Unacquired>,
    /// A registration delete while a job is assigned (W0 to W2): `refused` (GitHub refuses, or for
    /// JIT answers 404, see --release-not-found) or `accepted` (deleted; the job is left to its
    /// window's policy; an acquired job is still refused).
    #[arg(long, default_value = "refused", value_parser = parse_release_while_assigned)]
    release_while_assigned: ReleaseWhileAssigned,
    /// Probability that a refused delete of a JIT registration answers 404 (consumed by the
    /// assignment) rather than 422.
    #[arg(long, default_value_t = 0.5, value_parser = ranges::real("release-not-found"))]
    release_not_found: f64,
    /// Probability that one acquirejob attempt fails transiently (retried up to 5 attempts 5-15 s
    /// apart).
    #[arg(long, default_value_t = 0.01, value_parser = ranges::real("acquire-failure-rate"))]
    acquire_failure_rate: f64,
    /// Demand scaling: `desired` (lower the desired capacity, the group picks) or `victims` (the
    /// controller picks an idle host, deletes its registration, then terminates it with decrement).
    #[arg(long, default_value = "desired", value_parser = parse_demand_scale_in)]
    demand_scale_in: DemandScaleIn,
    /// Demand scaling: idle runners kept warm beyond demand (default: 1 per 100 instances, at least 1).
    #[arg(long, value_parser = ranges::whole::<u32>("demand-idle-target"))]
    demand_idle_target: Option<u32>,
    /// Demand scaling (strategy runner-lifecycle-demand): seconds demand must stay below capacity
    /// before capacity drops.
    #[arg(long, default_value = "900", value_parser = ranges::seconds("scale-in-after"))]
    scale_in_after: Duration,
    /// Demand scaling: share of workflow_job webhooks that never arrive (the minute's reconcile repairs
    /// them).
    #[arg(long, default_value_t = 0.01, value_parser = ranges::real("webhook-drop-rate"))]
    webhook_drop_rate: f64,
    /// Instances kept stopped in a warm pool (0: none).
    #[arg(long, default_value_t = 0, value_parser = ranges::whole::<u32>("warm-pool"))]
    warm_pool: u32,
    /// Warm-pool trims per pool instance-day.
    #[arg(long, default_value_t = 1.0, value_parser = ranges::real("warm-trims-per-day"))]
    warm_trims_per_day: f64,
    /// Replay job arrivals and durations from this CSV or JSONL file or pipe, within the size limits
    /// of docs/simulation-traces.md; the run lasts as long as the trace unless --days is given.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// With --trace: keep only jobs whose labels include all of these (comma-separated).
    #[arg(long, value_name = "LABELS", requires = "trace")]
    trace_labels: Option<String>,
    /// Print every event and decision of this instance to stderr (to study a failing seed); with
    /// --plot, also draw its timeline.
    #[arg(long, value_parser = ranges::whole::<u32>("trace-instance"))]
    trace_instance: Option<u32>,
    /// Write an SVG plot: jobs killed by the stop and idle Terminating:Wait seconds per scale-in per
    /// strategy, and the --trace-instance timeline.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of comparing strategies: run the first --strategy (default runner-lifecycle) on
    /// --seed and write the GitHub records its world leaves (github.json, fleet-events.jsonl,
    /// expected.json) to this directory, for `audit` against the GitHub test double (docs/audit.md).
    #[arg(long, value_name = "DIR")]
    export_github: Option<PathBuf>,
    /// With --export-github: the wall-clock time of the simulation's time zero (RFC 3339).
    #[arg(
        long,
        value_name = "TIME",
        requires = "export_github",
        default_value = "2026-11-02T00:00:00Z"
    )]
    export_start: String,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
        format!("unknown strategy '{s}'; choose from: {}", names.join(", "))
    })
}

fn parse_unacquired(s: &str) -> Result<Unacquired, String> {
    if s == "lost" {
        return Ok(Unacquired::Lost);
    }
    let secs = s
        .strip_prefix("requeue:")
        .ok_or_else(|| format!("'{s}' is neither 'lost' nor 'requeue:SECONDS'"))?;
    Ok(Unacquired::Requeue {
        after: ranges::get("unacquired").duration(secs)?,
    })
}

fn parse_release_while_assigned(s: &str) -> Result<ReleaseWhileAssigned, String> {
    match s {
        "refused" => Ok(ReleaseWhileAssigned::Refused),
        "accepted" => Ok(ReleaseWhileAssigned::Accepted),
        _ => Err(format!("'{s}' is neither 'refused' nor 'accepted'")),
    }
}

fn parse_demand_scale_in(s: &str) -> Result<DemandScaleIn, String> {
    match s {
        "desired" => Ok(DemandScaleIn::Desired),
        "victims" => Ok(DemandScaleIn::Victims),
        _ => Err(format!("'{s}' is neither 'desired' nor 'victims'")),
    }
}

impl SimulateArgs {
    fn config(&self) -> Result<SimConfig, String> {
        let mut cfg = SimConfig::fleet(self.seed, self.instances, self.days.unwrap_or(7.0));
        if let Some(path) = &self.trace {
            let opts = TraceOptions::from_label_list(self.trace_labels.as_deref().unwrap_or(""));
            let trace = load_trace(path, &opts).map_err(|e| format!("--trace {}: {e}", path.display()))?;
            if trace.skipped.total() > 0 {
                eprintln!("runner-lifecycle: trace {}: {}", path.display(), trace.skipped);
            }
            if self.days.is_none() {
                // Run as long as the trace, plus an hour for the last jobs to drain.
                cfg.duration = trace.span + Duration::from_secs(3600);
            }
            cfg.trace = Some(Arc::new(trace.jobs));
            cfg.trace_file = Some(path.display().to_string());
        }
        cfg.imds_lag = self.imds_lag;
        cfg.hook_timeout = self.hook_timeout;
        cfg.peak_utilisation = self.peak_utilisation;
        let mut f = if self.no_faults {
            Faults::none()
        } else {
            Faults::default()
        };
        let set = |field: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut f.throttle_rate, self.throttle_rate);
        set(&mut f.error_rate, self.error_rate);
        set(&mut f.imds_outages_per_day, self.imds_outages_per_day);
        set(&mut f.agent_crashes_per_day, self.agent_crashes_per_day);
        set(&mut f.runner_crashes_per_day, self.runner_crashes_per_day);
        set(&mut f.spot_interruptions_per_day, self.spot_interruptions_per_day);
        set(&mut f.throttle_episodes_per_day, self.throttle_episodes_per_day);
        set(&mut f.stop_path_failure_rate, self.stop_path_failure_rate);
        set(&mut f.github_error_rate, self.github_error_rate);
        set(
            &mut f.github_rate_limit_episodes_per_day,
            self.github_rate_limit_episodes_per_day,
        );
        cfg.faults = f;
        cfg.trace_instance = self.trace_instance;
        if let Some(lag) = self.busy_flag_lag {
            cfg.busy_flag_lag = (lag, lag);
        }
        cfg.event_to_stop = self.event_to_stop;
        let mut handover = self
            .unacquired
            .map_or_else(HandoverOutcomes::default, HandoverOutcomes::all);
        handover.w0 = self.handover_w0.unwrap_or(handover.w0);
        handover.w1 = self.handover_w1.unwrap_or(handover.w1);
        handover.w2 = self.handover_w2.unwrap_or(handover.w2);
        cfg.handover = handover;
        cfg.release_while_assigned = self.release_while_assigned;
        cfg.release_not_found = self.release_not_found;
        cfg.acquire_failure_rate = self.acquire_failure_rate;
        cfg.demand_scale_in = self.demand_scale_in;
        cfg.warm_pool = self.warm_pool;
        cfg.scale_in_after = self.scale_in_after;
        if let Some(n) = self.demand_idle_target {
            cfg.demand_idle_target = n;
        }
        cfg.webhook_drop_rate = self.webhook_drop_rate;
        cfg.warm_trims_per_day = self.warm_trims_per_day;
        Ok(cfg)
    }
}

/// Run the simulation and print the report.
pub fn run(args: &SimulateArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("runner-lifecycle: {e}");
            return ExitCode::Config;
        }
    };
    // The run's size: --seeds x --instances x the days (from --days or the trace) within budget.
    if let Err(e) = ranges::check_budget(args.seeds, args.instances, cfg.duration) {
        eprintln!("runner-lifecycle: {e}");
        return ExitCode::Usage;
    }
    let strategies = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.clone()
    };
    if let Some(dir) = &args.export_github {
        return export_github(&cfg, strategies.first().copied(), dir, &args.export_start);
    }
    let report = lifecycle_sim::sweep(&cfg, args.seeds, &strategies);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if let Some(path) = &args.plot {
        let svg = lifecycle_sim::plot::render_svg(&report.plot_input());
        let written = svg
            .map_err(|e| e.to_string())
            .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("runner-lifecycle: --plot {}: {e}", path.display());
            return ExitCode::Config;
        }
    }
    if report.violation_list.is_empty() {
        ExitCode::Ok
    } else {
        let seeds: std::collections::BTreeSet<u64> = report.violation_list.iter().map(|v| v.seed).collect();
        eprintln!(
            "runner-lifecycle: {} invariant violation(s); reproduce with --seed {} (failing seeds: {:?})",
            report.violation_list.len(),
            seeds.iter().next().copied().unwrap_or(args.seed),
            seeds
        );
        ExitCode::InvariantViolated
    }
}

/// `simulate --export-github DIR`.
fn export_github(
    cfg: &lifecycle_sim::SimConfig,
    strategy: Option<Strategy>,
    dir: &std::path::Path,
    start: &str,
) -> ExitCode {
    let Some(start) = lifecycle_github::time::parse_rfc3339(start) else {
        eprintln!("runner-lifecycle: --export-start `{start}` is not RFC 3339");
        return ExitCode::Config;
    };
    let strategy = strategy.unwrap_or(Strategy::RunnerLifecycle);
    let records = lifecycle_sim::github_export::github_records(cfg, strategy, start);
    if let Err(e) = records.write(dir) {
        eprintln!("runner-lifecycle: --export-github {}: {e}", dir.display());
        return ExitCode::Config;
    }
    println!("{}", records.expected);
    ExitCode::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use proptest::prelude::*;
    // The sim's `Strategy` comes in with `super::*`; proptest's is needed for its methods only.
    use proptest::strategy::Strategy as _;

    /// `simulate`'s flags on a command of their own.
    #[derive(Debug, Parser)]
    struct Simulate {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Simulate::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).map(|s| s.args)
    }

    /// Flags whose value is not a number (so they have no row in `simulate_ranges::RANGES`).
    const NOT_NUMERIC: [&str; 8] = [
        "strategy",
        "trace",
        "trace-labels",
        "plot",
        "release-while-assigned",
        "demand-scale-in",
        "export-github",
        "export-start",
    ];

    #[test]
    fn every_numeric_flag_has_a_row_and_its_help_shows_the_range() {
        let cmd = Simulate::command();
        cmd.clone().debug_assert();
        let mut numeric = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if !arg.get_action().takes_values() || NOT_NUMERIC.contains(&long) {
                continue;
            }
            numeric += 1;
            let range = ranges::get(long);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let note = format!("[allowed: {}]", range.allowed());
            assert!(help.contains(&note), "--{long}'s help lacks {note}: {help}");
        }
        assert_eq!(numeric, ranges::RANGES.len(), "every row is a flag of simulate");
    }

    #[test]
    fn the_defaults_are_the_simulations_defaults() {
        let args = parse(&[]).expect("defaults");
        assert_eq!(args.config().expect("config"), SimConfig::default());
    }

    /// Each row's bounds reach its flag: the bounds parse into a configuration, values beyond them
    /// are refused, and the error names the flag, the value and the range.
    #[test]
    fn every_flag_takes_its_bounds_and_refuses_beyond_them() {
        for r in ranges::RANGES {
            let (inside, outside) = r.edges();
            for v in inside {
                let flag = format!("--{}={}{v}", r.flag, r.keyword);
                let args = parse(&[&flag]).unwrap_or_else(|e| panic!("{flag}: {e}"));
                args.config().unwrap_or_else(|e| panic!("{flag}: {e}"));
            }
            for v in outside {
                let value = format!("{}{v}", r.keyword);
                let err = parse(&[&format!("--{}={value}", r.flag)]).expect_err(&value);
                assert_eq!(err.exit_code(), ExitCode::Usage as i32);
                let err = err.to_string();
                assert!(
                    err.contains(&format!("'{value}'")) && err.contains(&format!("--{}", r.flag)),
                    "{err}"
                );
                assert!(err.contains(&format!("allowed: {}", r.allowed())), "{err}");
            }
        }
    }

    #[test]
    fn the_four_values_that_used_to_panic_are_refused() {
        for (flag, value) in [
            ("--imds-lag", "2e19"),
            ("--event-to-stop", "1e300"),
            ("--scale-in-after", "1e300"),
            ("--busy-flag-lag", "1e300"),
            ("--agent-crashes-per-day", "1e-320"),
            ("--unacquired", "requeue:1e300"),
        ] {
            let err = parse(&[flag, value]).expect_err(value);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
            assert_eq!(err.exit_code(), ExitCode::Usage as i32);
        }
    }

    proptest! {
        /// Any text to any numeric flag: the flag parses into a configuration without panicking, or
        /// clap refuses it with a usage error.
        #[test]
        fn any_text_to_any_flag_configures_or_is_a_usage_error(
            row in 0..ranges::RANGES.len(),
            text in prop_oneof![
                any::<f64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                (-330i32..330).prop_map(|e| format!("1e{e}")),
                "[-+0-9.eEinfa ]{0,16}",
                any::<String>(),
            ],
        ) {
            let r = &ranges::RANGES[row];
            match parse(&[&format!("--{}={}{text}", r.flag, r.keyword)]) {
                Ok(args) => {
                    prop_assert!(args.config().is_ok());
                    let _ = ranges::check_budget(args.seeds, args.instances, Duration::from_secs(86_400));
                }
                Err(e) => prop_assert_eq!(e.exit_code(), ExitCode::Usage as i32, "{}", e),
            }
        }
    }
}
