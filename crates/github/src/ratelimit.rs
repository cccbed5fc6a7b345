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

/// Decide on an answer with `status` and `headers`, at wall-clock `now_epoch`.
pub fn verdict(status: u16, headers: RateHeaders<'_>, now_epoch: i64, body_message: &str) -> Verdict {
    if let Some(secs) = headers.retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        if matches!(status, 403 | 429) || status >= 500 {
            return Verdict::RateLimited(Duration::from_secs(secs));
        }
    }
    if matches!(status, 403 | 429) {
        if headers.remaining.map(str::trim) == Some("0") {
            let reset = headers
                .reset
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(now_epoch + 60);
            // One extra second: the reset time is when the window ends, not after.
            let wait = u64::try_from((reset - now_epoch).max(0)).unwrap_or(0) + 1;
            return Verdict::RateLimited(Duration::from_secs(wait));
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
}
