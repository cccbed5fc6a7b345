//! The agent's main loop: it feeds observations to the decision core and carries out what the core
//! asks for. It decides nothing itself.
//!
//! Process tree: the agent spawns the listener in a process group of its own, so a terminal's or a
//! service manager's signal to the agent's group never reaches the listener (SIGINT/SIGTERM to the
//! listener cancels the running job: actions/runner src/Runner.Listener/Runner.cs). If the agent
//! dies, the listener and its job keep running; the next agent finds them in `/proc` and adopts them.

use crate::asg::{self, AutoScaling, RetryPolicy};
use crate::clock::{jitter_seed, Clock};
use crate::config::{ConfigError, Settings};
use crate::engine;
use crate::env_vars;
use crate::imds::{paths, ImdsClient};
use crate::isolation::{self, Cgroups};
use crate::metrics::{self, Metrics};
use crate::notify::Notifier;
use crate::perflog::{PerfLog, PerfRoot};
use crate::procs::{self, ProcId};
use crate::runner_env::{self, User};
use crate::socket::{self, Incoming, Request, SocketError};
use crate::status;
use lifecycle_aws::function_url::{JitClient, JitFetchError, JitGrant};
use lifecycle_core::{
    Action, ApiError, ApiErrorKind, ApiReply, Call, DrainCause, HookConfig, HookReport, Host, Input, ListenerMode,
    Notice, Release, RequestId, Startup, StartupAction, StartupConfig, StartupExit, StartupInput, TargetState, Time,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hook socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// How the agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The drain finished after a stop request.
    Stopped {
        /// Whether the stop was forced (second SIGTERM or the stop deadline).
        forced: bool,
    },
}

/// What the agent found out at start.
#[derive(Clone, Debug)]
struct Discovered {
    instance_id: String,
    region: String,
    group: Option<String>,
    hook: Option<HookConfig>,
    asg: AutoScaling,
    /// The SDK configuration (region, credentials from the instance role): also signs the requests
    /// to the controller's JIT endpoint.
    sdk: aws_config::SdkConfig,
    /// The one HTTPS client of the controller's function URL (JIT fetches and releases).
    jit: JitClient,
}

/// Things that happen outside the main loop and are sent to it.
#[derive(Debug)]
enum Event {
    /// An observation for the core from IMDS, and when the read that made it was answered.
    Imds { input: Input, at: Time },
    /// An Auto Scaling call finished.
    Api {
        id: RequestId,
        call: Call,
        result: Result<ApiReply, ApiError>,
        took: Duration,
    },
    /// A just-in-time config fetch finished.
    Jit {
        id: RequestId,
        result: Result<JitGrant, JitFetchError>,
        took: Duration,
    },
    /// The listener we spawned exited.
    ListenerExited {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, AgentError> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(AgentError::Signals)?,
        })
    }
}

/// The agent before its core runs: it carries out what the [`Startup`] machine asks for and answers
/// signals, hooks and the watchdog meanwhile. It decides nothing itself, and keeps no queue of its
/// own: the machine's is the one queue.
struct Starting<'a> {
    signals: &'a mut Signals,
    hook_rx: &'a mut mpsc::Receiver<Incoming>,
    startup: Startup,
    /// The hook being answered, until the machine says what to answer.
    reply: Option<tokio::sync::oneshot::Sender<Result<String, String>>>,
    notifier: &'a Notifier,
    watchdog: Option<tokio::time::Interval>,
    clock: Clock,
    metrics_listen: Option<String>,
}

impl Starting<'_> {
    /// Feed the machine, then carry out what it asks for at once (answers, exits, log lines); a
    /// call it asks for stays queued in the machine for [`Starting::run`]. `Err` when it exits.
    fn feed(&mut self, input: StartupInput) -> Result<(), Outcome> {
        self.startup.handle_input(input, self.clock.now());
        while self.startup.peek_action().is_some_and(|a| {
            matches!(
                a,
                StartupAction::AnswerHookNoted { .. } | StartupAction::Exit(_) | StartupAction::RetryLater { .. }
            )
        }) {
            if let Some(action) = self.startup.poll_action() {
                self.carry_out_now(action)?;
            }
        }
        // A hook the machine did not answer (it always does) is not left hanging.
        if let Some(r) = self.reply.take() {
            let _ = r.send(Err("the agent is starting (instance not discovered yet)".to_string()));
        }
        Ok(())
    }

    /// The startup machine asked for something out of its order (it never does): end the agent.
    fn out_of_order(what: &str) -> Outcome {
        error!(what, "the startup machine asked for a step out of order; exiting");
        Outcome::Stopped { forced: true }
    }

    /// Carry out an action that takes no time. `Err` when the agent exits.
    fn carry_out_now(&mut self, action: StartupAction) -> Result<(), Outcome> {
        match action {
            StartupAction::AnswerHookNoted { .. } => {
                // Noted for the core, but answered as an error: until discovery is done the agent
                // cannot protect the instance, so the hook makes its direct call.
                if let Some(r) = self.reply.take() {
                    let _ = r.send(Err(
                        "the agent is starting (instance not discovered yet); job noted".to_string()
                    ));
                }
            }
            StartupAction::Exit(exit) => {
                match exit {
                    StartupExit::StopNoListener => {
                        info!("stop requested before discovery finished and no listener runs: exiting");
                    }
                    StartupExit::SecondStop => {
                        warn!("second stop request during discovery: exiting; the adopted listener keeps running unsupervised");
                    }
                }
                return Err(Outcome::Stopped { forced: exit.forced() });
            }
            StartupAction::RetryLater {
                step,
                attempt,
                delay,
                error,
            } => {
                let retry_in_s = delay.as_secs_f64();
                warn!(error = %error, step = %step, attempt, retry_in_s, "discovery failed; retrying");
                self.notifier
                    .status(&format!("discovery failed ({error}); retrying in {retry_in_s:.1}s"));
            }
            // Calls and the hand-over are carried out by `run`.
            StartupAction::ReadIdentity | StartupAction::Discover | StartupAction::HandOver { .. } => {}
        }
        Ok(())
    }

    /// Drive `fut` to its end, answering everything else meanwhile. `Err` when a stop request
    /// ends the agent before then.
    async fn answer_while<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, Outcome> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = self.signals.term.recv() => self.feed(StartupInput::StopRequested)?,
                _ = self.signals.int.recv() => self.feed(StartupInput::StopRequested)?,
                _ = self.signals.hup.recv() => {}
                Some(inc) = self.hook_rx.recv() => {
                    match hook_input(inc.request) {
                        Some(input) => {
                            let report = if input == Input::JobStartedHook { HookReport::Started } else { HookReport::Completed };
                            self.reply = Some(inc.reply);
                            self.feed(StartupInput::Hook(report))?;
                        }
                        None => {
                            let answer = status::discovering(
                                Duration::from_millis(self.clock.now().as_millis()),
                                self.metrics_listen.as_deref(),
                                usize::try_from(self.startup.hooks_noted()).unwrap_or(usize::MAX),
                            )
                            .to_json();
                            let _ = inc.reply.send(Ok(answer));
                        }
                    }
                }
                () = tick(&mut self.watchdog) => self.notifier.ping(),
            }
        }
    }

    /// Carry out the startup until the machine hands over to the core (the discovery result and the
    /// inputs to replay) or exits.
    async fn run(&mut self, settings: &Settings, imds: &mut ImdsClient) -> Result<(Discovered, Vec<Input>), Outcome> {
        let mut identity: Option<Identity> = None;
        let mut discovered: Option<Discovered> = None;
        loop {
            let Some(action) = self.startup.poll_action() else {
                // Nothing to do but wait for the retry timer (or, with none armed, for a signal or
                // a hook: the machine ends on a stop).
                match self.startup.poll_timeout() {
                    Some(at) => {
                        let wait = at.since(self.clock.now());
                        self.answer_while(tokio::time::sleep(wait)).await?;
                        self.startup.handle_timeout(self.clock.now());
                    }
                    None => self.answer_while(std::future::pending::<()>()).await?,
                }
                continue;
            };
            let input = match action {
                StartupAction::ReadIdentity => match self.answer_while(read_identity(settings, imds)).await? {
                    Ok(id) => {
                        identity = Some(id);
                        StartupInput::IdentityRead
                    }
                    Err(error) => StartupInput::IdentityFailed { error },
                },
                StartupAction::Discover => match identity.as_ref() {
                    Some(id) => match self.answer_while(discover(settings, id)).await? {
                        Ok(d) => {
                            discovered = Some(d);
                            StartupInput::Discovered
                        }
                        Err(e) => StartupInput::DiscoveryFailed {
                            throttled: e.throttled(),
                            error: e.to_string(),
                        },
                    },
                    // The machine discovers only after the identity was read: should it ask anyway,
                    // the agent ends (systemd starts it afresh) rather than panic or hang.
                    None => return Err(Self::out_of_order("discovery asked for before the identity was read")),
                },
                StartupAction::HandOver { replay } => match discovered.take() {
                    Some(d) => return Ok((d, replay)),
                    None => return Err(Self::out_of_order("hand-over asked for before discovery answered")),
                },
                immediate => {
                    self.carry_out_now(immediate)?;
                    continue;
                }
            };
            self.feed(input)?;
        }
    }
}

