//! The benchmark's pods and one watch over their namespace that timestamps, as events arrive,
//! when each pod first shows Running with Ready=True and when it is gone from the API.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::floor::COMMAND;
use crate::pod::{Container, PodBuilder};

/// A benchmark pod bound to `node`: one busybox container that exits at once on SIGTERM, as a
/// user would write it (default service account token, service links, BestEffort).
pub fn pod(name: &str, node: &str) -> Pod {
    PodBuilder::new(name)
        .without_namespace()
        .label("app", "bench")
        .node(node)
        .grace(10)
        .service_account_token()
        .container(Container::exec("main", COMMAND))
        .build()
}

fn running_and_ready(p: &Pod) -> bool {
    let Some(st) = p.status.as_ref() else {
        return false;
    };
    st.phase.as_deref() == Some("Running")
        && st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[derive(Default)]
struct Seen {
    first: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
    /// When each pod was first seen bound to a node (spec.nodeName set).
    bound: HashMap<String, Instant>,
    present: HashSet<String>,
    gone: HashMap<String, Instant>,
    failed: HashMap<String, String>,
    failed_at: HashMap<String, Instant>,
}

/// Watches every pod of a namespace; stopped when dropped.
pub struct Tracker {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Starts watching `api`'s namespace and waits for the initial list.
    pub async fn start(api: Api<Pod>) -> anyhow::Result<Tracker> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut synced = Some(synced_tx);
                let mut stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(ev) = stream.next().await {
                    let now = Instant::now();
                    let Ok(ev) = ev else { continue };
                    let mut s = seen.lock().expect("tracker lock");
                    match ev {
                        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            s.present.insert(name.clone());
                            s.first.entry(name.clone()).or_insert(now);
                            if p.spec.as_ref().is_some_and(|sp| sp.node_name.is_some()) {
                                s.bound.entry(name.clone()).or_insert(now);
                            }
                            s.gone.remove(&name);
                            if running_and_ready(&p) {
                                s.ready.entry(name.clone()).or_insert(now);
                            }
                            let phase = p.status.as_ref().and_then(|st| st.phase.as_deref());
                            if phase == Some("Failed") {
                                s.failed_at.entry(name.clone()).or_insert(now);
                                s.failed.insert(name, format!("{:?}", p.status));
                            }
                        }
                        watcher::Event::Delete(p) => {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            s.present.remove(&name);
                            s.gone.insert(name, now);
                        }
                        watcher::Event::InitDone => {
                            if let Some(tx) = synced.take() {
                                let _ = tx.send(());
                            }
                        }
                        watcher::Event::Init => {}
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(30), synced_rx).await??;
        Ok(Tracker { seen, task })
    }

    /// Waits until every pod of `names` has shown Running and Ready; when each first did.
    pub async fn ready(&self, names: &[String], timeout: Duration) -> anyhow::Result<Vec<Instant>> {
        self.wait(timeout, "Running and Ready", |s| {
            if let Some((n, why)) = names.iter().find_map(|n| s.failed.get(n).map(|w| (n, w))) {
                return Err(anyhow::anyhow!("pod {n} failed: {why}"));
            }
            Ok(names
                .iter()
                .map(|n| s.ready.get(n).copied())
                .collect::<Option<Vec<_>>>())
        })
        .await
    }

    /// Waits until pod `name` has shown phase Failed; when it first did, and its status.
    pub async fn failed(&self, name: &str, timeout: Duration) -> anyhow::Result<(Instant, String)> {
        self.wait(timeout, "Failed", |s| {
            Ok(s.failed_at
                .get(name)
                .map(|at| (*at, s.failed.get(name).cloned().unwrap_or_default())))
        })
        .await
    }

    /// Waits until no pod of `names` exists any more; when each went.
    pub async fn gone(&self, names: &[String], timeout: Duration) -> anyhow::Result<Vec<Instant>> {
        self.wait(timeout, "gone", |s| {
            Ok(names
                .iter()
                .map(|n| {
                    (!s.present.contains(n))
                        .then(|| s.gone.get(n).copied())
                        .flatten()
                })
                .collect::<Option<Vec<_>>>())
        })
        .await
    }

    /// For every pod seen both created and Running and Ready: from its first watch event (the
    /// create, as a controller's pods are seen) to Ready, ms. Pods present at the initial list
    /// count from then.
    pub fn startups_ms(&self) -> Vec<f64> {
        let s = self.seen.lock().expect("tracker lock");
        to_ready_ms(&s.first, &s.ready)
    }

    /// For every pod seen both bound to a node and Running and Ready: from the first watch event
    /// that showed it bound to Ready, ms: the agent's share of its startup (the scheduler's is
    /// before).
    pub fn bound_to_ready_ms(&self) -> Vec<f64> {
        let s = self.seen.lock().expect("tracker lock");
        to_ready_ms(&s.bound, &s.ready)
    }

    /// How many pods exist now, and how many of all seen have been Running and Ready.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.seen.lock().expect("tracker lock");
        (s.present.len(), s.ready.len())
    }

    async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Seen) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(&self.seen.lock().expect("tracker lock"))? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("pods not {what} after {timeout:?}");
            }
            // The instants come from the watch task; this only decides when to look again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// For every pod in both maps: from its instant in `from` to its instant in `ready`, ms.
fn to_ready_ms(from: &HashMap<String, Instant>, ready: &HashMap<String, Instant>) -> Vec<f64> {
    ready
        .iter()
        .filter_map(|(n, r)| {
            from.get(n)
                .map(|f| r.saturating_duration_since(*f).as_secs_f64() * 1e3)
        })
        .collect()
}
