//! What `simulate` accepts: the allowed range of every numeric flag, in one table ([`RANGES`]), and
//! the one budget that spans flags ([`MAX_INSTANCE_DAYS`]).
//!
//! Every numeric flag of `simulate` takes its value parser from its row here, and its `--help` line
//! gets the row's range appended (`[allowed: 0 to 3600 s]`, by [`annotate`]). A value out of range,
//! NaN, an infinity or text that is not a number is a usage error: clap prints the flag, the value,
//! the range and the row's reason, and `simulate` exits 2. The README's "Flag ranges" table repeats
//! every row (a test keeps them equal).
//!
//! To add a numeric flag: add one row to [`RANGES`] with a constructor that says its unit (`seconds`,
//! `days`, `per_day`, `share`, `count`, `id`; `after_keyword` for a policy's number such as
//! `requeue:SECONDS`), the bounds and why they are what they are; give the flag
//! `value_parser = simulate_ranges::seconds("the-flag")` (or `real`, `whole`; a policy parser calls
//! [`get`]`("the-flag").duration(number)`); and paste the README row the failing test prints.

use clap::Arg;
use std::time::Duration;

/// The smallest non-zero fault rate, per day. Faults are drawn as exponential gaps (lifecycle-sim
/// `next_fault`) whose mean, 86,400 / rate seconds, times the longest draw (about 37 means) must fit
/// in a `Duration`: rates below about 2e-13 panicked. 1e-9 a day is where no run this module allows
/// expects a single event: its largest run is [`MAX_INSTANCE_DAYS`] (3.65e8 instance-days), which
/// would see 0.37 of them.
pub const MIN_RATE: f64 = 1e-9;

/// The most simulated instance-days one run may ask for: `--seeds` x `--instances` x days. It is the
/// largest single run the rows allow (100,000 instances for 3,650 days), so no flag alone hits it; a
/// sweep may cost as much as that run and no more. The cost is linear in it: 10,000 instances for
/// 30 days (300,000 instance-days) take 37 s for one strategy on this project's 2-core machine
/// (README, "Performance"), so the budget is about 12 hours per strategy, not centuries.
pub const MAX_INSTANCE_DAYS: f64 = 365_000_000.0;

/// The allowed values of every numeric flag of `simulate`, one row per flag.
#[rustfmt::skip]
pub const RANGES: &[Range] = &[
    Range::id("seed", u64::MAX, "Any 64-bit number names a world; a sweep takes the ones after it, wrapping to 0"),
    Range::count("seeds", "seeds", 1, 100_000, "Ten times the 10,000-seed sweep timed under Performance, about a minute at 20 instances for a day"),
    Range::count("instances", "instances", 2, 100_000, "The alarm policy keeps at least 2 idle runners; ten times the largest fleet benchmarked, 10,000 instances in 85 MB"),
    Range::days("days", 3650.0, "Ten years: the workload repeats weekly, so a longer run adds no new kind of day; run more seeds instead"),
    Range::seconds("imds-lag", 0.0, 3600.0, "IMDS is seen seconds behind; at an hour every scale-in has outlived the default HeartbeatTimeout of 1800 s"),
    Range::whole_seconds("hook-timeout", 30, 7200, "AWS's limits for a lifecycle hook's HeartbeatTimeout"),
    Range::share("peak-utilisation", "A share of the group"),
    Range::share("throttle-rate", "A probability"),
    Range::share("error-rate", "A probability"),
    Range::per_day("imds-outages-per-day", "instance-day", 1440.0, "Once a minute: an outage lasts 5 to 60 s, so more is one long outage"),
    Range::per_day("agent-crashes-per-day", "instance-day", 1440.0, "Once a minute: a boot takes 1 to 2 minutes, so more is a crash loop, not a rate"),
    Range::per_day("runner-crashes-per-day", "instance-day", 1440.0, "Once a minute: a boot takes 1 to 2 minutes, so more is a crash loop, not a rate"),
    Range::per_day("spot-interruptions-per-day", "instance-day", 1440.0, "Once a minute: the notice alone is 2 minutes, so more interrupts every instance before it boots"),
    Range::per_day("throttle-episodes-per-day", "day", 1440.0, "Once a minute: an episode lasts 1 to 10 minutes, so more is one endless episode"),
    Range::share("stop-path-failure-rate", "A probability"),
    Range::share("github-error-rate", "A probability"),
    Range::per_day("github-rate-limit-episodes-per-day", "day", 1440.0, "Once a minute: an episode lasts 1 to 15 minutes, so more is one endless episode"),
    Range::seconds("busy-flag-lag", 0.0, 3600.0, "Seen 25 to 60 s; at an hour most jobs end before the flag shows them"),
    Range::seconds("event-to-stop", 0.0, 7200.0, "Measured 11 s; past the longest HeartbeatTimeout, 7200 s, the hook always times out first"),
    Range::seconds("unacquired", 0.0, 86400.0, "GitHub cancels a job still queued for a self-hosted runner after 24 hours").after_keyword("requeue:"),
    Range::seconds("handover-w0", 0.0, 86400.0, "GitHub cancels a job still queued for a self-hosted runner after 24 hours").after_keyword("requeue:"),
    Range::seconds("handover-w1", 0.0, 86400.0, "GitHub cancels a job still queued for a self-hosted runner after 24 hours").after_keyword("requeue:"),
    Range::seconds("handover-w2", 0.0, 86400.0, "GitHub cancels a job still queued for a self-hosted runner after 24 hours").after_keyword("requeue:"),
    Range::share("release-not-found", "A probability"),
    Range::share("acquire-failure-rate", "A probability"),
    Range::count("demand-idle-target", "idle runners", 0, 100_000, "No more than the largest group, see --instances"),
    Range::seconds("scale-in-after", 0.0, 86400.0, "A day: demand follows a daily cycle, so a longer wait never scales in"),
    Range::share("webhook-drop-rate", "A probability"),
    Range::count("warm-pool", "instances", 0, 100_000, "No larger than the largest group, see --instances"),
    Range::per_day("warm-trims-per-day", "pool instance-day", 24.0, "Hourly per pool instance: each trim replaces it with a fresh launch, so more churns the pool instead of keeping it warm"),
    Range::id("trace-instance", u32::MAX as u64, "Instances are numbered from 0 in launch order, so a long run's numbers pass --instances"),
];

