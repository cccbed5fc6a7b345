//! Controller benchmark: a burst of 1,000 termination lifecycle events through the handler core
//! (`cargo bench -p lifecycle-controller`). Prints events per second of the core and the AWS and
//! GitHub calls per event, and fails if the call budget is broken: at most one Auto Scaling call
//! per event and no GitHub call on the termination path (issue "Performance").
//!
//! The ports are in-memory counting fakes, so the figure is the handler's own cost (parsing the
//! EventBridge JSON, deciding, building the call); network time is AWS's, and bounded by the
//! call count printed here.

use lifecycle_controller::fakes::{FakeAws, FakeGitHub};
use lifecycle_controller::{Controller, Outcome, Settings};
use std::hint::black_box;
use std::time::Instant;

const EVENTS: usize = 1_000;
const ROUNDS: usize = 20;

fn event(i: usize, warm_pool: bool) -> Vec<u8> {
    let (origin, destination) = if warm_pool {
        ("WarmPool", "EC2")
    } else {
        ("AutoScalingGroup", "EC2")
    };
    format!(
        r#"{{"version":"0","id":"{i:08x}-0000-4000-8000-000000000000","detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling","account":"123456789012","time":"2026-11-28T10:31:04Z","region":"us-east-1","resources":["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:d4738357-2d40-4038-ae7e-b00ae0227003:autoScalingGroupName/runners"],"detail":{{"LifecycleActionToken":"87654321-4321-4321-4321-{i:012}","AutoScalingGroupName":"runners","LifecycleHookName":"drain","EC2InstanceId":"i-{i:017x}","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING","NotificationMetadata":"","Origin":"{origin}","Destination":"{destination}"}}}}"#
    )
    .into_bytes()
}

#[allow(clippy::disallowed_methods)] // a benchmark reads the clock
fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("controller_bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    // Half the burst are warm-pool trims (one CompleteLifecycleAction each), half regular
    // terminations left to their agents (no call at all).
    let events: Vec<Vec<u8>> = (0..EVENTS).map(|i| event(i, i % 2 == 0)).collect();
    let mut best = f64::MAX;
    let mut asg_per_event = 0.0;
    let mut gh_per_event = 0.0;
    let mut max_asg_for_one = 0;
    for _ in 0..ROUNDS {
        let aws = FakeAws::default();
        for i in 0..EVENTS {
            aws.pending.lock().map(|mut p| p.insert(format!("i-{i:017x}"))).ok();
        }
        let controller = Controller::new(Settings::new(["runners".to_string()]), aws, FakeGitHub::default());
        let start = Instant::now();
        rt.block_on(async {
            for bytes in &events {
                let before = controller.aws().asg_calls();
                let outcome = controller.handle_bytes(black_box(bytes), 1_795_862_000).await;
                match outcome {
                    Ok(Outcome::WarmPoolTrimCompleted { .. } | Outcome::LeftToAgent { .. }) => {}
                    other => {
                        eprintln!("controller_bench: unexpected outcome {other:?}");
                        std::process::exit(1);
                    }
                }
                max_asg_for_one = max_asg_for_one.max(controller.aws().asg_calls() - before);
            }
        });
        let secs = start.elapsed().as_secs_f64();
        best = best.min(secs);
        asg_per_event = controller.aws().asg_calls() as f64 / EVENTS as f64;
        gh_per_event = controller.github().calls() as f64 / EVENTS as f64;
    }
    println!("controller_bench: burst of {EVENTS} termination events (half warm-pool trims), best of {ROUNDS} rounds");
    println!(
        "  handler core: {:.0} events/s ({:.2} us/event)",
        EVENTS as f64 / best,
        best * 1e6 / EVENTS as f64
    );
    println!("  Auto Scaling calls per event: {asg_per_event:.3} (max for one event: {max_asg_for_one})");
    println!("  GitHub calls per event: {gh_per_event:.3}");
    if max_asg_for_one > 1 || gh_per_event > 0.0 {
        eprintln!("controller_bench: call budget broken (at most 1 Auto Scaling call per event, no GitHub call)");
        std::process::exit(1);
    }
}
