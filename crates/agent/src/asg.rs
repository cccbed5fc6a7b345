//! The Auto Scaling calls the core asks for, made with the official AWS SDK for Rust, and their
//! failures sorted into the core's [`ApiErrorKind`]s.

use aws_config::SdkConfig;
use lifecycle_core::{ApiError, ApiErrorKind, ApiReply, AsgState, DescribedInstance, HookConfig, LifecycleResult};
use std::time::Duration;

// SDK configuration, error sorting and the Auto Scaling reads are shared with `register` and the
// controller (crates/aws).
use lifecycle_aws::autoscaling;
pub use lifecycle_aws::{api_error, sdk_config, RetryPolicy};

/// One instance's view of Auto Scaling.
#[derive(Clone, Debug)]
pub struct AutoScaling {
    client: aws_sdk_autoscaling::Client,
    instance_id: String,
    group: Option<String>,
    hook: Option<String>,
}

/// What DescribeAutoScalingInstances says about this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group: String,
    /// State and protection.
    pub instance: DescribedInstance,
}

impl AutoScaling {
    /// A client acting for `instance_id`.
    pub fn new(config: &SdkConfig, instance_id: String) -> AutoScaling {
        AutoScaling {
            client: aws_sdk_autoscaling::Client::new(config),
            instance_id,
            group: None,
            hook: None,
        }
    }

    /// Set the group and the termination hook once discovered.
    pub fn with_target(mut self, group: Option<String>, hook: Option<String>) -> AutoScaling {
        self.group = group;
        self.hook = hook;
        self
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// DescribeAutoScalingInstances for this instance: `None` when it is in no group.
    pub async fn describe(&self) -> Result<Option<Membership>, ApiError> {
        let found = autoscaling::describe_instance(&self.client, &self.instance_id).await?;
        Ok(found.map(|i| Membership {
            group: i.group,
            instance: DescribedInstance {
                state: AsgState::parse(&i.lifecycle_state),
                protected: i.protected_from_scale_in,
            },
        }))
    }

    /// The group's termination hooks (name and HeartbeatTimeout), sorted by name. With `name`, only
    /// that hook, whatever its transition (an explicit name overrides discovery).
    pub async fn termination_hooks(&self, group: &str, name: Option<&str>) -> Result<Vec<HookConfig>, ApiError> {
        let hooks = autoscaling::termination_hooks(&self.client, group, name).await?;
        Ok(hooks
            .into_iter()
            .map(|h| HookConfig {
                name: h.name,
                heartbeat_timeout: Duration::from_secs(h.heartbeat_timeout_s),
            })
            .collect())
    }

    fn group(&self) -> Result<&str, ApiError> {
        self.group.as_deref().ok_or_else(|| {
            ApiError::new(
                ApiErrorKind::InstanceNotFound,
                "the instance is in no Auto Scaling group",
            )
        })
    }

    fn hook(&self) -> Result<&str, ApiError> {
        self.hook
            .as_deref()
            .ok_or_else(|| ApiError::new(ApiErrorKind::Other, "no termination lifecycle hook is configured"))
    }

    /// SetInstanceProtection for this instance.
    pub async fn set_protection(&self, protect: bool) -> Result<ApiReply, ApiError> {
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(self.group()?)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protect)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(ApiReply::Done)
    }

    /// RecordLifecycleActionHeartbeat by instance id (no token needed: API reference).
    pub async fn heartbeat(&self) -> Result<ApiReply, ApiError> {
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(self.group()?)
            .lifecycle_hook_name(self.hook()?)
            .instance_id(&self.instance_id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(ApiReply::Done)
    }

    /// CompleteLifecycleAction by instance id.
    pub async fn complete(&self, result: LifecycleResult) -> Result<ApiReply, ApiError> {
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(self.group()?)
            .lifecycle_hook_name(self.hook()?)
            .instance_id(&self.instance_id)
            .lifecycle_action_result(result.to_string())
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(ApiReply::Done)
    }

    /// TerminateInstanceInAutoScalingGroup for this instance, without decrementing the desired
    /// capacity: the group launches a replacement, and this instance goes through the termination
    /// hook (one instance per job). The call takes no group name; the IAM policy scopes it to the
    /// group (`autoscaling:TerminateInstanceInAutoScalingGroup` on the group's ARN). A host in no
    /// group never makes it (the core exits instead).
    pub async fn leave_group(&self) -> Result<ApiReply, ApiError> {
        self.group()?;
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&self.instance_id)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(ApiReply::Done)
    }

    /// DescribeAutoScalingInstances, answered the way the core wants it.
    pub async fn describe_for_core(&self) -> Result<ApiReply, ApiError> {
        Ok(ApiReply::Described(self.describe().await?.map(|m| m.instance)))
    }
}
