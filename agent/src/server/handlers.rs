//! The endpoints of the :10250 server and the filter in front of them: authenticate (401),
//! authorize (403), then serve.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use tracing::debug;

use super::{PeerUser, Server, authz};

/// The router: every route behind the auth filter.
pub fn router(server: Arc<Server>) -> Router {
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/ping", get(ping))
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics/probes", get(probe_metrics))
        .route("/metrics/cadvisor", get(cadvisor_metrics))
        .route("/stats/summary", get(summary).post(summary));
    let endpoints = server.endpoints;
    let app = if endpoints.debugging_handlers {
        debugging(base, endpoints)
    } else {
        debugging_disabled(base)
    };
    app.fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(server.clone(), filter))
        .with_state(server)
}

/// The kubelet's debugging handlers (`InstallAuthRequiredHandlers`, `InstallSystemLogHandler`,
/// `InstallProfilingHandler`), with exec, attach, portForward and run ([`super::streaming`]).
fn debugging(r: Router<Arc<Server>>, endpoints: super::Endpoints) -> Router<Arc<Server>> {
    let r = r
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(super::container_logs::get),
        )
        .route("/configz", get(super::configz::get))
        .route("/runningpods/", get(super::running_pods::get))
        .route(
            "/exec/{*rest}",
            get(super::streaming::exec).post(super::streaming::exec),
        )
        .route(
            "/attach/{*rest}",
            get(super::streaming::attach).post(super::streaming::attach),
        )
        .route(
            "/portForward/{*rest}",
            get(super::streaming::port_forward).post(super::streaming::port_forward),
        )
        .route("/run/{*rest}", post(super::streaming::run));
    // Bosun has no Go profiler to serve: the answer of a kubelet with profiling off.
    let r = disabled(r, "/debug/pprof/", "profiling endpoint is disabled.");
    if endpoints.system_log_handler {
        r.route("/logs/", get(super::node_logs::root))
            .route("/logs/{*path}", get(super::node_logs::get))
    } else {
        disabled(r, "/logs/", "logs endpoint is disabled.")
    }
}

/// With `enableDebuggingHandlers: false`, as the kubelet's `InstallDebuggingDisabledHandlers`.
fn debugging_disabled(mut r: Router<Arc<Server>>) -> Router<Arc<Server>> {
    for prefix in [
        "/run/",
        "/exec/",
        "/attach/",
        "/portForward/",
        "/containerLogs/",
        "/runningpods/",
        "/debug/pprof/",
        "/logs/",
    ] {
        r = disabled(r, prefix, "Debug endpoints are disabled.");
    }
    r
}

/// `prefix` and everything below it answer 405 with `message`, as Go's `http.Error`.
fn disabled(
    r: Router<Arc<Server>>,
    prefix: &'static str,
    message: &'static str,
) -> Router<Arc<Server>> {
    let answer = move || async move {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            format!("{message}\n"),
        )
            .into_response()
    };
    r.route(prefix, axum::routing::any(answer))
        .route(&format!("{prefix}{{*rest}}"), axum::routing::any(answer))
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Authentication then authorization, as the kubelet's auth filter.
async fn filter(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<PeerUser>()
        .and_then(|p| p.0.as_ref());
    let user = match s.authn.authenticate(peer, req.headers()).await {
        Ok(u) => u,
        Err(e) => {
            debug!(path = req.uri().path(), error = %e, "unauthorized request");
            return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
    };
    let attrs = authz::request_attributes(req.method(), req.uri().path(), &s.node_name);
    let mut subresources = Vec::new();
    for a in &attrs {
        subresources.push(a.subresource);
        match s.authz.authorize(&user, a).await {
            Ok(true) => return next.run(req).await,
            Ok(false) => {}
            Err(_) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                        user.name, a.verb, a.subresource
                    ),
                );
            }
        }
    }
    let verb = attrs.first().map_or("", |a| a.verb);
    let msg = format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        subresources.join(" ")
    );
    debug!(path = req.uri().path(), "{}", msg.trim_end());
    text(StatusCode::FORBIDDEN, msg)
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

