//! `runner-lifecycle simulate`: the deterministic fleet simulation, strategies side by side.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_sim::{Faults, SimConfig, Strategy};
use std::time::Duration;

/// Flags of `simulate`. Defaults: a 100-instance fleet for a week, moderate faults, seed 42.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The seed every random choice derives from.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run this many consecutive seeds (from --seed) and aggregate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The group's maximum size.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    instances: u32,
    /// Simulated days.
    #[arg(long, default_value_t = 7.0, value_parser = positive_days)]
    days: f64,
    /// Strategies to run (repeat the flag); default: all.
    #[arg(long = "strategy", value_parser = parse_strategy)]
    strategies: Vec<Strategy>,
    /// Seconds IMDS lags behind the Auto Scaling state.
    #[arg(long, default_value_t = 2.0, value_parser = non_negative)]
    imds_lag: f64,
    /// The termination hook's HeartbeatTimeout in seconds (AWS: 30 to 7200).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(30..=7200))]
    hook_timeout: u64,
    /// Share of the group busy at the weekday peak (0 to 1).
    #[arg(long, default_value_t = 0.6, value_parser = unit_interval)]
    peak_utilisation: f64,
    /// Turn every fault off.
    #[arg(long)]
    no_faults: bool,
    /// Probability that an Auto Scaling call is throttled.
    #[arg(long, value_parser = unit_interval)]
    throttle_rate: Option<f64>,
    /// Probability that an Auto Scaling call fails with a 5xx.
    #[arg(long, value_parser = unit_interval)]
    error_rate: Option<f64>,
    /// IMDS outages per instance-day.
    #[arg(long, value_parser = non_negative)]
    imds_outages_per_day: Option<f64>,
    /// Agent crashes per instance-day.
    #[arg(long, value_parser = non_negative)]
    agent_crashes_per_day: Option<f64>,
    /// Runner listener crashes per instance-day.
    #[arg(long, value_parser = non_negative)]
    runner_crashes_per_day: Option<f64>,
    /// Spot interruptions per instance-day.
    #[arg(long, value_parser = non_negative)]
    spot_interruptions_per_day: Option<f64>,
    /// Print every event and decision of this instance to stderr (to study a failing seed).
    #[arg(long)]
    trace_instance: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
        format!("unknown strategy '{s}'; choose from: {}", names.join(", "))
    })
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("'{s}' is not a number"))
        .and_then(|v| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("'{s}' is not a finite number"))
            }
        })
}

fn non_negative(s: &str) -> Result<f64, String> {
    parse_f64(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{v} must not be negative"))
        }
    })
}

fn positive_days(s: &str) -> Result<f64, String> {
    parse_f64(s).and_then(|v| {
        if v > 0.0 && v <= 3650.0 {
            Ok(v)
        } else {
            Err(format!("{v} days is out of range (0, 3650]"))
        }
    })
}

fn unit_interval(s: &str) -> Result<f64, String> {
    parse_f64(s).and_then(|v| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} must lie in [0, 1]"))
        }
    })
}

impl SimulateArgs {
    fn config(&self) -> SimConfig {
        let mut cfg = SimConfig::fleet(self.seed, self.instances, self.days);
        cfg.imds_lag = Duration::from_secs_f64(self.imds_lag);
        cfg.hook_timeout = Duration::from_secs(self.hook_timeout);
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
        cfg.faults = f;
        cfg.trace_instance = self.trace_instance;
        cfg
    }
}

/// Run the simulation and print the report.
pub fn run(args: &SimulateArgs) -> ExitCode {
    let cfg = args.config();
    let strategies = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.clone()
    };
    let report = lifecycle_sim::sweep(&cfg, args.seeds, &strategies);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
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
