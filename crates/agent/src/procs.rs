//! Reading processes from `/proc`: the listener's `Runner.Worker` children (a job), and, after an
//! agent restart, a listener still running from before.
//!
//! The worker is the earliest job signal the host has: the listener spawns `bin/Runner.Worker` as
//! its direct child as soon as it accepts a job (actions/runner src/Runner.Listener/JobDispatcher.cs),
//! well before the job-started hook runs. Polling `/proc/<listener>/task/*/children` every few tens of
//! milliseconds costs a handful of small reads.

use std::path::{Path, PathBuf};

/// Upstream's process names (actions/runner src/Runner.Listener/JobDispatcher.cs, layout `bin/`).
pub const LISTENER_NAME: &str = "Runner.Listener";
/// The per-job process.
pub const WORKER_NAME: &str = "Runner.Worker";

/// One process, identified by pid *and* start time so a recycled pid is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcId {
    /// The pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_time: u64,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// pid and start time.
    pub id: ProcId,
    /// Parent pid.
    pub ppid: u32,
    /// `comm` (at most 15 bytes).
    pub comm: String,
    /// State letter (`Z` for a zombie).
    pub state: char,
}

/// Parse the text of `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid: u32 = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some(Stat {
        id: ProcId { pid, start_time },
        ppid,
        comm,
        state,
    })
}

/// Read one process's stat; `None` when it is gone (or unreadable).
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `id` still names a live (non-zombie) process.
pub fn alive(id: ProcId) -> bool {
    liveness(id) == Liveness::Alive
}

/// What `/proc` says about a process the agent watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Running with the same start time.
    Alive,
    /// Gone: no such pid, a zombie, or another process under a recycled pid.
    Gone,
    /// `/proc` could not be read (EMFILE, EACCES, ...): nothing is known, so nothing may change.
    Unknown,
}

/// [`Liveness`] of `id`. Only "no such process" counts as gone; any other read failure is
/// [`Liveness::Unknown`], never "gone": an agent out of file descriptors must not conclude that the
/// listener (or its job) has exited.
pub fn liveness(id: ProcId) -> Liveness {
    match std::fs::read_to_string(format!("/proc/{}/stat", id.pid)) {
        Ok(text) => match parse_stat(&text) {
            Some(s) if s.id == id && s.state != 'Z' => Liveness::Alive,
            Some(_) => Liveness::Gone,
            None => Liveness::Unknown,
        },
        Err(e) if is_gone(&e) => Liveness::Gone,
        Err(_) => Liveness::Unknown,
    }
}

/// Whether a `/proc` read error means the process (or thread) no longer exists.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
}

/// The command line, split at NULs.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process is `name`: its `comm` says so, or (for a script run by an interpreter) its
/// first or second argument is a file called `name`.
pub fn is_named(stat: &Stat, argv: &[String], name: &str) -> bool {
    if stat.comm == name {
        return true;
    }
    argv.iter()
        .take(2)
        .any(|a| Path::new(a).file_name().is_some_and(|f| f == name))
}

/// Direct children of `pid`, from every thread's `children` file (a child belongs to the thread that
/// forked it, and the .NET listener forks from a worker thread). Falls back to a full scan when the
/// kernel lacks `CONFIG_PROC_CHILDREN`.
pub fn children(pid: u32) -> Vec<u32> {
    try_children(pid).unwrap_or_default()
}

