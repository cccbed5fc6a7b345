//! Least-privilege IAM policies, generated from [`CALLS`]: the one list of every AWS API operation
//! runner-lifecycle's code calls, which part calls it, and how far IAM lets it be scoped. A test
//! below reads the source files that make the calls and fails when the list and the code differ.

use serde_json::{json, Value};

/// A part of runner-lifecycle that calls AWS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `runner-lifecycle agent` (crates/agent/src/asg.rs).
    Agent,
    /// `runner-lifecycle hook`'s fallback when the agent does not answer (same file).
    Hook,
    /// `runner-lifecycle register` (crates/register/src/aws.rs).
    Register,
    /// `runner-lifecycle controller` and its Lambda (crates/controller/src/aws.rs).
    Controller,
}

/// Which policy: the instance profile of the runner hosts, or the controller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runner hosts: agent, hooks and register.
    Agent,
    /// The controller (Lambda execution role or wherever `controller` runs).
    Controller,
}

impl Role {
    /// The parts whose calls the role needs.
    pub fn parts(self) -> &'static [Part] {
        match self {
            Role::Agent => &[Part::Agent, Part::Hook, Part::Register],
            Role::Controller => &[Part::Controller],
        }
    }
}

/// How far an action's resources can be narrowed (AWS Service Authorization Reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The action supports no resource-level permission (`Describe*`, `ListSecrets`): `*`.
    Any,
    /// The Auto Scaling group's ARN.
    Group,
    /// The Auto Scaling group's ARN, granted only to hosts that run one instance per job
    /// ([`Target::one_job_per_instance`]): the agent's own termination with a replacement.
    GroupOneJobPerInstance,
    /// Secrets under the per-instance template's prefix for the group.
    SecretPrefix,
    /// SSM parameters under the parameter template's prefix for the group.
    ParameterPrefix,
    /// The secrets the controller reads at start: its GitHub credentials and the webhook secret
    /// (each when configured).
    CredentialsSecret,
    /// The controller's DynamoDB state table (when configured).
    StateTable,
}

/// One AWS operation the code calls.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The IAM action (`autoscaling:CompleteLifecycleAction`).
    pub action: &'static str,
    /// The SDK method name (`complete_lifecycle_action`).
    pub sdk_method: &'static str,
    /// Who calls it.
    pub parts: &'static [Part],
    /// Its resource scope.
    pub scope: Scope,
}

