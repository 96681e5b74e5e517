//! The `io.kubernetes.*` labels and annotations the kubelet puts on CRI sandboxes and containers;
//! they are how bosun finds its pods again after a restart.

use std::collections::HashMap;

/// Label: the pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's UID.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Label: the container's name within the pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Label: which agent created the object (sandboxes and containers the kubelet made have it too).
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";
/// Annotation: the kubelet's hash of the container spec (runtime::hash), to detect spec changes.
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Annotation: how many times the container was restarted before this instance.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation: where the container writes its termination message.
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's termination message policy.
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the pod's termination grace period in seconds.
pub const POD_TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Annotation (bosun, no longer written): the image the container's spec named, recorded by
/// older Bosuns beside a hash of their own; read to compute the kubelet's hash of such a container.
pub const BOSUN_SPEC_IMAGE: &str = "bosun.dev/spec-image";
/// Annotation (bosun): "init" for init containers, absent for app containers.
pub const BOSUN_CONTAINER_KIND: &str = "bosun.dev/container-kind";
/// Pod annotation: where the pod came from (file, api).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Pod annotation: hash identifying a static pod.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Pod annotation on mirror pods.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// True for a static pod (read from a manifest file, `kubernetes.io/config.source: file`).
pub fn is_static(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE))
        .is_some_and(|s| s == "file")
}

/// True for a mirror pod (the API's copy of a static pod).
pub fn is_mirror(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

/// Labels identifying a pod's sandbox: the pod's own labels plus name, namespace and uid.
pub fn sandbox_labels(
    name: &str,
    namespace: &str,
    uid: &str,
    pod_labels: Option<&std::collections::BTreeMap<String, String>>,
) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod_labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(POD_NAME.into(), name.into());
    l.insert(POD_NAMESPACE.into(), namespace.into());
    l.insert(POD_UID.into(), uid.into());
    l.insert(CONTAINER_TYPE.into(), "podsandbox".into());
    l
}

/// Labels identifying a container: its name and its pod's name, namespace and uid.
pub fn container_labels(
    name: &str,
    namespace: &str,
    uid: &str,
    container: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.into(), name.into()),
        (POD_NAMESPACE.into(), namespace.into()),
        (POD_UID.into(), uid.into()),
        (CONTAINER_NAME.into(), container.into()),
        (CONTAINER_TYPE.into(), "container".into()),
    ])
}
