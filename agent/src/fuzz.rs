//! Property-based fuzzing of the parsers of outside input (issue #19): the KubeletConfiguration
//! file and flags, kubeconfig files, quantities, the CRI log line reader, the :10250 request
//! router, pod specs turned into CRI sandbox and container configs, and the round trips of the
//! Summary JSON and the `/metrics/resource` text.
//!
//! Each property runs `BOSUN_FUZZ_CASES` cases (256 by default: the short mode CI runs;
//! RELIABILITY.md records a long run). None may panic, and each checks what a user would: a
//! config error names its field, an unauthenticated request gets 401, no log route serves a file
//! outside the logs it serves, a pod is either configured or refused with a reason, a kubeconfig
//! error names its file, a metric reads back under its own labels with its own value.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// The cases per property: `BOSUN_FUZZ_CASES`, 256 when unset.
fn cases() -> Config {
    let cases = std::env::var("BOSUN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One of `values`, owned.
fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(values).prop_map(str::to_string)
}

/// Strings that stress parsers: anything at all, or the alphabet of quantities, durations,
/// paths and label syntax.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-+.0-9eEkKmMgGiIuUnNpPtT%:=,/ _a-z]{0,24}",
        Just(String::new()),
        "[0-9]{15,45}(e[0-9]{1,11})?",
    ]
}

/// JSON values as YAML accepts them: scalars at the edges (huge and negative numbers, strings in
/// the alphabet of quantities and durations), lists and maps nested a few levels.
fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(65536),
            Just(i64::from(i32::MAX) + 1)
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every top-level KubeletConfiguration field Bosun knows, as `/configz` lists them.
fn config_fields() -> Vec<String> {
    let effective = crate::config::file::effective(&crate::config::KubeletConfiguration::default());
    effective
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every long flag Bosun accepts.
fn flag_names() -> Vec<String> {
    use clap::CommandFactory;
    crate::config::Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// Loads a config file with `body` and `args`; a load error must name a field for every problem.
fn load(body: &str, args: &[String]) -> Result<crate::config::Config, crate::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, body).unwrap();
    let mut argv = vec!["bosun".to_string(), format!("--config={}", path.display())];
    argv.extend(args.iter().cloned());
    let flags = crate::config::Flags::parse_args(argv)?;
    crate::config::load_with(flags, || Ok("fuzz-node".into()))
}

/// An invalid configuration names the field of each problem, and the message says what is wrong.
fn assert_named(r: &Result<crate::config::Config, crate::config::ConfigError>) {
    if let Err(crate::config::ConfigError::Invalid(errors)) = r {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
        }
    }
}

