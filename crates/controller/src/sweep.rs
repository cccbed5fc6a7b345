//! The scheduled sweep of one group: orphaned GitHub registrations, leftover token secrets, and
//! instances waiting in `Terminating:Wait`.
//!
//! ## How the controller knows whether a host agent has taken over (docs/controller.md)
//!
//! The controller never asks the agent. What it must never do is complete the hook of an instance
//! on which a job may still run; completing an instance whose runner is gone is exactly what a
//! live agent would do itself (and the agent treats "No active Lifecycle Action" as done). So the
//! evidence is about the *runner*, taken from calls the sweep makes anyway:
//!
//! 1. GitHub's view of the instance's runner (the sweep lists the runners for orphan cleanup):
//!    `online` or `busy` means a listener holds a session, and only a live listener can run a job
//!    (its worker dies with it). Then the controller leaves the instance alone: the agent drains
//!    it, or, if the agent is gone, the hook's own HeartbeatTimeout ends it with its DefaultResult.
//! 2. The lifecycle action's age, from DescribeScalingActivities: an instance still waiting longer
//!    than its hook's HeartbeatTimeout has been heartbeated, and the agent heartbeats only while a
//!    job runs (README, rule 4): a live agent with a job, whatever GitHub says.
//!
//! An instance is completed as "agent gone" only when its runner is offline or unregistered, its
//! wait is older than the grace period and younger than the HeartbeatTimeout, and GitHub answered.
//! When GitHub cannot be asked, or the age is unknown, nothing is completed: the hook's timeout is
//! the safe fallback.

use crate::error::HandlerError;
use crate::ports::{Aws, Completion, GitHub, LifecycleResult, Member};
use crate::settings::Settings;
use lifecycle_core::ApiErrorKind;
use lifecycle_github::{labels, Deleted, Runner};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{error, info, warn};

/// What the sweep of one group found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// The group.
    pub group: String,
    /// Members of the group when the sweep ran.
    pub members: usize,
    /// Runner registrations deleted because their instance is gone.
    pub runners_deleted: Vec<String>,
    /// Registrations of gone instances kept because GitHub says they are online or busy.
    pub runners_kept_online: Vec<String>,
    /// Leftover token secrets deleted.
    pub secrets_deleted: Vec<String>,
    /// Instances in `Terminating:Wait` completed because no runner was alive after the grace.
    pub completed_agent_gone: Vec<String>,
    /// Instances in `Terminating:Wait` longer than `stuck_after` (reported; completed only with
    /// the opt-in).
    pub stuck: Vec<String>,
    /// Stuck instances completed through the opt-in.
    pub completed_stuck: Vec<String>,
    /// Instances in `Terminating:Wait` left to their agent.
    pub left_to_agent: Vec<String>,
    /// Whether GitHub could be asked (no: no runner was deleted and no instance completed as
    /// agent-gone).
    pub github_available: bool,
    /// Problems met on the way that did not stop the sweep.
    pub warnings: Vec<String>,
}

fn instance_of(runner: &Runner) -> Option<String> {
    runner
        .labels
        .iter()
        .find_map(|l| labels::as_instance_id(&l.name).map(str::to_string))
}

