//! `runner-lifecycle jit-config`: fetch one just-in-time runner config from the controller's
//! `AWS_IAM` function URL with this host's AWS credentials (lifecycle_aws::function_url). An
//! operator's check that the IAM path works end to end, and the way tests drive the client.
//!
//! The config is a credential: it is never printed. Without `--config-out` only the runner's
//! name and id are printed (the registration is left to the never-online sweep); with it, the
//! config is written to a new file, mode 0600, that must not exist yet.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_aws::function_url::fetch_jit_config;
use lifecycle_aws::RetryPolicy;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Fetch a just-in-time runner config for this instance from the controller (prints the runner's
/// name and id as JSON, never the config).
#[derive(Debug, Args)]
pub struct JitConfigArgs {
    /// The controller's JIT function URL (`https://...lambda-url...on.aws/`); the agent's
    /// `runner.jit_url` variable, RUNNER_LIFECYCLE_RUNNER_JIT_URL (the old RUNNER_LIFECYCLE_JIT_URL
    /// is still read, with a deprecation warning).
    #[arg(long, value_name = "URL", env = lifecycle_agent::config::vars::RUNNER_JIT_URL)]
    url: Option<String>,
    /// Write the config to this new file (mode 0600; refused if it exists).
    #[arg(long, value_name = "PATH")]
    config_out: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
    /// AWS region (the function's).
    #[arg(long, value_name = "REGION", env = "AWS_REGION")]
    region: Option<String>,
}

/// The variable `jit-config` read before it took the agent's name; still read, with a warning.
pub const DEPRECATED_URL_VAR: &str = "RUNNER_LIFECYCLE_JIT_URL";

/// The URL: the flag or the agent's variable, else the deprecated variable (warned about).
fn url(args: &JitConfigArgs, old: Option<String>) -> Result<String, String> {
    if let Some(u) = args.url.clone().filter(|u| !u.is_empty()) {
        return Ok(u);
    }
    match old.filter(|u| !u.is_empty()) {
        Some(u) => {
            eprintln!(
                "runner-lifecycle jit-config: warning: {DEPRECATED_URL_VAR} is deprecated; set {} (the agent's runner.jit_url)",
                lifecycle_agent::config::vars::RUNNER_JIT_URL
            );
            Ok(u)
        }
        None => Err(format!(
            "no JIT URL: --url or {}",
            lifecycle_agent::config::vars::RUNNER_JIT_URL
        )),
    }
}

pub fn run(args: &JitConfigArgs) -> ExitCode {
    let url = match url(args, std::env::var(DEPRECATED_URL_VAR).ok()) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("runner-lifecycle jit-config: configuration error: {e}");
            return ExitCode::Config;
        }
    };
    let Some(region) = args.region.clone().filter(|r| !r.is_empty()) else {
        eprintln!("runner-lifecycle jit-config: configuration error: no AWS region: --region or AWS_REGION");
        return ExitCode::Config;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner-lifecycle jit-config: no async runtime: {e}");
            return ExitCode::Failure;
        }
    };
    let timeout = Duration::from_secs(args.timeout.clamp(1, 300));
    let result = runtime.block_on(async {
        let sdk = lifecycle_aws::sdk_config(&region, None, timeout, RetryPolicy::Standard).await;
        fetch_jit_config(&url, &sdk, timeout).await
    });
    let grant = match result {
        Ok(g) => g,
        Err(e) => {
            eprintln!("runner-lifecycle jit-config: {e}");
            return ExitCode::from(&e);
        }
    };
    if let Some(path) = &args.config_out {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(grant.encoded_jit_config.expose().as_bytes()));
        if let Err(e) = written {
            eprintln!("runner-lifecycle jit-config: writing {}: {e}", path.display());
            return ExitCode::Failure;
        }
    }
    println!(
        "{}",
        serde_json::json!({"runner_name": grant.runner_name, "runner_id": grant.runner_id})
    );
    ExitCode::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>) -> JitConfigArgs {
        JitConfigArgs {
            url: url.map(str::to_string),
            config_out: None,
            timeout: 10,
            region: None,
        }
    }

    #[test]
    fn the_url_is_the_agents_variable_and_the_old_name_still_works() {
        assert_eq!(
            lifecycle_agent::config::vars::RUNNER_JIT_URL,
            "RUNNER_LIFECYCLE_RUNNER_JIT_URL"
        );
        assert_eq!(
            url(&args(Some("https://a/")), Some("https://old/".into())),
            Ok("https://a/".into())
        );
        assert_eq!(url(&args(None), Some("https://old/".into())), Ok("https://old/".into()));
        assert!(url(&args(None), None).is_err_and(|e| e.contains("RUNNER_LIFECYCLE_RUNNER_JIT_URL")));
        assert!(url(&args(Some("")), Some(String::new())).is_err());
    }
}
