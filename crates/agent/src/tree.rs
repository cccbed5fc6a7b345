//! The runner's tree as the root agent trusts it (issue 16, item 1).
//!
//! The agent runs as root and executes `bin/Runner.Listener` and reads the runner's `.env` before
//! every listener. Whatever the runner's user can change there, the job can change: it runs as that
//! user. So before it executes or reads anything of the runner's, the agent checks that neither the
//! file nor any directory on the way to it can be changed by that user: not owned by it, not
//! writable by its groups or by everyone; a directory it can write is accepted only when sticky
//! (like `/tmp`) and the entry in it is not the runner user's (it can then neither remove nor
//! rename that entry); symlinks are followed and the place they lead to is checked the same way.
//!
//! `runner-lifecycle install` lays the tree out so (docs/operations.md, "The runner's tree"): the
//! runner directory root-owned, sticky and writable by the runner's group (the listener creates and
//! deletes its registration files there at run time in JIT and one-job modes), everything in it
//! root's, except `_work` and `_diag`.
//!
//! In that sticky directory the runner's user can still create *new* names. The listener reads a
//! few optional ones at start (actions/runner `HostContext.GetConfigFile`: migrated settings and
//! credentials, which it prefers over `.runner`, a credential store, certificates, options, setup
//! info); [`clear_runtime_names`] removes them before every listener, and in JIT mode also the last
//! registration's files, so nothing the last job left there reaches the next listener.

use crate::runner_env::User;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Files the listener writes in the runner directory for one registration (`config.sh`, or a JIT
/// listener from its config: actions/runner `Runner.cs`), and deletes once an ephemeral
/// registration has run its job.
pub const REGISTRATION: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

/// Optional files the listener reads from the runner directory when present (actions/runner
/// `HostContext.GetConfigFile`). The migrated pair is preferred over `.runner`/`.credentials`.
pub const OPTIONAL_SETTINGS: [&str; 7] = [
    ".runner_migrated",
    ".credentials_migrated",
    ".credential_store",
    ".certificates",
    ".options",
    ".setup_info",
    ".service",
];

/// How deep symlinks may nest on one path (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// Why the agent does not trust a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Unsafe {
    /// The path, as found on the way (after following links).
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// Whether `user` can change the inode `meta` describes; the reason if so.
pub fn writable_by(meta: &std::fs::Metadata, user: &User) -> Option<String> {
    let mode = meta.mode();
    if meta.uid() == user.uid {
        return Some(format!("owned by the runner's user (uid {})", user.uid));
    }
    if mode & 0o020 != 0 && (meta.gid() == user.gid || user.groups.contains(&meta.gid())) {
        return Some(format!(
            "writable by group {}, a group of the runner's user (mode {:04o})",
            meta.gid(),
            mode & 0o7777
        ));
    }
    if mode & 0o002 != 0 {
        return Some(format!("writable by everyone (mode {:04o})", mode & 0o7777));
    }
    None
}

fn is_sticky(meta: &std::fs::Metadata) -> bool {
    meta.mode() & 0o1000 != 0
}

fn inspect(path: &Path) -> Result<std::fs::Metadata, Unsafe> {
    std::fs::symlink_metadata(path).map_err(|e| Unsafe {
        path: path.to_path_buf(),
        problem: format!("cannot be inspected ({e})"),
    })
}

/// Check that `user` can change neither `path` nor anything on the way to it (module docs). `path`
/// must be absolute. A directory at the end may be writable by `user` if it is sticky (what is in
/// it is then checked entry by entry by the caller). Returns the path with every link resolved.
pub fn check_path(path: &Path, user: &User) -> Result<PathBuf, Unsafe> {
    if !path.is_absolute() {
        return Err(Unsafe {
            path: path.to_path_buf(),
            problem: "is not an absolute path".into(),
        });
    }
    let root = inspect(Path::new("/"))?;
    if let Some(why) = writable_by(&root, user) {
        return Err(Unsafe {
            path: "/".into(),
            problem: why,
        });
    }
    let mut cur = PathBuf::from("/");
    let mut cur_meta = root;
    let mut todo: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            cur.pop();
            cur_meta = inspect(&cur)?;
            continue;
        }
        let child = cur.join(&part);
        let meta = inspect(&child)?;
        // Who can write the directory can replace the entry, unless the directory is sticky and
        // the entry is not theirs.
        if let Some(why) = writable_by(&cur_meta, user) {
            if !is_sticky(&cur_meta) || meta.uid() == user.uid {
                return Err(Unsafe {
                    path: child,
                    problem: format!(
                        "its directory {} is {why}, so the runner's user can replace it",
                        cur.display()
                    ),
                });
            }
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Unsafe {
                    path: child,
                    problem: "too many levels of symbolic links".into(),
                });
            }
            let target = std::fs::read_link(&child).map_err(|e| Unsafe {
                path: child.clone(),
                problem: format!("cannot read the link ({e})"),
            })?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
                cur_meta = inspect(&cur)?;
            }
            let mut rest = components(&target);
            rest.extend(todo);
            todo = rest;
            continue;
        }
        let last = todo.is_empty();
        if let Some(why) = writable_by(&meta, user) {
            if !(meta.is_dir() && is_sticky(&meta)) {
                return Err(Unsafe {
                    path: child,
                    problem: format!("is {why}"),
                });
            }
        }
        if !last && !meta.is_dir() {
            return Err(Unsafe {
                path: child,
                problem: "is not a directory".into(),
            });
        }
        cur = child;
        cur_meta = meta;
    }
    Ok(cur)
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Everything the agent executes or reads of the runner's before a listener starts: the runner
/// directory, the listener program, and `externals` (the runner's node, which the worker runs) when
/// present. `Err` names the first path the runner's user could change.
pub fn check_runner(runner_dir: &Path, program: &Path, user: &User) -> Result<(), Unsafe> {
    check_path(runner_dir, user)?;
    let real = check_path(program, user)?;
    let meta = inspect(&real)?;
    if !meta.is_file() {
        return Err(Unsafe {
            path: real,
            problem: "is not a regular file".into(),
        });
    }
    let externals = runner_dir.join("externals");
    if std::fs::symlink_metadata(&externals).is_ok() {
        check_path(&externals, user)?;
    }
    Ok(())
}

