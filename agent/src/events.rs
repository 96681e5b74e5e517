//! The event recorder: Kubernetes Events about pods (Pulling, Pulled, Created, Started, Killing,
//! BackOff, Failed, FailedMount) and about the node (Starting, NodeReady, NodeHasSufficientMemory,
//! ...), as the kubelet emits them. Recording never blocks the caller:
//! events go through a bounded queue (dropped when full) to one writer task, which folds repeats
//! of the same event into a count, as the kubelet's event correlator does.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Progress.
    Normal,
    /// Something went wrong.
    Warning,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct PodEvent {
    /// The involved object's kind: `Pod`, `Node` or `PersistentVolumeClaim`.
    pub object_kind: &'static str,
    /// The pod's namespace (for a Node: `default`, where the kubelet puts node events).
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// `spec.containers{name}` or empty for the pod itself.
    pub field_path: String,
    /// Normal or Warning.
    pub kind: EventType,
    /// The kubelet's reason (Pulling, Started, BackOff, ...).
    pub reason: String,
    /// Human message.
    pub message: String,
    /// The event's own annotations (the kubelet's AnnotatedEventf: an eviction's offending
    /// containers); none for most events.
    pub annotations: BTreeMap<String, String>,
}

/// Hands events to the writer; cheap to clone. Without an API it only logs.
#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<PodEvent>>,
}

impl Recorder {
    /// A recorder that only logs (standalone mode).
    pub fn disabled() -> Self {
        Recorder { tx: None }
    }

    /// A recorder handing its events to the returned receiver, for tests to read.
    #[cfg(test)]
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Recorder { tx: Some(tx) }, rx)
    }

    /// A recorder writing to the API through a task owned by `cancel`.
    pub fn spawn(client: kube::Client, node: String, cancel: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(512);
        tokio::spawn(writer(client, node, rx, cancel));
        Recorder { tx: Some(tx) }
    }

    /// Records an event about `pod` (and its container, if named); never waits.
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        self.pod_annotated(pod, container, BTreeMap::new(), kind, reason, message);
    }

    /// Records an event about `pod` carrying `annotations` in its metadata, as the kubelet's
    /// AnnotatedEventf; never waits.
    pub fn pod_annotated(
        &self,
        pod: &Pod,
        container: Option<&str>,
        annotations: BTreeMap<String, String>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        if self.tx.is_none() {
            return;
        }
        let field_path = container
            .map(|c| {
                let init = pod
                    .spec
                    .iter()
                    .flat_map(|s| s.init_containers.iter().flatten())
                    .any(|i| i.name == c);
                if init {
                    format!("spec.initContainers{{{c}}}")
                } else {
                    format!("spec.containers{{{c}}}")
                }
            })
            .unwrap_or_default();
        let key = crate::runtime::sandbox::PodKey::of(pod);
        self.send(PodEvent {
            object_kind: "Pod",
            namespace: key.namespace,
            name: key.name,
            uid: key.uid,
            field_path,
            kind,
            reason: reason.to_string(),
            message,
            annotations,
        });
    }

    /// Records an event about the node `name` (the kubelet's node reference: kind Node, UID =
    /// the node's name, event in namespace `default`); never waits.
    pub fn node(&self, name: &str, kind: EventType, reason: &str, message: String) {
        self.send(PodEvent {
            object_kind: "Node",
            namespace: "default".into(),
            name: name.into(),
            uid: name.into(),
            field_path: String::new(),
            kind,
            reason: reason.into(),
            message,
            annotations: BTreeMap::new(),
        });
    }

    /// Records an event about the claim `namespace/name` (uid `uid`); never waits.
    pub fn claim(
        &self,
        (namespace, name, uid): (String, String, String),
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        self.send(PodEvent {
            object_kind: "PersistentVolumeClaim",
            namespace,
            name,
            uid,
            field_path: String::new(),
            kind,
            reason: reason.into(),
            message,
            annotations: BTreeMap::new(),
        });
    }

    fn send(&self, ev: PodEvent) {
        let Some(tx) = &self.tx else {
            debug!(object = ev.object_kind, name = %ev.name, reason = %ev.reason, message = %ev.message, "event (not recorded: no API)");
            return;
        };
        if tx.try_send(ev).is_err() {
            debug!("event queue full; event dropped");
        }
    }
}

