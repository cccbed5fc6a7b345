//! `runner-lifecycle audit`: how many of the fleet's jobs were lost in a period, why, and whom to
//! blame, from GitHub's own records (crates/github `audit` fetches, `loss` classifies;
//! docs/audit.md). Credentials are read exactly as the controller reads them.

use crate::cmd_controller::{credentials, CredentialSources};
use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_github::audit::{AuditJob, EtagCache, Fetcher};
use lifecycle_github::loss::{needs_annotations, Cause, FleetEvent, FleetFilter, FleetRecord, LossReport};
use lifecycle_github::time::{format_rfc3339, parse_rfc3339};
use lifecycle_github::{GitHubClient, Options, Scope, Secret};
use lifecycle_sim::plot::{Series, SeriesPanel, SeriesPlot, SeriesStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Audit the fleet's job losses from GitHub's records.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The organisation or repository: https://github.com/ORG or https://github.com/OWNER/REPO.
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_GITHUB_URL")]
    github_url: String,
    /// GitHub API base URL [default: from the URL].
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// A file holding a GitHub token (alternative to RUNNER_LIFECYCLE_GITHUB_TOKEN).
    #[arg(long, value_name = "PATH", env = "RUNNER_LIFECYCLE_GITHUB_TOKEN_FILE")]
    github_token_file: Option<PathBuf>,
    /// GitHub App id (with the installation id and a private key).
    #[arg(long, value_name = "ID", env = "RUNNER_LIFECYCLE_GITHUB_APP_ID")]
    github_app_id: Option<String>,
    /// GitHub App installation id.
    #[arg(long, value_name = "ID", env = "RUNNER_LIFECYCLE_GITHUB_APP_INSTALLATION_ID")]
    github_app_installation_id: Option<u64>,
    /// A file holding the App's PEM private key (alternative to RUNNER_LIFECYCLE_GITHUB_APP_KEY).
    #[arg(long, value_name = "PATH", env = "RUNNER_LIFECYCLE_GITHUB_APP_KEY_FILE")]
    github_app_key_file: Option<PathBuf>,
    /// A Secrets Manager secret holding the GitHub credentials (as the controller takes it); needs
    /// --region.
    #[arg(long, value_name = "SECRET", env = "RUNNER_LIFECYCLE_GITHUB_CREDENTIALS_SECRET")]
    github_credentials_secret: Option<String>,
    /// AWS region (only for --github-credentials-secret).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Start of the period: RFC 3339 or YYYY-MM-DD (UTC) [default: seven days before --until].
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// End of the period (exclusive): RFC 3339 or YYYY-MM-DD [default: now].
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The fleet's runner name prefix (JIT names); empty to match by group or label only.
    #[arg(long, value_name = "PREFIX", default_value = lifecycle_controller::settings::DEFAULT_JIT_PREFIX)]
    runner_prefix: String,
    /// A runner group of the fleet (repeat or comma-separate).
    #[arg(long = "runner-group", value_name = "NAME", value_delimiter = ',')]
    runner_groups: Vec<String>,
    /// `runs-on` labels the fleet's jobs all carry (comma-separated): also catches jobs no runner took.
    #[arg(long, value_name = "LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// What the fleet knows of its instances: one JSON object a line,
    /// {"instance_id": "i-...", "fate": "scale_in"|"spot"|"host_crash"|"launch", "at": RFC 3339}
    /// ("event" is read as "fate"). Launches and ends give idle instance-hours.
    #[arg(long, value_name = "FILE")]
    fleet_events: Option<PathBuf>,
    /// Scale-ins in the period, when known from elsewhere (overrides the fleet events' count).
    #[arg(long, value_name = "N")]
    scale_ins: Option<u64>,
    /// Keep the pages' ETags here between audits (conditional requests; 304s are free).
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Write the fleet's completed jobs as a `simulate --trace` CSV.
    #[arg(long, value_name = "FILE")]
    export_trace: Option<PathBuf>,
    /// Write an SVG picture of the period: fleet losses by cause and queue wait over time.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Parse `--since`/`--until`: RFC 3339, or a date (midnight UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.len() == 10 {
        return lifecycle_github::time::parse_rfc3339(&format!("{t}T00:00:00Z"))
            .ok_or_else(|| format!("`{t}` is not YYYY-MM-DD"));
    }
    lifecycle_github::time::parse_rfc3339(t).ok_or_else(|| format!("`{t}` is not an RFC 3339 time or YYYY-MM-DD"))
}