proptest! {
    #![proptest_config(cases())]

    /// A KubeletConfiguration file of known fields with arbitrary values loads or is refused
    /// with every problem's field named; never a panic.
    #[test]
    fn config_files_load_or_name_the_field(
        picks in prop::collection::vec((any::<prop::sample::Index>(), value()), 0..8),
    ) {
        let fields = config_fields();
        let mut doc = serde_json::Map::new();
        doc.insert("kind".into(), "KubeletConfiguration".into());
        doc.insert("apiVersion".into(), "kubelet.config.k8s.io/v1beta1".into());
        for (i, v) in picks {
            doc.insert(i.get(&fields).clone(), v);
        }
        let body = serde_json::Value::Object(doc).to_string();
        assert_named(&load(&body, &[]));
    }

    /// Arbitrary text as the config file: a syntax error, an invalid field, or a config.
    #[test]
    fn config_file_text_never_panics(body in any::<String>()) {
        assert_named(&load(&body, &[]));
    }

    /// Known flags with arbitrary values parse or are refused; the result validates or names
    /// the field.
    #[test]
    fn flags_parse_or_are_refused(
        picks in prop::collection::vec((any::<prop::sample::Index>(), text()), 0..6),
    ) {
        let names = flag_names();
        let args: Vec<String> = picks
            .into_iter()
            .filter(|(i, _)| !matches!(i.get(&names).as_str(), "help" | "version" | "config"))
            .map(|(i, v)| format!("--{}={v}", i.get(&names)))
            .collect();
        assert_named(&load("", &args));
    }

    /// Any string parses as a quantity or is refused; never a panic.
    #[test]
    fn quantities_parse_or_are_refused(
        s in prop_oneof![text(), "[-+]?[0-9]{1,40}(\\.[0-9]{0,20})?[eE][-+]?(21474836[0-9]{2}|[0-9]{1,3})"],
    ) {
        let _ = crate::resource::parse_quantity(&s);
    }

    /// A quantity's canonical form parses back to the same amount.
    #[test]
    fn canonical_quantities_round_trip(milli in -(1i128 << 62)..(1i128 << 62), binary in any::<bool>()) {
        use crate::resource::{Amount, Format};
        let format = if binary { Format::BinarySi } else { Format::DecimalSi };
        let text = Amount { milli, format }.canonical();
        let back = crate::resource::parse_quantity(&text).unwrap();
        prop_assert_eq!(i128::from(back.milli_value()), milli, "{}", text);
    }

    /// Any bytes are a CRI log record or are refused; a record's fixed-width timestamp is built
    /// without a panic.
    #[test]
    fn log_lines_parse_or_are_refused(line in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(r) = crate::logs::format::parse(&line) {
            let _ = crate::logs::format::fixed_nanos(r.time_text);
        }
    }

    /// A record as the runtime writes it reads back with its stream and content.
    #[test]
    fn written_log_records_read_back(
        secs in 0i64..4_000_000_000,
        nanos in 0u32..1_000_000_000,
        stderr in any::<bool>(),
        partial in any::<bool>(),
        content in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ) {
        let ts = k8s_openapi::jiff::Timestamp::new(secs, nanos as i32).unwrap();
        let stream = if stderr { "stderr" } else { "stdout" };
        let tag = if partial { "P" } else { "F" };
        let mut line = format!("{ts} {stream} {tag} ").into_bytes();
        line.extend_from_slice(&content);
        line.push(b'\n');
        let r = crate::logs::format::parse(&line).unwrap();
        prop_assert_eq!(r.time, ts);
        let want_stream = if stderr {
            crate::logs::format::Stream::Stderr
        } else {
            crate::logs::format::Stream::Stdout
        };
        prop_assert_eq!(r.stream, want_stream);
        let mut want = content.clone();
        if !partial {
            want.push(b'\n');
        }
        prop_assert_eq!(r.content, &want[..]);
    }
}

/// A request to the kubelet port: method, path built from hostile segments, query, headers.
fn request() -> impl Strategy<Value = (String, String, Vec<(String, String)>)> {
    let segment = prop_oneof![
        one_of(&[
            "..", "%2e%2e", "%2F", "secret", "var-log", "default", "web", "main",
        ]),
        one_of(&[
            "containerLogs",
            "logs",
            "pods",
            "stats",
            "summary",
            "metrics",
            "resource",
            "exec",
            "attach",
            "portForward",
            "run",
            "healthz",
            "configz",
            "runningpods",
            "debug",
            "pprof",
            "checkpoint",
            "cadvisor",
            "probes",
            "ping",
        ]),
        "[a-zA-Z0-9._~%-]{0,12}",
    ];
    let path = prop::collection::vec(segment, 0..6).prop_map(|s| format!("/{}", s.join("/")));
    let query = prop::option::of("[a-zA-Z0-9=&%._-]{0,40}");
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]);
    let headers = prop::collection::vec(("[a-zA-Z-]{1,12}", "[ -~]{0,40}"), 0..4);
    (method, path, query, headers).prop_map(|(m, p, q, h)| {
        let uri = match q {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        (m.to_string(), uri, h)
    })
}

