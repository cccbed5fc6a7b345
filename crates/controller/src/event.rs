//! The EventBridge events the controller handles, typed.
//!
//! Shapes from the Amazon EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling event reference"
//! (lifecycle actions: `source` `aws.autoscaling`, `detail-type` `EC2 Instance-launch Lifecycle
//! Action` / `EC2 Instance-terminate Lifecycle Action`, detail with `LifecycleActionToken`,
//! `AutoScalingGroupName`, `LifecycleHookName`, `EC2InstanceId`, `LifecycleTransition`,
//! `NotificationMetadata`, `Origin`, `Destination`), the EC2 User Guide, "Spot Instance interruption
//! notices" (`source` `aws.ec2`, `detail-type` `EC2 Spot Instance Interruption Warning`, detail
//! `instance-id`, `instance-action`), and the EventBridge User Guide, "Scheduled events"
//! (`source` `aws.events`, `detail-type` `Scheduled Event`).
//!
//! Anything else, or a known event with a missing or malformed field, is an [`EventError`]: the
//! controller reports it as not retryable (retrying the same bytes cannot help) and never panics.

use serde::Deserialize;
use serde_json::Value;

/// `detail-type` of a termination lifecycle action.
pub const DETAIL_TERMINATE: &str = "EC2 Instance-terminate Lifecycle Action";
/// `detail-type` of a launch lifecycle action.
pub const DETAIL_LAUNCH: &str = "EC2 Instance-launch Lifecycle Action";
/// `detail-type` of a spot interruption warning.
pub const DETAIL_SPOT: &str = "EC2 Spot Instance Interruption Warning";
/// `detail-type` of an EventBridge schedule.
pub const DETAIL_SCHEDULED: &str = "Scheduled Event";
/// `LifecycleTransition` of a termination hook.
pub const TRANSITION_TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";
/// `LifecycleTransition` of a launch hook.
pub const TRANSITION_LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";

/// An event the controller understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerEvent {
    /// An instance waits in `Terminating:Wait` (or `Warmed:Terminating:Wait` for a pool trim).
    Terminate(LifecycleAction),
    /// An instance waits in `Pending:Wait` (or `Warmed:Pending:Wait`).
    Launch(LifecycleAction),
    /// EC2 will interrupt a spot instance in two minutes.
    SpotInterruption {
        /// The instance.
        instance_id: String,
        /// `terminate`, `stop` or `hibernate`.
        action: String,
    },
    /// The schedule fired: run the sweep.
    Scheduled {
        /// The rule's ARN (the event's first resource), for the log.
        rule: Option<String>,
    },
}

/// Where an instance comes from or goes to (`Origin` / `Destination`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// `EC2`: a fresh launch, or a termination out of EC2 entirely.
    Ec2,
    /// `AutoScalingGroup`: the group's serving capacity.
    Group,
    /// `WarmPool`.
    WarmPool,
    /// A value AWS may add later, kept verbatim.
    Other(String),
}

impl Place {
    fn parse(s: &str) -> Place {
        match s {
            "EC2" => Place::Ec2,
            "AutoScalingGroup" => Place::Group,
            "WarmPool" => Place::WarmPool,
            other => Place::Other(other.to_string()),
        }
    }
}

/// One lifecycle action from the event's detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleAction {
    /// The group.
    pub group: String,
    /// The hook holding the instance.
    pub hook: String,
    /// The instance.
    pub instance_id: String,
    /// The action's token (completing by token avoids completing a later action by mistake).
    pub token: Option<String>,
    /// Where the instance comes from (absent in older events).
    pub origin: Option<Place>,
    /// Where it goes.
    pub destination: Option<Place>,
    /// The event's `time` (RFC 3339), when present: about when the action began.
    pub time: Option<String>,
    /// The instance's ARN, from the event's `account`, `region` and the partition of its first
    /// resource (`arn:aws:ec2:REGION:ACCOUNT:instance/ID`), when the event carries them. The
    /// controller tags the instance's token secret with it (IAM: `ec2:SourceInstanceARN`).
    pub instance_arn: Option<String>,
}

impl LifecycleAction {
    /// Whether this termination trims the warm pool: the instance rests stopped or hibernated in
    /// `Warmed:Terminating:Wait` and no agent runs on it (AWS User Guide, "Warm pools": lifecycle
    /// events from the warm pool carry `Origin` `WarmPool`).
    pub fn is_warm_pool_trim(&self) -> bool {
        self.origin == Some(Place::WarmPool)
    }

    /// Whether this launch goes into the warm pool rather than into service.
    pub fn is_into_warm_pool(&self) -> bool {
        self.destination == Some(Place::WarmPool)
    }
}

