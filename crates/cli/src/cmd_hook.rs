//! `runner-lifecycle hook job-started|job-completed`: the runner's job hooks. They print one line
//! into the job log and always exit 0, because a failing hook fails the job
//! (actions/runner src/Runner.Worker/JobExtension.cs). They run as the runner's user, which is the
//! job's user, so they talk to the agent only: no IMDS read, no AWS call, no instance role needed
//! (docs/security.md). An unreachable agent is reported in that line and the hook returns at once;
//! the agent sees the job's `Runner.Worker` in `/proc` on its own.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_agent::config::{self, Env};
use lifecycle_agent::hook::{self, HookEvent};
use std::path::PathBuf;

/// Tell the agent a job started or completed (point ACTIONS_RUNNER_HOOK_JOB_STARTED/COMPLETED at a
/// script that runs this). Talks to the agent only, never to AWS. Always exits 0.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// `job-started` or `job-completed` (anything else, or nothing, is reported and ignored).
    #[arg(value_name = "EVENT")]
    event: Option<String>,
    /// Configuration file [default: /etc/runner-lifecycle/config.toml; env RUNNER_LIFECYCLE_CONFIG].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The agent's socket [env RUNNER_LIFECYCLE_AGENT_SOCKET].
    #[arg(long, value_name = "PATH")]
    agent_socket: Option<String>,
}

pub fn run(args: &HookArgs) -> ExitCode {
    let word = args.event.as_deref().unwrap_or_default();
    let Some(event) = HookEvent::parse(word) else {
        println!(
            "runner-lifecycle: unknown hook `{}` (expected job-started or job-completed); nothing done",
            word.chars().take(40).collect::<String>()
        );
        return ExitCode::Ok;
    };
    // Only the socket path is read (no other key, no retries): a broken config file must not fail
    // the job, so an unusable source is skipped and named in the same line.
    let (socket, warning) = match config::socket_path(
        args.agent_socket.as_deref(),
        args.config.as_deref(),
        &Env::from_process(),
    ) {
        Ok(found) => found,
        Err(e) => {
            println!("runner-lifecycle: {word}: configuration unusable ({e}); nothing done");
            return ExitCode::Ok;
        }
    };
    let line = hook::run(event, &socket);
    match warning {
        Some(w) => println!("{line} (config ignored: {w})"),
        None => println!("{line}"),
    }
    ExitCode::Ok
}