/// No container; the runtime view of an empty node.
struct NoContainers;

impl crate::server::runtime_view::RuntimeView for NoContainers {
    fn container(
        &self,
        _: &str,
    ) -> futures::future::BoxFuture<
        '_,
        Result<
            crate::server::runtime_view::ContainerInfo,
            crate::server::runtime_view::RuntimeError,
        >,
    > {
        Box::pin(async {
            Err(crate::server::runtime_view::RuntimeError::Failed(
                "not found".into(),
            ))
        })
    }

    fn running_pods(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<
            Vec<crate::server::runtime_view::RunningPod>,
            crate::server::runtime_view::RuntimeError,
        >,
    > {
        Box::pin(async { Ok(vec![]) })
    }
}

/// A kubelet port over `dir` (pod logs in `dir/pods`, node logs in `dir/var-log`, a secret in
/// `dir/secret`), with anonymous requests allowed or not, every authenticated one authorized.
fn server(dir: &Path, anonymous: bool) -> Arc<crate::server::Server> {
    use crate::server::auth::Authenticator;
    use crate::server::authz::Authorizer;
    std::fs::create_dir_all(dir.join("pods/default_web_u1/main")).unwrap();
    std::fs::write(
        dir.join("pods/default_web_u1/main/0.log"),
        "2026-12-02T10:00:00Z stdout F mine\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("var-log")).unwrap();
    std::fs::write(dir.join("var-log/syslog"), "node log\n").unwrap();
    std::fs::write(dir.join("secret"), "TOPSECRET\n").unwrap();
    Arc::new(crate::server::Server {
        node_name: "n".into(),
        statuses: crate::status::StatusStore::default(),
        stats: crate::stats::StatsProvider::new(),
        health: crate::healthz::Health::started(),
        authn: Authenticator::new(None, Duration::ZERO, anonymous),
        authz: Authorizer::new(
            crate::config::AuthorizationMode::AlwaysAllow,
            None,
            Duration::ZERO,
            Duration::ZERO,
        ),
        runtime: Arc::new(NoContainers),
        streaming_runtime: None,
        stream_idle_timeout: Duration::ZERO,
        pod_logs_dir: dir.join("pods"),
        node_log_dir: dir.join("var-log"),
        endpoints: crate::server::Endpoints {
            debugging_handlers: true,
            system_log_handler: true,
        },
        configz: serde_json::json!({}),
    })
}

/// Sends one request through the router: its status and body.
async fn send(
    server: &Arc<crate::server::Server>,
    (method, uri, headers): &(String, String, Vec<(String, String)>),
) -> Option<(u16, Vec<u8>)> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = http::Request::builder().method(method.as_str()).uri(uri);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    // A request the HTTP layer itself would refuse never reaches the router.
    let req = req.body(axum::body::Body::empty()).ok()?;
    let resp = crate::server::handlers::router(server.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body.to_vec()))
}

proptest! {
    #![proptest_config(cases())]

    /// Without credentials and with anonymous requests off, every route answers 401 and nothing
    /// else: never data.
    #[test]
    fn unauthenticated_requests_get_401_on_every_route(req in request()) {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path(), false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Some((status, body)) = rt.block_on(send(&s, &req)) {
            prop_assert_eq!(status, 401, "{:?}: {}", req, String::from_utf8_lossy(&body));
        }
    }

    /// Authorized requests on hostile paths are answered (any status) without a panic, and no
    /// answer carries a file outside the logs the routes serve.
    #[test]
    fn no_route_serves_a_file_outside_its_logs(req in request()) {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path(), true);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Some((status, body)) = rt.block_on(send(&s, &req)) {
            prop_assert!((200..600).contains(&status));
            let text = String::from_utf8_lossy(&body);
            prop_assert!(!text.contains("TOPSECRET"), "{:?} served the secret", req);
        }
    }
}

