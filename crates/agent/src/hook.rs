//! The job hooks' side: `runner-lifecycle hook job-started|job-completed`.
//!
//! The runner runs these as the first and last step of every job, and a hook that fails fails the
//! job (actions/runner src/Runner.Worker/JobExtension.cs). So the hook never fails: it sends one
//! line to the agent over a plain blocking Unix socket (no async runtime, no AWS SDK set up) and
//! prints the agent's answer. Only when the agent cannot be reached does it build a runtime and make
//! one direct SetInstanceProtection call, and whatever happens it prints one line and exits 0.

use crate::asg::{self, AutoScaling, RetryPolicy};
use crate::config::Settings;
use crate::imds::{paths, Endpoint, ImdsClient};
use crate::socket::Request;
use lifecycle_core::ApiErrorKind;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the hook waits for the agent's answer. The agent answers from memory, in microseconds;
/// seconds mean it is wedged, and the fallback takes over.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The fallback's whole budget: a job should not sit in its first step for long.
const FALLBACK_BUDGET: Duration = Duration::from_secs(20);

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

/// Run the hook and return the one line to print in the job log. Never fails.
pub fn run(event: HookEvent, settings: &Settings) -> String {
    match ask_agent(&settings.socket, event.request()) {
        // The reply goes into the job's log: escaped, whoever answered on the socket.
        Ok(reply) => match reply.strip_prefix("ok ") {
            Some(text) => format!("runner-lifecycle: {}: {}", event.word(), lifecycle_escape::escape(text)),
            None => {
                let why = format!("the agent answered `{}`", lifecycle_escape::clip(&reply, 120));
                fallback(event, settings, &why)
            }
        },
        Err(e) => fallback(
            event,
            settings,
            &format!("agent unreachable at {} ({e})", settings.socket.display()),
        ),
    }
}

fn fallback(event: HookEvent, settings: &Settings, why: &str) -> String {
    let protect = event == HookEvent::JobStarted;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return format!("runner-lifecycle: {}: {why}; no fallback possible ({e})", event.word()),
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(FALLBACK_BUDGET, direct_protection(settings, protect))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", FALLBACK_BUDGET.as_secs())))
    });
    let result = match outcome {
        Ok(()) => format!("set scale-in protection to {protect} directly"),
        Err(e) => e,
    };
    format!("runner-lifecycle: {}: {why}; {result}", event.word())
}

async fn imds_value(client: &mut Option<ImdsClient>, settings: &Settings, path: &str) -> Result<String, String> {
    if client.is_none() {
        let endpoint = Endpoint::parse(&settings.imds_endpoint)?;
        *client = Some(ImdsClient::new(endpoint).with_timeout(Duration::from_secs(2)));
    }
    let Some(c) = client.as_mut() else {
        return Err("no IMDS client".into());
    };
    c.get_retrying(path, Duration::from_secs(3))
        .await
        .map_err(|e| e.to_string())?
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("IMDS has no {path}"))
}

/// The one direct call: SetInstanceProtection for this instance.
async fn direct_protection(settings: &Settings, protect: bool) -> Result<(), String> {
    let group = settings
        .group
        .clone()
        .ok_or("cannot protect directly: the group is unknown (set aws.group)")?;
    let mut imds: Option<ImdsClient> = None;
    let instance_id = match &settings.instance_id {
        Some(id) => id.clone(),
        None => imds_value(&mut imds, settings, paths::INSTANCE_ID).await?,
    };
    let region = match &settings.region {
        Some(r) => r.clone(),
        None => imds_value(&mut imds, settings, paths::REGION).await?,
    };
    let sdk = asg::sdk_config(
        &region,
        settings.endpoint_url.as_deref(),
        settings.api_timeout,
        RetryPolicy::Standard,
    )
    .await;
    let client = AutoScaling::new(&sdk, instance_id).with_target(Some(group), None);
    match client.set_protection(protect).await {
        Ok(_) => Ok(()),
        // SetInstanceProtection is refused once the instance terminates (API reference); the job
        // is safe anyway: the termination hook waits for it.
        Err(e) if e.kind == ApiErrorKind::NotInService => {
            Err("instance is already terminating, so not protected; its lifecycle hook holds it".into())
        }
        Err(e) => Err(format!("SetInstanceProtection failed ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, Env};

    #[test]
    fn events_parse() {
        assert_eq!(HookEvent::parse("job-started"), Some(HookEvent::JobStarted));
        assert_eq!(HookEvent::parse("job-completed"), Some(HookEvent::JobCompleted));
        assert_eq!(HookEvent::parse("job-finished"), None);
    }

    #[test]
    fn asks_the_agent_and_prints_its_answer() {
        let dir = std::env::temp_dir().join(format!("rl-hook-{}", std::process::id()));
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
            w.write_all(format!("ok heard {}", line).as_bytes()).expect("write");
        });
        let flags = vec![("agent.socket", path.display().to_string())];
        let settings = resolve(&flags, Some(Path::new("/dev/null")), &Env::default()).expect("settings");
        let line = run(HookEvent::JobStarted, &settings);
        server.join().expect("server");
        assert_eq!(line, "runner-lifecycle: job-started: heard job-started");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn control_characters_in_the_reply_are_escaped() {
        let dir = std::env::temp_dir().join(format!("rl-hook-esc-{}", std::process::id()));
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
            w.write_all(b"ok fine\x1b[2J\x1b]52;c;Zm9v\x07\rforged\n")
                .expect("write");
        });
        let flags = vec![("agent.socket", path.display().to_string())];
        let settings = resolve(&flags, Some(Path::new("/dev/null")), &Env::default()).expect("settings");
        let line = run(HookEvent::JobStarted, &settings);
        server.join().expect("server");
        assert_eq!(
            line,
            "runner-lifecycle: job-started: fine\\u{1b}[2J\\u{1b}]52;c;Zm9v\\u{7}\\rforged"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_agent_or_group_it_still_answers_one_line() {
        let flags = vec![
            ("agent.socket", "/nonexistent/rl/agent.sock".to_string()),
            ("aws.imds_endpoint", "http://127.0.0.1:1".to_string()),
        ];
        let settings = resolve(&flags, Some(Path::new("/dev/null")), &Env::default()).expect("settings");
        let line = run(HookEvent::JobCompleted, &settings);
        assert!(
            line.starts_with("runner-lifecycle: job-completed: agent unreachable"),
            "{line}"
        );
        assert!(line.contains("group is unknown"), "{line}");
        assert!(!line.contains('\n'));
    }
}
