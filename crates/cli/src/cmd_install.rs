//! `runner-lifecycle install`: the systemd unit, the job hooks in the runner's `.env`, the directories,
//! and the IMDS fence; `--uninstall` takes them away again.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_install::{apply, paths, plan, plan_uninstall, InstallError, InstallOptions, Plan};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags of `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The GitHub runner's install directory (holding bin/Runner.Listener).
    #[arg(long, default_value = "/opt/actions-runner")]
    runner_dir: PathBuf,
    /// The user the runner, and so every job, runs as (the runner refuses root). The agent itself
    /// runs as root with a few capabilities and starts the listener as this user.
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
    /// Keep the runner's user (so every job) off the EC2 instance metadata service, and so off the
    /// instance role's credentials: a oneshot unit with nftables (or iptables) rules. The default.
    #[arg(long, overrides_with = "no_fence_imds")]
    fence_imds: bool,
    /// Do not fence IMDS (and remove an installed fence). Jobs can then use the instance role.
    #[arg(long, overrides_with = "fence_imds")]
    no_fence_imds: bool,
    /// The agent's listener mode, set in the unit's environment: `jit` (the default; needs
    /// --jit-url or runner.jit_url in the config file), `persistent` (a runner registered with
    /// `register`) or `one-job`. Unset: the config file's, else `jit`.
    #[arg(long, value_parser = lifecycle_core::ListenerMode::NAMES)]
    runner_mode: Option<String>,
    /// The controller's just-in-time config endpoint (Terraform output `jit_url`), set in the
    /// unit's environment.
    #[arg(long, value_parser = parse_jit_url)]
    jit_url: Option<String>,
    /// Remove what install wrote (units, fence, hook scripts, the hook lines of the runner's .env);
    /// keep the configuration and the state directory. Stop the units first.
    #[arg(long, conflicts_with = "print_unit")]
    uninstall: bool,
    /// How jobs get a container engine: `rootless` (a rootless Podman engine per listener as the
    /// runner's user, reset between jobs), `docker-group` (the runner's user in the docker group:
    /// every job is root on the host) or `none`. Unset: rootless when Podman is installed, else none.
    #[arg(long, value_parser = lifecycle_install::containers::Containers::NAMES)]
    containers: Option<String>,
    /// With --containers rootless: a read-only store of base images (root's; fill it while baking
    /// the image with `podman --root DIR pull IMAGE`) that every job runs from and none can change.
    /// Without it nothing is kept between jobs.
    #[arg(long, value_name = "DIR")]
    container_image_store: Option<PathBuf>,
    /// One instance per job: after its job the host leaves its group and a fresh instance replaces
    /// it (runner.one_job_per_instance in the unit's environment).
    #[arg(long)]
    one_job_per_instance: bool,
    /// Accept that every job is root on this host (--containers docker-group on a host that runs
    /// job after job).
    #[arg(long)]
    i_understand_jobs_are_root: bool,
    /// Change nothing; report every file, directory and entry of the runner's tree that is not as
    /// install would lay it out (docs/operations.md, "The runner's tree"), and exit 8 if any.
    #[arg(long, conflicts_with_all = ["print_unit", "uninstall", "dry_run"])]
    check: bool,
}

