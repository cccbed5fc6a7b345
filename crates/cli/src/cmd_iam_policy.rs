//! `runner-lifecycle iam-policy`: print the least-privilege policy document for the runner hosts'
//! instance profile (agent, hooks, register) or for the controller, generated from the one list of
//! AWS calls the code makes (lifecycle_controller::iam::CALLS, tested against the source).

use crate::exit_code::ExitCode;
use clap::{Args, ValueEnum};
use lifecycle_aws::NameTemplate;
use lifecycle_controller::iam::{self, Role, Target};
use lifecycle_controller::settings::DEFAULT_SECRET_TEMPLATE;

/// Which policy.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    /// The runner hosts' instance profile: agent, job hooks and register.
    Agent,
    /// The controller's role (Lambda execution role).
    Controller,
}

/// Print a least-privilege IAM policy document (JSON) scoped to one Auto Scaling group.
#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// The controller reads its GitHub credentials from this secret (grants GetSecretValue on it).
    #[arg(long, value_name = "NAME")]
    github_credentials_secret: Option<String>,
    /// The controller reads the GitHub webhook secret from this secret (grants GetSecretValue on it).
    #[arg(long, value_name = "NAME")]
    webhook_secret: Option<String>,
    /// The controller keeps its scaling state in this DynamoDB table (grants GetItem and PutItem).
    #[arg(long, value_name = "NAME")]
    state_table: Option<String>,
    /// The hosts fetch just-in-time runner configs from this controller function's `AWS_IAM`
    /// function URL (`NAME` or `NAME:ALIAS`, the URL's qualifier): grants the agent
    /// lambda:InvokeFunctionUrl (only while the URL's AuthType is AWS_IAM) and
    /// lambda:InvokeFunction (only through the URL) on it.
    #[arg(long, value_name = "NAME[:ALIAS]")]
    jit_function: Option<String>,
    /// The hosts run one instance per job (agent `runner.one_job_per_instance`): grants the agent
    /// autoscaling:TerminateInstanceInAutoScalingGroup on the group (to leave it after its job).
    #[arg(long)]
    one_job_per_instance: bool,
    /// Whose policy.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The Auto Scaling group.
    #[arg(long, value_name = "NAME")]
    group: String,
    /// Region [default: any].
    #[arg(long, value_name = "REGION", default_value = "*")]
    region: String,
    /// Account id [default: any].
    #[arg(long, value_name = "ACCOUNT", default_value = "*")]
    account: String,
    /// Partition.
    #[arg(long, default_value = "aws", value_parser = ["aws", "aws-cn", "aws-us-gov"])]
    partition: String,
    /// The per-instance secret name template (as given to register and the controller).
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_SECRET_TEMPLATE)]
    secret_template: String,
    /// The SSM parameter name template, when register reads the token from SSM.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = lifecycle_aws::DEFAULT_PARAMETER_TEMPLATE
    )]
    parameter_template: String,
}

pub fn run(args: &IamPolicyArgs) -> ExitCode {
    if let Some(name) = &args.github_credentials_secret {
        if name.is_empty() || name.contains(['*', '?', '"']) {
            eprintln!("runner-lifecycle iam-policy: --github-credentials-secret `{name}` is not a secret name");
            return ExitCode::Config;
        }
    }
    let bad = |msg: String| {
        eprintln!("runner-lifecycle iam-policy: {msg}");
        ExitCode::Config
    };
    if let Some(name) = &args.webhook_secret {
        if name.is_empty() || name.contains(['*', '?', '"']) {
            return bad(format!("--webhook-secret `{name}` is not a secret name"));
        }
    }
    if let Some(name) = &args.state_table {
        // DynamoDB table names: 3-255 of [A-Za-z0-9_.-].
        if name.len() < 3 || name.len() > 255 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return bad(format!("--state-table `{name}` is not a DynamoDB table name"));
        }
    }
    if let Some(f) = &args.jit_function {
        if let Err(e) = iam::check_function_name(f) {
            return bad(format!("--jit-function: {e}"));
        }
    }
    if args.account != "*" && !(args.account.len() == 12 && args.account.bytes().all(|b| b.is_ascii_digit())) {
        return bad(format!("--account `{}` is not a 12-digit account id", args.account));
    }
    if args.region != "*"
        && !args
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad(format!("--region `{}` is not a region name", args.region));
    }
    if args.group.is_empty() || args.group.contains(['*', '?', '"']) {
        return bad(format!("--group `{}` is not a group name", args.group));
    }
    if let Err(e) = iam::check_group_name(&args.group) {
        return bad(format!("--group: {e}"));
    }
    let secret = match NameTemplate::parse(&args.secret_template) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let parameter = match NameTemplate::parse(&args.parameter_template) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    // The policy grants `<prefix>*`: the prefix must belong to this group alone.
    if let Err(e) = iam::check_template_scope("--secret-template", secret.as_str()) {
        return bad(e);
    }
    if let Err(e) = iam::check_template_scope("--parameter-template", parameter.as_str()) {
        return bad(e);
    }
    let target = Target {
        group: args.group.clone(),
        region: args.region.clone(),
        account: args.account.clone(),
        partition: args.partition.clone(),
        secret_prefix: secret.prefix(&args.group),
        parameter_prefix: parameter.prefix(&args.group),
        credentials_secret: args.github_credentials_secret.clone(),
        webhook_secret: args.webhook_secret.clone(),
        state_table: args.state_table.clone(),
        jit_function: args.jit_function.clone(),
        one_job_per_instance: args.one_job_per_instance,
    };
    let role = match args.role {
        RoleArg::Agent => Role::Agent,
        RoleArg::Controller => Role::Controller,
    };
    let doc = iam::policy(role, &target);
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("runner-lifecycle iam-policy: {e}");
            ExitCode::Failure
        }
    }
}
