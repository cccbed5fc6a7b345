//! `runner-lifecycle agent`: resolve the configuration, then run the agent (crates/agent).

use crate::exit_code::ExitCode;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use lifecycle_agent::agent::{self, AgentError, Outcome};
use lifecycle_agent::config::{self, ConfigError, Env, KEYS};
use lifecycle_agent::socket::SocketError;
use std::path::PathBuf;

/// Run the agent: supervise the runner listener and drain it on scale-in without cancelling a job.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file [default: /etc/runner-lifecycle/config.toml; env RUNNER_LIFECYCLE_CONFIG].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the resolved settings with where each came from, and exit.
    #[arg(long)]
    config_check: bool,
    #[command(flatten)]
    keys: KeyFlags,
}

/// One `--section-key VALUE` flag per configuration key, generated from the key table so the flags,
/// the environment variables and the file can never disagree.
#[derive(Debug, Default)]
pub struct KeyFlags(pub Vec<(&'static str, String)>);

impl FromArgMatches for KeyFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut set = Vec::new();
        for key in KEYS {
            if let Some(v) = matches.get_one::<String>(key.name) {
                set.push((key.name, v.clone()));
            }
        }
        Ok(KeyFlags(set))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for KeyFlags {
    fn augment_args(cmd: Command) -> Command {
        KEYS.iter().fold(cmd, |cmd, key| {
            let help = match key.default {
                Some(d) => format!("{} [default: {d}; env {}]", key.doc, key.env),
                None => format!("{} [env {}]", key.doc, key.env),
            };
            cmd.arg(
                Arg::new(key.name)
                    .long(key.flag)
                    .value_name(key.value_name)
                    .help(help)
                    .help_heading("Settings (flag > environment > file > default)"),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

pub fn run(args: &AgentArgs) -> ExitCode {
    let settings = match config::resolve(&args.keys.0, args.config.as_deref(), &Env::from_process()) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    if let Err(e) = settings.check_runner() {
        return config_error(&e);
    }
    if args.config_check {
        print!("{}", settings.render());
        return ExitCode::Ok;
    }
    lifecycle_agent::logging::init(settings.log_format, settings.log_level);
    match agent::run_blocking(settings) {
        Ok(Outcome::Stopped { .. }) => ExitCode::Ok,
        Err(AgentError::Config(e)) => config_error(&e),
        Err(e @ AgentError::Socket(SocketError::InUse(_))) => {
            eprintln!("runner-lifecycle agent: {e}");
            ExitCode::AlreadyRunning
        }
        Err(e) => {
            eprintln!("runner-lifecycle agent: {e}");
            ExitCode::Failure
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("runner-lifecycle agent: configuration error: {e}");
    ExitCode::Config
}