/// Repeats of one event within this window become a count on the first.
const FOLD_WINDOW: Duration = Duration::from_secs(600);

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    first: Time,
    at: Instant,
}

async fn writer(
    client: kube::Client,
    node: String,
    mut rx: mpsc::Receiver<PodEvent>,
    cancel: CancellationToken,
) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev { Some(e) => e, None => return },
        };
        let now = crate::status::compute::now();
        let key = format!(
            "{}|{}|{}|{}|{}",
            ev.uid, ev.field_path, ev.reason, ev.message, ev.kind as u8
        );
        seen.retain(|_, s| s.at.elapsed() < FOLD_WINDOW);
        let api: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
        if let Some(s) = seen.get_mut(&key) {
            s.count += 1;
            s.at = Instant::now();
            let patch = serde_json::json!({"count": s.count, "lastTimestamp": now, "firstTimestamp": s.first});
            let _ = Api::<Event>::namespaced(client.clone(), &s.namespace)
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            continue;
        }
        let name = format!("{}.{:x}", ev.name, nanos());
        let event = event_object(&ev, &name, &node, now.clone());
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(
                    key,
                    Seen {
                        name,
                        namespace: ev.namespace,
                        count: 1,
                        first: now,
                        at: Instant::now(),
                    },
                );
            }
            Err(e) => debug!(error = %e, "event not recorded"),
        }
    }
}

/// The Event object for `ev`, named `name`, from the kubelet on `node` at `now`: the involved
/// object's reference, the kubelet's source, count 1, and `ev`'s annotations in its metadata.
fn event_object(ev: &PodEvent, name: &str, node: &str, now: Time) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ev.namespace.clone()),
            annotations: (!ev.annotations.is_empty()).then(|| ev.annotations.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(ev.object_kind.into()),
            name: Some(ev.name.clone()),
            namespace: (ev.object_kind != "Node").then(|| ev.namespace.clone()),
            uid: Some(ev.uid.clone()),
            field_path: (!ev.field_path.is_empty()).then(|| ev.field_path.clone()),
            ..Default::default()
        },
        reason: Some(ev.reason.clone()),
        message: Some(ev.message.clone()),
        type_: Some(match ev.kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evicted(annotations: &[(&str, &str)]) -> PodEvent {
        PodEvent {
            object_kind: "Pod",
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            field_path: String::new(),
            kind: EventType::Warning,
            reason: "Evicted".into(),
            message: "The node was low on resource: memory. ".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_event_carries_its_annotations_as_the_kubelets_annotated_events() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let ev = evicted(&[
            ("offending_containers", "hog"),
            ("offending_containers_usage", "300Mi"),
            ("starved_resource", "memory"),
        ]);
        let e = event_object(&ev, "p.1", "node-a", now.clone());
        assert_eq!(
            e.metadata.annotations,
            Some(ev.annotations.clone()),
            "annotations in the event's metadata"
        );
        assert_eq!(
            (
                e.involved_object.kind.as_deref(),
                e.involved_object.namespace.as_deref(),
                e.type_.as_deref(),
                e.reason.as_deref(),
                e.source.and_then(|s| s.host).as_deref(),
            ),
            (
                Some("Pod"),
                Some("ns"),
                Some("Warning"),
                Some("Evicted"),
                Some("node-a")
            )
        );
        // Most events have none: no empty map is sent.
        let plain = event_object(&evicted(&[]), "p.2", "node-a", now);
        assert_eq!(plain.metadata.annotations, None);
    }
}
