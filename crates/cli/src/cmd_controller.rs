//! `runner-lifecycle controller`: the fleet controller (crates/controller) from the command line or
//! as an AWS Lambda. Settings come from flags or their environment variables (flag > environment >
//! default, clap); GitHub credentials only from the environment or a file, never from argv.

use crate::exit_code::ExitCode;
use clap::{Args, Subcommand};
use lifecycle_aws::{NameTemplate, RetryPolicy};
use lifecycle_controller::aws::AwsFleet;
use lifecycle_controller::ports::{AnyGitHub, NoGitHub};
use lifecycle_controller::settings::{
    parse_repo, JitSettings, ScaleSettings, APPLY_INTERVAL_RANGE, DEFAULT_SECRET_TEMPLATE, FRESH_FOR_RANGE,
    GRACE_RANGE, JIT_OUTSTANDING_FOR_RANGE, LAUNCH_RETRY_FOR_RANGE, SCALE_IN_AFTER_RANGE, STUCK_AFTER_RANGE,
};
use lifecycle_controller::{Controller, HandlerError, Settings};
use lifecycle_github::{AppKey, Auth, GitHubClient, Options, Scope, Secret};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// A GitHub token (PAT or installation token). Read from the environment only.
pub const ENV_GITHUB_TOKEN: &str = "RUNNER_LIFECYCLE_GITHUB_TOKEN";
/// A GitHub App private key (PEM text). Read from the environment only.
pub const ENV_GITHUB_APP_KEY: &str = "RUNNER_LIFECYCLE_GITHUB_APP_KEY";

/// The fleet controller: EventBridge lifecycle events, the scheduled sweep, the Lambda runtime.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    opts: ControllerOpts,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Handle one EventBridge event (JSON from a file or stdin); print the outcome as JSON.
    HandleEvent {
        /// The event file, `-` for stdin.
        #[arg(long, value_name = "FILE", default_value = "-")]
        event: PathBuf,
    },
    /// Sweep every managed group once; print the reports as JSON.
    Sweep,
    /// Reconcile demand scaling once: read queued and running jobs from GitHub's REST API, repair
    /// the webhook-derived demand, set the group's desired capacity; print the report as JSON.
    Scale,
    /// Serve AWS Lambda invocations (the function's bootstrap runs this).
    Lambda,
}

