//! The listener's perf log: how the agent hears a job message before `Runner.Worker` exists.
//!
//! With `RUNNER_PERFLOG=DIR` in its environment the unmodified runner appends
//! `MessageReceived_RunnerJobRequest:<UTC time>` to `DIR/Runner.perf` as the first thing it does with
//! a job message, before it acknowledges and acquires the job and before the worker spawns
//! (actions/runner `src/Runner.Listener/Runner.cs:606-607`, `HostContext.WritePerfCounter`,
//! `HostContext.cs:165-176, 633-650`; shared/docs/handover-window.md section 3(e)). The agent gives
//! every listener incarnation a fresh directory and reads the file on each `/proc` poll and in the
//! last look before a stop.
//!
//! The directory is writable by the runner's user, so whatever is in it is a hint, like a hook
//! report: the core lets a message hold a stop for a bounded time and nothing else. Reading it must
//! never hurt the root agent: the file is opened without following links and without blocking,
//! only a regular file is read, and at most [`MAX_READ`] new bytes per poll.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable the runner reads (actions/runner `HostContext.cs`).
pub const ENV_VAR: &str = "RUNNER_PERFLOG";
/// The listener's file in that directory (`{hostType}.perf` for the listener process).
pub const FILE_NAME: &str = "Runner.perf";
/// The counter a job message writes (Runner.cs:607).
pub const JOB_MESSAGE: &str = "MessageReceived_RunnerJobRequest";
/// The most new bytes read per poll. A genuine listener writes one line of about 60 bytes per
/// counter and a handful of counters per job; anything beyond this is skipped and counted as one
/// message (a hint: it can only hold a stop for the bound).
pub const MAX_READ: u64 = 64 * 1024;
/// The longest line kept across polls (a partial line waits for its end).
const MAX_LINE: usize = 4096;

/// Open a file in a place the runner's user can write, for reading: no symlink is followed, a FIFO
/// or device cannot block the agent (`O_NONBLOCK`), and only a regular file is accepted (checked on
/// the opened descriptor, so nothing can be swapped in between).
pub fn open_untrusted(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io::Error::from)?;
    let file = File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Where the perf directories of this agent's listeners live (`{socket dir}/perflog`), one per
/// incarnation.
#[derive(Clone, Debug)]
pub struct PerfRoot {
    root: PathBuf,
    next: u64,
}

impl PerfRoot {
    /// The root beside the hook socket (a root-owned runtime directory under systemd).
    pub fn beside(socket: &Path) -> PerfRoot {
        let dir = socket.parent().unwrap_or(Path::new("/run/runner-lifecycle"));
        PerfRoot {
            root: dir.join("perflog"),
            next: 1,
        }
    }

