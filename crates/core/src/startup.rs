//! The agent before its [`Host`](crate::Host) runs: who am I (identity), which group and hook drive
//! me (discovery), and what to do with stop requests and job hooks that arrive meanwhile.
//!
//! A second small sans-IO machine in the style of [`Host`](crate::Host): inputs carry `now`, side
//! effects come out as [`StartupAction`]s, [`Startup::next_timer`] names the next deadline. The
//! agent and the fleet simulator both drive it.
//!
//! The rules:
//!
//! - Identity first (instance id and region, from IMDS unless configured), then discovery
//!   (DescribeAutoScalingInstances and DescribeLifecycleHooks, unless configured). A step that fails
//!   is retried after a jittered exponential backoff ([`backoff`]); identity once read is kept.
//! - A stop request before discovery ends the agent at once when no listener runs (there is nothing
//!   to drain). With an adopted listener the first stop is kept for the core (it drains the
//!   listener), a second one exits at once (forced), leaving the listener unsupervised.
//! - A job hook before discovery is answered "noted" (an error: the agent cannot protect the instance
//!   yet) and kept as state, not history (a job can call the hook in a loop): at hand-over the core
//!   gets at most "started, then completed", which reproduces what it keeps from hooks.
//! - Once discovery succeeds, [`StartupAction::HandOver`] carries the inputs the core must replay,
//!   exactly once.

use crate::backoff::Backoff;
use crate::io::Input;
use crate::rng::Rng;
use crate::time::Time;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// First retry delay before jitter, and the base the backoff doubles from.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// No retry waits longer than this. Thirty seconds bounds how long a host that could start stays
/// blind (its hooks answered "noted", no protection) after the fault clears, and keeps a fleet's
/// discovery calls to about two a minute per host under a long throttling episode.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Discovery's backoff: [`BACKOFF_BASE`] doubling to [`BACKOFF_CAP`] (2, 4, 8, 16, 30, 30, ...
/// seconds), each delay scaled by a uniform factor in `[JITTER_LO, 1)` ("equal jitter", the one
/// rule of [`crate::backoff`]). Half the delay is kept so retries never hammer the API; the random
/// other half spreads a fleet that booted together (a scale-out launches many hosts at once, and
/// every Auto Scaling call of an account draws from one token bucket), so their retries do not land
/// in step.
pub const BACKOFF: Backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);

/// What the startup machine needs to know about the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartupConfig {
    /// A listener from a previous agent was adopted (a stop request must drain it, not just exit).
    pub have_listener: bool,
}

/// One step of the startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StartupStep {
    /// Read the instance id and region.
    Identity,
    /// Find the group and its termination hook.
    Discovery,
}

wire_names! {
    StartupStep { Identity => "identity", Discovery => "discovery" }
}

/// A deadline of the startup machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StartupTimer {
    /// The failed step may be tried again.
    Retry(StartupStep),
}

impl StartupTimer {
    /// The one spelling of this timer in logs and status.
    pub fn name(self) -> &'static str {
        match self {
            StartupTimer::Retry(StartupStep::Identity) => "retry-identity",
            StartupTimer::Retry(StartupStep::Discovery) => "retry-discovery",
        }
    }
}

impl fmt::Display for StartupTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A job hook's report, as the startup machine keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookReport {
    /// `job-started`.
    Started,
    /// `job-completed`.
    Completed,
}

/// An observation fed to [`Startup::handle_input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupInput {
    /// The identity was read.
    IdentityRead,
    /// Reading the identity failed.
    IdentityFailed {
        /// Why (for the log).
        error: String,
    },
    /// Discovery answered: the core can run.
    Discovered,
    /// Discovery failed.
    DiscoveryFailed {
        /// Why (for the log).
        error: String,
        /// The API said `Throttling`: the backoff steps twice as fast.
        throttled: bool,
    },
    /// SIGTERM or SIGINT.
    StopRequested,
    /// A job hook called the socket.
    Hook(HookReport),
}

/// Why the agent exits before its core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupExit {
    /// A stop request and no listener to drain.
    StopNoListener,
    /// A second stop request while an adopted listener runs: it keeps running unsupervised.
    SecondStop,
}

impl StartupExit {
    /// Whether the exit counts as forced.
    pub fn forced(self) -> bool {
        matches!(self, StartupExit::SecondStop)
    }
}

