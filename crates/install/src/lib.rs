//! # lifecycle-install
//!
//! `runner-lifecycle install`: put the agent on a host (or an AMI being baked) in one idempotent step.
//! It plans every file and directory first, compares with what is there, and writes only what differs:
//! a second run changes nothing and says so. `--dry-run` prints the plan and writes nothing.
//!
//! Everything is written below a root directory (`/` on a host; a staging directory in tests or when
//! baking an image), so the whole install can be checked without touching the machine.

pub mod containers;
pub mod env;
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
    /// `--containers rootless` without a tool it needs.
    #[error(
        "--containers rootless needs /{0}: install Podman and the id mappers (Debian/Ubuntu: apt-get install podman \
         uidmap slirp4netns; Amazon Linux 2023: dnf install podman), or pass --containers none"
    )]
    ContainerToolMissing(&'static str),
    /// The runner's user is in the `docker` group, but the mode is not `docker-group`.
    #[error(
        "user '{0}' is in the docker group: every job would be root on this host (docker run -v /:/host). \
         Remove it (gpasswd -d {0} docker) and use --containers rootless, or say so with --containers docker-group"
    )]
    InDockerGroup(String),
    /// `--container-image-store` that cannot go into storage.conf as it is.
    #[error("--container-image-store {0}: an absolute path without quotes, backslashes or newlines")]
    BadImageStore(PathBuf),
    /// `docker-group` for a user who is not in the group.
    #[error("--containers docker-group: user '{0}' is not in the docker group; add it (usermod -aG docker {0}) first")]
    NotInDockerGroup(String),
    /// `docker-group` on a host that runs job after job, without the operator's word.
    #[error(
        "--containers docker-group makes every job root on this host, so a job can reach the next one: \
         pass --one-job-per-instance (a fresh instance per job), or --i-understand-jobs-are-root (docs/security.md)"
    )]
    JobsWouldBeRoot,
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
    /// How jobs get a container engine (`None`: rootless when Podman is installed, else none).
    pub containers: Option<containers::Containers>,
    /// A read-only store of base images kept between jobs (`--container-image-store`, rootless).
    pub image_store: Option<PathBuf>,
    /// One instance per job (`runner.one_job_per_instance` in the unit's environment).
    pub one_job_per_instance: bool,
    /// The operator accepts that every job is root on the host (`docker-group` without one job per
    /// instance).
    pub jobs_are_root_ok: bool,
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
            containers: self.containers(),
            one_job_per_instance: self.one_job_per_instance,
        }
    }

    /// The container mode: as given, else rootless when Podman is installed below the root.
    pub fn containers(&self) -> containers::Containers {
        self.containers.unwrap_or_else(|| containers::default_for(&self.root))
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
    /// An existing file whose content is not ours (the runner's registration): only its owner and
    /// mode are set; nothing happens when it does not exist.
    Perm {
        /// Path below the root.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Owner.
        owner: Option<Owner>,
    },
    /// Everything below a directory (not the directory itself, not the top-level names in `keep`,
    /// never through a link) owned by `owner` and writable by no one else (the runner's code:
    /// docs/operations.md, "The runner's tree").
    Tree {
        /// The directory, below the root.
        path: PathBuf,
        /// Top-level names left alone (the runner's own, or planned as items of their own).
        keep: Vec<&'static str>,
        /// Owner of every entry (`None`: modes only, when not run as root).
        owner: Option<Owner>,
    },
}

impl Item {
    fn path(&self) -> &Path {
        match self {
            Item::File { path, .. }
            | Item::Dir { path, .. }
            | Item::Absent { path }
            | Item::Perm { path, .. }
            | Item::Tree { path, .. } => path,
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
    ]);
    items.extend(runner_tree(o, &runner_rel, owner, root_owner)?);
    items.extend(container_items(o, owner)?);
    items.push(Item::File {
        path: env_path.clone(),
        content: merged_env(&existing_env, &env_path)?,
        mode: 0o644,
        // Root's: the agent (root) copies it into every listener's environment, so the job must
        // not be able to add an interpreter hook to it (docs/security.md, issue 16).
        owner: root_owner,
        keep_existing: false,
    });
    finish(o, items)
}

