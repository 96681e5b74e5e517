//! In-place pod resize on the node (the kubelet's computePodResizeAction and doPodResizeAction):
//! the running containers whose allocated cpu or memory differ from what they run with are
//! restarted when their resizePolicy says RestartContainer, else updated through CRI
//! UpdateContainerResources, memory before cpu, decreases before increases, with the pod cgroup
//! grown before its containers and shrunk after them; then PodResizeInProgress is cleared with
//! the ResizeCompleted event, or set with reason Error and a ResizeError event.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use tracing::{info, warn};

use super::allocation::{resize_message, same_resources, value, with_resources};
use super::plan::{ContainerView, RunState, container_spec};
use super::runtime::PodRuntime;
use super::teardown;
use super::worker::PodWorker;
use crate::cgroup::ResourceConfig;
use crate::events::EventType;

/// One running container to update in place for one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeStep {
    /// CRI id of the running instance.
    pub id: String,
    /// Spec name.
    pub name: String,
    /// What it runs with.
    pub current: ResourceRequirements,
    /// What it is allocated.
    pub desired: ResourceRequirements,
}

/// What a resize asks of the running containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResizePlan {
    /// Containers whose resizePolicy restarts them: (CRI id, name).
    pub restart: Vec<(String, String)>,
    /// Memory updates, decreases first.
    pub memory: Vec<ResizeStep>,
    /// CPU updates, decreases first.
    pub cpu: Vec<ResizeStep>,
}

impl ResizePlan {
    /// True when nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.restart.is_empty() && self.memory.is_empty() && self.cpu.is_empty()
    }
}

/// The container's resizePolicy for `resource`: true when a change restarts it (the implicit
/// default is NotRequired).
fn restarts_for(c: &Container, resource: &str) -> bool {
    c.resize_policy
        .iter()
        .flatten()
        .find(|p| p.resource_name == resource)
        .is_some_and(|p| p.restart_policy == "RestartContainer")
}

/// `current` with `resource`'s request and limit taken from `desired`.
pub fn mix(
    current: &ResourceRequirements,
    desired: &ResourceRequirements,
    resource: &str,
) -> ResourceRequirements {
    let mut out = current.clone();
    for limit in [false, true] {
        let (src, dst) = if limit {
            (&desired.limits, &mut out.limits)
        } else {
            (&desired.requests, &mut out.requests)
        };
        match src.as_ref().and_then(|m| m.get(resource)) {
            Some(q) => {
                dst.get_or_insert_with(Default::default)
                    .insert(resource.to_string(), q.clone());
            }
            None => {
                if let Some(m) = dst.as_mut() {
                    m.remove(resource);
                }
            }
        }
    }
    out
}

/// Decides the resize of the pod's running resizable containers, each given with what it runs
/// with (the kubelet's computePodResizeAction over each running container).
pub fn plan_resize(pod: &Pod, running: &[(&ContainerView, ResourceRequirements)]) -> ResizePlan {
    let mut plan = ResizePlan::default();
    for (c, current) in running {
        let Some(spec) =
            container_spec(pod, &c.name, false).or_else(|| container_spec(pod, &c.name, true))
        else {
            continue;
        };
        let desired = spec.resources.clone().unwrap_or_default();
        if same_resources(&desired, current) {
            continue;
        }
        let changed = |limit: bool, r: &str| value(&desired, limit, r) != value(current, limit, r);
        let restart = ["cpu", "memory"]
            .iter()
            .any(|r| (changed(false, r) || changed(true, r)) && restarts_for(spec, r));
        if restart {
            plan.restart.push((c.id.clone(), c.name.clone()));
            continue;
        }
        for (resource, list) in [("memory", &mut plan.memory), ("cpu", &mut plan.cpu)] {
            // The limit's direction orders the update when the limit changes, else the request's.
            let limit = changed(true, resource);
            if !limit && !changed(false, resource) {
                continue;
            }
            let unset = |v: Option<i128>| v.unwrap_or(if limit { i128::MAX } else { 0 });
            let grows =
                unset(value(&desired, limit, resource)) > unset(value(current, limit, resource));
            let step = ResizeStep {
                id: c.id.clone(),
                name: c.name.clone(),
                current: current.clone(),
                desired: desired.clone(),
            };
            if grows {
                list.push(step);
            } else {
                list.insert(0, step);
            }
        }
    }
    plan
}

/// A pod cgroup value for comparing sizes: unset or unlimited is the largest.
fn size(v: Option<i64>) -> i64 {
    match v {
        Some(v) if v > 0 => v,
        _ => i64::MAX,
    }
}

