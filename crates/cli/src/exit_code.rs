//! Every exit code the binary uses, in one place (documented in the README's "Exit codes").

/// Process exit codes of `runner-lifecycle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// An unexpected runtime error (printed with its cause chain).
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The configuration is invalid (malformed file, unknown key, bad value, missing runner dir).
    Config = 3,
    /// `simulate`: an invariant of the decision core was violated; the seed is printed.
    InvariantViolated = 4,
    /// `agent`: another agent already serves the hook socket (and supervises the listener).
    AlreadyRunning = 5,
    /// `status`: no agent is running (its socket is missing, or nothing listens on it).
    AgentNotRunning = 6,
    /// `status`: the socket is there but gave no usable answer (permission denied, no answer in
    /// time, or an unexpected reply).
    AgentNoAnswer = 7,
    /// `install --check`: the host is not laid out as `install` would lay it out (each difference
    /// printed: the runner's tree, the unit, the hooks...).
    NotInstalled = 8,
    /// `register`: the registration token's secret or parameter does not exist.
    SecretMissing = 20,
    /// `register`: the registration token expired, or GitHub rejected it.
    TokenRejected = 21,
    /// `register`: config.sh failed (its output is printed, token masked).
    ConfigScriptFailed = 22,
    /// `register`: the runner is registered, but the token's secret could not be deleted.
    SecretNotDeleted = 23,
    /// `controller`: the event is malformed or unsupported; retrying cannot help.
    EventRejected = 24,
    /// `controller`: an AWS or GitHub failure that a retry may fix (throttling, 5xx, rate limit);
    /// `jit-config`: the controller or the network failed in a way a retry may fix.
    Retryable = 25,
    /// `jit-config`: the controller refused (403 not an authorized instance, 409 not in service).
    JitRefused = 26,
}

// ----- The exit code of each error kind a command ends with: here, not at each command. -----

impl From<&lifecycle_controller::HandlerError> for ExitCode {
    /// `controller`: a malformed event is rejected for good, a missing setting is the
    /// configuration's, a failure a retry may fix is retryable, anything else a failure.
    fn from(e: &lifecycle_controller::HandlerError) -> Self {
        match e {
            lifecycle_controller::HandlerError::Event(_) => ExitCode::EventRejected,
            lifecycle_controller::HandlerError::Config(_) => ExitCode::Config,
            e if e.is_retryable() => ExitCode::Retryable,
            _ => ExitCode::Failure,
        }
    }
}

impl From<&lifecycle_install::InstallError> for ExitCode {
    /// `install`: a write that failed is a failure; everything else is the operator's input.
    fn from(e: &lifecycle_install::InstallError) -> Self {
        match e {
            lifecycle_install::InstallError::Io { .. } => ExitCode::Failure,
            _ => ExitCode::Config,
        }
    }
}

impl From<&lifecycle_register::RegisterError> for ExitCode {
    /// `register`: each kind its code.
    fn from(e: &lifecycle_register::RegisterError) -> Self {
        use lifecycle_register::RegisterError as E;
        match e {
            E::RunnerDirMissing(_) | E::Config(_) => ExitCode::Config,
            E::SecretMissing { .. } => ExitCode::SecretMissing,
            E::TokenExpired { .. } | E::TokenRejected { .. } => ExitCode::TokenRejected,
            E::ConfigScript { .. } => ExitCode::ConfigScriptFailed,
            // A token left behind, after a success or a failure: the most urgent thing to fix.
            E::SecretNotDeleted { .. } | E::FailedAndSecretNotDeleted { .. } => ExitCode::SecretNotDeleted,
            E::Identity(_) | E::SecretRead { .. } => ExitCode::Failure,
        }
    }
}

impl From<&lifecycle_aws::function_url::JitFetchError> for ExitCode {
    /// `jit-config`: retry later, refused (403, 409, an outstanding config), or misconfigured.
    fn from(e: &lifecycle_aws::function_url::JitFetchError) -> Self {
        use lifecycle_aws::function_url::JitFetchError as E;
        match e {
            E::Retryable { .. } => ExitCode::Retryable,
            E::Refused { .. } | E::Outstanding { .. } => ExitCode::JitRefused,
            E::Config(_) => ExitCode::Config,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode::{self, *};

    /// Every code; the exhaustive match below makes a new variant fail to compile until it is added.
    const ALL: [ExitCode; 16] = [
        Ok,
        Failure,
        Usage,
        Config,
        InvariantViolated,
        AlreadyRunning,
        AgentNotRunning,
        AgentNoAnswer,
        NotInstalled,
        SecretMissing,
        TokenRejected,
        ConfigScriptFailed,
        SecretNotDeleted,
        EventRejected,
        Retryable,
        JitRefused,
    ];

    fn listed(code: ExitCode) -> bool {
        match code {
            Ok | Failure | Usage | Config | InvariantViolated | AlreadyRunning | AgentNotRunning | AgentNoAnswer
            | NotInstalled | SecretMissing | TokenRejected | ConfigScriptFailed | SecretNotDeleted | EventRejected
            | Retryable | JitRefused => ALL.contains(&code),
        }
    }

    #[test]
    fn the_readme_documents_every_exit_code() {
        let readme = include_str!("../../../README.md");
        let table = &readme[readme.find("## Exit codes").expect("README has an Exit codes section")..];
        for code in ALL {
            assert!(listed(code));
            let row = format!("| {} |", code as u8);
            assert!(table.contains(&row), "README's exit-code table lacks {code:?} ({row})");
        }
    }
}
