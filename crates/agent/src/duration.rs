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
