//! The request and response bodies this client uses, as GitHub's OpenAPI description names them
//! (`runner`, `runner-label`, `authentication-token`, the `generate-jitconfig` body and answer).
//! Fields the client does not use are not modelled; unknown fields are ignored.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// A self-hosted runner registration (`#/components/schemas/runner`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Runner {
    /// The runner's id (used to delete it).
    pub id: u64,
    /// Its name (runner-lifecycle registers runners under the instance id).
    pub name: String,
    /// `online` while a listener holds a session, `offline` otherwise.
    pub status: String,
    /// Whether GitHub thinks it runs a job. It lags by tens of seconds (domain brief section 3):
    /// never the only evidence that a runner is idle.
    #[serde(default)]
    pub busy: bool,
    /// Its labels, default ones included.
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
    /// Whether it is an ephemeral (one-job) registration.
    #[serde(default)]
    pub ephemeral: bool,
}

impl Runner {
    /// Whether it carries `label` (GitHub compares labels case-insensitively).
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l.name.eq_ignore_ascii_case(label))
    }

    /// Whether a listener is connected (`status == "online"`).
    pub fn is_online(&self) -> bool {
        self.status.eq_ignore_ascii_case("online")
    }
}

/// A runner with the fields only some callers need, read from the same `runner` schema
/// (`Runner` itself stays as it is: other crates build it field by field).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RunnerDetail {
    /// The fields every caller uses.
    #[serde(flatten)]
    pub runner: Runner,
    /// The runner software's version. GitHub's description of the `runner` schema: "only set if
    /// the runner has connected to the service at least once", so `None` (null or absent) means
    /// no listener has ever connected with this registration.
    #[serde(default)]
    pub version: Option<String>,
    /// `unknown` for a registration no listener has connected to yet (the description's
    /// `runner-jitconfig` example); informational only.
    #[serde(default)]
    pub os: Option<String>,
    /// The runner group.
    #[serde(default)]
    pub runner_group_id: Option<u64>,
}

impl RunnerDetail {
    /// Whether a listener has ever connected with this registration (`version` is set).
    pub fn has_connected(&self) -> bool {
        self.version.as_deref().is_some_and(|v| !v.trim().is_empty())
    }
}

/// One label of a runner (`#/components/schemas/runner-label`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RunnerLabel {
    /// The label text.
    pub name: String,
}

/// `GET .../actions/runners`: one page.
#[derive(Debug, Deserialize)]
pub(crate) struct RunnerPage<T = Runner> {
    #[serde(default)]
    pub total_count: u64,
    pub runners: Vec<T>,
}

/// A registration token (`#/components/schemas/authentication-token`), valid for one hour.
#[derive(Clone, Debug, Deserialize)]
pub struct RegistrationToken {
    /// The token itself.
    pub token: Secret,
    /// When it expires, as GitHub wrote it (RFC 3339 with an offset).
    pub expires_at: String,
}

/// The body of `POST {scope}/actions/runners/generate-jitconfig` (GitHub's OpenAPI description:
/// `name`, `runner_group_id` and `labels` are required, `labels` has 1 to 100 items, `work_folder`
/// defaults to `_work`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JitRequest {
    /// The new runner's name; unique within the scope (409 otherwise). See [`crate::jit`].
    pub name: String,
    /// The runner group's id (1 is the default group).
    pub runner_group_id: u64,
    /// Its custom labels, 1 to 100.
    pub labels: Vec<String>,
    /// The work folder relative to the runner directory; omitted: GitHub's default `_work`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_folder: Option<String>,
}

/// Most labels GitHub accepts in one `generate-jitconfig` request.
pub const MAX_JIT_LABELS: usize = 100;

impl JitRequest {
    /// A request in the default work folder.
    pub fn new(name: impl Into<String>, runner_group_id: u64, labels: Vec<String>) -> JitRequest {
        JitRequest {
            name: name.into(),
            runner_group_id,
            labels,
            work_folder: None,
        }
    }

    /// What GitHub would refuse with 422, refused before a request: an empty name, no labels or
    /// more than 100, an empty label.
    pub fn validate(&self) -> Result<(), crate::GitHubError> {
        let bad = |why: String| Err(crate::GitHubError::Config(format!("JIT runner request: {why}")));
        if self.name.trim().is_empty() {
            return bad("the runner name is empty".into());
        }
        if self.labels.is_empty() || self.labels.len() > MAX_JIT_LABELS {
            return bad(format!(
                "{} labels; GitHub takes 1 to {MAX_JIT_LABELS}",
                self.labels.len()
            ));
        }
        if self.labels.iter().any(|l| l.trim().is_empty()) {
            return bad("an empty label".into());
        }
        Ok(())
    }
}

/// The answer of `generate-jitconfig` (201): the new registration and its configuration, which
/// the listener takes as `run --jitconfig <value>` or, off the command line, as the environment
/// variable `ACTIONS_RUNNER_INPUT_JITCONFIG` (docs/controller.md, "Just-in-time runners").
#[derive(Clone, Debug, Deserialize)]
pub struct JitConfig {
    /// The registration created (offline, never connected, until a listener uses the config).
    pub runner: Runner,
    /// Base64 of a JSON map from runner-directory file name (`.runner`, `.credentials`, ...) to
    /// the base64 of its content: the runner's credentials. A [`Secret`]: never printed.
    pub encoded_jit_config: Secret,
}

/// `POST /app/installations/{id}/access_tokens`.
#[derive(Debug, Deserialize)]
pub(crate) struct InstallationToken {
    pub token: Secret,
    pub expires_at: String,
}