/// Every AWS operation runner-lifecycle calls.
pub const CALLS: &[Call] = &[
    Call {
        action: "autoscaling:DescribeAutoScalingInstances",
        sdk_method: "describe_auto_scaling_instances",
        parts: &[Part::Agent, Part::Hook, Part::Register, Part::Controller],
        scope: Scope::Any,
    },
    Call {
        action: "autoscaling:DescribeLifecycleHooks",
        sdk_method: "describe_lifecycle_hooks",
        parts: &[Part::Agent, Part::Controller],
        scope: Scope::Any,
    },
    Call {
        action: "autoscaling:SetInstanceProtection",
        sdk_method: "set_instance_protection",
        parts: &[Part::Agent, Part::Hook],
        scope: Scope::Group,
    },
    Call {
        action: "autoscaling:RecordLifecycleActionHeartbeat",
        sdk_method: "record_lifecycle_action_heartbeat",
        // The controller heartbeats a launch hook while it retries minting a token.
        parts: &[Part::Agent, Part::Controller],
        scope: Scope::Group,
    },
    Call {
        action: "autoscaling:CompleteLifecycleAction",
        sdk_method: "complete_lifecycle_action",
        parts: &[Part::Agent, Part::Controller],
        scope: Scope::Group,
    },
    Call {
        // One instance per job (`runner.one_job_per_instance`): the host leaves its group after
        // its job. IAM cannot narrow it to the caller's own instance, so it is opt-in.
        action: "autoscaling:TerminateInstanceInAutoScalingGroup",
        sdk_method: "terminate_instance_in_auto_scaling_group",
        parts: &[Part::Agent],
        scope: Scope::GroupOneJobPerInstance,
    },
    Call {
        action: "autoscaling:DescribeAutoScalingGroups",
        sdk_method: "describe_auto_scaling_groups",
        parts: &[Part::Controller],
        scope: Scope::Any,
    },
    Call {
        // Demand scaling (crate::scale): the group's desired capacity, never the warm pool's.
        action: "autoscaling:SetDesiredCapacity",
        sdk_method: "set_desired_capacity",
        parts: &[Part::Controller],
        scope: Scope::Group,
    },
    Call {
        action: "autoscaling:DescribeScalingActivities",
        sdk_method: "describe_scaling_activities",
        parts: &[Part::Controller],
        scope: Scope::Any,
    },
    Call {
        action: "secretsmanager:GetSecretValue",
        sdk_method: "get_secret_value",
        parts: &[Part::Register],
        scope: Scope::SecretPrefix,
    },
    Call {
        action: "secretsmanager:GetSecretValue",
        sdk_method: "get_secret_value",
        parts: &[Part::Controller],
        scope: Scope::CredentialsSecret,
    },
    Call {
        // The state table: one item per group, delivery ids, webhook payload identities (crate::scale),
        // the JIT mint lease per instance (crate::jit).
        action: "dynamodb:GetItem",
        sdk_method: "get_item",
        parts: &[Part::Controller],
        scope: Scope::StateTable,
    },
    Call {
        action: "dynamodb:PutItem",
        sdk_method: "put_item",
        parts: &[Part::Controller],
        scope: Scope::StateTable,
    },
    Call {
        action: "secretsmanager:DeleteSecret",
        sdk_method: "delete_secret",
        parts: &[Part::Register, Part::Controller],
        scope: Scope::SecretPrefix,
    },
    Call {
        action: "secretsmanager:CreateSecret",
        sdk_method: "create_secret",
        parts: &[Part::Controller],
        scope: Scope::SecretPrefix,
    },
    Call {
        action: "secretsmanager:PutSecretValue",
        sdk_method: "put_secret_value",
        parts: &[Part::Controller],
        scope: Scope::SecretPrefix,
    },
    Call {
        // Tags the token secret with the instance ARN: on CreateSecret (which needs this
        // permission when it carries tags, CreateSecret API reference) and with TagResource when
        // the secret exists already.
        action: "secretsmanager:TagResource",
        sdk_method: "tag_resource",
        parts: &[Part::Controller],
        scope: Scope::SecretPrefix,
    },
    Call {
        action: "secretsmanager:ListSecrets",
        sdk_method: "list_secrets",
        parts: &[Part::Controller],
        scope: Scope::Any,
    },
    Call {
        action: "ssm:GetParameter",
        sdk_method: "get_parameter",
        parts: &[Part::Register],
        scope: Scope::ParameterPrefix,
    },
    Call {
        action: "ssm:DeleteParameter",
        sdk_method: "delete_parameter",
        parts: &[Part::Register],
        scope: Scope::ParameterPrefix,
    },
];

/// What the policy is scoped to.
#[derive(Clone, Debug)]
pub struct Target {
    /// The Auto Scaling group.
    pub group: String,
    /// Region (`*` for any).
    pub region: String,
    /// Account id (`*` for any).
    pub account: String,
    /// Partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// The secret name prefix for this group (from the name template).
    pub secret_prefix: String,
    /// The SSM parameter name prefix for this group, when register reads parameters.
    pub parameter_prefix: String,
    /// The secret with the controller's GitHub credentials, if it reads them from one.
    pub credentials_secret: Option<String>,
    /// The secret with the GitHub webhook secret, if the controller scales from webhooks.
    pub webhook_secret: Option<String>,
    /// The DynamoDB state table, if the controller scales.
    pub state_table: Option<String>,
    /// The controller function serving `POST /jit-config` (`NAME` or `NAME:ALIAS`, the function
    /// URL's qualifier), if the hosts fetch JIT configs: the agent may call its `AWS_IAM` URL.
    pub jit_function: Option<String>,
    /// The hosts run one instance per job (agent `runner.one_job_per_instance`): the agent may
    /// terminate instances of the group (its own, after its job; IAM cannot narrow it further).
    pub one_job_per_instance: bool,
}

/// What the agent's `POST /jit-config` and `POST /jit-config/release` need
/// (crates/aws/src/function_url.rs). Not SDK operations, so not in [`CALLS`]: a request to a
/// function URL is authorized as `lambda:InvokeFunctionUrl`, and function URLs created since
/// October 2025 also require `lambda:InvokeFunction` (Lambda Developer Guide, "Control access to
/// Lambda function URLs", https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html). The
/// resource is the function (or its alias), never a path: one grant covers every path of the URL,
/// the release route included; which caller may do what on which path is the controller's check.
pub const JIT_URL_ACTIONS: &[&str] = &["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"];