/// Why an event was rejected. Never retryable: the same bytes will fail the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not an object.
    #[error("the event is not a JSON object: {0}")]
    NotJson(String),
    /// A field the event kind requires is missing or not a string.
    #[error("{kind} event without a valid `{field}`")]
    MissingField {
        /// The event kind.
        kind: &'static str,
        /// The field (dotted for detail fields).
        field: &'static str,
    },
    /// A field has a value the controller refuses (the wrong transition for the detail-type, an
    /// instance id that is not one).
    #[error("{kind} event: {problem}")]
    Invalid {
        /// The event kind.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A `source`/`detail-type` pair the controller does not handle.
    #[error("unsupported event: source `{event_source}`, detail-type `{detail_type}`")]
    Unsupported {
        /// The event's source.
        event_source: String,
        /// The event's detail-type.
        detail_type: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    source: Option<Value>,
    #[serde(rename = "detail-type", default)]
    detail_type: Option<Value>,
    #[serde(default)]
    time: Option<Value>,
    #[serde(default)]
    resources: Option<Value>,
    #[serde(default)]
    account: Option<Value>,
    #[serde(default)]
    region: Option<Value>,
    #[serde(default)]
    detail: Option<Value>,
}

/// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/ID` from the envelope, when every part is sound.
fn instance_arn(env: &Envelope, instance_id: &str) -> Option<String> {
    let account = text(&env.account).filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))?;
    let region = text(&env.region).filter(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })?;
    // The partition of the group's ARN (`arn:aws:autoscaling:...`); `aws` when absent.
    let partition = env
        .resources
        .as_ref()
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .and_then(|arn| arn.strip_prefix("arn:"))
        .and_then(|rest| rest.split(':').next())
        .filter(|p| matches!(*p, "aws" | "aws-cn" | "aws-us-gov"))
        .unwrap_or("aws");
    Some(format!("arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"))
}

fn text(v: &Option<Value>) -> Option<&str> {
    v.as_ref().and_then(Value::as_str)
}

fn detail_str<'a>(detail: &'a Value, key: &str) -> Option<&'a str> {
    detail.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// Whether `s` looks like an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parse raw bytes into an event.
pub fn parse(bytes: &[u8]) -> Result<ControllerEvent, EventError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
    parse_value(value)
}

/// Parse a JSON value (what the Lambda runtime hands over) into an event.
pub fn parse_value(value: Value) -> Result<ControllerEvent, EventError> {
    if !value.is_object() {
        return Err(EventError::NotJson("top level is not an object".into()));
    }
    let env: Envelope = serde_json::from_value(value).map_err(|e| EventError::NotJson(e.to_string()))?;
    let source = text(&env.source).unwrap_or_default().to_string();
    let detail_type = text(&env.detail_type).unwrap_or_default().to_string();
    let time = text(&env.time).map(str::to_string);
    match (source.as_str(), detail_type.as_str()) {
        ("aws.autoscaling", DETAIL_TERMINATE) => {
            lifecycle(&env, "termination", TRANSITION_TERMINATING, time).map(ControllerEvent::Terminate)
        }
        ("aws.autoscaling", DETAIL_LAUNCH) => {
            lifecycle(&env, "launch", TRANSITION_LAUNCHING, time).map(ControllerEvent::Launch)
        }
        ("aws.ec2", DETAIL_SPOT) => {
            const KIND: &str = "spot interruption";
            let detail = env
                .detail
                .as_ref()
                .filter(|d| d.is_object())
                .ok_or(EventError::MissingField {
                    kind: KIND,
                    field: "detail",
                })?;
            let instance_id = detail_str(detail, "instance-id").ok_or(EventError::MissingField {
                kind: KIND,
                field: "detail.instance-id",
            })?;
            if !is_instance_id(instance_id) {
                return Err(EventError::Invalid {
                    kind: KIND,
                    problem: format!("`{}` is not an instance id", clip(instance_id)),
                });
            }
            let action = detail_str(detail, "instance-action").unwrap_or("terminate").to_string();
            Ok(ControllerEvent::SpotInterruption {
                instance_id: instance_id.to_string(),
                action,
            })
        }
        ("aws.events", DETAIL_SCHEDULED) => {
            let rule = env
                .resources
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok(ControllerEvent::Scheduled { rule })
        }
        _ => Err(EventError::Unsupported {
            event_source: clip(&source),
            detail_type: clip(&detail_type),
        }),
    }
}

/// At most 80 characters of untrusted text, escaped, for error messages (they reach the logs).
fn clip(s: &str) -> String {
    lifecycle_escape::clip(s, 80)
}