/// The next watchdog tick, or never.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the agent knows about the listener process.
#[derive(Clone, Copy, Debug)]
struct Listener {
    id: ProcId,
    /// Spawned by this agent (its exit comes from `wait`), or adopted (its exit is seen in `/proc`).
    ours: bool,
}

/// Run the agent on a current-thread runtime (one core's worth of work: a few timers, sockets and
/// HTTP calls) until the core says it is done.
pub fn run_blocking(settings: Settings) -> Result<Outcome, AgentError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?
        .block_on(run(settings))
}

/// Run the agent until the core says it is done. `settings` must have passed `check_runner`.
pub async fn run(settings: Settings) -> Result<Outcome, AgentError> {
    let clock = Clock::start();
    let program = settings.listener_program()?;
    settings.require_jit_url()?;
    let account = settings.runner_account()?;
    let mut signals = Signals::install()?;

    // The socket first: a second agent on the same host must stop here, before it touches the
    // listener the first one supervises.
    // Who may connect: agent.socket_group, else the runner user's primary group when the listener
    // runs as another user (its hooks must reach the agent), else the agent's user only.
    let socket_gid = match (&settings.socket_group, &account) {
        (Some(g), _) => Some(socket::group_id(g).ok_or_else(|| SocketError::UnknownGroup(g.clone()))?),
        (None, Some(user)) => Some(user.gid),
        (None, None) => None,
    };
    let socket_listener = socket::bind_gid(&settings.socket, socket_gid)?;
    let (hook_tx, mut hook_rx) = mpsc::channel::<Incoming>(64);
    let server = tokio::spawn(socket::serve(socket_listener, hook_tx));
    info!(socket = %settings.socket.display(), "hook socket ready");
    let metrics: metrics::Shared = Arc::new(Mutex::new(Metrics::new()));
    let metrics_listen = match settings.metrics_listen {
        Some(addr) => serve_metrics(addr, &metrics).await,
        None => None,
    };
    let notifier = Notifier::from_env();
    notifier.ready();

    if settings.runner_mode == ListenerMode::OneJob && !settings.runner_command.iter().any(|a| a == "--once") {
        warn!("runner.mode is one-job but runner.command has no --once: the listener must exit after its job (an ephemeral registration does so too)");
    }
    let runner_uid = account
        .as_ref()
        .map_or_else(|| rustix::process::getuid().as_raw(), |u| u.uid);
    // The listeners' cgroups before the adoption: under systemd the agent moves itself into
    // `agent/` first, and the adoption check compares cgroups.
    let (cgroups, isolation) = match Cgroups::discover(&settings.socket.to_string_lossy()) {
        Ok(cg) => {
            info!(cgroups = %lifecycle_escape::escape(&cg.how), "each listener runs in a cgroup of its own, killed as a whole");
            let text = format!("cgroup: {}", cg.how);
            (Some(cg), text)
        }
        Err(e) => {
            warn!(error = %lifecycle_escape::escape(&e), "no cgroup for the listeners: processes a job leaves behind are killed by a /proc scan, which a process that keeps forking can outlive");
            (
                None,
                format!(
                    "proc-scan: no cgroup for the listeners ({e}); a process that keeps forking can outlive the kill"
                ),
            )
        }
    };
    if let Some(w) = isolation::ptrace_warning_here() {
        warn!(warning = %w, "a job can trace its listener on this kernel");
    }
    let subordinate = container_start_checks(&settings, account.as_ref());
    let adopted = adopt(&program, runner_uid, cgroups.as_ref());
    let adopted_cgroup = adopted.as_ref().and_then(|(l, _)| {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", l.pid)).ok()?;
        cgroups.as_ref()?.listener_dir_of(&text)
    });

    let mut imds = ImdsClient::new(settings.imds_endpoint.clone());

    // Discovery, while answering signals, hooks and the watchdog. The discovery future lives
    // across those events: restarting it on each one could starve it. What to do when is the
    // startup machine's call (lifecycle-core, `Startup`).
    let mut starting = Starting {
        signals: &mut signals,
        hook_rx: &mut hook_rx,
        startup: Startup::new(
            StartupConfig {
                have_listener: adopted.is_some(),
            },
            jitter_seed(),
            clock.now(),
        ),
        reply: None,
        notifier: &notifier,
        watchdog: notifier.watchdog_interval().map(tokio::time::interval),
        clock,
        metrics_listen: metrics_listen.clone(),
    };
    let (discovered, replay) = match starting.run(&settings, &mut imds).await {
        Ok(handed_over) => handed_over,
        Err(stopped) => {
            server.abort();
            remove_socket(&settings.socket);
            notifier.stopping();
            return Ok(stopped);
        }
    };
    let stops = starting.startup.stops();
    let watchdog = starting.watchdog.take();
    info!(
        instance_id = %discovered.instance_id,
        region = %discovered.region,
        group = discovered.group.as_deref().unwrap_or("(none)"),
        hook = discovered.hook.as_ref().map_or("(none: hook actions are no-ops)", |h| h.name.as_str()),
        heartbeat_timeout_s = discovered.hook.as_ref().map(|h| h.heartbeat_timeout.as_secs()),
        "discovered"
    );

    let core = Host::new(
        settings.core_config(discovered.hook.clone()),
        jitter_seed(),
        clock.now(),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let perf_root = PerfRoot::beside(&settings.socket);
    let engine_root = engine::EngineRoot::beside(&settings.socket);
    let mut agent = Agent {
        clock,
        core,
        settings,
        program,
        account,
        asg: discovered.asg.clone(),
        discovered,
        tx,
        listener: None,
        workers: BTreeSet::new(),
        stop_signals: stops,
        watcher: None,
        proc_failing_since: None,
        queue: VecDeque::new(),
        notifier,
        metrics,
        metrics_listen,
        jit_config: None,
        current_runner: None,
        perf: adopted.is_some().then(|| perf_root.adopt()).flatten(),
        perf_root,
        perf_failing: false,
        cgroups,
        isolation,
        listener_cgroup: adopted_cgroup,
        worker_handles: BTreeMap::new(),
        engine_root,
        subordinate,
    };

    if let Some((listener, workers)) = adopted {
        info!(
            pid = listener.pid,
            workers = workers.len(),
            "adopted a running listener from a previous agent"
        );
        agent.listener = Some(Listener {
            id: listener,
            ours: false,
        });
        agent.queue.push_back(Input::ListenerStarted { pid: listener.pid });
        for w in workers {
            agent.workers.insert(w);
            agent.queue.push_back(Input::WorkerStarted { pid: w.pid });
        }
    }
    // Early hooks (at most started, completed), then the stop requests: exactly once.
    agent.queue.extend(replay);

    tokio::spawn(poll_imds(imds, agent.settings.imds_poll, agent.tx.clone(), clock));
    let outcome = agent.main_loop(rx, &mut hook_rx, &mut signals, watchdog).await;
    if agent.listener.is_none() {
        if let Some(cg) = &agent.cgroups {
            let _ = cg.sweep(None);
            cg.remove_if_idle();
        }
    }
    server.abort();
    remove_socket(&agent.settings.socket);
    Ok(outcome)
}

/// Start the metrics endpoint. A failure to bind is logged and the agent runs on without it: the
/// runner's jobs matter more than their statistics.
async fn serve_metrics(addr: std::net::SocketAddr, shared: &metrics::Shared) -> Option<String> {
    match metrics::bind(addr).await {
        Ok(listener) => {
            let local = listener
                .local_addr()
                .map_or_else(|_| addr.to_string(), |a| a.to_string());
            info!(listen = %local, path = "/metrics", "metrics endpoint ready");
            tokio::spawn(metrics::serve(listener, shared.clone()));
            Some(local)
        }
        Err(e) => {
            error!(listen = %addr, error = %e, "cannot serve metrics; running without the endpoint");
            None
        }
    }
}

fn remove_socket(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
}

fn hook_input(request: Request) -> Option<Input> {
    match request {
        Request::JobStarted => Some(Input::JobStartedHook),
        Request::JobCompleted => Some(Input::JobCompletedHook),
        Request::Status => None,
    }
}

/// A listener left running by a previous agent, and its workers. Only a process that runs the
/// configured program as the runner's user in the agent's own cgroup is adopted
/// ([`procs::Expected`]); look-alikes are logged and left alone.
fn adopt(program: &std::path::Path, uid: u32, cgroups: Option<&Cgroups>) -> Option<(ProcId, Vec<ProcId>)> {
    let mut expected = procs::Expected::for_program(program, uid);
    expected.listener_cgroups = cgroups.map(|c| c.base_rel().to_string());
    let (found, rejected) = procs::find_listeners(&expected);
    for r in rejected {
        warn!(
            pid = r.pid,
            argv = %lifecycle_escape::clip(&r.argv.join(" "), 200),
            why = %lifecycle_escape::escape(&r.why),
            "a process that looks like the runner's listener is not adopted"
        );
    }
    if found.len() > 1 {
        warn!(pids = ?found.iter().map(|p| p.pid).collect::<Vec<_>>(), "several listeners run; adopting the oldest");
    }
    let listener = *found.first()?;
    Some((listener, procs::workers_of(listener.pid)))
}

/// Who this instance is.
#[derive(Clone, Debug)]
struct Identity {
    instance_id: String,
    region: String,
}

/// The instance id and region: configured, or read from IMDS.
async fn read_identity(settings: &Settings, imds: &mut ImdsClient) -> Result<Identity, String> {
    const IMDS_DEADLINE: Duration = Duration::from_secs(5);
    let instance_id = match &settings.instance_id {
        Some(id) => id.clone(),
        None => imds
            .get_retrying(paths::INSTANCE_ID, IMDS_DEADLINE)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("IMDS has no meta-data/instance-id")?
            .trim()
            .to_string(),
    };
    let region = match &settings.region {
        Some(r) => r.clone(),
        None => imds
            .get_retrying(paths::REGION, IMDS_DEADLINE)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("IMDS has no meta-data/placement/region")?
            .trim()
            .to_string(),
    };
    Ok(Identity { instance_id, region })
}

/// Why discovery failed: the startup machine backs off longer after throttling.
#[derive(Debug, thiserror::Error)]
enum DiscoverError {
    /// An Auto Scaling call failed.
    #[error("{call}: {error}")]
    Api {
        /// The API action.
        call: &'static str,
        /// The classified failure.
        error: ApiError,
    },
    /// The configured hook is not in the group.
    #[error("lifecycle hook `{name}` (aws.hook) does not exist in group {group}")]
    HookMissing {
        /// The configured hook.
        name: String,
        /// The group.
        group: String,
    },
}

impl DiscoverError {
    fn throttled(&self) -> bool {
        matches!(self, DiscoverError::Api { error, .. } if error.kind == ApiErrorKind::Throttled)
    }
}

/// The group and its termination hook: configured, or asked of Auto Scaling.
async fn discover(settings: &Settings, identity: &Identity) -> Result<Discovered, DiscoverError> {
    let Identity { instance_id, region } = identity.clone();
    let api = |call: &'static str| move |error| DiscoverError::Api { call, error };
    let sdk = asg::sdk_config(
        &region,
        settings.endpoint_url.as_deref(),
        settings.api_timeout,
        RetryPolicy::CoreRetries,
    )
    .await;
    let client = AutoScaling::new(&sdk, instance_id.clone());
    let group = match &settings.group {
        Some(g) => Some(g.clone()),
        None => client
            .describe()
            .await
            .map_err(api("DescribeAutoScalingInstances"))?
            .map(|m| m.group),
    };
    let hook = match &group {
        None => None,
        Some(g) => {
            let hooks = client
                .termination_hooks(g, settings.hook.as_deref())
                .await
                .map_err(api("DescribeLifecycleHooks"))?;
            if let Some(name) = &settings.hook {
                if hooks.is_empty() {
                    return Err(DiscoverError::HookMissing {
                        name: name.clone(),
                        group: g.clone(),
                    });
                }
            } else if hooks.len() > 1 {
                warn!(
                    hooks = ?hooks.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
                    "several termination hooks; driving the first (set aws.hook to choose); the others need their own completion"
                );
            }
            hooks.into_iter().next()
        }
    };
    let asg = client.with_target(group.clone(), hook.as_ref().map(|h| h.name.clone()));
    Ok(Discovered {
        instance_id,
        region,
        group,
        hook,
        asg,
        sdk,
        jit: JitClient::new(),
    })
}

/// Poll IMDS and report what changed. A failed read is reported every time (the core only notes
/// when failures began); the next good read is reported even when unchanged, because the core
/// learns from it that IMDS is back.
async fn poll_imds(mut imds: ImdsClient, every: Duration, tx: mpsc::UnboundedSender<Event>, clock: Clock) {
    let event = |input| Event::Imds { input, at: clock.now() };
    let mut last: Option<TargetState> = None;
    let mut failing = false;
    let mut spot_seen = false;
    let mut rebalance_seen = false;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match imds.get(paths::TARGET_LIFECYCLE_STATE).await {
            Ok(body) => {
                let state = body.map_or(TargetState::NotInGroup, |b| TargetState::parse(&b));
                if failing {
                    info!("IMDS answers again");
                    failing = false;
                }
                if last.as_ref() != Some(&state) {
                    info!(target_state = %lifecycle_escape::clip(&state.to_string(), 200), "IMDS target-lifecycle-state");
                    last = Some(state.clone());
                    if tx.send(event(Input::TargetState(state))).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "IMDS read failed");
                    failing = true;
                }
                last = None;
                if tx.send(event(Input::ImdsUnavailable)).is_err() {
                    return;
                }
                continue;
            }
        }
        if !spot_seen {
            if let Ok(Some(body)) = imds.get(paths::SPOT_INSTANCE_ACTION).await {
                spot_seen = true;
                match crate::imds::parse_spot_notice(&body) {
                    Ok(n) => warn!(action = %n.action, time = %n.time, "spot interruption notice"),
                    Err(e) => warn!(
                        notice = %lifecycle_escape::clip(body.trim(), 200),
                        error = %e,
                        "spot interruption notice"
                    ),
                }
                let _ = tx.send(event(Input::SpotInterruption));
            }
        }
        if !rebalance_seen {
            if let Ok(Some(body)) = imds.get(paths::REBALANCE).await {
                rebalance_seen = true;
                info!(notice = %lifecycle_escape::clip(body.trim(), 200), "rebalance recommendation");
                let _ = tx.send(event(Input::RebalanceRecommendation));
            }
        }
    }
}

