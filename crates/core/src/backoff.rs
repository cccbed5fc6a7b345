//! The one capped, jittered exponential backoff of runner-lifecycle: the core's Auto Scaling and
//! JIT retries, the agent's startup discovery, the controller's launch retries, the GitHub client's
//! request retries and the simulator's models of them all compute their waits here.
//!
//! The rule: the nominal wait before retry number `n` (1 for the first failure) is
//! `base * 2^(n-1)`, capped at `cap`; the wait is the nominal one scaled by `0.5 + 0.5 * u` for a
//! uniform `u` in `[0, 1)` ("equal jitter", AWS Architecture Blog, "Exponential Backoff And
//! Jitter"): half the wait is kept so retries never hammer a shared bucket, the random other half
//! spreads a fleet that failed together. Where determinism matters (the core, the simulator,
//! tests) `u` comes from a seeded [`Rng`].

use crate::rng::Rng;
use std::time::Duration;

/// A capped exponential backoff: `base` doubling per failure, never above `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first nominal wait.
    pub base: Duration,
    /// No nominal wait is longer.
    pub cap: Duration,
}

/// The low end of the jitter factor: a wait is at least half its nominal value.
pub const JITTER_LO: f64 = 0.5;

impl Backoff {
    /// A backoff from `base` doubling to at most `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The nominal (unjittered) wait before retry number `failures` (1 for the first failure; 0
    /// counts as 1): `base * 2^(failures-1)`, capped at `cap`. Saturating: any count is safe.
    pub fn nominal(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The nominal wait scaled by `0.5 + 0.5 * unit`; `unit` is clamped into `[0, 1]` (a non-finite
    /// one counts as 1, the longest wait).
    pub fn with_unit(&self, failures: u32, unit: f64) -> Duration {
        let u = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 1.0 };
        self.nominal(failures).mul_f64(JITTER_LO + (1.0 - JITTER_LO) * u)
    }

    /// The jittered wait, drawing one uniform from `rng`.
    pub fn delay(&self, failures: u32, rng: &mut Rng) -> Duration {
        rng.jitter(self.nominal(failures), JITTER_LO, 1.0)
    }
}

/// `Retry-After` as delay-seconds (RFC 9110, section 10.2.3), clamped to `max`: the one reading of
/// the header, for the GitHub client (GitHub's answers) and the agent's JIT client (the
/// controller's). An HTTP-date, a sign, junk or an empty value is no hint (`None`: the caller's
/// own backoff applies); all digits past `u64` are longer than any `max` and read as `max`.
pub fn parse_retry_after(value: &str, max: Duration) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = v.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_from_the_base_to_the_cap() {
        let b = Backoff::new(S(2), S(30));
        let waits: Vec<u64> = (0..8).map(|n| b.nominal(n).as_secs()).collect();
        assert_eq!(waits, [2, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.nominal(u32::MAX), S(30), "saturating, never a panic");
        let tiny = Backoff::new(Duration::from_nanos(1), Duration::MAX);
        assert!(tiny.nominal(u32::MAX) > Duration::ZERO);
    }

    #[test]
    fn jitter_keeps_half_and_spreads_the_rest() {
        let b = Backoff::new(S(2), S(30));
        assert_eq!(b.with_unit(5, 0.0), S(15));
        assert_eq!(b.with_unit(5, 1.0), S(30));
        assert_eq!(b.with_unit(5, f64::NAN), S(30));
        assert_eq!(b.with_unit(5, -3.0), S(15));
        let mut rng = Rng::new(9);
        for n in 1..10 {
            let d = b.delay(n, &mut rng);
            assert!(d >= b.nominal(n) / 2 && d <= b.nominal(n), "{n}: {d:?}");
        }
    }

    #[test]
    fn retry_after_is_delay_seconds_clamped() {
        let max = S(900);
        let r = |v: &str| parse_retry_after(v, max);
        assert_eq!(r("7"), Some(S(7)));
        assert_eq!(r(" 7 "), Some(S(7)));
        assert_eq!(r("18446744073709551615"), Some(max));
        assert_eq!(r(&"9".repeat(40)), Some(max));
        for junk in ["", "-1", "+5", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(r(junk), None, "{junk}");
        }
    }

    #[test]
    fn seeded_draws_repeat_and_match_the_unit_form() {
        let b = Backoff::new(S(2), S(30));
        let (mut r1, mut r2) = (Rng::new(4), Rng::new(4));
        for n in 1..6 {
            assert_eq!(b.delay(n, &mut r1), b.with_unit(n, r2.unit()));
        }
    }
}