/// A side effect the driver carries out.
#[derive(Clone, Debug, PartialEq)]
pub enum StartupAction {
    /// Read the instance identity; answer with `IdentityRead` or `IdentityFailed`.
    ReadIdentity,
    /// Discover the group and hook; answer with `Discovered` or `DiscoveryFailed`.
    Discover,
    /// A step failed and will be retried after `delay` (for the log and status).
    RetryLater {
        /// Which step.
        step: StartupStep,
        /// Consecutive failures of this startup so far.
        attempt: u32,
        /// The jittered wait.
        delay: Duration,
        /// What went wrong.
        error: String,
    },
    /// Answer the hook that just reported: the agent is starting, the job is noted.
    AnswerHookNoted {
        /// Hooks noted so far (this one included).
        noted: u64,
    },
    /// Start the core and feed it `replay` (after what the driver itself observes: adopted
    /// processes). Comes exactly once; nothing follows.
    HandOver {
        /// Early hooks (at most started, completed) then one `StopRequested` per stop request.
        replay: Vec<Input>,
    },
    /// Exit without starting the core. Nothing follows.
    Exit(StartupExit),
}

/// Where the startup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupPhase {
    /// A step is being carried out by the driver.
    Running(StartupStep),
    /// A step waits for its retry.
    Waiting(StartupStep, Time),
    /// Handed over to the core.
    HandedOver,
    /// Exited.
    Exited(StartupExit),
}

/// The startup machine.
#[derive(Clone, Debug)]
pub struct Startup {
    cfg: StartupConfig,
    rng: Rng,
    now: Time,
    phase: StartupPhase,
    failures: u32,
    stops: u32,
    hooks_noted: u64,
    started_seen: bool,
    last_started: Option<bool>,
    actions: VecDeque<Action>,
}

type Action = StartupAction;

impl Startup {
    /// A startup beginning at `now`; its first action is [`StartupAction::ReadIdentity`]. `seed`
    /// drives the backoff jitter.
    pub fn new(cfg: StartupConfig, seed: u64, now: Time) -> Startup {
        Startup {
            cfg,
            rng: Rng::new(seed),
            now,
            phase: StartupPhase::Running(StartupStep::Identity),
            failures: 0,
            stops: 0,
            hooks_noted: 0,
            started_seen: false,
            last_started: None,
            actions: VecDeque::from([Action::ReadIdentity]),
        }
    }

    /// Where the startup is.
    pub fn phase(&self) -> StartupPhase {
        self.phase
    }

    /// Job hooks noted so far (saturating).
    pub fn hooks_noted(&self) -> u64 {
        self.hooks_noted
    }

    /// Stop requests so far.
    pub fn stops(&self) -> u32 {
        self.stops
    }