/// A JIT endpoint URL as the agent will accept it (https, or http to loopback), and nothing a
/// unit file would read differently (no whitespace or quotes).
fn parse_jit_url(url: &str) -> Result<String, String> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
    {
        return Err("a URL has no whitespace, quotes or backslashes".into());
    }
    lifecycle_aws::function_url::jit_uri(url).map_err(|e| e.to_string())?;
    Ok(url.to_string())
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
        fence_imds: !args.no_fence_imds,
        runner_mode: args.runner_mode.clone(),
        jit_url: args.jit_url.clone(),
        containers: args
            .containers
            .as_deref()
            .and_then(lifecycle_install::containers::Containers::parse),
        image_store: args.container_image_store.clone(),
        one_job_per_instance: args.one_job_per_instance,
        jobs_are_root_ok: args.i_understand_jobs_are_root,
    };
    if args.print_unit {
        let home = lifecycle_install::lookup_home(&opts.root, &opts.user);
        print!(
            "{}",
            lifecycle_install::unit::render(&opts.unit_options(home.as_deref()))
        );
        return ExitCode::Ok;
    }
    if args.uninstall {
        return uninstall(&opts, args.dry_run);
    }
    let plan = match plan(&opts) {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    if args.check {
        return check(&plan);
    }
    print!("{}", plan.describe());
    if args.containers.is_none() {
        println!(
            "runner-lifecycle install: containers: {} (the default {}; --containers to choose)",
            opts.containers().word(),
            match opts.containers() {
                lifecycle_install::containers::Containers::Rootless => "with Podman installed",
                _ => "without Podman",
            }
        );
    }
    if plan.is_noop() {
        println!("runner-lifecycle install: everything is already in place; nothing changed");
        return ExitCode::Ok;
    }
    if args.dry_run {
        println!("runner-lifecycle install: dry run; nothing changed");
        return ExitCode::Ok;
    }
    remove_fence_rules_first(&plan);
    if let Err(e) = apply(&plan) {
        return report(&e);
    }
    // The ptrace scope: the drop-in is written for every boot; on the host itself it is also
    // raised now (staging roots are an image's files, not this kernel).
    let sysctl = format!("/{}", paths::PTRACE_SYSCTL);
    if plan.root() == std::path::Path::new("/") {
        let now = lifecycle_install::ptrace::apply_now(std::path::Path::new(lifecycle_install::ptrace::PROC_PATH));
        println!("runner-lifecycle install: {now} ({sysctl})");
    } else {
        println!("runner-lifecycle install: kernel.yama.ptrace_scope = 1 at boot ({sysctl}) where the kernel has Yama");
    }
    let units = if opts.fence_imds {
        "runner-lifecycle-imds-fence runner-lifecycle"
    } else {
        "runner-lifecycle"
    };
    println!(
        "runner-lifecycle install: done. Next: systemctl daemon-reload && systemctl enable --now {units}\n\
         (and do not also install the runner's own service with svc.sh: the agent supervises the listener)"
    );
    ExitCode::Ok
}

/// `install --check`: one line per difference on stdout, exit 0 when there is none.
fn check(plan: &Plan) -> ExitCode {
    let problems = match plan.problems() {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    if problems.is_empty() {
        println!("runner-lifecycle install --check: everything is in place");
        return ExitCode::Ok;
    }
    for p in &problems {
        println!("{}", lifecycle_escape::escape(p));
    }
    eprintln!(
        "runner-lifecycle install --check: {} difference(s) from what install lays out; run install to fix them",
        problems.len()
    );
    ExitCode::NotInstalled
}

fn uninstall(opts: &InstallOptions, dry_run: bool) -> ExitCode {
    let plan = match plan_uninstall(opts) {
        Ok(p) => p,
        Err(e) => return report(&e),
    };
    print!("{}", plan.describe());
    if plan.is_noop() {
        println!("runner-lifecycle install --uninstall: nothing of runner-lifecycle is installed; nothing changed");
        return ExitCode::Ok;
    }
    if dry_run {
        println!("runner-lifecycle install --uninstall: dry run; nothing changed");
        return ExitCode::Ok;
    }
    remove_fence_rules_first(&plan);
    if let Err(e) = apply(&plan) {
        return report(&e);
    }
    println!(
        "runner-lifecycle install --uninstall: done; the configuration in /etc/runner-lifecycle and the state in\n\
         /var/lib/runner-lifecycle are kept. Next: systemctl daemon-reload (stop the units before uninstalling:\n\
         systemctl disable --now runner-lifecycle runner-lifecycle-imds-fence; the first drains the runner)"
    );
    ExitCode::Ok
}

/// On the host itself (root `/`), an IMDS fence about to be removed is lifted now, with its own
/// script, rather than at the next reboot; a staging root is never touched beyond its files.
fn remove_fence_rules_first(plan: &Plan) {
    if plan.root() != Path::new("/") || !plan.removes(paths::FENCE_SCRIPT) {
        return;
    }
    let script = Path::new("/").join(paths::FENCE_SCRIPT);
    match Command::new(&script).arg("remove").status() {
        Ok(s) if s.success() => println!("runner-lifecycle install: IMDS fence rules removed"),
        Ok(s) => eprintln!(
            "runner-lifecycle install: {} remove exited with {s}; the rules may stay until reboot",
            script.display()
        ),
        Err(e) => eprintln!(
            "runner-lifecycle install: cannot run {} ({e}); the rules may stay until reboot",
            script.display()
        ),
    }
}

fn report(e: &InstallError) -> ExitCode {
    eprintln!("runner-lifecycle install: error: {e}");
    ExitCode::from(e)
}