/// Controller settings.
#[derive(Debug, Args)]
pub struct ControllerOpts {
    /// Auto Scaling groups to manage (repeat or comma-separate).
    #[arg(
        long = "group",
        value_name = "NAME",
        env = "RUNNER_LIFECYCLE_CONTROLLER_GROUPS",
        value_delimiter = ',',
        global = true
    )]
    groups: Vec<String>,
    /// Per-instance registration-token secret name.
    #[arg(long, value_name = "TEMPLATE", env = "RUNNER_LIFECYCLE_SECRET_TEMPLATE", default_value = DEFAULT_SECRET_TEMPLATE, global = true)]
    secret_template: String,
    /// Complete a terminating instance with no live runner after this long (300s, 5m; 1 s to 2 h; a unit is required).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_CONTROLLER_GRACE",
        default_value = "300s",
        global = true
    )]
    grace: String,
    /// Report instances in Terminating:Wait longer than this as stuck (300 s to 48 h).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_CONTROLLER_STUCK_AFTER",
        default_value = "6h",
        global = true
    )]
    stuck_after: String,
    /// Also complete stuck instances (this can end a running job).
    #[arg(long, env = "RUNNER_LIFECYCLE_CONTROLLER_COMPLETE_STUCK", global = true)]
    complete_stuck: bool,
    /// How long one invocation may retry a launch whose token could not be minted or stored
    /// (the Lambda's own deadline, when shorter, wins; 60 to 900 s).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_CONTROLLER_LAUNCH_RETRY_FOR",
        default_value = "600s",
        global = true
    )]
    launch_retry_for: String,
    /// Never delete GitHub runner registrations in the sweep.
    #[arg(long, env = "RUNNER_LIFECYCLE_CONTROLLER_KEEP_RUNNERS", global = true)]
    keep_runners: bool,
    /// The runner URL: https://github.com/ORG or https://github.com/OWNER/REPO (enables GitHub).
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_GITHUB_URL", global = true)]
    github_url: Option<String>,
    /// GitHub API base URL [default: from the runner URL].
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_GITHUB_API_URL", global = true)]
    github_api_url: Option<String>,
    /// A file holding a GitHub token (alternative to RUNNER_LIFECYCLE_GITHUB_TOKEN).
    #[arg(long, value_name = "PATH", env = "RUNNER_LIFECYCLE_GITHUB_TOKEN_FILE", global = true)]
    github_token_file: Option<PathBuf>,
    /// GitHub App id (with the installation id and a private key).
    #[arg(long, value_name = "ID", env = "RUNNER_LIFECYCLE_GITHUB_APP_ID", global = true)]
    github_app_id: Option<String>,
    /// GitHub App installation id.
    #[arg(
        long,
        value_name = "ID",
        env = "RUNNER_LIFECYCLE_GITHUB_APP_INSTALLATION_ID",
        global = true
    )]
    github_app_installation_id: Option<u64>,
    /// A file holding the App's PEM private key (alternative to RUNNER_LIFECYCLE_GITHUB_APP_KEY).
    #[arg(
        long,
        value_name = "PATH",
        env = "RUNNER_LIFECYCLE_GITHUB_APP_KEY_FILE",
        global = true
    )]
    github_app_key_file: Option<PathBuf>,
    /// A Secrets Manager secret holding the GitHub credentials (a token, or JSON with `token`, or
    /// `app_id`, `installation_id`, `private_key`), read once at start.
    #[arg(
        long,
        value_name = "SECRET",
        env = "RUNNER_LIFECYCLE_GITHUB_CREDENTIALS_SECRET",
        global = true
    )]
    github_credentials_secret: Option<String>,
    /// Demand scaling: the DynamoDB table holding the scaling state (enables scaling, with
    /// --scale-labels).
    #[arg(long, value_name = "TABLE", env = "RUNNER_LIFECYCLE_SCALE_TABLE", global = true)]
    scale_table: Option<String>,
    /// The labels the scaled group's runners serve (comma-separated); a job counts as demand when
    /// all its `runs-on` labels are among them.
    #[arg(
        long,
        value_name = "LABELS",
        env = "RUNNER_LIFECYCLE_SCALE_LABELS",
        value_delimiter = ',',
        global = true
    )]
    scale_labels: Vec<String>,
    /// The group to scale [default: the only --group].
    #[arg(long, value_name = "NAME", env = "RUNNER_LIFECYCLE_SCALE_GROUP", global = true)]
    scale_group: Option<String>,
    /// Idle runners kept beyond demand.
    #[arg(long, value_name = "N", env = "RUNNER_LIFECYCLE_SCALE_IDLE_TARGET", default_value_t = lifecycle_controller::settings::DEFAULT_IDLE_TARGET, global = true)]
    idle_target: u32,
    /// How long demand must stay below capacity before capacity drops (900s, 15m; 1 s to 24 h).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_SCALE_IN_AFTER",
        default_value = "900s",
        global = true
    )]
    scale_in_after: String,
    /// At most one Auto Scaling apply per group per this long (coalesces webhook bursts; 1 to 30 s).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_SCALE_APPLY_INTERVAL",
        default_value = "5s",
        global = true
    )]
    apply_interval: String,
    /// Webhook demand may lower capacity only while a reconcile succeeded this recently (60 to 3600 s).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_SCALE_FRESH_FOR",
        default_value = "180s",
        global = true
    )]
    scale_fresh_for: String,
    /// Repositories whose jobs the reconcile reads (OWNER/REPO, comma-separated) [default: the
    /// --github-url repository; required for an organisation URL].
    #[arg(
        long,
        value_name = "OWNER/REPO",
        env = "RUNNER_LIFECYCLE_SCALE_REPOS",
        value_delimiter = ',',
        global = true
    )]
    scale_repos: Vec<String>,
    /// A Secrets Manager secret holding the GitHub webhook secret, read once at start.
    #[arg(long, value_name = "SECRET", env = "RUNNER_LIFECYCLE_WEBHOOK_SECRET", global = true)]
    webhook_secret: Option<String>,
    /// The runner hosts' instance-profile role name: its sessions (one per instance, named after
    /// the instance id) may fetch just-in-time runner configs (`POST /jit-config`). Unset: the
    /// controller mints none.
    #[arg(long, value_name = "NAME", env = "RUNNER_LIFECYCLE_AGENT_ROLE_NAME", global = true)]
    agent_role_name: Option<String>,
    /// Labels of JIT runners besides the instance id and asg-<group> (comma-separated).
    #[arg(
        long,
        value_name = "LABELS",
        env = "RUNNER_LIFECYCLE_JIT_LABELS",
        value_delimiter = ',',
        default_value = "self-hosted",
        global = true
    )]
    jit_labels: Vec<String>,
    /// The runner group id of JIT runners (1: the default group).
    #[arg(long, value_name = "ID", env = "RUNNER_LIFECYCLE_JIT_RUNNER_GROUP_ID", default_value_t = lifecycle_controller::settings::DEFAULT_JIT_RUNNER_GROUP_ID, global = true)]
    jit_runner_group_id: u64,
    /// The name prefix of JIT runners (what the never-online sweep matches).
    #[arg(long, value_name = "PREFIX", env = "RUNNER_LIFECYCLE_JIT_PREFIX", default_value = lifecycle_controller::settings::DEFAULT_JIT_PREFIX, global = true)]
    jit_prefix: String,
    /// How long a minted JIT config no listener has connected with blocks the instance's next
    /// mint (one outstanding config per instance; 300 to 86400 s).
    #[arg(
        long,
        value_name = "DURATION",
        env = "RUNNER_LIFECYCLE_JIT_OUTSTANDING_FOR",
        default_value = "900s",
        global = true
    )]
    jit_outstanding_for: String,
    /// Opt-in, with demand scaling: re-run once a job that died with its runner through no fault of
    /// its own (spot interruption, a drain out of time, a lost host), on its `completed` webhook
    /// (docs/audit.md, "Re-running"; needs Actions: write).
    #[arg(long, env = "RUNNER_LIFECYCLE_RERUN_FLEET_LOSSES", global = true)]
    rerun_fleet_losses: bool,
    /// AWS region.
    #[arg(long, value_name = "REGION", env = "AWS_REGION", global = true)]
    region: Option<String>,
    /// Endpoint override for every AWS service (tests: a loopback emulator).
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_AWS_ENDPOINT_URL", global = true)]
    endpoint_url: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", env = "RUNNER_LIFECYCLE_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"], global = true)]
    log_format: String,
}

