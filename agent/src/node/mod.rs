//! The node: registration, node status and conditions, and the Lease heartbeat, as the kubelet
//! does them.
//!
//! [`run`] registers the Node (or adopts the existing one), then runs three loops until
//! cancelled: a watch of this one Node (`fieldSelector=metadata.name=<node>`, all the Node
//! authorizer lets a node list), the Lease renewed every quarter of its duration, and the status
//! computed every nodeStatusUpdateFrequency and written when it changed or every
//! nodeStatusReportFrequency. Every API failure is retried with back-off; nothing the API returns
//! stops the loops.

pub mod allocatable;
pub mod lease;
pub mod machine;
pub mod register;
pub mod setters;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use kube::Api;
use kube::runtime::{reflector, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::{Policy, retry};
use crate::config::NodeConfig;
use crate::events::{EventType, Recorder};
use setters::Settings;
use status::{Observer, StatusUpdater};

/// The node's IP: `--node-ip`, else the address of the default route's interface, else loopback.
pub fn host_ip(node: &NodeConfig) -> std::net::IpAddr {
    if let Some(ip) = node.ips.first() {
        return *ip;
    }
    // A UDP "connect" picks the source address of the default route without sending anything.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

/// The node's IPs as it reports them: `--node-ip` (one per family), else the detected host IP.
pub fn node_ips(node: &NodeConfig) -> Vec<std::net::IpAddr> {
    if node.ips.is_empty() {
        vec![host_ip(node)]
    } else {
        node.ips.clone()
    }
}

/// The node's settings from its configuration and the kubelet port.
pub fn settings(node: &NodeConfig, port: u16) -> Settings {
    let node_ips = node_ips(node);
    let version = crate::version::version_string();
    Settings {
        node_name: node.name.clone(),
        node_ips,
        port,
        max_pods: node.max_pods,
        reserved: node.reserved.clone(),
        kubelet_version: version
            .strip_prefix("Kubernetes ")
            .unwrap_or(&version)
            .to_string(),
    }
}

/// What admission reads of the Node, defined by admission, its reader.
pub use crate::pod::admission::NodeView;

/// The Node as admission reads it, published by [`run`].
pub type LabelsTx = tokio::sync::watch::Sender<NodeView>;

/// Publishes `node`'s labels, taints and allocatable when they differ from the last published.
fn publish_labels(labels: &LabelsTx, node: &Node) {
    let now = NodeView {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default(),
        allocatable: node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|(k, q)| {
                let q = crate::resource::parse_quantity(&q.0).ok()?;
                Some((k.clone(), i128::from(q.milli_value())))
            })
            .collect(),
    };
    labels.send_if_modified(|l| {
        if *l == now {
            return false;
        }
        let taints: Vec<&str> = now.taints.iter().map(|t| t.key.as_str()).collect();
        info!(labels = ?now.labels, ?taints, "node labels or taints changed");
        *l = now;
        true
    });
}

/// Registers the node (its configuration `cfg`, advertising the kubelet `port`; then signals
/// `registered_tx`) and keeps its status (from what `observer` sees) and Lease current until
/// `cancel` fires; the Node's labels, registered and then as watched, go to `labels`.
pub async fn run(
    client: kube::Client,
    (cfg, port): (Arc<NodeConfig>, u16),
    mut observer: Observer,
    registered_tx: tokio::sync::oneshot::Sender<()>,
    labels: LabelsTx,
    events: Recorder,
    cancel: CancellationToken,
) {
    let settings = settings(&cfg, port);
    let name = settings.node_name.clone();
    events.node(
        &name,
        EventType::Normal,
        "Starting",
        "Starting kubelet.".into(),
    );
    let nodes: Api<Node> = Api::all(client.clone());

    let registered = if cfg.register {
        match register(&nodes, &settings, &cfg, &mut observer, &cancel).await {
            Some(r) => r,
            None => return,
        }
    } else {
        match wait_for_node(&nodes, &name, &cancel).await {
            Some(node) => register::Registered {
                node,
                created: false,
            },
            None => return,
        }
    };
    let uid = registered.node.metadata.uid.clone().unwrap_or_default();
    publish_labels(&labels, &registered.node);
    let _ = registered_tx.send(());
    // As the kubelet's setters on its freshly built Node: every condition is new at start.
    let initial = registered.node.status.clone().unwrap_or_default();
    for reason in setters::transition_events(&NodeStatus::default(), &initial) {
        events.node(
            &name,
            EventType::Normal,
            reason,
            format!("Node {name} status is now: {reason}"),
        );
    }

    let (store, writer) = reflector::store();
    let watch_cfg = crate::client::watch::config().fields(&format!("metadata.name={name}"));
    let watch = crate::client::watch::with_backoff(
        reflector(writer, watcher(nodes.clone(), watch_cfg)).boxed(),
    )
    .for_each(|event| {
        match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                publish_labels(&labels, &node)
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "node watch failed; retrying"),
        }
        std::future::ready(())
    });

    let heartbeat = heartbeat_timeout(cfg.status_update_frequency, cfg.lease_duration_seconds);
    let keeper = lease::LeaseKeeper::new(
        client,
        lease::Owner {
            name: name.clone(),
            uid,
        },
        cfg.lease_duration_seconds,
    )
    .with_timeout(heartbeat);
    let updater = StatusUpdater::new(
        nodes,
        settings.clone(),
        observer,
        store,
        registered.node,
        registered.created,
        cfg.status_report_frequency,
    )
    .with_timeout(heartbeat)
    .with_events(events);
    info!(node = %name, lease_renew = ?keeper.interval(), status_every = ?cfg.status_update_frequency, "node loops started");
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = watch => {}
        _ = keeper.run(cancel.clone()) => {}
        _ = updater.run(cfg.status_update_frequency, cancel.clone()) => {}
    }
    info!(node = %name, "node loops stopped");
}

