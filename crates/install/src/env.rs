//! The agent's environment variables that `install` writes into the unit. The agent's keys table
//! (lifecycle_agent::config, `vars`) is the one source of these names; the agent depends on this
//! crate, so this crate cannot read the table, and the agent asserts at compile time that every
//! name here is the table's (a `const _` assertion in its config.rs): a renamed key fails the build
//! instead of leaving the unit setting a variable nobody reads.

/// `runner.user`.
pub const RUNNER_USER: &str = "RUNNER_LIFECYCLE_RUNNER_USER";
/// `runner.mode`.
pub const RUNNER_MODE: &str = "RUNNER_LIFECYCLE_RUNNER_MODE";
/// `runner.jit_url`.
pub const RUNNER_JIT_URL: &str = "RUNNER_LIFECYCLE_RUNNER_JIT_URL";
/// `containers.mode`.
pub const CONTAINERS_MODE: &str = "RUNNER_LIFECYCLE_CONTAINERS_MODE";
/// `runner.one_job_per_instance`.
pub const RUNNER_ONE_JOB_PER_INSTANCE: &str = "RUNNER_LIFECYCLE_RUNNER_ONE_JOB_PER_INSTANCE";
