//! In-memory ports that count every call: for the handler's tests, the integration tests and the
//! benchmark (bench/controller_bench.rs). Not used by the binary.

use crate::ports::{AsgInstance, Aws, Capacity, Completion, GitHub, Member, StoredState, TerminationHook};
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::{
    Deleted, GitHubError, JitConfig, JitRequest, RegistrationToken, Runner, RunnerDetail, RunnerLabel, Secret,
    WorkflowJob,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fake Auto Scaling + Secrets Manager.
#[derive(Debug, Default)]
pub struct FakeAws {
    /// Group members (id, state).
    pub members: Mutex<Vec<Member>>,
    /// Instances any group knows (members and warm pool).
    pub known: Mutex<BTreeSet<String>>,
    /// DescribeAutoScalingInstances answers: instance id -> its group and lifecycle state.
    pub instances: Mutex<BTreeMap<String, AsgInstance>>,
    /// Termination hooks.
    pub hooks: Mutex<Vec<TerminationHook>>,
    /// When each waiting instance entered its termination activity.
    pub since: Mutex<BTreeMap<String, i64>>,
    /// Instances with a pending action; completing another answers NoActiveLifecycleAction.
    pub pending: Mutex<BTreeSet<String>>,
    /// Secrets by name.
    pub secrets: Mutex<BTreeMap<String, String>>,
    /// Every completion made.
    pub completions: Mutex<Vec<Completion>>,
    /// Every heartbeat recorded (instance ids).
    pub heartbeats: Mutex<Vec<String>>,
    /// Launch hooks' HeartbeatTimeout by hook name (DescribeLifecycleHooks for one hook).
    pub hook_timeouts: Mutex<BTreeMap<String, u64>>,
    /// Tags of each secret.
    pub secret_tags: Mutex<BTreeMap<String, Vec<(String, String)>>>,
    /// When set, this many next `put_secret` calls fail with this kind (then it clears).
    pub fail_puts: Mutex<Option<(u32, ApiErrorKind)>>,
    /// When set, heartbeats fail with this kind.
    pub fail_heartbeats: Mutex<Option<ApiErrorKind>>,
    /// When set, every call fails with this kind.
    pub fail: Mutex<Option<ApiErrorKind>>,
    /// The group's capacity (DescribeAutoScalingGroups).
    pub capacity: Mutex<Option<Capacity>>,
    /// Every SetDesiredCapacity (group, desired).
    pub set_desired: Mutex<Vec<(String, u32)>>,
    /// The state table: key -> (json, version) for groups, delivery id -> expiry.
    pub table: Mutex<BTreeMap<String, StoredState>>,
    /// Delivery ids and their expiry.
    pub deliveries: Mutex<BTreeMap<String, i64>>,
    /// Other claimed items (`job#...`, `jit#...`) and their expiry.
    pub keys: Mutex<BTreeMap<String, i64>>,
    /// This many next DescribeLifecycleHooks (one hook) fail with this kind.
    pub fail_hook_reads: Mutex<Option<(u32, ApiErrorKind)>>,
    /// When set, every DynamoDB call fails with this kind.
    pub table_down: Mutex<Option<ApiErrorKind>>,
    /// This many next state writes fail (transient).
    pub fail_next_save: Mutex<u32>,
    /// DynamoDB calls.
    pub table_calls: AtomicU64,
    /// Auto Scaling calls.
    pub asg_calls: AtomicU64,
    /// Secrets Manager calls.
    pub secret_calls: AtomicU64,
}

impl FakeAws {
    fn asg(&self) -> Result<(), ApiError> {
        self.asg_calls.fetch_add(1, Ordering::Relaxed);
        self.failing()
    }
    fn sm(&self) -> Result<(), ApiError> {
        self.secret_calls.fetch_add(1, Ordering::Relaxed);
        self.failing()
    }
    fn ddb(&self) -> Result<(), ApiError> {
        self.table_calls.fetch_add(1, Ordering::Relaxed);
        match *lock(&self.table_down) {
            Some(kind) => Err(ApiError::new(kind, "injected table outage")),
            None => self.failing(),
        }
    }
    fn failing(&self) -> Result<(), ApiError> {
        match *lock(&self.fail) {
            Some(kind) => Err(ApiError::new(kind, "injected")),
            None => Ok(()),
        }
    }
    /// Auto Scaling calls so far.
    pub fn asg_calls(&self) -> u64 {
        self.asg_calls.load(Ordering::Relaxed)
    }
    /// Secrets Manager calls so far.
    pub fn secret_calls(&self) -> u64 {
        self.secret_calls.load(Ordering::Relaxed)
    }
    /// A snapshot of the completions.
    pub fn completed(&self) -> Vec<Completion> {
        lock(&self.completions).clone()
    }
}

impl Aws for FakeAws {
    async fn complete(&self, c: &Completion) -> Result<(), ApiError> {
        self.asg()?;
        if !lock(&self.pending).remove(&c.instance_id) {
            return Err(ApiError::new(
                ApiErrorKind::NoActiveLifecycleAction,
                format!(
                    "ValidationError: No active Lifecycle Action found with instance ID {}",
                    c.instance_id
                ),
            ));
        }
        lock(&self.completions).push(c.clone());
        Ok(())
    }
    async fn members(&self, _group: &str) -> Result<Vec<Member>, ApiError> {
        self.asg()?;
        Ok(lock(&self.members).clone())
    }
    async fn known(&self, ids: &BTreeSet<String>) -> Result<BTreeSet<String>, ApiError> {
        self.asg()?;
        Ok(lock(&self.known).intersection(ids).cloned().collect())
    }
    async fn instance(&self, id: &str) -> Result<Option<AsgInstance>, ApiError> {
        self.asg()?;
        Ok(lock(&self.instances).get(id).cloned())
    }
    async fn termination_hooks(&self, _group: &str) -> Result<Vec<TerminationHook>, ApiError> {
        self.asg()?;
        Ok(lock(&self.hooks).clone())
    }
    async fn terminating_since(&self, _group: &str, ids: &BTreeSet<String>) -> Result<BTreeMap<String, i64>, ApiError> {
        self.asg()?;
        Ok(lock(&self.since)
            .iter()
            .filter(|(k, _)| ids.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }
    async fn hook_timeout(&self, _group: &str, hook: &str) -> Result<Option<u64>, ApiError> {
        self.asg()?;
        {
            let mut f = lock(&self.fail_hook_reads);
            if let Some((n, kind)) = *f {
                *f = (n > 1).then(|| (n - 1, kind));
                return Err(ApiError::new(kind, "injected DescribeLifecycleHooks failure"));
            }
        }
        Ok(lock(&self.hook_timeouts).get(hook).copied())
    }
    async fn heartbeat(&self, c: &Completion) -> Result<(), ApiError> {
        self.asg()?;
        if let Some(kind) = *lock(&self.fail_heartbeats) {
            return Err(ApiError::new(kind, "injected"));
        }
        if !lock(&self.pending).contains(&c.instance_id) {
            return Err(ApiError::new(
                ApiErrorKind::NoActiveLifecycleAction,
                format!(
                    "ValidationError: No active Lifecycle Action found with instance ID {}",
                    c.instance_id
                ),
            ));
        }
        lock(&self.heartbeats).push(c.instance_id.clone());
        Ok(())
    }
    async fn put_secret(&self, name: &str, value: &Secret, tags: &[(String, String)]) -> Result<(), ApiError> {
        self.sm()?;
        {
            let mut f = lock(&self.fail_puts);
            if let Some((n, kind)) = *f {
                *f = (n > 1).then(|| (n - 1, kind));
                return Err(ApiError::new(kind, "injected"));
            }
        }
        lock(&self.secrets).insert(name.to_string(), value.expose().to_string());
        lock(&self.secret_tags).insert(name.to_string(), tags.to_vec());
        Ok(())
    }
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        self.sm()?;
        Ok(lock(&self.secrets)
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
    async fn delete_secret(&self, name: &str) -> Result<(), ApiError> {
        self.sm()?;
        lock(&self.secrets).remove(name);
        Ok(())
    }
    async fn capacity(&self, group: &str) -> Result<Capacity, ApiError> {
        self.asg()?;
        (*lock(&self.capacity)).ok_or_else(|| ApiError::new(ApiErrorKind::Other, format!("no group {group}")))
    }
    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), ApiError> {
        self.asg()?;
        if let Some(c) = lock(&self.capacity).as_mut() {
            c.desired = desired;
        }
        lock(&self.set_desired).push((group.to_string(), desired));
        Ok(())
    }
    async fn load_state(&self, table: &str, group: &str) -> Result<Option<StoredState>, ApiError> {
        self.ddb()?;
        Ok(lock(&self.table).get(&format!("{table}/{group}")).cloned())
    }
    async fn save_state(&self, table: &str, group: &str, json: &str, expected: Option<u64>) -> Result<bool, ApiError> {
        self.ddb()?;
        {
            let mut n = lock(&self.fail_next_save);
            if *n > 0 {
                *n -= 1;
                return Err(ApiError::new(ApiErrorKind::Transient, "injected write failure"));
            }
        }
        let mut t = lock(&self.table);
        let key = format!("{table}/{group}");
        if t.get(&key).map(|s| s.version) != expected {
            return Ok(false);
        }
        let version = expected.map_or(1, |v| v + 1);
        t.insert(
            key,
            StoredState {
                json: json.to_string(),
                version,
            },
        );
        Ok(true)
    }
    async fn claim_delivery(&self, _table: &str, delivery: &str, now: i64, expires_at: i64) -> Result<bool, ApiError> {
        self.ddb()?;
        let mut d = lock(&self.deliveries);
        if d.get(delivery).is_some_and(|&e| e > now) {
            return Ok(false);
        }
        d.insert(delivery.to_string(), expires_at);
        Ok(true)
    }
    async fn release_delivery(&self, _table: &str, delivery: &str) -> Result<(), ApiError> {
        self.ddb()?;
        lock(&self.deliveries).insert(delivery.to_string(), 0);
        Ok(())
    }
    async fn claim_key(&self, _table: &str, key: &str, now: i64, expires_at: i64) -> Result<bool, ApiError> {
        self.ddb()?;
        let mut d = lock(&self.keys);
        if d.get(key).is_some_and(|&e| e > now) {
            return Ok(false);
        }
        d.insert(key.to_string(), expires_at);
        Ok(true)
    }
    async fn expire_key(&self, _table: &str, key: &str, expires_at: i64) -> Result<(), ApiError> {
        self.ddb()?;
        lock(&self.keys).insert(key.to_string(), expires_at);
        Ok(())
    }
}

/// A fake GitHub.
#[derive(Debug, Default)]
pub struct FakeGitHub {
    /// Registered runners.
    pub runners: Mutex<Vec<Runner>>,
    /// Deleted runner ids.
    pub deleted: Mutex<Vec<u64>>,
    /// Answers the next DELETEs give instead of the normal one, in order, leaving the runners as
    /// they are: `Err(RunnerBusy)` (a 422: GitHub sees a job its `busy` flag does not show yet),
    /// `Ok(Deleted::AlreadyGone)` (a 404: gone since it was read), a rate limit, ...
    pub delete_next: Mutex<Vec<Result<Deleted, GitHubError>>>,
    /// When set, every call fails with a 5xx-like error.
    pub down: Mutex<bool>,
    /// Errors the next calls answer with, in order (then normal answers again).
    pub fail_next: Mutex<Vec<GitHubError>>,
    /// Jobs in flight (the REST API's view).
    pub jobs: Mutex<Vec<WorkflowJob>>,
    /// Every `generate-jitconfig` request answered; each also adds its runner to `runners`
    /// (offline, never connected), as GitHub does.
    pub jit_requests: Mutex<Vec<JitRequest>>,
    /// The `version` of runners a listener has connected to, by id (absent: never connected).
    pub versions: Mutex<BTreeMap<u64, String>>,
    /// Jobs re-run (`--rerun-fleet-losses`).
    pub reruns: Mutex<Vec<u64>>,
    /// Calls made.
    pub calls: AtomicU64,
}

impl FakeGitHub {
    /// A runner registered the way `register` does it.
    pub fn runner(id: u64, instance_id: &str, group: &str, status: &str, busy: bool) -> Runner {
        let labels = [
            "self-hosted",
            "Linux",
            "X64",
            instance_id,
            &lifecycle_github::labels::group_label(group),
        ]
        .iter()
        .map(|l| RunnerLabel { name: (*l).to_string() })
        .collect();
        Runner {
            id,
            name: instance_id.to_string(),
            status: status.to_string(),
            busy,
            labels,
            ephemeral: false,
        }
    }
    fn call(&self) -> Result<(), GitHubError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if *lock(&self.down) {
            return Err(GitHubError::Transient("injected outage".into()));
        }
        let mut next = lock(&self.fail_next);
        if !next.is_empty() {
            return Err(next.remove(0));
        }
        Ok(())
    }
    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// A listener connects with runner `id`'s config: `online`, `version` set.
    pub fn connect(&self, id: u64) {
        if let Some(r) = lock(&self.runners).iter_mut().find(|r| r.id == id) {
            r.status = "online".into();
        }
        lock(&self.versions).insert(id, "2.330.0".into());
    }
}

impl GitHub for FakeGitHub {
    async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        self.call()?;
        Ok(RegistrationToken {
            token: Secret::new("AAFAKEREGISTRATIONTOKEN0000"),
            expires_at: "2030-01-01T00:00:00Z".into(),
        })
    }
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.call()?;
        Ok(lock(&self.runners).clone())
    }
    async fn runner_details(&self) -> Result<Vec<RunnerDetail>, GitHubError> {
        self.call()?;
        let versions = lock(&self.versions);
        Ok(lock(&self.runners)
            .iter()
            .map(|r| RunnerDetail {
                runner: r.clone(),
                version: versions.get(&r.id).cloned(),
                os: None,
                runner_group_id: None,
            })
            .collect())
    }
    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GitHubError> {
        self.call()?;
        Ok(lock(&self.runners).iter().find(|r| r.id == id).cloned())
    }
    async fn delete_runner(&self, id: u64) -> Result<Deleted, GitHubError> {
        self.call()?;
        {
            let mut next = lock(&self.delete_next);
            if !next.is_empty() {
                return next.remove(0);
            }
        }
        let mut runners = lock(&self.runners);
        let before = runners.len();
        runners.retain(|r| r.id != id);
        lock(&self.deleted).push(id);
        Ok(if runners.len() < before {
            Deleted::Deleted
        } else {
            Deleted::AlreadyGone
        })
    }
    async fn jobs_in_flight(&self, _repos: &[(String, String)]) -> Result<Vec<WorkflowJob>, GitHubError> {
        self.call()?;
        Ok(lock(&self.jobs).clone())
    }
    async fn rerun_job(&self, _owner: &str, _repo: &str, job_id: u64) -> Result<(), GitHubError> {
        self.call()?;
        lock(&self.reruns).push(job_id);
        Ok(())
    }
    async fn jit_config(&self, request: &JitRequest) -> Result<JitConfig, GitHubError> {
        self.call()?;
        request.validate()?;
        let mut requests = lock(&self.jit_requests);
        requests.push(request.clone());
        let id = 1000 + requests.len() as u64;
        let runner = Runner {
            id,
            name: request.name.clone(),
            status: "offline".into(),
            busy: false,
            labels: request.labels.iter().map(|l| RunnerLabel { name: l.clone() }).collect(),
            ephemeral: true,
        };
        lock(&self.runners).push(runner.clone());
        Ok(JitConfig {
            runner,
            // Recognisable in a test that checks logs and answers for leaks.
            encoded_jit_config: Secret::new(format!("FAKEJITCONFIG-{id}-c2VjcmV0")),
        })
    }
}
