//! `GET /runningpods/`: the pods the runtime runs (a ready sandbox, its running containers), as a
//! v1 PodList in the kubelet's shape (`kubecontainer.Pod.ToAPIPod`: name, namespace, UID, and each
//! container's name and image), not the desired pods `/pods` lists.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::Server;
use super::runtime_view::RunningPod;

/// The PodList the kubelet encodes for `pods` (Go zero values included as it writes them).
pub fn pod_list(pods: &[RunningPod]) -> Value {
    let items: Vec<Value> = pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|(name, image)| json!({"name": name, "image": image, "resources": {}}))
                .collect();
            json!({
                "metadata": {
                    "name": p.name,
                    "namespace": p.namespace,
                    "uid": p.uid,
                    "creationTimestamp": null,
                },
                "spec": {"containers": if containers.is_empty() { Value::Null } else { containers.into() }},
                "status": {},
            })
        })
        .collect();
    // Go encodes the nil slice of an empty list as null.
    let items = if items.is_empty() {
        Value::Null
    } else {
        items.into()
    };
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The handler.
pub async fn get(State(s): State<Arc<Server>>) -> Response {
    match s.runtime.running_pods().await {
        Ok(pods) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            pod_list(&pods).to_string(),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.to_string(),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_as_the_kubelets_pod_list() {
        let list = pod_list(&[RunningPod {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            containers: vec![("main".into(), "busybox:1".into())],
        }]);
        assert_eq!(
            list,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                             "creationTimestamp": null},
                "spec": {"containers": [{"name": "main", "image": "busybox:1", "resources": {}}]},
                "status": {},
            }]})
        );
        assert_eq!(pod_list(&[])["items"], Value::Null);
    }
}