struct Agent {
    clock: Clock,
    core: Host,
    settings: Settings,
    program: PathBuf,
    /// `runner.user`, resolved: the listener runs as this user (`None`: as the agent's own).
    account: Option<User>,
    discovered: Discovered,
    asg: AutoScaling,
    tx: mpsc::UnboundedSender<Event>,
    listener: Option<Listener>,
    workers: BTreeSet<ProcId>,
    /// Stop requests so far (signals, and those received during discovery).
    stop_signals: u32,
    /// The worker watcher of the current listener (its pid, the watcher).
    watcher: Option<(u32, procs::WorkerWatcher)>,
    /// Since when `/proc` reads fail (logged once per streak).
    proc_failing_since: Option<Time>,
    /// Observations waiting to be fed to the core (follow-ups of executed actions, adoption).
    queue: VecDeque<Input>,
    /// systemd's notification socket.
    notifier: Notifier,
    /// What the metrics endpoint shows (kept even when it does not serve: it costs nothing).
    metrics: metrics::Shared,
    /// The metrics endpoint's address, when it serves.
    metrics_listen: Option<String>,
    /// JIT mode: the config for the next listener. A credential (whoever holds it receives a job):
    /// kept in this process's memory only, handed to the listener in its environment at exec.
    jit_config: Option<JitGrant>,
    /// JIT mode: the registration the running listener was started with (its runner id is what the
    /// controller releases before a stop).
    current_runner: Option<(String, u64)>,
    /// Where the listeners' perf directories live.
    perf_root: PerfRoot,
    /// The running listener's perf log (`None`: none could be made, or the listener predates it).
    perf: Option<PerfLog>,
    /// Since when perf-log reads fail (logged once per streak).
    perf_failing: bool,
    /// The listeners' cgroups (`None`: the `/proc` scan fallback, said at start and in `status`).
    cgroups: Option<Cgroups>,
    /// How a finished job's processes are killed, in words (`status`).
    isolation: String,
    /// The running listener's cgroup.
    listener_cgroup: Option<PathBuf>,
    /// A pidfd per known worker: its exit is seen even when `/proc` cannot be read.
    worker_handles: BTreeMap<ProcId, isolation::Handle>,
    /// Where the rootless engines' runtime directories live (`containers.mode = "rootless"`).
    engine_root: engine::EngineRoot,
    /// The runner user's subordinate uid ranges (rootless containers run as these): killed with
    /// the runner's own processes between jobs.
    subordinate: Vec<(u32, u32)>,
}

