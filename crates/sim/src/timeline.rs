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
        }
    }

    /// The instance recorded.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// `lane` changes to `state` at `now`.
    pub fn state(&mut self, lane: &'static str, now: Time, state: String) {
        if let Some((from, old)) = self.open.insert(lane, (now, state)) {
            if self.spans.len() < MAX_ITEMS && now > from {
                self.spans.push(Span {
                    lane,
                    from_s: from.as_secs_f64(),
                    to_s: now.as_secs_f64(),
                    state: old,
                });
            }
        }
    }

    /// A point event on `lane`.
    pub fn mark(&mut self, lane: &'static str, now: Time, label: String) {
        if self.marks.len() < MAX_ITEMS {
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
            if now > from && self.spans.len() < MAX_ITEMS {
                self.spans.push(Span {
                    lane,
                    from_s: from.as_secs_f64(),
                    to_s: now.as_secs_f64(),
                    state,
                });
            }
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
