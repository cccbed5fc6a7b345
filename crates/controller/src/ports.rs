//! The narrow interfaces the handler needs from the world. The real ones are [`crate::aws::AwsFleet`]
//! and [`lifecycle_github::GitHubClient`]; tests and the benchmark use counting fakes.

use lifecycle_core::ApiError;
use lifecycle_github::{
    Deleted, GitHubError, JitConfig, JitRequest, RegistrationToken, Runner, RunnerDetail, Secret, WorkflowJob,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

/// `CONTINUE` or `ABANDON`: the core's one type.
pub use lifecycle_core::LifecycleResult;

/// One CompleteLifecycleAction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// The instance.
    pub instance_id: String,
    /// The action token, when the event carried one (preferred: it cannot complete a later action).
    pub token: Option<String>,
    /// The result.
    pub result: LifecycleResult,
}

/// One member of a group as DescribeAutoScalingGroups lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The instance.
    pub instance_id: String,
    /// Its `LifecycleState`.
    pub state: String,
}

/// One instance as DescribeAutoScalingInstances reports it (warm pool included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsgInstance {
    /// The group it belongs to.
    pub group: String,
    /// Its `LifecycleState` (`InService`, `Pending:Wait`, `Terminating:Wait`, `Warmed:Stopped`, ...).
    pub state: String,
}

/// A termination hook of a group: the shared read's own type (name, HeartbeatTimeout in seconds).
pub use lifecycle_aws::autoscaling::LifecycleHook as TerminationHook;

/// A group's capacity as DescribeAutoScalingGroups reports it. `desired` is the in-service
/// capacity: warm-pool instances are not part of it (AWS User Guide, "Warm pools").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// DesiredCapacity.
    pub desired: u32,
    /// MinSize.
    pub min: u32,
    /// MaxSize.
    pub max: u32,
}

/// One stored item of the scaling state table: its JSON and its version (optimistic locking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredState {
    /// The state, as JSON.
    pub json: String,
    /// The version written with it.
    pub version: u64,
}

