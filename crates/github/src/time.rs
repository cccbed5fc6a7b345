//! Timestamps as GitHub writes them (`2020-01-22T12:13:35.123-08:00`, `2016-07-11T22:14:10Z`),
//! turned into seconds since the Unix epoch with the `time` crate, and the wall clock.
// Reading the wall clock is this module's job (clippy.toml bans it elsewhere for determinism).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The monotonic clock (token caches, retry deadlines).
pub fn now_instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// Sleep on the tokio timer.
pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Parse an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, surrounding whitespace
/// ignored) into epoch seconds, fractions dropped: the `time` crate's RFC 3339 parser, which also
/// refuses dates that do not exist (February 30).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    ::time::OffsetDateTime::parse(s.trim(), &::time::format_description::well_known::Rfc3339)
        .ok()
        .map(::time::OffsetDateTime::unix_timestamp)
}

/// Format epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC). Times beyond the years -9999 to 9999 are
/// clamped to them.
pub fn format_rfc3339(epoch: i64) -> String {
    const FORMAT: &[::time::format_description::BorrowedFormatItem<'_>] =
        ::time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let t = ::time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(if epoch < 0 {
        ::time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        ::time::PrimitiveDateTime::MAX.assume_utc()
    });
    t.format(FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_github_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        // GitHub's registration-token example carries milliseconds and an offset.
        assert_eq!(parse_rfc3339("2020-01-22T12:13:35.123-08:00"), Some(1_579_724_015));
        assert_eq!(parse_rfc3339("2020-01-22T20:13:35Z"), Some(1_579_724_015));
        for bad in [
            "",
            "2020-01-22",
            "2020-13-01T00:00:00Z",
            "2020-01-22T12:13:35",
            "2020-01-22T12:13:35.Z",
            "x020-01-22T12:13:35Z",
            "2020-02-30T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for t in [0, 1_468_275_250, 1_579_724_015, 4_102_444_800, 951_782_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn any_text_parses_or_is_refused(s in proptest::prelude::any::<String>()) {
            let _ = parse_rfc3339(&s);
        }

        /// Timestamp-shaped text with every field out of range: a value or `None`, never a panic.
        #[test]
        fn timestamp_shaped_text_parses_or_is_refused(
            s in "[-+0-9]{4}-[-+0-9]{2}-[-+0-9]{2}[Tt ][-+0-9]{2}:[-+0-9]{2}:[-+0-9]{2}(\\.[0-9]{0,12})?(Z|z|[-+][-+0-9]{1,3}:[-+0-9]{1,3}|[^0-9]{0,3})"
        ) {
            if let Some(t) = parse_rfc3339(&s) {
                let _ = format_rfc3339(t);
            }
        }

        #[test]
        fn any_epoch_formats(t in proptest::prelude::any::<i64>()) {
            let _ = format_rfc3339(t);
        }

        #[test]
        fn formats_round_trip_for_four_digit_years(t in -62_135_596_800i64..253_402_300_799) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }
}
