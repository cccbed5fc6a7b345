//! # lifecycle-install
//!
//! `runner-lifecycle install`: put the agent on a host (or an AMI being baked) in one idempotent step.
//! It plans every file and directory first, compares with what is there, and writes only what differs:
//! a second run changes nothing and says so. `--dry-run` prints the plan and writes nothing.
//!
//! Everything is written below a root directory (`/` on a host; a staging directory in tests or when
//! baking an image), so the whole install can be checked without touching the machine.

pub mod fence;
pub mod ptrace;
pub mod unit;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where things go, relative to the root.
pub mod paths {
    /// The unit file.
    pub const UNIT: &str = "etc/systemd/system/runner-lifecycle.service";
    /// The agent's configuration.
    pub const CONFIG: &str = "etc/runner-lifecycle/config.toml";
    /// The job-started hook script.
    pub const HOOK_STARTED: &str = "usr/lib/runner-lifecycle/job-started.sh";
    /// The job-completed hook script.
    pub const HOOK_COMPLETED: &str = "usr/lib/runner-lifecycle/job-completed.sh";
    /// The agent's state directory (systemd `StateDirectory=` creates it too).
    pub const STATE_DIR: &str = "var/lib/runner-lifecycle";
    /// The hook socket's directory (systemd `RuntimeDirectory=` creates it at each start).
    pub const SOCKET_DIR: &str = "run/runner-lifecycle";
    /// The IMDS fence's unit.
    pub const FENCE_UNIT: &str = "etc/systemd/system/runner-lifecycle-imds-fence.service";
    /// The IMDS fence's script (rules applied by the unit's ExecStart, removed by its ExecStop).
    pub const FENCE_SCRIPT: &str = "usr/lib/runner-lifecycle/imds-fence";
    /// The sysctl drop-in that keeps a job from tracing its listener (`ptrace` module).
    pub const PTRACE_SYSCTL: &str = "etc/sysctl.d/10-runner-lifecycle-ptrace.conf";
}

/// Errors of `install`. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The runner directory does not exist or has no listener.
    #[error(
        "runner directory {0} has no bin/Runner.Listener: install the GitHub runner there first, or pass --runner-dir"
    )]
    RunnerDirMissing(PathBuf),
    /// The user is not in the passwd file.
    #[error("user '{0}' does not exist in {1}: create it (useradd --system {0}) or pass --user")]
    UnknownUser(String, PathBuf),
    /// The user name cannot be written into a unit or a script as it is.
    #[error("user name '{0}' is not a portable user name (letters, digits, '.', '_', '-'): pass --user")]
    BadUserName(String),
    /// The root agent, without CAP_DAC_OVERRIDE, could not enter a directory on the runner's path.
    #[error(
        "{dir} (mode {mode:04o}) cannot be entered by the agent, which runs as root without CAP_DAC_OVERRIDE \
         (docs/security.md): chmod o+x {dir} (lets others pass through, not list it), or install the runner elsewhere"
    )]
    NotSearchable {
        /// The directory, as on the host.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The runner's .env has a line that is not KEY=VALUE.
    #[error("{path}:{line}: not a KEY=VALUE line; fix or remove it, then run install again")]
    BadEnvLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The install's inputs.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Everything is written below this directory (`/` on a real host).
    pub root: PathBuf,
    /// The runner's install directory, as seen on the host (not prefixed by `root`).
    pub runner_dir: PathBuf,
    /// The user the runner (and so every job) runs as; the agent runs as root.
    pub user: String,
    /// The agent binary's path on the host.
    pub binary: PathBuf,
    /// Install the IMDS fence (`fence` module); without it, an installed fence is removed.
    pub fence_imds: bool,
    /// The agent's `runner.mode` for the unit's environment (`None`: the config file's, else the
    /// default, `jit`).
    pub runner_mode: Option<String>,
    /// The agent's `runner.jit_url` for the unit's environment (`None`: the config file's).
    pub jit_url: Option<String>,
}

impl InstallOptions {
    /// The unit's parameters for these options; `home` is the runner user's home directory.
    pub fn unit_options(&self, home: Option<&str>) -> unit::UnitOptions {
        unit::UnitOptions {
            binary: self.binary.display().to_string(),
            config: format!("/{}", paths::CONFIG),
            user: self.user.clone(),
            runner_dir: self.runner_dir.display().to_string(),
            runner_home: home
                .filter(|h| h.starts_with('/') && *h != "/" && !h.contains(char::is_whitespace))
                .map(str::to_string),
            fence_imds: self.fence_imds,
            runner_mode: self.runner_mode.clone(),
            jit_url: self.jit_url.clone(),
        }
    }
}

