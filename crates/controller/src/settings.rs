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
    /// Demand scaling (`controller scale`, webhooks); `None`: the controller does not scale.
    pub scale: Option<ScaleSettings>,
    /// Just-in-time runner configs (`POST /jit-config`, [`crate::jit`]); `None`: every JIT
    /// request is refused.
    pub jit: Option<JitSettings>,
}

/// The default name prefix of JIT runners: what `delete_runners_never_online` sweeps by.
pub const DEFAULT_JIT_PREFIX: &str = "rle-jit-";
/// The default runner group (GitHub's `Default` group has id 1).
pub const DEFAULT_JIT_RUNNER_GROUP_ID: u64 = 1;
/// The default labels of a JIT runner besides the instance id and `asg-<group>`: a JIT
/// registration carries exactly the labels it is minted with (the request's `labels`, GitHub's
/// OpenAPI description of generate-jitconfig), so `self-hosted` is only there when asked for.
pub const DEFAULT_JIT_LABELS: &[&str] = &["self-hosted"];

/// What the JIT endpoint is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitSettings {
    /// The IAM role name of the runner hosts' instance profile: only its sessions may mint
    /// (`arn:aws:sts::ACCOUNT:assumed-role/THIS/i-...`).
    pub agent_role: String,
    /// Labels every JIT runner gets, besides the instance id and `asg-<group>`.
    pub labels: Vec<String>,
    /// The runner group id.
    pub runner_group_id: u64,
    /// The name prefix (`{prefix}{epoch}-{instance id}-{4 hex}`).
    pub prefix: String,
    /// How long a minted registration that no listener has connected to counts as the
    /// instance's one outstanding config ([`crate::jit`]): a second mint is refused until it
    /// connects, is released, or is this old.
    pub outstanding_for: Duration,
}

/// The default of [`JitSettings::outstanding_for`]: a host that lost its unused config (an agent
/// restart, an answer lost in transit) gets a new one after at most this long, and a holder of the
/// role's credentials mints at most one unused config per instance per this long
/// (docs/controller.md, "One outstanding config per instance").
pub const DEFAULT_JIT_OUTSTANDING_FOR: Duration = Duration::from_secs(15 * 60);

impl JitSettings {
    /// Settings for `agent_role` with every default.
    pub fn new(agent_role: &str) -> JitSettings {
        JitSettings {
            agent_role: agent_role.to_string(),
            labels: DEFAULT_JIT_LABELS.iter().map(|l| (*l).to_string()).collect(),
            runner_group_id: DEFAULT_JIT_RUNNER_GROUP_ID,
            prefix: DEFAULT_JIT_PREFIX.to_string(),
            outstanding_for: DEFAULT_JIT_OUTSTANDING_FOR,
        }
    }

