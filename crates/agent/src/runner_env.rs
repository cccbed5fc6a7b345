//! Who the listener runs as, and with what environment.
//!
//! On a persistent runner the job is pull-request code running as the runner's user: whatever the
//! listener's environment holds, the job can read (`/proc/<listener>/environ`, or simply its own
//! inherited environment). So the listener never inherits the agent's environment (AWS keys, the
//! agent's own settings, systemd's notification socket): it gets a short allowlist of the agent's
//! variables, the identity variables of the runner user, the runner's own `.env` file (what
//! actions/runner's listener loads itself, src/Runner.Listener/Program.cs `LoadAndSetEnv`), and the
//! few variables the agent sets for the job hooks.
//!
//! The runner user is looked up in `/etc/passwd` and `/etc/group` (no NSS: a runner user is a
//! local account, created by the installer).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The agent's variables a listener may inherit. `LC_*` too (see [`inherited`]). Identity variables
/// (`HOME`, `USER`, `LOGNAME`, `SHELL`) come from the runner user's passwd entry when `runner.user`
/// is set. Anything else the runner needs (proxies, `JAVA_HOME`, ...) belongs in its `.env`, where
/// upstream's `env.sh` puts it at configuration time.
pub const INHERITED: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME", "SHELL"];

/// The largest `.env` file read (upstream's is a dozen lines).
pub const MAX_ENV_FILE: u64 = 256 * 1024;

/// Whether the agent's variable `name` is passed to the listener.
pub fn inherited(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    INHERITED.iter().any(|n| n.as_bytes() == bytes) || (bytes.starts_with(b"LC_") && bytes.len() > 3)
}

/// A local account, as `/etc/passwd` and `/etc/group` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group`), without the primary group.
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// Find `spec` (a name, or a numeric uid) in the text of `/etc/passwd`, with its supplementary
/// groups from the text of `/etc/group`.
pub fn parse_user(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let by_uid: Option<u32> = spec.parse().ok();
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let matches = match by_uid {
            Some(want) => uid == want,
            None => f[0] == spec,
        };
        matches.then(|| (f[0].to_string(), uid, f[3].parse::<u32>().ok(), f[5], f[6]))
    });
    let Some((name, uid, Some(gid), home, shell)) = entry else {
        return Err(format!("`{spec}` is not a user in /etc/passwd"));
    };
    let mut groups: Vec<u32> = group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let gid: u32 = f[2].parse().ok()?;
            f[3].split(',').any(|m| m.trim() == name).then_some(gid)
        })
        .filter(|g| *g != gid)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(User {
        name,
        uid,
        gid,
        groups,
        home: PathBuf::from(home),
        shell: shell.to_string(),
    })
}

/// Look `spec` up in this host's `/etc/passwd` and `/etc/group`.
pub fn lookup_user(spec: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    parse_user(spec, &passwd, &group)
}

/// The `KEY=VALUE` lines of a runner's `.env`, split at the first `=` as upstream's listener does
/// (src/Runner.Listener/Program.cs `LoadAndSetEnv`). Empty lines, comments (`#`), lines without a
/// `=` or with an empty key, and keys or values that cannot be in an environment (NUL) are skipped;
/// `KEY=` (no value) unsets `KEY`, as upstream does. A trailing `\r` is dropped.
pub fn parse_env_file(text: &[u8]) -> Vec<(OsString, Option<OsString>)> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.first() == Some(&b'#') || line.contains(&0) {
                return None;
            }
            let eq = line.iter().position(|b| *b == b'=')?;
            let (key, value) = (&line[..eq], &line[eq + 1..]);
            if key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace()) {
                return None;
            }
            let value = (!value.is_empty()).then(|| OsStr::from_bytes(value).to_os_string());
            Some((OsStr::from_bytes(key).to_os_string(), value))
        })
        .collect()
}

