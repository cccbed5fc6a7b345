//! The agent's configuration: one table of keys, three sources, one precedence.
//!
//! Every key `section.name` can be set in the TOML file (`[section]` / `name = ...`), by the
//! environment variable `RUNNER_LIFECYCLE_SECTION_NAME` and by the flag `--section-name`. For each
//! key the first of these wins: **flag, then environment, then file, then the built-in default**.
//! Values that are not set anywhere and have no default (region, instance id, group, hook) are
//! discovered at start from IMDS and the Auto Scaling API. Unknown keys are refused, never ignored:
//! a typo in a timeout must not silently fall back to a default.

use crate::duration::{format_duration, parse_duration_in};
use crate::env_vars;
use lifecycle_core::config::defaults as core_defaults;
use lifecycle_core::{CoreConfig, HookConfig, ListenerMode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration file is looked for when neither `--config` nor `RUNNER_LIFECYCLE_CONFIG`
/// names one. A missing file at this path is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/runner-lifecycle/config.toml";
/// The hook socket's default path (a tmpfs directory that systemd's `RuntimeDirectory=` creates).
pub const DEFAULT_SOCKET: &str = "/run/runner-lifecycle/agent.sock";
/// The instance metadata service (EC2 User Guide, "Access instance metadata").
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The listener command, relative to `runner.dir`: what upstream's `runsvc.sh` starts
/// (actions/runner src/Misc/layoutbin/RunnerService.js: `bin/Runner.Listener run --startuptype service`).
pub const DEFAULT_RUNNER_COMMAND: &str = "bin/Runner.Listener run --startuptype service";

/// What a key's value is, for validation and for the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Free text, checked by the key's `check` if it has one.
    Text,
    /// A command line: a string split at whitespace, or (in the file) an array of strings.
    Command,
    /// One of a few words.
    Choice(&'static [&'static str]),
    /// A duration like `30s`, within its bounds.
    Duration {
        /// Shortest allowed.
        min: Duration,
        /// Longest allowed.
        max: Duration,
        /// Whether `none` (no duration) is allowed.
        none: bool,
    },
    /// `true` or `false` (also `1`/`0`, `yes`/`no` outside the file).
    Bool,
}

/// A check of a key's text value: `Err` says what is wrong with it.
pub type Check = fn(&str) -> Result<(), String>;

/// One configuration key, declared once: its name, flag, environment variable, type (with bounds
/// or choices), default, check and documentation; its row in `keys!` also names the typed
/// [`Settings`] field it resolves to. The flag, the variable, the file key, the validation,
/// `--help`, `Settings` and docs/agent.md's table all derive from that row.
#[derive(Debug)]
pub struct Key {
    /// `section.name`, as in the file.
    pub name: &'static str,
    /// The flag, without the leading dashes.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Placeholder for help texts.
    pub value_name: &'static str,
    /// What the value is.
    pub ty: Type,
    /// The default, as text; `None` when the value is discovered or optional.
    pub default: Option<&'static str>,
    /// A check of a text value (beyond its type), if any.
    pub check: Option<Check>,
    /// One line of help (`--help`).
    pub doc: &'static str,
    /// The docs table's default column when there is no default (what happens instead).
    pub unset: &'static str,
    /// What `--config-check` says of the key when it is not set (keys without a default).
    pub note: &'static str,
    /// The docs table's meaning column (markdown); the bounds of a duration are appended.
    pub docs: &'static str,
}

impl Key {
    /// The bounds of a duration key.
    pub fn bounds(&self) -> Option<(Duration, Duration)> {
        match self.ty {
            Type::Duration { min, max, .. } => Some((min, max)),
            _ => None,
        }
    }
}

/// The one table of configuration keys: each row declares a key once. `$var` names its environment
/// variable's constant in [`vars`] (`RUNNER_LIFECYCLE_` + the name).
macro_rules! keys {
    ($(
        $var:ident: $name:literal, flag $flag:literal, $vn:literal, $ty:expr, default $default:expr,
        check $check:expr, doc $doc:literal, unset $unset:literal, note $note:literal, docs $docs:literal,
        field $field:ident: $fty:ty = ($r:ident, $k:ident) $resolve:block;
    )+) => {
        /// The environment variable of every key, generated from the key table.
        pub mod vars {
            $(
                #[doc = concat!("`", $name, "`.")]
                pub const $var: &str = concat!("RUNNER_LIFECYCLE_", stringify!($var));
            )+
        }

        /// Every key, in documentation order.
        pub const KEYS: &[Key] = &[$(
            Key {
                name: $name,
                flag: $flag,
                env: vars::$var,
                value_name: $vn,
                ty: $ty,
                default: $default,
                check: $check,
                doc: $doc,
                unset: $unset,
                note: $note,
                docs: $docs,
            },
        )+];

        /// The resolved settings: one typed field per key, resolved by its row of the table.
        #[derive(Clone, Debug)]
        pub struct Settings {
            /// The file that was read (or looked for).
            pub config_file: ConfigFile,
            $(
                #[doc = concat!("`", $name, "`: ", $doc)]
                pub $field: $fty,
            )+
            /// Where each set key came from, with its value as text, for `--config-check`.
            pub origins: BTreeMap<&'static str, (String, Source)>,
        }

        /// How each key's value is resolved (its row's `field` clause).
        mod resolvers {
            #[allow(unused_imports)]
            use super::*;
            $(
                pub(super) fn $field($r: &mut Resolver<'_>, $k: &'static str) -> Result<$fty, ConfigError> $resolve
            )+
        }

        /// Every key resolved in table order (an error names the first bad key).
        fn resolve_keys(r: &mut Resolver<'_>, config_file: ConfigFile) -> Result<Settings, ConfigError> {
            Ok(Settings {
                config_file,
                $($field: resolvers::$field(r, $name)?,)+
                origins: std::mem::take(&mut r.origins),
            })
        }
    };
}

/// Byte equality in a const context (for the compile-time name checks below).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The variables `install` writes into the unit (lifecycle_install::env) are the table's: checked
/// when the agent is built, so a renamed key cannot leave the unit setting a variable nobody reads.
const _: () = {
    use lifecycle_install::env as install;
    assert!(same(install::RUNNER_USER, vars::RUNNER_USER));
    assert!(same(install::RUNNER_MODE, vars::RUNNER_MODE));
    assert!(same(install::RUNNER_JIT_URL, vars::RUNNER_JIT_URL));
    assert!(same(install::CONTAINERS_MODE, vars::CONTAINERS_MODE));
    assert!(same(
        install::RUNNER_ONE_JOB_PER_INSTANCE,
        vars::RUNNER_ONE_JOB_PER_INSTANCE
    ));
};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A duration key's type. Upper bounds stop a typo (`5000000000000h`) from turning into a timer that
/// never fires or an `Instant` that overflows; lower bounds stop values that would make the agent
/// spin.
const fn duration(min: Duration, max: Duration) -> Type {
    Type::Duration { min, max, none: false }
}