/// A pod the API server could accept, with the fields that feed the CRI configs drawn from
/// hostile values: names, hostnames, commands with `$(VAR)` references, env sources, resources
/// at the edges of quantities, security contexts, ports, DNS settings.
fn pod() -> impl Strategy<Value = Pod> {
    let quantity = prop_oneof![
        one_of(&[
            "0",
            "1",
            "100m",
            "64Mi",
            "9223372036854775807",
            "1E",
            "8Ei",
            "1e18",
            "0.000000001",
        ]),
        "[0-9]{1,20}(\\.[0-9]{1,9})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?",
    ];
    let resources = prop::collection::btree_map(
        prop::sample::select(vec![
            "cpu",
            "memory",
            "ephemeral-storage",
            "hugepages-2Mi",
            "example.com/gpu",
        ]),
        quantity,
        0..3,
    );
    let env_value = prop_oneof![
        text().prop_map(|v| serde_json::json!({ "value": v })),
        "[a-zA-Z.\\[\\]'/-]{0,30}".prop_map(|p| serde_json::json!({ "valueFrom": {"fieldRef": {"fieldPath": p}} })),
        (
            prop::sample::select(vec!["limits.cpu", "requests.memory", "limits.ephemeral-storage", "bogus"]),
            prop::option::of(prop::sample::select(vec!["1m", "1Mi", "0", "3", "1e-3"])),
        )
            .prop_map(|(r, d)| serde_json::json!({ "valueFrom": {"resourceFieldRef": {"resource": r, "divisor": d}} })),
        text().prop_map(|n| serde_json::json!({ "valueFrom": {"configMapKeyRef": {"name": n, "key": "k"}} })),
        text().prop_map(|n| serde_json::json!({ "valueFrom": {"secretKeyRef": {"name": n, "key": "k", "optional": true}} })),
    ];
    let env = prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", env_value), 0..4);
    let container = (
        "[a-z][a-z0-9-]{0,10}",
        prop::collection::vec(text(), 0..3),
        prop::collection::vec("[a-z$()A-Z_ ]{0,16}", 0..3),
        env,
        resources.clone(),
        resources,
        prop::option::of(any::<i64>()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(text(), 0..2),
        prop::collection::vec((any::<i32>(), prop::option::of(any::<i32>())), 0..2),
    )
        .prop_map(
            |(name, command, args, env, requests, limits, uid, privileged, caps, ports)| {
                let env: Vec<_> = env
                    .into_iter()
                    .map(|(n, mut v)| {
                        v["name"] = n.into();
                        v
                    })
                    .collect();
                let ports: Vec<_> = ports
                    .into_iter()
                    .map(|(c, h)| serde_json::json!({"containerPort": c, "hostPort": h}))
                    .collect();
                serde_json::json!({
                    "name": name, "image": "busybox", "command": command, "args": args, "env": env,
                    "resources": {"requests": requests, "limits": limits},
                    "securityContext": {"runAsUser": uid, "privileged": privileged,
                                        "capabilities": {"add": caps}},
                    "ports": ports,
                })
            },
        );
    (
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(container, 1..3),
        prop::option::of(prop::sample::select(vec![
            "ClusterFirst",
            "Default",
            "None",
            "ClusterFirstWithHostNet",
            "bogus",
        ])),
        prop::collection::btree_map("[a-z./]{1,12}", text(), 0..3),
    )
        .prop_map(
            |(name, hostname, subdomain, host_network, containers, dns, sysctls)| {
                let sysctls: Vec<_> = sysctls
                    .into_iter()
                    .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                    .collect();
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
                    "spec": {
                        "hostname": hostname, "subdomain": subdomain, "hostNetwork": host_network,
                        "dnsPolicy": dns, "containers": containers,
                        "securityContext": {"sysctls": sysctls},
                    },
                }))
                .expect("a pod")
            },
        )
}