impl Agent {
    async fn main_loop(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        hook_rx: &mut mpsc::Receiver<Incoming>,
        signals: &mut Signals,
        mut watchdog: Option<tokio::time::Interval>,
    ) -> Outcome {
        let mut worker_tick = tokio::time::interval(self.settings.worker_poll);
        worker_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.core.handle_timeout(self.clock.now());
        loop {
            if let Some(outcome) = self.settle() {
                return outcome;
            }
            self.update_gauges();
            let next = self.core.next_timer();
            let deadline = next.map(|(t, _)| self.clock.instant_of(t));
            let watching = self.listener.is_some();
            tokio::select! {
                () = sleep_until(deadline) => {
                    if let Some((_, timer)) = next {
                        debug!(timer = %timer, "timer due");
                    }
                    self.core.handle_timeout(self.clock.now());
                }
                Some(event) = rx.recv() => self.on_event(event),
                Some(inc) = hook_rx.recv() => self.on_hook(inc),
                _ = signals.term.recv() => self.on_stop_signal("SIGTERM"),
                _ = signals.int.recv() => self.on_stop_signal("SIGINT"),
                _ = signals.hup.recv() => info!("SIGHUP ignored (the agent is stopped with SIGTERM)"),
                _ = worker_tick.tick(), if watching => self.watch_processes(),
                // Pinged from the main loop itself, so a wedged loop is restarted by systemd.
                () = tick(&mut watchdog) => self.notifier.ping(),
            }
        }
    }

    /// Feed queued observations and carry out every action until the core is quiet.
    fn settle(&mut self) -> Option<Outcome> {
        loop {
            while let Some(action) = self.core.poll_action() {
                if let Some(outcome) = self.execute(action) {
                    return Some(outcome);
                }
            }
            let input = self.queue.pop_front()?;
            self.feed(input);
        }
    }

    fn update_gauges(&self) {
        metrics::lock(&self.metrics).set_gauges(metrics::Gauges::of(&self.core));
    }

    fn feed(&mut self, input: Input) {
        debug!(input = ?input, "input");
        self.core.handle_input(input, self.clock.now());
    }

