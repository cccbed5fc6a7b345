//! `runner-lifecycle register`: configure the runner on this host with the registration token from
//! its per-instance secret or SSM parameter (crates/register). The token never appears on any argv,
//! in a log line or in an error text.

use crate::exit_code::ExitCode;
use clap::{Args, ValueEnum};
use lifecycle_agent::imds::{paths, Endpoint, ImdsClient};
use lifecycle_aws::{NameTemplate, RetryPolicy};
use lifecycle_register::aws::{RegisterAws, Store};
use lifecycle_register::{Done, Host, RegisterError, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// Where the token is kept.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TokenFrom {
    /// A Secrets Manager secret (what the controller writes).
    Secretsmanager,
    /// An SSM Parameter Store SecureString parameter.
    Ssm,
}

/// Register the GitHub runner on this host (run once before the agent first starts the listener).
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The runner's install directory (holds config.sh).
    #[arg(long, value_name = "DIR", env = "RUNNER_LIFECYCLE_RUNNER_DIR")]
    runner_dir: PathBuf,
    /// The runner URL: https://github.com/ORG or https://github.com/OWNER/REPO.
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_GITHUB_URL")]
    url: String,
    /// Runner name [default: the instance id].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Extra labels (comma-separated); the instance id and asg-<group> are always added.
    #[arg(
        long,
        value_name = "LABELS",
        value_delimiter = ',',
        env = "RUNNER_LIFECYCLE_RUNNER_LABELS"
    )]
    labels: Vec<String>,
    /// The runner group.
    #[arg(long, value_name = "GROUP", env = "RUNNER_LIFECYCLE_RUNNER_GROUP")]
    runner_group: Option<String>,
    /// The work folder.
    #[arg(long, value_name = "DIR")]
    work: Option<String>,
    /// Register an ephemeral (one-job) runner.
    #[arg(long)]
    ephemeral: bool,
    /// Pass --disableupdate to config.sh.
    #[arg(long)]
    disable_update: bool,
    /// Where the token is.
    #[arg(
        long,
        value_enum,
        default_value = "secretsmanager",
        env = "RUNNER_LIFECYCLE_TOKEN_FROM"
    )]
    token_from: TokenFrom,
    /// Secret or parameter name template ({group}, {instance_id}) [default:
    /// runner-lifecycle/{group}/{instance_id}, or /runner-lifecycle/{group}/{instance_id} for ssm].
    #[arg(long, value_name = "TEMPLATE", env = "RUNNER_LIFECYCLE_SECRET_TEMPLATE")]
    name_template: Option<String>,
    /// The instance id [default: from IMDS].
    #[arg(long, value_name = "ID", env = "RUNNER_LIFECYCLE_AWS_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The Auto Scaling group [default: DescribeAutoScalingInstances].
    #[arg(long, value_name = "NAME", env = "RUNNER_LIFECYCLE_AWS_GROUP")]
    group: Option<String>,
    /// AWS region [default: AWS_REGION, then IMDS].
    #[arg(long, value_name = "REGION", env = "AWS_REGION")]
    region: Option<String>,
    /// Endpoint override for AWS (tests: a loopback emulator).
    #[arg(long, value_name = "URL", env = "RUNNER_LIFECYCLE_AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// How long config.sh may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    config_timeout: u64,
}

fn imds_client() -> Result<ImdsClient, String> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("IMDS is disabled (AWS_EC2_METADATA_DISABLED); pass --instance-id and --region".into());
    }
    // The agent's setting first (aws.imds_endpoint), then the SDK's standard variable.
    let url = std::env::var("RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT")
        .or_else(|_| std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    Ok(ImdsClient::new(Endpoint::parse(&url)?))
}

async fn imds_read(imds: &mut Option<ImdsClient>, path: &str) -> Result<String, String> {
    if imds.is_none() {
        *imds = Some(imds_client()?);
    }
    let client = imds.as_mut().ok_or("no IMDS client")?;
    client
        .get_retrying(path, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("IMDS has no {path}"))
}

