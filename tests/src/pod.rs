//! Test pods: one builder for the busybox pods the e2e tests and the benchmark write (API pods
//! and static manifests alike), the status fields they read, and waits on the API server.
//!
//! ```no_run
//! # use bosun_tests::pod::{PodBuilder, Container};
//! let p = PodBuilder::new("web")
//!     .node("n1")
//!     .restart_policy("Never")
//!     .container(Container::sh("main", "exit 0").limits("100m", "32Mi"))
//!     .build();
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::{Env, wait_until_async};

/// One container of a [`PodBuilder`]: the test busybox image unless [`Container::image`] says
/// otherwise.
#[derive(Clone, Debug)]
pub struct Container(Value);

impl Container {
    /// `name` running `sh -c script` in busybox.
    pub fn sh(name: &str, script: &str) -> Container {
        Container::exec(name, &["sh", "-c", script])
    }

    /// `name` running `argv` as is in busybox.
    pub fn exec(name: &str, argv: &[&str]) -> Container {
        Container::exec_in(Env::runtime().busybox_image(), name, argv)
    }

    /// `name` running `argv` as is in `image`, without the host's test environment (the VM node
    /// names its own busybox).
    pub fn exec_in(image: &str, name: &str, argv: &[&str]) -> Container {
        Container(json!({"name": name, "image": image, "command": argv}))
    }

    /// `name` running its image's own entrypoint.
    pub fn image_only(name: &str, image: &str) -> Container {
        Container(json!({"name": name, "image": image}))
    }

    /// Another image.
    pub fn image(self, image: &str) -> Container {
        self.with("image", json!(image))
    }

    /// `resources.requests` cpu and memory.
    pub fn requests(self, cpu: &str, memory: &str) -> Container {
        self.resource("requests", cpu, memory)
    }

    /// `resources.limits` cpu and memory.
    pub fn limits(self, cpu: &str, memory: &str) -> Container {
        self.resource("limits", cpu, memory)
    }

    /// Only a memory limit.
    pub fn memory_limit(mut self, memory: &str) -> Container {
        self.0["resources"]["limits"]["memory"] = json!(memory);
        self
    }

    fn resource(mut self, kind: &str, cpu: &str, memory: &str) -> Container {
        self.0["resources"][kind] = json!({"cpu": cpu, "memory": memory});
        self
    }

    /// Mounts volume `volume` at `path`.
    pub fn mount(mut self, volume: &str, path: &str) -> Container {
        push(
            &mut self.0,
            "volumeMounts",
            json!({"name": volume, "mountPath": path}),
        );
        self
    }

    /// An environment variable (`{"value": ..}` or `{"valueFrom": ..}` as `source`).
    pub fn env(mut self, name: &str, source: Value) -> Container {
        let mut var = json!({"name": name});
        if let (Some(v), Some(s)) = (var.as_object_mut(), source.as_object()) {
            v.extend(s.clone());
        }
        push(&mut self.0, "env", var);
        self
    }

    /// A restartable init container (a sidecar): `restartPolicy: Always`.
    pub fn sidecar(self) -> Container {
        self.with("restartPolicy", json!("Always"))
    }

    /// Any other field of the container (`lifecycle`, `ports`, `imagePullPolicy`, ...).
    pub fn with(mut self, key: &str, value: Value) -> Container {
        self.0[key] = value;
        self
    }
}

fn push(obj: &mut Value, key: &str, item: Value) {
    match obj[key].as_array_mut() {
        Some(list) => list.push(item),
        None => obj[key] = json!([item]),
    }
}

/// A pod: namespace `default`, no service account token, a 1 s grace period, the API's other
/// defaults; [`PodBuilder::build`] for the API, [`PodBuilder::manifest`] for a static pod file.
#[derive(Clone, Debug)]
pub struct PodBuilder(Value);