    fn on_stop_signal(&mut self, name: &str) {
        self.stop_signals += 1;
        if self.stop_signals > 1 {
            warn!(signal = name, "second stop request: forcing the stop");
        } else {
            info!(signal = name, "stop requested: draining (a running job finishes first)");
        }
        self.feed(Input::StopRequested);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Imds { input, at } => {
                if input == Input::TargetState(TargetState::Terminated) {
                    metrics::lock(&self.metrics).imds_saw_terminated(at);
                }
                self.feed(input);
            }
            Event::Api { id, call, result, took } => {
                metrics::lock(&self.metrics).on_api_result(id, call, &result);
                let took_ms = took.as_millis() as u64;
                // The release goes to the controller, everything else to Auto Scaling.
                let service = if call == Call::ReleaseRunner {
                    "controller"
                } else {
                    "Auto Scaling"
                };
                match &result {
                    Ok(_) => info!(%id, call = %call, took_ms, "{service} call succeeded"),
                    Err(e) => debug!(%id, call = %call, took_ms, error = %e, "{service} call failed"),
                }
                self.feed(Input::ApiResult { id, result });
            }
            Event::Jit { id, result, took } => {
                let took_ms = took.as_millis() as u64;
                let result = match result {
                    Ok(grant) => {
                        info!(%id, runner = %lifecycle_escape::escape(&grant.runner_name), took_ms, "just-in-time config received");
                        self.jit_config = Some(grant);
                        Ok(ApiReply::Done)
                    }
                    Err(e) => {
                        // Logged once, as the core's `api-failed` notice with its retry time.
                        debug!(%id, took_ms, error = %e, "just-in-time config fetch failed");
                        Err(jit_error(&e))
                    }
                };
                metrics::lock(&self.metrics).on_api_result(id, Call::MintJitConfig, &result);
                self.feed(Input::ApiResult { id, result });
            }
            Event::ListenerExited { pid, code, signal } => {
                if self.listener.is_some_and(|l| l.id.pid == pid) {
                    self.listener_gone(code, signal);
                }
            }
        }
    }

    fn listener_gone(&mut self, code: Option<i32>, signal: Option<i32>) {
        let pid = self.listener.map(|l| l.id.pid);
        info!(pid, code, signal, "listener exited");
        self.listener = None;
        self.workers.clear();
        self.worker_handles.clear();
        // Whatever its job left in its cgroup dies now; the next start waits until it is empty.
        if let (Some(cg), Some(dir)) = (&self.cgroups, self.listener_cgroup.take()) {
            let processes = cg.kill_now(&dir);
            if processes > 0 {
                warn!(processes, cgroup = %dir.display(), "killed what the listener's job left in its cgroup");
            }
        }
        self.perf = None;
        self.current_runner = None;
        self.perf_root.clear();
        self.feed(Input::ListenerExited { code });
    }

    fn on_hook(&mut self, inc: Incoming) {
        let text = match inc.request {
            Request::Status => self.status_json(),
            Request::JobStarted => {
                info!("job-started hook reported");
                self.feed(Input::JobStartedHook);
                self.job_started_text()
            }
            Request::JobCompleted => {
                info!("job-completed hook reported");
                self.feed(Input::JobCompletedHook);
                match self.core.draining() {
                    Some(cause) => format!("job end noted; the runner drains ({})", cause_text(cause)),
                    None => "job end noted".into(),
                }
            }
        };
        let _ = inc.reply.send(Ok(text));
    }

    fn job_started_text(&self) -> String {
        let snap = self.core.snapshot();
        match snap.draining {
            Some(DrainCause::Terminating) => {
                "instance is terminating: this job runs to its end under the lifecycle hook, then the instance goes"
                    .into()
            }
            Some(cause) => format!(
                "runner is draining ({}): this job runs to its end first",
                cause_text(cause)
            ),
            None if snap.protected == Some(true) => "instance is protected from scale-in".into(),
            None if self.discovered.group.is_none() => {
                "instance is in no Auto Scaling group; nothing to protect".into()
            }
            None => "scale-in protection requested".into(),
        }
    }

    fn status_json(&self) -> String {
        let facts = status::Facts {
            instance_id: self.discovered.instance_id.clone(),
            region: self.discovered.region.clone(),
            group: self.discovered.group.clone(),
            hook_name: self.discovered.hook.as_ref().map(|h| h.name.clone()),
            heartbeat_timeout: self.discovered.hook.as_ref().map(|h| h.heartbeat_timeout),
            listener_pid: self.listener.map(|l| l.id.pid),
            workers: self.workers.iter().map(|w| w.pid).collect(),
            metrics_listen: self.metrics_listen.clone(),
            isolation: Some(self.isolation.clone()),
        };
        status::running(&self.core.snapshot(), self.clock.now(), &facts).to_json()
    }

    /// Check the listener's children for workers, and an adopted listener for its exit.
    fn watch_processes(&mut self) {
        let Some(listener) = self.listener else { return };
        if !listener.ours {
            match procs::liveness(listener.id) {
                procs::Liveness::Alive => {}
                procs::Liveness::Gone => {
                    self.listener_gone(None, None);
                    return;
                }
                procs::Liveness::Unknown => {
                    self.proc_read_failed(&std::io::Error::other("cannot read the listener's stat"));
                    return;
                }
            }
        }
        let Some(mut seen) = self.scan_workers() else { return };
        self.add_job_messages(&mut seen);
        if !seen.is_empty() {
            // One scan, one decision: a worker's exit and the next one's start seen together must
            // never look like an idle listener (issue 11: the next job was cancelled).
            debug!(inputs = ?seen, "inputs of one /proc scan");
            self.core.handle_inputs(seen, self.clock.now());
        }
    }

    /// Read the listener's workers (one `/proc` scan with the listener's watcher), note what
    /// changed since the last scan, and return it as the core's inputs (exits, then starts), not
    /// yet fed. `None` when there is no listener or `/proc` cannot be read: then the last known
    /// state stands (a drain must never SIGINT a busy listener because `/proc` could not be read).
    fn scan_workers(&mut self) -> Option<Vec<Input>> {
        let listener = self.listener?;
        let watcher = match &mut self.watcher {
            Some(w) if w.0 == listener.id.pid => &mut w.1,
            _ => {
                &mut self
                    .watcher
                    .insert((listener.id.pid, procs::WorkerWatcher::new(listener.id.pid)))
                    .1
            }
        };
        let (mut now, read): (BTreeSet<ProcId>, bool) = match watcher.workers() {
            Ok(w) => (w.into_iter().collect(), true),
            Err(e) => {
                self.proc_read_failed(&e);
                (self.workers.clone(), false)
            }
        };
        if read && self.proc_failing_since.take().is_some() {
            info!("/proc reads work again");
        }
        // A known worker whose pidfd says it exited is gone, whether the children could be listed
        // or not (a failed read never keeps a dead worker alive, issue 16), and also when the
        // watcher still lists it (a zombie its listener has not reaped). Its handle is kept for as
        // long as the watcher lists it, or the next scan would take the zombie for a new worker (a
        // second "job assigned" and a last look that held an idle listener's stop).
        if read {
            self.worker_handles.retain(|w, _| now.contains(w));
        }
        now.retain(|w| !self.worker_handles.get(w).is_some_and(isolation::Handle::exited));
        if !read && now.len() == self.workers.len() {
            return None;
        }
        let started: Vec<ProcId> = now.difference(&self.workers).copied().collect();
        let ended: Vec<ProcId> = self.workers.difference(&now).copied().collect();
        for w in &started {
            if let Some(h) = isolation::Handle::open(w.pid, w.start_time) {
                self.worker_handles.insert(*w, h);
            }
        }
        self.workers = now;
        let mut seen = Vec::with_capacity(started.len() + ended.len());
        for w in ended {
            info!(pid = w.pid, "Runner.Worker exited: job over");
            seen.push(Input::WorkerExited { pid: w.pid });
        }
        for w in started {
            info!(pid = w.pid, "Runner.Worker started: job assigned");
            seen.push(Input::WorkerStarted { pid: w.pid });
        }
        Some(seen)
    }

    /// A job message in the listener's perf log since the last read goes into the same batch as the
    /// scan, before the workers that started (a message and the worker it produced, seen together,
    /// leave no latch behind; handover-window.md section 3(e)).
    fn add_job_messages(&mut self, seen: &mut Vec<Input>) {
        let Some(perf) = self.perf.as_mut() else { return };
        match perf.poll() {
            Ok(0) => {}
            Ok(n) => {
                // Once per streak: the file is the job's to write, and a flood of lines is no news.
                if self.core.job_message_at().is_none() {
                    info!(
                        messages = n,
                        "the listener's perf log shows a job message: a job is landing"
                    );
                } else {
                    debug!(messages = n, "more job messages in the listener's perf log");
                }
                let first_start = seen
                    .iter()
                    .position(|i| matches!(i, Input::WorkerStarted { .. }))
                    .unwrap_or(seen.len());
                seen.insert(first_start, Input::JobMessageReceived);
            }
            Err(e) => {
                if !std::mem::replace(&mut self.perf_failing, true) {
                    warn!(dir = %perf.dir().display(), error = %e, "cannot read the listener's perf log; the drain relies on /proc and the last look");
                }
                return;
            }
        }
        self.perf_failing = false;
    }

    /// The last look before SIGINT to an idle listener ([`Action::ConfirmIdle`]): what appeared
    /// since the last scan (up to `runner.worker_poll` ago), a `Runner.Worker` or a job message in
    /// its perf log, goes to the core with [`Input::ListenerLooked`] in one batch; the core decides
    /// whether the stop goes out. A `/proc` scan that cannot be read reports nothing new.
    fn last_look(&mut self, pid: u32) {
        let mut seen = match self.scan_workers() {
            Some(mut seen) => {
                self.add_job_messages(&mut seen);
                seen
            }
            None => Vec::new(),
        };
        if seen
            .iter()
            .any(|i| matches!(i, Input::WorkerStarted { .. } | Input::JobMessageReceived))
        {
            info!(
                pid,
                "a job was assigned just before the stop: not stopping the listener"
            );
        }
        seen.push(Input::ListenerLooked { pid });
        debug!(inputs = ?seen, "inputs of the last look");
        self.core.handle_inputs(seen, self.clock.now());
    }

    /// A `/proc` read failed: keep the last known worker state, and log once per failure streak.
    fn proc_read_failed(&mut self, e: &std::io::Error) {
        if self.proc_failing_since.is_none() {
            self.proc_failing_since = Some(self.clock.now());
            warn!(error = %e, "cannot read /proc; keeping the last known worker state until it can");
        }
    }

    /// Carry out one action. `Some` when the agent is done.
    fn execute(&mut self, action: Action) -> Option<Outcome> {
        metrics::lock(&self.metrics).on_action(&action, self.clock.now(), self.core.job_alive());
        match action {
            Action::StartListener { reason } => {
                info!(action = "start-listener", reason = %reason, program = %self.program.display(), "starting the runner listener");
                self.spawn_listener();
            }
            Action::ConfirmIdle { pid, reason } => {
                debug!(action = "confirm-idle", pid, reason = %reason, "last look at the listener before the stop");
                self.last_look(pid);
            }
            Action::StopListener { reason, cancels_job } => {
                if cancels_job {
                    error!(action = "stop-listener", reason = %reason, cancels_job, "SIGINT to the listener while a job runs: the job will be cancelled");
                } else {
                    info!(action = "stop-listener", reason = %reason, cancels_job, "SIGINT to the idle listener");
                }
                self.signal_listener(rustix::process::Signal::INT);
            }
            Action::KillListener { reason } => {
                warn!(action = "kill-listener", reason = %reason, "SIGKILL to the listener");
                self.signal_listener(rustix::process::Signal::KILL);
            }
            Action::SetProtection { id, protect, reason } => {
                info!(action = "set-protection", %id, protect, reason = %reason, "SetInstanceProtection");
                let asg = self.asg.clone();
                self.call(
                    id,
                    Call::SetProtection,
                    async move { asg.set_protection(protect).await },
                );
            }
            Action::Describe { id, reason } => {
                info!(action = "describe", %id, reason = %reason, "DescribeAutoScalingInstances");
                let asg = self.asg.clone();
                self.call(id, Call::Describe, async move { asg.describe_for_core().await });
            }
            Action::Heartbeat { id, reason } => {
                info!(action = "heartbeat", %id, reason = %reason, "RecordLifecycleActionHeartbeat");
                let asg = self.asg.clone();
                self.call(id, Call::Heartbeat, async move { asg.heartbeat().await });
            }
            Action::CompleteLifecycleAction { id, result, reason } => {
                info!(action = "complete", %id, result = %result, reason = %reason, "CompleteLifecycleAction");
                let asg = self.asg.clone();
                self.call(id, Call::Complete, async move { asg.complete(result).await });
            }
            Action::LeaveGroup { id } => {
                info!(action = "leave-group", %id, "one instance per job: TerminateInstanceInAutoScalingGroup for this instance (the group launches a replacement)");
                let asg = self.asg.clone();
                self.call(id, Call::LeaveGroup, async move { asg.leave_group().await });
            }
            Action::ReleaseRunner { id } => {
                info!(action = "release-runner", %id, "asking the controller to remove this host's registration before the stop");
                self.release_runner(id);
            }
            Action::FetchJitConfig { id, reason } => {
                info!(action = "fetch-jit-config", %id, reason = %reason, "fetching a just-in-time runner config");
                self.fetch_jit_config(id);
            }
            Action::Notify(notice) => {
                log_notice(&notice);
                match notice {
                    Notice::DrainStarted { cause } => self.notifier.status(&format!(
                        "draining ({}): no new jobs; a running job finishes",
                        cause_text(cause)
                    )),
                    Notice::HookCompleted { .. } => self.notifier.status("lifecycle hook completed"),
                    _ => {}
                }
            }
            Action::Exit { forced } => {
                info!(action = "exit", forced, "drain finished; exiting");
                self.notifier.stopping();
                return Some(Outcome::Stopped { forced });
            }
        }
        None
    }

    fn fetch_jit_config(&self, id: RequestId) {
        let Some(url) = self.settings.jit_url.clone() else {
            // Checked at start (Settings::require_jit_url): the core only asks in JIT mode.
            let _ = self.tx.send(Event::Jit {
                id,
                result: Err(JitFetchError::Config("runner.jit_url is not set".into())),
                took: Duration::ZERO,
            });
            return;
        };
        let (sdk, jit) = (self.discovered.sdk.clone(), self.discovered.jit.clone());
        let timeout = self.settings.api_timeout;
        let tx = self.tx.clone();
        let started = crate::clock::now_instant();
        tokio::spawn(async move {
            let mut result = jit.fetch_jit_config(&url, &sdk, timeout).await;
            if let Err(JitFetchError::Outstanding { runner_id, .. }) = &result {
                // The agent asks only when it holds no config, so the unused one the controller
                // names was lost: minted for this host before a restart of the agent, or its answer
                // lost in transit. Release it (the controller checks it is this instance's) and ask
                // again, instead of leaving the host out of service until it expires.
                let runner_id = *runner_id;
                let released = jit.release_runner(&url, &sdk, timeout, runner_id).await;
                info!(runner_id, released = ?released, "released an unused config this agent does not hold");
                if matches!(released, Ok(Release::Removed | Release::NotFound)) {
                    result = jit.fetch_jit_config(&url, &sdk, timeout).await;
                }
            }
            let _ = tx.send(Event::Jit {
                id,
                result,
                took: started.elapsed(),
            });
        });
    }

    /// Release the current listener's JIT registration (the controller deletes it at GitHub, which
    /// refuses if a job is assigned). Its answer goes to the core as `ApiReply::Released`.
    fn release_runner(&self, id: RequestId) {
        let (Some(url), Some((name, runner_id))) = (self.settings.jit_url.clone(), self.current_runner.clone()) else {
            // An adopted listener (its registration is unknown after a restart), or no URL: the core
            // falls back to the latch and the last look.
            let e = ApiError::new(
                ApiErrorKind::Other,
                "this listener's registration is not known to the agent",
            );
            self.call(id, Call::ReleaseRunner, async move { Err(e) });
            return;
        };
        info!(runner = %lifecycle_escape::escape(&name), runner_id, "releasing the registration");
        let (sdk, jit) = (self.discovered.sdk.clone(), self.discovered.jit.clone());
        let timeout = self.settings.api_timeout;
        self.call(id, Call::ReleaseRunner, async move {
            let released = jit.release_runner(&url, &sdk, timeout, runner_id).await;
            released.map(ApiReply::Released).map_err(|e| jit_error(&e))
        });
    }

    fn call<F>(&self, id: RequestId, call: Call, fut: F)
    where
        F: std::future::Future<Output = Result<ApiReply, ApiError>> + 'static + Send,
    {
        let tx = self.tx.clone();
        let started = crate::clock::now_instant();
        tokio::spawn(async move {
            let result = fut.await;
            let _ = tx.send(Event::Api {
                id,
                call,
                result,
                took: started.elapsed(),
            });
        });
    }

    /// The listener's environment: never the agent's own (runner_env): an allowlist, the runner
    /// user's identity, the runner's `.env`, and what the job hooks need to find the agent.
    fn listener_env(&self, runner_dir: &std::path::Path) -> std::collections::BTreeMap<OsString, OsString> {
        let dot_env = match runner_env::read_env_file(&runner_dir.join(".env"), self.account.as_ref()) {
            Ok(Some(text)) => runner_env::parse_env_file(&text),
            Ok(None) => Vec::new(),
            Err(e) => {
                warn!(error = %lifecycle_escape::escape(&e), "the runner's .env is not used");
                Vec::new()
            }
        };
        let mut extra: Vec<(&str, OsString)> = vec![
            (env_vars::AGENT_SOCKET, self.settings.socket.clone().into_os_string()),
            (env_vars::AWS_INSTANCE_ID, self.discovered.instance_id.clone().into()),
            (env_vars::AWS_REGION, self.discovered.region.clone().into()),
        ];
        if let Some(group) = &self.discovered.group {
            extra.push((env_vars::AWS_GROUP, group.clone().into()));
        }
        runner_env::build(std::env::vars_os(), self.account.as_ref(), &dot_env, &extra)
    }

    fn spawn_listener(&mut self) {
        // Checked again before every listener (tree.rs): a tree the runner's user (so the last job)
        // could change never runs as root's next listener.
        if let Err(e) = self.settings.check_runner_tree(self.account.as_ref()) {
            error!(error = %lifecycle_escape::escape(&e.to_string()), "not starting the listener");
            self.queue.push_back(Input::ListenerExited { code: None });
            return;
        }
        let runner_dir = self.settings.runner_dir.clone().unwrap_or_default();
        let jit = self.settings.runner_mode == ListenerMode::Jit;
        if jit && self.jit_config.is_none() {
            // The core starts a JIT listener only with a config held; without one, say so and let
            // the exit path fetch a fresh one.
            error!("no just-in-time config held for the listener; fetching one");
            self.queue.push_back(Input::ListenerExited { code: None });
            return;
        }
        // Nothing of the previous job may see the next listener (a process left behind by a job
        // could read the new listener's environment, or kill it and use its config to receive the
        // next job): the earlier listeners' cgroups are killed and empty, and in JIT mode every
        // process of the runner's user is gone and the job's files are cleaned.
        let cgroup = match self.prepare_next_listener(jit) {
            Ok(dir) => dir,
            Err(e) => {
                error!(error = %lifecycle_escape::escape(&e), "cannot clear what the last job left; not starting the listener now");
                self.queue.push_back(Input::ListenerExited { code: None });
                return;
            }
        };
        let mut env = self.listener_env(&runner_dir);
        // Held: checked above.
        if let Some(grant) = self.jit_config.take_if(|_| jit) {
            info!(runner = %lifecycle_escape::escape(&grant.runner_name), "starting a just-in-time listener");
            self.current_runner = Some((grant.runner_name.clone(), grant.runner_id));
            // Off argv (world-readable): the listener reads ACTIONS_RUNNER_INPUT_JITCONFIG as
            // --jitconfig and removes it from its environment (docs/controller.md, "How the runner
            // consumes a JIT config").
            env.insert(
                OsString::from(env_vars::RUNNER_INPUT_JITCONFIG),
                OsString::from(grant.encoded_jit_config.expose()),
            );
        }
        if let Some(user) = &self.account {
            crate::tree::before_listener(&runner_dir, user, self.settings.runner_mode == ListenerMode::Jit);
        }
        // A fresh perf directory per incarnation: the listener reports each job message there before
        // it acquires the job (the latch). Without one the listener still runs; the drain then has
        // /proc and the last look only.
        self.perf = match self.perf_root.fresh(self.account.as_ref().map(|u| u.gid)) {
            Ok(perf) => {
                env.insert(
                    OsString::from(crate::perflog::ENV_VAR),
                    perf.dir().as_os_str().to_owned(),
                );
                Some(perf)
            }
            Err(e) => {
                warn!(error = %e, "cannot make the listener's perf directory; the drain relies on /proc and the last look");
                None
            }
        };
        self.perf_failing = false;
        if let Some(host) = self.start_engine(cgroup.as_deref()) {
            env.insert(OsString::from("DOCKER_HOST"), host);
        }
        let args = self.settings.runner_command.get(1..).unwrap_or_default();
        let mut cmd = match &self.account {
            // As another user: through the launcher, which sets the groups too (runner_env::EXEC_AS),
            // and joins the listener's cgroup before the listener exists.
            Some(user) => {
                let mut cmd = tokio::process::Command::new("/proc/self/exe");
                cmd.args(launcher_args(user, cgroup.as_deref(), &self.program, args));
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new(&self.program);
                cmd.args(args);
                cmd
            }
        };
        cmd.current_dir(runner_dir)
            .stdin(Stdio::null())
            // A pipe the agent reads and logs as the listener's, never the agent's own stdout and
            // stderr: a job could take those from its listener (pidfd_getfd) and write into the
            // agent's journal stream (issue 16).
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: signals for the agent (systemd, a terminal's Ctrl-C) never
            // reach it, because SIGINT/SIGTERM to the listener cancels the running job.
            .process_group(0)
            .kill_on_drop(false)
            // Nothing of the agent's environment but the allowlist: no AWS keys, no agent
            // settings, not systemd's notification socket (NotifyAccess=main).
            .env_clear()
            .envs(env);
        match cmd.spawn() {
            Ok(mut child) => {
                let Some(pid) = child.id() else {
                    error!("listener exited before its pid could be read");
                    self.queue.push_back(Input::ListenerExited { code: None });
                    return;
                };
                if let (Some(dir), None) = (&cgroup, &self.account) {
                    // No launcher (the listener runs as the agent's user): moved right after the
                    // spawn; what it forked in between stays outside (nothing: it has just started).
                    if let Err(e) = isolation::join(dir, pid) {
                        warn!(error = %e, "cannot move the listener into its cgroup");
                    }
                }
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(forward_output(out, pid, "stdout"));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(forward_output(err, pid, "stderr"));
                }
                self.listener_cgroup = cgroup;
                self.worker_handles.clear();
                let start_time = procs::stat(pid).map_or(0, |s| s.id.start_time);
                self.listener = Some(Listener {
                    id: ProcId { pid, start_time },
                    ours: true,
                });
                self.workers.clear();
                info!(pid, "listener started");
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    use std::os::unix::process::ExitStatusExt;
                    let (code, signal) = match child.wait().await {
                        Ok(status) => (status.code(), status.signal()),
                        Err(_) => (None, None),
                    };
                    let _ = tx.send(Event::ListenerExited { pid, code, signal });
                });
                self.queue.push_back(Input::ListenerStarted { pid });
            }
            Err(e) => {
                error!(program = %self.program.display(), error = %e, "cannot start the listener");
                if let (Some(cg), Some(dir)) = (&self.cgroups, &cgroup) {
                    let _ = cg.sweep(None);
                    let _ = std::fs::remove_dir(dir);
                }
                self.queue.push_back(Input::ListenerExited { code: None });
            }
        }
    }

    /// Before a listener starts: kill and empty every earlier listener's cgroup (all modes); in JIT
    /// mode, also kill what runs as the runner's user elsewhere and clean the last job's files.
    /// The new listener's cgroup, when there are cgroups.
    fn prepare_next_listener(&mut self, jit: bool) -> Result<Option<PathBuf>, String> {
        if let Some(cg) = &self.cgroups {
            let (procs, took) = cg.sweep(None)?;
            let took_ms = took.as_secs_f64() * 1e3;
            if procs > 0 {
                warn!(
                    processes = procs,
                    took_ms, "killed the cgroups of earlier listeners: nothing their jobs started runs on"
                );
            } else {
                debug!(took_ms, "earlier listeners' cgroups are empty");
            }
        }
        if jit {
            self.clear_runner_user();
            self.clean_job_state(false);
            if self.rootless() {
                // The engine's storage (containers, networks, volumes, images) lies in the runner's
                // home: the first pass removed what the runner's user owns, this one, in the
                // engine's user namespace, what container users (subordinate ids) left there and
                // in the temp directories.
                self.clean_job_state(true);
                let left = self.engine_root.remove_old();
                if left > 0 {
                    warn!(
                        left,
                        "earlier engines' runtime directories are not empty; removed next time"
                    );
                }
            }
        }
        match self.cgroups.as_mut() {
            Some(cg) => cg
                .create("listener")
                .map(Some)
                .map_err(|e| format!("cannot make the listener's cgroup: {e}")),
            None => Ok(None),
        }
    }

    /// JIT mode, before the next listener: the last job's files go (the runner's `_work`, what the
    /// runner's user owns in the temp directories, its home). As the runner's user, through the
    /// launcher, in a cgroup of its own (crate::cleaner). Bounded: after [`CLEAN_TIMEOUT`] the
    /// cleaner is killed and the listener starts anyway.
    fn clean_job_state(&mut self, in_namespace: bool) {
        let Some(user) = self.account.clone() else { return };
        if user.uid == 0 || user.uid == rustix::process::getuid().as_raw() {
            return;
        }
        let started = crate::clock::now_instant();
        let runner_dir = self.settings.runner_dir.clone();
        let home = (user.home.is_absolute() && user.home.parent().is_some()).then(|| user.home.clone());
        let plan = crate::cleaner::Plan {
            work: runner_dir.as_ref().map(|d| d.join("_work")),
            keep: runner_dir,
            home,
            tmp: crate::cleaner::TEMP_DIRS
                .iter()
                .map(PathBuf::from)
                .chain(self.rootless().then(|| self.engine_root.path().to_path_buf()))
                .collect(),
        };
        let dir = self.cgroups.as_mut().and_then(|cg| cg.create("clean").ok());
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.env_clear();
        match in_namespace.then(|| self.engine_namespace(&user)).flatten() {
            // In the rootless engine's user namespace (`podman unshare`): the files a container
            // user left (owned by a subordinate id) are the job's too, and removable there.
            Some((runtime, exe)) => {
                let mut args = engine::unshare_args(&exe);
                args.extend(plan.args().iter().map(|a| a.to_string_lossy().into_owned()));
                cmd.args(launcher_args(&user, dir.as_deref(), &self.settings.podman, &args))
                    .envs(engine::env(&user, &runtime, &self.engine_confs()));
            }
            None => {
                cmd.args(launcher_args(
                    &user,
                    dir.as_deref(),
                    std::path::Path::new("/proc/self/exe"),
                    &[],
                ))
                .args(plan.args())
                .env("PATH", "/usr/bin:/bin");
            }
        }
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let outcome = run_bounded(cmd, CLEAN_TIMEOUT);
        if let (Some(cg), Some(d)) = (&self.cgroups, &dir) {
            if let Err(e) = cg.sweep(None) {
                warn!(error = %lifecycle_escape::escape(&e), "the cleaner's cgroup did not empty");
            }
            let _ = std::fs::remove_dir(d);
        }
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        match outcome.and_then(|out| {
            serde_json::from_slice::<crate::cleaner::Report>(&out)
                .map_err(|e| format!("unreadable report ({e}): {}", lifecycle_escape::escape_bytes(&out)))
        }) {
            Ok(r) => info!(
                total_ms,
                work_ms = r.work_us as f64 / 1e3,
                tmp_ms = r.tmp_us as f64 / 1e3,
                home_ms = r.home_us as f64 / 1e3,
                work_removed = r.work_removed,
                tmp_removed = r.tmp_removed,
                home_removed = r.home_removed,
                failed = r.failed,
                in_namespace,
                "the last job's files are cleaned"
            ),
            Err(e) => warn!(total_ms, error = %lifecycle_escape::escape(&e), "cleaning the last job's files failed"),
        }
    }

    /// The rootless engine's runtime directory and this binary's path, to run the cleaner in the
    /// engine's user namespace; `None` without a rootless engine (or when this binary's path is gone).
    fn engine_namespace(&mut self, user: &User) -> Option<(PathBuf, PathBuf)> {
        if !self.rootless() {
            return None;
        }
        let exe = std::env::current_exe().ok().filter(|p| p.is_file())?;
        let runtime = self.engine_root.fresh(user).ok()?;
        Some((runtime, exe))
    }

    fn engine_confs(&self) -> engine::Confs {
        engine::Confs {
            engine: self.settings.containers_conf.clone(),
            storage: self.settings.containers_storage_conf.clone(),
        }
    }

    fn rootless(&self) -> bool {
        self.settings.containers_mode == engine::ContainerMode::Rootless && self.account.is_some()
    }

    /// The rootless engine for the next listener, in the listener's cgroup, as the runner's user;
    /// `DOCKER_HOST` for the listener once its socket answers. `None` (and a warning) when it
    /// cannot start: the listener starts anyway, and a container job fails on its own.
    fn start_engine(&mut self, cgroup: Option<&std::path::Path>) -> Option<OsString> {
        let user = self.account.clone().filter(|_| self.rootless())?;
        let started = crate::clock::now_instant();
        let dir = match self.engine_root.fresh(&user) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot make the container engine's runtime directory; no engine for this listener");
                return None;
            }
        };
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.args(launcher_args(
            &user,
            cgroup,
            &self.settings.podman,
            &engine::service_args(&dir),
        ))
        .current_dir("/")
        .env_clear()
        .envs(engine::env(&user, &dir, &self.engine_confs()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot start the container engine; no engine for this listener");
                return None;
            }
        };
        let pid = child.id().unwrap_or(0);
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err, pid, "engine"));
        }
        // Reaped when it ends (with the listener's cgroup).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        while !engine::listening(&dir) {
            if started.elapsed() >= engine::START_TIMEOUT {
                warn!(
                    timeout_s = engine::START_TIMEOUT.as_secs(),
                    "the container engine did not answer; the listener starts without DOCKER_HOST"
                );
                return None;
            }
            crate::clock::pause(Duration::from_millis(10));
        }
        info!(
            pid,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "container engine ready"
        );
        Some(engine::docker_host(&dir))
    }

    /// SIGKILL every process of the runner's user (JIT mode, before each listener): none may outlive
    /// the job that started it. Only when the listener runs as a user of its own (`runner.user`, not
    /// root, not the agent's): the agent's own processes are never touched.
    fn clear_runner_user(&self) {
        let Some(user) = self.account.as_ref() else { return };
        if user.uid == 0 || user.uid == rustix::process::getuid().as_raw() {
            return;
        }
        let (uid, ranges) = (user.uid, &self.subordinate);
        let (killed, cgroups) =
            procs::kill_processes_of(&|u| u == uid || ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&u)));
        if killed > 0 {
            let cgroups = lifecycle_escape::clip(&cgroups.join(" "), 400);
            warn!(
                uid = user.uid,
                killed,
                cgroups = %cgroups,
                "killed processes of the runner's user left from the last job"
            );
        }
    }

    fn signal_listener(&mut self, sig: rustix::process::Signal) {
        let Some(listener) = self.listener else {
            warn!("no listener to signal");
            return;
        };
        // Never signal a recycled pid: the start time must still match. If /proc cannot be read,
        // the pid cannot be checked either: no signal this time (SIGKILL follows after the grace).
        let liveness = if listener.id.start_time == 0 {
            procs::Liveness::Alive
        } else {
            procs::liveness(listener.id)
        };
        if liveness == procs::Liveness::Unknown {
            warn!(
                pid = listener.id.pid,
                "cannot read /proc to check the listener's pid; not signalling it now"
            );
            return;
        }
        if liveness == procs::Liveness::Gone {
            warn!(pid = listener.id.pid, "listener already gone");
            if !listener.ours {
                self.listener = None;
                self.workers.clear();
                self.queue.push_back(Input::ListenerExited { code: None });
            }
            return;
        }
        let Some(pid) = rustix::process::Pid::from_raw(listener.id.pid as i32) else {
            return;
        };
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            warn!(pid = listener.id.pid, error = %e, "signalling the listener failed");
        }
    }
}

