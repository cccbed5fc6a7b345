//! Durations as people write them in a config file: `250ms`, `1s`, `30s`, `5m`, `6h`.

use std::time::Duration;

/// Parse `<integer><unit>` with unit `ms`, `s`, `m` or `h`. A bare number is refused: `30` could mean
/// seconds or milliseconds, and guessing wrong by 1000x is how hooks expire.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{t}` is not a duration (write e.g. 250ms, 30s, 5m, 2h)"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{t}`: the number is too large"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{t}` has no unit (write e.g. {t}s or {t}ms)")),
        other => return Err(format!("`{t}`: unknown unit `{other}` (use ms, s, m or h)")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{t}` is too long"))
}

/// [`parse_duration`], then a range check: `min..=max`, both named in the error with the value.
pub fn parse_duration_in(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(format!(
            "`{}` is out of range: allowed {} to {}",
            text.trim(),
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Format a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration for people reading a status at a glance: `850ms`, `4.2s`, `42s`, `4m12s`, `3h12m`,
/// `2d4h`. Precision drops as durations grow; this is not meant to be parsed back.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..10_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        10_000..60_000 => format!("{s}s"),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A signed offset from now, in milliseconds, as words: `in 4m12s`, `3m05s ago`, `now`.
pub fn relative(ms: i64) -> String {
    let d = Duration::from_millis(ms.unsigned_abs());
    match ms {
        0 => "now".into(),
        1.. => format!("in {}", human(d)),
        _ => format!("{} ago", human(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_and_offsets() {
        for (ms, text) in [
            (0, "0ms"),
            (850, "850ms"),
            (4_250, "4.2s"),
            (42_000, "42s"),
            (252_000, "4m12s"),
            (3_600_000, "1h00m"),
            (11_520_000, "3h12m"),
            (187_200_000, "2d4h"),
        ] {
            assert_eq!(human(Duration::from_millis(ms)), text, "{ms}");
        }
        assert_eq!(relative(252_000), "in 4m12s");
        assert_eq!(relative(-180_000), "3m00s ago");
        assert_eq!(relative(0), "now");
        assert_eq!(relative(i64::MIN), "106751991167d7h ago");
    }

    #[test]
    fn parses_every_unit_and_round_trips() {
        for (text, ms) in [
            ("250ms", 250),
            ("1s", 1000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            (" 30s ", 30_000),
        ] {
            let d = parse_duration(text).expect(text);
            assert_eq!(d, Duration::from_millis(ms), "{text}");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn bounded_parse_names_the_value_and_the_range() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(parse_duration_in("1s", min, max), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration_in("100ms", min, max), Ok(min));
        assert_eq!(parse_duration_in("1m", min, max), Ok(max));
        let e = parse_duration_in("5000000000000h", min, max).expect_err("huge");
        assert_eq!(e, "`5000000000000h` is out of range: allowed 100ms to 1m");
        assert!(parse_duration_in("99ms", min, max).is_err());
        assert!(parse_duration_in("30", min, max).expect_err("unit").contains("no unit"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any text: a duration that formats and parses back to itself, or an error; never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in proptest::prelude::any::<String>()) {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            }
            let _ = parse_duration_in(&text, Duration::ZERO, Duration::from_secs(60));
        }

        #[test]
        fn duration_like_text_parses_or_is_refused(text in "[ 0-9]{0,25}(ms|s|m|h|d|)[ ]?") {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            }
        }

        #[test]
        fn human_and_relative_never_panic(ms in proptest::prelude::any::<i64>()) {
            let _ = relative(ms);
            let _ = human(Duration::from_millis(ms.unsigned_abs()));
        }
    }

    #[test]
    fn refuses_ambiguous_or_broken_text() {
        for bad in [
            "30",
            "",
            "s",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(!e.is_empty());
        }
        assert!(parse_duration("30").expect_err("30").contains("no unit"));
    }
}
