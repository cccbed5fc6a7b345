//! Placeholder types until the plot module lands (replaced by the real renderer).

/// One strategy's bars.
#[derive(Clone, Debug)]
pub struct StrategyBars {
    pub name: String,
    pub jobs_killed_by_stop_per_10k_scale_ins: f64,
    pub idle_wait_s_per_scale_in: f64,
    pub scale_ins: u64,
}
/// A state over an interval.
#[derive(Clone, Debug)]
pub struct Span {
    pub lane: &'static str,
    pub from_s: f64,
    pub to_s: f64,
    pub state: String,
}
/// A point event.
#[derive(Clone, Debug)]
pub struct Mark {
    pub lane: &'static str,
    pub at_s: f64,
    pub label: String,
}
/// One instance's timeline.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub strategy: String,
    pub instance: u32,
    pub spans: Vec<Span>,
    pub marks: Vec<Mark>,
}