/// Check `NAME` or `NAME:ALIAS` of a Lambda function: name 1 to 64 and alias 1 to 128 of
/// `[A-Za-z0-9_-]`, the alias not all digits (that would be a version; Lambda API Reference,
/// CreateFunctionUrlConfig `FunctionName` and `Qualifier` patterns).
pub fn check_function_name(s: &str) -> Result<(), String> {
    let ok = |p: &str, max: usize| {
        (1..=max).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    };
    let good = match s.split_once(':') {
        None => ok(s, 64),
        Some((name, alias)) => ok(name, 64) && ok(alias, 128) && !alias.bytes().all(|b| b.is_ascii_digit()),
    };
    if good {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a Lambda function name or NAME:ALIAS",
            lifecycle_escape::clip(s, 200)
        ))
    }
}

/// The character that must follow `{group}` in a name template, and that a group name scoped by a
/// policy must not contain. Secret and parameter names allow `A-Za-z0-9/_+=.@-`; all but `/` are
/// common inside group names (`ci-prod`, `ci_arm64`, `ci.gpu`), so only `/`, the hierarchy
/// separator of both Secrets Manager names and SSM parameter paths, ends a group name for sure.
pub const GROUP_DELIMITER: char = '/';

/// A template that scopes one group, for error messages.
const GOOD_TEMPLATE: &str = "runner-lifecycle/{group}/{instance_id}";

/// Check that a name template's prefix for a group covers that group's names only, since the
/// policy grants `<prefix>*`: `{group}` must appear, be followed by [`GROUP_DELIMITER`] before
/// any other placeholder or wildcard, and `{instance_id}` must come after that. Otherwise
/// `{instance_id}` alone grants `secret:*`, and `rl-{group}-{instance_id}` for group `ci`
/// (`rl-ci-*`) also grants group `ci-prod`'s secrets.
pub fn check_template_scope(what: &str, template: &str) -> Result<(), String> {
    let t = template.trim();
    let bad = |why: &str| {
        Err(format!(
            "{what} `{t}` {why}, so its policy would reach beyond one group; use e.g. `{GOOD_TEMPLATE}`"
        ))
    };
    let Some(g) = t.find("{group}") else {
        return bad("has no {group}");
    };
    let head = &t[..g];
    if head.contains(['{', '}', '*', '?']) {
        return bad("has a placeholder or wildcard before {group}");
    }
    let after = &t[g + "{group}".len()..];
    if !after.starts_with(GROUP_DELIMITER) {
        return bad(&format!("does not follow {{group}} with `{GROUP_DELIMITER}`"));
    }
    let rest = &after[GROUP_DELIMITER.len_utf8()..];
    match rest.find("{instance_id}") {
        Some(i) if !rest[..i].contains(['{', '}', '*', '?']) => Ok(()),
        Some(_) => bad("has a placeholder or wildcard between {group} and {instance_id}"),
        None => bad(&format!("has no {{instance_id}} after `{{group}}{GROUP_DELIMITER}`")),
    }
}

/// Check a group name for a policy: no wildcard, and no [`GROUP_DELIMITER`], which would put its
/// names under another group's prefix (`ci/x` under `ci`'s).
pub fn check_group_name(group: &str) -> Result<(), String> {
    if group.is_empty() || group.contains(['*', '?', '"', GROUP_DELIMITER]) {
        return Err(format!(
            "group `{group}` is not a group name a policy can scope (no `*`, `?`, `\"` or `{GROUP_DELIMITER}`)"
        ));
    }
    Ok(())
}

/// The actions a role needs, sorted.
pub fn actions(role: Role) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = CALLS
        .iter()
        .filter(|c| c.parts.iter().any(|p| role.parts().contains(p)))
        .map(|c| c.action)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The policy document for `role` scoped to `target`.
