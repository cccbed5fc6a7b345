//! # lifecycle-register
//!
//! `runner-lifecycle register`: configure the GitHub Actions runner on its host, once, before the
//! listener first starts.
//!
//! 1. Find the instance id (flag or IMDS) and its group (flag or DescribeAutoScalingInstances).
//! 2. Look at the runner directory: configured (`.runner` and `.credentials`) is left alone;
//!    half-configured (one of the two) is cleared with `config.sh remove --local` and registered
//!    again with `--replace`; a missing directory or `config.sh` is an error of its own.
//! 3. Read the registration token from the per-instance Secrets Manager secret or SSM SecureString
//!    parameter (the controller writes `{"token", "expires_at"}`; a bare token works too). An
//!    expired token is refused before config.sh runs.
//! 4. Run `config.sh --unattended --url .. --name .. --labels .. --replace [..]` with the token in
//!    the environment only: `ACTIONS_RUNNER_INPUT_TOKEN`. The runner reads every option from
//!    `ACTIONS_RUNNER_INPUT_<NAME>`, registers `token` (with `pat`, `windowslogonpassword`,
//!    `jitconfig`) with its secret masker, and removes the variable from its own environment
//!    (actions/runner src/Runner.Listener/CommandSettings.cs, constructor, and
//!    src/Runner.Common/Constants.cs `CommandLine.Args.Secrets`, v2.336.0). So the token is never
//!    on any argv, which every local user can read in /proc/<pid>/cmdline; /proc/<pid>/environ is
//!    readable only by the same user and root.
//! 5. After success, delete the secret for good (no recovery window). AccessDenied there is
//!    reported loudly with an exit code of its own, and the registration stays.
//!
//! On any failure after the token was read (an expired or malformed value, config.sh failing,
//! timing out or rejecting the token), the secret is deleted too: a token must not outlive the
//! one run that could use it. If that deletion fails as well, the error says so loudly
//! ([`RegisterError::FailedAndSecretNotDeleted`], the same exit code as an undeleted secret after
//! success).
//!
//! The token is a [`Secret`] from the moment it is read: it is never logged, and config.sh's
//! output is masked before it is shown in an error.

pub mod aws;

use aws::{Fetched, RegisterAws, Store};
use lifecycle_aws::NameTemplate;
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::{labels, Secret};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tracing::{error, info, warn};

/// The environment variable config.sh reads the token from (CommandSettings.cs: the
/// `ACTIONS_RUNNER_INPUT_` prefix plus the argument name `token`).
pub const TOKEN_ENV: &str = "ACTIONS_RUNNER_INPUT_TOKEN";
/// Lines of config.sh output kept in an error.
const OUTPUT_LINES: usize = 40;

/// What to register, resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The runner's install directory (holds `config.sh`).
    pub runner_dir: PathBuf,
    /// The runner URL (`https://github.com/ORG` or `.../OWNER/REPO`).
    pub url: String,
    /// The runner name; default: the instance id.
    pub name: Option<String>,
    /// Extra labels; the instance id and `asg-<group>` are always added.
    pub labels: Vec<String>,
    /// The runner group.
    pub runner_group: Option<String>,
    /// The work folder.
    pub work: Option<String>,
    /// Register an ephemeral (one-job) runner.
    pub ephemeral: bool,
    /// Pass `--disableupdate`.
    pub disable_update: bool,
    /// Where the token is.
    pub store: Store,
    /// The secret or parameter name template (`{group}`, `{instance_id}`).
    pub template: NameTemplate,
    /// How long config.sh may take.
    pub config_timeout: Duration,
}

/// The host's identity.
#[derive(Clone, Debug)]
pub struct Host {
    /// The instance id.
    pub instance_id: String,
    /// Its Auto Scaling group.
    pub group: String,
}

/// What `register` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// Registered now; the token's secret was deleted.
    Registered {
        /// The runner name.
        name: String,
        /// The secret or parameter deleted.
        deleted: String,
        /// Whether a half-configured directory was cleared first.
        repaired: bool,
    },
    /// Already configured: nothing changed (a leftover token secret was deleted if present).
    AlreadyConfigured,
}