/// The registration files of a persistent runner that its user could change (so the job could:
/// point the next listener elsewhere). `install --runner-mode persistent` gives them to root,
/// readable by the runner's group. Missing files are not reported.
pub fn writable_registration(runner_dir: &Path, user: &User) -> Vec<Unsafe> {
    REGISTRATION
        .iter()
        .filter_map(|name| {
            let path = runner_dir.join(name);
            let meta = std::fs::symlink_metadata(&path).ok()?;
            writable_by(&meta, user).map(|why| Unsafe {
                path,
                problem: format!("is {why}"),
            })
        })
        .collect()
}

/// Before a listener starts: remove what the runner's user left in the runner directory under a
/// name the listener would read as its settings ([`OPTIONAL_SETTINGS`], and with `registration`
/// (JIT mode) the last registration's [`REGISTRATION`] files, which the next listener writes anew).
/// Only entries the runner's user owns are touched, never followed (a link is removed, not what it
/// points to). Returns the names removed, and those that could not be (with why).
pub fn clear_runtime_names(runner_dir: &Path, user: &User, registration: bool) -> (Vec<String>, Vec<String>) {
    let names = OPTIONAL_SETTINGS
        .iter()
        .chain(REGISTRATION.iter().filter(|_| registration));
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    for name in names {
        let path = runner_dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != user.uid {
            continue;
        }
        let result = if meta.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed.push((*name).to_string()),
            Err(e) => failed.push(format!("{name} ({e})")),
        }
    }
    (removed, failed)
}

