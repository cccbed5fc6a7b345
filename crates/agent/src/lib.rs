//! # lifecycle-agent
//!
//! The IO shell around [`lifecycle_core::Host`] on a runner host: it supervises the GitHub Actions
//! runner listener, watches IMDS and the listener's `Runner.Worker` children, talks to the Auto
//! Scaling API, serves the job hooks' Unix socket, and logs every decision with its reason. It
//! decides nothing itself: every choice is the core's.
//!
//! - [`config`]: one table of keys; flag > environment > file > default.
//! - [`agent`]: the main loop.
//! - [`hook`]: the job hooks' client (blocking, no runtime on the fast path).
//! - [`imds`], [`asg`], [`procs`], [`socket`]: the pieces of IO.

pub mod agent;
pub mod asg;
pub mod cleaner;
pub mod clock;
pub mod config;
pub mod conns;
pub mod doc_table;
pub mod duration;
pub mod engine;
pub mod env_vars;
pub mod hook;
pub mod imds;
pub mod isolation;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod perflog;
pub mod procs;
pub mod runner_env;
pub mod socket;
pub mod status;
pub mod status_wire;
pub mod tree;