/// Install a log subscriber on stderr: our crates at INFO, dependencies at WARN.
pub(crate) fn init_logging(json: bool) {
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("lifecycle_controller", LevelFilter::INFO)
        .with_target("lifecycle_register", LevelFilter::INFO)
        .with_target("lifecycle_github", LevelFilter::INFO)
        .with_target("runner_lifecycle", LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = if json {
        registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry.with(layer).try_init()
    };
}

fn read_secret_file(path: &PathBuf, what: &str) -> Result<Secret, String> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim().to_string()))
        .map_err(|e| format!("{what} file {}: {e}", path.display()))
}

/// Where GitHub credentials come from, as the controller reads them (shared with `audit`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CredentialSources<'a> {
    /// `--github-app-id`.
    pub app_id: Option<&'a String>,
    /// `--github-app-installation-id`.
    pub installation_id: Option<u64>,
    /// `--github-app-key-file`.
    pub app_key_file: Option<&'a PathBuf>,
    /// `--github-token-file`.
    pub token_file: Option<&'a PathBuf>,
}

/// The credentials: a stored secret's value (`--github-credentials-secret`) first, then a GitHub
/// App (key from a file or RUNNER_LIFECYCLE_GITHUB_APP_KEY), then a token (file or
/// RUNNER_LIFECYCLE_GITHUB_TOKEN). Never from argv.
pub(crate) fn credentials(src: CredentialSources<'_>, stored: Option<Secret>) -> Result<Auth, String> {
    Ok(if let Some(value) = stored {
        Auth::from_stored(&value).map_err(|e| format!("--github-credentials-secret: {e}"))?
    } else if let Some(app_id) = src.app_id {
        let installation_id = src
            .installation_id
            .ok_or("--github-app-id needs --github-app-installation-id")?;
        let pem = match (src.app_key_file, std::env::var(ENV_GITHUB_APP_KEY)) {
            (Some(path), _) => read_secret_file(path, "GitHub App key")?,
            (None, Ok(text)) => Secret::new(text),
            (None, Err(_)) => {
                return Err(format!(
                    "--github-app-id needs --github-app-key-file or {ENV_GITHUB_APP_KEY}"
                ))
            }
        };
        let key = AppKey::from_pem(pem.expose()).map_err(|e| e.to_string())?;
        Auth::App {
            app_id: app_id.clone(),
            installation_id,
            key,
        }
    } else {
        let token = match (src.token_file, std::env::var(ENV_GITHUB_TOKEN)) {
            (Some(path), _) => read_secret_file(path, "GitHub token")?,
            (None, Ok(t)) if !t.trim().is_empty() => Secret::new(t.trim().to_string()),
            _ => {
                return Err(format!(
                    "--github-url needs credentials: {ENV_GITHUB_TOKEN}, --github-token-file, --github-credentials-secret or a GitHub App"
                ))
            }
        };
        Auth::Token(token)
    })
}

