//! The Auto Scaling reads the agent, `register` and the controller all make, written once:
//! DescribeAutoScalingInstances and DescribeLifecycleHooks, answered as plain types. Each caller
//! keeps its own client, call counting and retry schedule; a failure comes back sorted by
//! [`api_error`] as before. (Behind the `autoscaling` feature: only the crates that call Auto
//! Scaling pay for its SDK.)
//!
//! lifecycle-controller's `iam` drift test reads this file too: the SDK operations called here
//! count for every part whose source calls these functions.

use crate::api_error;
use aws_sdk_autoscaling::Client;
use lifecycle_core::ApiError;

/// `LifecycleTransition` of a termination hook (Auto Scaling API reference, PutLifecycleHook).
pub const TERMINATING_TRANSITION: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// One instance as DescribeAutoScalingInstances describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsgInstance {
    /// The instance id.
    pub instance_id: String,
    /// Its Auto Scaling group (empty if the answer names none).
    pub group: String,
    /// `LifecycleState` as the API returns it (`InService`, `Terminating:Wait`, `Warmed:Stopped`,
    /// ...; empty if absent).
    pub lifecycle_state: String,
    /// `ProtectedFromScaleIn` (false if absent).
    pub protected_from_scale_in: bool,
}

/// One lifecycle hook as DescribeLifecycleHooks describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleHook {
    /// The hook's name.
    pub name: String,
    /// Its HeartbeatTimeout in seconds (the API's default where the answer has none).
    pub heartbeat_timeout_s: u64,
}

/// DescribeAutoScalingInstances for `ids` (at most 50 a call, API reference): the ones that are in
/// a group, in the order the API answers. Entries without an instance id are left out.
pub async fn describe_instances(client: &Client, ids: &[String]) -> Result<Vec<AsgInstance>, ApiError> {
    let out = client
        .describe_auto_scaling_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| api_error(&e))?;
    Ok(out
        .auto_scaling_instances()
        .iter()
        .filter_map(|i| {
            Some(AsgInstance {
                instance_id: i.instance_id()?.to_string(),
                group: i.auto_scaling_group_name().unwrap_or_default().to_string(),
                lifecycle_state: i.lifecycle_state().unwrap_or_default().to_string(),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            })
        })
        .collect())
}

/// DescribeAutoScalingInstances for one instance: `None` when it is in no group.
pub async fn describe_instance(client: &Client, id: &str) -> Result<Option<AsgInstance>, ApiError> {
    Ok(describe_instances(client, &[id.to_string()])
        .await?
        .into_iter()
        .find(|i| i.instance_id == id))
}

/// DescribeLifecycleHooks of `group`, sorted by name: its termination hooks, or with `name` only
/// the hook of that name, whatever its transition (an explicit name overrides discovery).
pub async fn termination_hooks(
    client: &Client,
    group: &str,
    name: Option<&str>,
) -> Result<Vec<LifecycleHook>, ApiError> {
    let mut req = client.describe_lifecycle_hooks().auto_scaling_group_name(group);
    if let Some(n) = name {
        req = req.lifecycle_hook_names(n);
    }
    let out = req.send().await.map_err(|e| api_error(&e))?;
    let mut hooks: Vec<LifecycleHook> = out
        .lifecycle_hooks()
        .iter()
        .filter(|h| name.is_some() || h.lifecycle_transition() == Some(TERMINATING_TRANSITION))
        .filter_map(|h| {
            Some(LifecycleHook {
                name: h.lifecycle_hook_name()?.to_string(),
                heartbeat_timeout_s: lifecycle_core::aws::heartbeat_timeout_s(h.heartbeat_timeout()),
            })
        })
        .collect();
    hooks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(hooks)
}