/// The fleet's completed jobs as a `simulate --trace` CSV (crates/sim trace_file.rs, CSV format):
/// `id,queued_at,started_at,completed_at,labels,conclusion,runner_name`. A job no runner took
/// (null `runner_name`) is written with an empty `started_at` (GitHub's is no runner's start), so
/// the trace reader counts it as `not_started` and leaves it out.
pub fn trace_csv<'a>(jobs: impl IntoIterator<Item = &'a AuditJob>) -> String {
    let mut out = String::from("id,queued_at,started_at,completed_at,labels,conclusion,runner_name\n");
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for j in jobs {
        let (Some(q), Some(s), Some(c)) = (&j.created_at, &j.started_at, &j.completed_at) else {
            continue;
        };
        if j.status != "completed" {
            continue;
        }
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            j.id,
            field(q),
            if j.runner_name.as_deref().is_some_and(|n| !n.is_empty()) {
                field(s)
            } else {
                String::new()
            },
            field(c),
            field(&j.labels.join(";")),
            field(j.conclusion.as_deref().unwrap_or("")),
            field(j.runner_name.as_deref().unwrap_or("")),
        ));
    }
    out
}

/// The picture's time bucket: the shortest round one that cuts `span` seconds into at most 100.
fn bucket_s(span: i64) -> i64 {
    [300, 900, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400]
        .into_iter()
        .find(|b| span <= 100 * b)
        .unwrap_or(30 * 86_400)
}

fn bucket_name(b: i64) -> String {
    match b {
        b if b % 86_400 == 0 => format!("{} day(s)", b / 86_400),
        b if b % 3600 == 0 => format!("{} h", b / 3600),
        b => format!("{} min", b / 60),
    }
}