/// The row of `flag` (its long name, without dashes).
///
/// # Panics
/// If the table has no such row: a programming error, caught by any test that builds the command.
pub fn get(flag: &str) -> &'static Range {
    RANGES
        .iter()
        .find(|r| r.flag == flag)
        .unwrap_or_else(|| panic!("simulate_ranges::RANGES has no row for --{flag}"))
}

/// A value parser for a flag in seconds (fractions allowed unless whole seconds): a `Duration`.
pub fn seconds(flag: &str) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let range = get(flag);
    assert!(
        matches!(range.unit, Unit::Seconds | Unit::WholeSeconds) && range.keyword.is_empty(),
        "--{flag}: not a plain duration"
    );
    move |text: &str| range.duration(text)
}

/// A value parser for a flag that is a real number (days, a rate, a share).
pub fn real(flag: &str) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    let range = get(flag);
    assert!(
        matches!(range.unit, Unit::Days | Unit::PerDay(_) | Unit::Share) && range.keyword.is_empty(),
        "--{flag}: not a real number"
    );
    move |text: &str| match range.check(text)? {
        Number::Real(v) => Ok(v),
        Number::Whole(_) => Err(range.refuse("is not a real number")),
    }
}

/// A value parser for a flag that is a whole number (a count, a seed, an instance number), as `T`.
///
/// # Panics
/// If the row is not a whole number, or its maximum does not fit in `T`.
pub fn whole<T>(flag: &str) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    let range = get(flag);
    let fits = match range.bounds {
        Bounds::Whole { max, .. } => T::try_from(max).is_ok(),
        Bounds::Real { .. } => false,
    };
    assert!(
        fits && matches!(range.unit, Unit::Count(_) | Unit::Id) && range.keyword.is_empty(),
        "--{flag}: not a whole number of this type"
    );
    move |text: &str| match range.check(text)? {
        Number::Whole(v) => T::try_from(v).map_err(|_| range.refuse("is out of range")),
        Number::Real(_) => Err(range.refuse("is not a whole number")),
    }
}

