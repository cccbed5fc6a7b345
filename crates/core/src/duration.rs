//! The one duration syntax of runner-lifecycle, for every setting of the agent, the controller and
//! the installer: `<integer><unit>` with unit `ms`, `s`, `m` or `h` (`250ms`, `30s`, `5m`, `6h`).
//!
//! The rule: a unit is required, a bare number is refused. `30` could mean seconds or milliseconds,
//! and guessing wrong by 1000x is how hooks expire; the controller once read a bare number as
//! seconds, and now refuses it with an error that names the fix (`write e.g. 300s`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