/// GitHub's error body (`#/components/schemas/basic-error`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A runner-shaped object whose fields take arbitrary values.
    fn runner() -> impl Strategy<Value = Value> {
        (
            value(),
            value(),
            value(),
            value(),
            value(),
            any::<u64>(),
            any::<String>(),
        )
            .prop_map(|(id, name, status, busy, labels, good_id, good_name)| {
                let id = if id.is_null() { Value::from(good_id) } else { id };
                let name = if name.is_null() { Value::from(good_name) } else { name };
                json!({ "id": id, "name": name, "status": status, "busy": busy, "labels": labels })
            })
    }

    /// Decode `bytes` as every answer type the client reads: `Ok` or `Err`, never a panic.
    fn decode_all(bytes: &[u8]) {
        if let Ok(page) = serde_json::from_slice::<RunnerPage>(bytes) {
            for r in &page.runners {
                let _ = (r.has_label("self-hosted"), r.is_online());
            }
        }
        let _ = serde_json::from_slice::<Runner>(bytes);
        if let Ok(page) = serde_json::from_slice::<RunnerPage<RunnerDetail>>(bytes) {
            for r in &page.runners {
                let _ = r.has_connected();
            }
        }
        let _ = serde_json::from_slice::<RegistrationToken>(bytes);
        let _ = serde_json::from_slice::<JitConfig>(bytes);
        let _ = serde_json::from_slice::<InstallationToken>(bytes);
        let _ = serde_json::from_slice::<ErrorBody>(bytes);
    }

    #[test]
    fn details_read_version_as_the_connected_marker() {
        let page: RunnerPage<RunnerDetail> = serde_json::from_value(json!({
            "total_count": 3,
            "runners": [
                {"id": 1, "name": "a", "os": "unknown", "status": "offline", "busy": false, "labels": []},
                {"id": 2, "name": "b", "os": "Linux", "status": "offline", "busy": false, "labels": [],
                 "version": "2.336.0", "runner_group_id": 3, "ephemeral": true},
                {"id": 3, "name": "c", "os": "Linux", "status": "online", "busy": true, "labels": [],
                 "version": null},
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let connected: Vec<bool> = page.runners.iter().map(RunnerDetail::has_connected).collect();
        assert_eq!(connected, [false, true, false]);
        assert_eq!(page.runners[1].runner_group_id, Some(3));
        assert!(page.runners[1].runner.ephemeral && page.runners[2].runner.busy);
    }

    #[test]
    fn jit_requests_serialize_as_the_description_names_them() {
        let mut r = JitRequest::new("rle-1700000000-i-0abc", 1, vec!["self-hosted".into()]);
        assert_eq!(
            serde_json::to_value(&r).unwrap_or_default(),
            json!({"name": "rle-1700000000-i-0abc", "runner_group_id": 1, "labels": ["self-hosted"]})
        );
        r.work_folder = Some("_w".into());
        assert_eq!(serde_json::to_value(&r).unwrap_or_default()["work_folder"], "_w");
        assert!(r.validate().is_ok());
        for bad in [
            JitRequest::new(" ", 1, vec!["x".into()]),
            JitRequest::new("n", 1, vec![]),
            JitRequest::new("n", 1, vec!["x".into(), "".into()]),
            JitRequest::new("n", 1, (0..101).map(|i| i.to_string()).collect()),
        ] {
            assert!(matches!(bad.validate(), Err(crate::GitHubError::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_jit_config_never_prints_its_secret() {
        let c: JitConfig = serde_json::from_value(json!({
            "runner": {"id": 23, "name": "n", "os": "unknown", "status": "offline", "busy": false, "labels": []},
            "encoded_jit_config": "eyJzZWNyZXQiOiB0cnVlfQ=="
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("eyJzZWNyZXQ") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(c.encoded_jit_config.expose(), "eyJzZWNyZXQiOiB0cnVlfQ==");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_bytes_decode_or_fail(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&raw);
        }

        #[test]
        fn any_json_decodes_or_fails(v in value()) {
            decode_all(v.to_string().as_bytes());
        }

        /// Pages and JIT answers with hostile runner fields.
        #[test]
        fn schema_shaped_answers_decode_or_fail(
            runners in proptest::collection::vec(runner(), 0..4),
            total in value(),
            token in value(),
            expires in value(),
        ) {
            let page = json!({ "total_count": total, "runners": runners });
            decode_all(page.to_string().as_bytes());
            let first = runners.first().cloned().unwrap_or(Value::Null);
            let jit = json!({ "runner": first, "encoded_jit_config": token.clone() });
            decode_all(jit.to_string().as_bytes());
            let tok = json!({ "token": token, "expires_at": expires });
            decode_all(tok.to_string().as_bytes());
        }
    }
}

/// One workflow run as `GET /repos/{owner}/{repo}/actions/runs` lists it
/// (`#/components/schemas/workflow-run`; only its id is used).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WorkflowRun {
    /// The run's id (for its jobs).
    pub id: u64,
    /// `queued`, `in_progress`, `completed`, ...
    #[serde(default)]
    pub status: Option<String>,
}

/// A page of workflow runs.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct WorkflowRunPage {
    #[serde(default)]
    pub workflow_runs: Vec<WorkflowRun>,
}

/// One job of a workflow run (`#/components/schemas/job`), as the jobs API lists it and as the
/// `workflow_job` webhook carries it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WorkflowJob {
    /// The job's id.
    pub id: u64,
    /// The run it belongs to.
    #[serde(default)]
    pub run_id: Option<u64>,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    pub status: String,
    /// The labels of `runs-on`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// When the job was created (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When a runner started it (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
}

/// A page of jobs.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct WorkflowJobPage {
    #[serde(default)]
    pub jobs: Vec<WorkflowJob>,
}