/// Read the runner's `.env` at `path` for a listener running as `runner` (`None`: as the agent's
/// own user, who is then the job's user too: nothing to protect). The agent runs as root and passes
/// what it reads into the listener's environment, which every job inherits: so the file is read only
/// if the runner's user (so the job) can change neither it nor any directory on the way to it
/// ([`crate::tree::check_path`]): a job that could would add an interpreter hook (`LD_PRELOAD`,
/// `NODE_OPTIONS`) or a job hook to the *next* listener's environment (issue 16). It must also be a
/// regular file the runner's user may read (the listener reads it itself too), opened without
/// following links and without blocking (a FIFO cannot stop the agent's only thread), and checked
/// again on the opened descriptor. `Ok(None)` when there is no file.
pub fn read_env_file(path: &Path, runner: Option<&User>) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if !before.file_type().is_file() {
        return Err(format!("{} is not a regular file; not read", path.display()));
    }
    if let Some(user) = runner {
        crate::tree::check_path(path, user).map_err(|e| {
            format!("{e}; not read (the job could write the listener's environment: run `runner-lifecycle install`)")
        })?;
        let mode = before.mode();
        let group_reads = mode & 0o040 != 0 && (before.gid() == user.gid || user.groups.contains(&before.gid()));
        if mode & 0o004 == 0 && !group_reads {
            return Err(format!(
                "{} (mode {:04o}, uid {}, gid {}) is not readable by the runner's user, whose listener reads it too; not read",
                path.display(),
                mode & 0o7777,
                before.uid(),
                before.gid()
            ));
        }
    }
    // Never blocking, never through a link: a FIFO or a link swapped in after the check above must
    // neither stop the agent's only thread nor be followed (issue 16).
    let file = crate::perflog::open_untrusted(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let after = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The file opened must be the one checked (no swap in between), and still not the job's.
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(format!("{} changed while it was read; not read", path.display()));
    }
    if let Some(why) = runner.and_then(|user| crate::tree::writable_by(&after, user)) {
        return Err(format!("{} is {why}; not read", path.display()));
    }
    let mut text = Vec::new();
    file.take(MAX_ENV_FILE)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Some(text))
}