fn github(opts: &ControllerOpts, stored: Option<Secret>) -> Result<AnyGitHub, String> {
    let Some(url) = &opts.github_url else {
        return Ok(AnyGitHub::None(NoGitHub));
    };
    let (scope, api) = Scope::from_runner_url(url).map_err(|e| e.to_string())?;
    let src = CredentialSources {
        app_id: opts.github_app_id.as_ref(),
        installation_id: opts.github_app_installation_id,
        app_key_file: opts.github_app_key_file.as_ref(),
        token_file: opts.github_token_file.as_ref(),
    };
    let auth = credentials(src, stored)?;
    let options = Options {
        api_url: opts.github_api_url.clone().unwrap_or(api),
        ..Options::default()
    };
    let client = GitHubClient::new(scope, auth, options).map_err(|e| e.to_string())?;
    Ok(AnyGitHub::Client(Box::new(client)))
}

fn settings(opts: &ControllerOpts) -> Result<Settings, String> {
    let groups: Vec<String> = opts
        .groups
        .iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    if groups.is_empty() {
        return Err("no group to manage: --group NAME or RUNNER_LIFECYCLE_CONTROLLER_GROUPS".into());
    }
    for g in &groups {
        lifecycle_github::labels::check_group(g)?;
    }
    let mut s = Settings::new(groups);
    s.secret_template = NameTemplate::parse(&opts.secret_template)?;
    s.grace = GRACE_RANGE.parse(&opts.grace)?;
    s.stuck_after = STUCK_AFTER_RANGE.parse(&opts.stuck_after)?;
    s.launch_retry_for = LAUNCH_RETRY_FOR_RANGE.parse(&opts.launch_retry_for)?;
    s.complete_stuck = opts.complete_stuck;
    s.delete_orphan_runners = !opts.keep_runners;
    s.scale = scale_settings(opts, &s)?;
    s.jit = jit_settings(opts)?;
    s.check()?;
    Ok(s)
}

fn jit_settings(opts: &ControllerOpts) -> Result<Option<JitSettings>, String> {
    let Some(role) = opts.agent_role_name.as_deref().map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let mut jit = JitSettings::new(role);
    jit.labels = opts
        .jit_labels
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    jit.runner_group_id = opts.jit_runner_group_id;
    jit.prefix = opts.jit_prefix.trim().to_string();
    jit.outstanding_for = JIT_OUTSTANDING_FOR_RANGE.parse(&opts.jit_outstanding_for)?;
    jit.check()?;
    Ok(Some(jit))
}

fn scale_settings(opts: &ControllerOpts, s: &Settings) -> Result<Option<ScaleSettings>, String> {
    let labels: Vec<&str> = opts
        .scale_labels
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let table = match (&opts.scale_table, labels.is_empty()) {
        (None, true) => return Ok(None),
        (Some(t), false) if !t.trim().is_empty() => t.trim(),
        _ => return Err("demand scaling needs both --scale-table and --scale-labels".into()),
    };
    let group = match (&opts.scale_group, s.groups.len()) {
        (Some(g), _) if s.groups.contains(g) => g.clone(),
        (Some(g), _) => return Err(format!("--scale-group `{g}` is not one of --group")),
        (None, 1) => s.groups.iter().next().cloned().unwrap_or_default(),
        (None, _) => return Err("several groups: say which one to scale with --scale-group".into()),
    };
    let mut scale = ScaleSettings::new(&group, &labels, table);
    scale.idle_target = opts.idle_target;
    scale.scale_in_after = SCALE_IN_AFTER_RANGE.parse(&opts.scale_in_after)?;
    scale.apply_interval = APPLY_INTERVAL_RANGE.parse(&opts.apply_interval)?;
    scale.fresh_for = FRESH_FOR_RANGE.parse(&opts.scale_fresh_for)?;
    scale.repos = opts
        .scale_repos
        .iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| parse_repo(r).map_err(|e| format!("--scale-repos: {e}")))
        .collect::<Result<_, _>>()?;
    scale.rerun_fleet_losses = opts.rerun_fleet_losses.then(|| opts.jit_prefix.trim().to_string());
    Ok(Some(scale))
}