/// What `--containers` needs (containers.rs): the checks, and for `rootless` the subordinate id
/// ranges of the runner's user (when it has none) and root's `containers.conf`.
fn container_items(o: &InstallOptions, runner: Owner) -> Result<Vec<Item>, InstallError> {
    use containers::Containers;
    let mode = o.containers();
    let groups = fs::read_to_string(o.root.join("etc/group")).unwrap_or_default();
    let in_docker = containers::in_docker_group(&groups, &o.user, runner.gid);
    match mode {
        Containers::DockerGroup if !(o.one_job_per_instance || o.jobs_are_root_ok) => {
            return Err(InstallError::JobsWouldBeRoot)
        }
        Containers::DockerGroup if !in_docker => return Err(InstallError::NotInDockerGroup(o.user.clone())),
        Containers::None | Containers::Rootless if in_docker => {
            return Err(InstallError::InDockerGroup(o.user.clone()))
        }
        Containers::None | Containers::DockerGroup => return Ok(Vec::new()),
        Containers::Rootless => {}
    }
    if let Some(tool) = containers::missing_tool(&o.root) {
        return Err(InstallError::ContainerToolMissing(tool));
    }
    let mut items = Vec::new();
    for file in ["etc/subuid", "etc/subgid"] {
        let text = fs::read_to_string(o.root.join(file)).unwrap_or_default();
        if let Some(content) = containers::with_range(&text, &o.user, runner.uid) {
            items.push(Item::File {
                path: PathBuf::from(file),
                content,
                mode: 0o644,
                owner: None,
                keep_existing: false,
            });
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let runc = containers::cgroup_v1_mounted(&mountinfo) && o.root.join("usr/bin/runc").exists();
    items.push(Item::File {
        path: PathBuf::from(containers::CONF),
        content: containers::conf(runc),
        mode: 0o644,
        owner: None,
        keep_existing: false,
    });
    if let Some(store) = &o.image_store {
        if !store.is_absolute() || store.to_str().is_none_or(|s| s.contains(['"', '\\', '\n'])) {
            return Err(InstallError::BadImageStore(store.clone()));
        }
        // Root's and not writable by anyone else: what the job cannot change, it cannot poison.
        items.push(Item::Dir {
            path: strip_root(store),
            mode: 0o755,
            owner: rustix::process::geteuid().is_root().then_some(Owner { uid: 0, gid: 0 }),
        });
    }
    items.push(Item::File {
        path: PathBuf::from(containers::STORAGE_CONF),
        content: containers::storage_conf(o.image_store.as_deref()),
        mode: 0o644,
        owner: None,
        keep_existing: false,
    });
    Ok(items)
}

/// The runner's own directories in its tree: written by the listener and the jobs.
pub const RUNNER_DIRS: [&str; 2] = ["_work", "_diag"];

/// The registration files the listener writes (`config.sh`, or a JIT listener from its config).
pub const REGISTRATION: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

/// Names at the top of the runner's tree the listener may create at run time and read back
/// (actions/runner `HostContext.GetConfigFile`); the agent removes the runner user's ones before
/// each listener (crates/agent/src/tree.rs). Left alone by the tree lock.
const RUNTIME_SETTINGS: [&str; 2] = [".runner_migrated", ".credentials_migrated"];

/// The runner's tree (docs/operations.md, "The runner's tree"): the directory root's, group the
/// runner's, mode 1770 (sticky: the listener creates and deletes its registration files there; it
/// can never remove or replace root's entries); everything in it root's and writable by no one
/// else, but `_work` and `_diag` (the runner's, 0750) and the registration files (in persistent mode
/// root's, readable by the runner's group; else the listener's own). So nothing the agent executes
/// (`bin/Runner.Listener`) or reads (`.env`) can be changed by the job.
fn runner_tree(
    o: &InstallOptions,
    runner_rel: &Path,
    runner: Owner,
    root_owner: Option<Owner>,
) -> Result<Vec<Item>, InstallError> {
    let chown = root_owner.is_some();
    let mut keep: Vec<&'static str> = vec![".env"];
    keep.extend(RUNNER_DIRS);
    keep.extend(REGISTRATION);
    keep.extend(RUNTIME_SETTINGS);
    let mut items = vec![
        Item::Dir {
            path: runner_rel.to_path_buf(),
            mode: 0o1770,
            owner: chown.then_some(Owner {
                uid: 0,
                gid: runner.gid,
            }),
        },
        Item::Tree {
            path: runner_rel.to_path_buf(),
            keep,
            owner: root_owner,
        },
    ];
    for dir in RUNNER_DIRS {
        items.push(Item::Dir {
            path: runner_rel.join(dir),
            mode: 0o750,
            owner: chown.then_some(runner),
        });
    }
    if o.runner_mode.as_deref() == Some(lifecycle_core::ListenerMode::Persistent.name()) {
        for name in REGISTRATION {
            items.push(Item::Perm {
                path: runner_rel.join(name),
                mode: 0o640,
                owner: chown.then_some(Owner {
                    uid: 0,
                    gid: runner.gid,
                }),
            });
        }
    }
    Ok(items)
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
        // Written by --containers rootless, not the operator's. The subordinate id ranges stay
        // (other tools may use them); the image store is the operator's.
        containers::CONF,
        containers::STORAGE_CONF,
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
    if let Item::Tree { keep, owner, .. } = item {
        return Ok(if tree_problems(&abs, keep, *owner, 1)?.is_empty() {
            Change::Unchanged
        } else {
            Change::Update
        });
    }
    if let Item::Perm { mode, owner, .. } = item {
        return match fs::symlink_metadata(&abs) {
            Ok(meta) if mode_differs(&meta, *mode) || owner_differs(&meta, *owner) => Ok(Change::Update),
            Ok(_) => Ok(Change::Unchanged),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Absent),
            Err(e) => Err(io_err("inspect", &abs)(e)),
        };
    }
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
        Item::Perm { .. } | Item::Tree { .. } => Change::Unchanged, // handled above
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
            Item::Perm { mode, owner, .. } => {
                let meta = fs::symlink_metadata(&abs).map_err(io_err("inspect", &abs))?;
                if meta.file_type().is_symlink() {
                    // Never chown or chmod through a link (it could lead to /etc/shadow).
                    return Err(io_err("secure", &abs)(io::Error::other(
                        "is a symbolic link; not followed: remove it and register again",
                    )));
                }
                set_mode_owner(&abs, *mode, *owner)?;
            }
            Item::Tree { keep, owner, .. } => lock_tree(&abs, keep, *owner)?,
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

/// What is wrong with one entry of the runner's code: not `owner`'s, or writable by group or others.
fn entry_problem(meta: &fs::Metadata, owner: Option<Owner>) -> Option<String> {
    if let Some(o) = owner {
        if meta.uid() != o.uid || meta.gid() != o.gid {
            return Some(format!(
                "owned by {}:{}, not {}:{}",
                meta.uid(),
                meta.gid(),
                o.uid,
                o.gid
            ));
        }
    }
    let mode = meta.permissions().mode();
    (!meta.file_type().is_symlink() && mode & 0o022 != 0)
        .then(|| format!("writable by its group or others (mode {:04o})", mode & 0o7777))
}

/// Call `f` on every entry below `dir`, parents before children, never through a link, except the
/// top-level names in `keep`.
fn walk_tree(
    dir: &Path,
    keep: &[&str],
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<bool, InstallError>,
) -> Result<(), InstallError> {
    fn inner(
        dir: &Path,
        keep: &[&str],
        f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<bool, InstallError>,
    ) -> Result<bool, InstallError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io_err("list", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("list", dir))?;
        names.sort();
        for name in names {
            if keep.iter().any(|k| name == *k) {
                continue;
            }
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
            if !f(&path, &meta)? {
                return Ok(false);
            }
            if meta.is_dir() && !inner(&path, &[], f)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
    inner(dir, keep, f).map(|_| ())
}

/// The entries below `dir` that are not laid out as [`Item::Tree`] wants, with what is wrong; at
/// most `limit` of them.
fn tree_problems(dir: &Path, keep: &[&str], owner: Option<Owner>, limit: usize) -> Result<Vec<String>, InstallError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    walk_tree(dir, keep, &mut |path, meta| {
        if let Some(problem) = entry_problem(meta, owner) {
            out.push(format!("{}: {problem}", path.display()));
        }
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// Give every entry below `dir` (but `keep`) to `owner` and take group and other write away.
/// Parents go first: once a directory is root's and closed, nothing in it can be swapped for a link
/// by the runner's user; links themselves are re-owned, never followed.
fn lock_tree(dir: &Path, keep: &[&str], owner: Option<Owner>) -> Result<(), InstallError> {
    walk_tree(dir, keep, &mut |path, meta| {
        if let Some(o) = owner {
            rustix::fs::chownat(
                rustix::fs::CWD,
                path,
                Some(rustix::fs::Uid::from_raw(o.uid)),
                Some(rustix::fs::Gid::from_raw(o.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("chown", path)(e.into()))?;
        }
        let meta = if owner.is_some() {
            fs::symlink_metadata(path).map_err(io_err("inspect", path))?
        } else {
            meta.clone()
        };
        if !meta.file_type().is_symlink() {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o022)).map_err(io_err("chmod", path))?;
            }
        }
        Ok(true)
    })
}

impl Plan {
    /// What is not as planned, item by item (`install --check`): one line per difference.
    pub fn problems(&self) -> Result<Vec<String>, InstallError> {
        let mut out = Vec::new();
        for (item, change) in &self.items {
            let shown = format!("/{}", item.path().display());
            let abs = self.root.join(item.path());
            match (item, change) {
                (_, Change::Unchanged | Change::Kept | Change::Absent) => {}
                (Item::Tree { keep, owner, .. }, _) => {
                    let found = tree_problems(&abs, keep, *owner, 21)?;
                    let root = self.root.display().to_string();
                    let on_host = |p: &String| match p.strip_prefix(root.trim_end_matches('/')) {
                        Some(rest) if rest.starts_with('/') => rest.to_string(),
                        _ => p.clone(),
                    };
                    for p in found.iter().take(20).map(on_host) {
                        out.push(format!(
                            "{p} (the runner's code must be root's, writable by no one else)"
                        ));
                    }
                    if found.len() > 20 {
                        out.push(format!("{shown}: and more below it"));
                    }
                }
                (_, Change::Create) => out.push(format!("{shown}: missing")),
                (_, Change::Remove) => out.push(format!("{shown}: present, and should not be")),
                (Item::File { mode, owner, .. } | Item::Dir { mode, owner, .. }, Change::Update) => {
                    out.extend(attr_problems(&shown, &abs, *mode, *owner));
                }
                (Item::Perm { mode, owner, .. }, Change::Update) => {
                    out.extend(attr_problems(&shown, &abs, *mode, *owner))
                }
                (Item::Absent { .. }, Change::Update) => {}
            }
            if let (Item::File { content, .. }, Change::Update) = (item, change) {
                if fs::read(&abs).ok().as_deref() != Some(content.as_bytes()) {
                    out.push(format!("{shown}: content differs from what install writes"));
                }
            }
        }
        Ok(out)
    }
}

fn attr_problems(shown: &str, abs: &Path, mode: u32, owner: Option<Owner>) -> Vec<String> {
    let Ok(meta) = fs::symlink_metadata(abs) else {
        return vec![format!("{shown}: cannot be inspected")];
    };
    let mut out = Vec::new();
    if meta.file_type().is_symlink() {
        out.push(format!("{shown}: is a symbolic link"));
    }
    if mode_differs(&meta, mode) {
        out.push(format!(
            "{shown}: mode {:04o}, should be {mode:04o}",
            meta.permissions().mode() & 0o7777
        ));
    }
    if let Some(o) = owner.filter(|o| meta.uid() != o.uid || meta.gid() != o.gid) {
        out.push(format!(
            "{shown}: owned by {}:{}, should be {}:{}",
            meta.uid(),
            meta.gid(),
            o.uid,
            o.gid
        ));
    }
    out
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