/// Who owns a planned file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One thing to put in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A file with exactly this content.
    File {
        /// Path below the root.
        path: PathBuf,
        /// Content.
        content: String,
        /// Permission bits.
        mode: u32,
        /// Owner, when one is required (root-owned system files need none when not run as root).
        owner: Option<Owner>,
        /// Leave an existing file alone (operator-edited configuration).
        keep_existing: bool,
    },
    /// A file that must not exist (left by an earlier install, or being uninstalled).
    Absent {
        /// Path below the root.
        path: PathBuf,
    },
    /// A directory.
    Dir {
        /// Path below the root.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Owner.
        owner: Option<Owner>,
    },
}

impl Item {
    fn path(&self) -> &Path {
        match self {
            Item::File { path, .. } | Item::Dir { path, .. } | Item::Absent { path } => path,
        }
    }
}

/// What a planned item needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Absent: will be created.
    Create,
    /// Present but different (content, mode or owner): will be updated.
    Update,
    /// Already as planned.
    Unchanged,
    /// Present and deliberately kept (the operator's configuration).
    Kept,
    /// Present but not wanted: will be removed.
    Remove,
    /// Not wanted, and already absent.
    Absent,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Unchanged => "unchanged",
            Change::Kept => "keep (exists)",
            Change::Remove => "remove",
            Change::Absent => "absent",
        })
    }
}

/// The full plan: every item and what it needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Items with their changes, in the order they are applied.
    pub items: Vec<(Item, Change)>,
    root: PathBuf,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn is_noop(&self) -> bool {
        self.items
            .iter()
            .all(|(_, c)| matches!(c, Change::Unchanged | Change::Kept | Change::Absent))
    }

    /// Whether applying removes this path (below the root).
    pub fn removes(&self, path: &str) -> bool {
        self.items
            .iter()
            .any(|(i, c)| *c == Change::Remove && i.path() == Path::new(path))
    }

    /// The root the plan applies below.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One line per item.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (item, change) in &self.items {
            out.push_str(&format!("{change:>13}  /{}\n", item.path().display()));
        }
        out
    }
}

/// The hook scripts. Job hooks must be `.sh` files run by bash (actions/runner
/// src/Runner.Worker/Handlers/ScriptHandler.cs picks the shell by extension), and a hook that exits
/// non-zero fails the job (JobExtension.cs): so the script exits 0 even if the binary is missing.
fn hook_script(binary: &Path, event: &str) -> String {
    let bin = binary.display();
    format!(
        "#!/bin/bash\n\
         # Installed by `runner-lifecycle install`. Reports the job to the agent in about a millisecond;\n\
         # never fails the job (a job hook's non-zero exit would).\n\
         if [ -x {bin} ]; then exec {bin} hook {event}; fi\n\
         echo \"runner-lifecycle: {bin} is missing; {event} not reported (the agent still sees the worker process)\"\n\
         exit 0\n"
    )
}

fn sample_config(runner_dir: &Path) -> String {
    format!(
        "# runner-lifecycle agent configuration (docs/agent.md lists every key).\n\
         # Precedence: command-line flag, then RUNNER_LIFECYCLE_* environment variable, then this file.\n\
         # Instance id, region, group and termination hook are discovered from IMDS and Auto Scaling.\n\
         \n\
         [runner]\n\
         dir = \"{}\"\n\
         # Just-in-time runners (the default mode): the controller's JIT endpoint, its AWS_IAM\n\
         # function URL (Terraform output `jit_url`). For a registered runner instead (`register`),\n\
         # set mode = \"persistent\".\n\
         # jit_url = \"https://<id>.lambda-url.<region>.on.aws\"\n\
         \n\
         [drain]\n\
         # Force a stop (cancelling the job) this long after SIGTERM; keep it below the unit's\n\
         # TimeoutStopSec ({}).\n\
         stop_deadline = \"6h\"\n",
        runner_dir.display(),
        unit::STOP_TIMEOUT
    )
}

/// The job-hook lines the runner's `.env` must carry.
fn hook_env_lines() -> [(&'static str, &'static str); 2] {
    [
        ("ACTIONS_RUNNER_HOOK_JOB_STARTED", paths::HOOK_STARTED),
        ("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", paths::HOOK_COMPLETED),
    ]
}

