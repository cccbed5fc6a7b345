//! When a launch fails, what next: a pure decision over "attempt, error kind, time left", so the
//! policy is tested without clocks or AWS (the handler drives it, `handler::Controller::launch`).
//!
//! The launch hook holds a new instance in `Pending:Wait` until `CompleteLifecycleAction` or until
//! its `HeartbeatTimeout` (30 to 7200 s) runs out, when AWS applies the hook's `DefaultResult`;
//! `RecordLifecycleActionHeartbeat` restarts that timeout (EC2 Auto Scaling User Guide, "Amazon
//! EC2 Auto Scaling lifecycle hooks"; API reference of both actions). So:
//!
//! - a **permanent** failure (GitHub 401/403/404, any 4xx but 429, a configuration problem, AWS
//!   AccessDenied) abandons at once: retrying cannot help, and a host that can never register
//!   should be replaced now rather than after the hook's timeout;
//! - a **retryable** one (GitHub 429 or a rate limit, 5xx, a timeout; AWS throttling or 5xx) is
//!   retried after a capped exponential backoff with jitter while the hook has time: by itself
//!   (another attempt *and* the final completion fit before it times out, [`RESERVE`]), or held
//!   by heartbeats, one before the wait and more during a long one (a rate limit's wait may be
//!   longer than the `HeartbeatTimeout`). Heartbeats cannot pass the action's global timeout
//!   (`GlobalTimeout`: 100 times the `HeartbeatTimeout` or 48 hours, whichever is smaller; API
//!   reference, `LifecycleHook`): when the wait would, or when heartbeats are impossible and the
//!   hook's own time is too short, the launch is abandoned while we can still say so ("time
//!   nearly out"). When the hook's `HeartbeatTimeout` cannot be read, the AWS default (3600 s) is
//!   assumed for those limits and the hook is heartbeated as if it were the API's minimum (30 s),
//!   so an unreadable hook is neither abandoned for lack of time nor left to lapse;
//! - the **invocation's own deadline** (the Lambda function's timeout) is never crossed: when the
//!   next attempt would not fit before it, the handler hands the event back (returns the
//!   retryable error, so Lambda's asynchronous retry redelivers it about a minute later, AWS
//!   Lambda Developer Guide, "Error handling and automatic retries in Lambda"), heartbeating the
//!   hook first when it would otherwise time out before that redelivery could finish.
//!   Abandoning there instead would replace an instance for a few seconds of GitHub trouble;
//!   letting the function be killed mid-attempt would skip the heartbeat.

use std::time::Duration;

/// The first wait after a failure; doubled per attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between attempts (a rate limit's own hint may ask for longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest one attempt is expected to take: the GitHub client's own retries of one request
/// (three attempts of at most 10 s each, `lifecycle_github::Options`) or the Secrets Manager write
/// (the SDK's attempt timeout is 10 s). A slower attempt only makes the completion late, and a
/// late completion is answered "no active lifecycle action": the hook's DefaultResult applies.
pub const ATTEMPT_RESERVE: Duration = Duration::from_secs(30);
/// Kept for the final `CompleteLifecycleAction` (or the heartbeat and the hand-back): one Auto
/// Scaling call, whose SDK attempt timeout is 10 s.
pub const COMPLETE_RESERVE: Duration = Duration::from_secs(10);
/// What must still fit after a wait: one more attempt and the completion. This is the "time
/// nearly out" margin: with less than this left on the hook (and no heartbeat possible) the
/// launch is abandoned now, while the ABANDON can still reach AWS before the timeout.
pub const RESERVE: Duration = Duration::from_secs(ATTEMPT_RESERVE.as_secs() + COMPLETE_RESERVE.as_secs());
/// Lambda retries a failed asynchronous invocation after about one minute (then two); a handed
/// back event needs the hook to live at least this long plus [`RESERVE`].
pub const LAMBDA_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying later may work; `hint` is how long the server asked us to wait (a rate limit).
    Retryable {
        /// The server's `Retry-After` or rate-limit reset, when it gave one.
        hint: Option<Duration>,
    },
    /// Retrying cannot help.
    Permanent,
}