/// The time limit of each heartbeat request (Lease renewal, node status): the kubelet's
/// heartbeat client timeout, the shorter of nodeStatusUpdateFrequency and the Lease duration.
pub fn heartbeat_timeout(status_every: Duration, lease_seconds: u32) -> Duration {
    status_every.min(Duration::from_secs(lease_seconds.into()))
}

/// `request`, failed with a timeout error when it takes longer than `limit`: a request caught
/// on a connection that went silent ends, and the next round carries fresh facts.
pub async fn bounded<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("request timed out after {limit:?}").into(),
            ))
        })
}

/// Retrying registration and the Lease: 100 ms doubling to 7 s, as the kubelet's
/// `registerWithAPIServer` and its lease controller's `backoffEnsureLease`.
pub const API_RETRY: Policy =
    Policy::exponential(Duration::from_millis(100), Duration::from_secs(7));

/// Registers until it succeeds, backing off as [`API_RETRY`]; each attempt carries fresh facts
/// (the runtime may have become ready meanwhile). None when cancelled.
async fn register(
    nodes: &Api<Node>,
    settings: &Settings,
    cfg: &NodeConfig,
    observer: &mut Observer,
    cancel: &CancellationToken,
) -> Option<register::Registered> {
    retry(
        API_RETRY,
        cancel,
        observer,
        |observer| async move {
            let facts = observer.observe().await;
            let mut status = NodeStatus::default();
            setters::apply(&mut status, settings, &facts);
            let initial = register::initial_node(
                &settings.node_name,
                &cfg.labels,
                &cfg.register_with_taints,
                status,
            );
            let r = register::try_register(nodes, &initial).await;
            (observer, r)
        },
        |e, step| {
            warn!(error = %e, "unable to register node with the API server; retrying in {step:?}")
        },
    )
    .await
}

/// Without registration (`registerNode: false`), waits for someone else to create the Node.
async fn wait_for_node(nodes: &Api<Node>, name: &str, cancel: &CancellationToken) -> Option<Node> {
    retry(
        API_RETRY,
        cancel,
        &mut (),
        |s| async move { (s, nodes.get(name).await) },
        |e, _| warn!(node = %name, error = %e, "registerNode is off: waiting for the Node to exist"),
    )
    .await
}
