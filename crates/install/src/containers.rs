//! `install --containers`: how jobs get a container engine (docs/operations.md, "Container jobs").
//!
//! - `rootless` (the default when Podman is installed): the agent runs a rootless Podman engine per
//!   listener as the runner's user (crates/agent/src/engine.rs). Install checks for `podman`,
//!   `newuidmap` and `newgidmap`, gives the runner's user a subordinate id range when it has none
//!   (`/etc/subuid`, `/etc/subgid`), and writes root's `containers.conf` for the engine.
//! - `docker-group`: the runner's user is in the `docker` group, so every job is root on the host.
//!   Refused unless the host runs one job per instance, or the operator says
//!   `--i-understand-jobs-are-root`.
//! - `none`: no engine.
//!
//! In every mode but `docker-group`, a runner user in the `docker` group is refused: that membership
//! is root by another name and voids every fence between jobs.

use std::path::Path;

/// The modes, as the flag and the agent's `containers.mode` spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containers {
    /// No engine.
    None,
    /// A rootless Podman engine per listener.
    Rootless,
    /// The runner's user in the `docker` group.
    DockerGroup,
}

impl Containers {
    /// The words, as `--containers` and `containers.mode` take them.
    pub const NAMES: [&'static str; 3] = ["none", "rootless", "docker-group"];

    /// The mode a word names.
    pub fn parse(word: &str) -> Option<Containers> {
        match word {
            "none" => Some(Containers::None),
            "rootless" => Some(Containers::Rootless),
            "docker-group" => Some(Containers::DockerGroup),
            _ => None,
        }
    }

    /// The word for the unit's `RUNNER_LIFECYCLE_CONTAINERS_MODE`.
    pub fn word(self) -> &'static str {
        match self {
            Containers::None => "none",
            Containers::Rootless => "rootless",
            Containers::DockerGroup => "docker-group",
        }
    }
}

/// The programs the rootless engine needs, below the install root.
pub const ROOTLESS_TOOLS: [&str; 3] = ["usr/bin/podman", "usr/bin/newuidmap", "usr/bin/newgidmap"];

/// Where root's `containers.conf` for the engine goes (the agent's `containers.conf` default).
pub const CONF: &str = "etc/runner-lifecycle/containers.conf";

/// Where root's `storage.conf` for the engine goes (the agent's `containers.storage_conf` default).
pub const STORAGE_CONF: &str = "etc/runner-lifecycle/storage.conf";

/// The first subordinate id handed out when no range is taken yet (useradd's SUB_UID_MIN).
const SUB_ID_MIN: u64 = 100_000;
/// The size of a range (useradd's SUB_UID_COUNT: enough for images with ids up to 65535).
const SUB_ID_COUNT: u64 = 65_536;

/// The default when `--containers` is not given: rootless when Podman is installed, else none.
pub fn default_for(root: &Path) -> Containers {
    if root.join(ROOTLESS_TOOLS[0]).exists() {
        Containers::Rootless
    } else {
        Containers::None
    }
}

/// The first rootless tool missing below `root`.
pub fn missing_tool(root: &Path) -> Option<&'static str> {
    ROOTLESS_TOOLS.into_iter().find(|t| !root.join(t).exists())
}

/// Whether `user` (primary group `gid`) is in the `docker` group, in the text of `/etc/group`.
pub fn in_docker_group(group_text: &str, user: &str, gid: u32) -> bool {
    group_text.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() >= 4 && f[0] == "docker" && (f[2].parse() == Ok(gid) || f[3].split(',').any(|m| m.trim() == user))
    })
}

/// `text` (of `/etc/subuid` or `/etc/subgid`) with a range for `user` when it has none: the next
/// free range above every other, `SUB_ID_COUNT` ids. `None` when the user has one already.
pub fn with_range(text: &str, user: &str, uid: u32) -> Option<String> {
    let mut end = SUB_ID_MIN;
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() != 3 {
            continue;
        }
        if f[0] == user || f[0].parse() == Ok(uid) {
            return None;
        }
        if let (Ok(start), Ok(count)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
            end = end.max(start + count);
        }
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{user}:{end}:{SUB_ID_COUNT}\n"));
    Some(out)
}

