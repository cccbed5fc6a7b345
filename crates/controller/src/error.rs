//! Why handling an event (or a sweep) failed: shared by [`crate::handler`] and [`crate::sweep`],
//! so neither imports the other for it.

use crate::event::EventError;
use lifecycle_core::ApiError;
use lifecycle_github::GitHubError;

/// Why handling failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is malformed or of a kind the controller does not handle. Not retryable.
    #[error("event rejected: {0}")]
    Event(#[from] EventError),
    /// An AWS call failed.
    #[error("{call} failed: {error}")]
    Aws {
        /// The API action.
        call: &'static str,
        /// The classified failure.
        error: ApiError,
    },
    /// A GitHub call failed.
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
    /// The controller is not configured for what the event asks (e.g. a scaling run without
    /// `--scale-table`). Not retryable: the same configuration refuses again.
    #[error("not configured: {0}")]
    Config(String),
}

impl HandlerError {
    /// Whether invoking again may succeed (throttling, 5xx, timeouts, GitHub rate limits). A
    /// malformed event, AccessDenied or a configuration problem is not: retrying only repeats it.
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Event(_) | HandlerError::Config(_) => false,
            HandlerError::Aws { error, .. } => error.kind.is_retryable_soon(),
            HandlerError::GitHub(e) => e.is_retryable(),
        }
    }
}
