//! What keeps one job from reaching the next on the same host (issue 16, items 2 to 4): every
//! listener in a cgroup of its own that the agent kills as a whole, the job's files cleaned before
//! the next listener, and the ptrace check at start.
//!
//! **Cgroups.** A listener's processes, and everything its job starts, stay in the listener's cgroup
//! v2 (`listener-N`): the directory is root's, so no process of the runner's user can move itself
//! out. Killing the cgroup (`cgroup.kill`, or freeze, SIGKILL each process, thaw on kernels before
//! 5.14) reaches a process that keeps forking and letting its parent exit, which a `/proc` scan
//! cannot catch (the pid it found is gone, the new one was not in the list). The agent starts the
//! next listener only once `cgroup.events` says `populated 0`.
//!
//! Where the cgroups live: under systemd (`INVOCATION_ID` set) the unit's own cgroup, which the
//! unit delegates to the agent (`Delegate=yes`); the agent moves itself into `agent/` there so
//! that controllers (pids, memory) can be enabled for the listeners' cgroups (cgroup v2's "no
//! internal processes" rule). Elsewhere (tests, a manual run) a directory of its own under the
//! cgroup it runs in, `runner-lifecycle-<tag>` (the tag is derived from the socket path, so a
//! restarted agent finds the same one). Without a writable cgroup v2 the agent falls back to the
//! `/proc` scan, and says so.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the agent waits for a killed cgroup to empty before it gives up on this start.
pub const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);
/// Tasks kept free for the agent below the unit's `TasksMax` (pids controller): a job that
/// forks until its cgroup's `pids.max` leaves the agent this many to start the next listener, its
/// launcher and the cleaner.
pub const AGENT_TASK_RESERVE: u64 = 64;
/// `memory.low` of the agent's own cgroup (memory controller delegated): its pages are reclaimed
/// last when a job fills memory.
pub const AGENT_MEMORY_LOW: u64 = 64 * 1024 * 1024;

/// The cgroup v2 subtree the agent runs its listeners in.
#[derive(Clone, Debug)]
pub struct Cgroups {
    /// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`).
    mount: PathBuf,
    /// The subtree's path inside the hierarchy (`/system.slice/runner-lifecycle.service`).
    base_rel: String,
    /// Whether `cgroup.kill` exists (Linux 5.14+); otherwise freeze then SIGKILL.
    has_kill: bool,
    /// `pids.max` for each listener cgroup, when the pids controller is enabled for them.
    pids_max: Option<u64>,
    next: u64,
    /// How the subtree was found (for the start-up log line and `status`).
    pub how: String,
}