/// The launcher's arguments: `exec-as [--cgroup=DIR] UID GID GROUPS PROGRAM ARGS...`.
fn launcher_args(
    user: &User,
    cgroup: Option<&std::path::Path>,
    program: &std::path::Path,
    args: &[String],
) -> Vec<OsString> {
    let mut out = runner_env::exec_as_args(user, program, args);
    if let Some(dir) = cgroup {
        let mut flag = OsString::from(runner_env::CGROUP_FLAG);
        flag.push(dir.as_os_str());
        out.insert(1, flag);
    }
    out
}

/// The start-up checks of `containers.mode`: the warning when every job is root on this host
/// (docker-group, or the runner's user in the `docker` group), a rootless mode that cannot work,
/// and the runner user's subordinate uid ranges (killed between jobs with its own processes).
fn container_start_checks(settings: &Settings, account: Option<&User>) -> Vec<(u32, u32)> {
    let mode = settings.containers_mode;
    let Some(user) = account else {
        if mode == engine::ContainerMode::Rootless {
            warn!("containers.mode is rootless but runner.user is not set: no container engine is started");
        }
        return Vec::new();
    };
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if let Some(w) = engine::root_warning(mode, engine::in_docker_group(&groups, user)) {
        warn!(warning = w, "jobs are root on this host");
    }
    if mode != engine::ContainerMode::Rootless {
        return Vec::new();
    }
    if !settings.podman.is_file() {
        warn!(podman = %settings.podman.display(), "containers.mode is rootless but podman is not there; install it (docs/operations.md, \"Container jobs\")");
    }
    let ranges = engine::subordinate_ranges(&std::fs::read_to_string("/etc/subuid").unwrap_or_default(), user);
    if ranges.is_empty() {
        warn!(user = %user.name, "the runner's user has no range in /etc/subuid: rootless containers cannot start (install --containers rootless adds one)");
    }
    ranges
}

