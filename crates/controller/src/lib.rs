//! # lifecycle-controller
//!
//! The fleet controller: what no host agent can do for itself. It runs as an AWS Lambda on
//! EventBridge events (`runner-lifecycle controller lambda`) or from the command line
//! (`runner-lifecycle controller handle-event|sweep`), with the same code:
//!
//! - [`event`]: the EventBridge events, typed; malformed ones are rejected, never a panic;
//! - [`handler`]: one event in, one outcome out, generic over the narrow [`ports::Aws`] and
//!   [`ports::GitHub`] traits (warm-pool trims, launch tokens, spot warnings);
//! - [`retry`]: what to do when a launch fails (retry, heartbeat, hand back, abandon), a pure
//!   decision;
//! - [`sweep`]: the scheduled sweep (orphaned registrations and secrets, instances whose agent is
//!   gone, stuck instances);
//! - [`scale`]: demand scaling from [`webhook`]s and a periodic reconcile, state in DynamoDB;
//! - [`function_url`]: function-URL requests (webhooks, JIT), typed once with `aws_lambda_events`;
//! - [`jit`]: `POST /jit-config`, a just-in-time runner config for the signed-in instance only;
//! - [`iam`]: least-privilege policies from the one list of AWS calls the code makes;
//! - [`aws`]: the real AWS port (official SDK); [`lambda`]: the Lambda runtime glue.
//!
//! Design and the reasons behind it: docs/controller.md.

pub mod aws;
pub mod emf;
pub mod error;
pub mod event;
/// In-memory counting fakes of the ports: for tests and the benchmark only (feature
/// `test-support`, which the crate's own dev-dependency turns on).
#[cfg(any(test, feature = "test-support"))]
pub mod fakes;
pub mod function_url;
pub mod handler;
pub mod iam;
pub mod jit;
pub mod lambda;
pub mod ports;
pub mod rerun;
pub mod retry;
pub mod scale;
pub mod settings;
pub mod sweep;
pub mod webhook;

pub use error::HandlerError;
pub use handler::{Controller, Outcome};
pub use settings::Settings;
