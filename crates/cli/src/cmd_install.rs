//! `runner-lifecycle install`: the systemd unit, the job hooks in the runner's `.env`, the directories.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_install::{apply, plan, InstallError, InstallOptions};
use std::path::PathBuf;

/// Flags of `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The GitHub runner's install directory (holding bin/Runner.Listener).
    #[arg(long, default_value = "/opt/actions-runner")]
    runner_dir: PathBuf,
    /// The user the runner and the agent run as (the runner refuses root).
    #[arg(long, default_value = "runner")]
    user: String,
    /// The agent binary as the unit and the hooks call it. Default: this binary's own path.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Install below this directory instead of / (baking an image, staging, tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Print what would change and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the rendered systemd unit and exit.
    #[arg(long)]
    print_unit: bool,
}

/// Run `install`.
pub fn run(args: &InstallArgs) -> ExitCode {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("runner-lifecycle install: cannot find this binary's path ({e}); pass --binary");
                return ExitCode::Config;
            }
        },
    };
    let opts = InstallOptions {
        root: args.root.clone(),
        runner_dir: args.runner_dir.clone(),
        user: args.user.clone(),
        binary,
    };
    if args.print_unit {
        print!("{}", lifecycle_install::unit::render(&opts.unit_options()));
        return ExitCode::Ok;
    }
    let plan = match plan(&opts) {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    print!("{}", plan.describe());
    if plan.is_noop() {
        println!("runner-lifecycle install: everything is already in place; nothing changed");
        return ExitCode::Ok;
    }
    if args.dry_run {
        println!("runner-lifecycle install: dry run; nothing changed");
        return ExitCode::Ok;
    }
    if let Err(e) = apply(&plan) {
        return report(&e);
    }
    println!(
        "runner-lifecycle install: done. Next: systemctl daemon-reload && systemctl enable --now runner-lifecycle\n\
         (and do not also install the runner's own service with svc.sh: the agent supervises the listener)"
    );
    ExitCode::Ok
}

fn report(e: &InstallError) -> ExitCode {
    eprintln!("runner-lifecycle install: error: {e}");
    match e {
        InstallError::Io { .. } => ExitCode::Failure,
        _ => ExitCode::Config,
    }
}
