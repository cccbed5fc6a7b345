//! `runner-lifecycle jit-config`: fetch one just-in-time runner config from the controller's
//! `AWS_IAM` function URL with this host's AWS credentials (lifecycle_aws::function_url). An
//! operator's check that the IAM path works end to end, and the way tests drive the client.
//!
//! The config is a credential: it is never printed. Without `--config-out` only the runner's
//! name and id are printed (the registration is left to the never-online sweep); with it, the
//! config is written to a new file, mode 0600, that must not exist yet.

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_aws::function_url::{fetch_jit_config, JitFetchError};
use lifecycle_aws::RetryPolicy;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Fetch a just-in-time runner config for this instance from the controller (prints the runner's
/// name and id as JSON, never the config).
#[derive(Debug, Args)]
pub struct JitConfigArgs {
    /// The controller's JIT function URL (`https://...lambda-url...on.aws/`).
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_JIT_URL")]
    url: String,
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

pub fn run(args: &JitConfigArgs) -> ExitCode {
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
        fetch_jit_config(&args.url, &sdk, timeout).await
    });
    let grant = match result {
        Ok(g) => g,
        Err(e) => {
            eprintln!("runner-lifecycle jit-config: {e}");
            return match e {
                JitFetchError::Retryable { .. } => ExitCode::Retryable,
                JitFetchError::Refused { .. } | JitFetchError::Outstanding { .. } => ExitCode::JitRefused,
                JitFetchError::Config(_) => ExitCode::Config,
            };
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
