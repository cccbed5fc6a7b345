//! The controller's settings, resolved once (flags and environment through clap in the CLI; the
//! same variables in the Lambda).

use lifecycle_aws::NameTemplate;
use std::collections::BTreeSet;
use std::time::Duration;

/// The default per-instance secret name template (the source PR keeps one registration-token
/// secret per instance as well; this one is scoped by group so IAM can be too).
pub use lifecycle_aws::DEFAULT_SECRET_TEMPLATE;
/// A terminating instance with no live runner is completed after this long. The agent on an idle
/// host completes within seconds (README, "Performance"), so five minutes only ever catches hosts
/// whose agent is gone, while staying far below the hook's own HeartbeatTimeout.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// A terminating instance still waiting after this long is reported as stuck.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(6 * 3600);
/// The longest one invocation retries a launch whose token could not be minted or stored (the
/// Lambda's own deadline, when shorter, wins). Ten minutes rides out a typical GitHub incident
/// without ever reaching the hook's global timeout (at least 50 minutes: 100 x 30 s).
pub const DEFAULT_LAUNCH_RETRY_FOR: Duration = Duration::from_secs(600);

/// What the controller is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Auto Scaling groups it manages; events of other groups are ignored.
    pub groups: BTreeSet<String>,
    /// The per-instance secret's name.
    pub secret_template: NameTemplate,
    /// How long a terminating instance without a live runner waits before the sweep completes it.
    pub grace: Duration,
    /// After how long in `Terminating:Wait` an instance is reported as stuck.
    pub stuck_after: Duration,
    /// Opt-in: also complete stuck instances (even with a runner online: this can end a job).
    pub complete_stuck: bool,
    /// Whether the sweep may delete GitHub registrations of instances that are gone.
    pub delete_orphan_runners: bool,
    /// How long one invocation may retry a launch (`crate::retry`).
    pub launch_retry_for: Duration,
}

impl Settings {
    /// Settings for `groups` with every default.
    pub fn new(groups: impl IntoIterator<Item = String>) -> Settings {
        Settings {
            groups: groups.into_iter().collect(),
            secret_template: NameTemplate::default_secret(),
            grace: DEFAULT_GRACE,
            stuck_after: DEFAULT_STUCK_AFTER,
            complete_stuck: false,
            delete_orphan_runners: true,
            launch_retry_for: DEFAULT_LAUNCH_RETRY_FOR,
        }
    }
}

/// Parse a duration: seconds, or a number with `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{t}` is not a duration (e.g. 300, 90s, 5m, 2h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        assert!(NameTemplate::parse(DEFAULT_SECRET_TEMPLATE).is_ok());
        let s = Settings::new(["runners".to_string()]);
        assert_eq!(s.secret_template.as_str(), DEFAULT_SECRET_TEMPLATE);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("five").is_err() && parse_duration("").is_err() && parse_duration("-1").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn any_duration_text_parses_or_is_refused(t in proptest::prelude::any::<String>()) {
            let _ = parse_duration(&t);
        }

        #[test]
        fn duration_shaped_text_parses_or_is_refused(t in "[ +0-9]{0,22}[smhd]?") {
            if let Ok(d) = parse_duration(&t) {
                proptest::prop_assert_eq!(parse_duration(&d.as_secs().to_string()), Ok(d));
            }
        }
    }
}