/// The time the decision works with, measured now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLeft {
    /// Until the lifecycle action surely still waits (from the event's time or the last
    /// heartbeat we made; with an unknown `HeartbeatTimeout`, counted with the API's minimum).
    /// Below what a retry needs, the hook is heartbeated first.
    pub hook: Duration,
    /// Until the lifecycle action times out by our best knowledge (the known `HeartbeatTimeout`,
    /// or the AWS default 3600 s when it could not be read): what decides, without heartbeats,
    /// whether the hook's time is really running out.
    pub hook_likely: Duration,
    /// What a heartbeat would restore (the hook's `HeartbeatTimeout`, or the assumed default);
    /// `None` when heartbeats are not possible now (refused, or failing).
    pub heartbeat: Option<Duration>,
    /// Until the action's global timeout, which no heartbeat extends.
    pub global: Duration,
    /// Until this invocation must have returned (the Lambda deadline, or the CLI's budget).
    pub invocation: Duration,
}

/// Why a launch is abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The failure is permanent.
    Permanent,
    /// The hook times out before another attempt and the completion could fit, and heartbeats
    /// cannot hold it (refused, or the action's global timeout comes first).
    HookTimeNearlyOut,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait `wait`, then try again; heartbeat the hook first (and during the wait, as often as
    /// its timeout needs) when `heartbeat_first`.
    RetryAfter {
        /// How long to wait.
        wait: Duration,
        /// Whether the hook must be held by heartbeats over the wait.
        heartbeat_first: bool,
    },
    /// Stop this invocation with the retryable error so Lambda redelivers the event; heartbeat
    /// first when `heartbeat_first`.
    HandBack {
        /// Whether to record a heartbeat before returning.
        heartbeat_first: bool,
    },
    /// Complete the hook with ABANDON.
    Abandon(Why),
}

/// The wait after failed attempt number `attempt` (1-based; `lifecycle_core::Backoff`, the one
/// rule): 2 s doubling to at most 30 s, scaled by `0.5 + 0.5 * jitter` (`jitter` in 0..=1, so a burst of launches spreads out), and
/// never shorter than the server's `hint`.
pub fn backoff(attempt: u32, hint: Option<Duration>, jitter: f64) -> Duration {
    let wait = lifecycle_core::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF).with_unit(attempt, jitter);
    hint.map_or(wait, |h| wait.max(h))
}

/// A jitter in 0..1, seeded by `key` (an instance id, a delivery id) and the attempt: the same
/// inputs give the same jitter (tests and replays are deterministic), different keys spread out,
/// so a burst of launches or webhooks failing together does not retry together.
pub fn jitter(key: &str, attempt: u32) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key, attempt).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The first wait before redoing a state update that another invocation wrote first.
pub const CONTENTION_BASE: Duration = Duration::from_millis(5);
/// Added per attempt (0-based) to the contention wait.
pub const CONTENTION_STEP: Duration = Duration::from_millis(7);
/// The contention wait's jitter spans this much.
pub const CONTENTION_SPREAD: Duration = Duration::from_millis(13);

/// The wait before redoing a conditional write of the scaling state that lost to another
/// invocation, after attempt number `attempt` (0-based): [`CONTENTION_BASE`] plus
/// [`CONTENTION_STEP`] per attempt plus up to [`CONTENTION_SPREAD`] of jitter seeded by `key`
/// ([`jitter`]; the invocation's identity, such as the delivery id).
pub fn contention_wait(attempt: u32, key: &str) -> Duration {
    let spread = CONTENTION_SPREAD.mul_f64(jitter(key, attempt));
    let step = CONTENTION_STEP.saturating_mul(attempt);
    CONTENTION_BASE
        .saturating_add(step)
        .saturating_add(Duration::from_millis(spread.as_millis() as u64))
}

