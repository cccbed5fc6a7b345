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
    stat(id.pid).is_some_and(|s| s.id == id && s.state != 'Z')
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
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut any_file = false;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            any_file = true;
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    if !any_file {
        out = all_pids()
            .into_iter()
            .filter(|p| stat(*p).is_some_and(|s| s.ppid == pid))
            .collect();
    }
    out.sort_unstable();
    out.dedup();
    out
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

/// Listeners running `program` (by absolute path), found by scanning `/proc`: after an agent
/// restart the old listener is no longer our child, but it is still running the runner's binary.
/// Oldest first.
pub fn find_listeners(program: &Path) -> Vec<ProcId> {
    let me = std::process::id();
    let want = canonical(program);
    let mut found: Vec<ProcId> = all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter_map(|pid| {
            let s = stat(pid)?;
            if s.state == 'Z' {
                return None;
            }
            let argv = cmdline(pid);
            let runs_it = argv.iter().take(2).any(|a| canonical(Path::new(a)) == want);
            (runs_it && is_named(&s, &argv, LISTENER_NAME)).then_some(s.id)
        })
        .collect();
    found.sort_by_key(|id| id.start_time);
    found
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

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
