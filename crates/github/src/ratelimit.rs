//! What to do with an answer, decided from its status and headers alone (pure, so every rule is
//! unit-tested). GitHub REST API docs, "Rate limits for the REST API":
//!
//! - primary limit exhausted: 403 or 429 with `x-ratelimit-remaining: 0`; wait until
//!   `x-ratelimit-reset` (epoch seconds);
//! - secondary limit: 403 or 429, with `retry-after` (seconds) when GitHub says how long, otherwise
//!   "wait at least one minute" and back off exponentially if it persists;
//! - 5xx: GitHub's own trouble, retry with backoff.

use std::time::Duration;

/// The verdict on one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Use the answer (success or an error that retrying does not fix).
    Accept,
    /// Rate limited: try again after this long.
    RateLimited(Duration),
    /// GitHub failed (5xx): retry with backoff.
    Transient,
}

/// The headers that matter, already lower-cased by hyper.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateHeaders<'a> {
    /// `retry-after`.
    pub retry_after: Option<&'a str>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<&'a str>,
    /// `x-ratelimit-reset`.
    pub reset: Option<&'a str>,
}

/// "Wait at least one minute" for a secondary limit without `retry-after`.
pub const SECONDARY_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The longest wait a verdict ever asks for. GitHub's primary limit is an hourly window, so a
/// genuine `x-ratelimit-reset` is at most an hour away, and secondary limits ask for a minute or
/// so. Waiting longer than the window is never useful, and a caller (the controller's Lambda runs
/// at most 15 minutes; the schedule re-runs the sweep) asks again anyway and learns the real reset
/// then; so 15 minutes bounds every wait, whatever a broken or hostile header says
/// (`Retry-After: 18446744073709551615`, a reset in the year 292277026596).
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` as delay-seconds (RFC 9110, section 10.2.3; GitHub sends no HTTP-date), clamped
/// to [`MAX_WAIT`]. Anything else (a date, a sign, junk, a number past `u64`) is no hint.
pub fn retry_after(value: &str) -> Option<Duration> {
    lifecycle_core::backoff::parse_retry_after(value, MAX_WAIT)
}

/// The wait until `x-ratelimit-reset` (epoch seconds) at `now_epoch`, plus one second (the reset
/// time is when the window ends, not after), clamped to [`MAX_WAIT`]. A reset in the past waits
/// one second; a value that is not an integer is no hint.
pub fn reset_wait(value: &str, now_epoch: i64) -> Option<Duration> {
    let reset = value.trim().parse::<i64>().ok()?;
    // i128: no pair of i64 can overflow it (reset = i64::MIN, now = i64::MAX included).
    let ahead = (i128::from(reset) - i128::from(now_epoch)).max(0);
    let secs = u64::try_from(ahead).unwrap_or(u64::MAX).saturating_add(1);
    Some(Duration::from_secs(secs).min(MAX_WAIT))
}

/// Decide on an answer with `status` and `headers`, at wall-clock `now_epoch`. Every
/// [`Verdict::RateLimited`] wait is at most [`MAX_WAIT`].
pub fn verdict(status: u16, headers: RateHeaders<'_>, now_epoch: i64, body_message: &str) -> Verdict {
    if let Some(wait) = headers.retry_after.and_then(retry_after) {
        if matches!(status, 403 | 429) || status >= 500 {
            return Verdict::RateLimited(wait);
        }
    }
    if matches!(status, 403 | 429) {
        if headers.remaining.map(str::trim) == Some("0") {
            // No usable reset: GitHub's own advice for an unknown wait, one minute (plus the
            // second the reset path adds).
            let wait = headers
                .reset
                .and_then(|v| reset_wait(v, now_epoch))
                .unwrap_or(SECONDARY_DEFAULT_WAIT + Duration::from_secs(1));
            return Verdict::RateLimited(wait);
        }
        let lower = body_message.to_ascii_lowercase();
        if status == 429 || lower.contains("secondary rate limit") || lower.contains("abuse") {
            return Verdict::RateLimited(SECONDARY_DEFAULT_WAIT);
        }
        return Verdict::Accept;
    }
    if status >= 500 {
        return Verdict::Transient;
    }
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(retry_after: Option<&'a str>, remaining: Option<&'a str>, reset: Option<&'a str>) -> RateHeaders<'a> {
        RateHeaders {
            retry_after,
            remaining,
            reset,
        }
    }

    #[test]
    fn primary_limit_waits_until_reset() {
        let v = verdict(403, h(None, Some("0"), Some("1000")), 970, "API rate limit exceeded");
        assert_eq!(v, Verdict::RateLimited(Duration::from_secs(31)));
        let v = verdict(429, h(None, Some("0"), Some("900")), 970, "");
        assert_eq!(v, Verdict::RateLimited(Duration::from_secs(1)));
    }

    #[test]
    fn secondary_limit_honours_retry_after_or_waits_a_minute() {
        assert_eq!(
            verdict(
                403,
                h(Some("17"), Some("4000"), None),
                0,
                "You have exceeded a secondary rate limit"
            ),
            Verdict::RateLimited(Duration::from_secs(17))
        );
        assert_eq!(
            verdict(
                403,
                h(None, Some("4000"), None),
                0,
                "You have exceeded a secondary rate limit."
            ),
            Verdict::RateLimited(SECONDARY_DEFAULT_WAIT)
        );
        assert_eq!(
            verdict(429, h(None, None, None), 0, ""),
            Verdict::RateLimited(SECONDARY_DEFAULT_WAIT)
        );
    }

    #[test]
    fn absurd_headers_are_clamped_or_ignored() {
        // Regression: `Retry-After: u64::MAX` was a wait the controller could not add to a clock.
        assert_eq!(
            verdict(429, h(Some("18446744073709551615"), None, None), 0, ""),
            Verdict::RateLimited(MAX_WAIT)
        );
        assert_eq!(
            verdict(429, h(Some("99999999999999999999999"), None, None), 0, ""),
            Verdict::RateLimited(MAX_WAIT)
        );
        // Regression: a reset of i64::MIN wrapped (release) or overflowed (debug) into a
        // 292-billion-year wait.
        for now in [0, 1_700_000_000, i64::MAX, i64::MIN] {
            let v = verdict(403, h(None, Some("0"), Some("-9223372036854775808")), now, "");
            assert_eq!(v, Verdict::RateLimited(Duration::from_secs(1)), "{now}");
            let v = verdict(403, h(None, Some("0"), Some("9223372036854775807")), now, "");
            assert!(
                matches!(v, Verdict::RateLimited(w) if w <= MAX_WAIT && w >= Duration::from_secs(1)),
                "{v:?}"
            );
        }
        // Nonsense is no hint: the primary limit falls back to a minute, a secondary one to
        // GitHub's "at least one minute".
        for junk in ["-5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "", "1e3", "+7"] {
            assert_eq!(retry_after(junk), None, "{junk}");
            assert_eq!(
                verdict(429, h(Some(junk), None, None), 0, ""),
                Verdict::RateLimited(SECONDARY_DEFAULT_WAIT),
                "{junk}"
            );
        }
        assert_eq!(
            verdict(403, h(None, Some("0"), Some("tomorrow")), 0, ""),
            Verdict::RateLimited(Duration::from_secs(61))
        );
    }

    #[test]
    fn a_plain_403_is_a_permission_problem_and_5xx_is_transient() {
        assert_eq!(
            verdict(
                403,
                h(None, Some("4999"), None),
                0,
                "Resource not accessible by integration"
            ),
            Verdict::Accept
        );
        assert_eq!(verdict(502, h(None, None, None), 0, ""), Verdict::Transient);
        assert_eq!(
            verdict(503, h(Some("5"), None, None), 0, ""),
            Verdict::RateLimited(Duration::from_secs(5))
        );
        assert_eq!(verdict(201, h(Some("5"), None, None), 0, ""), Verdict::Accept);
        assert_eq!(verdict(404, h(None, Some("0"), None), 0, ""), Verdict::Accept);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Any header values, any status, any clock: a verdict, never a panic, never a wait
            /// past MAX_WAIT.
            #[test]
            fn any_headers_give_a_bounded_verdict(
                status in any::<u16>(),
                retry in proptest::option::of(any::<String>()),
                remaining in proptest::option::of(prop_oneof![Just("0".to_string()), any::<String>()]),
                reset in proptest::option::of(prop_oneof![any::<i64>().prop_map(|n| n.to_string()), any::<String>()]),
                now in any::<i64>(),
                message in any::<String>(),
            ) {
                let headers = RateHeaders {
                    retry_after: retry.as_deref(),
                    remaining: remaining.as_deref(),
                    reset: reset.as_deref(),
                };
                if let Verdict::RateLimited(wait) = verdict(status, headers, now, &message) {
                    prop_assert!(wait <= MAX_WAIT);
                }
            }

            #[test]
            fn numeric_headers_are_bounded(secs in any::<u64>(), reset in any::<i64>(), now in any::<i64>()) {
                let w = retry_after(&secs.to_string());
                prop_assert_eq!(w, Some(Duration::from_secs(secs).min(MAX_WAIT)));
                let r = reset_wait(&reset.to_string(), now);
                prop_assert!(r.is_some_and(|r| r >= Duration::from_secs(1) && r <= MAX_WAIT));
            }
        }
    }
}