    /// A fresh directory for the next listener: the previous ones are removed first (a job must not
    /// leave lines for the next listener to be read), then `root/N` is made, owned by root with the
    /// runner's group, mode 0770, so the listener can create its file there and cannot replace the
    /// directory itself (the root is root's, 0755). `gid`: the runner's primary group (`None`: the
    /// listener runs as the agent's own user).
    pub fn fresh(&mut self, gid: Option<u32>) -> io::Result<PerfLog> {
        self.clear();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)?;
        let dir = self.root.join(self.next.to_string());
        self.next += 1;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&dir, None, Some(gid))?;
            // After the chown: mkdir's mode is cut by the umask, and a chown may clear mode bits.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))?;
        }
        Ok(PerfLog::new(dir))
    }

    /// The directory of a listener started by an earlier agent (a restart): the one directory left
    /// under the root (each start removes the others), if there is exactly one. Read from its end:
    /// the lines already there were the earlier agent's to act on (a message it saw has produced a
    /// worker, which `/proc` shows, or was skipped), and an old line read as new would hold the
    /// next drain for the whole bound.
    pub fn adopt(&self) -> Option<PerfLog> {
        let mut dirs = std::fs::read_dir(&self.root)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path());
        let dir = dirs.next()?;
        if dirs.next().is_some() {
            return None;
        }
        let mut log = PerfLog::new(dir);
        log.skip_to_end();
        Some(log)
    }

    /// Remove every perf directory (the listener they served is gone or about to be replaced).
    /// `remove_dir_all` does not follow symlinks planted inside.
    pub fn clear(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// One listener's perf log, read incrementally.
#[derive(Debug)]
pub struct PerfLog {
    dir: PathBuf,
    /// The file identity and offset read so far.
    at: Option<(u64, u64, u64)>,
    partial: Vec<u8>,
}

impl PerfLog {
    fn new(dir: PathBuf) -> PerfLog {
        PerfLog {
            dir,
            at: None,
            partial: Vec::new(),
        }
    }

    /// The directory to hand the listener as `RUNNER_PERFLOG`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take what the file holds now as read.
    fn skip_to_end(&mut self) {
        if let Ok(meta) = open_untrusted(&self.dir.join(FILE_NAME)).and_then(|f| f.metadata()) {
            self.at = Some((meta.dev(), meta.ino(), meta.size()));
        }
    }

    /// Read what was appended since the last call and return how many job messages it holds. A
    /// missing file is no message yet; a file that is not a regular file, or a link, is an error
    /// (the caller logs it and reads on). A file that was replaced or truncated is read from its
    /// start; more than [`MAX_READ`] new bytes count as one message and are skipped.
    pub fn poll(&mut self) -> io::Result<u32> {
        let path = self.dir.join(FILE_NAME);
        let mut file = match open_untrusted(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.size());
        let offset = match self.at {
            Some((d, i, off)) if d == dev && i == ino && off <= size => off,
            _ => {
                self.partial.clear();
                0
            }
        };
        let new = size - offset;
        if new > MAX_READ {
            self.at = Some((dev, ino, size));
            self.partial.clear();
            return Ok(1);
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(new as usize);
        file.take(new).read_to_end(&mut buf)?;
        self.at = Some((dev, ino, offset + buf.len() as u64));
        Ok(self.count_messages(&buf))
    }

    fn count_messages(&mut self, buf: &[u8]) -> u32 {
        let mut count = 0;
        for byte in buf {
            if *byte == b'\n' {
                if is_job_message(&self.partial) {
                    count += 1;
                }
                self.partial.clear();
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(*byte);
            }
        }
        count
    }
}

/// `MessageReceived_RunnerJobRequest:<time>` (the time is not needed: the agent's clock stamps the
/// observation).
fn is_job_message(line: &[u8]) -> bool {
    line.strip_prefix(JOB_MESSAGE.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rl-perflog-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn append(dir: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE_NAME))
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn job_messages_are_counted_once_each_as_they_are_appended() {
        let base = temp_dir("count");
        let mut root = PerfRoot::beside(&base.join("agent.sock"));
        let mut log = root.fresh(None).expect("fresh");
        assert_eq!(log.poll().expect("poll"), 0, "no file yet");
        append(
            log.dir(),
            "MessageReceived_RunnerJobRequest:2026-12-06T20:00:00.0000000Z\nJobRequestRenewed_1:2026",
        );
        assert_eq!(log.poll().expect("poll"), 1);
        assert_eq!(log.poll().expect("poll"), 0, "read once");
        append(
            log.dir(),
            "-12-06T20:00:01Z\nMessageReceived_RunnerJobRequest:x\nMessageReceived_RunnerJobRequestX:y\n",
        );
        assert_eq!(
            log.poll().expect("poll"),
            1,
            "the partial line is completed, a look-alike is not counted"
        );
        // The next listener gets a new directory; the old one is gone.
        let next = root.fresh(None).expect("fresh");
        assert_ne!(next.dir(), log.dir());
        assert!(!log.dir().exists());
        assert_eq!(
            root.adopt().map(|l| l.dir().to_path_buf()),
            Some(next.dir().to_path_buf())
        );
        // A restarted agent reads only what is appended after it adopted the listener.
        append(next.dir(), "MessageReceived_RunnerJobRequest:old\n");
        let mut adopted = root.adopt().expect("adopted");
        assert_eq!(adopted.poll().expect("poll"), 0);
        append(next.dir(), "MessageReceived_RunnerJobRequest:new\n");
        assert_eq!(adopted.poll().expect("poll"), 1);
    }

    /// What the job's user can do to its directory must not freeze or fool the root agent beyond a
    /// hint: a FIFO (an open would block without O_NONBLOCK), a symlink to a file of root's, a
    /// truncation (read again from the start), a flood (one message, skipped).
    #[test]
    fn a_hostile_perf_file_never_blocks_and_never_follows_links() {
        let base = temp_dir("hostile");
        let mut root = PerfRoot::beside(&base.join("agent.sock"));
        let mut log = root.fresh(None).expect("fresh");
        let path = log.dir().join(FILE_NAME);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .expect("mkfifo");
        assert!(log.poll().is_err(), "a FIFO is refused at once");
        std::fs::remove_file(&path).expect("rm");
        let secret = base.join("secret");
        std::fs::write(&secret, "MessageReceived_RunnerJobRequest:x\n").expect("write");
        std::os::unix::fs::symlink(&secret, &path).expect("symlink");
        assert!(log.poll().is_err(), "a link is not followed");
        std::fs::remove_file(&path).expect("rm");
        append(
            log.dir(),
            "MessageReceived_RunnerJobRequest:a\nMessageReceived_RunnerJobRequest:b\n",
        );
        assert_eq!(log.poll().expect("poll"), 2);
        std::fs::write(&path, "MessageReceived_RunnerJobRequest:c\n").expect("truncate");
        assert_eq!(log.poll().expect("poll"), 1, "a shorter file is read from its start");
        append(log.dir(), &"x".repeat(MAX_READ as usize + 1));
        assert_eq!(log.poll().expect("poll"), 1, "a flood is one hint");
        assert_eq!(log.poll().expect("poll"), 0);
    }
}
