//! Container jobs (issue 20): a rootless Podman engine per listener, reset between jobs.
//!
//! How the runner reaches Docker (actions/runner): `DockerCommandManager` runs the `docker` CLI it
//! finds on `PATH` (src/Runner.Worker/Container/DockerCommandManager.cs, `WhichUtil.Which("docker")`)
//! for `container:` and `services:` jobs and container actions, and the CLI reads `DOCKER_HOST` from
//! the environment the worker inherits from the listener. So the agent gives every listener
//! `DOCKER_HOST=unix://<engine dir>/podman.sock`, served by `podman system service` (Podman's
//! Docker-compatible API) running as the runner's user:
//!
//! - **In the listener's cgroup.** The engine is started through the launcher into the same cgroup
//!   as the listener, and Podman runs with `--cgroup-manager=cgroupfs` so that its `conmon` and the
//!   containers stay there (with systemd's manager they would go to the user's slice, out of the
//!   agent's reach). Killing the listener's cgroup before the next listener ends the engine and
//!   every container of the job, like any other process the job left.
//! - **Nothing kept between jobs** (JIT mode): the engine's storage (every container, network,
//!   volume and image) lies in the runner's home, which the cleaner empties (crate::cleaner). It
//!   runs twice: as the runner's user, then in the engine's user namespace (`podman unshare`), where
//!   the files of the subordinate ids a container user wrote are the job's too and can be removed.
//!   Not `podman system reset`: after the cgroup kill its database still lists the killed
//!   containers as running, and it fails trying to join their (dead) user namespace.
//! - **A fresh runtime directory per listener**, `engine/N` beside the hook socket, the runner's
//!   own (Podman refuses an `XDG_RUNTIME_DIR` its user does not own). The root `engine/` is root's,
//!   so a job cannot replace the next listener's directory; the old ones are emptied by the cleaner
//!   and removed by the agent.
//! - **Configured by root**: `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF` point at root's
//!   `containers.conf` and `storage.conf` (written by `install`), which replace the user's own files
//!   in `~/.config/containers` (the job's to write) for the engine. The storage file may name a
//!   read-only store of base images root filled (`install --container-image-store`): kept between
//!   jobs because no job can change it.
//!
//! The containers are never the listener's children, so they never make a host look busy: the
//! agent sees a job by its `Runner.Worker` only, and a container left running after its job is
//! killed with the job's cgroup (docs/operations.md, "Container jobs").

use crate::runner_env::User;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How container jobs are served (`containers.mode`): one enum with `install --containers`.
pub use lifecycle_install::containers::Containers as ContainerMode;

/// The socket's name in the engine's directory.
pub const SOCKET_NAME: &str = "podman.sock";
/// How long the agent waits for a new engine's socket before it starts the listener without one.
/// Podman's API service answered in 61-64 ms here (the agent's "container engine ready" lines in
/// tests/security/test_containers.py); 15 s covers a cold
/// first start on a loaded host and stays far below the agent's 60 s watchdog.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The root of the engines' runtime directories (`engine/` beside the hook socket).
#[derive(Debug)]
pub struct EngineRoot {
    root: PathBuf,
    next: u64,
}

impl EngineRoot {
    /// The root beside the hook socket (a root-owned runtime directory under systemd).
    pub fn beside(socket: &Path) -> EngineRoot {
        let dir = socket.parent().unwrap_or(Path::new("/run/runner-lifecycle"));
        EngineRoot {
            root: dir.join("engine"),
            next: 1,
        }
    }

    /// The root, for the cleaner (it empties the runner's directories below it).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A fresh runtime directory `root/N` for the next engine, the runner's, mode 0700. The root is
    /// made root's, 0755: the job can neither rename nor replace the next engine's directory.
    pub fn fresh(&mut self, user: &User) -> io::Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o755))?;
        let mut dir = self.root.join(self.next.to_string());
        while dir.exists() {
            self.next += 1;
            dir = self.root.join(self.next.to_string());
        }
        self.next += 1;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
        Ok(dir)
    }

    /// Remove the emptied directories of earlier engines (after the cleaner emptied them; one that
    /// still holds something is left for the next time and counted).
    pub fn remove_old(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| std::fs::remove_dir(e.path()).is_err())
            .count()
    }
}

/// `DOCKER_HOST` for the listener of the engine in `dir`.
pub fn docker_host(dir: &Path) -> OsString {
    let mut v = OsString::from("unix://");
    v.push(dir.join(SOCKET_NAME).as_os_str());
    v
}

/// Podman's global flags: containers stay in the caller's cgroup (see the module's comment), events
/// go to a file in the runtime directory (the journal is not the job's to write).
const GLOBAL_FLAGS: [&str; 2] = ["--cgroup-manager=cgroupfs", "--events-backend=file"];

/// The engine's API service on `dir`'s socket, for as long as the listener's cgroup lives.
pub fn service_args(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = GLOBAL_FLAGS.iter().map(|s| s.to_string()).collect();
    out.extend([
        "system".into(),
        "service".into(),
        "--time=0".into(),
        format!("unix://{}", dir.join(SOCKET_NAME).display()),
    ]);
    out
}

/// Run `exe` (this binary) with the arguments that follow in the engine's user namespace, as its
/// root, which is the runner's user (the cleaner between jobs).
pub fn unshare_args(exe: &Path) -> Vec<String> {
    let mut out: Vec<String> = GLOBAL_FLAGS.iter().map(|s| s.to_string()).collect();
    out.extend(["unshare".into(), exe.display().to_string()]);
    out
}