/// Append a flag's range to its help (`[allowed: ...]`, beside clap's `[default: ...]`); flags
/// without a row are left as they are. For `#[command(mut_args = annotate)]`.
pub fn annotate(arg: Arg) -> Arg {
    let Some(range) = arg.get_long().and_then(|l| RANGES.iter().find(|r| r.flag == l)) else {
        return arg;
    };
    let note = format!("[allowed: {}]", range.allowed());
    let with_note = |help: Option<&clap::builder::StyledStr>| help.map(|h| format!("{h} {note}"));
    let help = with_note(arg.get_help()).unwrap_or_else(|| note.clone());
    let long_help = with_note(arg.get_long_help());
    let arg = arg.help(help);
    match long_help {
        Some(long) => arg.long_help(long),
        None => arg,
    }
}

/// Refuse a run that asks for more than [`MAX_INSTANCE_DAYS`].
pub fn check_budget(seeds: u64, instances: u32, duration: Duration) -> Result<(), String> {
    let days = duration.as_secs_f64() / 86_400.0;
    let asked = seeds as f64 * f64::from(instances) * days;
    if asked <= MAX_INSTANCE_DAYS {
        return Ok(());
    }
    let days = (days * 1000.0).round() / 1000.0;
    Err(format!(
        "--seeds {seeds} x --instances {instances} x {days} days (--days, or the trace's length) is {asked:.3e} \
         simulated instance-days; a run may ask for at most {MAX_INSTANCE_DAYS} (the largest single run: \
         100000 instances for 3650 days); run fewer seeds, fewer instances or fewer days"
    ))
}

/// One flag's allowed values, and why. Build rows with the constructors; they keep unit and bounds
/// consistent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// The flag's long name, without dashes.
    pub flag: &'static str,
    /// What the number counts or measures.
    pub unit: Unit,
    bounds: Bounds,
    /// Why the bounds are what they are: one sentence, no parentheses, no final stop (printed after
    /// the range in errors and in the README).
    pub why: &'static str,
    /// For a policy's number (`requeue:SECONDS`): the text before it. Empty for a plain number.
    pub keyword: &'static str,
}