/// Sweep `group` at `now` (epoch seconds).
pub async fn sweep<A: Aws, G: GitHub>(
    settings: &Settings,
    aws: &A,
    github: &G,
    group: &str,
    now: i64,
) -> Result<SweepReport, HandlerError> {
    let aws_err = |call: &'static str| move |error| HandlerError::Aws { call, error };
    let members: Vec<Member> = aws.members(group).await.map_err(aws_err("DescribeAutoScalingGroups"))?;
    let member_ids: BTreeSet<String> = members.iter().map(|m| m.instance_id.clone()).collect();
    let mut report = SweepReport {
        group: group.to_string(),
        members: members.len(),
        ..SweepReport::default()
    };

    // GitHub's runners of this group, by instance.
    let group_label = labels::group_label(group);
    let runners: Option<Vec<Runner>> = match github.runners().await {
        Ok(all) => Some(all.into_iter().filter(|r| r.has_label(&group_label)).collect()),
        Err(e) => {
            let note = format!("GitHub runners not listed: {e}");
            warn!(group, "{note}");
            report.warnings.push(note);
            None
        }
    };
    report.github_available = runners.is_some();

    // Candidates for "gone": ids named by runners or secrets that are not members now.
    let secret_prefix = settings.secret_template.prefix(group);
    let secrets = aws.list_secrets(&secret_prefix).await.map_err(aws_err("ListSecrets"))?;
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for r in runners.iter().flatten() {
        if let Some(id) = instance_of(r) {
            if !member_ids.contains(&id) {
                candidates.insert(id);
            }
        }
    }
    for name in &secrets {
        if let Some(id) = settings.secret_template.instance_of(group, name) {
            if !member_ids.contains(&id) {
                candidates.insert(id);
            }
        }
    }
    // DescribeAutoScalingInstances also knows warm-pool instances, which the group listing omits:
    // a warmed host keeps its registration and its token.
    let known = if candidates.is_empty() {
        BTreeSet::new()
    } else {
        aws.known(&candidates)
            .await
            .map_err(aws_err("DescribeAutoScalingInstances"))?
    };
    let gone: BTreeSet<&String> = candidates.iter().filter(|id| !known.contains(*id)).collect();

    if let Some(runners) = &runners {
        for r in runners {
            let Some(id) = instance_of(r) else { continue };
            if !gone.contains(&id) {
                continue;
            }
            if r.is_online() || r.busy {
                // A listener still holds a session (a detached host?): deleting the registration
                // would cancel its job (domain brief section 3). Leave it, say so.
                warn!(group, runner = %lifecycle_escape::escape(&r.name), instance_id = %id, "instance gone from the group but its runner is online; kept");
                report.runners_kept_online.push(r.name.clone());
                continue;
            }
            if !settings.delete_orphan_runners {
                continue;
            }
            match github.delete_runner(r.id).await {
                Ok(Deleted::Deleted | Deleted::AlreadyGone) => {
                    info!(group, runner = %lifecycle_escape::escape(&r.name), instance_id = %id, "orphaned runner registration deleted");
                    report.runners_deleted.push(r.name.clone());
                }
                Err(e) => {
                    let note = format!("runner {} not deleted: {e}", r.name);
                    warn!(group, "{note}");
                    report.warnings.push(note);
                }
            }
        }
    }
    for name in &secrets {
        let Some(id) = settings.secret_template.instance_of(group, name) else {
            continue;
        };
        if !gone.contains(&id) {
            continue;
        }
        match aws.delete_secret(name).await {
            Ok(()) => {
                info!(group, secret = %name, instance_id = %id, "leftover token secret deleted");
                report.secrets_deleted.push(name.clone());
            }
            Err(e) => {
                let note = format!("secret {name} not deleted: {e}");
                warn!(group, "{note}");
                report.warnings.push(note);
            }
        }
    }

    // Instances waiting in Terminating:Wait.
    let waiting: BTreeSet<String> = members
        .iter()
        .filter(|m| m.state == "Terminating:Wait")
        .map(|m| m.instance_id.clone())
        .collect();
    if !waiting.is_empty() {
        terminating(settings, aws, runners.as_deref(), group, &waiting, now, &mut report).await?;
    }
    Ok(report)
}