    /// Whether the machine is done (handed over or exited).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, StartupPhase::HandedOver | StartupPhase::Exited(_))
    }

    /// Feed one observation. Inputs after the end are ignored.
    pub fn handle_input(&mut self, input: StartupInput, now: Time) {
        self.now = self.now.max(now);
        if self.is_done() {
            return;
        }
        match input {
            StartupInput::IdentityRead => {
                if self.phase == StartupPhase::Running(StartupStep::Identity) {
                    self.phase = StartupPhase::Running(StartupStep::Discovery);
                    self.actions.push_back(Action::Discover);
                }
            }
            StartupInput::IdentityFailed { error } => self.failed(StartupStep::Identity, error, 1),
            StartupInput::Discovered => {
                if self.phase == StartupPhase::Running(StartupStep::Discovery) {
                    self.phase = StartupPhase::HandedOver;
                    let replay = self.replay();
                    self.actions.push_back(Action::HandOver { replay });
                }
            }
            StartupInput::DiscoveryFailed { error, throttled } => {
                self.failed(StartupStep::Discovery, error, if throttled { 2 } else { 1 })
            }
            StartupInput::StopRequested => {
                self.stops = self.stops.saturating_add(1);
                let exit = if !self.cfg.have_listener {
                    Some(StartupExit::StopNoListener)
                } else if self.stops > 1 {
                    Some(StartupExit::SecondStop)
                } else {
                    None
                };
                if let Some(exit) = exit {
                    self.phase = StartupPhase::Exited(exit);
                    self.actions.push_back(Action::Exit(exit));
                }
            }
            StartupInput::Hook(report) => {
                let started = report == HookReport::Started;
                self.hooks_noted = self.hooks_noted.saturating_add(1);
                self.started_seen |= started;
                self.last_started = Some(started);
                self.actions.push_back(Action::AnswerHookNoted {
                    noted: self.hooks_noted,
                });
            }
        }
    }

    /// A step failed: wait, then try it again. A throttled failure counts twice (`weight` 2), so
    /// the backoff reaches its cap in half the attempts while the account's bucket refills.
    fn failed(&mut self, step: StartupStep, error: String, weight: u32) {
        if self.phase != StartupPhase::Running(step) {
            return;
        }
        self.failures = self.failures.saturating_add(weight);
        let delay = BACKOFF.delay(self.failures, &mut self.rng);
        self.phase = StartupPhase::Waiting(step, self.now + delay);
        self.actions.push_back(Action::RetryLater {
            step,
            attempt: self.failures,
            delay,
            error,
        });
    }

    /// Let time pass to `now`; a retry that is due is started.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        if let StartupPhase::Waiting(step, at) = self.phase {
            if at <= self.now {
                self.phase = StartupPhase::Running(step);
                self.actions.push_back(match step {
                    StartupStep::Identity => Action::ReadIdentity,
                    StartupStep::Discovery => Action::Discover,
                });
            }
        }
    }

    /// The next side effect to carry out, if any.
    pub fn poll_action(&mut self) -> Option<StartupAction> {
        self.actions.pop_front()
    }

    /// The next side effect without taking it: a driver that is in the middle of a call carries out
    /// the ones that are immediate (answers, exits, log lines) and leaves the next call queued here.
    pub fn peek_action(&self) -> Option<&StartupAction> {
        self.actions.front()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next timer to come due, and which one.
    pub fn next_timer(&self) -> Option<(Time, StartupTimer)> {
        match self.phase {
            StartupPhase::Waiting(step, at) => Some((at, StartupTimer::Retry(step))),
            _ => None,
        }
    }

    /// What the core must replay from the hooks and stops noted so far.
    fn replay(&self) -> Vec<Input> {
        let mut out = match self.last_started {
            None => Vec::new(),
            Some(true) => vec![Input::JobStartedHook],
            Some(false) if self.started_seen => vec![Input::JobStartedHook, Input::JobCompletedHook],
            Some(false) => vec![Input::JobCompletedHook],
        };
        out.extend((0..self.stops).map(|_| Input::StopRequested));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::JITTER_LO;

    const T0: Time = Time::ZERO;

    fn drain(s: &mut Startup) -> Vec<StartupAction> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn started(have_listener: bool) -> Startup {
        let mut s = Startup::new(StartupConfig { have_listener }, 7, T0);
        assert_eq!(drain(&mut s), vec![StartupAction::ReadIdentity]);
        s
    }

    fn discovered(s: &mut Startup, now: Time) -> Vec<Input> {
        s.handle_input(StartupInput::IdentityRead, now);
        assert_eq!(drain(s), vec![StartupAction::Discover]);
        s.handle_input(StartupInput::Discovered, now);
        match drain(s).as_slice() {
            [StartupAction::HandOver { replay }] => replay.clone(),
            other => panic!("expected a hand-over, got {other:?}"),
        }
    }

    #[test]
    fn identity_then_discovery_then_hand_over() {
        let mut s = started(false);
        assert_eq!(discovered(&mut s, T0), vec![]);
        assert_eq!(s.phase(), StartupPhase::HandedOver);
        assert_eq!(s.next_timer(), None);
        // Nothing after the end, not even a second hand-over.
        s.handle_input(StartupInput::Discovered, T0);
        s.handle_input(StartupInput::StopRequested, T0);
        assert_eq!(drain(&mut s), vec![]);
    }

    #[test]
    fn a_stop_before_discovery_without_listener_exits_at_once() {
        for identity_read in [false, true] {
            let mut s = started(false);
            if identity_read {
                s.handle_input(StartupInput::IdentityRead, T0);
                drain(&mut s);
            }
            s.handle_input(StartupInput::StopRequested, T0);
            assert_eq!(drain(&mut s), vec![StartupAction::Exit(StartupExit::StopNoListener)]);
            assert!(!StartupExit::StopNoListener.forced());
            // A late discovery answer starts nothing.
            s.handle_input(StartupInput::Discovered, T0);
            assert_eq!(drain(&mut s), vec![]);
        }
    }

    #[test]
    fn a_stop_while_waiting_for_a_retry_exits_and_disarms_the_timer() {
        let mut s = started(false);
        s.handle_input(StartupInput::IdentityFailed { error: "down".into() }, T0);
        drain(&mut s);
        assert!(s.next_timer().is_some());
        s.handle_input(StartupInput::StopRequested, T0);
        assert_eq!(drain(&mut s), vec![StartupAction::Exit(StartupExit::StopNoListener)]);
        assert_eq!(s.next_timer(), None);
        s.handle_timeout(Time::from_secs(3600));
        assert_eq!(drain(&mut s), vec![]);
    }

    #[test]
    fn with_an_adopted_listener_the_first_stop_is_replayed_and_the_second_exits_forced() {
        let mut s = started(true);
        s.handle_input(StartupInput::StopRequested, T0);
        assert_eq!(drain(&mut s), vec![]);
        assert_eq!(discovered(&mut s, T0), vec![Input::StopRequested]);

        let mut s = started(true);
        s.handle_input(StartupInput::StopRequested, T0);
        s.handle_input(StartupInput::StopRequested, T0);
        assert_eq!(drain(&mut s), vec![StartupAction::Exit(StartupExit::SecondStop)]);
        assert!(StartupExit::SecondStop.forced());
    }

    #[test]
    fn early_hooks_are_answered_noted_and_replayed_exactly_once() {
        let mut s = started(false);
        for (i, r) in [HookReport::Started, HookReport::Completed, HookReport::Started]
            .into_iter()
            .enumerate()
        {
            s.handle_input(StartupInput::Hook(r), T0);
            assert_eq!(
                drain(&mut s),
                vec![StartupAction::AnswerHookNoted { noted: i as u64 + 1 }]
            );
        }
        assert_eq!(s.hooks_noted(), 3);
        assert_eq!(discovered(&mut s, T0), vec![Input::JobStartedHook]);
        // A hook after the hand-over belongs to the core: the machine neither answers nor replays it.
        s.handle_input(StartupInput::Hook(HookReport::Completed), T0);
        assert_eq!(drain(&mut s), vec![]);
    }

    #[test]
    fn a_flood_of_early_hooks_keeps_constant_state() {
        // Regression: every early hook was pushed onto a Vec (157 MB after 30 s of a hook loop).
        let mut s = started(false);
        for i in 0..1_000_000u32 {
            s.handle_input(
                StartupInput::Hook(if i % 3 == 0 {
                    HookReport::Started
                } else {
                    HookReport::Completed
                }),
                T0,
            );
            s.actions.clear();
        }
        s.handle_input(StartupInput::Hook(HookReport::Completed), T0);
        s.actions.clear();
        assert_eq!(s.hooks_noted(), 1_000_001);
        assert_eq!(
            discovered(&mut s, T0),
            vec![Input::JobStartedHook, Input::JobCompletedHook]
        );
    }

    #[test]
    fn the_nominal_backoff_doubles_to_its_cap() {
        let secs: Vec<u64> = (1..=8).map(|n| BACKOFF.nominal(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(BACKOFF.nominal(u32::MAX), BACKOFF_CAP);
    }

    /// Fail `step` once and return the wait it announced (checking the timer agrees).
    fn fail(s: &mut Startup, now: Time, step: StartupStep, throttled: bool) -> Duration {
        let input = match step {
            StartupStep::Identity => StartupInput::IdentityFailed { error: "e".into() },
            StartupStep::Discovery => StartupInput::DiscoveryFailed {
                error: "e".into(),
                throttled,
            },
        };
        s.handle_input(input, now);
        let delay = match drain(s).as_slice() {
            [StartupAction::RetryLater { step: st, delay, .. }] if *st == step => *delay,
            other => panic!("expected a retry, got {other:?}"),
        };
        assert_eq!(s.next_timer(), Some((now + delay, StartupTimer::Retry(step))));
        // Not before its time, then exactly the step again.
        s.handle_timeout(now + delay - Duration::from_millis(1));
        assert_eq!(drain(s), vec![]);
        s.handle_timeout(now + delay);
        let again = match step {
            StartupStep::Identity => StartupAction::ReadIdentity,
            StartupStep::Discovery => StartupAction::Discover,
        };
        assert_eq!(drain(s), vec![again]);
        delay
    }

    #[test]
    fn retries_are_bounded_and_jittered() {
        let mut delays = Vec::new();
        for seed in 0..50 {
            let mut s = Startup::new(StartupConfig::default(), seed, T0);
            drain(&mut s);
            let mut now = T0;
            let mut mine = Vec::new();
            for n in 1..=10u32 {
                let d = fail(&mut s, now, StartupStep::Identity, false);
                let nominal = BACKOFF.nominal(n);
                assert!(d >= nominal.mul_f64(JITTER_LO) && d <= nominal, "retry {n}: {d:?}");
                assert!(d <= BACKOFF_CAP);
                now = now + d;
                mine.push(d);
            }
            delays.push(mine);
        }
        // Jittered: hosts that fail together do not retry together.
        let firsts: std::collections::BTreeSet<_> = delays.iter().map(|d| d[0]).collect();
        assert!(firsts.len() > 40, "{firsts:?}");
        // Deterministic: same seed, same delays.
        let mut a = Startup::new(StartupConfig::default(), 3, T0);
        let mut b = Startup::new(StartupConfig::default(), 3, T0);
        drain(&mut a);
        drain(&mut b);
        assert_eq!(
            fail(&mut a, T0, StartupStep::Identity, false),
            fail(&mut b, T0, StartupStep::Identity, false)
        );
    }

    #[test]
    fn throttling_backs_off_twice_as_fast_and_identity_is_kept() {
        let mut s = started(false);
        s.handle_input(StartupInput::IdentityRead, T0);
        assert_eq!(drain(&mut s), vec![StartupAction::Discover]);
        let d1 = fail(&mut s, T0, StartupStep::Discovery, true);
        // Counted as two failures: nominal 4 s, not 2 s.
        assert!(
            d1 >= BACKOFF.nominal(2).mul_f64(JITTER_LO) && d1 <= BACKOFF.nominal(2),
            "{d1:?}"
        );
        let d2 = fail(&mut s, T0 + d1, StartupStep::Discovery, true);
        assert!(
            d2 >= BACKOFF.nominal(4).mul_f64(JITTER_LO) && d2 <= BACKOFF.nominal(4),
            "{d2:?}"
        );
        let d3 = fail(&mut s, T0 + d1 + d2, StartupStep::Discovery, true);
        assert!(d3 <= BACKOFF_CAP && d3 >= BACKOFF_CAP.mul_f64(JITTER_LO), "{d3:?}");
        // The retry is discovery again (identity is not read twice), and it can still succeed.
        s.handle_input(StartupInput::Discovered, T0 + d1 + d2 + d3);
        assert!(matches!(drain(&mut s).as_slice(), [StartupAction::HandOver { .. }]));
    }

    #[test]
    fn stale_answers_are_ignored() {
        let mut s = started(false);
        // A discovery answer while identity is being read changes nothing.
        s.handle_input(StartupInput::Discovered, T0);
        s.handle_input(
            StartupInput::DiscoveryFailed {
                error: "e".into(),
                throttled: false,
            },
            T0,
        );
        assert_eq!(drain(&mut s), vec![]);
        assert_eq!(s.phase(), StartupPhase::Running(StartupStep::Identity));
    }

    /// What the core keeps from job hooks (`Host::handle_input`): whether a job is open and
    /// whether the listener has run one.
    fn core_view(inputs: &[Input]) -> (bool, bool) {
        inputs.iter().fold((false, false), |(open, ran), i| match i {
            Input::JobStartedHook => (true, true),
            Input::JobCompletedHook => (false, ran),
            _ => (open, ran),
        })
    }

    #[test]
    fn replaying_the_kept_state_is_replaying_the_history() {
        // Every history of up to 10 hooks.
        for len in 0..=10u32 {
            for bits in 0..(1u32 << len) {
                let history: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                let inputs: Vec<Input> = history
                    .iter()
                    .map(|&st| {
                        if st {
                            Input::JobStartedHook
                        } else {
                            Input::JobCompletedHook
                        }
                    })
                    .collect();
                let mut s = started(false);
                for &st in &history {
                    let report = if st { HookReport::Started } else { HookReport::Completed };
                    s.handle_input(StartupInput::Hook(report), T0);
                }
                assert_eq!(s.hooks_noted(), u64::from(len));
                drain(&mut s);
                let replay = discovered(&mut s, T0);
                assert!(replay.len() <= 2);
                assert_eq!(core_view(&replay), core_view(&inputs), "{history:?}");
            }
        }
    }
}