fn failure(e: &HandlerError) -> ExitCode {
    eprintln!("runner-lifecycle controller: {e} (retryable: {})", e.is_retryable());
    ExitCode::from(e)
}

pub fn run(args: &ControllerArgs) -> ExitCode {
    let opts = &args.opts;
    init_logging(opts.log_format == "json");
    let config_error = |msg: String| {
        eprintln!("runner-lifecycle controller: configuration error: {msg}");
        ExitCode::Config
    };
    let mut settings = match settings(opts) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let Some(region) = opts.region.clone().filter(|r| !r.is_empty()) else {
        return config_error("no AWS region: --region or AWS_REGION".into());
    };
    // Read the event before building anything: a bad file is a usage problem, not an AWS one.
    let event = match &args.action {
        Action::HandleEvent { event } => {
            let mut bytes = Vec::new();
            let read = if event.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut bytes).map(|_| ())
            } else {
                std::fs::read(event).map(|b| bytes = b)
            };
            if let Err(e) = read {
                return config_error(format!("event {}: {e}", event.display()));
            }
            Some(bytes)
        }
        _ => None,
    };
    if matches!(args.action, Action::Scale) && settings.scale.is_none() {
        return config_error("`scale` needs demand scaling configured: --scale-table and --scale-labels".into());
    }
    if matches!(args.action, Action::Lambda) {
        if let Err(e) = lifecycle_controller::lambda::check_environment() {
            return config_error(e);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner-lifecycle controller: no async runtime: {e}");
            return ExitCode::Failure;
        }
    };
    runtime.block_on(async {
        let sdk = lifecycle_aws::sdk_config(
            &region,
            opts.endpoint_url.as_deref(),
            Duration::from_secs(10),
            RetryPolicy::Standard,
        )
        .await;
        let fleet = AwsFleet::new(&sdk);
        let stored = match (&opts.github_credentials_secret, &opts.github_url) {
            (Some(id), Some(_)) => match fleet.read_secret(id).await {
                Ok(value) => Some(value),
                Err(e) => return config_error(format!("reading the GitHub credentials secret {id}: {e}")),
            },
            _ => None,
        };
        if let (Some(scale), Some(id)) = (settings.scale.as_mut(), &opts.webhook_secret) {
            match fleet.read_secret(id).await {
                Ok(value) => {
                    if let Err(e) = lifecycle_controller::webhook::check_secret(&value) {
                        return config_error(format!("webhook secret {id}: {e}"));
                    }
                    scale.webhook_secret = Some(value)
                }
                Err(e) => return config_error(format!("reading the webhook secret {id}: {e}")),
            }
        }
        // GitHub is built inside the runtime: its connection pool needs one.
        let github = match github(opts, stored) {
            Ok(g) => g,
            Err(e) => return config_error(e),
        };
        let controller = Controller::new(settings, fleet, github);
        let now = lifecycle_github::time::now_epoch();
        let result = match (&args.action, event) {
            (Action::HandleEvent { .. }, Some(bytes)) => controller.handle_bytes(&bytes, now).await,
            (Action::Sweep, _) => {
                controller
                    .handle(
                        lifecycle_controller::event::ControllerEvent::Scheduled { rule: None },
                        now,
                    )
                    .await
            }
            (Action::Scale, _) => {
                return match controller.scale(now).await {
                    Ok(report) => {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                        ExitCode::Ok
                    }
                    Err(e) => failure(&e),
                };
            }
            (Action::Lambda, _) => {
                return match lifecycle_controller::lambda::run(controller).await {
                    Ok(()) => ExitCode::Ok,
                    Err(e) => {
                        eprintln!("runner-lifecycle controller lambda: {e}");
                        ExitCode::Failure
                    }
                };
            }
            (Action::HandleEvent { .. }, None) => return ExitCode::Failure,
        };
        match result {
            Ok(outcome) => {
                println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
                ExitCode::Ok
            }
            Err(e) => failure(&e),
        }
    })
}