/// What a flag's number means, and so how it is parsed and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds, fractions allowed (parsed into a `Duration`).
    Seconds,
    /// Whole seconds, as an AWS API takes them (parsed into a `Duration`).
    WholeSeconds,
    /// Days of simulated time, fractions allowed.
    Days,
    /// Events per day, per what the text says (`instance-day`, `day`). 0 turns the fault off; a
    /// non-zero rate is at least [`MIN_RATE`].
    PerDay(&'static str),
    /// A probability or a share: 0 to 1.
    Share,
    /// A whole number of things, named in the plural.
    Count(&'static str),
    /// A whole number that names something (a seed, an instance).
    Id,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bounds {
    /// `min..=max`, or `(min, max]` when `open_min`.
    Real { min: f64, max: f64, open_min: bool },
    /// `min..=max`.
    Whole { min: u64, max: u64 },
}

/// A number that passed its row's check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A real number within the bounds (never NaN, infinite or -0).
    Real(f64),
    /// A whole number within the bounds.
    Whole(u64),
}

impl Range {
    const fn new(flag: &'static str, unit: Unit, bounds: Bounds, why: &'static str) -> Range {
        Range {
            flag,
            unit,
            bounds,
            why,
            keyword: "",
        }
    }

    /// Seconds, fractions allowed, `min` to `max`.
    pub const fn seconds(flag: &'static str, min: f64, max: f64, why: &'static str) -> Range {
        let bounds = Bounds::Real {
            min,
            max,
            open_min: false,
        };
        Range::new(flag, Unit::Seconds, bounds, why)
    }

    /// Whole seconds, `min` to `max`.
    pub const fn whole_seconds(flag: &'static str, min: u64, max: u64, why: &'static str) -> Range {
        Range::new(flag, Unit::WholeSeconds, Bounds::Whole { min, max }, why)
    }

    /// Days, more than 0 and at most `max`.
    pub const fn days(flag: &'static str, max: f64, why: &'static str) -> Range {
        let bounds = Bounds::Real {
            min: 0.0,
            max,
            open_min: true,
        };
        Range::new(flag, Unit::Days, bounds, why)
    }

    /// Events per `per` (`instance-day`, `day`): 0, or [`MIN_RATE`] to `max`.
    pub const fn per_day(flag: &'static str, per: &'static str, max: f64, why: &'static str) -> Range {
        let bounds = Bounds::Real {
            min: 0.0,
            max,
            open_min: false,
        };
        Range::new(flag, Unit::PerDay(per), bounds, why)
    }

    /// A probability or a share, 0 to 1.
    pub const fn share(flag: &'static str, why: &'static str) -> Range {
        let bounds = Bounds::Real {
            min: 0.0,
            max: 1.0,
            open_min: false,
        };
        Range::new(flag, Unit::Share, bounds, why)
    }

    /// A whole number of `things`, `min` to `max`.
    pub const fn count(flag: &'static str, things: &'static str, min: u64, max: u64, why: &'static str) -> Range {
        Range::new(flag, Unit::Count(things), Bounds::Whole { min, max }, why)
    }

    /// A whole number naming something, 0 to `max`.
    pub const fn id(flag: &'static str, max: u64, why: &'static str) -> Range {
        Range::new(flag, Unit::Id, Bounds::Whole { min: 0, max }, why)
    }

    /// The number follows `keyword` in the flag's value (`requeue:` in `requeue:SECONDS`).
    pub const fn after_keyword(self, keyword: &'static str) -> Range {
        Range { keyword, ..self }
    }

    /// The bounds with their unit, as help, errors and the README show them: `0 to 3600 s`.
    pub fn describe(&self) -> String {
        let unit = match self.unit {
            Unit::Seconds | Unit::WholeSeconds => " s".to_owned(),
            Unit::Days => " days".to_owned(),
            Unit::PerDay(per) => format!(" per {per}"),
            Unit::Share | Unit::Id => String::new(),
            Unit::Count(things) => format!(" {things}"),
        };
        let whole_note = if self.unit == Unit::WholeSeconds {
            " (whole seconds)"
        } else {
            ""
        };
        match self.bounds {
            Bounds::Real {
                min,
                max,
                open_min: true,
            } => format!("more than {}, up to {}{unit}", show(min), show(max)),
            Bounds::Real { max, .. } if matches!(self.unit, Unit::PerDay(_)) => {
                format!("0 (off), or {} to {}{unit}", show(MIN_RATE), show(max))
            }
            Bounds::Real { min, max, .. } => format!("{} to {}{unit}", show(min), show(max)),
            Bounds::Whole { min, max } => format!("{min} to {max}{unit}{whole_note}"),
        }
    }

    /// What stands for the number in the flag's value: `SECONDS`, `N`.
    fn placeholder(&self) -> &'static str {
        match self.unit {
            Unit::Seconds | Unit::WholeSeconds => "SECONDS",
            Unit::Days => "DAYS",
            Unit::PerDay(_) => "RATE",
            Unit::Share => "P",
            Unit::Count(_) | Unit::Id => "N",
        }
    }

    /// [`Range::describe`], with the value's form for a policy's number: `requeue:SECONDS, SECONDS 0 to
    /// 86400 s`.
    pub fn allowed(&self) -> String {
        if self.keyword.is_empty() {
            return self.describe();
        }
        let placeholder = self.placeholder();
        format!("{}{placeholder}, {placeholder} {}", self.keyword, self.describe())
    }

    /// The README row: `` | `--imds-lag` | 0 to 3600 s | why | ``, `` `--unacquired requeue:SECONDS` ``
    /// for a policy's number.
    #[cfg(test)]
    pub fn readme_row(&self) -> String {
        let form = if self.keyword.is_empty() {
            String::new()
        } else {
            format!(" {}{}", self.keyword, self.placeholder())
        };
        format!("| `--{}{form}` | {} | {} |", self.flag, self.describe(), self.why)
    }

    /// Check the number in `text` (the flag's value, or what follows its keyword).
    pub fn check(&self, text: &str) -> Result<Number, String> {
        match self.bounds {
            Bounds::Whole { min, max } => {
                let v = match text.parse::<u64>() {
                    Ok(v) => v,
                    // A number, but not a whole one this type holds: negative, fractional or huge.
                    Err(_) => match text.parse::<f64>() {
                        Ok(f) if f.is_finite() && f.fract() == 0.0 => return Err(self.refuse("is out of range")),
                        Ok(_) => return Err(self.refuse("is not a whole number")),
                        Err(_) => return Err(self.refuse("is not a number")),
                    },
                };
                if (min..=max).contains(&v) {
                    Ok(Number::Whole(v))
                } else {
                    Err(self.refuse("is out of range"))
                }
            }
            Bounds::Real { min, max, open_min } => {
                let Ok(v) = text.parse::<f64>() else {
                    return Err(self.refuse("is not a number"));
                };
                if !v.is_finite() {
                    return Err(self.refuse("is not a finite number"));
                }
                // -0 is 0 (a Duration cannot be negative, and reports would print "-0").
                let v = v + 0.0;
                let above_min = if open_min { v > min } else { v >= min };
                if !(above_min && v <= max) {
                    return Err(self.refuse("is out of range"));
                }
                if matches!(self.unit, Unit::PerDay(_)) && v > 0.0 && v < MIN_RATE {
                    return Err(self.refuse("is too rare to happen in any run"));
                }
                Ok(Number::Real(v))
            }
        }
    }

    /// The number in `text` as a `Duration` (a row in seconds).
    pub fn duration(&self, text: &str) -> Result<Duration, String> {
        match self.check(text)? {
            Number::Whole(s) => Ok(Duration::from_secs(s)),
            // Cannot fail within the bounds, which are far below Duration's limit.
            Number::Real(s) => Duration::try_from_secs_f64(s).map_err(|_| self.refuse("is out of range")),
        }
    }

    /// Values just inside the bounds and values beyond them, for tests.
    #[cfg(test)]
    pub fn edges(&self) -> (Vec<String>, Vec<String>) {
        match self.bounds {
            Bounds::Real { min, max, open_min } => {
                let low = if open_min { max / 1e6 } else { min };
                let mut outside = vec![
                    show(max * 2.0),
                    "1e300".to_owned(),
                    "nan".to_owned(),
                    "-inf".to_owned(),
                    "-1".to_owned(),
                ];
                if matches!(self.unit, Unit::PerDay(_)) {
                    outside.push(show(MIN_RATE / 2.0));
                }
                if open_min {
                    outside.push(show(min));
                }
                (vec![show(low), show(max)], outside)
            }
            Bounds::Whole { min, max } => {
                let mut outside = vec![
                    (u128::from(max) + 1).to_string(),
                    "-1".to_owned(),
                    "2.5".to_owned(),
                    "x".to_owned(),
                ];
                if min > 0 {
                    outside.push((min - 1).to_string());
                }
                (vec![min.to_string(), max.to_string()], outside)
            }
        }
    }

    /// The error for a value: what is wrong, then what is allowed and why. Clap prefixes the flag and
    /// the value (`invalid value '2e19' for '--imds-lag <IMDS_LAG>': `).
    fn refuse(&self, problem: &str) -> String {
        format!("{problem}; allowed: {}. {}", self.allowed(), self.why)
    }
}