/// Why `register` failed. No variant carries the token.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The runner directory or its config.sh does not exist.
    #[error("runner directory {0}: no config.sh there (is the runner installed?)")]
    RunnerDirMissing(PathBuf),
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// The instance or its group could not be found.
    #[error("cannot identify this host: {0}")]
    Identity(String),
    /// The secret or parameter does not exist (the controller has not written it, or it was
    /// used already).
    #[error("no registration token: {kind} `{name}` does not exist")]
    SecretMissing {
        /// `secret` or `parameter`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Reading the secret failed.
    #[error("reading {kind} `{name}`: {error}")]
    SecretRead {
        /// `secret` or `parameter`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why.
        error: ApiError,
    },
    /// The token expired before it was used (registration tokens last one hour).
    #[error("the registration token in `{name}` expired at {expires_at}; a new launch event mints a new one")]
    TokenExpired {
        /// The secret.
        name: String,
        /// Its expiry.
        expires_at: String,
    },
    /// GitHub refused the token.
    #[error("GitHub rejected the registration token (config.sh exit {code}):\n{output}")]
    TokenRejected {
        /// config.sh's exit code.
        code: i32,
        /// Its output, token masked.
        output: String,
    },
    /// config.sh failed for another reason.
    #[error("config.sh failed (exit {code}):\n{output}")]
    ConfigScript {
        /// Exit code (-1: killed or timed out).
        code: i32,
        /// Its output, token masked.
        output: String,
    },
    /// Registration failed after the token was read, and the token's secret could not be
    /// deleted either: a usable token is left behind.
    #[error("{failure}\nAND {kind} `{name}` could not be deleted: {error}; it still holds a usable token for this group until it expires: delete it and grant the delete permission (runner-lifecycle iam-policy --role agent)")]
    FailedAndSecretNotDeleted {
        /// Why registration failed.
        failure: Box<RegisterError>,
        /// `secret` or `parameter`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why it could not be deleted.
        error: ApiError,
    },
    /// Registered, but the token's secret could not be deleted.
    #[error("runner registered, but {kind} `{name}` could not be deleted: {error}; it still holds a token for this group: delete it and grant the delete permission (runner-lifecycle iam-policy --role agent)")]
    SecretNotDeleted {
        /// `secret` or `parameter`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why.
        error: ApiError,
    },
}

fn kind(store: Store) -> &'static str {
    match store {
        Store::SecretsManager => "secret",
        Store::Ssm => "parameter",
    }
}

/// The runner directory's state (actions/runner src/Runner.Common/ConfigurationStore.cs:
/// `IsConfigured` is `.runner`, `HasCredentials` is `.credentials`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    /// Neither file.
    Fresh,
    /// Both files.
    Configured,
    /// One of the two: an interrupted configure or remove.
    Half,
}

/// Look at a runner directory.
pub fn dir_state(dir: &Path) -> Result<DirState, RegisterError> {
    if !dir.join("config.sh").is_file() {
        return Err(RegisterError::RunnerDirMissing(dir.to_path_buf()));
    }
    Ok(
        match (dir.join(".runner").exists(), dir.join(".credentials").exists()) {
            (true, true) => DirState::Configured,
            (false, false) => DirState::Fresh,
            _ => DirState::Half,
        },
    )
}

/// The token in a stored value: the controller's JSON (`token`, `expires_at`) or a bare token.
/// Returns the token and its expiry text, if any.
pub fn parse_stored(value: &Secret) -> Result<(Secret, Option<String>), String> {
    let raw = value.expose().trim();
    if raw.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|_| "the stored value is neither a token nor valid JSON".to_string())?;
        let token = v
            .get("token")
            .and_then(serde_json::Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("the stored JSON has no `token`")?;
        let expires = v
            .get("expires_at")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        return Ok((Secret::new(token), expires));
    }
    if raw.is_empty() || raw.chars().any(char::is_whitespace) {
        return Err("the stored value is empty or not a single token".into());
    }
    Ok((Secret::new(raw), None))
}

/// The labels to register: the given ones plus the instance id and the group label, once each.
pub fn all_labels(extra: &[String], host: &Host) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in extra.iter().map(|s| s.trim().to_string()).chain([
        labels::instance_label(&host.instance_id),
        labels::group_label(&host.group),
    ]) {
        if !l.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&l)) {
            out.push(l);
        }
    }
    out
}

/// config.sh's argv (never the token).
pub fn config_args(spec: &Spec, host: &Host) -> Vec<String> {
    let mut args = vec![
        "--unattended".to_string(),
        "--url".into(),
        spec.url.clone(),
        "--name".into(),
        spec.name.clone().unwrap_or_else(|| host.instance_id.clone()),
        "--labels".into(),
        all_labels(&spec.labels, host).join(","),
        // The name is the instance id: a registration left by an earlier life of this host (a
        // lost disk, a failed first attempt) is replaced rather than refused.
        "--replace".into(),
    ];
    if let Some(g) = &spec.runner_group {
        args.extend(["--runnergroup".into(), g.clone()]);
    }
    if let Some(w) = &spec.work {
        args.extend(["--work".into(), w.clone()]);
    }
    if spec.ephemeral {
        args.push("--ephemeral".into());
    }
    if spec.disable_update {
        args.push("--disableupdate".into());
    }
    args
}

