//! `runner-lifecycle simulate` end to end: a replayed trace, the SVG plot, the JSON fields the README
//! documents, and clear errors (exit 3 for a bad trace, 2 for a bad flag or an oversized run).

mod common;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/traces/example.csv");

fn simulate(args: &[&str]) -> (i32, String, String) {
    let argv: Vec<&str> = ["simulate"].into_iter().chain(args.iter().copied()).collect();
    common::run(&argv)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rl-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn a_trace_replays_with_a_plot_and_the_documented_fields() {
    let svg = scratch("plot.svg");
    let svg_arg = svg.to_str().expect("utf-8 path");
    let (code, out, err) = simulate(&[
        "--trace",
        EXAMPLE,
        "--instances",
        "20",
        "--trace-instance",
        "3",
        "--plot",
        svg_arg,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    let strategies = report["strategies"].as_array().expect("strategies");
    // Every strategy, in the order (and with the names) the simulation's own test pins
    // (crates/sim/tests/sim.rs, `strategy_names_follow_the_agents_default`).
    let names: Vec<&str> = strategies.iter().filter_map(|s| s["name"].as_str()).collect();
    let all: Vec<&str> = lifecycle_sim::Strategy::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names, all);
    for s in strategies {
        // The example trace keeps 260 of its 269 rows (docs/simulation-traces.md).
        assert_eq!(s["jobs_total"], 260, "{s}");
        for field in [
            "jobs_killed_by_stop",
            "jobs_killed_by_stop_per_10k_scale_ins",
            "idle_wait_s_per_scale_in",
            "jobs_dispatched_after_pick",
            "queue_wait_p95_s",
            "instance_hours",
            "idle_instance_hours",
            "scaling",
            "job_end_to_serving_p50_s",
            "job_end_to_serving_p95_s",
            "asg_calls_per_job",
            "github_calls_per_job",
            "github_calls",
            "jit_configs_minted",
            "jit_configs_unused",
            "jobs_killed_by_stop_per_10k_scale_ins_ci95",
            "jobs_killed_by_stop_per_million_jobs",
            "jobs_killed_by_stop_per_million_jobs_ci95",
            "jobs_killed_in_window",
            "jobs_requeued_from_window",
            "releases",
            "github_release_calls",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
    }
    assert!(err.contains("skipped 9"), "the trace's skips are reported: {err}");
    let jit = &strategies[0];
    assert!(
        jit["github_calls_per_job"].as_f64() > Some(0.9),
        "JIT mints per job: {jit}"
    );
    let persistent = strategies
        .iter()
        .find(|s| s["name"] == "runner-lifecycle-persistent")
        .expect("persistent ran");
    assert_eq!(
        persistent["github_calls_per_job"], 0.0,
        "the persistent listener mints nothing"
    );
    let svg = std::fs::read_to_string(&svg).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("runner-lifecycle") && svg.contains("instance 3"),
        "timeline panel drawn"
    );
}

#[test]
fn a_label_filter_keeps_only_matching_jobs() {
    let (code, out, err) = simulate(&["--trace", EXAMPLE, "--trace-labels", "gpu", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["strategies"][0]["jobs_total"], 17);
}

#[test]
fn a_bad_trace_is_a_configuration_error() {
    let bad = scratch("bad.csv");
    std::fs::write(&bad, "queued_at,started_at,completed_at\nyesterday,now,later\n").expect("write");
    let (code, _, err) = simulate(&["--trace", bad.to_str().expect("utf-8 path")]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("line 2"), "{err}");
    let (code, _, err) = simulate(&["--trace", "/nonexistent/trace.csv"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let (code, _, err) = simulate(&["--unacquired", "sometimes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("requeue:SECONDS"), "{err}");
    let (code, _, err) = simulate(&["--trace-labels", "gpu"]);
    assert_eq!(code, 2, "--trace-labels needs --trace: {err}");
}

/// Values that used to panic (a `Duration` from an unbounded float) are usage errors that name the
/// flag, the value and the allowed range.
#[test]
fn values_the_simulation_cannot_hold_are_usage_errors() {
    for (flag, value, allowed) in [
        ("--imds-lag", "2e19", "allowed: 0 to 3600 s"),
        ("--event-to-stop", "1e300", "allowed: 0 to 7200 s"),
        ("--scale-in-after", "1e300", "allowed: 0 to 86400 s"),
        ("--busy-flag-lag", "1e300", "allowed: 0 to 3600 s"),
        (
            "--agent-crashes-per-day",
            "1e-300",
            "allowed: 0 (off), or 1e-9 to 1440 per instance-day",
        ),
        ("--days", "inf", "allowed: more than 0, up to 3650 days"),
        (
            "--unacquired",
            "requeue:NaN",
            "allowed: requeue:SECONDS, SECONDS 0 to 86400 s",
        ),
    ] {
        let (code, out, err) = simulate(&[flag, value, "--json"]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(out.is_empty(), "{flag} {value}: {out}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(&format!("'{value}'")), "{err}");
        assert!(err.contains(allowed), "{flag} {value}: {err}");
    }
}

#[test]
fn help_shows_each_flags_range() {
    let (code, out, _) = simulate(&["--help"]);
    assert_eq!(code, 0);
    for note in [
        "[allowed: 0 to 3600 s]",
        "[allowed: 1 to 100000 seeds]",
        "[allowed: 2 to 100000 instances]",
        "[allowed: more than 0, up to 3650 days]",
        "[allowed: 0 to 1]",
    ] {
        assert!(out.contains(note), "{note} missing:\n{out}");
    }
}

/// Each of --seeds, --instances and --days is bounded, and so is their product: no run can be asked
/// to last centuries.
#[test]
fn a_run_too_large_to_finish_is_a_usage_error() {
    // Not through `simulate`: a binary without the budget would run for centuries, so it gets a
    // minute to refuse, then is killed.
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "simulate",
            "--seeds",
            "100000",
            "--instances",
            "100000",
            "--days",
            "3650",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run runner-lifecycle");
    let mut waited = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if waited >= 600 {
            child.kill().expect("kill");
            panic!("the run was not refused within a minute");
        }
        #[allow(clippy::disallowed_methods)] // a test waiting on a real process, not the simulator
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("at most 365000000"), "{err}");
    for (flag, value) in [("--seeds", "100001"), ("--instances", "100001"), ("--days", "3651")] {
        let (code, _, err) = simulate(&[flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
    }
}

/// A trace is read as it is parsed and refused past its limits: `/dev/zero` (one endless line) and a
/// file over `MAX_TRACE_BYTES` (sparse, so it takes no disk) are configuration errors, not a process
/// that grows until memory runs out.
#[cfg(unix)]
#[test]
fn an_endless_or_oversized_trace_is_refused() {
    use lifecycle_sim::trace_file::{MAX_LINE_BYTES, MAX_TRACE_BYTES};
    let (code, out, err) = simulate(&["--trace", "/dev/zero", "--json"]);
    assert_eq!(code, 3, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("--trace /dev/zero: line 1: the line is longer than") && err.contains(&MAX_LINE_BYTES.to_string()),
        "{err}"
    );
    let big = scratch("oversized.jsonl");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(MAX_TRACE_BYTES + 1).expect("sparse file");
    let (code, out, err) = simulate(&["--trace", big.to_str().expect("utf-8 path"), "--json"]);
    std::fs::remove_file(&big).expect("clean up");
    assert_eq!(code, 3, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("more than the {MAX_TRACE_BYTES} bytes a trace may hold")),
        "{err}"
    );
}