pub fn policy(role: Role, target: &Target) -> Value {
    let Target {
        group,
        region,
        account,
        partition,
        secret_prefix,
        parameter_prefix,
        credentials_secret,
        webhook_secret,
        state_table,
        jit_function,
        one_job_per_instance,
    } = target;
    let scoped = |scope: Scope| -> Vec<&'static str> {
        let mut v: Vec<&'static str> = CALLS
            .iter()
            .filter(|c| c.scope == scope && c.parts.iter().any(|p| role.parts().contains(p)))
            .map(|c| c.action)
            .collect();
        v.sort_unstable();
        v
    };
    let mut statements = Vec::new();
    let any = scoped(Scope::Any);
    if !any.is_empty() {
        statements.push(json!({
            "Sid": "ReadOnlyWithoutResourceLevelPermissions",
            "Effect": "Allow",
            "Action": any,
            "Resource": "*"
        }));
    }
    let on_group = scoped(Scope::Group);
    if !on_group.is_empty() {
        statements.push(json!({
            "Sid": "LifecycleOfThisGroup",
            "Effect": "Allow",
            "Action": on_group,
            "Resource": format!("arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{group}")
        }));
    }
    let leave = scoped(Scope::GroupOneJobPerInstance);
    if *one_job_per_instance && !leave.is_empty() {
        statements.push(json!({
            "Sid": "OneJobPerInstanceLeaveThisGroup",
            "Effect": "Allow",
            "Action": leave,
            "Resource": format!("arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{group}")
        }));
    }
    let secrets = scoped(Scope::SecretPrefix);
    if !secrets.is_empty() {
        let mut statement = json!({
            "Sid": "RegistrationTokenSecretsOfThisGroup",
            "Effect": "Allow",
            "Action": secrets,
            // Secrets Manager appends a 6-character suffix to every secret ARN.
            "Resource": format!("arn:{partition}:secretsmanager:{region}:{account}:secret:{secret_prefix}*")
        });
        if role == Role::Agent {
            // Each host reads and deletes only its own instance's token: the controller tags the
            // secret with the instance ARN at creation, and `ec2:SourceInstanceARN` (a global
            // condition key, usable as a policy variable, present on instance-profile
            // credentials) is the ARN of the instance the request comes from.
            statement["Sid"] = "RegistrationTokenSecretOfThisInstance".into();
            statement["Condition"] = instance_condition();
        }
        statements.push(statement);
    }
    let params = scoped(Scope::ParameterPrefix);
    if !params.is_empty() {
        statements.push(json!({
            "Sid": "RegistrationTokenParametersOfThisGroup",
            "Effect": "Allow",
            "Action": params,
            "Resource": format!("arn:{partition}:ssm:{region}:{account}:parameter/{}*", parameter_prefix.trim_start_matches('/'))
        }));
    }
    let creds = scoped(Scope::CredentialsSecret);
    // The six characters Secrets Manager appends to the name in the ARN.
    let secret_arns: Vec<String> = [credentials_secret, webhook_secret]
        .into_iter()
        .flatten()
        .map(|name| format!("arn:{partition}:secretsmanager:{region}:{account}:secret:{name}-??????"))
        .collect();
    if !creds.is_empty() && !secret_arns.is_empty() {
        statements.push(json!({
            "Sid": "GitHubCredentials",
            "Effect": "Allow",
            "Action": creds,
            "Resource": if secret_arns.len() == 1 { json!(secret_arns[0]) } else { json!(secret_arns) }
        }));
    }
    let table = scoped(Scope::StateTable);
    if let (false, Some(name)) = (table.is_empty(), state_table) {
        statements.push(json!({
            "Sid": "ScalingStateTable",
            "Effect": "Allow",
            "Action": table,
            "Resource": format!("arn:{partition}:dynamodb:{region}:{account}:table/{name}")
        }));
    }
    if let (Role::Agent, Some(function)) = (role, jit_function) {
        let arn = format!("arn:{partition}:lambda:{region}:{account}:function:{function}");
        // The URL only when its AuthType is AWS_IAM (condition key `lambda:FunctionUrlAuthType`,
        // the key AddPermission's FunctionUrlAuthType sets; CloudFormation AWS::Lambda::Permission,
        // and aws-samples/service-control-policy-examples use it in identity policies): should the
        // URL ever be switched to NONE, hosts stop being able to reach it through this grant.
        statements.push(json!({
            "Sid": "JitConfigThroughTheIamFunctionUrl",
            "Effect": "Allow",
            "Action": JIT_URL_ACTIONS[0],
            "Resource": arn,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}
        }));
        // InvokeFunction only through the function URL: a plain Invoke takes any payload, so a
        // host allowed it could forge `requestContext.authorizer.iam` and mint for another
        // instance. The key is what AddPermission's `InvokedViaFunctionUrl` sets (AWS CDK
        // reference, Permission.invokedViaFunctionUrl, "the condition key for limiting the scope
        // of lambda:InvokeFunction"); docs/security.md notes its spelling was not read from the
        // Service Authorization Reference. A wrong key fails closed (the host gets 403).
        statements.push(json!({
            "Sid": "JitConfigFunctionOnlyThroughItsUrl",
            "Effect": "Allow",
            "Action": JIT_URL_ACTIONS[1],
            "Resource": arn,
            "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The condition that confines a host to the token secret of its own instance:
/// `{"StringEquals": {"aws:ResourceTag/<INSTANCE_TAG>": "${ec2:SourceInstanceARN}"}}`. A request
/// without instance-profile credentials has no `ec2:SourceInstanceARN`, so the condition fails
/// closed (IAM User Guide, "IAM policy elements: Variables and tags": an unresolved variable makes
/// the statement not match).
pub fn instance_condition() -> Value {
    let key = format!("aws:ResourceTag/{}", crate::handler::INSTANCE_TAG);
    json!({ "StringEquals": { key: "${ec2:SourceInstanceARN}" } })
}

/// Every `client.<method>()` call in `source`: the SDK operations a file makes, by the convention
/// that SDK clients live in bindings whose name ends in `client`.
pub fn sdk_calls_in(source: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(pos) = source[from..].find("client") {
        let mut i = from + pos + "client".len();
        from = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'.' {
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if end > start && source[end..].starts_with("()") {
            found.insert(source[start..end].to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn declared(part: Part) -> BTreeSet<String> {
        CALLS
            .iter()
            .filter(|c| c.parts.contains(&part))
            .map(|c| c.sdk_method.to_string())
            .collect()
    }

    /// The SDK calls of a part's source, with those it makes through the shared modules of
    /// lifecycle-aws (crates/aws/src/autoscaling.rs and secrets.rs): a shared function counts for a
    /// part whose source calls it, and so do the shared functions it calls in turn.
    fn calls_of(source: &str) -> BTreeSet<String> {
        let modules = [
            ("autoscaling", include_str!("../../aws/src/autoscaling.rs")),
            ("secrets", include_str!("../../aws/src/secrets.rs")),
        ];
        let mut calls = sdk_calls_in(source);
        for (module, text) in modules {
            let shared: Vec<(&str, &str)> = text
                .split("pub async fn ")
                .skip(1)
                .filter_map(|f| f.split_once('('))
                .map(|(name, rest)| (name, rest.split("\npub ").next().unwrap_or_default()))
                .collect();
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&str> = shared
                .iter()
                .filter(|(name, _)| source.contains(&format!("{module}::{name}(")))
                .map(|(name, _)| *name)
                .collect();
            while let Some(name) = todo.pop() {
                if !seen.insert(name) {
                    continue;
                }
                let body = shared.iter().find(|(n, _)| *n == name).map_or("", |(_, b)| *b);
                calls.extend(sdk_calls_in(body));
                todo.extend(
                    shared
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|n| body.contains(&format!("{n}("))),
                );
            }
        }
        calls
    }

    /// The drift test: what each part's source calls is exactly what CALLS says it calls.
    #[test]
    fn the_policy_list_matches_the_code() {
        let agent = calls_of(include_str!("../../agent/src/asg.rs"));
        let register = calls_of(include_str!("../../register/src/aws.rs"));
        let controller = calls_of(include_str!("aws.rs"));
        assert_eq!(agent, declared(Part::Agent), "crates/agent/src/asg.rs vs CALLS");
        assert!(
            declared(Part::Hook).is_subset(&agent),
            "the hook calls through the agent's asg.rs"
        );
        assert_eq!(
            register,
            declared(Part::Register),
            "crates/register/src/aws.rs vs CALLS"
        );
        assert_eq!(
            controller,
            declared(Part::Controller),
            "crates/controller/src/aws.rs vs CALLS"
        );
    }

    /// The JIT grant matches the client: it signs for service `lambda` and posts to the path the
    /// controller serves.
    #[test]
    fn the_jit_grant_matches_the_client() {
        let client = include_str!("../../aws/src/function_url.rs");
        assert!(
            client.contains("const SERVICE: &str = \"lambda\";"),
            "the client signs for another service"
        );
        assert!(JIT_URL_ACTIONS.iter().all(|a| a.starts_with("lambda:")));
        assert_eq!(lifecycle_aws::function_url::JIT_PATH, crate::jit::JIT_PATH);
        // The release route is on the same URL: the same grant (a function URL is authorized as a
        // whole) and the same signing service.
        assert_eq!(
            crate::jit::Route::of(lifecycle_aws::function_url::RELEASE_PATH),
            Some(crate::jit::Route::Release)
        );
        for good in ["f", "runner-lifecycle-controller", "fn_1:jit", "f:live-2"] {
            assert_eq!(check_function_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a:b:c", "f:1", "f*", "arn:aws:lambda", &"x".repeat(65), "f:"] {
            assert!(check_function_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_scanner_finds_chained_calls() {
        let src = "self.asg_client\n    .complete_lifecycle_action()\n    .send();\nlet x = client.get_parameter().name(n);\nClient::new(c); client.clone_from(x);";
        let found: Vec<String> = sdk_calls_in(src).into_iter().collect();
        assert_eq!(
            found,
            vec!["complete_lifecycle_action".to_string(), "get_parameter".to_string()]
        );
    }

    #[test]
    fn templates_must_scope_one_group() {
        use lifecycle_aws::{DEFAULT_PARAMETER_TEMPLATE, DEFAULT_SECRET_TEMPLATE};
        for good in [
            DEFAULT_SECRET_TEMPLATE,
            DEFAULT_PARAMETER_TEMPLATE,
            "rl/{group}/{instance_id}",
            "{group}/{instance_id}",
            "rl/{group}/tokens/{instance_id}/v1",
        ] {
            assert_eq!(check_template_scope("secret template", good), Ok(()), "{good}");
        }
        // Regression: `{instance_id}` alone granted `secret:*`; `rl-{group}-{instance_id}` for
        // `ci` granted `rl-ci-*`, which covers `ci-prod`.
        for bad in [
            "{instance_id}",
            "rl-{group}-{instance_id}",
            "rl/{group}{instance_id}",
            "rl/{group}.{instance_id}",
            "rl/{group}",
            "{instance_id}/{group}/",
            "rl/{group}/*/{instance_id}",
        ] {
            let e = check_template_scope("secret template", bad).expect_err(bad);
            assert!(e.contains(bad) && e.contains(GOOD_TEMPLATE), "{e}");
        }
        assert!(check_group_name("runners").is_ok() && check_group_name("ci-prod.arm_64").is_ok());
        for bad in ["", "ci/x", "ci*", "a?b"] {
            assert!(check_group_name(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Whatever the template and the group: when both pass, one group's prefix never covers
        /// another group's names.
        #[test]
        fn accepted_templates_never_overlap(
            head in "[a-z/_.-]{0,6}",
            mid in "[/a-z_.{}-]{0,4}",
            tail in "[a-z/_.-]{0,4}",
            g1 in "[a-z0-9/_.-]{1,6}",
            g2 in "[a-z0-9/_.-]{1,6}",
        ) {
            let template = format!("{head}{{group}}{mid}{{instance_id}}{tail}");
            let ok = check_template_scope("t", &template).is_ok()
                && check_group_name(&g1).is_ok()
                && check_group_name(&g2).is_ok();
            if let (true, Ok(t)) = (ok, lifecycle_aws::NameTemplate::parse(&template)) {
                if g1 != g2 {
                    let name2 = t.name(&g2, "i-0123456789abcdef0");
                    proptest::prop_assert!(!name2.starts_with(&t.prefix(&g1)), "{} covers {}", t.prefix(&g1), name2);
                }
            }
        }

        #[test]
        fn any_template_is_checked_without_panicking(t in proptest::prelude::any::<String>()) {
            let _ = check_template_scope("t", &t);
            let _ = check_group_name(&t);
        }
    }

    #[test]
    fn policies_are_scoped() {
        let target = Target {
            group: "runners".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            partition: "aws".into(),
            secret_prefix: "runner-lifecycle/runners/".into(),
            parameter_prefix: "/runner-lifecycle/runners/".into(),
            credentials_secret: Some("runner-lifecycle/github".into()),
            webhook_secret: Some("runner-lifecycle/webhook".into()),
            state_table: Some("runner-lifecycle-state".into()),
            jit_function: Some("runner-lifecycle-controller:jit".into()),
            one_job_per_instance: true,
        };
        let agent = policy(Role::Agent, &target);
        // One instance per job: the host's own termination, on the group, only when asked for.
        assert!(agent
            .to_string()
            .contains("autoscaling:TerminateInstanceInAutoScalingGroup"));
        let default_agent = policy(
            Role::Agent,
            &Target {
                one_job_per_instance: false,
                ..target.clone()
            },
        );
        assert!(!default_agent.to_string().contains("TerminateInstance"));
        assert!(!policy(Role::Controller, &target)
            .to_string()
            .contains("TerminateInstance"));
        let text = agent.to_string();
        assert!(
            text.contains("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/runners")
        );
        assert!(text.contains("arn:aws:secretsmanager:us-east-1:123456789012:secret:runner-lifecycle/runners/*"));
        assert!(text.contains("arn:aws:ssm:us-east-1:123456789012:parameter/runner-lifecycle/runners/*"));
        assert!(!text.contains("CreateSecret") && !text.contains("ListSecrets"));
        // A host reads and deletes only the secret tagged with its own instance's ARN.
        let statement = agent["Statement"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["Sid"] == "RegistrationTokenSecretOfThisInstance"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            statement["Condition"],
            serde_json::json!({"StringEquals": {"aws:ResourceTag/runner-lifecycle-instance-arn": "${ec2:SourceInstanceARN}"}})
        );
        let controller = policy(Role::Controller, &target).to_string();
        // The controller heartbeats launch hooks while it retries, but never protects.
        assert!(!controller.contains("SetInstanceProtection") && controller.contains("RecordLifecycleActionHeartbeat"));
        assert!(controller.contains("secretsmanager:TagResource") && !controller.contains("ec2:SourceInstanceARN"));
        assert!(!controller.contains("ssm:"));
        assert!(controller.contains("secret:runner-lifecycle/github-??????"));
        // Scaling: the group's capacity, the webhook secret, the state table, nothing more.
        assert!(controller.contains("autoscaling:SetDesiredCapacity"));
        assert!(controller.contains("secret:runner-lifecycle/webhook-??????"));
        assert!(controller.contains("dynamodb:us-east-1:123456789012:table/runner-lifecycle-state\""));
        assert!(!controller.contains("dynamodb:Scan") && !controller.contains("dynamodb:*"));
        let without = policy(
            Role::Controller,
            &Target {
                credentials_secret: None,
                webhook_secret: None,
                state_table: None,
                ..target.clone()
            },
        )
        .to_string();
        assert!(!without.contains("GetSecretValue") && !without.contains("dynamodb:"));
        // JIT configs: the agent may call the AWS_IAM function URL of the controller's JIT alias,
        // and InvokeFunction only through it; the controller's own policy has neither.
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:runner-lifecycle-controller:jit";
        let statements = agent["Statement"].as_array().cloned().unwrap_or_default();
        let find = |sid: &str| statements.iter().find(|s| s["Sid"] == sid).cloned().unwrap_or_default();
        let url = find("JitConfigThroughTheIamFunctionUrl");
        assert_eq!(url["Action"], "lambda:InvokeFunctionUrl");
        assert_eq!(url["Resource"], arn);
        assert_eq!(
            url["Condition"],
            serde_json::json!({"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}})
        );
        let invoke = find("JitConfigFunctionOnlyThroughItsUrl");
        assert_eq!(invoke["Action"], "lambda:InvokeFunction");
        assert_eq!(invoke["Resource"], arn);
        assert_eq!(
            invoke["Condition"],
            serde_json::json!({"Bool": {"lambda:InvokedViaFunctionUrl": "true"}})
        );
        // No statement grants a Lambda action without a condition.
        for s in &statements {
            if s["Action"].to_string().contains("lambda:") {
                assert!(s["Condition"].is_object(), "{s}");
            }
        }
        assert!(!policy(Role::Controller, &target).to_string().contains("lambda:"));
        let no_jit = policy(
            Role::Agent,
            &Target {
                jit_function: None,
                ..target.clone()
            },
        )
        .to_string();
        assert!(!no_jit.contains("lambda:"));
        // The controller checks the instance's state with DescribeAutoScalingInstances.
        assert!(actions(Role::Controller).contains(&"autoscaling:DescribeAutoScalingInstances"));
        // Every action a role needs appears in its document exactly once.
        for role in [Role::Agent, Role::Controller] {
            let doc = policy(role, &target).to_string();
            for a in actions(role) {
                assert_eq!(doc.matches(&format!("\"{a}\"")).count(), 1, "{a}");
            }
        }
    }
}