/// Whether config.sh's output says GitHub refused the token (the runner reports the failed
/// `POST .../actions/runner-registration` with its HTTP status: src/Runner.Listener/Configuration/
/// ConfigurationManager.cs, `GetTenantCredential`).
pub fn token_rejected(output: &str) -> bool {
    output.contains("runner-registration")
        && ["NotFound", "Unauthorized", "Forbidden"]
            .iter()
            .any(|s| output.contains(s))
}

/// The last lines of `text`, masked.
fn tail(text: &str, token: Option<&Secret>) -> String {
    let masked = match token {
        Some(t) => t.mask(text),
        None => text.to_string(),
    };
    let lines: Vec<&str> = masked.lines().collect();
    lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n")
}

/// Run config.sh with `args` and, when given, the token in its environment.
async fn run_config(
    dir: &Path,
    args: &[String],
    token: Option<&Secret>,
    timeout: Duration,
) -> Result<String, RegisterError> {
    let mut cmd = tokio::process::Command::new(dir.join("config.sh"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills config.sh and the listener it started together.
        .process_group(0)
        .kill_on_drop(true);
    // Only our own input variable reaches config.sh; an inherited one could smuggle options in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("ACTIONS_RUNNER_INPUT_")
        {
            cmd.env_remove(k);
        }
    }
    if let Some(t) = token {
        cmd.env(TOKEN_ENV, t.expose());
    }
    let mut child = cmd.spawn().map_err(|e| RegisterError::ConfigScript {
        code: -1,
        output: format!("cannot start {}: {e}", dir.join("config.sh").display()),
    })?;
    let pgid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, collect).await {
        Ok(v) => v,
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            return Err(RegisterError::ConfigScript {
                code: -1,
                output: format!("config.sh did not finish within {} s and was killed", timeout.as_secs()),
            });
        }
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    let code = match status {
        Ok(s) => s.code().unwrap_or(-1),
        Err(e) => {
            return Err(RegisterError::ConfigScript {
                code: -1,
                output: format!("waiting for config.sh: {e}"),
            })
        }
    };
    if code == 0 {
        return Ok(tail(&text, token));
    }
    let output = tail(&text, token);
    if token.is_some() && token_rejected(&text) {
        return Err(RegisterError::TokenRejected { code, output });
    }
    Err(RegisterError::ConfigScript { code, output })
}

/// Register the runner of `host` as `spec` says, with `aws` for the token.
pub async fn register(spec: &Spec, host: &Host, aws: &RegisterAws, now_epoch: i64) -> Result<Done, RegisterError> {
    labels::check_group(&host.group).map_err(RegisterError::Config)?;
    let state = dir_state(&spec.runner_dir)?;
    let name = spec.template.name(&host.group, &host.instance_id);
    let k = kind(spec.store);
    if state == DirState::Configured {
        info!(runner_dir = %spec.runner_dir.display(), "runner already configured; left alone");
        // A previous run may have registered and died before deleting the token.
        if let Err(error) = aws.delete(spec.store, &name).await {
            if error.kind == ApiErrorKind::AccessDenied {
                error!(%error, secret = %name, "cannot delete the token's {k}");
                return Err(RegisterError::SecretNotDeleted { kind: k, name, error });
            }
            warn!(%error, secret = %name, "leftover token check failed");
        }
        return Ok(Done::AlreadyConfigured);
    }
    let stored = match aws.fetch(spec.store, &name).await {
        Ok(Fetched::Value(v)) => v,
        Ok(Fetched::Missing) => return Err(RegisterError::SecretMissing { kind: k, name }),
        Err(error) => return Err(RegisterError::SecretRead { kind: k, name, error }),
    };
    // From here on the token has been read: whatever happens, it must not outlive this run.
    let result = configure(spec, host, state, &name, &stored, now_epoch).await;
    drop(stored);
    let failure = match result {
        Ok(repaired) => return finish(spec, host, aws, name, repaired).await,
        Err(failure) => failure,
    };
    match aws.delete(spec.store, &name).await {
        Ok(()) => {
            warn!(secret = %name, "registration failed; the token's {k} was deleted anyway (a retry needs a new token: a new launch of this instance, or a new secret)");
            Err(failure)
        }
        Err(error) => {
            error!(%error, secret = %name, "REGISTRATION FAILED, AND THE TOKEN'S {} COULD NOT BE DELETED", k.to_uppercase());
            Err(RegisterError::FailedAndSecretNotDeleted {
                failure: Box::new(failure),
                kind: k,
                name,
                error,
            })
        }
    }
}

