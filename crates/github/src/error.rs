//! What can go wrong talking to GitHub, sorted by what a caller does about it.

use std::time::Duration;

/// A failed GitHub request. No variant carries a credential: messages come from GitHub's error
/// bodies (`message`), which never echo the request's token.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The configuration cannot work (bad URL, unreadable App key).
    #[error("GitHub client configuration: {0}")]
    Config(String),
    /// 401: the token or App credentials were rejected.
    #[error("GitHub rejected the credentials (HTTP 401): {0}")]
    Unauthorized(String),
    /// 403 that is not a rate limit: the credentials lack a permission.
    #[error("GitHub refused the request (HTTP 403): {0}")]
    Forbidden(String),
    /// 404 on something that must exist (the organisation or repository, the App installation).
    #[error("GitHub answered 404 for {what}: {message}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// GitHub's message.
        message: String,
    },
    /// 422 when deleting a runner: it is running a job (GitHub REST API, "Delete a self-hosted
    /// runner"). Retry after the job.
    #[error("runner {id} is busy (HTTP 422): {message}")]
    RunnerBusy {
        /// The runner id.
        id: u64,
        /// GitHub's message.
        message: String,
    },
    /// 409 from `generate-jitconfig`: a runner with this name exists in the scope, also under
    /// the fresh name the client tried once more with (crate::jit, "409 policy").
    #[error("runner name {name} is taken (HTTP 409): {message}")]
    NameConflict {
        /// The last name tried.
        name: String,
        /// GitHub's message.
        message: String,
    },
    /// A primary or secondary rate limit that lasts longer than the client may wait.
    #[error("GitHub rate limit: retry in {} s", retry_after.as_secs())]
    RateLimited {
        /// When the limit lifts.
        retry_after: Duration,
    },
    /// 5xx, a timeout or a connection failure that outlasted the client's retries.
    #[error("GitHub unavailable: {0}")]
    Transient(String),
    /// Any other unexpected status.
    #[error("GitHub answered HTTP {status}: {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// The answer did not match the documented schema.
    #[error("GitHub answer not understood: {0}")]
    Decode(String),
}

impl GitHubError {
    /// Whether trying again later can help (rate limits, GitHub trouble, a busy runner).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitHubError::RateLimited { .. } | GitHubError::Transient(_) | GitHubError::RunnerBusy { .. }
        )
    }
}
