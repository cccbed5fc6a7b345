//! Just-in-time runners: how they are named, what the client does when a name is taken (HTTP
//! 409), and which registrations the never-online sweep may delete. docs/controller.md, section
//! "Just-in-time runners", has the GitHub and actions/runner facts behind each rule.
//!
//! **Names.** `{prefix}{created_epoch}-{unique}`: the group's prefix, the Unix time (seconds) at
//! which the configuration was requested, then anything that makes the name unique (an instance
//! id and an incarnation counter, say). The timestamp is what lets the sweep tell a registration
//! that is merely young (its listener is still booting) from one that will never connect,
//! because GitHub's `runner` object carries no creation time.
//!
//! **409 policy.** `generate-jitconfig` answers 409 when the name is taken. The client retries
//! once under a fresh name (the same name plus `-r` and four hex digits), and does not delete
//! the holder of the name: see [`conflict_retry_name`].
//!
//! **The sweep** deletes a registration only if all of these hold: its name has the prefix and a
//! parsable timestamp at least `older_than` in the past; `status` is `offline`; `busy` is false;
//! `version` is unset (no listener ever connected). See [`sweep_verdict`].

use crate::types::RunnerDetail;
use std::time::Duration;

/// The name of a JIT runner: `{prefix}{created_epoch}-{unique}`.
pub fn jit_runner_name(prefix: &str, created_epoch: i64, unique: &str) -> String {
    format!("{prefix}{created_epoch}-{unique}")
}

/// The creation time (Unix seconds) a name made by [`jit_runner_name`] carries, or `None` when
/// the name lacks `prefix`, or the prefix is not followed by decimal digits and a `-`.
pub fn name_created_epoch(name: &str, prefix: &str) -> Option<i64> {
    if prefix.is_empty() {
        return None;
    }
    let rest = name.strip_prefix(prefix)?;
    let (digits, _unique) = rest.split_once('-')?;
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name to try once after `generate-jitconfig` answered 409 for `name`: `name` plus `-r` and
/// four hex digits from `random`. Prefix and timestamp are kept, so the sweep still recognises
/// it.
///
/// Why a fresh name rather than deleting the registration that holds the name: the usual cause
/// of a 409 is the client's own retry of a `generate-jitconfig` whose first answer was lost (a
/// timeout or a 5xx after GitHub had created the runner). The holder is then an offline,
/// never-connected registration whose configuration nobody has. But that is exactly what a
/// registration looks like between minting and its listener's first connection, so a holder
/// minted for another listener (a concurrent, retried controller invocation) cannot be told
/// apart from an orphan without waiting; deleting it would make that listener fail. A fresh
/// name deletes nothing, costs one request, and the orphan, if it is one, is removed by
/// [`crate::GitHubClient::delete_runners_never_online`] once it is old enough.
pub fn conflict_retry_name(name: &str, random: u64) -> String {
    format!("{name}-r{:04x}", random & 0xffff)
}

/// What the sweep does with one registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepVerdict {
    /// Delete it: prefixed, old enough, offline, idle, never connected.
    Delete,
    /// Keep it, for this reason.
    Keep(KeepReason),
}

/// Why the sweep keeps a registration (checked in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// Its name does not start with the prefix: not ours.
    OtherPrefix,
    /// `status` is not `offline` (a listener holds a session).
    Online,
    /// GitHub thinks it runs a job.
    Busy,
    /// `version` is set: a listener connected at least once. Its end is the ephemeral
    /// runner's own business (GitHub deletes it after its job).
    HasConnected,
    /// The name carries no timestamp after the prefix: its age is unknown.
    NoTimestamp,
    /// Younger than `older_than`: its listener may still be starting.
    TooYoung,
}

/// The sweep's rule for one registration, `now_epoch` being the current Unix time.
pub fn sweep_verdict(r: &RunnerDetail, prefix: &str, older_than: Duration, now_epoch: i64) -> SweepVerdict {
    use KeepReason::*;
    let runner = &r.runner;
    if prefix.is_empty() || !runner.name.starts_with(prefix) {
        return SweepVerdict::Keep(OtherPrefix);
    }
    if !runner.status.eq_ignore_ascii_case("offline") {
        return SweepVerdict::Keep(Online);
    }
    if runner.busy {
        return SweepVerdict::Keep(Busy);
    }
    if r.has_connected() {
        return SweepVerdict::Keep(HasConnected);
    }
    let Some(created) = name_created_epoch(&runner.name, prefix) else {
        return SweepVerdict::Keep(NoTimestamp);
    };
    let min_age = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    if now_epoch.saturating_sub(created) < min_age {
        return SweepVerdict::Keep(TooYoung);
    }
    SweepVerdict::Delete
}