impl PodBuilder {
    /// A pod named `name`.
    pub fn new(name: &str) -> PodBuilder {
        PodBuilder(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "containers": [],
            }
        }))
    }

    /// Bound to node `node` (`spec.nodeName`).
    pub fn node(self, node: &str) -> PodBuilder {
        self.spec("nodeName", json!(node))
    }

    /// `spec.restartPolicy`.
    pub fn restart_policy(self, policy: &str) -> PodBuilder {
        self.spec("restartPolicy", json!(policy))
    }

    /// `spec.terminationGracePeriodSeconds`.
    pub fn grace(self, secs: i64) -> PodBuilder {
        self.spec("terminationGracePeriodSeconds", json!(secs))
    }

    /// The default service account token mounted, as a user's pod has it.
    pub fn service_account_token(mut self) -> PodBuilder {
        if let Some(spec) = self.0["spec"].as_object_mut() {
            spec.remove("automountServiceAccountToken");
        }
        self
    }

    /// No namespace: the one of the `Api` it is created through.
    pub fn without_namespace(mut self) -> PodBuilder {
        if let Some(meta) = self.0["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> PodBuilder {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Appends an app container.
    pub fn container(mut self, c: Container) -> PodBuilder {
        push(&mut self.0["spec"], "containers", c.0);
        self
    }

    /// Appends an init container.
    pub fn init_container(mut self, c: Container) -> PodBuilder {
        push(&mut self.0["spec"], "initContainers", c.0);
        self
    }

    /// Appends volume `spec` (`{"name": .., "emptyDir": {}}`).
    pub fn volume(mut self, spec: Value) -> PodBuilder {
        push(&mut self.0["spec"], "volumes", spec);
        self
    }

    /// An emptyDir volume.
    pub fn empty_dir(self, name: &str) -> PodBuilder {
        self.volume(json!({"name": name, "emptyDir": {}}))
    }

    /// A hostPath volume of an existing directory.
    pub fn host_dir(self, name: &str, path: &std::path::Path) -> PodBuilder {
        self.volume(json!({"name": name, "hostPath": {"path": path, "type": "Directory"}}))
    }

    /// Any other field of the spec (`runtimeClassName`, `activeDeadlineSeconds`, ...).
    pub fn spec(mut self, key: &str, value: Value) -> PodBuilder {
        self.0["spec"][key] = value;
        self
    }

    /// The pod for the API.
    pub fn build(self) -> Pod {
        serde_json::from_value(self.0).expect("a valid pod")
    }

    /// The pod as a static pod manifest (JSON, which the YAML reader takes as is).
    pub fn manifest(self) -> String {
        serde_json::to_string_pretty(&self.0).expect("json")
    }
}

/// The pod's phase; empty before it has one.
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The status of app container `name`.
pub fn container_status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// The status of init container `name`.
pub fn init_status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// The pod condition of type `kind`.
pub fn condition<'a>(p: &'a Pod, kind: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// The status (`True`, `False`) of the pod condition `kind`.
pub fn condition_status<'a>(p: &'a Pod, kind: &str) -> Option<&'a str> {
    condition(p, kind).map(|c| c.status.as_str())
}

/// Whether the container is running.
pub fn is_running(s: Option<&ContainerStatus>) -> bool {
    s.and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// Creates `pod` through `api`.
pub async fn create(api: &Api<Pod>, pod: &Pod) {
    api.create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {:?}: {e}", pod.metadata.name));
}

/// Waits up to `secs` for `check` to return Some on pod `name`; panics naming `what`.
pub async fn wait_pod<T>(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    secs: u64,
    check: impl Fn(&Pod) -> Option<T>,
) -> T {
    wait_until_async(what, Duration::from_secs(secs), || async {
        let p = api.get_opt(name).await.ok()??;
        check(&p)
    })
    .await
}

/// Waits for pod `name` to run (phase Running); returns its UID.
pub async fn running_uid(api: &Api<Pod>, name: &str, secs: u64) -> String {
    wait_pod(api, name, &format!("{name} Running"), secs, |p| {
        (phase(p) == "Running").then(|| p.metadata.uid.clone().unwrap_or_default())
    })
    .await
}

/// Deletes the pods `names` (default grace) and waits up to `secs` until the API has none.
pub async fn delete_and_wait_gone<S: AsRef<str>>(api: &Api<Pod>, names: &[S], secs: u64) {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    let dp = DeleteParams::default();
    for n in &names {
        api.delete(n, &dp)
            .await
            .unwrap_or_else(|e| panic!("delete pod {n}: {e}"));
    }
    wait_gone(api, &names, secs).await;
}

/// Waits up to `secs` until the API has none of the pods `names`.
pub async fn wait_gone(api: &Api<Pod>, names: &[&str], secs: u64) {
    wait_until_async(
        &format!("pods {names:?} gone from the API"),
        Duration::from_secs(secs),
        || async {
            for n in names {
                if api.get_opt(n).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}

/// What container `container` of pod `ns/name` (UID `uid`) has written so far, stdout and stderr
/// in order, read from the CRI log files (`<pod_logs_dir>/<ns>_<name>_<uid>/<container>/*.log`,
/// each line `<time> <stream> <P|F> <content>`, partial lines joined) as both agents write them.
pub fn container_output(
    pod_logs_dir: &std::path::Path,
    ns: &str,
    name: &str,
    uid: &str,
    container: &str,
) -> String {
    let dir = pod_logs_dir
        .join(format!("{ns}_{name}_{uid}"))
        .join(container);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    let mut out = String::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            let mut parts = line.splitn(4, ' ');
            let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
            out.push_str(parts.next().unwrap_or_default());
            if tag != Some("P") {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (No busybox here: [`Container::sh`] asks the test environment for its image.)
    #[test]
    fn builds_the_pod_it_says() {
        let p = PodBuilder::new("p")
            .node("n")
            .restart_policy("Never")
            .grace(4)
            .label("app", "p")
            .empty_dir("work")
            .init_container(Container::image_only("init", "img").sidecar())
            .container(
                Container::image_only("main", "img")
                    .with("command", json!(["sleep", "1"]))
                    .requests("10m", "1Mi")
                    .limits("20m", "2Mi")
                    .mount("work", "/work")
                    .env("A", json!({"value": "1"})),
            )
            .build();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(4));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        let c = &spec.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["sleep".into(), "1".into()][..])
        );
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "2Mi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "10m");
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/work");
        assert_eq!(c.env.as_ref().unwrap()[0].value.as_deref(), Some("1"));
        assert!(spec.volumes.as_ref().unwrap()[0].empty_dir.is_some());
        assert_eq!(p.metadata.labels.unwrap()["app"], "p");
        let with_token = PodBuilder::new("q").service_account_token().build();
        assert_eq!(
            with_token.spec.unwrap().automount_service_account_token,
            None
        );
    }
}