/// Merge the hook variables into the runner's `.env`, keeping every other line as it is.
fn merged_env(existing: &str, path: &Path) -> Result<String, InstallError> {
    let mut out = String::new();
    let mut seen = [false; 2];
    for (n, raw) in existing.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            out.push_str(raw);
            out.push('\n');
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            return Err(InstallError::BadEnvLine {
                path: path.to_path_buf(),
                line: n + 1,
            });
        };
        match hook_env_lines().iter().position(|(k, _)| *k == key.trim()) {
            Some(i) if !seen[i] => {
                seen[i] = true;
                out.push_str(&format!("{}=/{}\n", hook_env_lines()[i].0, hook_env_lines()[i].1));
            }
            Some(_) => {} // a duplicate: the runner would take the last one; keep exactly one
            None => {
                out.push_str(raw);
                out.push('\n');
            }
        }
    }
    for (i, (key, value)) in hook_env_lines().iter().enumerate() {
        if !seen[i] {
            out.push_str(&format!("{key}=/{value}\n"));
        }
    }
    Ok(out)
}

/// The runner's `.env` without the hook variables `install` added (uninstall).
fn unmerged_env(existing: &str, path: &Path) -> Result<String, InstallError> {
    let mut out = String::new();
    for (n, raw) in existing.lines().enumerate() {
        let line = raw.trim();
        if !line.is_empty() && !line.starts_with('#') {
            let Some((key, value)) = line.split_once('=') else {
                return Err(InstallError::BadEnvLine {
                    path: path.to_path_buf(),
                    line: n + 1,
                });
            };
            // Only the lines pointing at our scripts: hooks of the operator's own stay.
            let ours = |(k, v): &(&str, &str)| *k == key.trim() && value.trim().strip_prefix('/') == Some(*v);
            if hook_env_lines().iter().any(ours) {
                continue;
            }
        }
        out.push_str(raw);
        out.push('\n');
    }
    Ok(out)
}

/// Look a user up in `<root>/etc/passwd` (no NSS: an image being baked has only its files).
pub fn lookup_user(root: &Path, user: &str) -> Result<Owner, InstallError> {
    let passwd = root.join("etc/passwd");
    let text = fs::read_to_string(&passwd).map_err(io_err("read", &passwd))?;
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == user).then(|| {
                Some(Owner {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })?
        })
        .next()
        .ok_or_else(|| InstallError::UnknownUser(user.to_string(), passwd))
}

/// The home directory of `user` in `<root>/etc/passwd`, if the entry has one.
pub fn lookup_home(root: &Path, user: &str) -> Option<String> {
    let text = fs::read_to_string(root.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user && !f[5].is_empty()).then(|| f[5].to_string())
    })
}

/// Whether root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH may pass through a directory:
/// the owner's bit if root owns it, the group's if its group is root's, else the others' bit.
fn root_may_search(meta: &fs::Metadata) -> bool {
    let mode = meta.permissions().mode();
    (meta.uid() == 0 && mode & 0o100 != 0) || (meta.gid() == 0 && mode & 0o010 != 0) || mode & 0o001 != 0
}

/// Every directory from `/` to the runner's directory must be enterable by the agent.
fn check_searchable(root: &Path, runner_dir: &Path) -> Result<(), InstallError> {
    let mut host = PathBuf::from("/");
    for part in strip_root(runner_dir).components() {
        host.push(part);
        let abs = root.join(strip_root(&host));
        let meta = fs::metadata(&abs).map_err(io_err("inspect", &abs))?;
        if meta.is_dir() && !root_may_search(&meta) {
            return Err(InstallError::NotSearchable {
                dir: host,
                mode: meta.permissions().mode() & 0o7777,
            });
        }
    }
    Ok(())
}