/// [`children`], with read failures reported instead of read as "no children".
pub fn try_children(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut any_file = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        match std::fs::read_to_string(task?.path().join("children")) {
            Ok(text) => {
                any_file = true;
                out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if !any_file {
        out = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|p| stat(*p).is_some_and(|s| s.ppid == pid))
            .collect();
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `Runner.Worker` processes among `listener`'s direct children.
pub fn workers_of(listener: u32) -> Vec<ProcId> {
    children(listener)
        .into_iter()
        .filter_map(|pid| {
            let s = stat(pid)?;
            (s.state != 'Z' && is_named(&s, &cmdline(pid), WORKER_NAME)).then_some(s.id)
        })
        .collect()
}

/// Watches one listener's children for `Runner.Worker` at a high rate, cheaply: the per-thread
/// `children` files stay open and are re-read from offset 0 (they are seq_files), the thread list
/// is re-read only when the thread count changes (and once a second, in case one thread exited
/// while another started), and each child is classified once.
#[derive(Debug)]
pub struct WorkerWatcher {
    listener: u32,
    stat: Option<std::fs::File>,
    threads: u64,
    files: Vec<std::fs::File>,
    relisted_at: u64,
    ticks: u64,
    /// Children seen last time: pid -> `Some(worker)` for workers, `None` for other children.
    known: std::collections::BTreeMap<u32, Option<ProcId>>,
    buf: Vec<u8>,
    /// Tests: the next reads fail with this error.
    #[cfg(test)]
    fail_reads: Option<std::io::ErrorKind>,
}

/// The most per-thread `children` files a watcher keeps open; above it, each is opened, read and
/// closed in turn.
pub const MAX_HELD_FILES: u64 = 64;

/// Ticks between two looks at a child that was not a worker (at 50 ms per tick: 4 a second).
const RECLASSIFY_EVERY: u64 = 5;

/// Ticks between forced thread-list refreshes (at the default 50 ms per tick: once a second).
const RELIST_EVERY: u64 = 20;

impl WorkerWatcher {
    /// Watch the children of `listener`.
    pub fn new(listener: u32) -> WorkerWatcher {
        WorkerWatcher {
            listener,
            stat: std::fs::File::open(format!("/proc/{listener}/stat")).ok(),
            threads: 0,
            files: Vec::new(),
            relisted_at: 0,
            ticks: 0,
            known: std::collections::BTreeMap::new(),
            buf: Vec::with_capacity(512),
            #[cfg(test)]
            fail_reads: None,
        }
    }

    /// Tests: make every read fail with `kind` (or succeed again with `None`).
    #[cfg(test)]
    pub fn inject_read_failure(&mut self, kind: Option<std::io::ErrorKind>) {
        self.fail_reads = kind;
    }

    fn injected(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.fail_reads {
            return Err(std::io::Error::from(kind));
        }
        Ok(())
    }

    /// The listener's current `Runner.Worker` children. `Err` when `/proc` could not be read
    /// completely (EMFILE, EACCES, a thread that vanished mid-read): the caller must keep what it
    /// knew, because a failed read is not "no worker" (that would let a drain SIGINT a busy
    /// listener and cancel its job).
    pub fn workers(&mut self) -> std::io::Result<Vec<ProcId>> {
        self.ticks += 1;
        self.injected()?;
        let threads = self.thread_count()?;
        if threads > MAX_HELD_FILES {
            // Many threads (a job can inject them into its listener): one open file at a time, not
            // one per thread held open, which ran the agent out of descriptors (issue 16).
            self.files.clear();
            self.threads = threads;
        } else if threads != self.threads || self.files.is_empty() || self.ticks - self.relisted_at >= RELIST_EVERY {
            if let Err(e) = self.relist() {
                self.files.clear();
                return Err(e);
            }
            self.threads = threads;
        }
        let mut pids: Vec<u32> = if self.files.is_empty() {
            // No `children` files (kernel without CONFIG_PROC_CHILDREN): the slow full scan.
            try_children(self.listener)?
        } else {
            let mut pids = Vec::new();
            for i in 0..self.files.len() {
                if let Err(e) = reread(&mut self.files[i], &mut self.buf) {
                    self.threads = 0; // a thread may be gone: re-list next tick
                    return Err(e);
                }
                pids.extend(
                    std::str::from_utf8(&self.buf)
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            pids
        };
        pids.sort_unstable();
        pids.dedup();
        self.known.retain(|pid, _| pids.binary_search(pid).is_ok());
        if self.ticks.is_multiple_of(RECLASSIFY_EVERY) {
            // A child seen between its fork and its exec still had the listener's name: a child
            // that is not a worker is looked at again now and then, or a worker that was seen too
            // early would never be one.
            self.known.retain(|_, worker| worker.is_some());
        }
        for pid in pids {
            if self.known.contains_key(&pid) {
                continue;
            }
            // A child that vanished before it could be read is looked at again next tick.
            if let Some(s) = stat(pid) {
                let worker = s.state != 'Z' && is_named(&s, &cmdline(pid), WORKER_NAME);
                self.known.insert(pid, worker.then_some(s.id));
            }
        }
        Ok(self.known.values().flatten().copied().collect())
    }

    fn thread_count(&mut self) -> std::io::Result<u64> {
        if self.stat.is_none() {
            // Opening failed before (EMFILE at start, say): try again.
            self.stat = Some(std::fs::File::open(format!("/proc/{}/stat", self.listener))?);
        }
        let Some(f) = self.stat.as_mut() else { return Ok(0) };
        reread(f, &mut self.buf)?;
        // Field 20 (num_threads) is the 18th field after the `)` that closes the command name.
        Ok(std::str::from_utf8(&self.buf)
            .ok()
            .and_then(|t| t.rsplit_once(')'))
            .and_then(|(_, rest)| rest.split_whitespace().nth(17))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    fn relist(&mut self) -> std::io::Result<()> {
        self.relisted_at = self.ticks;
        let mut files = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.listener))? {
            let task = task?;
            match std::fs::File::open(task.path().join("children")) {
                Ok(f) => files.push(f),
                // A thread that exited meanwhile; or no `children` files at all (old kernel).
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.files = files;
        Ok(())
    }
}

/// Read a whole /proc file from offset 0 with `pread`: one syscall for these short files, where
/// `seek` + `read_to_end` costs a `statx` and two `lseek`s more on every tick.
fn reread(f: &mut std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        let n = f.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return Ok(());
        }
    }
}

/// What a listener left by a previous agent must be, to be adopted. The job runs as the runner's
/// user and can start any process with any argv (a `Runner.Listener` look-alike that ignores
/// SIGINT, or one that makes the agent believe the runner idle): argv and `comm` are its to choose.
/// What it cannot choose: the executable the kernel runs (`/proc/<pid>/exe`), the real uid, and the
/// cgroup (under systemd the unit's cgroup, which only root can write; a job's processes that
/// escape the listener's tree land in the same cgroup only as descendants, so the uid and exe checks
/// carry the rest, and the oldest match wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The configured listener program, canonical.
    pub program: PathBuf,
    /// When the program is a script (`#!` line): its interpreter, canonical; the kernel runs that,
    /// with the script as `argv[1]` (the test stand-in is such a script).
    pub interpreter: Option<PathBuf>,
    /// The runner user's uid (the agent's own when `runner.user` is unset).
    pub uid: u32,
    /// The agent's own `/proc/self/cgroup`.
    pub cgroup: Option<String>,
    /// The agent's listener cgroups' parent (cgroup v2 path, [`crate::isolation::Cgroups`]): a
    /// listener in `<this>/listener-N` or in `<this>` itself is in the agent's cgroup too.
    pub listener_cgroups: Option<String>,
}

/// What `/proc` says about one candidate.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Facts {
    /// `/proc/<pid>/exe`, resolved (`None`: unreadable).
    pub exe: Option<PathBuf>,
    /// The command line.
    pub argv: Vec<String>,
    /// Real uid from `/proc/<pid>/status`.
    pub uid: Option<u32>,
    /// `/proc/<pid>/cgroup`.
    pub cgroup: Option<String>,
}

impl Expected {
    /// For `program` run by `uid`, compared with this process's cgroup.
    pub fn for_program(program: &Path, uid: u32) -> Expected {
        Expected {
            program: canonical(program),
            interpreter: interpreter_of(program).map(|i| canonical(&i)),
            uid,
            cgroup: std::fs::read_to_string("/proc/self/cgroup").ok(),
            listener_cgroups: None,
        }
    }

    /// Whether a process whose `/proc/<pid>/cgroup` reads `theirs` is in the agent's cgroup: the
    /// same one, or (cgroup v2) one of the agent's listener cgroups, or their parent. Only root can
    /// write those, so a job's process cannot move itself into one.
    fn same_cgroup(&self, theirs: &str, ours: &str) -> bool {
        if theirs == ours {
            return true;
        }
        let v2 = crate::isolation::v2_path;
        let (Some(t), Some(o)) = (v2(theirs), v2(ours)) else {
            return false;
        };
        let t = t.trim();
        if t == o.trim() {
            return true;
        }
        self.listener_cgroups.as_deref().is_some_and(|base| {
            t == base
                || t.strip_prefix(base)
                    .and_then(|r| r.strip_prefix("/listener-"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    }

    /// `Ok` when `facts` describe the runner's listener; otherwise why not.
    pub fn check(&self, facts: &Facts) -> Result<(), String> {
        // Reading another user's /proc/<pid>/exe takes CAP_SYS_PTRACE (ptrace read access), even
        // for root: without it nothing is adopted, which fails closed.
        let exe = facts
            .exe
            .as_ref()
            .ok_or("its executable cannot be read (/proc/<pid>/exe of another user needs CAP_SYS_PTRACE)")?;
        let runs_program = if *exe == self.program {
            true
        } else {
            // A script: the kernel runs its interpreter with the script's path as argv[1].
            self.interpreter.as_ref() == Some(exe)
                && facts
                    .argv
                    .get(1)
                    .is_some_and(|a| canonical(Path::new(a)) == self.program)
        };
        if !runs_program {
            return Err(format!("it runs {}, not {}", exe.display(), self.program.display()));
        }
        match facts.uid {
            Some(uid) if uid == self.uid => {}
            Some(uid) => return Err(format!("it runs as uid {uid}, not the runner's uid {}", self.uid)),
            None => return Err("its uid cannot be read".into()),
        }
        match (&facts.cgroup, &self.cgroup) {
            (Some(theirs), Some(ours)) if self.same_cgroup(theirs, ours) => Ok(()),
            (Some(_), Some(_)) => Err("it is in another cgroup than the agent".into()),
            _ => Err("its cgroup cannot be compared with the agent's".into()),
        }
    }
}

/// The interpreter named by a script's `#!` line (`None` for a binary, or `#!/usr/bin/env ...`
/// whose real interpreter depends on PATH).
pub fn interpreter_of(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head.get(..n)?.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let interp = std::str::from_utf8(line).ok()?.split_whitespace().next()?;
    (Path::new(interp).is_absolute() && !interp.ends_with("/env")).then(|| PathBuf::from(interp))
}

/// The real uid in the text of `/proc/<pid>/status` (`Uid:` real, effective, saved, fs).
pub fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// Whether any of the uids in the text of `/proc/<pid>/status` (real, effective, saved, fs) is `uid`.
pub fn status_has_uid(text: &str, uid: u32) -> bool {
    status_uids(text).any(|u| u == uid)
}

/// The uids (real, effective, saved, filesystem) of a `/proc/<pid>/status` text.
pub fn status_uids(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .into_iter()
        .flat_map(|rest| rest.split_whitespace().filter_map(|u| u.parse().ok()))
}

/// SIGKILL every process that runs as `uid` (any of its uids), until none is left or 10 rounds have
/// passed (a process can fork between the scan and the kill; 10 rounds outlast any fork loop the
/// kernel lets one user run, because each round kills every process found). Returns how many were
/// signalled, and the cgroup v2 paths of the first few (where they ran). Never signals this process.
pub fn kill_user_processes(uid: u32) -> (usize, Vec<String>) {
    kill_processes_of(&|u| u == uid)
}

/// [`kill_user_processes`] for every process with any uid that `owns` says is the runner's (its own,
/// and the subordinate ids its rootless containers run as).
pub fn kill_processes_of(owns: &dyn Fn(u32) -> bool) -> (usize, Vec<String>) {
    let me = std::process::id();
    let mut killed = 0;
    let mut seen_in: Vec<String> = Vec::new();
    for _ in 0..10 {
        let victims: Vec<u32> = all_pids()
            .into_iter()
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|t| status_uids(&t).any(owns))
            })
            // A zombie is dead already (killed processes wait there for their reaper).
            .filter(|pid| stat(*pid).is_some_and(|s| s.state != 'Z'))
            .collect();
        if victims.is_empty() {
            break;
        }
        for pid in victims {
            let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
                continue;
            };
            if seen_in.len() < 5 {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
                    let path = crate::isolation::v2_path(&text).unwrap_or("?").trim().to_string();
                    if !seen_in.contains(&path) {
                        seen_in.push(path);
                    }
                }
            }
            if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok() {
                killed += 1;
            }
        }
    }
    (killed, seen_in)
}

/// Read the [`Facts`] of `pid`.
pub fn facts(pid: u32) -> Facts {
    Facts {
        exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        argv: cmdline(pid),
        uid: std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|t| parse_status_uid(&t)),
        cgroup: std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok(),
    }
}

/// A process that looked like a listener but failed [`Expected::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Its pid.
    pub pid: u32,
    /// Its command line (untrusted: escape before logging).
    pub argv: Vec<String>,
    /// Why it was not adopted.
    pub why: String,
}

