//! Lifecycle hooks on a bosun node, through the real containerd and API server: postStart exec
//! right after the start, a failing postStart httpGet kills the container (FailedPostStartHook)
//! and it is restarted, and a preStop httpGet reaches the container at the pod IP (over HTTPS
//! falling back to HTTP when the server answers in plain HTTP).

use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{Container, PodBuilder, container_status, create, delete_and_wait_gone};
use bosun_tests::wait_until_async;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn post_start_and_pre_stop_hooks_run_as_the_kubelet() {
    let bn = BosunNode::start("hooks").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let name = format!("{}-p", node.name);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // A plain-HTTP server for `fallback`'s HTTPS preStop: it answers whatever arrives (a TLS
    // ClientHello: after a second without a line) in HTTP and records each connection.
    let responder = shared.join("responder");
    std::fs::write(
        &responder,
        "#!/bin/sh\n\
         while read -t 1 l; do case \"$l\" in \"$(printf '\\r')\"|'') break;; esac; done\n\
         echo conn >> /shared/https\n\
         printf 'HTTP/1.0 200 OK\\r\\n\\r\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &responder,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // `web` serves a CGI script that records each request in /shared/http.
    let web = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho hit >> /shared/http\\necho Content-Type: text/plain\\necho\\necho ok\\n' > /www/cgi-bin/hook \
               && chmod +x /www/cgi-bin/hook && httpd -p 8080 -h /www; echo main >> /shared/log; while :; do sleep 1; done";
    let forever = "while :; do sleep 1; done";
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(10)
        .host_dir("shared", &shared)
        .container(
            Container::sh("web", web)
                .with("ports", json!([{"name": "http", "containerPort": 8080}]))
                .with(
                    "lifecycle",
                    json!({
                        "postStart": {"exec": {"command": ["sh", "-c", "echo poststart >> /shared/log"]}},
                        "preStop": {"httpGet": {"path": "/cgi-bin/hook", "port": "http"}}}),
                )
                .mount("shared", "/shared"),
        )
        .container(Container::sh("bad", forever).with(
            "lifecycle",
            json!({"postStart": {"httpGet": {"path": "/", "port": 9}}}),
        ))
        .container(
            Container::sh(
                "fallback",
                &format!("nc -ll -p 8443 -e /shared/responder & {forever}"),
            )
            .with(
                "lifecycle",
                json!({"preStop": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}}}),
            )
            .mount("shared", "/shared"),
        )
        .build();
    create(api, &p).await;

    // postStart exec ran in `web`; `bad` was killed for its hook and is being restarted.
    let p = wait_until_async(
        "web running, bad restarted",
        Duration::from_secs(90),
        || async {
            let p = api.get_opt(&name).await.ok()??;
            let web = container_status(&p, "web")?;
            let bad = container_status(&p, "bad")?;
            let running = web.state.as_ref()?.running.is_some();
            (running && bad.restart_count >= 1 && read(&shared.join("log")).contains("poststart"))
                .then_some(p)
        },
    )
    .await;
    let web = container_status(&p, "web").unwrap();
    assert_eq!(web.restart_count, 0, "{web:?}");
    let bad = container_status(&p, "bad").unwrap();
    let last = bad.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert!(last.is_some(), "killed instance in lastState: {bad:?}");
    let events: Api<Event> = Api::namespaced(client, "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let hook_events = wait_until_async(
        "FailedPostStartHook event",
        Duration::from_secs(30),
        || async {
            let list = events.list(&lp).await.ok()?;
            let found: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.involved_object.field_path.as_deref() == Some("spec.containers{bad}")
                        && matches!(e.reason.as_deref(), Some("FailedPostStartHook" | "Killing"))
                })
                .collect();
            (found.len() >= 2).then_some(found)
        },
    )
    .await;
    let failed = hook_events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        .expect("FailedPostStartHook");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some("PostStartHook failed"));
    let killing = hook_events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Killing"))
        .expect("Killing");
    assert_eq!(killing.message.as_deref(), Some("FailedPostStartHook"));
    assert!(read(&shared.join("http")).is_empty(), "preStop ran early");

    // Deletion: the preStop httpGet reaches `web` at the pod IP, on its named port.
    delete_and_wait_gone(api, &[&name], 60).await;
    assert_eq!(read(&shared.join("http")).trim(), "hit");
    // `fallback`'s HTTPS preStop got a plain HTTP answer and was sent again over HTTP (two
    // connections), as the kubelet's LifecycleHTTPFallback.
    assert_eq!(
        read(&shared.join("https")).lines().collect::<Vec<_>>(),
        ["conn", "conn"]
    );
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name={name},reason=LifecycleHTTPFallback"
    ));
    let fallback = wait_until_async(
        "LifecycleHTTPFallback event",
        Duration::from_secs(30),
        || async { events.list(&lp).await.ok()?.items.into_iter().next() },
    )
    .await;
    let msg = fallback.message.unwrap_or_default();
    assert!(
        msg.starts_with("request to HTTPS lifecycle hook ")
            && msg.ends_with(":8443 got HTTP response, retry with HTTP succeeded"),
        "{msg}"
    );
    bn.finish();
}
