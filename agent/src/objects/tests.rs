//! The managers against a scripted API server: the seam is the HTTP service under kube's client,
//! so kube's real watcher (relist on 410 Gone, back-off on errors) runs against it.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;

use super::watch::WatchCache;
use super::*;

/// What the fake API server answers to one list.
#[derive(Clone)]
enum List {
    /// The object with this value of key `k` (and immutable flag) at this resourceVersion.
    Object(&'static str, bool, u32),
    /// No such object, at this resourceVersion.
    Empty(u32),
    /// Never answers.
    Hang,
}

/// What the fake API server answers to one watch.
#[derive(Clone)]
enum Watch {
    /// A 410 Gone error event, then the stream ends.
    Gone,
    /// HTTP 500.
    Fail,
    /// MODIFIED events with these values (resourceVersion after the list's), then stays open.
    Events(Vec<&'static str>),
}

#[derive(Default)]
struct Script {
    lists: Vec<List>,
    watches: Vec<Watch>,
    listed: usize,
    watched: usize,
    gets: usize,
}

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn object(value: &str, immutable: bool, rv: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns", "resourceVersion": rv.to_string()},
        "data": {"k": value},
        "immutable": immutable,
    })
}

fn body(chunks: Vec<String>, stay_open: bool) -> Body {
    let s = stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from(c))))
            .collect::<Vec<_>>(),
    );
    if stay_open {
        StreamBody::new(s.chain(stream::pending()).boxed())
    } else {
        StreamBody::new(s.boxed())
    }
}

fn reply(status: u16, chunks: Vec<String>, stay_open: bool) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body(chunks, stay_open))
        .unwrap()
}

/// A client whose API server follows `script` (the last list and watch answers repeat).
fn client(script: Arc<Mutex<Script>>) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let script = script.clone();
        async move {
            let query = req.uri().query().unwrap_or_default().to_string();
            let path = req.uri().path().to_string();
            let (list, watch, rv) = {
                let mut s = script.lock().unwrap();
                if query.contains("watch=true") {
                    let i = s.watched.min(s.watches.len() - 1);
                    s.watched += 1;
                    (None, Some(s.watches[i].clone()), 0)
                } else if path.ends_with("/configmaps/cm") {
                    s.gets += 1;
                    let i = s.listed.saturating_sub(1).min(s.lists.len() - 1);
                    (Some(s.lists[i].clone()), None, 1)
                } else {
                    let i = s.listed.min(s.lists.len() - 1);
                    s.listed += 1;
                    (Some(s.lists[i].clone()), None, 0)
                }
            };
            let res = match (list, watch) {
                (Some(List::Hang), _) => futures::future::pending().await,
                (Some(List::Object(v, imm, rv0)), _) if rv == 1 => {
                    reply(200, vec![object(v, imm, rv0).to_string()], false)
                }
                (Some(List::Empty(_)), _) if rv == 1 => reply(
                    404,
                    vec![
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "configmaps \"cm\" not found"})
                        .to_string(),
                    ],
                    false,
                ),
                (Some(l), _) => {
                    let (items, rv) = match l {
                        List::Object(v, imm, rv) => (vec![object(v, imm, rv)], rv),
                        List::Empty(rv) => (vec![], rv),
                        List::Hang => unreachable!(),
                    };
                    let list = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMapList",
                        "metadata": {"resourceVersion": rv.to_string()}, "items": items,
                    });
                    reply(200, vec![list.to_string()], false)
                }
                (None, Some(Watch::Gone)) => {
                    let ev = serde_json::json!({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "too old resource version", "reason": "Expired", "code": 410}});
                    reply(200, vec![format!("{ev}\n")], false)
                }
                (None, Some(Watch::Fail)) => reply(500, vec!["{}".into()], false),
                (None, Some(Watch::Events(values))) => {
                    let evs = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let o = object(v, false, 100 + i as u32);
                            format!("{}\n", serde_json::json!({"type": "MODIFIED", "object": o}))
                        })
                        .collect();
                    reply(200, evs, true)
                }
                (None, None) => unreachable!(),
            };
            Ok::<_, Infallible>(res)
        }
    });
    kube::Client::new(svc, "default")
}

fn script(lists: Vec<List>, watches: Vec<Watch>) -> Arc<Mutex<Script>> {
    Arc::new(Mutex::new(Script {
        lists,
        watches,
        ..Default::default()
    }))
}

fn value(cm: &Option<Arc<ConfigMap>>) -> Option<String> {
    cm.as_ref()?.data.as_ref()?.get("k").cloned()
}

