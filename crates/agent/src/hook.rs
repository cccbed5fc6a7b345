//! The job hooks' side: `runner-lifecycle hook job-started|job-completed`.
//!
//! The runner runs these as the first and last step of every job, and a hook that fails fails the
//! job (actions/runner src/Runner.Worker/JobExtension.cs). So the hook never fails: it sends one
//! line to the agent over a plain blocking Unix socket (no async runtime, no AWS SDK set up),
//! prints one line and exits 0.
//!
//! The hook needs neither IMDS nor the instance role, and never calls AWS itself. It runs as the
//! runner's user, which is the job's user: the IMDS fence (`runner-lifecycle install
//! --fence-imds`, docs/security.md) keeps that user away from the instance role's credentials,
//! and the Auto Scaling calls a hook could make cannot be confined to this instance by IAM (their
//! resource is the whole group). When the agent cannot be reached the hook says so in the job log
//! and returns at once: the agent's own `/proc` watch sees the job's `Runner.Worker` (every
//! `runner.worker_poll`, 50 ms by default, and in its first scan after a restart) and protects the
//! host itself. The hook is a hint that arrives early, never the truth the agent relies on.

use crate::socket::Request;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the hook waits for the agent's answer. The agent answers from memory, in microseconds;
/// seconds mean it is wedged, and the hook gives up (the job is not held up longer than this).
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which hook is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    /// `ACTIONS_RUNNER_HOOK_JOB_STARTED`.
    JobStarted,
    /// `ACTIONS_RUNNER_HOOK_JOB_COMPLETED`.
    JobCompleted,
}

impl HookEvent {
    /// Parse the subcommand word.
    pub fn parse(word: &str) -> Option<HookEvent> {
        match word {
            "job-started" => Some(HookEvent::JobStarted),
            "job-completed" => Some(HookEvent::JobCompleted),
            _ => None,
        }
    }

    fn request(self) -> Request {
        match self {
            HookEvent::JobStarted => Request::JobStarted,
            HookEvent::JobCompleted => Request::JobCompleted,
        }
    }

    fn word(self) -> &'static str {
        self.request().word()
    }
}

/// Ask the agent; `Ok` carries its reply line (`ok ...` or `error ...`).
pub fn ask_agent(socket: &Path, request: Request) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(AGENT_TIMEOUT))?;
    stream.set_write_timeout(Some(AGENT_TIMEOUT))?;
    stream.write_all(format!("{}\n", request.word()).as_bytes())?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, 64 * 1024)).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection without answering",
        ));
    }
    Ok(line.trim_end().to_string())
}

/// Run the hook and return the one line to print in the job log. Never fails, never calls AWS.
pub fn run(event: HookEvent, socket: &Path) -> String {
    let word = event.word();
    match ask_agent(socket, event.request()) {
        // The reply goes into the job's log: escaped, whoever answered on the socket.
        Ok(reply) => match reply.strip_prefix("ok ") {
            Some(text) => format!("runner-lifecycle: {word}: {}", lifecycle_escape::escape(text)),
            // `error ...`: the agent heard the hook but did not act on it (for example it is
            // still discovering its instance; it notes the job for later). Its words are the news.
            None => format!(
                "runner-lifecycle: {word}: the agent answered `{}`; {}",
                lifecycle_escape::clip(&reply, 160),
                UNSEEN
            ),
        },
        Err(e) => format!(
            "runner-lifecycle: {word}: agent unreachable at {} ({}); not reported. {}",
            lifecycle_escape::clip(&socket.display().to_string(), 120),
            lifecycle_escape::clip(&e.to_string(), 120),
            UNSEEN
        ),
    }
}

/// What happens when the hook could not tell the agent, said in the job log.
const UNSEEN: &str = "The job is not affected: the agent sees its Runner.Worker in /proc and protects the host itself";

#[cfg(test)]
mod tests {
    use super::*;

    /// `hook job-started` against a one-shot agent on a fresh socket that answers `reply(request)`.
    fn hook_against(tag: &str, reply: impl FnOnce(&str) -> Vec<u8> + Send + 'static) -> String {
        let dir = std::env::temp_dir().join(format!("rl-hook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            let mut w = stream;
            w.write_all(&reply(&line)).expect("write");
        });
        let line = run(HookEvent::JobStarted, &path);
        server.join().expect("server");
        let _ = std::fs::remove_dir_all(&dir);
        line
    }

    #[test]
    fn events_parse() {
        assert_eq!(HookEvent::parse("job-started"), Some(HookEvent::JobStarted));
        assert_eq!(HookEvent::parse("job-completed"), Some(HookEvent::JobCompleted));
        assert_eq!(HookEvent::parse("job-finished"), None);
    }

    #[test]
    fn asks_the_agent_and_prints_its_answer() {
        let line = hook_against("ask", |line| format!("ok heard {}", line).into_bytes());
        assert_eq!(line, "runner-lifecycle: job-started: heard job-started");
    }

    #[test]
    fn control_characters_in_the_reply_are_escaped() {
        let line = hook_against("esc", |_| b"ok fine\x1b[2J\x1b]52;c;Zm9v\x07\rforged\n".to_vec());
        assert_eq!(
            line,
            "runner-lifecycle: job-started: fine\\u{1b}[2J\\u{1b}]52;c;Zm9v\\u{7}\\rforged"
        );
    }

    /// No agent: one line, at once, and no AWS call or IMDS read is even attempted (the hook has
    /// nothing but the socket path).
    #[test]
    #[allow(clippy::disallowed_methods)] // the test measures the hook's own wall time
    fn without_an_agent_it_says_so_in_one_line_at_once() {
        let started = std::time::Instant::now();
        let line = run(HookEvent::JobCompleted, Path::new("/nonexistent/rl/agent.sock"));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert!(
            line.starts_with("runner-lifecycle: job-completed: agent unreachable at /nonexistent/rl/agent.sock ("),
            "{line}"
        );
        assert!(
            line.contains("not reported") && line.contains("Runner.Worker in /proc"),
            "{line}"
        );
        assert!(
            !line.contains('\n') && !line.contains("SetInstanceProtection"),
            "{line}"
        );
    }

    /// An `error` answer (the agent is still discovering its instance) is printed, escaped, and
    /// nothing else is tried.
    #[test]
    fn an_error_answer_is_reported_as_it_is() {
        let line = hook_against("err", |_| b"error the agent is starting\x1b[2J; job noted\n".to_vec());
        assert!(
            line.starts_with(
                "runner-lifecycle: job-started: the agent answered `error the agent is starting\\u{1b}[2J; job noted`; "
            ),
            "{line}"
        );
    }
}