fn lifecycle(
    env: &Envelope,
    kind: &'static str,
    transition: &str,
    time: Option<String>,
) -> Result<LifecycleAction, EventError> {
    let detail = env
        .detail
        .as_ref()
        .filter(|d| d.is_object())
        .ok_or(EventError::MissingField { kind, field: "detail" })?;
    let field = |name: &'static str| detail_str(detail, name).ok_or(EventError::MissingField { kind, field: name });
    let group = field("AutoScalingGroupName")?;
    let hook = field("LifecycleHookName")?;
    let instance_id = field("EC2InstanceId")?;
    let got = field("LifecycleTransition")?;
    if got != transition {
        return Err(EventError::Invalid {
            kind,
            problem: format!("LifecycleTransition is `{}`, expected `{transition}`", clip(got)),
        });
    }
    if !is_instance_id(instance_id) {
        return Err(EventError::Invalid {
            kind,
            problem: format!("EC2InstanceId `{}` is not an instance id", clip(instance_id)),
        });
    }
    Ok(LifecycleAction {
        group: group.to_string(),
        hook: hook.to_string(),
        instance_id: instance_id.to_string(),
        token: detail_str(detail, "LifecycleActionToken").map(str::to_string),
        origin: detail_str(detail, "Origin").map(Place::parse),
        destination: detail_str(detail, "Destination").map(Place::parse),
        time,
        instance_arn: instance_arn(env, instance_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-12345678"));
        for bad in [
            "",
            "i-",
            "i-xyz12345",
            "0123456789abcdef0",
            "i-0123456789abcdef01",
            "i-1234567",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_instance_arn_comes_from_the_envelope() {
        let mut v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/events/launch.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let arn = |v: &Value| match parse_value(v.clone()) {
            Ok(ControllerEvent::Launch(a)) => a.instance_arn,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            arn(&v).as_deref(),
            Some("arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0")
        );
        v["resources"] = serde_json::json!(["arn:aws-cn:autoscaling:cn-north-1:123456789012:autoScalingGroup:x"]);
        v["region"] = "cn-north-1".into();
        assert_eq!(
            arn(&v).as_deref(),
            Some("arn:aws-cn:ec2:cn-north-1:123456789012:instance/i-1234567890abcdef0")
        );
        for (field, bad) in [("account", "12"), ("region", "us east"), ("account", "")] {
            let mut w = v.clone();
            w[field] = bad.into();
            assert_eq!(arn(&w), None, "{field}={bad}");
        }
    }

    #[test]
    fn rejects_without_panicking() {
        for raw in [&b""[..], b"[]", b"null", b"{}", b"\xff\xfe", b"{\"detail-type\": 5}"] {
            assert!(parse(raw).is_err());
        }
    }

    #[test]
    fn untrusted_fields_in_errors_are_escaped() {
        let raw = br#"{"source": "aws.ec2\u001b[2J", "detail-type": "x\r\nforged"}"#;
        let e = parse(raw).expect_err("unsupported").to_string();
        assert!(!e.chars().any(lifecycle_escape::is_unsafe), "{e:?}");
        assert!(e.contains("aws.ec2\\u{1b}[2J") && e.contains("x\\r\\nforged"), "{e}");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<String>().prop_map(Value::String),
                "i-[0-9a-f]{8}|i-[0-9a-f]{17}".prop_map(Value::String),
                Just(Value::String(TRANSITION_TERMINATING.into())),
                Just(Value::String(TRANSITION_LAUNCHING.into())),
                prop_oneof![Just("EC2"), Just("AutoScalingGroup"), Just("WarmPool")]
                    .prop_map(|s| Value::String(s.into())),
                any::<i64>().prop_map(Value::from),
                Just(Value::Null),
                Just(serde_json::json!({"nested": [1, 2]})),
            ]
        }

        fn event() -> impl Strategy<Value = Value> {
            let detail_keys = prop_oneof![
                Just("AutoScalingGroupName"),
                Just("LifecycleHookName"),
                Just("EC2InstanceId"),
                Just("LifecycleTransition"),
                Just("LifecycleActionToken"),
                Just("Origin"),
                Just("Destination"),
                Just("instance-id"),
                Just("instance-action"),
            ];
            let kind = prop_oneof![
                Just(("aws.autoscaling", DETAIL_TERMINATE)),
                Just(("aws.autoscaling", DETAIL_LAUNCH)),
                Just(("aws.ec2", DETAIL_SPOT)),
                Just(("aws.events", DETAIL_SCHEDULED)),
                Just(("aws.other", "Other")),
            ];
            (
                kind,
                proptest::collection::vec((detail_keys, text()), 0..10),
                proptest::option::of(text()),
                proptest::option::of(proptest::collection::vec(text(), 0..2)),
                any::<bool>(),
            )
                .prop_map(|((source, detail_type), fields, time, resources, detail_is_object)| {
                    let detail: serde_json::Map<String, Value> =
                        fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    serde_json::json!({
                        "source": source,
                        "detail-type": detail_type,
                        "time": time,
                        "resources": resources,
                        "detail": if detail_is_object { Value::Object(detail) } else { Value::from(5) },
                    })
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn any_bytes_parse_or_fail(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse(&raw);
            }

            /// Event-shaped JSON with hostile fields: a valid event or an error with no control
            /// characters in its text, never a panic.
            #[test]
            fn event_shaped_values_parse_or_fail(v in event()) {
                let bytes = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match parse(&bytes) {
                    Ok(ControllerEvent::Terminate(a) | ControllerEvent::Launch(a)) => {
                        prop_assert!(is_instance_id(&a.instance_id));
                        prop_assert!(!a.group.trim().is_empty() && !a.hook.trim().is_empty());
                    }
                    Ok(ControllerEvent::SpotInterruption { instance_id, .. }) => prop_assert!(is_instance_id(&instance_id)),
                    Ok(ControllerEvent::Scheduled { .. }) => {}
                    Err(e) => prop_assert!(!e.to_string().chars().any(lifecycle_escape::is_unsafe), "{:?}", e.to_string()),
                }
            }
        }
    }
}