keys! {
    RUNNER_DIR: "runner.dir", flag "runner-dir", "DIR", Type::Text, default None, check None,
        doc "The runner's install directory (holds bin/Runner.Listener). Required by `agent`.",
        unset "(required)",
        note "required by `agent`",
        docs "the runner's install directory (holds `bin/Runner.Listener`)",
        field runner_dir: Option<PathBuf> = (r, k) { Ok(r.string(k)?.map(PathBuf::from)) };
    RUNNER_COMMAND: "runner.command", flag "runner-command", "CMD", Type::Command,
        default Some(DEFAULT_RUNNER_COMMAND), check None,
        doc "Listener command line; a relative program is taken from runner.dir. In the file: a string or an array.",
        unset "",
        note "",
        docs "listener command; a relative program is taken from `runner.dir`; in the file a string or an array, elsewhere split at whitespace",
        field runner_command: Vec<String> = (r, k) { r.command(k) };
    RUNNER_MODE: "runner.mode", flag "runner-mode", "MODE", Type::Choice(&ListenerMode::NAMES),
        default Some(core_defaults::LISTENER_MODE_TEXT), check None,
        doc "`jit` (each listener a just-in-time runner from runner.jit_url: one job, then a fresh one), `persistent` or `one-job`.",
        unset "",
        note "",
        docs "`jit` (the default): every listener is a just-in-time runner whose config the agent fetches from `runner.jit_url` (the controller), takes one job and exits; the next config is fetched while the job runs, and a draining host starts no next listener. `persistent`: one registered listener takes job after job (a job can land between a job's end and the stop). `one-job`: a registered listener with `--once`, relaunched after each job (`--once` is deprecated upstream). See \"Listener modes\"",
        field runner_mode: ListenerMode = (r, k) {
            let word = r.choice(k)?;
            // choice() has checked the word against the same names; no silent fallback if not.
            ListenerMode::from_name(word).ok_or_else(|| r.invalid(k, format!("`{word}` is not a listener mode")))
        };
    RUNNER_JIT_URL: "runner.jit_url", flag "runner-jit-url", "URL", Type::Text, default None,
        check Some(check_jit_url),
        doc "The controller's JIT config endpoint (its AWS_IAM function URL). Required when runner.mode is jit.",
        unset "(required when `runner.mode` is `jit`)",
        note "required when runner.mode is jit",
        docs "the controller's just-in-time config endpoint: its Lambda function URL with `AWS_IAM` auth (Terraform output `jit_url`); `https://`, or `http://` to a loopback address for tests. Requests are SigV4-signed with the instance role",
        field jit_url: Option<String> = (r, k) { r.string(k) };
    RUNNER_ONE_JOB_PER_INSTANCE: "runner.one_job_per_instance", flag "runner-one-job-per-instance", "BOOL",
        Type::Bool, default Some(core_defaults::ONE_JOB_PER_INSTANCE_TEXT), check None,
        doc "JIT mode: after its one job the host drains and leaves its Auto Scaling group, which launches a fresh instance.",
        unset "",
        note "",
        docs "JIT mode only: one instance per job. After its job the host starts no next listener, drains and leaves its group (`TerminateInstanceInAutoScalingGroup` without decrementing the desired capacity, so the group launches a fresh instance); needs `autoscaling:TerminateInstanceInAutoScalingGroup` on the group. See \"One instance per job\"",
        field one_job_per_instance: bool = (r, k) { r.bool(k) };
    CONTAINERS_MODE: "containers.mode", flag "containers-mode", "MODE",
        Type::Choice(&crate::engine::ContainerMode::NAMES), default Some("none"), check None,
        doc "How jobs get a container engine: `none`, `rootless` (a Podman engine per listener, reset between jobs) or `docker-group`.",
        unset "",
        note "",
        docs "how jobs get a container engine: `none`; `rootless` (a rootless Podman engine per listener as the runner's user, in the listener's cgroup, its state removed between jobs, `DOCKER_HOST` in the listener's environment; `install --containers rootless` sets it up); `docker-group` (the runner's user is in the `docker` group: every job is root on the host; the agent warns at start). See \"Container jobs\" in docs/operations.md",
        field containers_mode: crate::engine::ContainerMode = (r, k) {
            Ok(crate::engine::ContainerMode::parse(r.choice(k)?).unwrap_or(crate::engine::ContainerMode::None))
        };
    CONTAINERS_PODMAN: "containers.podman", flag "containers-podman", "PATH", Type::Text,
        default Some("/usr/bin/podman"), check None,
        doc "The podman program the rootless engine runs (root's; run as the runner's user).",
        unset "",
        note "",
        docs "the `podman` program of `containers.mode = \"rootless\"` (absolute path; root's, not the runner's to change)",
        field podman: PathBuf = (r, k) { Ok(PathBuf::from(r.string(k)?.unwrap_or_default())) };
    CONTAINERS_CONF: "containers.conf", flag "containers-conf", "PATH", Type::Text,
        default Some("/etc/runner-lifecycle/containers.conf"), check None,
        doc "containers.conf for the rootless engine (CONTAINERS_CONF; written by install), used when present.",
        unset "",
        note "",
        docs "the `containers.conf` the rootless engine reads instead of the runner user's own (`CONTAINERS_CONF`; `install --containers rootless` writes it), used when the file exists",
        field containers_conf: PathBuf = (r, k) { Ok(PathBuf::from(r.string(k)?.unwrap_or_default())) };
    CONTAINERS_STORAGE_CONF: "containers.storage_conf", flag "containers-storage-conf", "PATH", Type::Text,
        default Some("/etc/runner-lifecycle/storage.conf"), check None,
        doc "storage.conf for the rootless engine (CONTAINERS_STORAGE_CONF; written by install), used when present.",
        unset "",
        note "",
        docs "the `storage.conf` the rootless engine reads instead of the runner user's own (`CONTAINERS_STORAGE_CONF`; `install --containers rootless` writes it, naming the read-only image store of `--container-image-store`), used when the file exists",
        field containers_storage_conf: PathBuf = (r, k) { Ok(PathBuf::from(r.string(k)?.unwrap_or_default())) };
    // Below 5 ms the agent would do little but read /proc; above 1 s a job's start is seen late.
    RUNNER_WORKER_POLL: "runner.worker_poll", flag "runner-worker-poll", "DURATION", duration(ms(5), secs(1)),
        default Some("50ms"), check None,
        doc "How often the listener's children are checked for a Runner.Worker (a job).",
        unset "",
        note "",
        docs "how often the listener's children are checked for `Runner.Worker`",
        field worker_poll: Duration = (r, k) { r.duration(k) };
    // 0 would SIGKILL an idle listener at once; RunnerService.js waits 30 s, an hour is plenty.
    RUNNER_STOP_GRACE: "runner.stop_grace", flag "runner-stop-grace", "DURATION", duration(secs(1), secs(3600)),
        default Some(core_defaults::STOP_GRACE_TEXT), check None,
        doc "SIGINT to SIGKILL delay for an idle listener (RunnerService.js also waits 30 s).",
        unset "",
        note "",
        docs "SIGINT to SIGKILL delay for an *idle* listener",
        field stop_grace: Duration = (r, k) { r.duration(k) };
    // 0 would relaunch a crashing listener in a tight loop.
    RUNNER_RELAUNCH_DELAY: "runner.relaunch_delay", flag "runner-relaunch-delay", "DURATION",
        duration(ms(100), secs(3600)), default Some(core_defaults::RELAUNCH_DELAY_TEXT), check None,
        doc "Delay before relaunching a listener that exited asking for it (RunnerService.js: 5 s).",
        unset "",
        note "",
        docs "delay before relaunching a listener that exited 2, 3, 4 or an unknown code",
        field relaunch_delay: Duration = (r, k) { r.duration(k) };
    RUNNER_USER: "runner.user", flag "runner-user", "USER", Type::Text, default None, check Some(check_user),
        doc "User (name or uid, from /etc/passwd) the listener runs as, with its groups. Unset: the agent's own user.",
        unset "(unset: the agent's own user)",
        note "",
        docs "user (name or numeric uid, from `/etc/passwd`) the listener runs as, with its primary and supplementary groups (`/etc/group`) and `HOME`, `USER`, `LOGNAME`, `SHELL` from its passwd entry; the agent must be root (or hold `CAP_SETUID`/`CAP_SETGID`); see \"The listener's user and environment\"",
        field runner_user: Option<String> = (r, k) { r.string(k) };
    AWS_REGION: "aws.region", flag "aws-region", "REGION", Type::Text, default None, check Some(check_region),
        doc "AWS region. Unset: AWS_REGION, then IMDS placement/region.",
        unset "`AWS_REGION`, then IMDS",
        note "read from IMDS at start",
        docs "region of the Auto Scaling API",
        field region: Option<String> = (r, k) {
            match r.string(k)? {
                Some(region) => Ok(Some(region)),
                None => r.std_env(k, env_vars::STD_AWS_REGION),
            }
        };
    AWS_INSTANCE_ID: "aws.instance_id", flag "aws-instance-id", "ID", Type::Text, default None,
        check Some(check_instance_id),
        doc "This instance's id. Unset: IMDS meta-data/instance-id.",
        unset "IMDS `instance-id`",
        note "read from IMDS at start",
        docs "this instance",
        field instance_id: Option<String> = (r, k) { r.string(k) };
    AWS_GROUP: "aws.group", flag "aws-group", "NAME", Type::Text, default None, check None,
        doc "Auto Scaling group. Unset: DescribeAutoScalingInstances.",
        unset "DescribeAutoScalingInstances",
        note "found with DescribeAutoScalingInstances at start",
        docs "the Auto Scaling group",
        field group: Option<String> = (r, k) { r.string(k) };
    AWS_HOOK: "aws.hook", flag "aws-hook", "NAME", Type::Text, default None, check None,
        doc "Termination lifecycle hook. Unset: the group's EC2_INSTANCE_TERMINATING hook from DescribeLifecycleHooks.",
        unset "the group's `autoscaling:EC2_INSTANCE_TERMINATING` hook",
        note "found with DescribeLifecycleHooks at start",
        docs "termination hook to drive; an explicit name overrides discovery; no termination hook means hook actions are no-ops",
        field hook: Option<String> = (r, k) { r.string(k) };
    AWS_ENDPOINT_URL: "aws.endpoint_url", flag "aws-endpoint-url", "URL", Type::Text, default None,
        check Some(check_http_url),
        doc "Auto Scaling endpoint override (unset: the SDK's default, which honours AWS_ENDPOINT_URL).",
        unset "the SDK's (honours `AWS_ENDPOINT_URL`)",
        note "the SDK's default endpoint",
        docs "Auto Scaling endpoint",
        field endpoint_url: Option<String> = (r, k) { r.string(k) };
    // Auto Scaling answers in well under a second; 5 minutes is no longer a timeout.
    AWS_API_TIMEOUT: "aws.api_timeout", flag "aws-api-timeout", "DURATION", duration(ms(100), secs(300)),
        default Some("10s"), check None,
        doc "Longest time one Auto Scaling call may take before it counts as a transient failure.",
        unset "",
        note "",
        docs "longest time one call attempt may take (counts as a transient failure)",
        field api_timeout: Duration = (r, k) { r.duration(k) };
    AWS_IMDS_ENDPOINT: "aws.imds_endpoint", flag "aws-imds-endpoint", "URL", Type::Text,
        default Some(DEFAULT_IMDS_ENDPOINT), check Some(check_imds_endpoint),
        doc "Instance metadata base URL. Unset: AWS_EC2_METADATA_SERVICE_ENDPOINT, then the default.",
        unset "",
        note "",
        docs "IMDS base URL",
        field imds_endpoint: crate::imds::Endpoint = (r, k) {
            let url = match r.string_no_default(k)? {
                Some(v) => v,
                None => match r.std_env(k, env_vars::STD_IMDS_ENDPOINT)? {
                    Some(v) => v,
                    None => r.default_string(k),
                },
            };
            crate::imds::Endpoint::parse(&url).map_err(|m| r.invalid(k, m))
        };
    // A spot notice comes two minutes ahead; polling slower than once a minute risks missing it.
    AWS_IMDS_POLL: "aws.imds_poll", flag "aws-imds-poll", "DURATION", duration(ms(100), secs(60)),
        default Some("1s"), check None,
        doc "How often IMDS target-lifecycle-state, spot and rebalance notices are read.",
        unset "",
        note "",
        docs "IMDS polling period; a spot notice comes two minutes ahead",
        field imds_poll: Duration = (r, k) { r.duration(k) };
    // 0 is fine: clear protection as soon as the runner is idle.
    DRAIN_UNPROTECT_DELAY: "drain.unprotect_delay", flag "drain-unprotect-delay", "DURATION",
        duration(Duration::ZERO, secs(24 * 3600)), default Some(core_defaults::UNPROTECT_DELAY_TEXT), check None,
        doc "How long an idle runner stays protected after a job before protection is cleared.",
        unset "",
        note "",
        docs "an idle runner stays protected this long after a job before protection is cleared",
        field unprotect_delay: Duration = (r, k) { r.duration(k) };
    // A self-hosted job runs at most 5 days (GitHub Actions usage limits); 0 would cancel every job.
    DRAIN_STOP_DEADLINE: "drain.stop_deadline", flag "drain-stop-deadline", "DURATION|none",
        Type::Duration { min: secs(1), max: secs(5 * 24 * 3600), none: true }, default Some("none"), check None,
        doc "After SIGTERM, the longest a running job may delay the stop before it is forced (cancelled).",
        unset "",
        note "",
        docs "after SIGTERM, the longest a running job may delay the stop before it is forced (cancelling the job); a self-hosted job runs at most 5 days",
        field stop_deadline: Option<Duration> = (r, k) { r.optional_duration(k) };
    DRAIN_ON_REBALANCE: "drain.on_rebalance", flag "drain-on-rebalance", "BOOL", Type::Bool,
        default Some(core_defaults::DRAIN_ON_REBALANCE_TEXT), check None,
        doc "Whether an EC2 rebalance recommendation drains the runner (default: only a warning).",
        unset "",
        note "",
        docs "whether a rebalance recommendation drains the runner",
        field drain_on_rebalance: bool = (r, k) { r.bool(k) };
    DRAIN_HANDOVER_LATCH: "drain.handover_latch", flag "drain-handover-latch", "BOOL", Type::Bool,
        default Some(core_defaults::HANDOVER_LATCH_TEXT), check None,
        doc "Hold the stop of an idle listener while its perf log shows a job message with no Runner.Worker yet (at most 120 s).",
        unset "",
        note "",
        docs "hold the stop of an idle listener while its perf log (`RUNNER_PERFLOG`) shows a job message whose `Runner.Worker` has not started, for at most 120 s (see \"The handover\"); turn off only to measure what it prevents",
        field handover_latch: bool = (r, k) { r.bool(k) };
    DRAIN_HANDOVER_BOUND: "drain.handover_bound", flag "drain-handover-bound", "DURATION",
        Type::Duration { min: secs(1), max: secs(600), none: false }, default Some(core_defaults::HANDOVER_BOUND_TEXT), check None,
        doc "The longest a job message without a Runner.Worker, or a release GitHub refused, holds the stop of an idle listener.",
        unset "",
        note "",
        docs "the longest a job message without a `Runner.Worker`, or a registration GitHub would not release, holds the stop of an idle listener; 120 s covers the listener's acknowledge (5 s) and five `acquirejob` attempts 5-15 s apart",
        field handover_bound: Duration = (r, k) { r.duration(k) };
    DRAIN_RELEASE_REGISTRATION: "drain.release_registration", flag "drain-release-registration", "BOOL", Type::Bool,
        default Some(core_defaults::RELEASE_REGISTRATION_TEXT), check None,
        doc "JIT mode: ask the controller to delete the runner's registration before stopping an idle listener.",
        unset "",
        note "",
        docs "JIT mode: before stopping an idle listener, ask the controller (`runner.jit_url`) to delete its registration; GitHub refuses if a job is assigned, and the stop then waits for the job (see \"The handover\")",
        field release_registration: bool = (r, k) { r.bool(k) };
    AGENT_SOCKET: "agent.socket", flag "agent-socket", "PATH", Type::Text, default Some(DEFAULT_SOCKET),
        check Some(check_socket_text),
        doc "Unix socket the job hooks talk to.",
        unset "",
        note "",
        docs "the hook socket (absolute path, at most 100 bytes)",
        field socket: PathBuf = (r, k) { Ok(PathBuf::from(r.string(k)?.unwrap_or_default())) };
    AGENT_SOCKET_GROUP: "agent.socket_group", flag "agent-socket-group", "GROUP", Type::Text, default None,
        check None,
        doc "Group allowed to use the socket (mode 0660); unset: owner only (mode 0600).",
        unset "(none: mode 0600; with `runner.user`, that user's primary group and mode 0660)",
        note "socket is owner-only, mode 0600",
        docs "group allowed to use the socket (mode 0660)",
        field socket_group: Option<String> = (r, k) { r.string(k) };
    AGENT_LOG_FORMAT: "agent.log_format", flag "agent-log-format", "FORMAT", Type::Choice(&["human", "json"]),
        default Some("human"), check None,
        doc "`human` or `json` (one JSON object per line).",
        unset "",
        note "",
        docs "`human` or `json`",
        field log_format: LogFormat = (r, k) {
            Ok(match r.choice(k)? {
                "json" => LogFormat::Json,
                _ => LogFormat::Human,
            })
        };
    AGENT_LOG_LEVEL: "agent.log_level", flag "agent-log-level", "LEVEL",
        Type::Choice(&["error", "warn", "info", "debug", "trace"]), default Some("info"), check None,
        doc "`error`, `warn`, `info`, `debug` or `trace`.",
        unset "",
        note "",
        docs "`error`, `warn`, `info`, `debug`, `trace` (dependencies log at most `warn`)",
        field log_level: tracing::level_filters::LevelFilter = (r, k) {
            r.choice(k)?
                .parse::<tracing::level_filters::LevelFilter>()
                .map_err(|e| r.invalid(k, e.to_string()))
        };
    AGENT_METRICS_LISTEN: "agent.metrics_listen", flag "agent-metrics-listen", "ADDR|none", Type::Text,
        default Some("none"), check Some(check_metrics_listen),
        doc "Prometheus endpoint (GET /metrics) on this loopback address, e.g. 127.0.0.1:9464; `none`: off.",
        unset "",
        note "",
        docs "Prometheus endpoint `GET /metrics` on this loopback `IP:port`, e.g. `127.0.0.1:9464`; any other address is a configuration error (see \"Metrics\")",
        field metrics_listen: Option<std::net::SocketAddr> = (r, k) { parse_metrics_listen(&r.string(k)?.unwrap_or_default()).map_err(|m| r.invalid(k, m)) };
}