/// What the controller asks of AWS (Auto Scaling, Secrets Manager and its DynamoDB table). Every method is one kind of
/// API call; `crate::iam` lists them for the IAM policy.
pub trait Aws {
    /// CompleteLifecycleAction.
    fn complete(&self, c: &Completion) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// DescribeAutoScalingGroups for one group: its members and their states (warm pool excluded).
    fn members(&self, group: &str) -> impl Future<Output = Result<Vec<Member>, ApiError>> + Send;
    /// DescribeAutoScalingInstances: which of `ids` any group still knows (warm pool included).
    fn known(&self, ids: &BTreeSet<String>) -> impl Future<Output = Result<BTreeSet<String>, ApiError>> + Send;
    /// DescribeAutoScalingInstances for one instance: its group and lifecycle state, `None` when no
    /// group knows it.
    fn instance(&self, id: &str) -> impl Future<Output = Result<Option<AsgInstance>, ApiError>> + Send;
    /// DescribeLifecycleHooks: the group's termination hooks.
    fn termination_hooks(&self, group: &str) -> impl Future<Output = Result<Vec<TerminationHook>, ApiError>> + Send;
    /// DescribeScalingActivities: when each of `ids` entered its termination activity (epoch
    /// seconds), for those still waiting on a lifecycle action.
    fn terminating_since(
        &self,
        group: &str,
        ids: &BTreeSet<String>,
    ) -> impl Future<Output = Result<BTreeMap<String, i64>, ApiError>> + Send;
    /// DescribeLifecycleHooks for one hook: its HeartbeatTimeout in seconds (`None`: no such hook).
    fn hook_timeout(&self, group: &str, hook: &str) -> impl Future<Output = Result<Option<u64>, ApiError>> + Send;
    /// RecordLifecycleActionHeartbeat for the action `c` names (its `result` is ignored).
    fn heartbeat(&self, c: &Completion) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// CreateSecret with `tags`, or, when it exists, PutSecretValue and TagResource with them.
    fn put_secret(
        &self,
        name: &str,
        value: &Secret,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// ListSecrets whose name starts with `prefix`.
    fn list_secrets(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;
    /// DeleteSecret without recovery window; a secret already gone counts as deleted.
    fn delete_secret(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// DescribeAutoScalingGroups for one group: its capacity and bounds.
    fn capacity(&self, group: &str) -> impl Future<Output = Result<Capacity, ApiError>> + Send;
    /// SetDesiredCapacity (HonorCooldown false: the controller is the only scaler).
    fn set_desired_capacity(&self, group: &str, desired: u32) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// GetItem (consistent read) of a group's scaling state in `table`.
    fn load_state(
        &self,
        table: &str,
        group: &str,
    ) -> impl Future<Output = Result<Option<StoredState>, ApiError>> + Send;
    /// PutItem of a group's scaling state if the stored version is still `expected` (`None`: no
    /// item yet). `Ok(false)`: another invocation wrote first.
    fn save_state(
        &self,
        table: &str,
        group: &str,
        json: &str,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send;
    /// PutItem of a webhook delivery id with a TTL, unless it is there and not expired.
    /// `Ok(false)`: seen before (a replay).
    fn claim_delivery(
        &self,
        table: &str,
        delivery: &str,
        now: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send;
    /// PutItem of a delivery id as already expired: forget a claim whose event could not be
    /// counted, so GitHub's redelivery is not refused as a replay.
    fn release_delivery(&self, table: &str, delivery: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// PutItem of the state-table item `key` (a whole partition key, `kind#...`, never a bare
    /// delivery id) with a TTL, unless it is there and not expired. `Ok(false)`: held. The
    /// webhook's payload identities (`job#...`) and the JIT mint's per-instance lease (`jit#...`).
    fn claim_key(
        &self,
        table: &str,
        key: &str,
        now: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send;
    /// PutItem of `key` expiring at `expires_at` (0: forget it now), unconditionally.
    fn expire_key(&self, table: &str, key: &str, expires_at: i64) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// What the controller asks of GitHub.
pub trait GitHub {
    /// A registration token.
    fn registration_token(&self) -> impl Future<Output = Result<RegistrationToken, GitHubError>> + Send;
    /// Every runner of the organisation or repository.
    fn runners(&self) -> impl Future<Output = Result<Vec<Runner>, GitHubError>> + Send;
    /// Every runner with `version` (set once a listener has connected): the JIT mint's
    /// outstanding-config rule.
    fn runner_details(&self) -> impl Future<Output = Result<Vec<RunnerDetail>, GitHubError>> + Send;
    /// One registration by id; `None` when GitHub knows none (404).
    fn get_runner(&self, id: u64) -> impl Future<Output = Result<Option<Runner>, GitHubError>> + Send;
    /// Delete one registration.
    fn delete_runner(&self, id: u64) -> impl Future<Output = Result<Deleted, GitHubError>> + Send;
    /// The queued and in-progress jobs of the queued and in-progress workflow runs of `repos`
    /// (`owner`, `repo`); none given: the scope's repository.
    fn jobs_in_flight(
        &self,
        repos: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<WorkflowJob>, GitHubError>> + Send;
    /// `generate-jitconfig`: a new just-in-time registration and its configuration.
    fn jit_config(&self, request: &JitRequest) -> impl Future<Output = Result<JitConfig, GitHubError>> + Send;
    /// Re-run one job (`--rerun-fleet-losses`, crate::rerun). Only a configured client can.
    fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> impl Future<Output = Result<(), GitHubError>> + Send {
        let _ = (owner, repo, job_id);
        async { Err(GitHubError::Config("re-running a job needs GitHub configured".into())) }
    }
}

/// The repositories to read jobs from: `repos`, or the scope's repository.
fn repos_of(scope: &lifecycle_github::Scope, repos: &[(String, String)]) -> Result<Vec<(String, String)>, GitHubError> {
    if !repos.is_empty() {
        return Ok(repos.to_vec());
    }
    match scope {
        lifecycle_github::Scope::Repo { owner, repo } => Ok(vec![(owner.clone(), repo.clone())]),
        lifecycle_github::Scope::Org(org) => Err(GitHubError::Config(format!(
            "organisation `{org}`: list the repositories whose jobs the group serves (--scale-repos OWNER/REPO,...)"
        ))),
    }
}

impl GitHub for lifecycle_github::GitHubClient {
    async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        lifecycle_github::GitHubClient::registration_token(self).await
    }
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.list_runners().await
    }
    async fn runner_details(&self) -> Result<Vec<RunnerDetail>, GitHubError> {
        self.list_runner_details().await
    }
    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GitHubError> {
        lifecycle_github::GitHubClient::get_runner(self, id).await
    }
    async fn delete_runner(&self, id: u64) -> Result<Deleted, GitHubError> {
        lifecycle_github::GitHubClient::delete_runner(self, id).await
    }
    async fn jobs_in_flight(&self, repos: &[(String, String)]) -> Result<Vec<WorkflowJob>, GitHubError> {
        let mut jobs: BTreeMap<u64, WorkflowJob> = BTreeMap::new();
        for (owner, repo) in repos_of(self.scope(), repos)? {
            let mut runs = BTreeSet::new();
            for status in ["queued", "in_progress"] {
                runs.extend(
                    self.workflow_runs(&owner, &repo, status)
                        .await?
                        .into_iter()
                        .map(|r| r.id),
                );
            }
            for run in runs {
                for job in self.run_jobs(&owner, &repo, run).await? {
                    if job.status == "queued" || job.status == "in_progress" {
                        jobs.insert(job.id, job);
                    }
                }
            }
        }
        Ok(jobs.into_values().collect())
    }
    async fn jit_config(&self, request: &JitRequest) -> Result<JitConfig, GitHubError> {
        self.generate_jit_config(request).await
    }
}

/// No GitHub credentials configured: every call fails with a configuration error, so the handler
/// mints no tokens, deletes no registrations and treats liveness as unknown (never as dead).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGitHub;

impl GitHub for NoGitHub {
    async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn runner_details(&self) -> Result<Vec<RunnerDetail>, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn get_runner(&self, _id: u64) -> Result<Option<Runner>, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn delete_runner(&self, _id: u64) -> Result<Deleted, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn jobs_in_flight(&self, _repos: &[(String, String)]) -> Result<Vec<WorkflowJob>, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
    async fn jit_config(&self, _request: &JitRequest) -> Result<JitConfig, GitHubError> {
        Err(GitHubError::Config("no GitHub credentials configured".into()))
    }
}

/// Either a real client or none.
#[derive(Debug)]
pub enum AnyGitHub {
    /// Configured.
    Client(Box<lifecycle_github::GitHubClient>),
    /// Not configured.
    None(NoGitHub),
}

impl GitHub for AnyGitHub {
    async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::registration_token(c.as_ref()).await,
            AnyGitHub::None(n) => n.registration_token().await,
        }
    }
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::runners(c.as_ref()).await,
            AnyGitHub::None(n) => n.runners().await,
        }
    }
    async fn runner_details(&self) -> Result<Vec<RunnerDetail>, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::runner_details(c.as_ref()).await,
            AnyGitHub::None(n) => n.runner_details().await,
        }
    }
    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::get_runner(c.as_ref(), id).await,
            AnyGitHub::None(n) => n.get_runner(id).await,
        }
    }
    async fn delete_runner(&self, id: u64) -> Result<Deleted, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::delete_runner(c.as_ref(), id).await,
            AnyGitHub::None(n) => n.delete_runner(id).await,
        }
    }
    async fn jobs_in_flight(&self, repos: &[(String, String)]) -> Result<Vec<WorkflowJob>, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::jobs_in_flight(c.as_ref(), repos).await,
            AnyGitHub::None(n) => n.jobs_in_flight(repos).await,
        }
    }
    async fn jit_config(&self, request: &JitRequest) -> Result<JitConfig, GitHubError> {
        match self {
            AnyGitHub::Client(c) => GitHub::jit_config(c.as_ref(), request).await,
            AnyGitHub::None(n) => n.jit_config(request).await,
        }
    }
    async fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> Result<(), GitHubError> {
        match self {
            AnyGitHub::Client(c) => c.rerun_job(owner, repo, job_id).await,
            AnyGitHub::None(_) => Err(GitHubError::Config("re-running a job needs GitHub configured".into())),
        }
    }
}