/// Reads until the value is `want` or 20 s passed; returns the last value read.
async fn read_until(cache: &WatchCache<ConfigMap>, want: Option<&str>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = cache.get("ns", "cm").await.ok().and_then(|v| value(&v));
        if got.as_deref() == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn watch_cache(s: &Arc<Mutex<Script>>) -> WatchCache<ConfigMap> {
    WatchCache::new(
        client(s.clone()),
        Duration::from_secs(300),
        CancellationToken::new(),
    )
}

#[tokio::test]
async fn a_410_gone_relists_and_serves_the_new_content() {
    let s = script(
        vec![List::Object("v1", false, 5), List::Object("v2", false, 9)],
        vec![Watch::Gone, Watch::Events(vec![])],
    );
    let cache = watch_cache(&s);
    cache.add_reference("ns", "cm");
    // The first list's v1 may already be replaced: a 410 relists at once.
    let first = value(&cache.get("ns", "cm").await.unwrap());
    assert!(matches!(first.as_deref(), Some("v1" | "v2")), "{first:?}");
    assert_eq!(read_until(&cache, Some("v2")).await.as_deref(), Some("v2"));
    let s = s.lock().unwrap();
    assert_eq!(s.listed, 2, "a 410 relists once");
    assert_eq!(s.gets, 0, "reads never GET");
}

#[tokio::test]
async fn an_object_deleted_while_disconnected_is_gone_after_the_relist() {
    let s = script(
        vec![List::Object("v1", false, 5), List::Empty(9)],
        vec![Watch::Gone, Watch::Events(vec![])],
    );
    let cache = watch_cache(&s);
    cache.add_reference("ns", "cm");
    cache.get("ns", "cm").await.unwrap();
    assert_eq!(read_until(&cache, None).await, None);
    assert!(cache.get("ns", "cm").await.unwrap().is_none());
}

#[tokio::test]
async fn a_failed_watch_is_retried_and_the_last_content_served_meanwhile() {
    let s = script(
        vec![List::Object("v1", false, 5)],
        vec![Watch::Fail, Watch::Fail, Watch::Events(vec!["v2", "v3"])],
    );
    let cache = watch_cache(&s);
    cache.add_reference("ns", "cm");
    assert_eq!(
        value(&cache.get("ns", "cm").await.unwrap()).as_deref(),
        Some("v1")
    );
    assert_eq!(read_until(&cache, Some("v3")).await.as_deref(), Some("v3"));
    let s = s.lock().unwrap();
    assert!(s.watched >= 3, "watched {} times", s.watched);
    assert_eq!(s.listed, 1, "a failed watch resumes without a relist");
}

#[tokio::test]
async fn a_read_before_the_first_list_times_out_as_the_kubelet() {
    let s = script(vec![List::Hang], vec![Watch::Events(vec![])]);
    let cache = watch_cache(&s);
    cache.add_reference("ns", "cm");
    let err = cache.get("ns", "cm").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to sync configmap cache: timed out waiting for the condition"
    );
}

#[tokio::test]
async fn references_are_counted_and_unregistered_objects_refused() {
    let s = script(
        vec![List::Object("v1", false, 5)],
        vec![Watch::Events(vec![])],
    );
    let m: Manager<ConfigMap> = Manager {
        store: Store::Watch(watch_cache(&s)),
        pods: Default::default(),
    };
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let Store::Watch(cache) = &m.store else {
        unreachable!()
    };
    m.register("pod-a", "ns", names(&["cm"]));
    m.register("pod-b", "ns", names(&["cm"]));
    assert_eq!(
        value(&m.get("ns", "cm").await.unwrap()).as_deref(),
        Some("v1")
    );
    // An update that still refers to it keeps the one watch.
    m.register("pod-a", "ns", names(&["cm", "other"]));
    m.unregister("pod-a");
    assert!(cache.watching("ns", "cm"));
    assert_eq!(
        value(&m.get("ns", "cm").await.unwrap()).as_deref(),
        Some("v1")
    );
    m.unregister("pod-b");
    assert!(!cache.watching("ns", "cm"));
    assert_eq!(
        m.get("ns", "cm").await.unwrap_err().to_string(),
        "object \"ns\"/\"cm\" not registered"
    );
    let s = s.lock().unwrap();
    assert_eq!(
        s.listed, 1,
        "one list for every pod referring to the object"
    );
    assert_eq!(s.gets, 0);
}

#[tokio::test]
async fn an_immutable_object_stops_its_watch_and_is_still_served() {
    let s = script(
        vec![List::Object("v1", true, 5)],
        vec![Watch::Events(vec![])],
    );
    let cache = watch_cache(&s);
    cache.add_reference("ns", "cm");
    assert_eq!(
        value(&cache.get("ns", "cm").await.unwrap()).as_deref(),
        Some("v1")
    );
    assert!(!cache.watching("ns", "cm"));
    assert_eq!(
        value(&cache.get("ns", "cm").await.unwrap()).as_deref(),
        Some("v1")
    );
    assert_eq!(s.lock().unwrap().listed, 1);
}

#[tokio::test]
async fn the_ttl_cache_fetches_once_per_ttl_and_again_for_a_new_pod() {
    let s = script(
        vec![List::Object("v1", false, 5)],
        vec![Watch::Events(vec![])],
    );
    // The GET path answers with the latest list's object.
    s.lock().unwrap().listed = 1;
    let cache: ttl::TtlCache<ConfigMap> = ttl::TtlCache::new(client(s.clone()), ttl::TTL);
    cache.add_reference("ns", "cm");
    for _ in 0..3 {
        assert_eq!(
            value(&cache.get("ns", "cm").await.unwrap()).as_deref(),
            Some("v1")
        );
    }
    assert_eq!(s.lock().unwrap().gets, 1);
    cache.add_reference("ns", "cm");
    cache.get("ns", "cm").await.unwrap();
    assert_eq!(s.lock().unwrap().gets, 2);
    cache.delete_reference("ns", "cm");
    cache.delete_reference("ns", "cm");
    assert!(matches!(
        cache.get("ns", "cm").await,
        Err(ObjectError::NotRegistered { .. })
    ));
}

#[test]
fn referenced_names_cover_volumes_env_and_pull_secrets() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "s-vol"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "s-proj"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s-from"}}]}],
        }
    }))
    .unwrap();
    assert_eq!(
        config_map_names(&pod).into_iter().collect::<Vec<_>>(),
        ["cm-env", "cm-init", "cm-vol", "kube-root-ca.crt"]
    );
    assert_eq!(
        secret_names(&pod).into_iter().collect::<Vec<_>>(),
        ["pull", "s-env", "s-from", "s-proj", "s-vol"]
    );
}
