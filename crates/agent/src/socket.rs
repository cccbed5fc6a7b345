//! The job-hook socket: a Unix stream socket, one request line in, one reply line out.
//!
//! Requests are `job-started`, `job-completed` and `status`. Replies start with `ok ` or `error `.
//! Anything else (binary junk, an unknown word, a line longer than [`MAX_LINE`]) gets an `error`
//! reply naming what is accepted; the connection and the agent carry on.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 256;
/// How long one connection may stay open: hooks send one line and leave.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait before its next request line arrives: a hook writes its line
/// right after connecting.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections open at once. The job can connect as often as it likes: beyond this the oldest
/// connection that has been answered or has not spoken is closed ([`crate::conns`]), so the fd count
/// stays bounded and a real hook is served.
pub const MAX_CONNECTIONS: usize = 64;
/// How long the main loop may take to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take to read one reply: a hook reads it at once.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A request from a job hook (or an operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The job-started hook ran: a job is running.
    JobStarted,
    /// The job-completed hook ran: the job is over.
    JobCompleted,
    /// Report the agent's view (JSON).
    Status,
}

impl Request {
    /// The wire word.
    pub fn word(self) -> &'static str {
        match self {
            Request::JobStarted => "job-started",
            Request::JobCompleted => "job-completed",
            Request::Status => "status",
        }
    }
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err("request is not UTF-8 text; expected job-started, job-completed or status".into());
    };
    match text.trim() {
        "job-started" => Ok(Request::JobStarted),
        "job-completed" => Ok(Request::JobCompleted),
        "status" => Ok(Request::Status),
        "" => Err("empty request; expected job-started, job-completed or status".into()),
        other => {
            let shown: String = other.chars().take(40).flat_map(char::escape_default).collect();
            Err(format!(
                "unknown request `{shown}`; expected job-started, job-completed or status"
            ))
        }
    }
}