/// A bound as people write it: `3600`, `0.5`, `1e-9`.
fn show(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_are_unique_and_their_bounds_hold_their_defaults() {
        for (i, r) in RANGES.iter().enumerate() {
            assert!(RANGES[..i].iter().all(|o| o.flag != r.flag), "--{} twice", r.flag);
            match r.bounds {
                Bounds::Real { min, max, .. } => assert!(min.is_finite() && max.is_finite() && min <= max),
                Bounds::Whole { min, max } => assert!(min <= max),
            }
            assert!(
                r.why.starts_with(char::is_uppercase) && !r.why.ends_with('.') && !r.why.contains(['|', '(', ')']),
                "--{}: why",
                r.flag
            );
        }
    }

    #[test]
    fn messages_say_what_is_wrong_and_what_is_allowed() {
        let lag = get("imds-lag");
        assert_eq!(lag.duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(lag.duration("-0"), Ok(Duration::ZERO));
        let err = lag.duration("2e19").expect_err("too long");
        assert!(
            err.starts_with("is out of range; allowed: 0 to 3600 s. IMDS is seen"),
            "{err}"
        );
        for bad in ["nan", "NaN", "inf", "-inf", "infinity"] {
            let err = lag.duration(bad).expect_err(bad);
            assert!(err.starts_with("is not a finite number"), "{err}");
        }
        assert!(lag.duration("two").expect_err("text").starts_with("is not a number"));
        assert!(lag.duration("-1").expect_err("negative").starts_with("is out of range"));
        let days = get("days");
        assert_eq!(days.describe(), "more than 0, up to 3650 days");
        assert!(days.check("0").is_err() && days.check("3650").is_ok() && days.check("3650.1").is_err());
        let crashes = get("agent-crashes-per-day");
        assert_eq!(crashes.describe(), "0 (off), or 1e-9 to 1440 per instance-day");
        assert_eq!(crashes.check("0"), Ok(Number::Real(0.0)));
        assert_eq!(crashes.check("1e-9"), Ok(Number::Real(1e-9)));
        assert!(crashes.check("1e-300").expect_err("tiny").starts_with("is too rare"));
        let seeds = get("seeds");
        assert_eq!(seeds.describe(), "1 to 100000 seeds");
        assert!(seeds.check("0").expect_err("zero").starts_with("is out of range"));
        assert!(seeds.check("-3").expect_err("negative").starts_with("is out of range"));
        assert!(seeds.check("1e30").expect_err("huge").starts_with("is out of range"));
        assert!(seeds
            .check("2.5")
            .expect_err("fraction")
            .starts_with("is not a whole number"));
        assert_eq!(get("seed").check("18446744073709551615"), Ok(Number::Whole(u64::MAX)));
        assert_eq!(get("hook-timeout").describe(), "30 to 7200 s (whole seconds)");
        let unacquired = get("unacquired");
        assert_eq!(unacquired.allowed(), "requeue:SECONDS, SECONDS 0 to 86400 s");
        assert!(unacquired
            .readme_row()
            .starts_with("| `--unacquired requeue:SECONDS` | 0 to 86400 s |"));
    }

    #[test]
    fn the_budget_refuses_sweeps_larger_than_the_largest_run() {
        let day = Duration::from_secs(86_400);
        assert!(check_budget(1, 100_000, day * 3650).is_ok());
        assert!(check_budget(10_000, 20, day).is_ok());
        let err = check_budget(100_000, 100_000, day * 3650).expect_err("centuries");
        assert!(err.contains("--seeds 100000 x --instances 100000 x 3650 days"), "{err}");
        assert!(err.contains("at most 365000000"), "{err}");
        let err = check_budget(100_000, 10_000, day * 7 / 3).expect_err("a long sweep");
        assert!(err.contains("x 2.333 days"), "{err}");
        // The budget is the largest single run the rows allow.
        let (Bounds::Whole { max: instances, .. }, Bounds::Real { max: days, .. }) =
            (get("instances").bounds, get("days").bounds)
        else {
            panic!("instances are whole, days real");
        };
        assert_eq!(MAX_INSTANCE_DAYS, instances as f64 * days);
    }

    /// The README's "Flag ranges" table holds every row, as `readme_row` renders it, and the budget.
    #[test]
    fn the_readme_documents_every_range() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("**Flag ranges.**")
            .expect("README has a Flag ranges paragraph");
        let section = &readme[start..];
        let missing: Vec<String> = RANGES
            .iter()
            .map(Range::readme_row)
            .filter(|row| !section.contains(row.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "README's Flag ranges table lacks (or has stale) rows; the table's rows are:\n{}",
            RANGES.iter().map(Range::readme_row).collect::<Vec<_>>().join("\n")
        );
        assert!(section.contains("365,000,000"), "README states the budget");
        assert!(section.contains(&show(MIN_RATE)), "README states the smallest rate");
    }

    /// Number-like text: what people type and what breaks parsers (signs, exponents, NaN, infinities,
    /// huge and tiny magnitudes), besides any text at all.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (-400i32..400, any::<bool>()).prop_map(|(e, neg)| format!("{}1e{e}", if neg { "-" } else { "" })),
            Just("nan".to_owned()),
            Just("-inf".to_owned()),
            Just("infinity".to_owned()),
            "[-+0-9.eE_ ]{0,24}",
            any::<String>(),
        ]
    }

    proptest! {
        /// Any text to any row: a number within the bounds, or an error that says what is allowed.
        #[test]
        fn any_text_gives_a_number_in_range_or_a_clean_error(row in 0..RANGES.len(), text in number_text()) {
            let r = &RANGES[row];
            match r.check(&text) {
                Ok(Number::Real(v)) => {
                    let Bounds::Real { min, max, open_min } = r.bounds else { panic!("real from whole row") };
                    let above_min = if open_min { v > min } else { v >= min };
                    prop_assert!(v.is_finite() && v <= max && above_min, "{} for --{}", v, r.flag);
                    prop_assert!(v.is_sign_positive());
                    if matches!(r.unit, Unit::Seconds) {
                        prop_assert!(r.duration(&text).is_ok());
                    }
                }
                Ok(Number::Whole(v)) => {
                    let Bounds::Whole { min, max } = r.bounds else { panic!("whole from real row") };
                    prop_assert!((min..=max).contains(&v));
                }
                Err(e) => prop_assert!(e.contains("; allowed: ") && e.contains(r.why), "{}", e),
            }
        }
    }
}