/// Decide after failed attempt number `attempt` (1-based). Pure: same inputs, same answer.
pub fn decide(attempt: u32, error: ErrorClass, left: TimeLeft, jitter: f64) -> Decision {
    let ErrorClass::Retryable { hint } = error else {
        return Decision::Abandon(Why::Permanent);
    };
    let wait = backoff(attempt, hint, jitter);
    let need = wait.saturating_add(RESERVE);
    // No heartbeat passes the global timeout: that is when the hook's time really runs out.
    if left.global < need {
        return Decision::Abandon(Why::HookTimeNearlyOut);
    }
    let hook_ok = left.hook >= need;
    let can_hold = left.heartbeat.is_some();
    if !hook_ok && !can_hold && left.hook_likely < need {
        return Decision::Abandon(Why::HookTimeNearlyOut);
    }
    if left.invocation < need {
        // No further attempt fits in this invocation. A redelivery comes after Lambda's retry
        // delay; the hook must outlive that, by itself or after a heartbeat.
        let redelivery = LAMBDA_RETRY_DELAY.saturating_add(RESERVE);
        if left.global < redelivery {
            return Decision::Abandon(Why::HookTimeNearlyOut);
        }
        if left.hook >= redelivery {
            return Decision::HandBack { heartbeat_first: false };
        }
        if left.heartbeat.is_some_and(|h| h >= redelivery) {
            return Decision::HandBack { heartbeat_first: true };
        }
        if left.heartbeat.is_none() && left.hook_likely >= redelivery {
            return Decision::HandBack { heartbeat_first: false };
        }
        return Decision::Abandon(Why::HookTimeNearlyOut);
    }
    Decision::RetryAfter {
        wait,
        // Held by heartbeats when the hook's sure time is short and heartbeats work; when they do
        // not, the retry goes on within the time the hook likely has.
        heartbeat_first: !hook_ok && can_hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const RETRY: ErrorClass = ErrorClass::Retryable { hint: None };

    /// A known HeartbeatTimeout: sure and likely time agree; the global timeout far away.
    fn left(hook: u64, heartbeat: Option<u64>, invocation: u64) -> TimeLeft {
        TimeLeft {
            hook: S(hook),
            hook_likely: S(hook),
            heartbeat: heartbeat.map(S),
            global: S(172_800),
            invocation: S(invocation),
        }
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_hints() {
        assert_eq!(backoff(1, None, 1.0), S(2));
        assert_eq!(backoff(2, None, 1.0), S(4));
        assert_eq!(backoff(4, None, 1.0), S(16));
        assert_eq!(backoff(5, None, 1.0), S(30));
        assert_eq!(backoff(u32::MAX, None, 1.0), S(30));
        assert_eq!(backoff(1, None, 0.0), S(1));
        assert_eq!(backoff(1, None, f64::NAN), S(2));
        assert_eq!(backoff(1, Some(S(20)), 0.0), S(20));
        assert_eq!(backoff(5, Some(S(3)), 1.0), S(30));
    }

    #[test]
    fn jitter_is_seeded_and_contention_waits_grow() {
        assert_eq!(jitter("i-1", 1), jitter("i-1", 1));
        assert_ne!(jitter("i-1", 1), jitter("i-2", 1));
        assert!((0.0..1.0).contains(&jitter("d", 3)));
        assert_eq!(contention_wait(0, "d1"), contention_wait(0, "d1"));
        for attempt in 0..20 {
            let w = contention_wait(attempt, "d1");
            let lo = CONTENTION_BASE + CONTENTION_STEP * attempt;
            assert!(w >= lo && w < lo + CONTENTION_SPREAD, "{attempt}: {w:?}");
        }
    }

    #[test]
    fn permanent_errors_abandon_at_once_whatever_the_time() {
        for l in [left(3600, Some(3600), 900), left(0, None, 0)] {
            assert_eq!(
                decide(1, ErrorClass::Permanent, l, 0.5),
                Decision::Abandon(Why::Permanent)
            );
        }
    }

    #[test]
    fn retryable_errors_retry_while_the_hook_has_time() {
        assert_eq!(
            decide(1, RETRY, left(300, Some(300), 900), 1.0),
            Decision::RetryAfter {
                wait: S(2),
                heartbeat_first: false
            }
        );
        // A rate limit's hint is waited out.
        assert_eq!(
            decide(
                1,
                ErrorClass::Retryable { hint: Some(S(25)) },
                left(300, Some(300), 900),
                1.0
            ),
            Decision::RetryAfter {
                wait: S(25),
                heartbeat_first: false
            }
        );
    }

    #[test]
    fn the_hook_is_heartbeated_when_retries_approach_its_timeout() {
        // 2 s wait + 40 s reserve do not fit in 41 s: heartbeat, then retry.
        assert_eq!(
            decide(1, RETRY, left(41, Some(300), 900), 1.0),
            Decision::RetryAfter {
                wait: S(2),
                heartbeat_first: true
            }
        );
        assert_eq!(
            decide(1, RETRY, left(42, Some(300), 900), 1.0),
            Decision::RetryAfter {
                wait: S(2),
                heartbeat_first: false
            }
        );
    }

    #[test]
    fn abandon_when_time_is_nearly_out_and_cannot_be_extended() {
        // No heartbeat possible (refused): abandon while the ABANDON still reaches AWS in time.
        assert_eq!(
            decide(3, RETRY, left(45, None, 900), 1.0),
            Decision::Abandon(Why::HookTimeNearlyOut)
        );
        // The global timeout comes before the wait and the completion: no heartbeat helps.
        let mut l = left(300, Some(300), 900);
        l.global = S(41);
        assert_eq!(decide(1, RETRY, l, 1.0), Decision::Abandon(Why::HookTimeNearlyOut));
    }

    #[test]
    fn short_hooks_and_long_rate_limits_are_held_by_heartbeats() {
        // A 30 s HeartbeatTimeout: a 30 s wait plus the reserve is held by heartbeats.
        assert_eq!(
            decide(5, RETRY, left(10, Some(30), 900), 1.0),
            Decision::RetryAfter {
                wait: S(30),
                heartbeat_first: true
            }
        );
        // A rate limit longer than the hook's HeartbeatTimeout (issue 16): waited out under
        // heartbeats, within the invocation.
        assert_eq!(
            decide(
                1,
                ErrorClass::Retryable { hint: Some(S(600)) },
                left(300, Some(300), 900),
                1.0
            ),
            Decision::RetryAfter {
                wait: S(600),
                heartbeat_first: true
            }
        );
    }

    #[test]
    fn an_unread_hook_timeout_is_held_not_abandoned() {
        // DescribeLifecycleHooks failed: sure time 0 (heartbeat as if 30 s), likely 3600 s.
        let l = TimeLeft {
            hook: S(0),
            hook_likely: S(3464),
            heartbeat: Some(S(3600)),
            global: S(172_664),
            invocation: S(118),
        };
        assert_eq!(
            decide(1, RETRY, l, 1.0),
            Decision::RetryAfter {
                wait: S(2),
                heartbeat_first: true
            }
        );
        // The heartbeat failing too (throttled): retried within the likely time, not abandoned.
        let l = TimeLeft { heartbeat: None, ..l };
        assert_eq!(
            decide(1, RETRY, l, 1.0),
            Decision::RetryAfter {
                wait: S(2),
                heartbeat_first: false
            }
        );
        // At the invocation's end: handed back with a heartbeat, never abandoned.
        let l = TimeLeft {
            heartbeat: Some(S(3600)),
            invocation: S(5),
            ..l
        };
        assert_eq!(decide(1, RETRY, l, 1.0), Decision::HandBack { heartbeat_first: true });
    }

    #[test]
    fn the_invocation_deadline_hands_the_event_back() {
        // 20 s left in the Lambda, 280 s on the hook: Lambda's redelivery (~60 s) still finds it.
        assert_eq!(
            decide(1, RETRY, left(280, Some(300), 20), 1.0),
            Decision::HandBack { heartbeat_first: false }
        );
        // 50 s on the hook: heartbeat first so the redelivery finds the action alive.
        assert_eq!(
            decide(1, RETRY, left(50, Some(300), 20), 1.0),
            Decision::HandBack { heartbeat_first: true }
        );
        // No heartbeat and too little time for a redelivery: abandon now instead.
        assert_eq!(
            decide(1, RETRY, left(50, None, 20), 1.0),
            Decision::Abandon(Why::HookTimeNearlyOut)
        );
        // A 60 s HeartbeatTimeout cannot outlive the redelivery delay plus an attempt.
        assert_eq!(
            decide(1, RETRY, left(50, Some(60), 20), 1.0),
            Decision::Abandon(Why::HookTimeNearlyOut)
        );
    }

    #[test]
    fn a_sixty_second_lambda_retries_a_few_times_then_hands_back() {
        // Simulate the loop: 5xx answered at once, jitter 1, a 300 s hook, a 60 s function.
        let (mut t, mut attempt, mut waits) = (S(1), 1, Vec::new());
        loop {
            match decide(
                attempt,
                RETRY,
                left(300 - t.as_secs(), Some(300), 60 - t.as_secs()),
                1.0,
            ) {
                Decision::RetryAfter { wait, heartbeat_first } => {
                    assert!(!heartbeat_first);
                    waits.push(wait.as_secs());
                    t += wait + S(1);
                    attempt += 1;
                }
                d => {
                    assert_eq!(d, Decision::HandBack { heartbeat_first: false });
                    break;
                }
            }
        }
        assert_eq!(waits, vec![2, 4, 8]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever the inputs: a retry always leaves the reserve on the hook (now or after the
        /// heartbeat it asks for) and inside the invocation; a hand-back only happens when the
        /// redelivery can still find the hook; nothing panics.
        #[test]
        fn decisions_keep_their_margins(
            attempt in 0u32..100,
            hint in proptest::option::of(0u64..4000),
            hook in 0u64..8000,
            heartbeat in proptest::option::of(0u64..8000),
            invocation in 0u64..1000,
            jitter in -1.0f64..2.0,
            likely in 0u64..8000,
            global in 0u64..200_000,
        ) {
            let mut l = left(hook, heartbeat, invocation);
            l.hook_likely = l.hook.max(S(likely));
            l.global = S(global);
            let error = ErrorClass::Retryable { hint: hint.map(S) };
            let need_of = |wait: Duration| wait + RESERVE;
            match decide(attempt, error, l, jitter) {
                Decision::RetryAfter { wait, heartbeat_first } => {
                    let need = need_of(wait);
                    proptest::prop_assert!(l.invocation >= need && l.global >= need);
                    if heartbeat_first {
                        proptest::prop_assert!(l.heartbeat.is_some());
                    } else {
                        proptest::prop_assert!(l.hook >= need || (l.heartbeat.is_none() && l.hook_likely >= need));
                    }
                }
                Decision::HandBack { heartbeat_first } => {
                    let redelivery = LAMBDA_RETRY_DELAY + RESERVE;
                    let hook_after = match (heartbeat_first, l.heartbeat) {
                        (true, h) => h.unwrap_or_default(),
                        (false, Some(_)) => l.hook,
                        (false, None) => l.hook_likely,
                    };
                    proptest::prop_assert!(hook_after >= redelivery && l.global >= redelivery);
                }
                Decision::Abandon(why) => {
                    proptest::prop_assert_eq!(why, Why::HookTimeNearlyOut);
                    // Abandoned only when the hook's time really runs out: the global timeout, or
                    // no heartbeat and too little likely time (for the retry or the hand-back).
                    let need = need_of(backoff(attempt, hint.map(S), jitter));
                    let redelivery = LAMBDA_RETRY_DELAY + RESERVE;
                    let hand_back_fails = l.global < redelivery
                        || (l.hook < redelivery
                            && l.heartbeat.map_or(l.hook_likely < redelivery, |h| h < redelivery));
                    proptest::prop_assert!(
                        l.global < need
                            || (l.heartbeat.is_none() && l.hook_likely < need)
                            || (l.invocation < need && hand_back_fails)
                    );
                }
            }
        }
    }
}
