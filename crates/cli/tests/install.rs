//! `runner-lifecycle install` end to end, into a staging root: idempotence, the .env wiring, clear
//! errors, and a unit that `systemd-analyze verify` accepts without a single warning.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_runner-lifecycle");

struct Staging {
    root: PathBuf,
}

impl Staging {
    fn new(name: &str) -> Staging {
        let root = std::env::temp_dir().join(format!("rl-install-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/bash\nrunner:x:1001:1001::/home/runner:/bin/bash\n",
        )
        .expect("passwd");
        let bin = root.join("opt/actions-runner/bin");
        fs::create_dir_all(&bin).expect("mkdir");
        fs::write(bin.join("Runner.Listener"), "").expect("listener");
        fs::write(root.join("opt/actions-runner/.env"), "LANG=C.UTF-8\n").expect("env");
        Staging { root }
    }

    fn install(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "install",
            "--root",
            self.root.to_str().expect("utf8"),
            "--binary",
            "/usr/bin/runner-lifecycle",
        ];
        args.extend_from_slice(extra);
        Command::new(BIN).args(&args).output().expect("run install")
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn installs_then_a_second_run_changes_nothing() {
    let s = Staging::new("idem");
    let first = s.install(&[]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("create  /etc/systemd/system/runner-lifecycle.service"),
        "{}",
        text(&first)
    );
    let env = s.read("opt/actions-runner/.env");
    assert_eq!(
        env,
        "LANG=C.UTF-8\nACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/lib/runner-lifecycle/job-started.sh\n\
         ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/usr/lib/runner-lifecycle/job-completed.sh\n"
    );
    let hook = s.root.join("usr/lib/runner-lifecycle/job-started.sh");
    assert_eq!(fs::metadata(&hook).expect("hook").permissions().mode() & 0o777, 0o755);
    assert!(s
        .read("etc/runner-lifecycle/config.toml")
        .contains("dir = \"/opt/actions-runner\""));
    let unit = s.read("etc/systemd/system/runner-lifecycle.service");
    assert_eq!(unit, include_str!("../../../packaging/runner-lifecycle.service"));
    assert_eq!(
        s.read("etc/systemd/system/runner-lifecycle-imds-fence.service"),
        include_str!("../../../packaging/runner-lifecycle-imds-fence.service")
    );
    assert_eq!(
        s.read("usr/lib/runner-lifecycle/imds-fence"),
        include_str!("../../../packaging/imds-fence")
    );
    // The socket's directory: the job may pass through it to connect, never write into it.
    for (dir, mode) in [("run/runner-lifecycle", 0o755), ("var/lib/runner-lifecycle", 0o750)] {
        let meta = fs::metadata(s.root.join(dir)).expect(dir);
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{dir}");
        if is_root() {
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{dir} is root's");
        }
    }

    let second = s.install(&[]);
    assert!(second.status.success());
    let out = text(&second);
    assert!(out.contains("nothing changed"), "{out}");
    assert!(!out.contains("create") && !out.contains("update "), "{out}");
}

#[test]
fn keeps_the_operators_config_and_repairs_drift() {
    let s = Staging::new("drift");
    assert!(s.install(&[]).status.success());
    fs::write(
        s.root.join("etc/runner-lifecycle/config.toml"),
        "[runner]\ndir = \"/srv/runner\"\n",
    )
    .expect("edit");
    fs::write(
        s.root.join("usr/lib/runner-lifecycle/job-started.sh"),
        "#!/bin/bash\nexit 1\n",
    )
    .expect("tamper");
    let out = s.install(&[]);
    let t = text(&out);
    assert!(t.contains("keep (exists)  /etc/runner-lifecycle/config.toml"), "{t}");
    assert!(t.contains("update  /usr/lib/runner-lifecycle/job-started.sh"), "{t}");
    assert_eq!(
        s.read("etc/runner-lifecycle/config.toml"),
        "[runner]\ndir = \"/srv/runner\"\n"
    );
    assert!(s.read("usr/lib/runner-lifecycle/job-started.sh").contains("exit 0"));
}

#[test]
fn dry_run_writes_nothing() {
    let s = Staging::new("dry");
    let out = s.install(&["--dry-run"]);
    assert!(out.status.success());
    assert!(text(&out).contains("dry run"));
    assert!(!s.root.join("etc/systemd").exists());
    assert_eq!(s.read("opt/actions-runner/.env"), "LANG=C.UTF-8\n");
}

#[test]
fn clear_errors_with_the_config_exit_code() {
    let s = Staging::new("errors");
    let out = s.install(&["--runner-dir", "/nowhere"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("/nowhere has no bin/Runner.Listener"),
        "{}",
        text(&out)
    );
    let out = s.install(&["--user", "ghost"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("user 'ghost' does not exist"), "{}", text(&out));
    fs::write(s.root.join("opt/actions-runner/.env"), "not a pair\n").expect("env");
    let out = s.install(&[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains(".env:1: not a KEY=VALUE line"), "{}", text(&out));
}

#[test]
fn no_fence_imds_removes_an_installed_fence_and_the_units_reference_to_it() {
    let s = Staging::new("nofence");
    assert!(s.install(&[]).status.success());
    assert!(s
        .read("etc/systemd/system/runner-lifecycle.service")
        .contains("imds-fence"));
    let out = s.install(&["--no-fence-imds"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("remove  /etc/systemd/system/runner-lifecycle-imds-fence.service"),
        "{t}"
    );
    assert!(t.contains("remove  /usr/lib/runner-lifecycle/imds-fence"), "{t}");
    assert!(!s.root.join("usr/lib/runner-lifecycle/imds-fence").exists());
    assert!(!s
        .read("etc/systemd/system/runner-lifecycle.service")
        .contains("imds-fence"));
    let again = s.install(&["--no-fence-imds"]);
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));
    // The last of the two flags wins; the fence comes back.
    let back = s.install(&["--no-fence-imds", "--fence-imds"]);
    assert!(
        text(&back).contains("create  /usr/lib/runner-lifecycle/imds-fence"),
        "{}",
        text(&back)
    );
}

#[test]
fn uninstall_takes_away_what_install_wrote_and_keeps_the_configuration() {
    let s = Staging::new("uninstall");
    assert!(s.install(&[]).status.success());
    let env = s.root.join("opt/actions-runner/.env");
    let mut content = s.read("opt/actions-runner/.env");
    content.push_str("# mine\nMY_VAR=1\n");
    fs::write(&env, content).expect("env");
    let out = s.install(&["--uninstall", "--dry-run"]);
    assert!(out.status.success() && text(&out).contains("dry run"), "{}", text(&out));
    assert!(s.root.join("etc/systemd/system/runner-lifecycle.service").exists());
    let out = s.install(&["--uninstall"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for gone in [
        "etc/systemd/system/runner-lifecycle.service",
        "etc/systemd/system/runner-lifecycle-imds-fence.service",
        "usr/lib/runner-lifecycle/imds-fence",
        "usr/lib/runner-lifecycle/job-started.sh",
        "usr/lib/runner-lifecycle/job-completed.sh",
    ] {
        assert!(t.contains(&format!("remove  /{gone}")), "{t}");
        assert!(!s.root.join(gone).exists(), "{gone}");
    }
    assert_eq!(s.read("opt/actions-runner/.env"), "LANG=C.UTF-8\n# mine\nMY_VAR=1\n");
    assert!(
        s.root.join("etc/runner-lifecycle/config.toml").exists(),
        "the operator's config stays"
    );
    let again = s.install(&["--uninstall"]);
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));
}

/// The agent is root without CAP_DAC_OVERRIDE: a runner below a 0700 home would be out of its reach.
#[test]
fn a_runner_dir_the_root_agent_cannot_enter_is_refused_with_the_fix() {
    if !is_root() {
        eprintln!("skipped: needs root to give a directory to another user");
        return;
    }
    let s = Staging::new("search");
    let opt = s.root.join("opt");
    std::os::unix::fs::chown(&opt, Some(1001), Some(1001)).expect("chown");
    fs::set_permissions(&opt, fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = s.install(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("/opt (mode 0700) cannot be entered by the agent") && text(&out).contains("chmod o+x /opt"),
        "{}",
        text(&out)
    );
    fs::set_permissions(&opt, fs::Permissions::from_mode(0o711)).expect("chmod");
    assert!(s.install(&[]).status.success());
}

#[test]
fn user_names_that_cannot_go_into_a_unit_are_refused() {
    let s = Staging::new("badname");
    let out = s.install(&["--user", "run ner"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("not a portable user name"), "{}", text(&out));
}

/// Debian's systemd package provides systemd-analyze; scripts/test installs it where it is missing.
#[test]
fn systemd_analyze_verify_accepts_the_unit_without_warnings() {
    let dir = std::env::temp_dir().join(format!("rl-verify-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("mkdir");
    let unit = dir.join("runner-lifecycle.service");
    // The unit must name an executable that exists, or verify complains (rightly).
    let out = Command::new(BIN)
        .args([
            "install",
            "--print-unit",
            "--binary",
            BIN,
            "--runner-dir",
            dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("render");
    fs::write(&unit, &out.stdout).expect("write unit");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed");
    let t = text(&verify);
    assert!(
        verify.status.success() && t.trim().is_empty(),
        "systemd-analyze verify:\n{t}"
    );
    // The fence unit, next to the agent unit that wants it, with its script where the unit says.
    let s = Staging::new("verify-fence");
    assert!(s.install(&[]).status.success());
    let script = s.root.join("usr/lib/runner-lifecycle/imds-fence");
    let fence = s
        .read("etc/systemd/system/runner-lifecycle-imds-fence.service")
        .replace("/usr/lib/runner-lifecycle/imds-fence", script.to_str().expect("utf8"));
    let fence_unit = dir.join("runner-lifecycle-imds-fence.service");
    fs::write(&fence_unit, fence).expect("write");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .arg(&fence_unit)
        .output()
        .expect("run");
    let t = text(&verify);
    assert!(
        verify.status.success() && t.trim().is_empty(),
        "systemd-analyze verify (with the fence):\n{t}"
    );
    // The check has teeth: a broken directive is reported.
    let broken = String::from_utf8_lossy(&out.stdout).replace("KillMode=process", "KillMode=bogus");
    fs::write(&unit, broken).expect("write");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run");
    assert!(text(&verify).contains("kill mode"), "{}", text(&verify));
    let _ = fs::remove_dir_all(Path::new(&dir));
}

/// The sample configuration the .deb ships is valid for the agent as it is.
#[test]
fn packaged_config_passes_the_agents_config_check() {
    let dir = std::env::temp_dir().join(format!("rl-cfg-{}", std::process::id()));
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::write(dir.join("bin/Runner.Listener"), "#!/bin/sh\n").expect("listener");
    fs::set_permissions(dir.join("bin/Runner.Listener"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/config.toml");
    let out = Command::new(BIN)
        .args(["agent", "--config-check", "--config", config])
        .env("RUNNER_LIFECYCLE_RUNNER_DIR", &dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stop_deadline = \"6h\"  # file"), "{}", text(&out));
    let _ = fs::remove_dir_all(&dir);
}

/// The runner's tree (docs/operations.md, "The runner's tree"): a tree unpacked by the runner's user
/// is reported by `--check` (exit 8, one line per entry), given to root by `install` (the directory
/// sticky and the runner group's, `_work` and `_diag` the runner's, `.env` root's), and then
/// reported clean; drift is reported again.
#[test]
fn the_runner_tree_is_given_to_root_and_check_reports_what_is_not() {
    let s = Staging::new("tree");
    let dir = s.root.join("opt/actions-runner");
    fs::create_dir_all(dir.join("externals/node20/bin")).expect("mkdir");
    fs::write(dir.join("externals/node20/bin/node"), "").expect("node");
    fs::set_permissions(dir.join("externals/node20/bin/node"), fs::Permissions::from_mode(0o775)).expect("chmod");
    fs::write(dir.join("config.sh"), "").expect("config.sh");
    fs::set_permissions(dir.join("config.sh"), fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::write(dir.join(".runner"), "{}").expect(".runner");
    fs::create_dir_all(dir.join("_work/x")).expect("mkdir");
    if is_root() {
        let out = Command::new("chown")
            .args(["-R", "1001:1001"])
            .arg(&dir)
            .output()
            .expect("chown");
        assert!(out.status.success());
    }
    let before = s.install(&["--check", "--runner-mode", "persistent"]);
    assert_eq!(before.status.code(), Some(8), "{}", text(&before));
    let out = text(&before);
    assert!(
        out.contains("/opt/actions-runner/config.sh: ")
            && out.contains("/opt/actions-runner/externals/node20/bin/node: "),
        "{out}"
    );
    assert!(
        !out.contains("/opt/actions-runner/_work/x"),
        "_work is the runner's: {out}"
    );
    assert!(
        fs::metadata(dir.join("config.sh")).expect("meta").permissions().mode() & 0o777 == 0o777,
        "--check changes nothing"
    );

    let first = s.install(&["--runner-mode", "persistent"]);
    assert!(first.status.success(), "{}", text(&first));
    let mode = |rel: &str| fs::symlink_metadata(dir.join(rel)).expect(rel).permissions().mode() & 0o7777;
    let owner = |rel: &str| {
        let m = fs::symlink_metadata(dir.join(rel)).expect(rel);
        (m.uid(), m.gid())
    };
    assert_eq!(fs::metadata(&dir).expect("dir").permissions().mode() & 0o7777, 0o1770);
    assert_eq!(mode("config.sh"), 0o755);
    assert_eq!(mode("externals/node20/bin/node"), 0o755);
    assert_eq!(mode("_work"), 0o750);
    assert_eq!(mode(".env"), 0o644);
    assert_eq!(mode(".runner"), 0o640);
    if is_root() {
        assert_eq!(owner(""), (0, 1001), "root's, the runner's group");
        for rel in [
            "bin",
            "bin/Runner.Listener",
            "externals/node20/bin/node",
            "config.sh",
            ".env",
        ] {
            assert_eq!(owner(rel), (0, 0), "{rel}");
        }
        assert_eq!(
            owner(".runner"),
            (0, 1001),
            "the registration: root's, readable by the listener"
        );
        assert_eq!(owner("_work"), (1001, 1001));
        assert_eq!(owner("_work/x"), (1001, 1001), "what is in _work stays the runner's");
    }
    let clean = s.install(&["--check", "--runner-mode", "persistent"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(text(&clean).contains("everything is in place"));

    fs::set_permissions(dir.join("bin"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let drift = s.install(&["--check", "--runner-mode", "persistent"]);
    assert_eq!(drift.status.code(), Some(8), "{}", text(&drift));
    assert!(
        text(&drift).contains("/opt/actions-runner/bin: writable by its group or others (mode 0777)"),
        "{}",
        text(&drift)
    );
}

/// `--containers` (issue 20): docker-group only with one instance per job or the operator's word,
/// never a runner user in the docker group under another mode, and rootless only with its tools; the
/// rootless install gives the user a subordinate range, root's containers.conf and the unit's mode.
#[test]
fn containers_modes_refuse_what_makes_jobs_root_and_set_up_rootless() {
    let s = Staging::new("containers");
    let out = s.install(&["--containers", "docker-group"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("--one-job-per-instance"), "{}", text(&out));
    let out = s.install(&["--containers", "docker-group", "--i-understand-jobs-are-root"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("not in the docker group"), "{}", text(&out));
    fs::write(s.root.join("etc/group"), "docker:x:998:runner\n").expect("group");
    let out = s.install(&["--containers", "none"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("is in the docker group"), "{}", text(&out));
    let out = s.install(&["--containers", "docker-group", "--one-job-per-instance"]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = s.read("etc/systemd/system/runner-lifecycle.service");
    assert!(unit.contains("RUNNER_LIFECYCLE_CONTAINERS_MODE=docker-group"), "{unit}");
    assert!(
        unit.contains("RUNNER_LIFECYCLE_RUNNER_ONE_JOB_PER_INSTANCE=true"),
        "{unit}"
    );
    assert!(unit.contains("NoNewPrivileges=yes"), "{unit}");

    fs::write(s.root.join("etc/group"), "runner:x:1001:\n").expect("group");
    let out = s.install(&["--containers", "rootless"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("needs /usr/bin/podman"), "{}", text(&out));
    for tool in ["usr/bin/podman", "usr/bin/newuidmap", "usr/bin/newgidmap"] {
        fs::create_dir_all(s.root.join("usr/bin")).expect("mkdir");
        fs::write(s.root.join(tool), "").expect("tool");
    }
    fs::write(s.root.join("etc/subuid"), "alice:100000:65536\n").expect("subuid");
    // Unset: rootless, because Podman is there now.
    let out = s.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("containers: rootless"), "{}", text(&out));
    assert!(s.read("etc/subuid").ends_with("runner:165536:65536\n"));
    assert!(s.read("etc/subgid").ends_with("runner:100000:65536\n"));
    assert!(s
        .read("etc/runner-lifecycle/containers.conf")
        .contains("cgroup_manager = \"cgroupfs\""));
    let unit = s.read("etc/systemd/system/runner-lifecycle.service");
    assert!(unit.contains("RUNNER_LIFECYCLE_CONTAINERS_MODE=rootless"), "{unit}");
    assert!(unit.contains("NoNewPrivileges=no"), "{unit}");
    let again = s.install(&[]);
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));
    assert!(s.install(&["--uninstall"]).status.success());
    assert!(!s.root.join("etc/runner-lifecycle/containers.conf").exists());
    assert!(!s.root.join("etc/runner-lifecycle/storage.conf").exists());
}