fn strip_root(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

/// Plan the install: what must exist, and what each item needs.
pub fn plan(o: &InstallOptions) -> Result<Plan, InstallError> {
    if !fence::valid_user(&o.user) {
        return Err(InstallError::BadUserName(o.user.clone()));
    }
    let runner_rel = strip_root(&o.runner_dir);
    let runner_abs = o.root.join(&runner_rel);
    if !runner_abs.join("bin/Runner.Listener").exists() {
        return Err(InstallError::RunnerDirMissing(o.runner_dir.clone()));
    }
    let owner = lookup_user(&o.root, &o.user)?;
    check_searchable(&o.root, &o.runner_dir)?;
    let home = lookup_home(&o.root, &o.user);
    // Chown needs root; a non-root staging install records modes and content only.
    let chown = rustix::process::geteuid().is_root();
    let runner_owner = chown.then_some(owner);
    // The agent's own directories belong to root: the job (the runner's user) must not be able to
    // replace the hook socket or touch the agent's state (docs/security.md).
    let root_owner = chown.then_some(Owner { uid: 0, gid: 0 });
    let env_path = runner_rel.join(".env");
    let existing_env = read_env(&o.root, &env_path)?;
    let unit_opts = o.unit_options(home.as_deref());
    let file = |path: &str, content: String, mode: u32| Item::File {
        path: PathBuf::from(path),
        content,
        mode,
        owner: None,
        keep_existing: false,
    };
    let mut items = vec![
        Item::Dir {
            path: PathBuf::from("usr/lib/runner-lifecycle"),
            mode: 0o755,
            owner: None,
        },
        file(paths::HOOK_STARTED, hook_script(&o.binary, "job-started"), 0o755),
        file(paths::HOOK_COMPLETED, hook_script(&o.binary, "job-completed"), 0o755),
        Item::Dir {
            path: PathBuf::from("etc/runner-lifecycle"),
            mode: 0o755,
            owner: None,
        },
        Item::File {
            path: PathBuf::from(paths::CONFIG),
            content: sample_config(&o.runner_dir),
            mode: 0o644,
            owner: None,
            keep_existing: true,
        },
        Item::Dir {
            path: PathBuf::from("etc/systemd/system"),
            mode: 0o755,
            owner: None,
        },
        file(paths::UNIT, unit::render(&unit_opts), 0o644),
        Item::Dir {
            path: PathBuf::from("etc/sysctl.d"),
            mode: 0o755,
            owner: None,
        },
        file(paths::PTRACE_SYSCTL, ptrace::DROP_IN.to_string(), 0o644),
    ];
    if o.fence_imds {
        items.push(file(paths::FENCE_SCRIPT, fence::script(&o.user), 0o755));
        items.push(file(
            paths::FENCE_UNIT,
            fence::unit(&format!("/{}", paths::FENCE_SCRIPT)),
            0o644,
        ));
    } else {
        items.push(Item::Absent {
            path: PathBuf::from(paths::FENCE_UNIT),
        });
        items.push(Item::Absent {
            path: PathBuf::from(paths::FENCE_SCRIPT),
        });
    }
    items.extend([
        Item::Dir {
            path: PathBuf::from(paths::STATE_DIR),
            mode: 0o750,
            owner: root_owner,
        },
        Item::Dir {
            path: PathBuf::from(paths::SOCKET_DIR),
            mode: 0o755,
            owner: root_owner,
        },
        Item::File {
            path: env_path.clone(),
            content: merged_env(&existing_env, &env_path)?,
            mode: 0o644,
            owner: runner_owner,
            keep_existing: false,
        },
    ]);
    finish(o, items)
}

/// Plan `install --uninstall`: remove the units, the fence and the hook scripts, and take the hook
/// lines out of the runner's `.env`. The configuration (the operator's) and the state directory
/// stay; so does the runner.
pub fn plan_uninstall(o: &InstallOptions) -> Result<Plan, InstallError> {
    let mut items: Vec<Item> = [
        paths::UNIT,
        paths::FENCE_UNIT,
        paths::FENCE_SCRIPT,
        paths::PTRACE_SYSCTL,
        paths::HOOK_STARTED,
        paths::HOOK_COMPLETED,
    ]
    .iter()
    .map(|p| Item::Absent { path: PathBuf::from(p) })
    .collect();
    let env_path = strip_root(&o.runner_dir).join(".env");
    let env_abs = o.root.join(&env_path);
    if let Ok(meta) = fs::metadata(&env_abs) {
        let existing = read_env(&o.root, &env_path)?;
        items.push(Item::File {
            content: unmerged_env(&existing, &env_path)?,
            path: env_path,
            mode: meta.permissions().mode() & 0o7777,
            owner: None,
            keep_existing: false,
        });
    }
    finish(o, items)
}

fn read_env(root: &Path, env_path: &Path) -> Result<String, InstallError> {
    let env_abs = root.join(env_path);
    match fs::read_to_string(&env_abs) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_err("read", &env_abs)(e)),
    }
}

fn finish(o: &InstallOptions, items: Vec<Item>) -> Result<Plan, InstallError> {
    let items = items
        .into_iter()
        .map(|item| {
            let change = change_for(&o.root, &item)?;
            Ok((item, change))
        })
        .collect::<Result<_, InstallError>>()?;
    Ok(Plan {
        items,
        root: o.root.clone(),
    })
}

fn mode_differs(meta: &fs::Metadata, mode: u32) -> bool {
    meta.permissions().mode() & 0o7777 != mode
}

