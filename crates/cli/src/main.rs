//! `runner-lifecycle`: one binary, one subcommand per job. `main` only parses and dispatches.

mod cmd_agent;
mod cmd_audit;
mod cmd_controller;
mod cmd_hook;
mod cmd_iam_policy;
mod cmd_install;
mod cmd_jit_config;
mod cmd_register;
mod cmd_simulate;
mod cmd_status;
mod exit_code;
mod simulate_ranges;

use clap::{Parser, Subcommand};

/// Graceful scale-in for self-hosted GitHub Actions runners on EC2 Auto Scaling groups.
#[derive(Debug, Parser)]
#[command(name = "runner-lifecycle", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the deterministic fleet simulation and compare scale-in strategies.
    // Boxed like the controller's: its many flags (clippy::large_enum_variant).
    Simulate(Box<cmd_simulate::SimulateArgs>),
    /// Run the agent on a runner host: supervise the listener, drain it on scale-in, never cancel a job.
    Agent(cmd_agent::AgentArgs),
    /// Show what the running agent sees and what it will do next (exit 6 when no agent runs).
    Status(cmd_status::StatusArgs),
    /// Job hook for the runner (job-started / job-completed); prints one line, always exits 0.
    Hook(cmd_hook::HookArgs),
    /// Install the agent's systemd unit, wire the job hooks into the runner's .env, create its directories.
    Install(cmd_install::InstallArgs),
    /// Register the runner on this host with the token from its per-instance secret (never on argv).
    Register(cmd_register::RegisterArgs),
    /// The fleet controller: handle an EventBridge event, sweep, or serve as an AWS Lambda.
    // Boxed: its many settings would otherwise make every variant as large (clippy::large_enum_variant).
    Controller(Box<cmd_controller::ControllerArgs>),
    /// Print a least-privilege IAM policy for the runner hosts or the controller.
    IamPolicy(cmd_iam_policy::IamPolicyArgs),
    /// Audit the fleet's job losses in a period from GitHub's own records (docs/audit.md).
    Audit(Box<cmd_audit::AuditArgs>),
    /// Fetch a just-in-time runner config for this instance from the controller's function URL.
    JitConfig(cmd_jit_config::JitConfigArgs),
}

fn main() -> std::process::ExitCode {
    // The agent's listener launcher (not a user command, so not in clap's help): set the runner
    // user's groups, gid and uid, then exec the listener. Before anything else: it must run
    // single-threaded (lifecycle_agent::runner_env::exec_as).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == lifecycle_agent::runner_env::EXEC_AS) {
        let e = lifecycle_agent::runner_env::exec_as(argv.get(2..).unwrap_or_default());
        eprintln!("runner-lifecycle exec-as: cannot start the listener: {e}");
        return exit_code::ExitCode::Failure.into();
    }
    // Between two jobs, as the runner's user through the launcher (lifecycle_agent::cleaner).
    if argv
        .get(1)
        .is_some_and(|a| a == lifecycle_agent::cleaner::CLEAN_JOB_STATE)
    {
        return std::process::ExitCode::from(lifecycle_agent::cleaner::run(argv.get(2..).unwrap_or_default()));
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Simulate(args) => cmd_simulate::run(&args),
        Command::Agent(args) => cmd_agent::run(&args),
        Command::Status(args) => cmd_status::run(&args),
        Command::Hook(args) => cmd_hook::run(&args),
        Command::Install(args) => cmd_install::run(&args),
        Command::Register(args) => cmd_register::run(&args),
        Command::Controller(args) => cmd_controller::run(&args),
        Command::IamPolicy(args) => cmd_iam_policy::run(&args),
        Command::JitConfig(args) => cmd_jit_config::run(&args),
        Command::Audit(args) => cmd_audit::run(&args),
    };
    code.into()
}
