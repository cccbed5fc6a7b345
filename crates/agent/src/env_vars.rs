//! Every environment variable the agent and the job hooks read, as one documented constant each
//! (docs/agent.md lists them with their keys). Nothing else in the crate names a variable.

/// Path of the TOML configuration file (flag `--config`). When it is set and the file is missing,
/// that is an error; the default path may be absent.
pub const CONFIG: &str = "RUNNER_LIFECYCLE_CONFIG";

/// `runner.dir`: the runner's install directory (the one holding `bin/Runner.Listener`).
pub const RUNNER_DIR: &str = "RUNNER_LIFECYCLE_RUNNER_DIR";
/// `runner.command`: the listener command line, split at whitespace.
pub const RUNNER_COMMAND: &str = "RUNNER_LIFECYCLE_RUNNER_COMMAND";
/// `runner.mode`: `persistent` or `one-job`.
pub const RUNNER_MODE: &str = "RUNNER_LIFECYCLE_RUNNER_MODE";
/// `runner.worker_poll`: how often the listener's children are checked for `Runner.Worker`.
pub const RUNNER_WORKER_POLL: &str = "RUNNER_LIFECYCLE_RUNNER_WORKER_POLL";
/// `runner.stop_grace`: SIGINT to SIGKILL delay for an idle listener.
pub const RUNNER_STOP_GRACE: &str = "RUNNER_LIFECYCLE_RUNNER_STOP_GRACE";
/// `runner.relaunch_delay`: delay before relaunching a listener that asked for it.
pub const RUNNER_RELAUNCH_DELAY: &str = "RUNNER_LIFECYCLE_RUNNER_RELAUNCH_DELAY";
/// `runner.user`: the user (name or uid) the listener runs as; unset: the agent's own user.
pub const RUNNER_USER: &str = "RUNNER_LIFECYCLE_RUNNER_USER";

/// `aws.region`.
pub const AWS_REGION: &str = "RUNNER_LIFECYCLE_AWS_REGION";
/// `aws.instance_id`.
pub const AWS_INSTANCE_ID: &str = "RUNNER_LIFECYCLE_AWS_INSTANCE_ID";
/// `aws.group`: the Auto Scaling group name.
pub const AWS_GROUP: &str = "RUNNER_LIFECYCLE_AWS_GROUP";
/// `aws.hook`: the termination lifecycle hook name.
pub const AWS_HOOK: &str = "RUNNER_LIFECYCLE_AWS_HOOK";
/// `aws.endpoint_url`: Auto Scaling endpoint override.
pub const AWS_ENDPOINT_URL: &str = "RUNNER_LIFECYCLE_AWS_ENDPOINT_URL";
/// `aws.api_timeout`: the longest one Auto Scaling call may take.
pub const AWS_API_TIMEOUT: &str = "RUNNER_LIFECYCLE_AWS_API_TIMEOUT";
/// `aws.imds_endpoint`: base URL of the instance metadata service.
pub const AWS_IMDS_ENDPOINT: &str = "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT";
/// `aws.imds_poll`: how often IMDS is polled.
pub const AWS_IMDS_POLL: &str = "RUNNER_LIFECYCLE_AWS_IMDS_POLL";

/// `drain.unprotect_delay`.
pub const DRAIN_UNPROTECT_DELAY: &str = "RUNNER_LIFECYCLE_DRAIN_UNPROTECT_DELAY";
/// `drain.stop_deadline` (`none` for no deadline).
pub const DRAIN_STOP_DEADLINE: &str = "RUNNER_LIFECYCLE_DRAIN_STOP_DEADLINE";
/// `drain.on_rebalance`.
pub const DRAIN_ON_REBALANCE: &str = "RUNNER_LIFECYCLE_DRAIN_ON_REBALANCE";

/// `agent.socket`: the job-hook Unix socket. Read by `hook` too.
pub const AGENT_SOCKET: &str = "RUNNER_LIFECYCLE_AGENT_SOCKET";
/// `agent.socket_group`: group allowed to use the socket (mode 0660 instead of 0600).
pub const AGENT_SOCKET_GROUP: &str = "RUNNER_LIFECYCLE_AGENT_SOCKET_GROUP";
/// `agent.log_format`: `human` or `json`.
pub const AGENT_LOG_FORMAT: &str = "RUNNER_LIFECYCLE_AGENT_LOG_FORMAT";
/// `agent.log_level`: `error`, `warn`, `info`, `debug` or `trace`.
pub const AGENT_LOG_LEVEL: &str = "RUNNER_LIFECYCLE_AGENT_LOG_LEVEL";
/// `agent.metrics_listen`: loopback address of the Prometheus endpoint, or `none` (off).
pub const AGENT_METRICS_LISTEN: &str = "RUNNER_LIFECYCLE_AGENT_METRICS_LISTEN";

/// Standard AWS variable, used for the region when `aws.region` is not set (before IMDS).
pub const STD_AWS_REGION: &str = "AWS_REGION";
/// Standard AWS variable, used for the IMDS endpoint when `aws.imds_endpoint` is not set.
pub const STD_IMDS_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";

/// systemd's notification socket (sd_notify(3)); set by systemd for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// systemd's watchdog period in microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Every variable above that maps to a configuration key, in `--config-check` order.
pub const ALL_KEYS: &[&str] = &[
    RUNNER_DIR,
    RUNNER_COMMAND,
    RUNNER_MODE,
    RUNNER_WORKER_POLL,
    RUNNER_STOP_GRACE,
    RUNNER_RELAUNCH_DELAY,
    RUNNER_USER,
    AWS_REGION,
    AWS_INSTANCE_ID,
    AWS_GROUP,
    AWS_HOOK,
    AWS_ENDPOINT_URL,
    AWS_API_TIMEOUT,
    AWS_IMDS_ENDPOINT,
    AWS_IMDS_POLL,
    DRAIN_UNPROTECT_DELAY,
    DRAIN_STOP_DEADLINE,
    DRAIN_ON_REBALANCE,
    AGENT_SOCKET,
    AGENT_SOCKET_GROUP,
    AGENT_LOG_FORMAT,
    AGENT_LOG_LEVEL,
    AGENT_METRICS_LISTEN,
];
