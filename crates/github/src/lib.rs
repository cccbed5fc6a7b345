//! # lifecycle-github
//!
//! A small typed client for the GitHub REST endpoints runner-lifecycle needs (domain brief section
//! 3, GitHub REST API "Self-hosted runners"):
//!
//! - `GET {scope}/actions/runners?per_page=100` (paginated by the `Link` header), filtered by label;
//! - `GET {scope}/actions/runners/{runner_id}` (one runner; 404 is `None`);
//! - `DELETE {scope}/actions/runners/{runner_id}` (404 counts as done, 422 means busy);
//! - `POST {scope}/actions/runners/registration-token`;
//! - the loss audit's reads ([`audit`], [`loss`]): runs, jobs of all attempts, check-run annotations,
//!   conditionally and paged; `POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`;
//! - `POST {scope}/actions/runners/generate-jitconfig` (201; 409 when the name is taken: one retry
//!   under a fresh name, see [`jit`]), and the sweep of JIT registrations no listener ever
//!   connected to ([`GitHubClient::delete_runners_never_online`]);
//!
//! where `{scope}` is `/orgs/{org}` or `/repos/{owner}/{repo}`. It authenticates with a token (PAT
//! or installation token) or as a GitHub App (RS256 JWT, installation token cached until five
//! minutes before it expires), and honours the primary and secondary rate limits (`Retry-After`,
//! `x-ratelimit-remaining: 0` with `x-ratelimit-reset`).
//!
//! Why a thin client over hyper rather than octocrab or reqwest: docs/controller.md.
//!
//! Every credential is a [`Secret`]: its `Debug` and `Display` print `<redacted>`, and no error
//! text of this crate carries a request header or a token-bearing response body.

pub mod audit;
pub mod auth;
pub mod client;
pub mod error;
pub mod jit;
pub mod labels;
pub mod link;
pub mod loss;
pub mod ratelimit;
pub mod secret;
pub mod time;
pub mod types;

pub use auth::{AppKey, Auth};
pub use client::{Deleted, GitHubClient, Options, Scope};
pub use error::GitHubError;
pub use jit::Sweep;
pub use secret::Secret;
pub use types::{
    JitConfig, JitRequest, RegistrationToken, Runner, RunnerDetail, RunnerLabel, WorkflowJob, WorkflowRun,
};