pub fn run(args: &RegisterArgs) -> ExitCode {
    crate::cmd_controller::init_logging(false);
    let fail = |e: RegisterError| {
        eprintln!("runner-lifecycle register: {e}");
        ExitCode::from(&e)
    };
    let store = match args.token_from {
        TokenFrom::Secretsmanager => Store::SecretsManager,
        TokenFrom::Ssm => Store::Ssm,
    };
    let default_template = match store {
        Store::SecretsManager => lifecycle_aws::DEFAULT_SECRET_TEMPLATE,
        Store::Ssm => lifecycle_aws::DEFAULT_PARAMETER_TEMPLATE,
    };
    let template = match NameTemplate::parse(args.name_template.as_deref().unwrap_or(default_template)) {
        Ok(t) => t,
        Err(e) => return fail(RegisterError::Config(e)),
    };
    if let Err(e) = lifecycle_github::Scope::from_runner_url(&args.url) {
        return fail(RegisterError::Config(e.to_string()));
    }
    // Checked before any AWS call, so a host without the runner fails fast and clearly.
    if let Err(e) = lifecycle_register::dir_state(&args.runner_dir) {
        return fail(e);
    }
    let spec = Spec {
        runner_dir: args.runner_dir.clone(),
        url: args.url.clone(),
        name: args.name.clone(),
        labels: args.labels.clone(),
        runner_group: args.runner_group.clone(),
        work: args.work.clone(),
        ephemeral: args.ephemeral,
        disable_update: args.disable_update,
        store,
        template,
        config_timeout: Duration::from_secs(args.config_timeout.max(1)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(RegisterError::Identity(format!("no async runtime: {e}"))),
    };
    runtime.block_on(async {
        let mut imds = None;
        let instance_id = match &args.instance_id {
            Some(id) => id.clone(),
            None => match imds_read(&mut imds, paths::INSTANCE_ID).await {
                Ok(id) => id,
                Err(e) => return fail(RegisterError::Identity(e)),
            },
        };
        if lifecycle_github::labels::as_instance_id(&instance_id).is_none() {
            return fail(RegisterError::Identity(format!(
                "`{instance_id}` is not an instance id"
            )));
        }
        let region = match args.region.clone().filter(|r| !r.is_empty()) {
            Some(r) => r,
            None => match imds_read(&mut imds, paths::REGION).await {
                Ok(r) => r,
                Err(e) => return fail(RegisterError::Identity(format!("no region: {e}"))),
            },
        };
        let sdk = lifecycle_aws::sdk_config(
            &region,
            args.endpoint_url.as_deref(),
            Duration::from_secs(10),
            RetryPolicy::Standard,
        )
        .await;
        let aws = RegisterAws::new(&sdk);
        let group = match &args.group {
            Some(g) => g.clone(),
            None => match aws.group_of(&instance_id).await {
                Ok(Some(g)) => g,
                Ok(None) => {
                    return fail(RegisterError::Identity(format!(
                        "{instance_id} is in no Auto Scaling group; pass --group"
                    )))
                }
                Err(e) => return fail(RegisterError::Identity(format!("DescribeAutoScalingInstances: {e}"))),
            },
        };
        let host = Host { instance_id, group };
        match lifecycle_register::register(&spec, &host, &aws, lifecycle_github::time::now_epoch()).await {
            Ok(Done::Registered {
                name,
                deleted,
                repaired,
            }) => {
                println!(
                    "runner-lifecycle register: runner {name} registered{}; token {} {deleted} deleted",
                    if repaired {
                        " (half-configured directory cleared first)"
                    } else {
                        ""
                    },
                    match store {
                        Store::SecretsManager => "secret",
                        Store::Ssm => "parameter",
                    }
                );
                ExitCode::Ok
            }
            Ok(Done::AlreadyConfigured) => {
                println!(
                    "runner-lifecycle register: runner already configured in {}; left alone",
                    spec.runner_dir.display()
                );
                ExitCode::Ok
            }
            Err(e) => fail(e),
        }
    })
}
