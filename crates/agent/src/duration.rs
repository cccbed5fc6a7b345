//! Durations as people write them in a config file (`250ms`, `30s`, `5m`, `6h`: the one parser,
//! `lifecycle_core::duration`), and as a status shows them.

pub use lifecycle_core::duration::{format_duration, parse_duration, parse_duration_in};
use std::time::Duration;

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn human_and_relative_never_panic(ms in proptest::prelude::any::<i64>()) {
            let _ = relative(ms);
            let _ = human(Duration::from_millis(ms.unsigned_abs()));
        }
    }
}
