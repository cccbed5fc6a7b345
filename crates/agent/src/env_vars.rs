//! Every environment variable the agent and the job hooks read, as one documented constant each
//! (docs/agent.md lists them with their keys). Nothing else in the crate names a variable.

/// Path of the TOML configuration file (flag `--config`). When it is set and the file is missing,
/// that is an error; the default path may be absent.
pub const CONFIG: &str = "RUNNER_LIFECYCLE_CONFIG";

/// The variable of each configuration key (`RUNNER_LIFECYCLE_` + the key, upper case), generated
/// from the key table in [`crate::config`], where each key is declared once.
pub use crate::config::vars::*;

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

/// The listener's way to take `--jitconfig` off argv: every non-empty `ACTIONS_RUNNER_INPUT_<NAME>`
/// counts as `--<name>` and is removed from the listener's environment at start (actions/runner
/// src/Runner.Listener/CommandSettings.cs; docs/controller.md, "How the runner consumes a JIT
/// config"). Set by the agent in JIT mode only.
pub const RUNNER_INPUT_JITCONFIG: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";