/// A request handed to the agent's main loop, with the channel for its reply line.
#[derive(Debug)]
pub struct Incoming {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes: `Ok(text)` is sent as `ok text`, `Err(text)` as `error text` (the
    /// hook then makes its direct fallback call).
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Socket setup failures.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another agent answers on the socket already.
    #[error("another agent is already listening on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket: refusing to delete it.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The socket group does not exist.
    #[error("agent.socket_group `{0}` is not a group on this host")]
    UnknownGroup(String),
    /// The socket's directory can be written by others, who could replace the socket.
    #[error("{0} is writable by other users (mode {1:o}), who could put their own socket in the agent's place; use a directory only the agent can write (systemd's RuntimeDirectory=)")]
    UnsafeDirectory(PathBuf, u32),
    /// Creating, binding or securing the socket failed.
    #[error("cannot set up the hook socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Look a group up by name (or number) in `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Bind the socket at `path`: mode 0600, or 0660 with `group` as its group. See [`bind_gid`].
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let gid = match group {
        Some(g) => Some(group_id(g).ok_or_else(|| SocketError::UnknownGroup(g.to_string()))?),
        None => None,
    };
    bind_gid(path, gid)
}

/// Bind the socket at `path`: mode 0600 (only the agent's user), or 0660 with group `gid`.
///
/// Who may connect: the job hooks run as the runner's user. When the listener runs as the agent's
/// own user, 0600 is enough. When it runs as another user (`runner.user`, the agent being root),
/// the agent passes the runner's primary group here (unless `agent.socket_group` names one), and
/// the socket is 0660 with that group: not 0666, because then every local account (any daemon on
/// the host) could report jobs or read the status; the runner's group already holds what has to
/// connect. The job can connect either way (it runs as the runner's user): its reports are hints
/// that `/proc` must confirm (lifecycle-core's hook grace).
///
/// The socket is bound under a temporary name, secured, then renamed into place, so it is never
/// reachable with looser permissions. A stale socket of ours from a crashed agent is replaced, a
/// live one is an error (another agent runs). Whatever else occupies the path and is not owned by
/// the agent's user (an impostor's socket or file) is removed, never connected to or followed, and
/// logged. The directory must not be writable by others (unless sticky), or they could replace the
/// socket after the bind.
pub fn bind_gid(path: &Path, gid: Option<u32>) -> Result<UnixListener, SocketError> {
    use std::os::unix::fs::MetadataExt;
    let io_err = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    let me = rustix::process::geteuid().as_raw();
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mode = if gid.is_some() { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(io_err)?;
        }
    }
    let dir_meta = std::fs::metadata(dir).map_err(io_err)?;
    let mode = dir_meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(SocketError::UnsafeDirectory(dir.to_path_buf(), mode & 0o7777));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != me => {
            // Not ours: an impostor (or a leftover of another account). Never connect to it (a
            // live impostor would make us exit "already running" forever) and never follow it.
            tracing::warn!(
                path = %lifecycle_escape::escape(&path.display().to_string()),
                owner_uid = meta.uid(),
                "the hook socket's path is occupied by something the agent's user does not own; replacing it"
            );
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    // Short on purpose: a Unix socket path is limited to 107 bytes, and this one sits next to
    // the final path.
    let tmp = dir.join(format!(".{}.s", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err)?;
    let secure = || -> io::Result<()> {
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = secure() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(listener)
}

/// Accept connections forever, handing each request to `to_agent`.
pub async fn serve(listener: UnixListener, to_agent: mpsc::Sender<Incoming>) {
    serve_limited(listener, to_agent, crate::conns::Limiter::new(MAX_CONNECTIONS)).await;
}

/// [`serve`] with a given connection limiter (tests look at it).
pub async fn serve_limited(
    listener: UnixListener,
    to_agent: mpsc::Sender<Incoming>,
    limiter: std::sync::Arc<crate::conns::Limiter>,
) {
    // Every slot being answered: a new connection waits in the backlog until one is done (the
    // answers take microseconds, at most ANSWER_TIMEOUT).
    crate::conns::serve(
        listener,
        limiter,
        CONNECTION_TIMEOUT,
        "hook socket accept failed",
        |stream, slot| {
            let tx = to_agent.clone();
            async move { handle(stream, tx, &slot).await }
        },
    )
    .await;
}

async fn handle(stream: UnixStream, to_agent: mpsc::Sender<Incoming>, slot: &crate::conns::Slot) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64);
        let n = match tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        // Not evictable while the agent answers (microseconds): a hook that has spoken is answered.
        slot.answering();
        let complete = line.last() == Some(&b'\n');
        let (reply, last) = if !complete && n >= MAX_LINE {
            tracing::warn!("hook socket: request longer than {MAX_LINE} bytes refused");
            (format!("error request longer than {MAX_LINE} bytes; closing\n"), true)
        } else {
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            let reply = match parse_request(body) {
                Ok(request) => answer(request, &to_agent).await,
                Err(message) => {
                    // The request's bytes go back to its sender only: whatever was sent by mistake
                    // (a token pasted into the wrong place) must not land in the journal.
                    tracing::warn!(bytes = body.len(), "hook socket: bad request refused");
                    format!("error {message}\n")
                }
            };
            (reply, false)
        };
        // Answered: from here on the client's pace is its own business. Evictable, and the reply
        // must be taken within WRITE_TIMEOUT: a client that pipelines requests and never reads its
        // answers holds a slot for at most that long per reply, and gives it up to any newcomer.
        slot.served();
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(reply.as_bytes())).await {
            Ok(Ok(())) if !last => {}
            _ => return,
        }
    }
}