/// The listener's whole environment: the allowlisted part of `agent_env`, the runner user's
/// identity (when `user` is set), the `.env` lines, then `extra` (the agent's variables for the
/// hooks), later sources overriding earlier ones.
pub fn build(
    agent_env: impl IntoIterator<Item = (OsString, OsString)>,
    user: Option<&User>,
    dot_env: &[(OsString, Option<OsString>)],
    extra: &[(&str, OsString)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = agent_env.into_iter().filter(|(k, _)| inherited(k)).collect();
    if let Some(u) = user {
        env.insert("HOME".into(), u.home.clone().into_os_string());
        env.insert("USER".into(), u.name.clone().into());
        env.insert("LOGNAME".into(), u.name.clone().into());
        env.insert("SHELL".into(), u.shell.clone().into());
    }
    for (k, v) in dot_env {
        match v {
            Some(v) => env.insert(k.clone(), v.clone()),
            None => env.remove(k),
        };
    }
    for (k, v) in extra {
        env.insert((*k).into(), v.clone());
    }
    env
}

/// The hidden subcommand of the binary that starts the listener as the runner user
/// (`runner-lifecycle exec-as UID GID GROUPS PROGRAM ARGS...`, GROUPS comma-separated or `-`).
///
/// Why a launcher: std's `CommandExt::uid`/`gid` are stable but `groups` is not (feature
/// `setgroups`), and setting credentials between fork and exec needs `unsafe` `pre_exec`, which the
/// workspace forbids. So the agent spawns its own binary (`/proc/self/exe`, valid even after a
/// package upgrade replaced the file) with this subcommand; it sets the supplementary groups, the
/// gid and the uid of its single thread (so of the process), then execs the listener in place:
/// same pid, same process group, same environment.
pub const EXEC_AS: &str = "exec-as";

/// The launcher's optional first argument: `--cgroup=DIR` moves it into that cgroup v2 first.
pub const CGROUP_FLAG: &str = "--cgroup=";

/// The launcher's argv (after the binary) for `user` running `program args`.
pub fn exec_as_args(user: &User, program: &Path, args: &[String]) -> Vec<OsString> {
    // The primary group is in the list too, as initgroups(3) does for a login.
    let groups = std::iter::once(user.gid)
        .chain(user.groups.iter().copied())
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut out: Vec<OsString> = vec![
        EXEC_AS.into(),
        user.uid.to_string().into(),
        user.gid.to_string().into(),
        groups.into(),
        program.as_os_str().to_os_string(),
    ];
    out.extend(args.iter().map(OsString::from));
    out
}

/// Run the launcher: set groups, gid, uid, then exec. Returns only on failure. Must run in a
/// single-threaded process (it does: the binary's `main` calls it before starting any runtime).
pub fn exec_as(argv: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    // `--cgroup=DIR` first (issue 16): join the listener's cgroup while still root, before the
    // listener exists, so nothing it starts is ever outside it.
    let mut argv = argv;
    if let Some(dir) = argv
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.strip_prefix(CGROUP_FLAG))
    {
        if let Err(e) = std::fs::write(Path::new(dir).join("cgroup.procs"), "0") {
            return std::io::Error::new(e.kind(), format!("cannot join the cgroup {dir}: {e}"));
        }
        argv = &argv[1..];
    }
    let num = |s: Option<&OsString>| s.and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok());
    let (Some(uid), Some(gid), Some(groups), Some(program)) =
        (num(argv.first()), num(argv.get(1)), argv.get(2), argv.get(3))
    else {
        return bad("usage: exec-as [--cgroup=DIR] UID GID GROUPS|- PROGRAM [ARGS...]");
    };
    let groups: Option<Vec<rustix::process::Gid>> = match groups.to_str() {
        Some("-") => Some(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|g| g.parse::<u32>().ok().map(rustix::process::Gid::from_raw))
            .collect(),
        None => None,
    };
    let Some(groups) = groups else {
        return bad("exec-as: GROUPS must be comma-separated numbers or -");
    };
    // Groups first, then the gid, then the uid: after the uid changes, the others cannot be.
    let set = || -> rustix::io::Result<()> {
        rustix::thread::set_thread_groups(&groups)?;
        let gid = rustix::process::Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        let uid = rustix::process::Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid)
    };
    if let Err(e) = set() {
        return std::io::Error::from(e);
    }
    std::process::Command::new(program).args(&argv[4..]).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        runner:x:1001:1001:GitHub runner:/home/runner:/bin/bash\n\
        broken:x:notanumber:1:::\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str =
        "root:x:0:\ndocker:x:999:runner,alice\nrunner:x:1001:\nadm:x:4:syslog, runner\nother:x:5:runners\n";

    #[test]
    fn users_resolve_by_name_or_uid_with_their_groups() {
        let u = parse_user("runner", PASSWD, GROUP).expect("runner");
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1001, 1001, vec![4, 999]));
        assert_eq!((u.home.to_str(), u.shell.as_str()), (Some("/home/runner"), "/bin/bash"));
        assert_eq!(parse_user("1001", PASSWD, GROUP).expect("by uid"), u);
        assert_eq!(parse_user("65534", PASSWD, GROUP).expect("nobody").name, "nobody");
        assert!(parse_user("broken", PASSWD, GROUP).is_err());
        assert!(parse_user("ghost", PASSWD, GROUP).is_err());
        assert!(parse_user("4242", PASSWD, GROUP).is_err());
    }

    #[test]
    fn env_files_parse_like_upstream_and_skip_junk() {
        let text = b"# comment\nA=1\n\nB=x=y\r\n=nokey\nnoequals\nC=\nBAD KEY=1\nD=has\x00nul\nE= spaced \n";
        let parsed = parse_env_file(text);
        let shown: Vec<(String, Option<String>)> = parsed
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into(),
                    v.as_ref().map(|v| v.to_string_lossy().into()),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("x=y".into())),
                ("C".into(), None),
                ("E".into(), Some(" spaced ".into())),
            ]
        );
    }

    #[test]
    fn the_listener_never_gets_the_agents_secrets() {
        let agent: Vec<(OsString, OsString)> = [
            ("PATH", "/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("LC_", "odd"),
            ("TZ", "UTC"),
            ("HOME", "/root"),
            ("AWS_SECRET_ACCESS_KEY", "canary"),
            ("AWS_ACCESS_KEY_ID", "canary"),
            ("RUNNER_LIFECYCLE_X", "canary"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("GITHUB_TOKEN", "canary"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let user = parse_user("runner", PASSWD, GROUP).expect("runner");
        let dot = parse_env_file(
            b"ACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/lib/rl/started.sh\nLANG=\nhttps_proxy=http://proxy:3128\n",
        );
        let env = build(
            agent,
            Some(&user),
            &dot,
            &[(
                "RUNNER_LIFECYCLE_AGENT_SOCKET",
                "/run/runner-lifecycle/agent.sock".into(),
            )],
        );
        let get = |k: &str| env.get(OsStr::new(k)).map(|v| v.to_string_lossy().into_owned());
        assert!(!env.values().any(|v| v == "canary"), "no secret of the agent: {env:?}");
        for gone in [
            "AWS_SECRET_ACCESS_KEY",
            "RUNNER_LIFECYCLE_X",
            "NOTIFY_SOCKET",
            "LD_PRELOAD",
            "LC_",
        ] {
            assert_eq!(get(gone), None, "{gone}");
        }
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin:/bin"));
        assert_eq!(get("LC_ALL").as_deref(), Some("C"));
        assert_eq!(
            get("HOME").as_deref(),
            Some("/home/runner"),
            "from passwd, not the agent's"
        );
        assert_eq!(get("USER").as_deref(), Some("runner"));
        assert_eq!(get("LOGNAME").as_deref(), Some("runner"));
        assert_eq!(get("SHELL").as_deref(), Some("/bin/bash"));
        assert_eq!(get("LANG"), None, "`LANG=` in .env unsets it");
        assert_eq!(get("https_proxy").as_deref(), Some("http://proxy:3128"));
        assert_eq!(
            get("ACTIONS_RUNNER_HOOK_JOB_STARTED").as_deref(),
            Some("/usr/lib/rl/started.sh")
        );
        assert_eq!(
            get("RUNNER_LIFECYCLE_AGENT_SOCKET").as_deref(),
            Some("/run/runner-lifecycle/agent.sock")
        );
        // Without runner.user the identity variables are the agent's own.
        let env = build([(OsString::from("HOME"), OsString::from("/root"))], None, &[], &[]);
        assert_eq!(env.get(OsStr::new("HOME")), Some(&OsString::from("/root")));
    }

    #[test]
    fn the_launcher_gets_uid_gid_and_every_group() {
        let user = parse_user("runner", PASSWD, GROUP).expect("runner");
        let args = exec_as_args(
            &user,
            Path::new("/opt/r/bin/Runner.Listener"),
            &["run".into(), "--once".into()],
        );
        let shown: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            shown,
            [
                "exec-as",
                "1001",
                "1001",
                "1001,4,999",
                "/opt/r/bin/Runner.Listener",
                "run",
                "--once"
            ]
        );
        let bad = exec_as(&["x".into()]);
        assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
        let bad = exec_as(&["1".into(), "1".into(), "a,b".into(), "/bin/true".into()]);
        assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn env_files_the_runner_user_could_change_or_not_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
        let dir = std::env::temp_dir().join(format!("rl-envfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        // The test's user stands for root; the runner is another uid, not in the file's group.
        let gid = rustix::process::getegid().as_raw();
        let runner = User {
            name: "runner".into(),
            uid: rustix::process::geteuid().as_raw() + 4242,
            gid: gid + 4242,
            groups: vec![],
            home: "/nonexistent".into(),
            shell: "/bin/sh".into(),
        };
        let runner = Some(&runner);
        assert_eq!(read_env_file(&dir.join("absent"), runner), Ok(None));
        let file = dir.join(".env");
        std::fs::write(&file, "A=1\n").expect("write");
        chmod(&file, 0o644);
        assert_eq!(read_env_file(&file, runner), Ok(Some(b"A=1\n".to_vec())));
        // Private to its owner: the listener could not read it either.
        chmod(&file, 0o600);
        assert!(read_env_file(&file, runner)
            .expect_err("private")
            .contains("not readable"));
        assert!(read_env_file(&file, None).is_ok(), "the agent's own user: read");
        // Writable by the runner (here: by everyone): the job could add LD_PRELOAD to it.
        chmod(&file, 0o666);
        assert!(read_env_file(&file, runner)
            .expect_err("writable")
            .contains("writable by everyone"));
        chmod(&file, 0o644);
        // In a directory the runner could write (not sticky): the job could replace the file.
        chmod(&dir, 0o777);
        assert!(read_env_file(&file, runner)
            .expect_err("open dir")
            .contains("writable by everyone"));
        chmod(&dir, 0o1777);
        assert!(
            read_env_file(&file, runner).is_ok(),
            "sticky: the file is not the runner's"
        );
        chmod(&dir, 0o755);
        // A symlink is never followed; a FIFO never blocks.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(read_env_file(&link, runner)
            .expect_err("symlink")
            .contains("not a regular file"));
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        assert!(read_env_file(&fifo, None).is_err());
        assert!(read_env_file(&fifo, runner).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
