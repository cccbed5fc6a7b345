//! The real [`Aws`] port: the official AWS SDK for Rust (Auto Scaling, Secrets Manager and the
//! DynamoDB state table). Every
//! SDK operation this file calls is listed in [`crate::iam`]; a test there reads this file and
//! fails if the two differ.

use crate::ports::{AsgInstance, Aws, Capacity, Completion, Member, StoredState, TerminationHook};
use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use lifecycle_aws::{api_error, autoscaling, error_code, secrets};
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// DescribeAutoScalingInstances takes at most 50 ids per call (API reference).
const DESCRIBE_BATCH: usize = 50;
/// Activity pages read at most per sweep (100 records each, newest first).
const ACTIVITY_PAGES: usize = 10;

/// Auto Scaling and Secrets Manager through the SDK, counting the calls it makes.
#[derive(Debug)]
pub struct AwsFleet {
    asg_client: aws_sdk_autoscaling::Client,
    secrets_client: aws_sdk_secretsmanager::Client,
    ddb_client: aws_sdk_dynamodb::Client,
    asg_calls: AtomicU64,
    secret_calls: AtomicU64,
}

impl AwsFleet {
    /// Clients from one SDK configuration.
    pub fn new(config: &SdkConfig) -> AwsFleet {
        AwsFleet {
            asg_client: aws_sdk_autoscaling::Client::new(config),
            secrets_client: aws_sdk_secretsmanager::Client::new(config),
            ddb_client: aws_sdk_dynamodb::Client::new(config),
            asg_calls: AtomicU64::new(0),
            secret_calls: AtomicU64::new(0),
        }
    }

    /// Auto Scaling calls made so far.
    pub fn asg_calls(&self) -> u64 {
        self.asg_calls.load(Ordering::Relaxed)
    }

    /// Secrets Manager calls made so far.
    pub fn secret_calls(&self) -> u64 {
        self.secret_calls.load(Ordering::Relaxed)
    }

    /// Read one secret's value (GetSecretValue): the controller's own GitHub credentials, once at
    /// start.
    pub async fn read_secret(&self, id: &str) -> Result<Secret, ApiError> {
        self.sm();
        let out = self
            .secrets_client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        out.secret_string()
            .map(Secret::new)
            .ok_or_else(|| ApiError::new(ApiErrorKind::Other, format!("secret {id} has no SecretString")))
    }