impl<R: PodRuntime> PodWorker<R> {
    /// Carries out the allocated resize on the running containers of the ready sandbox; true
    /// when containers were stopped to be restarted (the sync then plans their start).
    pub(super) async fn resize(&mut self, obs: &super::observe::Observed) -> bool {
        let Some(sandbox) = obs.sandbox.as_ref().filter(|s| s.ready) else {
            return false;
        };
        let uid = self.key().uid;
        let pod = self.pod.clone();
        let allocations = self.ctx.allocations.clone();
        let mut running = Vec::new();
        for c in obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running && c.sandbox_id == sandbox.id)
        {
            let Some(spec) = resizable_spec(&pod, &c.name) else {
                continue;
            };
            match allocations.actuated(&uid, &c.name, &c.id) {
                Some(current) => running.push((c, current)),
                // Made before Bosun kept records (or by the kubelet): it runs as allocated.
                None => allocations.set_actuated(
                    &uid,
                    &c.name,
                    &c.id,
                    spec.resources.clone().unwrap_or_default(),
                ),
            }
        }
        let plan = plan_resize(&pod, &running);
        if plan.is_empty() {
            return false;
        }
        if !plan.restart.is_empty() {
            for (id, name) in &plan.restart {
                let Some(c) = obs.containers.iter().find(|c| &c.id == id) else {
                    continue;
                };
                let message = format!("Container {name} resize requires restart");
                info!(container.name = %name, "Killing: {message}");
                self.event(Some(name), EventType::Normal, "Killing", message);
                let ip = self.hook_ip(&c.sandbox_id).to_string();
                teardown::stop_container(&self.ctx, &pod, c, &ip, None).await;
            }
            return true;
        }
        if let Err(message) = self.apply_resize(&plan).await {
            warn!("pod resize failed: {message}");
            let (generation, changed) =
                allocations.set_in_progress(&uid, "Error", &message, pod.metadata.generation);
            if changed {
                let msg = resize_message("Pod resize error", &pod, generation, &message);
                self.event(None, EventType::Warning, "ResizeError", msg);
            }
        }
        false
    }

    /// Applies the in-place updates in the kubelet's order: memory then cpu; for each, the pod
    /// cgroup grown first, the containers (decreases first), the pod cgroup shrunk last.
    async fn apply_resize(&self, plan: &ResizePlan) -> Result<(), String> {
        let pod = &*self.pod;
        let uid = self.key().uid;
        // The pod as it runs now: each container to update at what it runs with.
        let now = with_resources(pod, |name| {
            let step = plan.memory.iter().chain(&plan.cpu).find(|s| s.name == name);
            step.map(|s| s.current.clone())
        });
        let pids = None;
        let old = crate::cgroup::resources::pod_resource_config(&now, true, pids);
        let new = crate::cgroup::resources::pod_resource_config(pod, true, pids);
        let cgroups = &self.ctx.cgroups;
        let set = |res: ResourceConfig| async move {
            cgroups
                .resize_pod(pod, &res)
                .await
                .map_err(|e| format!("failed to set the pod cgroup: {e}"))
        };
        // Memory (requests are not written to cgroups).
        if !plan.memory.is_empty() {
            let grows = size(new.memory) > size(old.memory);
            let memory = ResourceConfig {
                memory: new.memory.map(|m| if m <= 0 { -1 } else { m }),
                ..Default::default()
            };
            if grows {
                set(memory.clone()).await?;
            }
            self.update_containers(&uid, &plan.memory, "memory").await?;
            if !grows && size(new.memory) != size(old.memory) {
                set(memory).await?;
            }
        }
        if !plan.cpu.is_empty() {
            let quota = ResourceConfig {
                cpu_quota: new.cpu_quota,
                cpu_period: new.cpu_period,
                ..Default::default()
            };
            let shares = ResourceConfig {
                cpu_shares: new.cpu_shares,
                ..Default::default()
            };
            let quota_grows = size(new.cpu_quota) > size(old.cpu_quota);
            let shares_grow = new.cpu_shares > old.cpu_shares;
            if quota_grows {
                set(quota.clone()).await?;
            }
            if shares_grow {
                set(shares.clone()).await?;
            }
            self.update_containers(&uid, &plan.cpu, "cpu").await?;
            if new.cpu_shares < old.cpu_shares {
                set(shares).await?;
            }
            if !quota_grows && size(new.cpu_quota) != size(old.cpu_quota) {
                set(quota).await?;
            }
        }
        Ok(())
    }

    /// UpdateContainerResources for each step's `resource`, recording what each then runs with.
    async fn update_containers(
        &self,
        uid: &str,
        steps: &[ResizeStep],
        resource: &str,
    ) -> Result<(), String> {
        let allocations = &self.ctx.allocations;
        for step in steps {
            let current = allocations
                .actuated(uid, &step.name, &step.id)
                .unwrap_or_else(|| step.current.clone());
            let next = mix(&current, &step.desired, resource);
            let Some(spec) = resizable_spec(&self.pod, &step.name) else {
                continue;
            };
            let mut container = spec.clone();
            container.resources = Some(next.clone());
            let linux = crate::runtime::container::linux_resources(
                &self.pod,
                &container,
                self.ctx.memory_capacity,
            );
            self.ctx
                .cri
                .update_container_resources(&step.id, linux)
                .await
                .map_err(|e| {
                    format!(
                        "failed to update {resource} of container {}: {e}",
                        step.name
                    )
                })?;
            info!(container.name = %step.name, resource, "container resized");
            allocations.set_actuated(uid, &step.name, &step.id, next);
        }
        Ok(())
    }

    /// Sets or clears PodResizeInProgress from the running containers (the kubelet's
    /// IsPodResizeInProgress at each sync): cleared with ResizeCompleted once every running
    /// resizable container runs as allocated.
    pub(super) fn resize_progress(&self, obs: &super::observe::Observed) {
        let uid = self.key().uid;
        let allocations = &self.ctx.allocations;
        let sandbox = obs.sandbox.as_ref().filter(|s| s.ready).map(|s| &s.id);
        let in_progress = obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running && Some(&c.sandbox_id) == sandbox)
            .any(|c| {
                let Some(spec) = resizable_spec(&self.pod, &c.name) else {
                    return false;
                };
                allocations.actuated(&uid, &c.name, &c.id).is_some_and(|a| {
                    !same_resources(&a, &spec.resources.clone().unwrap_or_default())
                })
            });
        if in_progress {
            allocations.set_in_progress(&uid, "", "", self.pod.metadata.generation);
        } else if let Some(generation) = allocations.clear_in_progress(&uid) {
            let msg = resize_message("Pod resize completed", &self.pod, generation, "");
            info!("ResizeCompleted: {msg}");
            self.event(None, EventType::Normal, "ResizeCompleted", msg);
        }
    }
}

