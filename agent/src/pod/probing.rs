//! The pod worker's side of probing: it tells the prober which containers run, reads their
//! probe results for the status, holds the next init step back while a sidecar's startup probe
//! has not passed, and kills the containers whose liveness or startup probe failed (the
//! kubelet's computePodActions, then killContainer with the probe's grace period).

use std::collections::HashMap;

use tracing::info;

use super::observe::Observed;
use super::plan::{
    ContainerView, RunState, container_spec, is_restartable_init, restarts_when_killed,
};
use super::runtime::PodRuntime;
use super::teardown;
use super::worker::PodWorker;
use crate::events::EventType;
use crate::prober::{PodProbes, ProbeStatus, ProbeType, RunningContainer};

impl<R: PodRuntime> PodWorker<R> {
    /// Tells the prober which containers run now (`pod_ip` their pod's IP) and returns what
    /// their probes say for the status.
    pub(super) fn probes(&self, obs: &Observed, pod_ip: &str) -> HashMap<String, ProbeStatus> {
        let sandbox = obs
            .sandbox
            .as_ref()
            .filter(|s| s.ready)
            .map(|s| s.id.as_str());
        let running: Vec<&ContainerView> = obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running && Some(c.sandbox_id.as_str()) == sandbox)
            .collect();
        let previous = self.ctx.statuses.previous(&self.pod);
        let now = crate::prober::now_ns();
        let mut statuses = HashMap::new();
        let mut targets = Vec::new();
        for c in running {
            let Some(spec) = container_spec(&self.pod, &c.name, false)
                .or_else(|| container_spec(&self.pod, &c.name, true))
            else {
                continue;
            };
            if ProbeType::ALL.iter().all(|k| k.of(spec).is_none()) {
                continue;
            }
            let st = self.ctx.prober.container_status(
                &self.pod,
                spec,
                &c.id,
                c.started_at,
                previous.as_ref(),
            );
            statuses.insert(c.name.clone(), st);
            targets.push(RunningContainer {
                name: c.name.clone(),
                id: c.id.clone(),
                running_for: std::time::Duration::from_nanos((now - c.started_at).max(0) as u64),
                started_before: crate::prober::previous_started(previous.as_ref(), &c.name, &c.id),
            });
        }
        self.ctx.prober.sync_pod(PodProbes {
            pod: self.pod.clone(),
            pod_ip: pod_ip.to_string(),
            running: targets,
            wake: self.wake.clone(),
        });
        statuses
    }

    /// Ids of running sidecars whose startup probe has not passed: they hold the next init
    /// step back (the kubelet's computeInitContainerActions).
    pub(super) fn unstarted_sidecars(&self, obs: &Observed) -> Vec<String> {
        let previous = self.ctx.statuses.previous(&self.pod);
        obs.containers
            .iter()
            .filter(|c| c.state == RunState::Running)
            .filter_map(|c| {
                let spec = container_spec(&self.pod, &c.name, true)
                    .filter(|s| is_restartable_init(s) && s.startup_probe.is_some())?;
                let st = self.ctx.prober.container_status(
                    &self.pod,
                    spec,
                    &c.id,
                    c.started_at,
                    previous.as_ref(),
                );
                (!st.started).then(|| c.id.clone())
            })
            .collect()
    }

    /// Kills the running containers whose liveness or startup probe failed (the kubelet's
    /// computePodActions, then killContainer with the probe's grace period); true when any.
    pub(super) async fn kill_unhealthy(&mut self, obs: &Observed) -> bool {
        let sandbox = obs
            .sandbox
            .as_ref()
            .filter(|s| s.ready)
            .map(|s| s.id.clone());
        let mut killed = false;
        for c in obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running && Some(&c.sandbox_id) == sandbox.as_ref())
        {
            let Some(kind) = self.ctx.prober.kill_reason(&c.id) else {
                continue;
            };
            let pod = self.pod.clone();
            let (spec, init) = match container_spec(&pod, &c.name, false) {
                Some(s) => (s, false),
                None => match container_spec(&pod, &c.name, true) {
                    Some(s) => (s, true),
                    None => continue,
                },
            };
            let what = kind.as_str().to_ascii_lowercase();
            let mut message = if init {
                format!("Init container {} failed {what} probe", c.name)
            } else {
                format!("Container {} failed {what} probe", c.name)
            };
            if !init && restarts_when_killed(&pod, spec) {
                message.push_str(", will be restarted");
            }
            info!(container.name = %c.name, "Killing: {message}");
            self.event(Some(&c.name), EventType::Normal, "Killing", message);
            // The kubelet's setTerminationGracePeriod: a deletion's grace, else the probe's.
            let grace = pod.metadata.deletion_grace_period_seconds.or_else(|| {
                kind.of(spec)
                    .and_then(|p| p.termination_grace_period_seconds)
            });
            let ip = self.hook_ip(&c.sandbox_id).to_string();
            teardown::stop_container(&self.ctx, &pod, c, &ip, grace).await;
            killed = true;
        }
        killed
    }
}