    fn asg(&self) {
        self.asg_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn sm(&self) {
        self.secret_calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// The instance id of a termination activity's description (`Terminating EC2 instance: i-...`,
/// as DescribeScalingActivities reports it).
pub fn terminating_instance(description: &str) -> Option<&str> {
    let rest = description.strip_prefix("Terminating EC2 instance: ")?;
    let id = rest.split(|c: char| c.is_whitespace() || c == ',').next()?;
    lifecycle_github::labels::as_instance_id(id)
}

impl Aws for AwsFleet {
    async fn complete(&self, c: &Completion) -> Result<(), ApiError> {
        self.asg();
        let mut req = self
            .asg_client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&c.group)
            .lifecycle_hook_name(&c.hook)
            .lifecycle_action_result(c.result.as_str());
        req = match &c.token {
            Some(token) => req.lifecycle_action_token(token),
            None => req.instance_id(&c.instance_id),
        };
        req.send().await.map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn members(&self, group: &str) -> Result<Vec<Member>, ApiError> {
        let g = self.describe_group(group).await?;
        Ok(g.instances()
            .iter()
            .filter_map(|i| {
                Some(Member {
                    instance_id: i.instance_id()?.to_string(),
                    state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn known(&self, ids: &BTreeSet<String>) -> Result<BTreeSet<String>, ApiError> {
        let all: Vec<String> = ids.iter().cloned().collect();
        let mut known = BTreeSet::new();
        for batch in all.chunks(DESCRIBE_BATCH) {
            self.asg();
            let found = autoscaling::describe_instances(&self.asg_client, batch).await?;
            known.extend(found.into_iter().map(|i| i.instance_id));
        }
        Ok(known)
    }

    async fn instance(&self, id: &str) -> Result<Option<AsgInstance>, ApiError> {
        self.asg();
        let found = autoscaling::describe_instance(&self.asg_client, id).await?;
        Ok(found.map(|i| AsgInstance {
            group: i.group,
            state: i.lifecycle_state,
        }))
    }

    async fn termination_hooks(&self, group: &str) -> Result<Vec<TerminationHook>, ApiError> {
        self.asg();
        autoscaling::termination_hooks(&self.asg_client, group, None).await
    }

    async fn terminating_since(&self, group: &str, ids: &BTreeSet<String>) -> Result<BTreeMap<String, i64>, ApiError> {
        let mut since = BTreeMap::new();
        let mut next: Option<String> = None;
        for _ in 0..ACTIVITY_PAGES {
            self.asg();
            let out = self
                .asg_client
                .describe_scaling_activities()
                .auto_scaling_group_name(group)
                .max_records(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| api_error(&e))?;
            for a in out.activities() {
                let Some(id) = terminating_instance(a.description().unwrap_or_default()) else {
                    continue;
                };
                if !ids.contains(id) || since.contains_key(id) {
                    continue;
                }
                if let Some(t) = a.start_time() {
                    since.insert(id.to_string(), t.secs());
                }
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() || since.len() == ids.len() {
                break;
            }
        }
        Ok(since)
    }

    async fn hook_timeout(&self, group: &str, hook: &str) -> Result<Option<u64>, ApiError> {
        self.asg();
        let hooks = autoscaling::termination_hooks(&self.asg_client, group, Some(hook)).await?;
        Ok(hooks
            .into_iter()
            .find(|h| h.name == hook)
            .map(|h| h.heartbeat_timeout_s))
    }

    async fn heartbeat(&self, c: &Completion) -> Result<(), ApiError> {
        self.asg();
        let mut req = self
            .asg_client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&c.group)
            .lifecycle_hook_name(&c.hook);
        req = match &c.token {
            Some(token) => req.lifecycle_action_token(token),
            None => req.instance_id(&c.instance_id),
        };
        req.send().await.map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn put_secret(&self, name: &str, value: &Secret, tags: &[(String, String)]) -> Result<(), ApiError> {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.sm();
        let created = self
            .secrets_client
            .create_secret()
            .name(name)
            .description(
                "runner-lifecycle: GitHub registration token for one instance; deleted by `register` after use",
            )
            .secret_string(value.expose())
            .set_tags((!tags.is_empty()).then(|| tags.clone()))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceExistsException") => {
                // Tag first: a host policy that confines reads to the instance's own tag must
                // never see a fresh token under a missing or stale tag.
                if !tags.is_empty() {
                    self.sm();
                    self.secrets_client
                        .tag_resource()
                        .secret_id(name)
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .map_err(|e| api_error(&e))?;
                }
                self.sm();
                self.secrets_client
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value.expose())
                    .send()
                    .await
                    .map_err(|e| api_error(&e))?;
                Ok(())
            }
            Err(e) => Err(api_error(&e)),
        }
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            self.sm();
            let filter = Filter::builder().key(FilterNameStringType::Name).values(prefix).build();
            let out = self
                .secrets_client
                .list_secrets()
                .filters(filter)
                .max_results(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| api_error(&e))?;
            // The service's name filter is a case-insensitive prefix match; keep exact ones.
            names.extend(
                out.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            next = out.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(names);
            }
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ApiError> {
        self.sm();
        secrets::delete_secret(&self.secrets_client, name).await
    }

    async fn capacity(&self, group: &str) -> Result<Capacity, ApiError> {
        self.describe_capacity(group).await
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        self.set_capacity(group, desired).await
    }

    async fn load_state(&self, table: &str, group: &str) -> Result<Option<StoredState>, ApiError> {
        self.get_state(table, group).await
    }

    async fn save_state(&self, table: &str, group: &str, json: &str, expected: Option<u64>) -> Result<bool, ApiError> {
        self.put_state(table, group, json, expected).await
    }

    async fn claim_delivery(&self, table: &str, delivery: &str, now: i64, expires_at: i64) -> Result<bool, ApiError> {
        self.put_claim(table, &format!("delivery#{delivery}"), now, expires_at)
            .await
    }

    async fn release_delivery(&self, table: &str, delivery: &str) -> Result<(), ApiError> {
        self.put_expiry(table, &format!("delivery#{delivery}"), 0).await
    }

    async fn claim_key(&self, table: &str, key: &str, now: i64, expires_at: i64) -> Result<bool, ApiError> {
        self.put_claim(table, key, now, expires_at).await
    }

    async fn expire_key(&self, table: &str, key: &str, expires_at: i64) -> Result<(), ApiError> {
        self.put_expiry(table, key, expires_at).await
    }
}

/// The state table's partition key (a string): `group#NAME`, `delivery#ID`, `job#ID#ATTEMPT#ACTION`
/// (a webhook payload's identity) or `jit#INSTANCE` (the JIT mint's lease).
pub const TABLE_KEY: &str = "pk";
/// The state table's TTL attribute (epoch seconds), on delivery, job and lease items.
pub const TABLE_TTL: &str = "expires_at";

fn group_key(group: &str) -> AttributeValue {
    AttributeValue::S(format!("group#{group}"))
}

impl AwsFleet {
    /// One group, as `DescribeAutoScalingGroups` shows it; a group that does not exist is an error.
    async fn describe_group(&self, group: &str) -> Result<AutoScalingGroup, ApiError> {
        self.asg();
        let out = self
            .asg_client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        out.auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(group))
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ApiErrorKind::Other,
                    format!("Auto Scaling group `{group}` does not exist"),
                )
            })
    }

    async fn describe_capacity(&self, group: &str) -> Result<Capacity, ApiError> {
        let g = self.describe_group(group).await?;
        let n = |v: Option<i32>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
        Ok(Capacity {
            desired: n(g.desired_capacity()),
            min: n(g.min_size()),
            max: n(g.max_size()),
        })
    }

    async fn set_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        self.asg();
        self.asg_client
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn get_state(&self, table: &str, group: &str) -> Result<Option<StoredState>, ApiError> {
        let out = self
            .ddb_client
            .get_item()
            .table_name(table)
            .key(TABLE_KEY, group_key(group))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let json = item
            .get("state")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Some(StoredState { json, version }))
    }

    async fn put_state(&self, table: &str, group: &str, json: &str, expected: Option<u64>) -> Result<bool, ApiError> {
        let next = expected.map_or(1, |v| v + 1);
        let mut req = self
            .ddb_client
            .put_item()
            .table_name(table)
            .item(TABLE_KEY, group_key(group))
            .item("state", AttributeValue::S(json.to_string()))
            .item("version", AttributeValue::N(next.to_string()));
        req = match expected {
            None => req.condition_expression("attribute_not_exists(#pk)"),
            Some(v) => req
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        if expected.is_none() {
            req = req.expression_attribute_names("#pk", TABLE_KEY);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(api_error(&e)),
        }
    }

    async fn put_expiry(&self, table: &str, key: &str, expires_at: i64) -> Result<(), ApiError> {
        self.ddb_client
            .put_item()
            .table_name(table)
            .item(TABLE_KEY, AttributeValue::S(key.to_string()))
            .item(TABLE_TTL, AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn put_claim(&self, table: &str, key: &str, now: i64, expires_at: i64) -> Result<bool, ApiError> {
        // TTL deletion is lazy (up to days late): an expired item counts as absent.
        let sent = self
            .ddb_client
            .put_item()
            .table_name(table)
            .item(TABLE_KEY, AttributeValue::S(key.to_string()))
            .item(TABLE_TTL, AttributeValue::N(expires_at.to_string()))
            .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
            .expression_attribute_names("#pk", TABLE_KEY)
            .expression_attribute_names("#ttl", TABLE_TTL)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(api_error(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_termination_activities() {
        assert_eq!(
            terminating_instance("Terminating EC2 instance: i-0123456789abcdef0"),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            terminating_instance("Launching a new EC2 instance: i-0123456789abcdef0"),
            None
        );
        assert_eq!(terminating_instance("Terminating EC2 instance: junk"), None);
    }
}