/// The docs table's default column of a key whose default the table shows differently.
fn docs_default(key: &Key) -> String {
    match (key.name, key.default) {
        ("aws.imds_endpoint", Some(d)) => format!("`AWS_EC2_METADATA_SERVICE_ENDPOINT`, then `{d}`"),
        ("agent.metrics_listen", Some(d)) => format!("`{d}` (off)"),
        (_, Some(d)) => format!("`{d}`"),
        (_, None) => key.unset.to_string(),
    }
}

/// docs/agent.md's table of keys, generated from [`KEYS`] (a test checks that the docs have it).
pub fn docs_table() -> String {
    let mut out =
        String::from("| key | flag | environment variable | default | meaning |\n| --- | --- | --- | --- | --- |\n");
    for key in KEYS {
        let bounds = key
            .bounds()
            .map(|(min, max)| format!(" ({} to {})", format_duration(min), format_duration(max)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | `--{}` | `{}` | {} | {}{bounds} |",
            key.name,
            key.flag,
            key.env,
            docs_default(key),
            key.docs
        );
    }
    out
}

/// The allowed range of the duration key `name` (every duration key has one).
pub fn duration_bounds(name: &str) -> Option<(Duration, Duration)> {
    KEYS.iter().find(|k| k.name == name).and_then(Key::bounds)
}

fn check_user(u: &str) -> Result<(), String> {
    if u.is_empty() || u.contains([':', '\n', '\0']) || u.len() > 64 {
        return Err("is not a user name or uid".into());
    }
    Ok(())
}

fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("`{region}` is not a region name"));
    }
    Ok(())
}

