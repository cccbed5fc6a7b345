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

/// One label of a runner (`#/components/schemas/runner-label`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RunnerLabel {
    /// The label text.
    pub name: String,
}

/// `GET .../actions/runners`: one page.
#[derive(Debug, Deserialize)]
pub(crate) struct RunnerPage {
    #[serde(default)]
    pub total_count: u64,
    pub runners: Vec<Runner>,
}

/// A registration token (`#/components/schemas/authentication-token`), valid for one hour.
#[derive(Clone, Debug, Deserialize)]
pub struct RegistrationToken {
    /// The token itself.
    pub token: Secret,
    /// When it expires, as GitHub wrote it (RFC 3339 with an offset).
    pub expires_at: String,
}

/// The body of `POST .../actions/runners/generate-jitconfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JitRequest {
    /// The new runner's name.
    pub name: String,
    /// The runner group's id (1 is the default group).
    pub runner_group_id: u64,
    /// Its labels (1 to 100; the default ones are not added for JIT runners).
    pub labels: Vec<String>,
    /// The work folder relative to the runner directory.
    pub work_folder: String,
}

/// The answer of `generate-jitconfig`: the ephemeral runner and its configuration, which the
/// listener takes as `--jitconfig` (or `ACTIONS_RUNNER_INPUT_JITCONFIG`) instead of `config.sh`.
#[derive(Clone, Debug, Deserialize)]
pub struct JitConfig {
    /// The registration created.
    pub runner: Runner,
    /// Base64 JSON of the runner's configuration files; a credential.
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
        let _ = serde_json::from_slice::<RegistrationToken>(bytes);
        let _ = serde_json::from_slice::<JitConfig>(bytes);
        let _ = serde_json::from_slice::<InstallationToken>(bytes);
        let _ = serde_json::from_slice::<ErrorBody>(bytes);
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