async fn ping() -> Response {
    text(StatusCode::OK, "ok".into())
}

/// `/healthz`: "ok" while the agent is healthy (started, PLEG relisting).
async fn healthz(State(s): State<Arc<Server>>) -> Response {
    match s.health.answer() {
        (200, body) => text(StatusCode::OK, body),
        (_, body) => text(StatusCode::INTERNAL_SERVER_ERROR, body),
    }
}

fn json(value: &serde_json::Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal Error: encoding: {e}"),
        ),
    }
}

/// `/pods`: the pods this node runs with their newest status, as a v1 PodList.
async fn pods(State(s): State<Arc<Server>>) -> Response {
    let mut pods = s.statuses.pods();
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    json(&serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods.iter().map(|p| &**p).collect::<Vec<&k8s_openapi::api::core::v1::Pod>>(),
    }))
}

/// `/metrics`: bosun's own metrics.
async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::global().encode(),
    )
        .into_response()
}

/// `/stats/summary`: the latest Summary (`?only_cpu_and_memory=true`: CPU and memory only).
async fn summary(State(s): State<Arc<Server>>, RawQuery(query): RawQuery) -> Response {
    let Some(summary) = s.stats.latest() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Error: no stats sampled yet".into(),
        );
    };
    let only_cpu_and_memory = query.as_deref().unwrap_or_default().split('&').any(|kv| {
        matches!(
            kv.split_once('='),
            Some(("only_cpu_and_memory", v)) if v.eq_ignore_ascii_case("true") || v == "1"
        )
    });
    let body = if only_cpu_and_memory {
        serde_json::to_vec(&cpu_and_memory(&summary))
    } else {
        serde_json::to_vec(&*summary)
    };
    match body {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal Error: encoding: {e}"),
        ),
    }
}

/// The Summary with only what the kubelet's GetCPUAndMemoryStats keeps: CPU, memory and swap.
fn cpu_and_memory(s: &crate::stats::summary::Summary) -> crate::stats::summary::Summary {
    let mut s = s.clone();
    let strip_container = |c: &mut crate::stats::summary::ContainerStats| {
        c.rootfs = None;
        c.logs = None;
        c.accelerators.clear();
        c.user_defined_metrics.clear();
    };
    s.node.network = None;
    s.node.fs = None;
    s.node.runtime = None;
    s.node.rlimit = None;
    s.node
        .system_containers
        .iter_mut()
        .for_each(strip_container);
    for p in &mut s.pods {
        p.network = None;
        p.volume_stats.clear();
        p.ephemeral_storage = None;
        p.process_stats = None;
        p.containers.iter_mut().for_each(strip_container);
    }
    s
}

/// `/metrics/probes`: the kubelet's prober series.
async fn probe_metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::probes::encode(),
    )
        .into_response()
}

/// `/metrics/resource`: the kubelet's resource metrics from the latest Summary.
async fn resource_metrics(State(s): State<Arc<Server>>) -> Response {
    let latest = s.stats.latest();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, super::resource_metrics::CONTENT_TYPE)],
        super::resource_metrics::encode(latest.as_deref()),
    )
        .into_response()
}

/// `/metrics/cadvisor`: cAdvisor's container series from the latest sample.
async fn cadvisor_metrics(State(s): State<Arc<Server>>) -> Response {
    let latest = s.stats.latest();
    let mut images = super::cadvisor::Images::new();
    for e in s.statuses.entries() {
        let uid = e.pod.metadata.uid.clone().unwrap_or_default();
        let statuses = [
            &e.status.container_statuses,
            &e.status.init_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten();
        for c in statuses {
            images.insert((uid.clone(), c.name.clone()), c.image.clone());
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, super::resource_metrics::CONTENT_TYPE)],
        super::cadvisor::encode(latest.as_deref(), &s.stats.identities(), &images, now),
    )
        .into_response()
}
