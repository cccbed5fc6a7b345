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