/// The spec of container `name`: every regular and init container is resizable
/// (InPlacePodVerticalScalingInitContainers is GA in v1.37).
fn resizable_spec<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    container_spec(pod, name, false).or_else(|| container_spec(pod, name, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "u"},
            "spec": {"containers": [
                {"name": "a", "resizePolicy": policy,
                 "resources": {"requests": {"cpu": "200m", "memory": "64Mi"},
                               "limits": {"cpu": "200m", "memory": "64Mi"}}},
                {"name": "b",
                 "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                               "limits": {"cpu": "50m", "memory": "32Mi"}}}
            ]}
        }))
        .unwrap()
    }

    fn running(name: &str) -> ContainerView {
        ContainerView {
            id: format!("id-{name}"),
            name: name.into(),
            sandbox_id: "sb".into(),
            state: RunState::Running,
            restart_count: 0,
            exit_code: 0,
            started_at: 1,
            finished_at: 0,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            image: String::new(),
            created_at: 1,
            spec_hash: None,
        }
    }

    fn res(cpu: &str, mem: &str) -> ResourceRequirements {
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}
        }))
        .unwrap()
    }

    #[test]
    fn updates_in_place_decreases_first() {
        let p = pod(serde_json::json!([]));
        let (a, b) = (running("a"), running("b"));
        // a grows cpu and shrinks memory; b grows memory and shrinks cpu.
        let plan = plan_resize(&p, &[(&a, res("100m", "128Mi")), (&b, res("100m", "16Mi"))]);
        assert!(plan.restart.is_empty());
        let names = |s: &[ResizeStep]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&plan.memory), ["a", "b"]);
        assert_eq!(names(&plan.cpu), ["b", "a"]);
        // What runs as allocated is left alone.
        let plan = plan_resize(&p, &[(&a, res("0.2", "64Mi"))]);
        assert!(plan.is_empty());
    }

    #[test]
    fn a_restart_policy_restarts_only_for_its_resource() {
        let p = pod(serde_json::json!([
            {"resourceName": "memory", "restartPolicy": "RestartContainer"},
            {"resourceName": "cpu", "restartPolicy": "NotRequired"}
        ]));
        let a = running("a");
        let plan = plan_resize(&p, &[(&a, res("100m", "64Mi"))]);
        assert!(plan.restart.is_empty());
        assert_eq!(plan.cpu.len(), 1);
        let plan = plan_resize(&p, &[(&a, res("200m", "32Mi"))]);
        assert_eq!(plan.restart, [("id-a".to_string(), "a".to_string())]);
        assert!(plan.memory.is_empty() && plan.cpu.is_empty());
    }

    #[test]
    fn mix_takes_one_resource() {
        let m = mix(&res("100m", "32Mi"), &res("200m", "64Mi"), "memory");
        assert_eq!(
            value(&m, true, "memory"),
            value(&res("1", "64Mi"), true, "memory")
        );
        assert_eq!(value(&m, true, "cpu"), Some(100));
    }
}
