//! One instance's timeline (`simulate --trace-instance N --plot FILE`): its Auto Scaling state, its
//! listener and its worker as spans over time, and API calls, signals and decisions as marks.

use crate::plot::{Mark, Span, Timeline};
use lifecycle_core::Time;
use std::collections::BTreeMap;

/// Collects the spans and marks of one instance as the world runs.
#[derive(Debug)]
pub struct TimelineRecorder {
    instance: u32,
    open: BTreeMap<&'static str, (Time, String)>,
    spans: Vec<Span>,
    marks: Vec<Mark>,
    ended: bool,
}

/// Keep a timeline readable and its memory bounded over a long run.
const MAX_ITEMS: usize = 20_000;

impl TimelineRecorder {
    /// A recorder for `instance`.
    pub fn new(instance: u32) -> Self {
        TimelineRecorder {
            instance,
            open: BTreeMap::new(),
            spans: Vec::new(),
            marks: Vec::new(),
            ended: false,
        }
    }

    /// The instance recorded.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// `lane` changes to `state` at `now`.
    pub fn state(&mut self, lane: &'static str, now: Time, state: String) {
        if self.ended {
            return;
        }
        if let Some((from, old)) = self.open.insert(lane, (now, state)) {
            self.push(lane, from, now, old);
        }
    }

    /// `lane` has no state from `now` on (a worker exited).
    pub fn end(&mut self, lane: &'static str, now: Time) {
        if let Some((from, state)) = self.open.remove(lane) {
            self.push(lane, from, now, state);
        }
    }

    /// The instance is gone: close every lane and record nothing more.
    pub fn gone(&mut self, now: Time) {
        self.close(now);
        self.ended = true;
    }

    fn push(&mut self, lane: &'static str, from: Time, to: Time, state: String) {
        if to > from && self.spans.len() < MAX_ITEMS {
            self.spans.push(Span {
                lane,
                from_s: from.as_secs_f64(),
                to_s: to.as_secs_f64(),
                state,
            });
        }
    }

    /// A point event on `lane`.
    pub fn mark(&mut self, lane: &'static str, now: Time, label: String) {
        if !self.ended && self.marks.len() < MAX_ITEMS {
            self.marks.push(Mark {
                lane,
                at_s: now.as_secs_f64(),
                label,
            });
        }
    }

    /// Close every open span at the end of the run.
    pub fn close(&mut self, now: Time) {
        let open = std::mem::take(&mut self.open);
        for (lane, (from, state)) in open {
            self.push(lane, from, now, state);
        }
    }

    /// The finished timeline, for `strategy`.
    pub fn into_timeline(self, strategy: &str) -> Timeline {
        Timeline {
            strategy: strategy.to_string(),
            instance: self.instance,
            spans: self.spans,
            marks: self.marks,
        }
    }
}