    /// Refuse what cannot work: a role name IAM would not accept (1 to 64 of `[A-Za-z0-9+=,.@_-]`,
    /// IAM API Reference, CreateRole `RoleName`), an empty prefix (the sweep refuses one), labels
    /// that are empty or contain commas.
    pub fn check(&self) -> Result<(), String> {
        if !is_iam_name(&self.agent_role, 1, 64) {
            return Err(format!(
                "agent role name `{}` is not an IAM role name (1 to 64 of A-Z a-z 0-9 + = , . @ _ -)",
                lifecycle_escape::clip(&self.agent_role, 80)
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 20
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err("JIT runner name prefix: 1 to 20 of A-Z a-z 0-9 - _ .".into());
        }
        if self
            .labels
            .iter()
            .any(|l| l.trim().is_empty() || l.contains(',') || l.len() > 256)
        {
            return Err("JIT labels: no empty label, no commas, at most 256 characters each".into());
        }
        Ok(())
    }
}

/// Whether `s` is `min..=max` characters of IAM's name alphabet `[\w+=,.@-]` (ASCII).
pub fn is_iam_name(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// Idle runners kept beyond demand by default: one, so a lone job starts without a boot.
pub const DEFAULT_IDLE_TARGET: u32 = 1;
/// Demand must stay below capacity this long before capacity drops (the simulation's trade-off:
/// shorter means more scale-ins, each a stop window; docs/operations.md, "Scaling").
pub const DEFAULT_SCALE_IN_AFTER: Duration = Duration::from_secs(900);
/// At most one Auto Scaling apply per group per this long (leading and trailing edge).
pub const DEFAULT_APPLY_INTERVAL: Duration = Duration::from_secs(5);
/// Webhook-derived demand may lower capacity only if a reconcile succeeded this recently.
pub const DEFAULT_FRESH_FOR: Duration = Duration::from_secs(180);
/// Delivery ids are remembered this long (GitHub keeps deliveries for redelivery for 3 days).
pub const DEFAULT_DELIVERY_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// What demand scaling is configured with.
#[derive(Clone, Debug)]
pub struct ScaleSettings {
    /// The group it scales.
    pub group: String,
    /// The labels the group serves (lower-case): a job counts when all its labels are here.
    pub labels: BTreeSet<String>,
    /// Idle runners kept beyond demand.
    pub idle_target: u32,
    /// How long demand must stay below capacity before capacity drops.
    pub scale_in_after: Duration,
    /// At most one apply per this long.
    pub apply_interval: Duration,
    /// How recent a successful reconcile must be for webhook demand to lower capacity.
    pub fresh_for: Duration,
    /// The DynamoDB table.
    pub table: String,
    /// Repositories whose jobs the reconcile reads (`owner`, `repo`); empty: the runner URL's.
    pub repos: Vec<(String, String)>,
    /// How long a delivery id is remembered.
    pub delivery_ttl: Duration,
    /// The webhook secret (read once at start); `None`: every webhook is refused.
    pub webhook_secret: Option<lifecycle_github::Secret>,
    /// `--rerun-fleet-losses`: the runner name prefix of the fleet whose lost jobs are re-run once
    /// (crate::rerun); `None`: never re-run.
    pub rerun_fleet_losses: Option<String>,
}

impl ScaleSettings {
    /// Settings for `group` served by `labels`, state in `table`, every default.
    pub fn new(group: &str, labels: &[&str], table: &str) -> ScaleSettings {
        ScaleSettings {
            group: group.to_string(),
            labels: labels.iter().map(|l| l.to_ascii_lowercase()).collect(),
            idle_target: DEFAULT_IDLE_TARGET,
            scale_in_after: DEFAULT_SCALE_IN_AFTER,
            apply_interval: DEFAULT_APPLY_INTERVAL,
            fresh_for: DEFAULT_FRESH_FOR,
            table: table.to_string(),
            repos: Vec::new(),
            delivery_ttl: DEFAULT_DELIVERY_TTL,
            webhook_secret: None,
            rerun_fleet_losses: None,
        }
    }
}

/// Parse `OWNER/REPO` (GitHub's name characters only, so it cannot change the request path).
pub fn parse_repo(s: &str) -> Result<(String, String), String> {
    let ok = |p: &str| {
        !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match s.trim().split_once('/') {
        Some((o, r)) if ok(o) && ok(r) => Ok((o.to_string(), r.to_string())),
        _ => Err(format!("`{s}` is not OWNER/REPO")),
    }
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
            scale: None,
            jit: None,
        }
    }
}

/// The accepted range of one duration setting, and why (docs/controller.md, "Duration
/// settings"). Out of range is a configuration error (exit 3) naming the setting and the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    /// The flag (`--grace`).
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The shortest accepted.
    pub min: Duration,
    /// The longest accepted.
    pub max: Duration,
    /// Why these bounds.
    pub why: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `--grace`.
pub const GRACE_RANGE: DurationRange = DurationRange {
    flag: "--grace",
    env: "RUNNER_LIFECYCLE_CONTROLLER_GRACE",
    min: secs(1),
    max: secs(7200),
    why: "0 would complete an instance in the very sweep that first sees it waiting; a wait older than the hook's HeartbeatTimeout (at most 7200 s) counts as heartbeated and is never completed as agent-gone, so a longer grace would silently switch the rule off",
};
/// `--stuck-after`.
pub const STUCK_AFTER_RANGE: DurationRange = DurationRange {
    flag: "--stuck-after",
    env: "RUNNER_LIFECYCLE_CONTROLLER_STUCK_AFTER",
    min: secs(300),
    max: secs(172_800),
    why: "a drain legitimately waits for its job: below 5 minutes every busy drain is reported stuck (and with --complete-stuck its job is ended); no instance waits longer than a lifecycle hook's GlobalTimeout (at most 48 h), so a longer value never fires",
};
/// `--launch-retry-for`.
pub const LAUNCH_RETRY_FOR_RANGE: DurationRange = DurationRange {
    flag: "--launch-retry-for",
    env: "RUNNER_LIFECYCLE_CONTROLLER_LAUNCH_RETRY_FOR",
    min: secs(60),
    max: secs(900),
    why: "one retry needs its backoff plus the 40 s kept for an attempt and the completion, so less than a minute retries nothing; 900 s is the longest a Lambda function may run, and a longer launch is held across invocations by Lambda's retries, not by this budget",
};
/// `--scale-in-after`.
pub const SCALE_IN_AFTER_RANGE: DurationRange = DurationRange {
    flag: "--scale-in-after",
    env: "RUNNER_LIFECYCLE_SCALE_IN_AFTER",
    min: secs(1),
    max: secs(86_400),
    why: "0 removes the wait altogether (capacity would follow every momentary dip in demand, each dip a scale-in); beyond a day idle capacity is paid for days with no measured benefit (the simulation swept 120 to 1800 s)",
};
/// `--apply-interval`.
pub const APPLY_INTERVAL_RANGE: DurationRange = DurationRange {
    flag: "--apply-interval",
    env: "RUNNER_LIFECYCLE_SCALE_APPLY_INTERVAL",
    min: secs(1),
    max: secs(30),
    why: "0 would switch coalescing off (one Auto Scaling call per webhook); a webhook's invocation may wait up to three windows for the trailing edge, and 3 x 30 s stays inside the function's 120 s timeout (deploy/terraform)",
};
/// `--scale-fresh-for`.
pub const FRESH_FOR_RANGE: DurationRange = DurationRange {
    flag: "--scale-fresh-for",
    env: "RUNNER_LIFECYCLE_SCALE_FRESH_FOR",
    min: secs(60),
    max: secs(3600),
    why: "below the reconcile's one-minute schedule webhook demand could lower capacity only in the seconds after a reconcile; beyond an hour a missed webhook could shrink the group on hour-old data",
};
/// `--jit-outstanding-for`.
pub const JIT_OUTSTANDING_FOR_RANGE: DurationRange = DurationRange {
    flag: "--jit-outstanding-for",
    env: "RUNNER_LIFECYCLE_JIT_OUTSTANDING_FOR",
    min: secs(300),
    max: secs(86_400),
    why: "an unused config must count at least as long as a host takes from the mint to its listener's first connection (boot included), or the one-per-instance limit would not hold; GitHub removes an ephemeral runner that has not connected for more than 1 day, so a longer bound counts nothing more",
};

/// Every duration setting of the controller with its range (the docs' table is checked against
/// this list).
pub const DURATION_RANGES: &[DurationRange] = &[
    GRACE_RANGE,
    STUCK_AFTER_RANGE,
    LAUNCH_RETRY_FOR_RANGE,
    SCALE_IN_AFTER_RANGE,
    APPLY_INTERVAL_RANGE,
    FRESH_FOR_RANGE,
    JIT_OUTSTANDING_FOR_RANGE,
];

impl DurationRange {
    /// `d` if within the range, else an error naming the setting, the value and the range.
    pub fn check(&self, d: Duration) -> Result<Duration, String> {
        if (self.min..=self.max).contains(&d) {
            return Ok(d);
        }
        Err(format!(
            "{} ({}): {} s is out of range; allowed {} to {} s: {}",
            self.flag,
            self.env,
            d.as_secs(),
            self.min.as_secs(),
            self.max.as_secs(),
            self.why
        ))
    }

    /// Parse `text` ([`parse_duration`]) and check the range.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
        let d = parse_duration(text).map_err(|e| format!("{} ({}): {e}", self.flag, self.env))?;
        self.check(d)
    }
}

impl Settings {
    /// Refuse a duration out of its range ([`DURATION_RANGES`]).
    pub fn check(&self) -> Result<(), String> {
        GRACE_RANGE.check(self.grace)?;
        STUCK_AFTER_RANGE.check(self.stuck_after)?;
        LAUNCH_RETRY_FOR_RANGE.check(self.launch_retry_for)?;
        if let Some(s) = &self.scale {
            SCALE_IN_AFTER_RANGE.check(s.scale_in_after)?;
            APPLY_INTERVAL_RANGE.check(s.apply_interval)?;
            FRESH_FOR_RANGE.check(s.fresh_for)?;
        }
        if let Some(j) = &self.jit {
            JIT_OUTSTANDING_FOR_RANGE.check(j.outstanding_for)?;
        }
        Ok(())
    }
}

/// Parse a duration: the one syntax (`lifecycle_core::duration`), a unit required (`300s`, `5m`,
/// `2h`). A bare number, once read as seconds here, is refused with an error that names the fix.
pub use lifecycle_core::duration::parse_duration;

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
    fn jit_settings_are_checked() {
        assert_eq!(JitSettings::new("runner-hosts").check(), Ok(()));
        for bad in ["", "a/b", "role name", &"x".repeat(65)] {
            assert!(JitSettings::new(bad).check().is_err(), "{bad}");
        }
        let mut s = JitSettings::new("r");
        s.prefix = String::new();
        assert!(s.check().is_err());
        s.prefix = "rle-".into();
        s.labels = vec!["a,b".into()];
        assert!(s.check().is_err());
    }