/// Root's `containers.conf` for the engine. `runc`: name the runc runtime (crun refuses a host
/// whose cgroup v2 hierarchy is mounted beside v1 controllers, "hybrid mode").
pub fn conf(runc: bool) -> String {
    let mut out = String::from(
        "# Written by runner-lifecycle install --containers rootless; read by the rootless engine the agent\n\
         # starts for each listener (CONTAINERS_CONF replaces the runner user's own file, which the job can\n\
         # write). docs/operations.md, \"Container jobs\".\n\
         [engine]\n\
         # Containers stay in the listener's cgroup, which the agent kills after the job (with systemd's\n\
         # manager they would move to the user's slice, beyond the agent's reach).\n\
         cgroup_manager = \"cgroupfs\"\n\
         # Events in a file of the runtime directory: the journal is not the job's to write.\n\
         events_logger = \"file\"\n",
    );
    if runc {
        out.push_str(
            "# This host mounts cgroup v2 beside v1 controllers (hybrid), which crun refuses.\nruntime = \"runc\"\n",
        );
    }
    out
}

/// Root's `storage.conf` for the engine: the runner's own storage stays where Podman puts it (the
/// runner's home, emptied between jobs); `image_store`, when given, is a read-only store of base
/// images root fills (`podman --root DIR pull IMAGE` while baking the image), which every job can
/// run from and no job can change (overlay is the driver that reads such stores).
pub fn storage_conf(image_store: Option<&Path>) -> String {
    let mut out = String::from(
        "# Written by runner-lifecycle install --containers rootless; read by the rootless engine the agent\n\
         # starts for each listener (CONTAINERS_STORAGE_CONF replaces the runner user's own file).\n\
         # docs/operations.md, \"Container jobs\".\n\
         [storage]\n",
    );
    if let Some(store) = image_store {
        out.push_str(&format!(
            "driver = \"overlay\"\n\
             [storage.options]\n\
             # Base images kept between jobs: root's, read-only for the engine (install --container-image-store).\n\
             additionalimagestores = [\"{}\"]\n",
            store.display()
        ));
    }
    out
}

/// Whether this host mounts cgroup v1 controllers (a hybrid or v1 host), from `/proc/self/mountinfo`.
pub fn cgroup_v1_mounted(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - ").map(|(_, r)| r))
        .any(|r| r.split_whitespace().next() == Some("cgroup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_added_above_every_other_and_only_once() {
        let text = "alice:100000:65536\nbob:165536:65536\n";
        let out = with_range(text, "runner", 1001).expect("added");
        assert!(out.ends_with("runner:231072:65536\n"), "{out}");
        assert_eq!(with_range(&out, "runner", 1001), None);
        assert_eq!(with_range("1001:300000:10\n", "runner", 1001), None);
        assert_eq!(with_range("", "runner", 1001).expect("added"), "runner:100000:65536\n");
        assert_eq!(
            with_range("junk\nx:y:z", "runner", 1001).expect("added"),
            "junk\nx:y:z\nrunner:100000:65536\n"
        );
    }

    #[test]
    fn docker_membership_by_list_or_primary_group() {
        assert!(in_docker_group("docker:x:999:a,runner\n", "runner", 1001));
        assert!(in_docker_group("docker:x:1001:\n", "runner", 1001));
        assert!(!in_docker_group("docker:x:999:a\n", "runner", 1001));
    }

    #[test]
    fn hybrid_hosts_get_runc_and_every_host_keeps_containers_in_the_cgroup() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      40 25 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let unified = "40 25 0:35 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(cgroup_v1_mounted(hybrid));
        assert!(!cgroup_v1_mounted(unified));
        assert!(conf(true).contains("runtime = \"runc\""));
        assert!(!conf(false).contains("runtime ="));
        assert!(conf(false).contains("cgroup_manager = \"cgroupfs\""));
    }

    #[test]
    fn a_read_only_image_store_is_named_with_the_driver_that_reads_it() {
        let with = storage_conf(Some(Path::new("/var/lib/runner-lifecycle/images")));
        assert!(with.contains("additionalimagestores = [\"/var/lib/runner-lifecycle/images\"]"));
        assert!(with.contains("driver = \"overlay\""));
        assert!(!storage_conf(None).contains("additionalimagestores"));
    }
}