/// The audit's picture (`--plot`): the fleet's losses by cause per time bucket, at each loss's
/// `completed_at` (when GitHub recorded it), and the queue wait's p50, p95 and max per bucket, by
/// `created_at`. The window is the audited one, widened to any loss after it (a never-picked-up job
/// completes a day after it was queued) so that no loss is missing from the picture.
pub fn plot_input(report: &LossReport, scope: &str, since: i64, until: i64) -> SeriesPlot {
    let bucket = bucket_s(until - since);
    let start_of = |t: i64| since + (t - since).div_euclid(bucket) * bucket;
    let losses: Vec<(Cause, i64)> = report
        .verdicts
        .iter()
        .filter(|v| v.cause.is_fleet_loss())
        .filter_map(|v| Some((v.cause, parse_rfc3339(v.completed_at.as_deref()?)?)))
        .collect();
    // Every point's whole bucket is drawn (the last one may end after `until`).
    let times = losses.iter().map(|l| l.1).chain(report.queue_waits.iter().map(|w| w.0));
    let (from, to) = times.fold((since, until), |(lo, hi), t| {
        (lo.min(start_of(t)), hi.max(start_of(t) + bucket))
    });

    let loss_series: Vec<Series> = Cause::ALL
        .into_iter()
        .filter(|c| c.is_fleet_loss())
        .map(|cause| {
            let mut per: BTreeMap<i64, u64> = BTreeMap::new();
            for (_, t) in losses.iter().filter(|l| l.0 == cause) {
                *per.entry(start_of(*t)).or_default() += 1;
            }
            Series {
                name: format!("{} ({})", cause.name(), per.values().sum::<u64>()),
                points: per.into_iter().map(|(t, n)| (t as f64, n as f64)).collect(),
            }
        })
        .collect();

    // Minutes when waits run long, so the axis reads "45", not "2700".
    let longest = report.queue_waits.iter().map(|w| w.1).max().unwrap_or(0);
    let (unit, per_unit) = if longest > 1200 { ("min", 60.0) } else { ("s", 1.0) };
    let mut per: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &(created, wait) in &report.queue_waits {
        per.entry(start_of(created)).or_default().push(wait);
    }
    let mut wait_series: Vec<Series> = ["p50", "p95", "max"]
        .into_iter()
        .map(|name| Series {
            name: name.to_string(),
            points: Vec::new(),
        })
        .collect();
    for (t, mut waits) in per {
        waits.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * waits.len() as f64).ceil() as usize).clamp(1, waits.len()) - 1;
            waits.get(i).copied().unwrap_or(0) as f64 / per_unit
        };
        let mid = (t + bucket / 2) as f64;
        for (series, q) in wait_series.iter_mut().zip([0.5, 0.95, 1.0]) {
            series.points.push((mid, rank(q)));
        }
    }
    let fmt_wait = |w: Option<f64>| w.map_or_else(|| "unknown".to_string(), |w| format!("{w:.0} s"));
    SeriesPlot {
        title: format!(
            "loss audit of {}: {} to {}",
            lifecycle_escape::clip(scope, 60),
            format_rfc3339(since),
            format_rfc3339(until)
        ),
        from: from as f64,
        to: to as f64,
        utc: true,
        panels: vec![
            SeriesPanel {
                caption: format!(
                    "Fleet losses by cause, per {} (at completed_at): {} of {} completed jobs",
                    bucket_name(bucket),
                    report.fleet_losses,
                    report.completed_jobs
                ),
                y_desc: "jobs lost".into(),
                style: SeriesStyle::StackedBars { width: bucket as f64 },
                series: loss_series,
            },
            SeriesPanel {
                caption: format!(
                    "Queue wait (created_at to started_at), per {} by created_at: p50 {}, p95 {} overall",
                    bucket_name(bucket),
                    fmt_wait(report.queue_wait_p50_s),
                    fmt_wait(report.queue_wait_p95_s)
                ),
                y_desc: format!("queue wait ({unit})"),
                style: SeriesStyle::Lines,
                series: wait_series,
            },
        ],
    }
}