/// What [`crate::GitHubClient::delete_runners_never_online`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Deleted now (204): `(id, name)`.
    pub deleted: Vec<(u64, String)>,
    /// Already gone when deleted (404).
    pub already_gone: Vec<(u64, String)>,
    /// GitHub refused because the runner is running a job (422): kept.
    pub refused_busy: Vec<(u64, String)>,
    /// Registrations with the prefix that the rule kept.
    pub kept: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Runner, RunnerDetail};
    use proptest::prelude::*;

    fn detail(name: &str, status: &str, busy: bool, version: Option<&str>) -> RunnerDetail {
        RunnerDetail {
            runner: Runner {
                id: 1,
                name: name.into(),
                status: status.into(),
                busy,
                labels: vec![],
                ephemeral: true,
            },
            version: version.map(str::to_string),
            os: None,
            runner_group_id: Some(1),
        }
    }

    const NOW: i64 = 1_800_000_000;
    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn names_carry_their_creation_time() {
        let n = jit_runner_name("rle-web-", 1_700_000_000, "i-0abc-3");
        assert_eq!(n, "rle-web-1700000000-i-0abc-3");
        assert_eq!(name_created_epoch(&n, "rle-web-"), Some(1_700_000_000));
        let retry = conflict_retry_name(&n, 0x1_2345);
        assert_eq!(retry, "rle-web-1700000000-i-0abc-3-r2345");
        assert_eq!(name_created_epoch(&retry, "rle-web-"), Some(1_700_000_000));
        for (name, prefix) in [
            ("rle-web-1700000000-x", "rle-api-"),
            ("rle-web-1700000000", "rle-web-"),
            ("rle-web--x", "rle-web-"),
            ("rle-web-17x0-x", "rle-web-"),
            ("rle-web-+170-x", "rle-web-"),
            ("rle-web-9999999999999-x", "rle-web-"),
            ("1700000000-x", ""),
        ] {
            assert_eq!(name_created_epoch(name, prefix), None, "{name}");
        }
    }

    #[test]
    fn only_old_offline_idle_never_connected_prefixed_runners_go() {
        let old = jit_runner_name("rle-", NOW - 601, "i-1");
        let young = jit_runner_name("rle-", NOW - 30, "i-2");
        let v = |r: &RunnerDetail| sweep_verdict(r, "rle-", TEN_MIN, NOW);
        assert_eq!(v(&detail(&old, "offline", false, None)), SweepVerdict::Delete);
        assert_eq!(v(&detail(&old, "Offline", false, Some(""))), SweepVerdict::Delete);
        use KeepReason::*;
        for (r, why) in [
            (detail(&old, "online", false, None), Online),
            (detail(&old, "offline", true, None), Busy),
            (detail(&old, "online", true, Some("2.336.0")), Online),
            (detail(&old, "offline", false, Some("2.336.0")), HasConnected),
            (detail(&young, "offline", false, None), TooYoung),
            (detail("rle-i-0abc", "offline", false, None), NoTimestamp),
            (detail("other-1-x", "offline", false, None), OtherPrefix),
        ] {
            assert_eq!(v(&r), SweepVerdict::Keep(why), "{r:?}");
        }
        // An empty prefix would match every runner of the organisation: never.
        assert_eq!(
            sweep_verdict(&detail("1-x", "offline", false, None), "", TEN_MIN, NOW),
            SweepVerdict::Keep(OtherPrefix)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever GitHub answers, an online, busy or once-connected runner is never deleted,
        /// nor one outside the prefix, nor one younger than the cutoff.
        #[test]
        fn the_sweep_never_deletes_what_it_must_keep(
            name in "(rle-|x-)?[0-9]{0,11}(-[a-z0-9-]{0,8})?",
            status in prop_oneof![
                Just("online".to_string()),
                Just("offline".to_string()),
                Just("OFFLINE".to_string()),
                "[a-z]{0,8}",
            ],
            busy in any::<bool>(),
            version in proptest::option::of("[0-9.]{0,8}"),
            older_than in 0u64..100_000,
            now in 0i64..=i64::MAX,
        ) {
            let r = detail(&name, &status, busy, version.as_deref());
            if sweep_verdict(&r, "rle-", Duration::from_secs(older_than), now) == SweepVerdict::Delete {
                prop_assert!(status.eq_ignore_ascii_case("offline") && !busy && !r.has_connected());
                prop_assert!(name.starts_with("rle-"));
                let created = name_created_epoch(&name, "rle-");
                prop_assert!(created.is_some_and(|c| now.saturating_sub(c) >= older_than as i64));
            }
        }
    }
}