/// What the agent does to the runner directory right before it starts a listener as `user` (the
/// last job's processes are gone in JIT mode): remove the names the listener would read as settings
/// ([`clear_runtime_names`]), and say so; in persistent mode (`jit` false), warn about registration
/// files the runner's user could change.
pub fn before_listener(runner_dir: &Path, user: &User, jit: bool) {
    if user.uid == rustix::process::geteuid().as_raw() {
        return; // the listener runs as the agent's own user: nothing to keep from it
    }
    let (removed, failed) = clear_runtime_names(runner_dir, user, jit);
    if !removed.is_empty() {
        tracing::info!(
            removed = %lifecycle_escape::escape(&removed.join(" ")),
            "removed files of the runner's user that the next listener would read as its settings"
        );
    }
    if !failed.is_empty() {
        tracing::warn!(
            failed = %lifecycle_escape::escape(&failed.join(", ")),
            "cannot remove files of the runner's user that the next listener would read as its settings"
        );
    }
    if !jit {
        for e in writable_registration(runner_dir, user) {
            tracing::warn!(
                error = %lifecycle_escape::escape(&e.to_string()),
                "the runner's registration can be changed by its user (so by any job); run `runner-lifecycle install --runner-mode persistent`"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rl-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// The test's own user stands for root (the owner the agent trusts); the "runner" is another
    /// uid whose groups are chosen per case.
    fn runner(gid: u32, groups: Vec<u32>) -> User {
        User {
            name: "runner".into(),
            uid: rustix::process::geteuid().as_raw() + 4242,
            gid,
            groups,
            home: "/nonexistent".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn a_tree_the_runner_cannot_change_passes_and_each_weakness_is_named() {
        let base = temp("check");
        let dir = base.join("actions-runner");
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        chmod(&dir, 0o755);
        chmod(&dir.join("bin"), 0o755);
        let program = dir.join("bin/Runner.Listener");
        std::fs::write(&program, "#!/bin/sh\n").expect("write");
        chmod(&program, 0o755);
        let me_gid = rustix::process::getegid().as_raw();
        let user = runner(me_gid + 4242, vec![]);
        assert_eq!(check_runner(&dir, &program, &user), Ok(()));

        // A group-writable listener, when the group is the runner's: refused, named.
        chmod(&program, 0o775);
        let in_group = runner(me_gid, vec![]);
        let e = check_runner(&dir, &program, &in_group).expect_err("group-writable");
        assert_eq!(e.path, program);
        assert!(e.problem.contains("writable by group"), "{e}");
        assert_eq!(check_runner(&dir, &program, &user), Ok(()), "not the runner's group");
        chmod(&program, 0o755);

        // A writable bin/: the listener could be replaced.
        chmod(&dir.join("bin"), 0o777);
        let e = check_runner(&dir, &program, &user).expect_err("bin writable");
        assert_eq!(e.path, dir.join("bin"));
        assert!(e.problem.contains("writable by everyone"), "{e}");
        // The same through a link: bin/ -> a writable directory.
        let e = check_path(&dir.join("bin/../bin/Runner.Listener"), &user).expect_err("via ..");
        assert!(e.problem.contains("writable by everyone"), "{e}");
        // Sticky: entries that are not the runner's stay put.
        chmod(&dir.join("bin"), 0o1777);
        assert_eq!(check_runner(&dir, &program, &user), Ok(()));
        chmod(&dir.join("bin"), 0o755);

        // A link to a place the runner can write is followed and refused there.
        let open = base.join("open");
        std::fs::create_dir_all(&open).expect("mkdir");
        chmod(&open, 0o777);
        std::fs::write(open.join("Runner.Listener"), "#!/bin/sh\n").expect("write");
        let linked = dir.join("bin/linked");
        std::os::unix::fs::symlink(open.join("Runner.Listener"), &linked).expect("symlink");
        let e = check_runner(&dir, &linked, &user).expect_err("link to a writable place");
        assert_eq!(e.path, open, "{e}");
        // A link to a safe place is fine.
        let safe = dir.join("bin/safe");
        std::os::unix::fs::symlink("Runner.Listener", &safe).expect("symlink");
        assert_eq!(check_runner(&dir, &safe, &user), Ok(()));
        // A directory, not a program.
        assert!(check_runner(&dir, &dir.join("bin"), &user).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn writable_by_names_owner_group_and_others() {
        let base = temp("writable");
        let f = base.join("f");
        std::fs::write(&f, "").expect("write");
        let meta = |p: &Path| std::fs::symlink_metadata(p).expect("meta");
        let me = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let mut owner = runner(gid + 1, vec![]);
        owner.uid = me;
        chmod(&f, 0o644);
        assert!(writable_by(&meta(&f), &owner).is_some_and(|w| w.contains("owned")));
        let other = runner(gid + 1, vec![gid]);
        assert_eq!(writable_by(&meta(&f), &other), None);
        chmod(&f, 0o664);
        assert!(writable_by(&meta(&f), &other).is_some_and(|w| w.contains("group")));
        chmod(&f, 0o646);
        assert!(writable_by(&meta(&f), &runner(gid + 1, vec![])).is_some_and(|w| w.contains("everyone")));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_runner_users_settings_files_are_cleared_and_nothing_else() {
        let dir = temp("clear");
        let mut user = runner(0, vec![]);
        user.uid = rustix::process::geteuid().as_raw(); // the files the test makes are "the runner's"
        for name in [
            ".runner_migrated",
            ".credentials_migrated",
            ".runner",
            ".credentials",
            "_work.txt",
        ] {
            std::fs::write(dir.join(name), "x").expect("write");
        }
        let target = dir.join("target");
        std::fs::write(&target, "keep").expect("write");
        std::os::unix::fs::symlink(&target, dir.join(".options")).expect("symlink");
        let (removed, failed) = clear_runtime_names(&dir, &user, false);
        assert_eq!(removed, [".runner_migrated", ".credentials_migrated", ".options"]);
        assert!(failed.is_empty(), "{failed:?}");
        assert!(dir.join(".runner").exists(), "a persistent registration stays");
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "keep",
            "a link is removed, not followed"
        );
        assert!(dir.join("_work.txt").exists());
        let (removed, _) = clear_runtime_names(&dir, &user, true);
        assert_eq!(removed, [".runner", ".credentials"], "JIT: the last registration goes");
        // Files that are not the runner user's are never touched.
        std::fs::write(dir.join(".setup_info"), "x").expect("write");
        let other = runner(0, vec![]);
        assert_eq!(clear_runtime_names(&dir, &other, true), (vec![], vec![]));
        assert!(dir.join(".setup_info").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
