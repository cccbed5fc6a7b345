//! Between two jobs (JIT mode, before the next listener): the last job's files go. The runner's work
//! directory is emptied, the files the runner's user owns in the temp directories are removed, and
//! its home is reset (emptied, but for the runner directory when it lies there).
//!
//! It runs as the runner's user, not as the root agent: the agent holds no `CAP_DAC_OVERRIDE` or
//! `CAP_FOWNER` (a root process without them cannot delete in another user's directories), and a
//! process of the runner's user can remove exactly what the job could, so a link or a mount the
//! job planted gives it nothing. The agent starts it through the launcher in a cgroup of its own
//! (`clean-N`), after the job's cgroup is empty, and kills that cgroup afterwards.
//!
//! Hidden subcommand: `runner-lifecycle clean-job-state [--work DIR] [--keep DIR] [--home DIR]
//! [--tmp DIR]...`; it prints one JSON line of timings and counts.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The subcommand's name.
pub const CLEAN_JOB_STATE: &str = "clean-job-state";
/// The temp directories a job's files are removed from.
pub const TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// How deep the temp directories are searched for the user's files.
const MAX_DEPTH: usize = 32;

/// What to clean.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The runner's work directory: emptied.
    pub work: Option<PathBuf>,
    /// Never removed, nor anything in it (the runner directory).
    pub keep: Option<PathBuf>,
    /// The runner user's home: emptied but for `keep`.
    pub home: Option<PathBuf>,
    /// Temp directories: every entry of the user's, at any depth, goes.
    pub tmp: Vec<PathBuf>,
}

impl Plan {
    /// The subcommand's arguments.
    pub fn args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![CLEAN_JOB_STATE.into()];
        let mut push = |flag: &str, p: &Path| {
            out.push(flag.into());
            out.push(p.as_os_str().to_owned());
        };
        if let Some(p) = &self.work {
            push("--work", p);
        }
        if let Some(p) = &self.keep {
            push("--keep", p);
        }
        if let Some(p) = &self.home {
            push("--home", p);
        }
        for p in &self.tmp {
            push("--tmp", p);
        }
        out
    }

    /// Parse [`Plan::args`] (without the subcommand's name).
    pub fn parse(argv: &[OsString]) -> Result<Plan, String> {
        let mut plan = Plan::default();
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let value = it.next().map(PathBuf::from).ok_or("a flag without its value")?;
            match flag.to_str() {
                Some("--work") => plan.work = Some(value),
                Some("--keep") => plan.keep = Some(value),
                Some("--home") => plan.home = Some(value),
                Some("--tmp") => plan.tmp.push(value),
                _ => return Err(format!("unknown flag {}", flag.to_string_lossy())),
            }
        }
        Ok(plan)
    }
}

/// What one cleaning did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Time spent on the work directory, the temp directories, the home (microseconds).
    pub work_us: u64,
    /// ...
    pub tmp_us: u64,
    /// ...
    pub home_us: u64,
    /// Entries removed in each.
    pub work_removed: u64,
    /// ...
    pub tmp_removed: u64,
    /// ...
    pub home_removed: u64,
    /// Entries that could not be removed (another user's, a busy mount point).
    pub failed: u64,
}

/// Whose files are the job's: the caller's uid; in a user namespace (the rootless engine's, entered
/// with `podman unshare` so that the files of the runner's subordinate ids can be removed too), every
/// id mapped into it but the overflow id, which stands for every unmapped owner (root's, others').
#[derive(Debug)]
struct Owners {
    ranges: Vec<(u32, u32)>,
    overflow: Option<u32>,
}

impl Owners {
    fn of_caller(uid: u32, uid_map: &str, overflow: Option<u32>) -> Owners {
        let ranges: Vec<(u32, u32)> = uid_map
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
                let (inside, _outside, count) = (f.next()??, f.next()??, f.next()??);
                (count > 0).then(|| (inside as u32, (inside + count - 1).min(u64::from(u32::MAX)) as u32))
            })
            .collect();
        let initial = ranges == [(0, u32::MAX - 1)] || ranges == [(0, u32::MAX)] || ranges.is_empty();
        if initial {
            return Owners {
                ranges: vec![(uid, uid)],
                overflow: None,
            };
        }
        Owners { ranges, overflow }
    }

    fn mine(&self, uid: u32) -> bool {
        Some(uid) != self.overflow && self.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&uid))
    }

    /// Real root (the initial namespace's uid 0), which the cleaner refuses to be.
    fn is_real_root(&self, uid: u32) -> bool {
        uid == 0 && self.overflow.is_none()
    }
}

struct Cleaner {
    owners: Owners,
    keep: Option<PathBuf>,
    removed: u64,
    failed: u64,
}

impl Cleaner {
    fn kept(&self, p: &Path) -> bool {
        self.keep.as_deref().is_some_and(|k| k.starts_with(p))
    }