/// Listeners of the runner found by scanning `/proc` (after an agent restart the old listener is no
/// longer our child), oldest first, and the look-alikes that failed the check. A candidate is any
/// process named like the listener (`comm` or argv) or running the program; the decision is
/// [`Expected::check`]'s alone, never argv's.
pub fn find_listeners(expected: &Expected) -> (Vec<ProcId>, Vec<Rejected>) {
    let me = std::process::id();
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    for pid in all_pids().into_iter().filter(|p| *p != me) {
        let Some(s) = stat(pid) else { continue };
        if s.state == 'Z' {
            continue;
        }
        let argv = cmdline(pid);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let looks_like = is_named(&s, &argv, LISTENER_NAME) || exe.as_deref() == Some(expected.program.as_path());
        if !looks_like {
            continue;
        }
        let f = Facts { exe, ..facts(pid) };
        match expected.check(&f) {
            Ok(()) => found.push(s.id),
            Err(why) => rejected.push(Rejected { pid, argv, why }),
        }
    }
    found.sort_by_key(|id| id.start_time);
    (found, rejected)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> Expected {
        Expected {
            program: PathBuf::from("/home/runner/actions-runner/bin/Runner.Listener"),
            interpreter: None,
            uid: 1001,
            cgroup: Some("0::/system.slice/runner-lifecycle.service/agent\n".into()),
            listener_cgroups: Some("/system.slice/runner-lifecycle.service".into()),
        }
    }

    fn genuine() -> Facts {
        Facts {
            exe: Some(PathBuf::from("/home/runner/actions-runner/bin/Runner.Listener")),
            argv: vec!["/home/runner/actions-runner/bin/Runner.Listener".into(), "run".into()],
            uid: Some(1001),
            cgroup: Some("0::/system.slice/runner-lifecycle.service\n".into()),
        }
    }

    #[test]
    fn any_of_the_four_uids_counts() {
        let status = "Name:\tsh\nUid:\t1001\t0\t0\t0\nGid:\t1001\t1001\t1001\t1001\n";
        assert!(status_has_uid(status, 1001));
        assert!(status_has_uid(status, 0));
        assert!(!status_has_uid(status, 1002));
        assert!(!status_has_uid("Name:\tsh\n", 0));
    }

    #[test]
    fn adoption_checks_exe_uid_and_cgroup_not_argv() {
        let want = expected();
        assert_eq!(want.check(&genuine()), Ok(()));
        // The job's look-alike: the right argv and comm, another executable.
        let fake = Facts {
            exe: Some(PathBuf::from("/usr/bin/python3.12")),
            ..genuine()
        };
        assert!(want.check(&fake).expect_err("exe").contains("runs /usr/bin/python3.12"));
        // The real binary, started by someone else (another user), or outside the agent's cgroup
        // (a user session, a docker container, another unit).
        let other_user = Facts {
            uid: Some(0),
            ..genuine()
        };
        assert!(want.check(&other_user).expect_err("uid").contains("uid 0"));
        let other_cgroup = Facts {
            cgroup: Some("0::/user.slice/user-1001.slice/session-3.scope\n".into()),
            ..genuine()
        };
        assert!(want.check(&other_cgroup).expect_err("cgroup").contains("cgroup"));
        // One of the agent's listener cgroups, or their parent (a listener of an older agent).
        for ok in ["listener-7", ""] {
            let sep = if ok.is_empty() { "" } else { "/" };
            let f = Facts {
                cgroup: Some(format!("0::/system.slice/runner-lifecycle.service{sep}{ok}\n")),
                ..genuine()
            };
            assert_eq!(want.check(&f), Ok(()), "{ok}");
        }
        for bad in ["listener-", "listener-1x", "other-1"] {
            let f = Facts {
                cgroup: Some(format!("0::/system.slice/runner-lifecycle.service/{bad}\n")),
                ..genuine()
            };
            assert!(want.check(&f).is_err(), "{bad}");
        }
        // Unreadable facts never adopt.
        for f in [
            Facts { exe: None, ..genuine() },
            Facts { uid: None, ..genuine() },
            Facts {
                cgroup: None,
                ..genuine()
            },
        ] {
            assert!(want.check(&f).is_err(), "{f:?}");
        }
    }

    #[test]
    fn a_script_listener_is_matched_by_its_interpreter_and_script_path() {
        let dir = std::env::temp_dir().join(format!("rl-adopt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        let script = dir.join("bin").join(LISTENER_NAME);
        std::fs::write(&script, "#!/bin/sh -e\nexec sleep 1\n").expect("write");
        assert_eq!(interpreter_of(&script), Some(PathBuf::from("/bin/sh")));
        let env_script = dir.join("env-script");
        std::fs::write(&env_script, "#!/usr/bin/env python3\n").expect("write");
        assert_eq!(interpreter_of(&env_script), None, "PATH decides; not trusted");
        let want = Expected::for_program(&script, 1001);
        let sh = canonical(Path::new("/bin/sh"));
        let ok = Facts {
            exe: Some(sh.clone()),
            argv: vec!["/bin/sh".into(), script.display().to_string(), "run".into()],
            uid: Some(1001),
            cgroup: want.cgroup.clone(),
        };
        assert_eq!(want.check(&ok), Ok(()));
        let other_script = Facts {
            argv: vec!["/bin/sh".into(), "/tmp/Runner.Listener".into()],
            ..ok.clone()
        };
        assert!(want.check(&other_script).is_err(), "same interpreter, another script");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_uid_parses() {
        let status = "Name:\tRunner.Listener\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\n";
        assert_eq!(parse_status_uid(status), Some(1001));
        assert_eq!(parse_status_uid("Name: x\n"), None);
        assert_eq!(parse_status_uid("Uid:\tabc\n"), None);
        let me = parse_status_uid(&std::fs::read_to_string("/proc/self/status").expect("status"));
        assert_eq!(me, Some(rustix::process::getuid().as_raw()));
    }

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (Runner.Worker) S 4200 4200 4200 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 100";
        let s = parse_stat(line).expect("parse");
        assert_eq!(
            s.id,
            ProcId {
                pid: 4242,
                start_time: 987654
            }
        );
        assert_eq!((s.ppid, s.comm.as_str(), s.state), (4200, "Runner.Worker", 'S'));
        let odd = "7 (a) b (c) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        let s = parse_stat(odd).expect("odd");
        assert_eq!(
            (s.comm.as_str(), s.state, s.ppid, s.id.start_time),
            ("a) b (c", 'Z', 1, 55)
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S").is_none());
    }

    #[test]
    fn names_match_by_comm_or_script_path() {
        let s = |comm: &str| Stat {
            id: ProcId { pid: 1, start_time: 1 },
            ppid: 0,
            comm: comm.into(),
            state: 'S',
        };
        assert!(is_named(&s("Runner.Worker"), &[], WORKER_NAME));
        let argv = vec![
            "/usr/bin/python3".to_string(),
            "/opt/runner/bin/Runner.Worker".to_string(),
        ];
        assert!(is_named(&s("python3"), &argv, WORKER_NAME));
        assert!(!is_named(&s("python3"), &argv, LISTENER_NAME));
        let argv = vec!["bash".to_string(), "-c".to_string(), "echo Runner.Worker".to_string()];
        assert!(!is_named(&s("bash"), &argv, WORKER_NAME));
    }

    #[test]
    fn the_watcher_sees_a_worker_come_and_go() {
        // A process whose comm is Runner.Worker: `sleep` executed through a symlink of that name.
        let dir = std::env::temp_dir().join(format!("rl-procs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fake = dir.join(WORKER_NAME);
        std::os::unix::fs::symlink("/bin/sleep", &fake).expect("symlink");
        let mut watcher = WorkerWatcher::new(std::process::id());
        let before = watcher.workers().expect("read");
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let mut worker = std::process::Command::new(&fake)
            .arg("5")
            .spawn()
            .expect("spawn worker");
        let seen = watcher.workers().expect("read");
        assert!(seen.iter().any(|w| w.pid == worker.id()), "{seen:?}");
        // A failed read (EMFILE, EACCES) is an error, never "the worker is gone".
        for kind in [std::io::ErrorKind::PermissionDenied, std::io::ErrorKind::Other] {
            watcher.inject_read_failure(Some(kind));
            assert_eq!(watcher.workers().map_err(|e| e.kind()), Err(kind));
        }
        watcher.inject_read_failure(None);
        assert_eq!(watcher.workers().expect("read again"), seen);
        assert!(!seen.iter().any(|w| w.pid == other.id()), "only workers: {seen:?}");
        assert_eq!(
            workers_of(std::process::id())
                .iter()
                .filter(|w| w.pid == worker.id())
                .count(),
            1
        );
        worker.kill().expect("kill");
        worker.wait().expect("wait");
        let after = watcher.workers().expect("read");
        assert!(!after.iter().any(|w| w.pid == worker.id()), "{after:?}");
        assert_eq!(after.len(), before.len());
        other.kill().expect("kill");
        other.wait().expect("wait");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_this_process_and_its_children() {
        let me = stat(std::process::id()).expect("self");
        assert!(alive(me.id));
        assert!(
            !alive(ProcId {
                pid: me.id.pid,
                start_time: me.id.start_time + 1
            }),
            "start time must match"
        );
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let kids = children(std::process::id());
        assert!(kids.contains(&child.id()), "{kids:?}");
        assert!(workers_of(std::process::id()).is_empty());
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!children(std::process::id()).contains(&child.id()));
    }
}
