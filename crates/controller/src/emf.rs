//! CloudWatch embedded metric format (EMF), typed: one log line carries the values and the
//! directive that makes CloudWatch read them as metrics (namespace `RunnerLifecycle`). The
//! controller's three metric lines (scaling, the sweep, fleet-loss re-runs) are built here, so a
//! metric's name, unit and dimensions are written once and the JSON shape cannot drift.
//!
//! Reference: Amazon CloudWatch User Guide, "Specification: Embedded metric format".

use serde::Serialize;
use std::collections::BTreeMap;

/// The namespace of every metric the controller emits.
pub const NAMESPACE: &str = "RunnerLifecycle";
/// The dimension of per-group metrics.
pub const GROUP_DIMENSION: &str = "AutoScalingGroupName";

/// A metric's unit (the subset the controller uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// A count.
    Count,
    /// A duration in seconds.
    Seconds,
}

/// A metric the controller emits: its name and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Metric {
    /// The metric's name.
    #[serde(rename = "Name")]
    pub name: &'static str,
    /// Its unit.
    #[serde(rename = "Unit")]
    pub unit: Unit,
}

impl Metric {
    /// A count.
    pub const fn count(name: &'static str) -> Metric {
        Metric {
            name,
            unit: Unit::Count,
        }
    }

    /// A duration in seconds.
    pub const fn seconds(name: &'static str) -> Metric {
        Metric {
            name,
            unit: Unit::Seconds,
        }
    }
}

/// One EMF line being built: values in the order they are put, for one group or fleet-wide.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    group: Option<String>,
    timestamp_ms: i64,
    metrics: Vec<Metric>,
    values: BTreeMap<&'static str, serde_json::Number>,
}

#[derive(Serialize)]
struct Directive<'a> {
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "Dimensions")]
    dimensions: [&'a [&'static str]; 1],
    #[serde(rename = "Metrics")]
    metrics: &'a [Metric],
}

#[derive(Serialize)]
struct Aws<'a> {
    #[serde(rename = "Timestamp")]
    timestamp: i64,
    #[serde(rename = "CloudWatchMetrics")]
    cloudwatch_metrics: [Directive<'a>; 1],
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "_aws")]
    aws: Aws<'a>,
    #[serde(rename = "AutoScalingGroupName", skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(flatten)]
    values: &'a BTreeMap<&'static str, serde_json::Number>,
}

impl Line {
    /// Metrics of `group` (dimension `AutoScalingGroupName`).
    pub fn for_group(group: &str, timestamp_ms: i64) -> Line {
        Line {
            group: Some(group.to_string()),
            timestamp_ms,
            metrics: Vec::new(),
            values: BTreeMap::new(),
        }
    }

    /// Fleet-wide metrics (no dimension).
    pub fn fleet_wide(timestamp_ms: i64) -> Line {
        Line {
            group: None,
            timestamp_ms,
            metrics: Vec::new(),
            values: BTreeMap::new(),
        }
    }

    /// Add `metric` with `value`.
    pub fn put(&mut self, metric: Metric, value: impl Into<serde_json::Number>) -> &mut Line {
        self.metrics.push(metric);
        self.values.insert(metric.name, value.into());
        self
    }

    /// Add `metric` if there is a value.
    pub fn put_some<V: Into<serde_json::Number>>(&mut self, metric: Metric, value: Option<V>) -> &mut Line {
        if let Some(v) = value {
            self.put(metric, v);
        }
        self
    }

    /// The line, one JSON object with its keys in sorted order.
    pub fn render(&self) -> String {
        let dimensions: &[&str] = if self.group.is_some() { &[GROUP_DIMENSION] } else { &[] };
        let doc = Document {
            aws: Aws {
                timestamp: self.timestamp_ms,
                cloudwatch_metrics: [Directive {
                    namespace: NAMESPACE,
                    dimensions: [dimensions],
                    metrics: &self.metrics,
                }],
            },
            group: self.group.as_deref(),
            values: &self.values,
        };
        // Through a `Value` so the object's keys come out sorted, as log readers expect.
        serde_json::to_value(&doc).map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_matches_the_specification() {
        let mut line = Line::for_group("runners", 5);
        line.put(Metric::count("A"), 1u32)
            .put_some(Metric::seconds("B"), Some(-2i64))
            .put_some(Metric::count("C"), None::<u32>);
        assert_eq!(
            line.render(),
            r#"{"A":1,"AutoScalingGroupName":"runners","B":-2,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["AutoScalingGroupName"]],"Metrics":[{"Name":"A","Unit":"Count"},{"Name":"B","Unit":"Seconds"}],"Namespace":"RunnerLifecycle"}],"Timestamp":5}}"#
        );
        let mut fleet = Line::fleet_wide(0);
        fleet.put(Metric::count("FleetLossReruns"), 3u64);
        assert_eq!(
            fleet.render(),
            r#"{"FleetLossReruns":3,"_aws":{"CloudWatchMetrics":[{"Dimensions":[[]],"Metrics":[{"Name":"FleetLossReruns","Unit":"Count"}],"Namespace":"RunnerLifecycle"}],"Timestamp":0}}"#
        );
    }
}