async fn answer(request: Request, to_agent: &mpsc::Sender<Incoming>) -> String {
    let (tx, rx) = oneshot::channel();
    if to_agent.send(Incoming { request, reply: tx }).await.is_err() {
        return "error the agent is shutting down\n".into();
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok(text))) => format!("ok {}\n", text.replace('\n', " ")),
        Ok(Ok(Err(text))) => format!("error {}\n", text.replace('\n', " ")),
        _ => "error the agent did not answer in time\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_garbage_is_explained() {
        assert_eq!(parse_request(b"job-started"), Ok(Request::JobStarted));
        assert_eq!(parse_request(b" job-completed "), Ok(Request::JobCompleted));
        assert_eq!(parse_request(b"status"), Ok(Request::Status));
        let e = parse_request(b"rm -rf /").expect_err("unknown");
        assert!(
            e.contains("unknown request `rm -rf /`") && e.contains("job-started"),
            "{e}"
        );
        assert!(parse_request(b"\xff\xfe").expect_err("binary").contains("UTF-8"));
        assert!(parse_request(b"").is_err());
        let long = "x".repeat(500);
        assert!(parse_request(long.as_bytes()).expect_err("long").len() < 200);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Any request line: one of the three requests or an explanation that is short and
            /// carries no control character back to the client's terminal.
            #[test]
            fn any_line_parses_or_is_explained(line in proptest::collection::vec(any::<u8>(), 0..MAX_LINE)) {
                match parse_request(&line) {
                    Ok(r) => prop_assert_eq!(parse_request(r.word().as_bytes()), Ok(r)),
                    Err(e) => {
                        prop_assert!(e.len() < 400, "{}", e.len());
                        prop_assert!(!e.chars().any(lifecycle_escape::is_unsafe), "{:?}", e);
                    }
                }
            }

            #[test]
            fn near_miss_words_parse_or_are_explained(
                word in prop_oneof![Just("job-started"), Just("job-completed"), Just("status")],
                pad_l in "[ \t\r\x00-\x1f]{0,3}",
                pad_r in "[ \t\r\x00-\x1f\u{80}-\u{9f}]{0,3}",
            ) {
                let line = format!("{pad_l}{word}{pad_r}");
                match parse_request(line.as_bytes()) {
                    Ok(r) => prop_assert_eq!(r.word(), word),
                    Err(e) => prop_assert!(!e.chars().any(lifecycle_escape::is_unsafe), "{:?}", e),
                }
            }
        }
    }

    #[test]
    fn groups_resolve_by_number_or_name() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rl-sock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn serves_requests_refuses_garbage_and_keeps_going() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tmp("serve");
            let path = dir.join("sub/agent.sock");
            let listener = bind(&path, None).expect("bind");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // A second agent must not steal a live socket.
            assert!(matches!(bind(&path, None), Err(SocketError::InUse(_))));

            let (tx, mut rx) = mpsc::channel::<Incoming>(8);
            tokio::spawn(serve(listener, tx));
            tokio::spawn(async move {
                while let Some(inc) = rx.recv().await {
                    let _ = inc.reply.send(Ok(format!("seen {}", inc.request.word())));
                }
            });
            let stream = UnixStream::connect(&path).await.expect("connect");
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"hello\n").await.expect("write");
            let reply = lines.next_line().await.expect("read").expect("line");
            assert!(reply.starts_with("error unknown request `hello`"), "{reply}");
            w.write_all(b"\x00\x01\x02\n").await.expect("write");
            let reply = lines.next_line().await.expect("read").expect("line");
            assert!(reply.starts_with("error"), "{reply}");
            w.write_all(b"job-started\n").await.expect("write");
            assert_eq!(
                lines.next_line().await.expect("read").as_deref(),
                Some("ok seen job-started")
            );
            w.write_all("y".repeat(1000).as_bytes()).await.expect("write");
            let reply = lines.next_line().await.expect("read").expect("line");
            assert!(reply.contains("longer than"), "{reply}");

            // The server is still there for the next client.
            let stream = UnixStream::connect(&path).await.expect("connect again");
            let (r, mut w) = stream.into_split();
            w.write_all(b"job-completed\n").await.expect("write");
            let mut lines = BufReader::new(r).lines();
            assert_eq!(
                lines.next_line().await.expect("read").as_deref(),
                Some("ok seen job-completed")
            );
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn idle_connections_cannot_lock_out_a_real_hook_nor_exhaust_fds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tmp("flood");
            let path = dir.join("agent.sock");
            let listener = bind(&path, None).expect("bind");
            let limiter = crate::conns::Limiter::new(MAX_CONNECTIONS);
            let (tx, mut rx) = mpsc::channel::<Incoming>(8);
            tokio::spawn(serve_limited(listener, tx, limiter.clone()));
            tokio::spawn(async move {
                while let Some(inc) = rx.recv().await {
                    let _ = inc.reply.send(Ok("noted".into()));
                }
            });
            let mut idle = Vec::new();
            for _ in 0..500 {
                idle.push(UnixStream::connect(&path).await.expect("connect"));
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(limiter.open() <= MAX_CONNECTIONS, "{}", limiter.open());
            let started = crate::clock::now_instant();
            let stream = UnixStream::connect(&path).await.expect("connect");
            let (r, mut w) = stream.into_split();
            w.write_all(b"job-started\n").await.expect("write");
            let reply = tokio::time::timeout(Duration::from_secs(1), BufReader::new(r).lines().next_line())
                .await
                .expect("answered within a second")
                .expect("read");
            assert_eq!(reply.as_deref(), Some("ok noted"));
            assert!(started.elapsed() < Duration::from_secs(1));
            assert!(limiter.open() <= MAX_CONNECTIONS);
            // Idle connections are closed after the read deadline too.
            tokio::time::sleep(READ_TIMEOUT + Duration::from_millis(300)).await;
            assert_eq!(limiter.open(), 0);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn an_impostors_live_socket_is_replaced_and_open_directories_refused() {
        use std::os::unix::fs::PermissionsExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tmp("impostor");
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let path = dir.join("agent.sock");
            // A live socket of another user at the path (the test runs as root in CI; as another
            // user the chown is not allowed and only the directory rule is checked).
            let impostor = std::os::unix::net::UnixListener::bind(&path).expect("impostor binds");
            if std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).is_ok() {
                let _ours = bind_gid(&path, None).expect("the impostor is replaced, not obeyed");
                let meta = std::fs::symlink_metadata(&path).expect("meta");
                use std::os::unix::fs::MetadataExt;
                assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
                assert_eq!(meta.mode() & 0o777, 0o600);
                impostor.set_nonblocking(true).expect("nonblocking");
                let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
                assert!(impostor.accept().is_err(), "clients reach the agent, not the impostor");
                // A foreign regular file is replaced too.
                drop(_ours);
                std::fs::remove_file(&path).expect("rm");
                std::fs::write(&path, "x").expect("write");
                std::os::unix::fs::lchown(&path, Some(65534), None).expect("chown");
                let _l = bind_gid(&path, Some(65534)).expect("replaced");
                assert_eq!(std::fs::metadata(&path).expect("meta").mode() & 0o777, 0o660);
                assert_eq!(std::fs::metadata(&path).expect("meta").gid(), 65534);
            }
            // In a directory others can write, an impostor could replace the socket after the bind.
            let open = dir.join("open");
            std::fs::create_dir_all(&open).expect("mkdir");
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
            assert!(matches!(
                bind_gid(&open.join("agent.sock"), None),
                Err(SocketError::UnsafeDirectory(_, 0o777))
            ));
            // Sticky (like /tmp): others cannot remove or rename the agent's entry.
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
            assert!(bind_gid(&open.join("agent.sock"), None).is_ok());
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn replaces_stale_sockets_but_not_other_files() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tmp("stale");
            std::fs::create_dir_all(&dir).expect("mkdir");
            let path = dir.join("agent.sock");
            drop(bind(&path, None).expect("first"));
            // The first listener is gone; its file is stale.
            let _l = bind(&path, Some("0")).expect("rebind over stale socket");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o660);
            let file = dir.join("not-a-socket");
            std::fs::write(&file, "precious").expect("write");
            assert!(matches!(bind(&file, None), Err(SocketError::NotASocket(_))));
            assert_eq!(std::fs::read_to_string(&file).expect("read"), "precious");
            assert!(matches!(
                bind(&dir.join("s"), Some("no-such-group-here")),
                Err(SocketError::UnknownGroup(_))
            ));
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