fn check_jit_url(url: &str) -> Result<(), String> {
    // The config it answers is a credential: only over TLS, or to this host (the test emulators).
    lifecycle_aws::function_url::jit_uri(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_instance_id(id: &str) -> Result<(), String> {
    if !id.starts_with("i-") || id.len() < 3 {
        return Err(format!("`{id}` is not an instance id (i-...)"));
    }
    Ok(())
}

fn check_http_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}` is not an http(s) URL"));
    }
    Ok(())
}

fn check_imds_endpoint(url: &str) -> Result<(), String> {
    crate::imds::Endpoint::parse(url).map(|_| ())
}

fn check_socket_text(path: &str) -> Result<(), String> {
    check_socket(Path::new(path))
}

fn parse_metrics_listen(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if text == "none" {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("`{text}` is not an IP:port address (e.g. 127.0.0.1:9464, [::1]:9464) or `none`"))?;
    crate::metrics::check_listen(addr)?;
    Ok(Some(addr))
}

fn check_metrics_listen(text: &str) -> Result<(), String> {
    parse_metrics_listen(text).map(|_| ())
}

/// Configuration errors. Each names the key and where its bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file has a key or section this version does not know.
    #[error("config file {path}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// A list of what is allowed there.
        hint: String,
    },
    /// A value could not be used.
    #[error("{key} (from {origin}): {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// `runner.mode = jit` (the default) without its endpoint.
    #[error("runner.mode is jit (the default), which needs runner.jit_url, the controller's JIT endpoint (Terraform output `jit_url`): set it in the config file, with {env} or with --{flag}; or set runner.mode = persistent to run a registered runner")]
    JitUrlMissing {
        /// Its variable.
        env: &'static str,
        /// Its flag.
        flag: &'static str,
    },
    /// A required key has no value.
    #[error("{key} is not set: set it in the config file, with {env} or with --{flag}")]
    Missing {
        /// The key.
        key: &'static str,
        /// Its variable.
        env: &'static str,
        /// Its flag.
        flag: &'static str,
    },
    /// The runner directory is unusable.
    #[error("runner.dir {path}: {message}")]
    RunnerDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// The configuration file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag --{flag}"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A raw value before typing: env vars and flags are strings; the file also has arrays and booleans.
#[derive(Clone, Debug, PartialEq)]
enum Raw {
    Str(String),
    List(Vec<String>),
    Bool(bool),
}

/// The environment as the configuration sees it (a snapshot, so tests need not touch the process).
#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The variables of this process that the configuration reads.
    pub fn from_process() -> Env {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.env).collect();
        names.extend([env_vars::CONFIG, env_vars::STD_AWS_REGION, env_vars::STD_IMDS_ENDPOINT]);
        let mut map = BTreeMap::new();
        for name in names {
            if let Ok(v) = std::env::var(name) {
                map.insert(name.to_string(), v);
            }
        }
        Env(map)
    }

    /// An environment from pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env(pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        // An empty variable counts as unset, as in most Unix tools (`FOO= cmd`).
        self.0.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// The configuration file that was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    /// Its path.
    pub path: PathBuf,
    /// Whether it existed and was read.
    pub loaded: bool,
}

/// Resolve the settings from flags (key name, value), the environment and the file that
/// `config_flag` / `RUNNER_LIFECYCLE_CONFIG` / the default path names.
pub fn resolve(
    flags: &[(&'static str, String)],
    config_flag: Option<&Path>,
    env: &Env,
) -> Result<Settings, ConfigError> {
    resolve_with_default(flags, config_flag, env, Path::new(DEFAULT_CONFIG_PATH))
}

/// [`resolve`] with another default file path (tests must not depend on the host's `/etc`).
pub fn resolve_with_default(
    flags: &[(&'static str, String)],
    config_flag: Option<&Path>,
    env: &Env,
    default_path: &Path,
) -> Result<Settings, ConfigError> {
    let (path, explicit) = match (config_flag, env.get(env_vars::CONFIG)) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (default_path.to_path_buf(), false),
    };
    let (file, loaded) = match std::fs::read_to_string(&path) {
        Ok(text) => (parse_file(&path, &text)?, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => (BTreeMap::new(), false),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let mut r = Resolver {
        flags,
        env,
        file,
        path: path.clone(),
        origins: BTreeMap::new(),
    };

    resolve_keys(&mut r, ConfigFile { path, loaded })
}

/// Whether `path` can be the hook socket.
fn check_socket(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("`{}` must be an absolute path", path.display()));
    }
    // sockaddr_un holds 108 bytes with the terminating NUL; the bind goes through a sibling name
    // a few bytes longer than the directory, so keep some room.
    if path.as_os_str().len() > 100 {
        return Err("is longer than 100 bytes (a Unix socket path is limited to 107)".into());
    }
    Ok(())
}

/// `agent.socket` alone, for `hook` and `status`: flag, then environment, then the file, then the
/// default, as [`resolve`] picks it, but without reading or checking any other key and without
/// retries. A source whose value is unusable (an unreadable or broken file, a relative path in the
/// environment) is skipped for the next one, and what was wrong comes back with the path (a broken
/// file is reported even when a flag or the environment names the socket): the hook must reach the
/// agent whatever else is wrong with the configuration. Only a bad `flag` is an error.
pub fn socket_path(
    flag: Option<&str>,
    config_flag: Option<&Path>,
    env: &Env,
) -> Result<(PathBuf, Option<String>), ConfigError> {
    socket_path_with_default(flag, config_flag, env, Path::new(DEFAULT_CONFIG_PATH))
}

/// [`socket_path`] with another default file path (tests).
pub fn socket_path_with_default(
    flag: Option<&str>,
    config_flag: Option<&Path>,
    env: &Env,
    default_path: &Path,
) -> Result<(PathBuf, Option<String>), ConfigError> {
    let key = key_spec("agent.socket");
    let invalid = |origin: Source, message: String| ConfigError::Invalid {
        key: key.name,
        origin: origin.to_string(),
        message,
    };
    // The file is read whatever wins, so that a broken one is always reported (only its syntax and
    // its agent.socket are looked at).
    let (file, explicit) = match (config_flag, env.get(env_vars::CONFIG)) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (default_path.to_path_buf(), false),
    };
    let from_file = match std::fs::read_to_string(&file) {
        Ok(text) => socket_in_file(&file, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(source) => Err(ConfigError::Read { path: file, source }),
    };
    // A file that cannot be read or parsed is worth a warning even when a flag or a variable wins.
    let file_warning = |r: &Result<Option<PathBuf>, ConfigError>| match r {
        Err(e @ (ConfigError::Read { .. } | ConfigError::Syntax { .. })) => Some(e.to_string()),
        _ => None,
    };
    if let Some(v) = flag {
        let path = PathBuf::from(v.trim());
        check_socket(&path).map_err(|m| invalid(Source::Flag(key.flag), m))?;
        return Ok((path, file_warning(&from_file)));
    }
    let mut skipped = None;
    if let Some(v) = env.get(key.env) {
        let path = PathBuf::from(v.trim());
        match check_socket(&path) {
            Ok(()) => return Ok((path, file_warning(&from_file))),
            Err(m) => skipped = Some(invalid(Source::Env(key.env), m).to_string()),
        }
    }
    match from_file {
        Ok(Some(path)) => return Ok((path, skipped)),
        Ok(None) => {}
        Err(e) => skipped = skipped.or(Some(e.to_string())),
    }
    Ok((PathBuf::from(key.default.unwrap_or(DEFAULT_SOCKET)), skipped))
}

/// `[agent] socket` in a configuration file's text, checked; nothing else of the file is looked at.
fn socket_in_file(path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let Some(value) = table.get("agent").and_then(|a| a.get("socket")) else {
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Invalid {
        key: "agent.socket",
        origin: Source::File(path.to_path_buf()).to_string(),
        message,
    };
    let socket = PathBuf::from(
        value
            .as_str()
            .ok_or_else(|| invalid("expected a string".into()))?
            .trim(),
    );
    check_socket(&socket).map_err(invalid)?;
    Ok(Some(socket))
}

/// Read the file into key -> raw value, refusing unknown sections and keys.
fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<&'static str, Raw>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let sections: Vec<&str> = {
        let mut s: Vec<&str> = KEYS
            .iter()
            .filter_map(|k| k.name.split_once('.').map(|(a, _)| a))
            .collect();
        s.dedup();
        s
    };
    let mut out = BTreeMap::new();
    for (section, value) in &table {
        let Some(inner) = value.as_table() else {
            let hint = format!(" (expected a section: [{}])", sections.join("], ["));
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: section.clone(),
                hint,
            });
        };
        if !sections.contains(&section.as_str()) {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: format!("[{section}]"),
                hint: format!(" (known sections: [{}])", sections.join("], [")),
            });
        }
        for (name, v) in inner {
            let full = format!("{section}.{name}");
            let Some(key) = KEYS.iter().find(|k| k.name == full) else {
                let known: Vec<&str> = KEYS
                    .iter()
                    .filter_map(|k| k.name.strip_prefix(section.as_str()).and_then(|n| n.strip_prefix('.')))
                    .collect();
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: full,
                    hint: format!(" (known keys in [{section}]: {})", known.join(", ")),
                });
            };
            let raw = match v {
                toml::Value::String(s) => Raw::Str(s.clone()),
                toml::Value::Boolean(b) => Raw::Bool(*b),
                toml::Value::Array(items) => {
                    let mut list = Vec::new();
                    for item in items {
                        match item.as_str() {
                            Some(s) => list.push(s.to_string()),
                            None => {
                                return Err(ConfigError::Invalid {
                                    key: key.name,
                                    origin: Source::File(path.to_path_buf()).to_string(),
                                    message: "array items must be strings".into(),
                                })
                            }
                        }
                    }
                    Raw::List(list)
                }
                other => {
                    return Err(ConfigError::Invalid {
                        key: key.name,
                        origin: Source::File(path.to_path_buf()).to_string(),
                        message: format!(
                            "expected a string{}, found {} (durations are strings like \"30s\")",
                            if key.value_name == "BOOL" { " or a boolean" } else { "" },
                            other.type_str()
                        ),
                    })
                }
            };
            out.insert(key.name, raw);
        }
    }
    Ok(out)
}

fn key_spec(name: &str) -> &'static Key {
    // The names below are literals of this module; a miss is a programming error caught by tests.
    KEYS.iter().find(|k| k.name == name).unwrap_or(&KEYS[0])
}

struct Resolver<'a> {
    flags: &'a [(&'static str, String)],
    env: &'a Env,
    file: BTreeMap<&'static str, Raw>,
    path: PathBuf,
    origins: BTreeMap<&'static str, (String, Source)>,
}

impl Resolver<'_> {
    /// The winning raw value and its source, without the default.
    fn pick(&self, name: &'static str) -> Option<(Raw, Source)> {
        let key = key_spec(name);
        if let Some((_, v)) = self.flags.iter().rev().find(|(k, _)| *k == name) {
            return Some((Raw::Str(v.clone()), Source::Flag(key.flag)));
        }
        if let Some(v) = self.env.get(key.env) {
            return Some((Raw::Str(v.to_string()), Source::Env(key.env)));
        }
        self.file
            .get(name)
            .map(|raw| (raw.clone(), Source::File(self.path.clone())))
    }

    fn record(&mut self, name: &'static str, shown: String, source: Source) {
        self.origins.insert(name, (shown, source));
    }

    fn invalid(&self, name: &'static str, message: String) -> ConfigError {
        let origin = self
            .origins
            .get(name)
            .map(|(_, s)| s.to_string())
            .or_else(|| self.pick(name).map(|(_, s)| s.to_string()))
            .unwrap_or_else(|| "default".into());
        ConfigError::Invalid {
            key: name,
            origin,
            message,
        }
    }

    fn default_string(&mut self, name: &'static str) -> String {
        let value = key_spec(name).default.unwrap_or("").to_string();
        self.record(name, value.clone(), Source::Default);
        value
    }

    /// A standard variable that stands in for an unset key, checked as the key would be.
    fn std_env(&mut self, name: &'static str, var: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(v) = self.env.get(var).map(|v| v.trim().to_string()) else {
            return Ok(None);
        };
        self.record(name, v.clone(), Source::Env(var));
        self.check(name, &v)?;
        Ok(Some(v))
    }

    /// The key's own check ([`Key::check`]), if it has one.
    fn check(&self, name: &'static str, value: &str) -> Result<(), ConfigError> {
        match key_spec(name).check {
            Some(check) => check(value).map_err(|m| self.invalid(name, m)),
            None => Ok(()),
        }
    }

    fn string_no_default(&mut self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match self.pick(name) {
            Some((Raw::Str(s), source)) => {
                let s = s.trim().to_string();
                self.record(name, s.clone(), source);
                self.check(name, &s)?;
                Ok(Some(s))
            }
            Some((_, source)) => {
                self.record(name, String::new(), source);
                Err(self.invalid(name, "expected a string".into()))
            }
            None => Ok(None),
        }
    }

    fn string(&mut self, name: &'static str) -> Result<Option<String>, ConfigError> {
        if let Some(s) = self.string_no_default(name)? {
            return Ok(Some(s));
        }
        Ok(key_spec(name).default.map(|_| self.default_string(name)))
    }

    /// One of the key's choices ([`Type::Choice`]).
    fn choice(&mut self, name: &'static str) -> Result<&'static str, ConfigError> {
        let text = self.string(name)?.unwrap_or_default();
        let Type::Choice(choices) = key_spec(name).ty else {
            return Err(self.invalid(name, "is not a choice".into()));
        };
        match choices.iter().find(|c| **c == text) {
            Some(c) => Ok(c),
            None => {
                let quoted: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
                let expected = match quoted.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, init)) => format!("{} or {last}", init.join(", ")),
                    None => String::new(),
                };
                Err(self.invalid(name, format!("`{text}`: expected {expected}")))
            }
        }
    }

    fn duration(&mut self, name: &'static str) -> Result<Duration, ConfigError> {
        let text = self.string(name)?.unwrap_or_default();
        self.bounded(name, &text)
    }

    /// A duration, or `none` where the key allows it.
    fn optional_duration(&mut self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.string(name)?.as_deref() {
            None | Some("none") => Ok(None),
            Some(text) => self.bounded(name, text).map(Some),
        }
    }

    /// `text` as a duration within the key's bounds ([`Key::bounds`]).
    fn bounded(&self, name: &'static str, text: &str) -> Result<Duration, ConfigError> {
        let (min, max) = duration_bounds(name).unwrap_or((Duration::ZERO, Duration::MAX));
        parse_duration_in(text, min, max).map_err(|m| self.invalid(name, m))
    }

    fn bool(&mut self, name: &'static str) -> Result<bool, ConfigError> {
        match self.pick(name) {
            Some((Raw::Bool(b), source)) => {
                self.record(name, b.to_string(), source);
                Ok(b)
            }
            Some((Raw::Str(s), source)) => {
                self.record(name, s.clone(), source);
                match s.trim() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    other => Err(self.invalid(name, format!("`{other}`: expected true or false"))),
                }
            }
            Some((Raw::List(_), source)) => {
                self.record(name, String::new(), source);
                Err(self.invalid(name, "expected true or false".into()))
            }
            None => Ok(self.default_string(name) == "true"),
        }
    }

    fn command(&mut self, name: &'static str) -> Result<Vec<String>, ConfigError> {
        let (words, shown, source) = match self.pick(name) {
            Some((Raw::List(list), source)) => {
                let shown = format!("{list:?}");
                (list, shown, source)
            }
            Some((Raw::Str(s), source)) => {
                let list: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                (list, s, source)
            }
            Some((Raw::Bool(_), source)) => {
                self.record(name, String::new(), source);
                return Err(self.invalid(name, "expected a command line".into()));
            }
            None => {
                let d = self.default_string(name);
                let list = d.split_whitespace().map(str::to_string).collect();
                (list, d, Source::Default)
            }
        };
        self.record(name, shown, source);
        if words.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(self.invalid(name, "the command is empty".into()));
        }
        Ok(words)
    }
}

impl Settings {
    /// The runner directory, which `agent` requires.
    pub fn require_runner_dir(&self) -> Result<&Path, ConfigError> {
        let key = key_spec("runner.dir");
        self.runner_dir.as_deref().ok_or(ConfigError::Missing {
            key: key.name,
            env: key.env,
            flag: key.flag,
        })
    }

    /// The JIT endpoint, which `runner.mode = jit` requires (`None` in the other modes).
    pub fn require_jit_url(&self) -> Result<Option<&str>, ConfigError> {
        if self.runner_mode != ListenerMode::Jit {
            return Ok(None);
        }
        let key = key_spec("runner.jit_url");
        self.jit_url.as_deref().map(Some).ok_or(ConfigError::JitUrlMissing {
            env: key.env,
            flag: key.flag,
        })
    }

    /// The listener program as it will be executed: relative programs are taken from `runner.dir`.
    pub fn listener_program(&self) -> Result<PathBuf, ConfigError> {
        let dir = self.require_runner_dir()?;
        let program = Path::new(self.runner_command.first().map(String::as_str).unwrap_or_default());
        Ok(if program.is_absolute() {
            program.to_path_buf()
        } else {
            dir.join(program)
        })
    }

    /// The account the listener runs as: `runner.user` from `/etc/passwd`, or `None` (the agent's
    /// own user).
    pub fn runner_account(&self) -> Result<Option<crate::runner_env::User>, ConfigError> {
        match &self.runner_user {
            None => Ok(None),
            Some(spec) => crate::runner_env::lookup_user(spec)
                .map(Some)
                .map_err(|message| ConfigError::Invalid {
                    key: "runner.user",
                    origin: self
                        .origins
                        .get("runner.user")
                        .map_or_else(|| "resolved settings".into(), |(_, s)| s.to_string()),
                    message,
                }),
        }
    }

    /// Check that the runner directory and the listener program exist (and `runner.user`), so a
    /// typo fails at start instead of as a relaunch loop.
    pub fn check_runner(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let account = self.runner_account()?;
        let dir = self.require_runner_dir()?;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConfigError::RunnerDir {
                    path: dir.to_path_buf(),
                    message: "is not a directory".into(),
                })
            }
            Err(e) => {
                return Err(ConfigError::RunnerDir {
                    path: dir.to_path_buf(),
                    message: format!("does not exist or is not readable ({e})"),
                })
            }
        }
        let program = self.listener_program()?;
        let found = match std::fs::metadata(&program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(ConfigError::RunnerDir {
                path: dir.to_path_buf(),
                message: format!("listener program {} is not an executable file", program.display()),
            }),
            Err(e) => Err(ConfigError::RunnerDir {
                path: dir.to_path_buf(),
                message: format!(
                    "listener program {} not found ({e}); is this the runner's install directory?",
                    program.display()
                ),
            }),
        };
        found?;
        self.check_runner_tree(account.as_ref())
    }

    /// Check that the runner's user (so the job) can change nothing the root agent executes or
    /// trusts: the runner directory, the listener program, `externals`, and every directory on the
    /// way to them, links followed ([`crate::tree`]). `account`: the listener's user; `None` (the
    /// listener runs as the agent's own user, who is then the job's too) checks nothing. Run at
    /// start and before each listener.
    pub fn check_runner_tree(&self, account: Option<&crate::runner_env::User>) -> Result<(), ConfigError> {
        let Some(user) = account.filter(|u| u.uid != rustix::process::geteuid().as_raw()) else {
            return Ok(());
        };
        let dir = self.require_runner_dir()?;
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(p)
            }
        };
        let program = self.listener_program()?;
        crate::tree::check_runner(&abs(dir), &abs(&program), user).map_err(|e| ConfigError::RunnerDir {
            path: dir.to_path_buf(),
            message: format!(
                "the runner's user `{}` (so any job) could change what the root agent runs: {e}. \
                 Lay the tree out with `runner-lifecycle install` (check it with `install --check`; \
                 docs/operations.md, \"The runner's tree\")",
                user.name
            ),
        })
    }

    /// How long a `job-started` report may wait for its `Runner.Worker` to show in `/proc`: two
    /// worker polls, at least 1 s. The started hook runs inside the worker (actions/runner
    /// src/Runner.Worker/JobExtension.cs), so a genuine report has a worker already; the grace only
    /// covers the polling lag and a slow tick.
    pub fn hook_grace(&self) -> Duration {
        (self.worker_poll * 2).max(Duration::from_secs(1))
    }

    /// The decision core's configuration; `hook` comes from discovery.
    pub fn core_config(&self, hook: Option<HookConfig>) -> CoreConfig {
        CoreConfig {
            hook,
            unprotect_delay: self.unprotect_delay,
            stop_grace: self.stop_grace,
            stop_deadline: self.stop_deadline,
            listener_mode: self.runner_mode,
            drain_on_rebalance: self.drain_on_rebalance,
            one_job_per_instance: self.one_job_per_instance,
            relaunch_delay: self.relaunch_delay,
            hook_grace: self.hook_grace(),
            handover: lifecycle_core::HandoverConfig {
                latch: self.handover_latch,
                release: self.release_registration,
                bound: self.handover_bound,
                ..Default::default()
            },
            ..CoreConfig::default()
        }
    }

    /// The resolved settings as TOML-like text with each value's source, for `--config-check`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# config file: {} ({})",
            self.config_file.path.display(),
            if self.config_file.loaded {
                "read"
            } else {
                "not found; defaults used"
            }
        );
        let _ = writeln!(out, "# precedence: flag > environment > file > default");
        let mut section = "";
        for key in KEYS {
            let (sec, name) = key.name.split_once('.').unwrap_or(("", key.name));
            if sec != section {
                let _ = writeln!(out, "\n[{sec}]");
                section = sec;
            }
            match self.origins.get(key.name) {
                Some((value, source)) => {
                    let _ = writeln!(out, "{name} = {}  # {source}", shown_value(key, value, self));
                }
                None => {
                    let note = if key.note.is_empty() { "no default" } else { key.note };
                    let _ = writeln!(out, "# {name}: not set ({note})");
                }
            }
        }
        out
    }
}

fn shown_value(key: &Key, raw: &str, s: &Settings) -> String {
    match key.name {
        "runner.command" => format!("{:?}", s.runner_command),
        "drain.on_rebalance" => s.drain_on_rebalance.to_string(),
        "runner.one_job_per_instance" => s.one_job_per_instance.to_string(),
        "drain.handover_latch" => s.handover_latch.to_string(),
        "drain.release_registration" => s.release_registration.to_string(),
        "runner.worker_poll" => format!("\"{}\"", format_duration(s.worker_poll)),
        _ => format!("{raw:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolve as the agent does, but with a default file that cannot exist: these tests must not
    /// depend on whatever `/etc/runner-lifecycle/config.toml` the host has.
    fn resolve_no_etc(flags: &[(&'static str, String)], env: &Env) -> Result<Settings, ConfigError> {
        resolve_with_default(flags, None, env, Path::new("/nonexistent/runner-lifecycle/config.toml"))
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("config.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rl-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn the_socket_alone_is_picked_like_the_agent_picks_it() {
        let no_etc = Path::new("/nonexistent/runner-lifecycle/config.toml");
        let pick =
            |flag: Option<&str>, file: Option<&Path>, env: &Env| socket_path_with_default(flag, file, env, no_etc);
        let (p, skipped) = pick(None, None, &Env::default()).expect("default");
        assert_eq!((p.as_path(), skipped.is_none()), (Path::new(DEFAULT_SOCKET), true));

        // The file's socket, whatever else the file holds (other keys are not even checked).
        let dir = tmpdir("socket-only");
        let file = write(
            &dir,
            "[agent]\nsocket = \"/run/x/agent.sock\"\n[runner]\nmode = \"bogus\"\n",
        );
        let (p, skipped) = pick(None, Some(&file), &Env::default()).expect("file");
        assert_eq!(p, Path::new("/run/x/agent.sock"));
        assert!(skipped.is_none());
        assert!(resolve_no_etc(&[], &Env::from_pairs([(env_vars::CONFIG, file.to_str().unwrap_or(""))])).is_err());

        // Environment over file, flag over both.
        let env = Env::from_pairs([(env_vars::AGENT_SOCKET, "/run/env.sock")]);
        assert_eq!(
            pick(None, Some(&file), &env).expect("env").0,
            Path::new("/run/env.sock")
        );
        assert_eq!(
            pick(Some("/run/flag.sock"), Some(&file), &env).expect("flag").0,
            Path::new("/run/flag.sock")
        );
        assert!(
            pick(Some("relative.sock"), None, &env).is_err(),
            "a bad flag is an error"
        );

        // A broken file or a bad variable is skipped, and said.
        let broken = write(&dir, "[[[");
        let (p, skipped) = pick(None, Some(&broken), &env).expect("env despite the file");
        assert_eq!(p, Path::new("/run/env.sock"));
        assert!(
            skipped.is_some_and(|e| e.contains("not valid TOML")),
            "a broken file is still reported"
        );
        let (p, skipped) = pick(None, Some(&broken), &Env::default()).expect("default");
        assert_eq!(p, Path::new(DEFAULT_SOCKET));
        assert!(
            skipped.as_deref().is_some_and(|e| e.contains("not valid TOML")),
            "{skipped:?}"
        );
        let bad_env = Env::from_pairs([(env_vars::AGENT_SOCKET, "agent.sock")]);
        let (p, skipped) = pick(None, None, &bad_env).expect("default");
        assert_eq!(p, Path::new(DEFAULT_SOCKET));
        assert!(skipped.is_some_and(|e| e.contains("absolute")));
        let missing = dir.join("missing.toml");
        let (_, skipped) = pick(None, Some(&missing), &Env::default()).expect("default");
        assert!(
            skipped.is_some_and(|e| e.contains("cannot read")),
            "an explicit file must exist"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_key_is_consistently_spelled() {
        for k in KEYS {
            let flag = k.name.replace(['.', '_'], "-");
            assert_eq!(k.flag, flag, "{}", k.name);
            let env = format!("RUNNER_LIFECYCLE_{}", k.name.replace('.', "_").to_ascii_uppercase());
            assert_eq!(k.env, env, "{}", k.name);
            assert_eq!(k.value_name.starts_with("DURATION"), k.bounds().is_some(), "{}", k.name);
            if let Type::Choice(choices) = k.ty {
                assert!(k.default.is_some_and(|d| choices.contains(&d)), "{}", k.name);
            }
        }
    }

    /// docs/agent.md's key table is the one generated from KEYS, row for row.
    #[test]
    fn the_docs_key_table_is_the_generated_one() {
        let docs = include_str!("../../../docs/agent.md");
        let table = crate::doc_table::table(docs, "| key | flag | environment variable |").expect("the key table");
        assert_eq!(format!("{table}\n"), docs_table());
    }

    #[test]
    fn docs_describe_every_key_flag_and_variable() {
        let docs = include_str!("../../../docs/agent.md");
        for k in KEYS {
            for needle in [
                format!("`{}`", k.name),
                format!("`--{}`", k.flag),
                format!("`{}`", k.env),
            ] {
                assert!(docs.contains(&needle), "docs/agent.md does not mention {needle}");
            }
        }
        assert!(docs.contains(env_vars::CONFIG) && docs.contains(DEFAULT_CONFIG_PATH));
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let d = tmpdir("defaults");
        let missing = d.join("absent.toml");
        // An explicitly named file that is missing is an error...
        let e = resolve(&[], Some(&missing), &Env::default()).expect_err("missing explicit file");
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        // ...the default path being absent is not.
        let s = resolve_with_default(&[], None, &Env::default(), &missing).expect("defaults");
        assert!(!s.config_file.loaded);
        assert_eq!(s.imds_poll, Duration::from_secs(1));
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.runner_command[0], "bin/Runner.Listener");
        assert_eq!(s.stop_deadline, None);
        assert_eq!(s.metrics_listen, None, "metrics are off by default");
        assert!(s.require_runner_dir().is_err());
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let d = tmpdir("precedence");
        let path = write(
            &d,
            "[runner]\ndir = \"/file\"\nstop_grace = \"7s\"\n[aws]\nimds_poll = \"2s\"\nregion = \"eu-west-1\"\n",
        );
        let env = Env::from_pairs([
            (env_vars::RUNNER_DIR, "/env"),
            (env_vars::AWS_IMDS_POLL, "3s"),
            (env_vars::STD_AWS_REGION, "us-west-2"),
        ]);
        let flags = vec![("runner.dir", "/flag".to_string())];
        let s = resolve(&flags, Some(&path), &env).expect("resolve");
        assert_eq!(s.runner_dir, Some(PathBuf::from("/flag")));
        assert_eq!(s.imds_poll, Duration::from_secs(3));
        assert_eq!(s.stop_grace, Duration::from_secs(7));
        assert_eq!(s.unprotect_delay, Duration::from_secs(30));
        // The project's own key (here from the file) beats the standard AWS variable.
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.origins["runner.dir"].1, Source::Flag("runner-dir"));
        assert_eq!(s.origins["aws.imds_poll"].1, Source::Env(env_vars::AWS_IMDS_POLL));
        assert_eq!(s.origins["runner.stop_grace"].1, Source::File(path.clone()));
        let text = s.render();
        assert!(text.contains("dir = \"/flag\"  # flag --runner-dir"), "{text}");
        assert!(text.contains("# group: not set"), "{text}");
    }

    #[test]
    fn standard_aws_variables_fill_in_after_ours() {
        let env = Env::from_pairs([
            (env_vars::STD_AWS_REGION, "us-east-1"),
            (env_vars::STD_IMDS_ENDPOINT, "http://127.0.0.1:9999"),
            (env_vars::CONFIG, "/nonexistent/runner-lifecycle.toml"),
        ]);
        // RUNNER_LIFECYCLE_CONFIG names a missing file: error, naming it.
        let e = resolve_no_etc(&[], &env).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/runner-lifecycle.toml"), "{e}");
        let env = Env::from_pairs([
            (env_vars::STD_AWS_REGION, "us-east-1"),
            (env_vars::STD_IMDS_ENDPOINT, "http://127.0.0.1:9999"),
        ]);
        let s = resolve_no_etc(&[], &env).expect("resolve");
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            s.imds_endpoint,
            crate::imds::Endpoint::parse("http://127.0.0.1:9999").expect("url")
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_with_the_known_ones_listed() {
        let d = tmpdir("unknown");
        let path = write(&d, "[runner]\ndir = \"/x\"\nstop_grace_secs = 5\n");
        let e = resolve(&[], Some(&path), &Env::default()).expect_err("unknown key");
        let msg = e.to_string();
        assert!(msg.contains("unknown key `runner.stop_grace_secs`"), "{msg}");
        assert!(msg.contains("stop_grace"), "{msg}");
        let path = write(&d, "[runer]\ndir = \"/x\"\n");
        let e = resolve(&[], Some(&path), &Env::default()).expect_err("unknown section");
        assert!(e.to_string().contains("[runer]"), "{e}");
        let path = write(&d, "dir = \"/x\"\n");
        assert!(resolve(&[], Some(&path), &Env::default()).is_err());
    }

    #[test]
    fn malformed_values_name_the_key_and_the_source() {
        let d = tmpdir("malformed");
        let path = write(&d, "[runner\ndir = \"/x\"\n");
        let e = resolve(&[], Some(&path), &Env::default()).expect_err("syntax");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");

        let path = write(&d, "[aws]\nimds_poll = 5\n");
        let e = resolve(&[], Some(&path), &Env::default()).expect_err("number");
        assert!(e.to_string().contains("aws.imds_poll"), "{e}");

        let env = Env::from_pairs([(env_vars::RUNNER_STOP_GRACE, "30")]);
        let e = resolve_no_etc(&[], &env).expect_err("no unit");
        let msg = e.to_string();
        assert!(
            msg.contains("runner.stop_grace") && msg.contains(env_vars::RUNNER_STOP_GRACE),
            "{msg}"
        );

        let flags = vec![("agent.log_format", "xml".to_string())];
        let e = resolve_no_etc(&flags, &Env::default()).expect_err("format");
        assert!(e.to_string().contains("--agent-log-format"), "{e}");

        let long_socket = format!("/{}/agent.sock", "d".repeat(100));
        for (key, value) in [
            ("runner.mode", "sometimes"),
            ("aws.imds_endpoint", "ftp://x"),
            ("aws.instance_id", "web-1"),
            ("agent.socket", "relative.sock"),
            ("agent.log_level", "chatty"),
            ("drain.on_rebalance", "maybe"),
            ("runner.worker_poll", "5s"),
            ("runner.command", "   "),
            ("agent.socket", &long_socket),
            ("agent.metrics_listen", "0.0.0.0:9464"),
            ("agent.metrics_listen", "10.1.2.3:9464"),
            ("agent.metrics_listen", "localhost:9464"),
            ("agent.metrics_listen", "9464"),
        ] {
            let flags = vec![(key, value.to_string())];
            let e = resolve_no_etc(&flags, &Env::default()).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    /// The keys table's defaults and CoreConfig::default (which the simulator runs) are the same
    /// values: a default changed in one and not the other fails here.
    #[test]
    fn the_tables_defaults_are_the_cores() {
        let s = resolve_no_etc(&[], &Env::default()).expect("the defaults resolve");
        assert_eq!(s.core_config(None), CoreConfig::default());
    }

    #[test]
    fn every_duration_key_is_bounded_and_documented() {
        let docs = include_str!("../../../docs/agent.md");
        for k in KEYS.iter().filter(|k| k.value_name.starts_with("DURATION")) {
            let (min, max) = duration_bounds(k.name).unwrap_or_else(|| panic!("{} has no bounds", k.name));
            let range = format!("({} to {})", format_duration(min), format_duration(max));
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", k.name)))
                .unwrap_or_else(|| panic!("no row for {} in docs/agent.md", k.name));
            assert!(row.contains(&range), "docs/agent.md row of {} lacks {range}", k.name);
            if let Some(default) = k.default.filter(|d| *d != "none") {
                let d = crate::duration::parse_duration(default).expect("default parses");
                assert!(
                    d >= min && d <= max,
                    "{}: default {default} out of its own range",
                    k.name
                );
            }
        }
    }

    #[test]
    fn durations_out_of_range_name_the_key_the_value_and_the_range() {
        // Regression: `aws.imds_poll = "5000000000000h"` was accepted.
        let d = tmpdir("bounds");
        let path = write(&d, "[aws]\nimds_poll = \"5000000000000h\"\n");
        let e = resolve(&[], Some(&path), &Env::default()).expect_err("huge poll");
        let msg = e.to_string();
        assert!(
            msg.contains("aws.imds_poll") && msg.contains("5000000000000h") && msg.contains("allowed 100ms to 1m"),
            "{msg}"
        );
        for (key, value) in [
            ("runner.worker_poll", "2ms"),
            ("runner.stop_grace", "0s"),
            ("runner.stop_grace", "2h"),
            ("runner.relaunch_delay", "0s"),
            ("aws.api_timeout", "10m"),
            ("aws.imds_poll", "50ms"),
            ("drain.unprotect_delay", "25h"),
            ("drain.stop_deadline", "0s"),
            ("drain.stop_deadline", "200h"),
        ] {
            let flags = vec![(key, value.to_string())];
            let e = resolve_no_etc(&flags, &Env::default()).expect_err(key);
            let msg = e.to_string();
            assert!(
                msg.contains(key) && msg.contains(value) && msg.contains("allowed"),
                "{key}: {msg}"
            );
        }
        // The edges are allowed.
        let flags = vec![
            ("drain.unprotect_delay", "0s".to_string()),
            ("aws.imds_poll", "1m".to_string()),
            ("drain.stop_deadline", "120h".to_string()),
        ];
        let s = resolve_no_etc(&flags, &Env::default()).expect("edges");
        assert_eq!(s.stop_deadline, Some(Duration::from_secs(120 * 3600)));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A TOML file of known sections and keys with arbitrary values of every TOML kind.
        fn toml_file() -> impl Strategy<Value = String> {
            let value = prop_oneof![
                any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
                "[0-9]{1,25}(ms|s|m|h)".prop_map(|s| toml::Value::String(s).to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                proptest::collection::vec(any::<String>(), 0..3)
                    .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()).to_string()),
                Just("1.5".to_string()),
                Just("{ a = 1 }".to_string()),
            ];
            let line = (0..KEYS.len(), value).prop_map(|(i, v)| {
                let (section, name) = KEYS[i].name.split_once('.').unwrap_or(("runner", "dir"));
                format!("[{section}]\n{name} = {v}\n")
            });
            proptest::collection::vec(line, 0..6).prop_map(|lines| lines.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Arbitrary text as the config file: parsed or refused, never a panic.
            #[test]
            fn any_text_is_parsed_or_refused(text in any::<String>()) {
                let _ = parse_file(Path::new("/x.toml"), &text);
            }

            /// Well-formed files with hostile values: settings within every bound, or an error
            /// naming a key.
            #[test]
            fn any_values_resolve_or_are_refused(text in toml_file()) {
                let _ = parse_file(Path::new("/x.toml"), &text);
                let d = std::env::temp_dir().join(format!("rl-config-props-{}", std::process::id()));
                std::fs::create_dir_all(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let p = d.join("config.toml");
                std::fs::write(&p, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match resolve(&[], Some(&p), &Env::default()) {
                    Ok(s) => {
                        for (name, value) in [
                            ("runner.worker_poll", s.worker_poll),
                            ("runner.stop_grace", s.stop_grace),
                            ("runner.relaunch_delay", s.relaunch_delay),
                            ("aws.api_timeout", s.api_timeout),
                            ("aws.imds_poll", s.imds_poll),
                            ("drain.unprotect_delay", s.unprotect_delay),
                        ] {
                            let (min, max) = duration_bounds(name).unwrap_or((Duration::ZERO, Duration::ZERO));
                            prop_assert!(value >= min && value <= max, "{name}: {value:?}");
                        }
                        let _ = s.render();
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }

            /// Flags and environment variables with arbitrary text.
            #[test]
            fn any_flag_or_env_value_resolves_or_is_refused(i in 0..KEYS.len(), value in any::<String>(), env in any::<bool>()) {
                let key = &KEYS[i];
                let result = if env {
                    resolve_with_default(&[], None, &Env::from_pairs([(key.env, value.as_str())]), Path::new("/nonexistent/x.toml"))
                } else {
                    resolve_with_default(&[(key.name, value.clone())], None, &Env::default(), Path::new("/nonexistent/x.toml"))
                };
                if let Err(e) = result {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn file_values_of_every_kind() {
        let d = tmpdir("kinds");
        let path = write(
            &d,
            r#"
[runner]
dir = "/opt/actions-runner"
command = ["/usr/bin/env", "Runner.Listener", "run"]
mode = "one-job"
[drain]
on_rebalance = true
stop_deadline = "6h"
[agent]
log_format = "json"
log_level = "debug"
socket_group = "runner"
metrics_listen = "[::1]:9464"
"#,
        );
        let s = resolve(&[], Some(&path), &Env::default()).expect("resolve");
        assert_eq!(s.runner_command, vec!["/usr/bin/env", "Runner.Listener", "run"]);
        assert_eq!(s.runner_mode, ListenerMode::OneJob);
        assert!(s.drain_on_rebalance);
        assert_eq!(s.stop_deadline, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.metrics_listen, Some("[::1]:9464".parse().expect("addr")));
        // A flag turns it off again over the file.
        let off = resolve(&[("agent.metrics_listen", "none".into())], Some(&path), &Env::default()).expect("off");
        assert_eq!(off.metrics_listen, None);
        assert_eq!(s.listener_program().expect("program"), PathBuf::from("/usr/bin/env"));
        let core = s.core_config(None);
        assert_eq!(core.listener_mode, ListenerMode::OneJob);
        assert_eq!(core.stop_deadline, Some(Duration::from_secs(6 * 3600)));
    }

    #[test]
    fn runner_dir_is_checked() {
        let d = tmpdir("runnerdir");
        let flags = vec![("runner.dir", d.join("nope").display().to_string())];
        let s = resolve_no_etc(&flags, &Env::default()).expect("resolve");
        let e = s.check_runner().expect_err("missing dir");
        assert!(e.to_string().contains("does not exist"), "{e}");

        let flags = vec![("runner.dir", d.display().to_string())];
        let s = resolve_no_etc(&flags, &Env::default()).expect("resolve");
        let e = s.check_runner().expect_err("missing program");
        assert!(e.to_string().contains("bin/Runner.Listener"), "{e}");

        std::fs::create_dir_all(d.join("bin")).expect("mkdir");
        let prog = d.join("bin/Runner.Listener");
        std::fs::write(&prog, "#!/bin/sh\n").expect("write");
        assert!(s.check_runner().is_err(), "not executable yet");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        s.check_runner().expect("usable");
    }
}