async fn terminating<A: Aws>(
    settings: &Settings,
    aws: &A,
    runners: Option<&[Runner]>,
    group: &str,
    waiting: &BTreeSet<String>,
    now: i64,
    report: &mut SweepReport,
) -> Result<(), HandlerError> {
    let hooks = aws.termination_hooks(group).await.map_err(|error| HandlerError::Aws {
        call: "DescribeLifecycleHooks",
        error,
    })?;
    let since: BTreeMap<String, i64> =
        aws.terminating_since(group, waiting)
            .await
            .map_err(|error| HandlerError::Aws {
                call: "DescribeScalingActivities",
                error,
            })?;
    // The shortest HeartbeatTimeout: past it, some hook of the instance has been heartbeated.
    let heartbeat_timeout = hooks
        .iter()
        .map(|h| h.heartbeat_timeout_s)
        .min()
        .unwrap_or(lifecycle_core::aws::DEFAULT_HEARTBEAT_TIMEOUT_S);
    for id in waiting {
        let age = since.get(id).map(|t| now - t);
        let runner_alive = runners.map(|rs| {
            rs.iter()
                .any(|r| instance_of(r).as_deref() == Some(id.as_str()) && (r.is_online() || r.busy))
        });
        let heartbeated = age.is_some_and(|a| a > i64::try_from(heartbeat_timeout).unwrap_or(i64::MAX));
        let stuck = age.is_some_and(|a| a >= i64::try_from(settings.stuck_after.as_secs()).unwrap_or(i64::MAX));
        let past_grace = age.is_some_and(|a| a >= i64::try_from(settings.grace.as_secs()).unwrap_or(i64::MAX));
        if stuck {
            error!(group, instance_id = %id, age_s = age.unwrap_or_default(), "instance stuck in Terminating:Wait");
            report.stuck.push(id.clone());
            if settings.complete_stuck {
                complete_all(aws, &hooks, group, id, report).await?;
                report.completed_stuck.push(id.clone());
            }
            continue;
        }
        match (runner_alive, age) {
            (Some(false), Some(_)) if past_grace && !heartbeated => {
                info!(group, instance_id = %id, age_s = age.unwrap_or_default(), "no live runner after the grace period; completing with CONTINUE");
                complete_all(aws, &hooks, group, id, report).await?;
                report.completed_agent_gone.push(id.clone());
            }
            _ => {
                info!(group, instance_id = %id, age_s = ?age, runner_alive = ?runner_alive, heartbeated, "left to the host agent");
                report.left_to_agent.push(id.clone());
            }
        }
    }
    Ok(())
}

async fn complete_all<A: Aws>(
    aws: &A,
    hooks: &[crate::ports::TerminationHook],
    group: &str,
    id: &str,
    report: &mut SweepReport,
) -> Result<(), HandlerError> {
    for hook in hooks {
        let c = Completion {
            group: group.to_string(),
            hook: hook.name.clone(),
            instance_id: id.to_string(),
            token: None,
            result: LifecycleResult::Continue,
        };
        match aws.complete(&c).await {
            Ok(()) => {}
            Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => {}
            Err(e) if e.kind.is_retryable_soon() => {
                return Err(HandlerError::Aws {
                    call: "CompleteLifecycleAction",
                    error: e,
                })
            }
            Err(e) => report
                .warnings
                .push(format!("{id}: CompleteLifecycleAction on {}: {e}", hook.name)),
        }
    }
    Ok(())
}

/// The report as one CloudWatch Embedded Metric Format line: printed on stdout by the Lambda,
/// CloudWatch turns it into metrics with no API call and no extra permission (CloudWatch User
/// Guide, "Embedded metric format specification").
pub fn metrics_line(report: &SweepReport, timestamp_ms: i64) -> String {
    use crate::emf::{Line, Metric};
    let count = |v: &Vec<String>| v.len() as u64;
    let mut line = Line::for_group(&report.group, timestamp_ms);
    line.put(Metric::count("StuckTerminatingInstances"), count(&report.stuck))
        .put(
            Metric::count("AgentGoneCompletions"),
            count(&report.completed_agent_gone),
        )
        .put(Metric::count("OrphanRunnersDeleted"), count(&report.runners_deleted))
        .put(Metric::count("OrphanSecretsDeleted"), count(&report.secrets_deleted));
    line.render()
}
