//! The naive design: a termination hook and a stop on the termination event, no protection.

use super::{relaunch_like_runner_service, Controller};
use crate::world::{ApiCall, HookKind, HookRun, HostEvent, InstId, JobId, World};
use lifecycle_core::Time;
use std::time::Duration;

/// One host under the naive design.
#[derive(Debug)]
pub struct Naive {
    stopping: bool,
}

impl Controller for Naive {
    const NAME: &'static str = "naive";
    const CENTRAL_COMPLETES_TRIMS: bool = false;

    fn start(w: &mut World, inst: InstId, _restart: bool) -> Self {
        w.start_listener(inst);
        Naive { stopping: false }
    }

    fn on_event(&mut self, w: &mut World, inst: InstId, ev: HostEvent) {
        match ev {
            HostEvent::TerminationEvent => {
                self.stopping = true;
                w.signal_listener(inst);
            }
            HostEvent::ListenerExited(_) if self.stopping => {
                // One completion through an SDK in standard retry mode (3 attempts), nothing more.
                let _ = w.call_retrying(inst, ApiCall::Complete, 3);
            }
            HostEvent::ListenerExited(code) => relaunch_like_runner_service(w, inst, code),
            _ => {}
        }
    }

    fn job_hook(
        _host: Option<&mut Self>,
        _w: &mut World,
        _inst: InstId,
        _job: JobId,
        _kind: HookKind,
    ) -> Option<HookRun> {
        Some(HookRun {
            took: Duration::ZERO,
            fails_job: false,
        })
    }

    fn next_wake(&self) -> Option<Time> {
        None
    }

    fn on_wake(&mut self, _w: &mut World, _inst: InstId) {}
}