/// Check the stored token and run config.sh with it.
async fn configure(
    spec: &Spec,
    host: &Host,
    state: DirState,
    name: &str,
    stored: &Secret,
    now_epoch: i64,
) -> Result<bool, RegisterError> {
    let k = kind(spec.store);
    let (token, expires_at) = parse_stored(stored).map_err(|e| RegisterError::Config(format!("{k} `{name}`: {e}")))?;
    if let Some(exp) = &expires_at {
        if lifecycle_github::time::parse_rfc3339(exp).is_some_and(|t| t <= now_epoch) {
            return Err(RegisterError::TokenExpired {
                name: name.to_string(),
                expires_at: exp.clone(),
            });
        }
    }
    let repaired = state == DirState::Half;
    if repaired {
        warn!(runner_dir = %spec.runner_dir.display(), "half-configured runner (.runner or .credentials missing); clearing the local configuration first");
        run_config(
            &spec.runner_dir,
            &["remove".to_string(), "--local".to_string()],
            None,
            spec.config_timeout,
        )
        .await?;
    }
    let args = config_args(spec, host);
    info!(runner_dir = %spec.runner_dir.display(), args = ?args, "running config.sh (token in {TOKEN_ENV})");
    let output = run_config(&spec.runner_dir, &args, Some(&token), spec.config_timeout).await?;
    drop(token);
    info!(output = %output.lines().last().unwrap_or_default(), "runner configured");
    Ok(repaired)
}

/// After a successful configuration: delete the token for good.
async fn finish(
    spec: &Spec,
    host: &Host,
    aws: &RegisterAws,
    name: String,
    repaired: bool,
) -> Result<Done, RegisterError> {
    let k = kind(spec.store);
    if let Err(error) = aws.delete(spec.store, &name).await {
        error!(%error, secret = %name, "REGISTERED, BUT THE TOKEN'S {} COULD NOT BE DELETED", k.to_uppercase());
        return Err(RegisterError::SecretNotDeleted { kind: k, name, error });
    }
    info!(secret = %name, "token {k} deleted");
    Ok(Done::Registered {
        name: spec.name.clone().unwrap_or_else(|| host.instance_id.clone()),
        deleted: name,
        repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            instance_id: "i-0123456789abcdef0".into(),
            group: "runners".into(),
        }
    }

    #[test]
    fn stored_values() {
        let (t, e) = parse_stored(&Secret::new(
            r#"{"token":"AAA111","expires_at":"2030-01-01T00:00:00Z"}"#,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expose(), "AAA111");
        assert_eq!(e.as_deref(), Some("2030-01-01T00:00:00Z"));
        let (t, e) = parse_stored(&Secret::new("AAA111\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.expose(), e), ("AAA111", None));
        for bad in ["", "two words", "{\"x\":1}", "{broken"] {
            let err = parse_stored(&Secret::new(bad)).err().unwrap_or_default();
            assert!(!err.is_empty() && !err.contains("two words"), "{bad}: {err}");
        }
    }

    #[test]
    fn argv_has_labels_and_never_the_token() {
        let spec = Spec {
            runner_dir: "/opt/runner".into(),
            url: "https://github.com/acme".into(),
            name: None,
            labels: vec!["gpu".into(), "i-0123456789abcdef0".into()],
            runner_group: Some("ci".into()),
            work: None,
            ephemeral: true,
            disable_update: false,
            store: Store::SecretsManager,
            template: NameTemplate::parse("runner-lifecycle/{group}/{instance_id}").unwrap_or_else(|e| panic!("{e}")),
            config_timeout: Duration::from_secs(5),
        };
        let args = config_args(&spec, &host());
        let joined = args.join(" ");
        assert!(
            joined.contains("--labels gpu,i-0123456789abcdef0,asg-runners"),
            "{joined}"
        );
        assert!(
            joined.contains("--name i-0123456789abcdef0")
                && joined.contains("--ephemeral")
                && joined.contains("--runnergroup ci")
        );
        assert!(!joined.contains("--token") && !joined.contains("--pat"));
    }

    #[test]
    fn recognises_a_rejected_token() {
        assert!(token_rejected(
            "Error: Http response code: NotFound from 'POST https://api.github.com/actions/runner-registration'"
        ));
        assert!(!token_rejected(
            "Error: Cannot configure the runner because it is already configured."
        ));
        let t = Secret::new("SECRETTOKEN123");
        assert_eq!(tail("a SECRETTOKEN123 b", Some(&t)), "a *** b");
    }
}