/// The cgroup v2 mount point, from the text of `/proc/self/mountinfo`.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 path (the `0::` line) in the text of `/proc/<pid>/cgroup`.
pub fn v2_path(cgroup_file: &str) -> Option<&str> {
    cgroup_file.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A short stable tag for `key` (FNV-1a, 32 bits, hex).
pub fn tag(key: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
}

impl Cgroups {
    /// Find or make the agent's subtree. `key` names it outside systemd (the socket path).
    pub fn discover(key: &str) -> Result<Cgroups, String> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own_file = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let own = v2_path(&own_file)
            .ok_or("this process is in no cgroup v2")?
            .trim()
            .to_string();
        let systemd = std::env::var_os("INVOCATION_ID").is_some() && own != "/";
        let (base_rel, how) = if systemd {
            // A restarted agent starts in the unit's cgroup again; an earlier one may have made
            // `agent/` already.
            let base = own.strip_suffix("/agent").unwrap_or(&own).to_string();
            (base.clone(), format!("the unit's delegated cgroup {base}"))
        } else {
            let base = format!("{}/runner-lifecycle-{}", own.trim_end_matches('/'), tag(key));
            (
                base.clone(),
                format!("{base}, made under the agent's own cgroup (not under systemd)"),
            )
        };
        let base = mount.join(base_rel.trim_start_matches('/'));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot make {}: {e}", base.display())),
        }
        // A listener cgroup must be makeable: that is the test of delegation and writability.
        let probe = base.join("probe");
        let _ = std::fs::remove_dir(&probe);
        std::fs::create_dir(&probe).map_err(|e| format!("cannot make cgroups below {}: {e}", base.display()))?;
        let has_kill = probe.join("cgroup.kill").exists();
        let can_freeze = probe.join("cgroup.freeze").exists();
        let _ = std::fs::remove_dir(&probe);
        if !has_kill && !can_freeze {
            return Err(format!("{} has neither cgroup.kill nor cgroup.freeze", base.display()));
        }
        let mut cg = Cgroups {
            mount,
            base_rel,
            has_kill,
            pids_max: None,
            next: 1,
            how,
        };
        if systemd {
            cg.take_controllers(&base);
        }
        cg.next = cg.highest_listener().map_or(1, |n| n + 1);
        Ok(cg)
    }

    /// Under systemd: move the agent into `agent/`, enable pids and memory for the children, keep
    /// tasks and memory for the agent. Best effort: each step that fails is logged by the caller's
    /// `how` and the listeners still get their cgroups.
    fn take_controllers(&mut self, base: &Path) {
        let agent = base.join("agent");
        let _ = std::fs::create_dir(&agent);
        if write(&agent.join("cgroup.procs"), &std::process::id().to_string()).is_err() {
            self.how
                .push_str("; the agent could not move into agent/ (no controllers for the listeners)");
            return;
        }
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("pids") && write(&base.join("cgroup.subtree_control"), "+pids").is_ok() {
            let unit_max = std::fs::read_to_string(base.join("pids.max")).ok();
            self.pids_max = unit_max
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|m| m.saturating_sub(AGENT_TASK_RESERVE).max(AGENT_TASK_RESERVE));
            if let Some(m) = self.pids_max {
                self.how.push_str(&format!("; listeners get pids.max {m}"));
            }
        }
        if has("memory")
            && write(&base.join("cgroup.subtree_control"), "+memory").is_ok()
            && write(&agent.join("memory.low"), &AGENT_MEMORY_LOW.to_string()).is_ok()
        {
            self.how
                .push_str(&format!("; the agent's memory.low is {AGENT_MEMORY_LOW}"));
        }
    }

    /// The subtree's path inside the hierarchy.
    pub fn base_rel(&self) -> &str {
        &self.base_rel
    }

    fn base(&self) -> PathBuf {
        self.mount.join(self.base_rel.trim_start_matches('/'))
    }

    fn highest_listener(&self) -> Option<u64> {
        std::fs::read_dir(self.base())
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("listener-")?.parse::<u64>().ok())
            .max()
    }

    /// A fresh, empty cgroup for the next listener (or for the cleaner: `kind` names it).
    pub fn create(&mut self, kind: &str) -> io::Result<PathBuf> {
        let dir = self.base().join(format!("{kind}-{}", self.next));
        self.next += 1;
        std::fs::create_dir(&dir)?;
        if let Some(max) = self.pids_max {
            let _ = write(&dir.join("pids.max"), &max.to_string());
        }
        // An out-of-memory kill in a job takes its whole cgroup, not one process of it.
        let _ = write(&dir.join("memory.oom.group"), "1");
        Ok(dir)
    }

    /// The listener cgroup `cgroup_file` (the text of `/proc/<pid>/cgroup`) names, when it is one of
    /// this subtree's.
    pub fn listener_dir_of(&self, cgroup_file: &str) -> Option<PathBuf> {
        let path = v2_path(cgroup_file)?.trim();
        let rest = path.strip_prefix(&self.base_rel)?.strip_prefix("/listener-")?;
        rest.parse::<u64>().ok()?;
        Some(self.mount.join(path.trim_start_matches('/')))
    }

    /// Kill every cgroup of the subtree but the agent's and `keep`, wait until each is empty and
    /// remove it. Returns how many processes were in them and how long it took; `Err` when one
    /// does not empty within [`EMPTY_TIMEOUT`].
    pub fn sweep(&self, keep: Option<&Path>) -> Result<(usize, Duration), String> {
        let started = crate::clock::now_instant();
        let mut procs = 0;
        let entries = std::fs::read_dir(self.base()).map_err(|e| format!("{}: {e}", self.base().display()))?;
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) || e.file_name() == "agent" || Some(path.as_path()) == keep {
                continue;
            }
            procs += kill_and_remove(&path, self.has_kill, EMPTY_TIMEOUT)?;
        }
        Ok((procs, started.elapsed()))
    }

    /// Kill one cgroup (a listener's that exited) without waiting: the wait comes with the next
    /// [`Cgroups::sweep`]. How many processes were in it.
    pub fn kill_now(&self, dir: &Path) -> usize {
        let count = std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if count > 0 && self.has_kill {
            let _ = write(&dir.join("cgroup.kill"), "1");
        }
        count
    }

    /// Remove the subtree at exit when nothing runs in it (outside systemd only: there it is ours).
    pub fn remove_if_idle(&self) {
        if std::env::var_os("INVOCATION_ID").is_some() {
            return;
        }
        let base = self.base();
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.filter_map(Result::ok) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

fn populated(dir: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(text.lines().any(|l| l == "populated 1"))
}

/// Kill everything in `dir` (a leaf cgroup), wait until it is empty, remove it. The number of
/// processes it held.
pub fn kill_and_remove(dir: &Path, has_kill: bool, timeout: Duration) -> Result<usize, String> {
    let shown = dir.display();
    let count = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    if populated(dir).unwrap_or(false) {
        if has_kill {
            write(&dir.join("cgroup.kill"), "1").map_err(|e| format!("{shown}/cgroup.kill: {e}"))?;
        } else {
            freeze_and_kill(dir).map_err(|e| format!("{shown}: {e}"))?;
        }
    }
    let deadline = crate::clock::now_instant() + timeout;
    loop {
        match populated(dir) {
            Ok(false) => break,
            Ok(true) if crate::clock::now_instant() < deadline => crate::clock::pause(Duration::from_millis(2)),
            Ok(true) => return Err(format!("{shown} still has processes {timeout:?} after the kill")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(count),
            Err(e) => return Err(format!("{shown}/cgroup.events: {e}")),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(count),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(count),
        Err(e) => Err(format!("cannot remove {shown}: {e}")),
    }
}

/// Kernels before 5.14: freeze the cgroup (no process can fork any more), SIGKILL every process
/// in it, thaw (a frozen process dies of a fatal signal once thawed, if not before).
fn freeze_and_kill(dir: &Path) -> io::Result<()> {
    write(&dir.join("cgroup.freeze"), "1")?;
    let deadline = crate::clock::now_instant() + Duration::from_secs(2);
    while crate::clock::now_instant() < deadline {
        let events = std::fs::read_to_string(dir.join("cgroup.events"))?;
        if events.lines().any(|l| l == "frozen 1") {
            break;
        }
        crate::clock::pause(Duration::from_millis(1));
    }
    for pid in std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|p| p.trim().parse::<i32>().ok())
    {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    write(&dir.join("cgroup.freeze"), "0")
}

/// Move `pid` into the cgroup `dir`.
pub fn join(dir: &Path, pid: u32) -> io::Result<()> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// What the kernel lets a job do to its own listener with ptrace, from
/// `/proc/sys/kernel/yama/ptrace_scope` (`None`: no Yama). `Some(warning)` when a job may trace its
/// listener (and so make it run code of its choosing, or read its memory).
pub fn ptrace_warning(scope: Option<&str>) -> Option<String> {
    match scope.map(str::trim) {
        None => Some(
            "this kernel has no Yama LSM: a job may ptrace its own listener (same uid) and read its memory or make it run code".into(),
        ),
        Some("0") => Some(
            "kernel.yama.ptrace_scope is 0: a job may ptrace its own listener (same uid); `runner-lifecycle install` sets 1".into(),
        ),
        Some(_) => None,
    }
}

/// [`ptrace_warning`] for this host.
pub fn ptrace_warning_here() -> Option<String> {
    ptrace_warning(
        std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
            .ok()
            .as_deref(),
    )
}

/// A process the agent watches, held by a pidfd: its exit is seen without reading `/proc` (no
/// path, no new descriptor per check), so a failed `/proc` read can neither keep it alive nor
/// declare it dead.
#[derive(Debug)]
pub struct Handle {
    fd: rustix::fd::OwnedFd,
}

impl Handle {
    /// Open a handle on `pid`, checked to still be the process started at `start_time` (after the
    /// open, so a recycled pid is never held). `None` when it cannot be opened or checked.
    pub fn open(pid: u32, start_time: u64) -> Option<Handle> {
        let p = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
        let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()?;
        let h = Handle { fd };
        let same = crate::procs::stat(pid).is_some_and(|s| s.id.start_time == start_time && s.state != 'Z');
        same.then_some(h)
    }

    /// Whether the process has exited (a zombie counts as exited).
    pub fn exited(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
        match poll(&mut fds, Some(&zero)) {
            Ok(n) => n > 0 && !fds[0].revents().is_empty(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_and_path_are_found() {
        let mi = "25 1 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  31 1 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/x rw\n"), None);
        let file = "4:memory:/x\n0::/system.slice/runner-lifecycle.service/listener-3\n";
        assert_eq!(v2_path(file), Some("/system.slice/runner-lifecycle.service/listener-3"));
        assert_eq!(v2_path("4:memory:/x\n"), None);
        assert_eq!(
            tag("/run/runner-lifecycle/agent.sock"),
            tag("/run/runner-lifecycle/agent.sock")
        );
        assert_ne!(tag("/a"), tag("/b"));
    }

    #[test]
    fn only_the_subtrees_listener_cgroups_are_listeners() {
        let cg = Cgroups {
            mount: PathBuf::from("/sys/fs/cgroup"),
            base_rel: "/system.slice/rl.service".into(),
            has_kill: true,
            pids_max: None,
            next: 1,
            how: String::new(),
        };
        assert_eq!(
            cg.listener_dir_of("0::/system.slice/rl.service/listener-12\n"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/rl.service/listener-12"))
        );
        for other in [
            "0::/system.slice/rl.service\n",
            "0::/system.slice/rl.service/agent\n",
            "0::/system.slice/rl.service/listener-x\n",
            "0::/system.slice/rl.service2/listener-1\n",
            "0::/user.slice/listener-1\n",
        ] {
            assert_eq!(cg.listener_dir_of(other), None, "{other}");
        }
    }

    #[test]
    fn ptrace_is_warned_about_without_yama_or_at_scope_0() {
        assert!(ptrace_warning(None).is_some());
        assert!(ptrace_warning(Some("0\n")).is_some());
        for ok in ["1\n", "2", "3"] {
            assert_eq!(ptrace_warning(Some(ok)), None);
        }
    }

    #[test]
    fn a_handle_sees_its_process_exit_and_never_a_recycled_pid() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn");
        let start = crate::procs::stat(child.id()).expect("stat").id.start_time;
        assert!(Handle::open(child.id(), start + 1).is_none(), "another start time");
        let h = Handle::open(child.id(), start).expect("open");
        assert!(!h.exited());
        child.kill().expect("kill");
        // A zombie (not reaped yet) has exited.
        crate::clock::pause(Duration::from_millis(50));
        assert!(h.exited());
        child.wait().expect("wait");
        assert!(h.exited());
    }
}