/// How long the cleaner may run between two jobs (the agent waits for it: below the watchdog's 60 s).
const CLEAN_TIMEOUT: Duration = Duration::from_secs(30);

/// Run `cmd` to its end or `timeout` (then it is killed), and return its stdout (at most 64 KiB) when
/// it exited 0.
fn run_bounded(mut cmd: std::process::Command, timeout: Duration) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let deadline = crate::clock::now_instant() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if crate::clock::now_instant() < deadline => crate::clock::pause(Duration::from_millis(1)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {timeout:?}"));
            }
        }
    };
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(64 * 1024).read_to_end(&mut out);
    }
    if !status.success() {
        let mut err = Vec::new();
        if let Some(e) = child.stderr.take() {
            let _ = e.take(4096).read_to_end(&mut err);
        }
        return Err(format!("{status}: {}", lifecycle_escape::escape_bytes(&err)));
    }
    Ok(out)
}

/// The most bytes of one line of listener output logged (the rest is dropped, `clipped`).
const OUTPUT_LINE_MAX: usize = 2048;
/// Lines of listener output logged in a burst, and per second after it: a job flooding its
/// listener's stdout cannot flood the agent's journal (the rest is counted, `suppressed`).
const OUTPUT_BURST: f64 = 200.0;
const OUTPUT_PER_SECOND: f64 = 20.0;