proptest! {
    #![proptest_config(cases())]

    /// Every pod becomes a CRI sandbox config and container configs, or is refused with a
    /// reason (the kubelet's CreateContainerConfigError message); never a panic.
    #[test]
    fn pods_become_cri_configs_or_are_refused_with_a_reason(pod in pod()) {
        let dirs = crate::runtime::sandbox::tests::dirs();
        if let Err(e) = crate::runtime::sandbox::sandbox_config(&pod, 0, &dirs) {
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = crate::resource::qos_class(&pod);
        let _ = crate::resource::pod_request(&pod, "memory");
        let allocatable = BTreeMap::from([("cpu".to_string(), 2000), ("memory".to_string(), 1 << 40)]);
        let (volumes, maps): (HashMap<String, String>, HashMap<_, _>) = (HashMap::new(), HashMap::new());
        let ctx = crate::runtime::container::ContainerContext {
            volumes: &volumes,
            image_volumes: &volumes,
            subpaths_dir: Path::new("/nonexistent/volume-subpaths"),
            pod_ip: "10.0.0.2",
            host_ip: "10.0.0.1",
            node_name: "n",
            etc_hosts: None,
            termination_log: Path::new("/dev/null"),
            memory_capacity: 1 << 33,
            allocatable: &allocatable,
            config_maps: &maps,
            secrets: &maps,
            service_env: &[],
            pid_target: None,
            security: crate::runtime::security_context::SecurityInputs {
                seccomp_default: false,
                seccomp_root: Path::new("/var/lib/kubelet/seccomp"),
                image_uid: None,
                image_username: "",
            },
        };
        for c in &pod.spec.as_ref().unwrap().containers {
            if let Err(e) = crate::runtime::container::container_config(&pod, c, 0, false, &ctx) {
                prop_assert!(!e.0.is_empty());
            }
        }
    }
}

/// A kubeconfig as YAML text: the structure kube-rs reads (clusters, users, contexts, the current
/// context) with hostile values in every field, or arbitrary text. Users never carry `exec` or
/// `auth-provider`, which would run a command.
fn kubeconfig() -> impl Strategy<Value = String> {
    let field = || prop_oneof![value(), text().prop_map(serde_json::Value::String)];
    let structured = (
        field(),
        field(),
        field(),
        field(),
        field(),
        field(),
        any::<bool>(),
    )
        .prop_map(|(server, ca, token, cert, ctx_user, current, insecure)| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {
                    "server": server,
                    "certificate-authority-data": ca,
                    "insecure-skip-tls-verify": insecure,
                }}],
                "users": [{"name": "u", "user": {"token": token, "client-certificate-data": cert}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": ctx_user}}],
                "current-context": current,
            })
            .to_string()
        });
    prop_oneof![structured, any::<String>()]
}

/// One sample line of the text format: name, labels (unescaped), value and timestamp as written.
type Sample = (String, Vec<(String, String)>, String, Option<String>);

/// Parses the sample lines of a text exposition strictly: every label value quoted and escaped
/// (`\\`, `\"`, `\n`), nothing after the timestamp. Comment lines are skipped.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).ok_or(format!("no value: {line:?}"))?;
        let name = line[..end].to_string();
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                let (key, r) = rest.split_once("=\"").ok_or(format!("label: {line:?}"))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let close = loop {
                    match chars.next().ok_or(format!("unterminated: {line:?}"))? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().map(|c| c.1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("escape {other:?}: {line:?}")),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                rest = &r[close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else {
                    rest = rest.strip_prefix('}').ok_or(format!("labels: {line:?}"))?;
                    break;
                }
            }
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or(format!("value: {line:?}"))?
            .split(' ');
        let value = fields.next().unwrap_or_default().to_string();
        let ts = fields.next().map(str::to_string);
        if fields.next().is_some() {
            return Err(format!("trailing fields: {line:?}"));
        }
        out.push((name, labels, value, ts));
    }
    Ok(out)
}