/// Root's configuration files for the engine (`containers.conf`, `containers.storage_conf`), each
/// used when it exists.
#[derive(Clone, Debug)]
pub struct Confs {
    /// `CONTAINERS_CONF`.
    pub engine: PathBuf,
    /// `CONTAINERS_STORAGE_CONF` (a read-only image store, when install was given one).
    pub storage: PathBuf,
}

/// The environment of the engine and of the cleaner in its namespace: the runner user's identity, a fixed `PATH`,
/// the runtime directory, and root's `containers.conf` when there is one. Nothing of the agent's.
pub fn env(user: &User, runtime_dir: &Path, conf: &Confs) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), user.home.clone().into_os_string()),
        ("USER".into(), user.name.clone().into()),
        ("LOGNAME".into(), user.name.clone().into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
        ("XDG_RUNTIME_DIR".into(), runtime_dir.as_os_str().to_owned()),
    ];
    for (var, path) in [
        ("CONTAINERS_CONF", &conf.engine),
        ("CONTAINERS_STORAGE_CONF", &conf.storage),
    ] {
        if path.is_file() {
            out.push((var.into(), path.as_os_str().to_owned()));
        }
    }
    out
}

/// Whether the engine in `dir` answers on its socket (connect only: the API is the job's to use).
pub fn listening(dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(dir.join(SOCKET_NAME)).is_ok()
}

/// The subordinate id ranges of `user` in the text of `/etc/subuid` (or `/etc/subgid`): lines
/// `name:start:count` or `uid:start:count`. A container's non-root users run as these ids on the
/// host, so the agent's kill between jobs covers them too.
pub fn subordinate_ranges(text: &str, user: &User) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != user.name && who.parse() != Ok(user.uid) {
                return None;
            }
            let (start, count): (u32, u32) = (start.parse().ok()?, count.parse().ok()?);
            (count > 0).then(|| (start, start.saturating_add(count - 1)))
        })
        .collect()
}

/// The warning to log at start, if the mode and the runner user's groups make every job root on
/// the host (`docker` group membership is root by another name: `docker run -v /:/host`).
pub fn root_warning(mode: ContainerMode, in_docker_group: bool) -> Option<&'static str> {
    match (mode, in_docker_group) {
        (ContainerMode::DockerGroup, _) => Some(
            "containers.mode is docker-group: every job can use the root Docker daemon, which is root on this host \
             (it can read the next job's registration and outlive its own job); only safe with one job per instance \
             (docs/security.md, \"Container jobs\")",
        ),
        (_, true) => Some(
            "the runner's user is in the docker group: every job is root on this host by another name; remove it \
             (gpasswd -d <user> docker) and use containers.mode rootless, or say so with containers.mode docker-group",
        ),
        _ => None,
    }
}

/// Whether `user` is a member of the group named `docker` in the text of `/etc/group`.
pub fn in_docker_group(group_text: &str, user: &User) -> bool {
    lifecycle_install::containers::in_docker_group(group_text, &user.name, user.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "runner".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![],
            home: PathBuf::from("/home/runner"),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn subordinate_ranges_by_name_or_uid_and_nothing_else() {
        let text = "other:100000:65536\nrunner:165536:65536\n1001:300000:10\nbad:line\nrunner:x:1\nrunner:5:0\n";
        assert_eq!(
            subordinate_ranges(text, &user()),
            vec![(165536, 231071), (300000, 300009)]
        );
        assert!(subordinate_ranges("", &user()).is_empty());
    }

    #[test]
    fn root_is_named_whenever_a_job_has_it() {
        assert!(root_warning(ContainerMode::DockerGroup, false).is_some());
        assert!(root_warning(ContainerMode::Rootless, true).is_some());
        assert!(root_warning(ContainerMode::None, true).is_some());
        assert!(root_warning(ContainerMode::Rootless, false).is_none());
        assert!(root_warning(ContainerMode::None, false).is_none());
    }

    #[test]
    fn the_engine_keeps_its_containers_in_the_callers_cgroup() {
        let dir = Path::new("/run/runner-lifecycle/engine/3");
        let args = service_args(dir);
        assert!(args.contains(&"--cgroup-manager=cgroupfs".to_string()));
        assert_eq!(
            args.last().map(String::as_str),
            Some("unix:///run/runner-lifecycle/engine/3/podman.sock")
        );
        assert_eq!(docker_host(dir), "unix:///run/runner-lifecycle/engine/3/podman.sock");
        assert!(unshare_args(Path::new("/usr/bin/runner-lifecycle"))
            .ends_with(&["unshare".into(), "/usr/bin/runner-lifecycle".into()]));
    }

    #[test]
    fn the_engine_gets_no_containers_conf_that_is_not_there() {
        let confs = Confs {
            engine: PathBuf::from("/nonexistent/containers.conf"),
            storage: PathBuf::from("/nonexistent/storage.conf"),
        };
        let e = env(&user(), Path::new("/run/x/1"), &confs);
        assert!(!e
            .iter()
            .any(|(k, _)| k == "CONTAINERS_CONF" || k == "CONTAINERS_STORAGE_CONF"));
        assert!(e.iter().any(|(k, v)| k == "XDG_RUNTIME_DIR" && v == "/run/x/1"));
    }
}