/// Log what the listener writes on one of its streams, line by line, escaped, each line clipped and
/// the rate bounded. Ends when the listener (and everything that inherited the pipe) closed it.
async fn forward_output<R: tokio::io::AsyncRead + Unpin>(mut reader: R, pid: u32, stream: &'static str) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut clipped = false;
    let mut tokens = OUTPUT_BURST;
    let mut last = tokio::time::Instant::now();
    let mut suppressed: u64 = 0;
    let mut emit = |line: &[u8], clipped: bool, suppressed: &mut u64| {
        let now = tokio::time::Instant::now();
        tokens = (tokens + now.duration_since(last).as_secs_f64() * OUTPUT_PER_SECOND).min(OUTPUT_BURST);
        last = now;
        if tokens < 1.0 {
            *suppressed += 1;
            return;
        }
        tokens -= 1.0;
        if *suppressed > 0 {
            warn!(
                listener_pid = pid,
                stream,
                suppressed = *suppressed,
                "listener output suppressed (rate limit)"
            );
            *suppressed = 0;
        }
        let text = lifecycle_escape::escape_bytes(line);
        info!(listener_pid = pid, stream, clipped, line = %text, "listener output");
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line, clipped, &mut suppressed);
                line.clear();
                clipped = false;
            } else if line.len() < OUTPUT_LINE_MAX {
                line.push(b);
            } else {
                clipped = true;
            }
        }
    }
    if !line.is_empty() {
        emit(&line, clipped, &mut suppressed);
    }
    if suppressed > 0 {
        warn!(
            listener_pid = pid,
            stream, suppressed, "listener output suppressed (rate limit)"
        );
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A failed JIT fetch as the core sorts it: rate limits, 5xx and transport failures are retried
/// with the core's capped backoff; a refusal (403, 409: the controller will not mint for this host
/// now) and a local misconfiguration slowly (`slow_retry`), because a person has to act.
fn jit_error(e: &JitFetchError) -> ApiError {
    let kind = match e {
        JitFetchError::Retryable { after: Some(_), .. } => ApiErrorKind::Throttled,
        JitFetchError::Retryable { .. } => ApiErrorKind::Transient,
        JitFetchError::Refused { status: 403, .. } => ApiErrorKind::AccessDenied,
        JitFetchError::Refused { .. } | JitFetchError::Outstanding { .. } | JitFetchError::Config(_) => {
            ApiErrorKind::Other
        }
    };
    let after = match e {
        JitFetchError::Retryable { after, .. } => *after,
        _ => None,
    };
    ApiError::new(kind, e.to_string()).with_retry_after(after)
}

fn cause_text(cause: DrainCause) -> &'static str {
    match cause {
        DrainCause::Terminating => "instance terminating",
        DrainCause::StopRequested => "agent stopping",
        DrainCause::SpotInterruption => "spot interruption",
        DrainCause::Rebalance => "rebalance recommendation",
        DrainCause::JobDone => "one instance per job: its job is done",
    }
}

fn log_notice(notice: &Notice) {
    match notice {
        Notice::TerminationDetected { via } => {
            info!(notice = "termination-detected", via = %via, "termination detected")
        }
        Notice::StateConfirmed { state } => {
            info!(notice = "state-confirmed", state = %state, "Auto Scaling state confirmed")
        }
        Notice::DrainStarted { cause } => info!(notice = "drain-started", cause = %cause, "drain started: no new jobs"),
        Notice::JobAssigned => info!(notice = "job-assigned", "job assigned"),
        Notice::JobEnded => info!(notice = "job-ended", "job ended"),
        Notice::HookGone => warn!(
            notice = "hook-gone",
            "no active lifecycle action left (completed elsewhere or timed out)"
        ),
        Notice::HookCompleted { already_done } => {
            info!(notice = "hook-completed", already_done, "lifecycle action completed")
        }
        Notice::ApiFailed {
            call,
            error,
            retry_in_ms,
        } => {
            if *call == Call::ReleaseRunner {
                warn!(notice = "api-failed", call = %call, kind = %error.kind, error = %error.message, "the release of the registration failed; the stop relies on the perf-log latch and the last look")
            } else if *call == Call::MintJitConfig {
                warn!(notice = "api-failed", call = %call, kind = %error.kind, error = %error.message, retry_in_ms, "just-in-time config fetch failed; will retry (the host serves no job until one is held)")
            } else {
                warn!(notice = "api-failed", call = %call, kind = %error.kind, error = %error.message, retry_in_ms, "Auto Scaling call failed; will retry")
            }
        }
        Notice::GlobalTimeoutNear { remaining_ms } => {
            warn!(
                notice = "global-timeout-near",
                remaining_ms, "the lifecycle action's global timeout is near: the job may be cut off"
            )
        }
        Notice::ListenerGaveUp { code } => {
            error!(
                notice = "listener-gave-up",
                code, "the listener exited and will not be relaunched"
            )
        }
        Notice::ListenerDiedWithJob => {
            error!(
                notice = "listener-died-with-job",
                "the listener exited while a job ran: that job is lost"
            )
        }
        Notice::JobLost { cause } => {
            error!(notice = "job-lost", cause = %cause, "a job was lost")
        }
        Notice::ForcingStopWithJob => {
            error!(
                notice = "forcing-stop-with-job",
                "forced stop while a job runs: the job will be cancelled"
            )
        }
        Notice::RebalanceRecommended => info!(notice = "rebalance-recommended", "rebalance recommended"),
        Notice::HookClaimDropped => warn!(
            notice = "hook-claim-dropped",
            "a job-started report with no Runner.Worker under the listener was dropped (a hook report is a hint; /proc is the truth)"
        ),
        Notice::NotInGroup => info!(
            notice = "not-in-group",
            "instance is in no Auto Scaling group: serving without protection or hooks"
        ),
        Notice::StopHeld { reason, for_ms } => info!(
            notice = "stop-held",
            reason = %reason,
            for_ms,
            "holding the stop of the idle listener: a job may be landing on it"
        ),
        Notice::LeftGroup => info!(
            notice = "left-group",
            "one instance per job: the group is terminating this instance and launching a replacement"
        ),
        Notice::RunnerReleased { outcome } => info!(
            notice = "runner-released",
            outcome = %outcome,
            "the controller answered the release of this host's registration"
        ),
    }
}