    #[test]
    fn repos() {
        assert_eq!(parse_repo("acme/infra"), Ok(("acme".into(), "infra".into())));
        for bad in ["acme", "acme/", "/x", "a/b/c", "a/..", "a/b?c", "a b/c"] {
            assert!(parse_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("five").is_err() && parse_duration("").is_err() && parse_duration("-1").is_err());
        // One rule with the agent: a bare number is refused, and the error names the fix.
        let e = GRACE_RANGE.parse("300").err().unwrap_or_default();
        assert!(
            e.starts_with("--grace (RUNNER_LIFECYCLE_CONTROLLER_GRACE)") && e.contains("no unit") && e.contains("300s"),
            "{e}"
        );
    }

    #[test]
    fn every_duration_has_a_range_that_holds_its_default_and_refuses_0_and_max() {
        let s = {
            let mut s = Settings::new(["runners".to_string()]);
            s.scale = Some(ScaleSettings::new("runners", &["self-hosted"], "t"));
            s.jit = Some(JitSettings::new("r"));
            s
        };
        assert_eq!(s.check(), Ok(()), "the defaults are in range");
        for r in DURATION_RANGES {
            assert!(r.min > Duration::ZERO && r.min <= r.max, "{}", r.flag);
            for bad in ["0s", "0ms", &format!("{}s", r.max.as_secs() + 1)] {
                let e = r.parse(bad).err().unwrap_or_default();
                assert!(
                    e.starts_with(r.flag) && e.contains(r.env) && e.contains("out of range"),
                    "{} {bad}: {e}",
                    r.flag
                );
                assert!(
                    e.contains(&format!("allowed {} to {} s", r.min.as_secs(), r.max.as_secs())),
                    "{e}"
                );
            }
            assert_eq!(r.parse(&format!("{}s", r.min.as_secs())), Ok(r.min));
            assert_eq!(r.parse(&format!("{}s", r.max.as_secs())), Ok(r.max));
            assert!(r.parse("18446744073709551615s").is_err_and(|e| e.starts_with(r.flag)));
            assert!(r.check(r.max + Duration::from_secs(1)).is_err());
            assert!(r.check(r.min - Duration::from_secs(1)).is_err());
            // Not a number: the parse error, with the setting's name.
            assert!(r.parse("soon").err().unwrap_or_default().starts_with(r.flag));
        }
        let mut bad = s.clone();
        bad.grace = Duration::ZERO;
        assert!(bad.check().is_err_and(|e| e.starts_with("--grace")));
        let mut bad = s.clone();
        bad.stuck_after = Duration::MAX;
        assert!(bad.check().is_err_and(|e| e.starts_with("--stuck-after")));
        let mut bad = s.clone();
        if let Some(j) = bad.jit.as_mut() {
            j.outstanding_for = Duration::from_secs(1);
        }
        assert!(bad.check().is_err_and(|e| e.starts_with("--jit-outstanding-for")));
        let mut bad = s;
        if let Some(sc) = bad.scale.as_mut() {
            sc.apply_interval = Duration::ZERO;
        }
        assert!(bad.check().is_err_and(|e| e.starts_with("--apply-interval")));
    }
}