fn read_fleet_events(path: &PathBuf) -> Result<Vec<FleetEvent>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--fleet-events {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("--fleet-events {} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Run the audit.
pub fn run(args: &AuditArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("runner-lifecycle audit: {msg}");
        ExitCode::Config
    };
    let until = match args.until.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(lifecycle_github::time::now_epoch),
        Err(e) => return fail(format!("--until: {e}")),
    };
    let since = match args.since.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(until - 7 * 86_400),
        Err(e) => return fail(format!("--since: {e}")),
    };
    if since >= until {
        return fail("--since must be before --until".into());
    }
    let (scope, api) = match Scope::from_runner_url(&args.github_url) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    let events = match args.fleet_events.as_ref().map(read_fleet_events).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => return fail(e),
    };
    let filter = FleetFilter {
        groups: args
            .runner_groups
            .iter()
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        labels: args
            .labels
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        prefix: Some(args.runner_prefix.clone()).filter(|p| !p.is_empty()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("no async runtime: {e}")),
    };
    runtime.block_on(async {
        let stored: Option<Secret> = match &args.github_credentials_secret {
            Some(id) => {
                let Some(region) = args.region.clone().filter(|r| !r.is_empty()) else {
                    return fail("--github-credentials-secret needs --region or AWS_REGION".into());
                };
                let sdk = lifecycle_aws::sdk_config(
                    &region,
                    None,
                    Duration::from_secs(10),
                    lifecycle_aws::RetryPolicy::Standard,
                )
                .await;
                match lifecycle_controller::aws::AwsFleet::new(&sdk).read_secret(id).await {
                    Ok(v) => Some(v),
                    Err(e) => return fail(format!("reading the GitHub credentials secret {id}: {e}")),
                }
            }
            None => None,
        };
        let src = CredentialSources {
            app_id: args.github_app_id.as_ref(),
            installation_id: args.github_app_installation_id,
            app_key_file: args.github_app_key_file.as_ref(),
            token_file: args.github_token_file.as_ref(),
        };
        let auth = match credentials(src, stored) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let options = Options {
            api_url: args.github_api_url.clone().unwrap_or(api),
            // An audit is not a Lambda with a deadline: wait out a rate limit's reset.
            max_rate_limit_wait: Duration::from_secs(3700),
            ..Options::default()
        };
        let client = match GitHubClient::new(scope.clone(), auth, options) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        let mut fetcher = Fetcher::new(&client);
        if let Some(path) = &args.cache {
            if let Ok(text) = std::fs::read_to_string(path) {
                match serde_json::from_str::<EtagCache>(&text) {
                    Ok(c) => fetcher.cache = c,
                    Err(e) => eprintln!("runner-lifecycle audit: ignoring the cache {}: {e}", path.display()),
                }
            }
        }
        if !args.quiet {
            fetcher.progress = Some(Box::new(|line: &str| eprintln!("audit: {line}")));
        }
        let started = lifecycle_github::time::now_instant();
        let keep = filter.clone();
        let collected = fetcher
            .collect(&scope, since, until, move |j| keep.keeps(j) && needs_annotations(j))
            .await;
        let (jobs, notes) = match collected {
            Ok(v) => v,
            Err(e) => {
                eprintln!("runner-lifecycle audit: {e}");
                return ExitCode::Failure;
            }
        };
        let stats = fetcher.stats();
        if let Some(path) = &args.cache {
            let saved = serde_json::to_string(&fetcher.cache)
                .map_err(|e| e.to_string())
                .and_then(|t| std::fs::write(path, t).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                eprintln!("runner-lifecycle audit: cache {}: {e}", path.display());
            }
        }
        let fleet = FleetRecord::new(&events);
        let report = LossReport::build(&jobs, &notes, &filter, &fleet, args.scale_ins, (since, until));
        if let Some(path) = &args.plot {
            let input = plot_input(&report, &scope.to_string(), since, until);
            let written = lifecycle_sim::plot::render_series_svg(&input)
                .map_err(|e| e.to_string())
                .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
            if let Err(e) = written {
                eprintln!("runner-lifecycle audit: --plot {}: {e}", path.display());
                return ExitCode::Failure;
            }
        }
        if let Some(path) = &args.export_trace {
            let csv = trace_csv(jobs.iter().filter(|j| filter.keeps(j)));
            if let Err(e) = std::fs::write(path, csv) {
                eprintln!("runner-lifecycle audit: --export-trace {}: {e}", path.display());
                return ExitCode::Failure;
            }
        }
        let requests = client.requests_made();
        let took = started.elapsed().as_secs_f64();
        if args.json {
            let out = serde_json::json!({
                "scope": scope.to_string(),
                "since": lifecycle_github::time::format_rfc3339(since),
                "until": lifecycle_github::time::format_rfc3339(until),
                "filter": filter,
                "api_requests": requests,
                "fetch": stats,
                "seconds": took,
                "report": report,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        } else {
            println!(
                "loss audit of {} from {} to {}",
                lifecycle_escape::clip(&scope.to_string(), 200),
                lifecycle_github::time::format_rfc3339(since),
                lifecycle_github::time::format_rfc3339(until)
            );
            print!("{}", report.table());
            println!("{:<44}{:>12}", "GitHub API requests", format!("{requests}"));
            println!(
                "{:<44}{:>12}",
                "  pages (304 not modified)",
                format!("{} ({})", stats.pages, stats.not_modified)
            );
        }
        ExitCode::Ok
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use lifecycle_sim::trace_file::{parse_trace, TraceOptions};

    fn job(id: u64, q: &str, s: &str, c: &str, conclusion: &str, runner: Option<&str>) -> AuditJob {
        AuditJob {
            id,
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            created_at: Some(q.into()),
            started_at: Some(s.into()),
            completed_at: Some(c.into()),
            labels: vec!["self-hosted".into(), "linux".into(), "gpu".into()],
            runner_name: runner.map(str::to_string),
            ..AuditJob::default()
        }
    }

    #[test]
    fn exported_traces_replay_in_the_simulation() {
        let jobs = [
            job(
                1,
                "2026-11-02T10:00:00Z",
                "2026-11-02T10:00:20Z",
                "2026-11-02T10:05:20Z",
                "success",
                Some("rle-jit-1-i-0123abcd-0000"),
            ),
            job(
                2,
                "2026-11-02T10:01:00Z",
                "2026-11-02T10:02:00Z",
                "2026-11-02T10:12:00Z",
                "failure",
                Some("rle-jit-2-i-0123abce-0000"),
            ),
            job(
                3,
                "2026-11-02T10:03:00Z",
                "2026-11-03T10:03:00Z",
                "2026-11-03T10:03:00Z",
                "failure",
                None,
            ),
        ];
        let csv = trace_csv(jobs.iter());
        let trace = parse_trace(&csv, &TraceOptions::from_label_list("gpu")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(trace.jobs.len(), 2, "{csv}");
        assert_eq!(trace.skipped.not_started, 1);
        assert_eq!(trace.jobs[0].duration, Duration::from_secs(300));
        assert_eq!(trace.jobs[1].duration, Duration::from_secs(600));
        assert_eq!(
            trace.jobs[1].arrival.since(trace.jobs[0].arrival),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_plot_buckets_the_window_and_draws_an_empty_one() {
        assert_eq!(bucket_s(86_400), 900);
        assert_eq!(bucket_s(7 * 86_400), 3 * 3600);
        assert_eq!(bucket_name(3 * 3600), "3 h");
        let (since, until) = (parse_time("2026-11-02").unwrap(), parse_time("2026-11-09").unwrap());
        let empty = LossReport::build(
            &[],
            &BTreeMap::new(),
            &FleetFilter::default(),
            &FleetRecord::default(),
            None,
            (since, until),
        );
        let input = plot_input(&empty, "repository acme/infra", since, until);
        assert_eq!((input.from, input.to), (since as f64, until as f64));
        let svg = lifecycle_sim::plot::render_series_svg(&input).unwrap();
        assert!(
            svg.contains("none in this window") && svg.contains("p50 unknown"),
            "{svg}"
        );
        // A loss a day after the window (a never-picked-up job) widens it rather than vanish.
        let mut late = job(
            9,
            "2026-11-08T23:00:00Z",
            "2026-11-09T23:00:00Z",
            "2026-11-09T23:00:00Z",
            "failure",
            None,
        );
        late.labels = vec![];
        let notes = BTreeMap::from([(
            9,
            vec![lifecycle_github::audit::Annotation {
                annotation_level: Some("failure".into()),
                title: None,
                message: Some(
                    "The job has exceeded the maximum execution time while awaiting a runner for 24h0m0s".into(),
                ),
            }],
        )]);
        let report = LossReport::build(
            &[late],
            &notes,
            &FleetFilter::default(),
            &FleetRecord::default(),
            None,
            (since, until),
        );
        let input = plot_input(&report, "repository acme/infra", since, until);
        assert!(input.to > until as f64);
        assert!(lifecycle_sim::plot::render_series_svg(&input)
            .unwrap()
            .contains("never_picked_up (1)"));
    }

    #[test]
    fn times_parse_as_dates_or_rfc3339() {
        assert_eq!(parse_time("2026-11-02"), parse_time("2026-11-02T00:00:00Z"));
        assert!(parse_time("yesterday").is_err());
    }
}