/// A Summary of 0-4 pods of 0-3 containers: hostile names (quotes, backslashes, newlines, any
/// Unicode; made unique by a suffix), counters and gauges anywhere in u64.
fn summary() -> impl Strategy<Value = crate::stats::summary::Summary> {
    let container = (
        any::<String>(),
        any::<u64>(),
        any::<u64>(),
        0i64..4_000_000_000,
    );
    let pod = (
        any::<String>(),
        any::<String>(),
        prop::collection::vec(container, 0..3),
        any::<u64>(),
    );
    (prop::collection::vec(pod, 0..4), any::<u64>()).prop_map(|(pods, node_cpu)| {
        let time = "2026-12-04T12:00:00Z";
        let pods: Vec<serde_json::Value> = pods
            .into_iter()
            .enumerate()
            .map(|(i, (name, ns, containers, cpu))| {
                let containers: Vec<serde_json::Value> = containers
                    .into_iter()
                    .enumerate()
                    .map(|(j, (c, cpu, ws, start))| {
                        let start = k8s_openapi::jiff::Timestamp::from_second(start)
                            .unwrap_or_default()
                            .to_string();
                        serde_json::json!({"name": format!("{c}#{j}"), "startTime": start,
                            "cpu": {"time": time, "usageCoreNanoSeconds": cpu},
                            "memory": {"time": time, "workingSetBytes": ws}})
                    })
                    .collect();
                serde_json::json!({
                    "podRef": {"name": format!("{name}#{i}"), "namespace": ns, "uid": i.to_string()},
                    "startTime": time,
                    "containers": containers,
                    "cpu": {"time": time, "usageCoreNanoSeconds": cpu},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "node": {"nodeName": "n", "startTime": time,
                     "cpu": {"time": time, "usageCoreNanoSeconds": node_cpu}},
            "pods": pods,
        }))
        .expect("a summary")
    })
}

proptest! {
    #![proptest_config(cases())]

    /// A kubeconfig file of any content loads into a client config or is refused with an error
    /// naming the file; never a panic.
    #[test]
    fn kubeconfigs_load_or_are_refused_naming_the_file(body in kubeconfig()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, &body).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Err(e) = rt.block_on(crate::client::load(&path)) {
            let path = path.display().to_string();
            prop_assert!(e.to_string().contains(&path), "{} does not name {}", e, path);
        }
    }

    /// `/metrics/resource` of any summary parses back strictly, and each container's CPU and
    /// working set come back under its own (unescaped) labels with the value encoded; the
    /// summary's JSON reads back equal.
    #[test]
    fn resource_metrics_and_summaries_round_trip(s in summary()) {
        let json = serde_json::to_string(&s).unwrap();
        let back: crate::stats::summary::Summary = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &s);
        let text = crate::server::resource_metrics::encode(Some(&s));
        let samples = parse_exposition(&text).map_err(TestCaseError::fail)?;
        for pod in &s.pods {
            for c in &pod.containers {
                let labels = vec![
                    ("container".to_string(), c.name.clone()),
                    ("namespace".to_string(), pod.pod_ref.namespace.clone()),
                    ("pod".to_string(), pod.pod_ref.name.clone()),
                ];
                let find = |name: &str| {
                    samples.iter().find(|x| x.0 == name && x.1 == labels).map(|x| x.2.clone())
                };
                let cpu = c.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds).unwrap();
                let got = find("container_cpu_usage_seconds_total");
                prop_assert!(got.is_some(), "no CPU series for {:?} in\n{}", labels, text);
                let got: f64 = got.unwrap().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(got, cpu as f64 / 1e9);
                let ws = c.memory.as_ref().and_then(|m| m.working_set_bytes).unwrap();
                let got = find("container_memory_working_set_bytes");
                prop_assert!(got.is_some(), "no memory series for {:?}", labels);
                let got: f64 = got.unwrap().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(got, ws as f64);
            }
        }
    }
}