    /// Remove `p` and everything below it (links are removed, never followed).
    fn remove_tree(&mut self, p: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(p) else { return };
        if meta.is_dir() {
            if self.owners.mine(meta.uid()) && meta.mode() & 0o700 != 0o700 {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode((meta.mode() | 0o700) & 0o7777));
            }
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.filter_map(Result::ok) {
                    self.remove_tree(&e.path());
                }
            }
            self.count(std::fs::remove_dir(p));
        } else {
            self.count(std::fs::remove_file(p));
        }
    }

    fn count(&mut self, r: std::io::Result<()>) {
        match r {
            Ok(()) => self.removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => self.failed += 1,
        }
    }

    /// Empty `dir`, but for what leads to `keep`; with `only_mine`, only entries the user owns
    /// (and, below directories of others, theirs at any depth, on the same file system).
    fn empty(&mut self, dir: &Path, only_mine: bool, depth: usize) {
        let Ok(top) = std::fs::symlink_metadata(dir) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if self.keep.as_deref() == Some(p.as_path()) {
                continue;
            }
            if self.kept(&p) {
                if meta.is_dir() {
                    self.empty(&p, only_mine, depth + 1);
                }
                continue;
            }
            if !only_mine || self.owners.mine(meta.uid()) {
                self.remove_tree(&p);
            } else if meta.is_dir() && meta.dev() == top.dev() && depth < MAX_DEPTH {
                self.empty(&p, true, depth + 1);
            }
        }
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Carry out `plan` as the calling user (never root: refused; root of the runner's own user
/// namespace is the runner's user).
pub fn clean(plan: &Plan) -> Result<Report, String> {
    let uid = rustix::process::getuid().as_raw();
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let owners = Owners::of_caller(uid, &uid_map, overflow);
    if owners.is_real_root(uid) {
        return Err("clean-job-state runs as the runner's user, never as root".into());
    }
    let mut c = Cleaner {
        owners,
        keep: plan.keep.clone(),
        removed: 0,
        failed: 0,
    };
    let mut r = Report::default();
    let t = crate::clock::now_instant();
    if let Some(work) = &plan.work {
        c.empty(work, false, 0);
    }
    r.work_us = micros(t);
    r.work_removed = std::mem::take(&mut c.removed);
    let t = crate::clock::now_instant();
    for dir in &plan.tmp {
        c.empty(dir, true, 0);
    }
    r.tmp_us = micros(t);
    r.tmp_removed = std::mem::take(&mut c.removed);
    let t = crate::clock::now_instant();
    if let Some(home) = &plan.home {
        // Only a home of its own: never `/`, never someone else's directory.
        let own = std::fs::symlink_metadata(home).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if own && home.parent().is_some() {
            c.empty(home, false, 0);
        }
    }
    r.home_us = micros(t);
    r.home_removed = std::mem::take(&mut c.removed);
    r.failed = c.failed;
    Ok(r)
}

/// The subcommand: clean, print the report as one JSON line. The process's exit code.
pub fn run(argv: &[OsString]) -> u8 {
    let plan = match Plan::parse(argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runner-lifecycle clean-job-state: {e}");
            return 2;
        }
    };
    match clean(&plan) {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("runner-lifecycle clean-job-state: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_user_namespace_every_mapped_owner_but_the_overflow_id_is_the_jobs() {
        let ns = Owners::of_caller(
            0,
            "         0       1002          1\n         1    3000000      65536\n",
            Some(65534),
        );
        assert!(ns.mine(0) && ns.mine(1) && ns.mine(1000) && ns.mine(65536));
        assert!(!ns.mine(65534), "the overflow id stands for root's and others' files");
        assert!(!ns.mine(65537));
        assert!(!ns.is_real_root(0));
        let host = Owners::of_caller(1002, "         0          0 4294967295\n", Some(65534));
        assert!(host.mine(1002) && !host.mine(0) && !host.mine(65534) && !host.mine(1003));
        assert!(Owners::of_caller(0, "         0          0 4294967295\n", Some(65534)).is_real_root(0));
    }

    #[test]
    fn plans_round_trip_through_their_arguments() {
        let plan = Plan {
            work: Some("/opt/r/_work".into()),
            keep: Some("/opt/r".into()),
            home: Some("/home/runner".into()),
            tmp: TEMP_DIRS.iter().map(PathBuf::from).collect(),
        };
        let args = plan.args();
        assert_eq!(args[0], CLEAN_JOB_STATE);
        assert_eq!(Plan::parse(&args[1..]), Ok(plan));
        assert!(Plan::parse(&["--work".into()]).is_err());
        assert!(Plan::parse(&["--evil".into(), "x".into()]).is_err());
    }

    #[test]
    fn the_kept_directory_and_its_ancestors_survive() {
        if rustix::process::getuid().is_root() {
            // Root is refused; the attack tests run it as a real runner user.
            assert!(clean(&Plan::default()).is_err());
            return;
        }
        let dir = std::env::temp_dir().join(format!("rl-clean-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let keep = dir.join("home/actions-runner");
        std::fs::create_dir_all(keep.join("bin")).expect("mkdir");
        std::fs::create_dir_all(dir.join("home/.cache/x")).expect("mkdir");
        std::fs::write(dir.join("home/.cache/x/f"), "x").expect("write");
        std::fs::set_permissions(dir.join("home/.cache/x"), std::fs::Permissions::from_mode(0o0)).expect("chmod");
        let r = clean(&Plan {
            home: Some(dir.join("home")),
            keep: Some(keep.clone()),
            ..Plan::default()
        })
        .expect("clean");
        assert!(keep.join("bin").exists() && !dir.join("home/.cache").exists(), "{r:?}");
        assert_eq!((r.home_removed, r.failed), (3, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