fn owner_differs(meta: &fs::Metadata, owner: Option<Owner>) -> bool {
    owner.is_some_and(|o| meta.uid() != o.uid || meta.gid() != o.gid)
}

fn change_for(root: &Path, item: &Item) -> Result<Change, InstallError> {
    let abs = root.join(item.path());
    if let Item::Absent { .. } = item {
        return match fs::symlink_metadata(&abs) {
            Ok(_) => Ok(Change::Remove),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Absent),
            Err(e) => Err(io_err("inspect", &abs)(e)),
        };
    }
    let meta = match fs::metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Change::Create),
        Err(e) => return Err(io_err("inspect", &abs)(e)),
    };
    Ok(match item {
        Item::Absent { .. } => Change::Remove,
        Item::Dir { mode, owner, .. } => {
            if mode_differs(&meta, *mode) || owner_differs(&meta, *owner) {
                Change::Update
            } else {
                Change::Unchanged
            }
        }
        Item::File {
            keep_existing: true, ..
        } => Change::Kept,
        Item::File {
            content, mode, owner, ..
        } => {
            let current = fs::read(&abs).map_err(io_err("read", &abs))?;
            if current != content.as_bytes() || mode_differs(&meta, *mode) || owner_differs(&meta, *owner) {
                Change::Update
            } else {
                Change::Unchanged
            }
        }
    })
}

/// Apply a plan: create and update what it says, atomically per file (write, then rename).
pub fn apply(plan: &Plan) -> Result<(), InstallError> {
    for (item, change) in &plan.items {
        if matches!(change, Change::Unchanged | Change::Kept | Change::Absent) {
            continue;
        }
        let abs = plan.root.join(item.path());
        match item {
            Item::Absent { .. } => fs::remove_file(&abs).map_err(io_err("remove", &abs))?,
            Item::Dir { mode, owner, .. } => {
                fs::create_dir_all(&abs).map_err(io_err("create directory", &abs))?;
                set_mode_owner(&abs, *mode, *owner)?;
            }
            Item::File {
                content, mode, owner, ..
            } => {
                if let Some(parent) = abs.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                }
                let tmp = abs.with_extension("runner-lifecycle.tmp");
                fs::write(&tmp, content).map_err(io_err("write", &tmp))?;
                set_mode_owner(&tmp, *mode, *owner)?;
                fs::rename(&tmp, &abs).map_err(io_err("replace", &abs))?;
            }
        }
    }
    Ok(())
}

fn set_mode_owner(path: &Path, mode: u32, owner: Option<Owner>) -> Result<(), InstallError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))?;
    if let Some(o) = owner {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(o.uid)),
            Some(rustix::fs::Gid::from_raw(o.gid)),
        )
        .map_err(|e| io_err("chown", path)(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_keeps_other_lines_and_sets_hooks_once() {
        let p = Path::new(".env");
        let merged = merged_env("LANG=C.UTF-8\n# comment\nACTIONS_RUNNER_HOOK_JOB_STARTED=/old.sh\nACTIONS_RUNNER_HOOK_JOB_STARTED=/dup.sh\n", p)
            .expect("valid");
        assert_eq!(
            merged,
            "LANG=C.UTF-8\n# comment\nACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/lib/runner-lifecycle/job-started.sh\n\
             ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/usr/lib/runner-lifecycle/job-completed.sh\n"
        );
        assert_eq!(
            merged_env(&merged, p).expect("valid"),
            merged,
            "merging twice changes nothing"
        );
        assert!(matches!(
            merged_env("garbage line\n", p),
            Err(InstallError::BadEnvLine { line: 1, .. })
        ));
    }

    /// The .deb ships these files (packaging/); they must be what `install` writes for the defaults.
    #[test]
    fn packaged_files_match_what_install_renders() {
        let bin = Path::new("/usr/bin/runner-lifecycle");
        assert_eq!(
            include_str!("../../../packaging/job-started.sh"),
            hook_script(bin, "job-started")
        );
        assert_eq!(
            include_str!("../../../packaging/job-completed.sh"),
            hook_script(bin, "job-completed")
        );
        assert_eq!(
            include_str!("../../../packaging/config.toml"),
            sample_config(Path::new("/opt/actions-runner"))
        );
    }

    #[test]
    fn hook_script_never_fails_the_job() {
        let s = hook_script(Path::new("/usr/bin/runner-lifecycle"), "job-started");
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("exec /usr/bin/runner-lifecycle hook job-started"));
        assert!(s.trim_end().ends_with("exit 0"));
    }
}
