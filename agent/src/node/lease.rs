//! The node Lease `kube-node-lease/<node>`: the heartbeat, renewed every quarter of its duration
//! (10 s of 40 s), as the kubelet's lease controller: update the last Lease seen; on a conflict
//! read it again; when it is gone, create it; owned by the Node so it goes when the Node goes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bounded;
use crate::backoff::retry;

/// The namespace of node Leases.
pub const NAMESPACE: &str = "kube-node-lease";
/// Attempts per renewal before waiting (the kubelet's maxUpdateRetries).
const MAX_UPDATE_RETRIES: usize = 5;

/// The Node the Lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Node name: the Lease's name and holder.
    pub name: String,
    /// Node UID, for the owner reference.
    pub uid: String,
}

/// `base` (or a new Lease) held by the node, renewed at `now`, with the owner reference set when
/// it has none.
pub fn renewed(
    base: Option<&Lease>,
    owner: &Owner,
    duration_seconds: i32,
    now: Timestamp,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(owner.name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(owner.name.clone());
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    if lease
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty)
        && !owner.uid.is_empty()
    {
        lease.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            ..Default::default()
        }]);
    }
    lease
}

/// Keeps the node's Lease renewed.
pub struct LeaseKeeper {
    api: Api<Lease>,
    owner: Owner,
    duration_seconds: i32,
    latest: Option<Lease>,
    timeout: Duration,
}

fn status_of(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

impl LeaseKeeper {
    /// A keeper for `owner`'s Lease of `duration_seconds`.
    pub fn new(client: kube::Client, owner: Owner, duration_seconds: u32) -> LeaseKeeper {
        LeaseKeeper {
            api: Api::namespaced(client, NAMESPACE),
            owner,
            duration_seconds: duration_seconds.min(i32::MAX as u32) as i32,
            latest: None,
            timeout: Duration::from_secs(duration_seconds.into()),
        }
    }

    /// Each request fails after `timeout` (the kubelet's heartbeat client timeout; the Lease
    /// duration until set).
    pub fn with_timeout(mut self, timeout: Duration) -> LeaseKeeper {
        self.timeout = timeout;
        self
    }

    /// The renew interval: a quarter of the duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.duration_seconds) * 0.25)
    }

    /// The last Lease written.
    pub fn latest(&self) -> Option<&Lease> {
        self.latest.as_ref()
    }

    /// Reads the Lease, creating it when it does not exist.
    async fn ensure(&mut self) -> Result<Option<Lease>, kube::Error> {
        match bounded(self.timeout, self.api.get(&self.owner.name)).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if status_of(&e).is_some_and(|s| s.is_not_found()) => {
                let lease = renewed(None, &self.owner, self.duration_seconds, now());
                let params = PostParams::default();
                let create = self.api.create(&params, &lease);
                let created = bounded(self.timeout, create).await?;
                info!(node = %self.owner.name, "node lease created");
                self.latest = Some(created);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// One renewal: update the latest Lease; re-read it on a conflict, create it when gone.
    pub async fn renew(&mut self) -> Result<(), kube::Error> {
        let mut base = match self.latest.clone() {
            Some(l) => l,
            None => match self.ensure().await? {
                Some(l) => l,
                None => return Ok(()), // just created, renewed now
            },
        };
        let mut last_err = None;
        for _ in 0..MAX_UPDATE_RETRIES {
            let lease = renewed(Some(&base), &self.owner, self.duration_seconds, now());
            let params = PostParams::default();
            let replace = self.api.replace(&self.owner.name, &params, &lease);
            match bounded(self.timeout, replace).await {
                Ok(l) => {
                    debug!(node = %self.owner.name, "node lease renewed");
                    self.latest = Some(l);
                    return Ok(());
                }
                Err(e) => {
                    let s = status_of(&e);
                    if s.is_some_and(|s| s.is_conflict()) {
                        base = match self.ensure().await? {
                            Some(l) => l,
                            None => return Ok(()),
                        };
                    } else if s.is_some_and(|s| s.is_not_found()) {
                        self.latest = None;
                        return self.ensure().await.map(|_| ());
                    } else {
                        // Transport errors and server errors: wait before trying again.
                        self.latest = None;
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Renews every [`Self::interval`] until cancelled, retrying failures with back-off
    /// ([`super::API_RETRY`], as the kubelet's lease controller).
    pub async fn run(mut self, cancel: CancellationToken) {
        let interval = self.interval();
        let node = self.owner.name.clone();
        loop {
            let renewed = retry(
                super::API_RETRY,
                &cancel,
                &mut self,
                |keeper| async move {
                    let r = keeper.renew().await;
                    (keeper, r)
                },
                |e, delay| warn!(node = %node, error = %e, "failed to renew node lease; retrying in {delay:?}"),
            )
            .await;
            if renewed.is_none() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Now, to the microsecond (a Lease's renewTime is a MicroTime).
fn now() -> Timestamp {
    let t = Timestamp::now();
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn owner() -> Owner {
        Owner {
            name: "n1".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn new_lease() {
        let t = Timestamp::from_second(1000).unwrap();
        let l = renewed(None, &owner(), 40, t);
        assert_eq!(l.metadata.name.as_deref(), Some("n1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some(NAMESPACE));
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(t)));
        let o = &l.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("v1", "Node", "n1", "u1")
        );
    }

    /// A renewal whose request the API server never answers (a connection caught by a network
    /// that drops packets) fails after the heartbeat timeout, as the kubelet's heartbeat
    /// client's, so the next one is made with a fresh renewTime instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_never_answered_fails_after_the_heartbeat_timeout() {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let svc = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            count.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<http::Response<kube::client::Body>, Infallible>>()
        });
        let client = kube::Client::new(svc, "default");
        let mut keeper =
            LeaseKeeper::new(client, owner(), 40).with_timeout(Duration::from_secs(10));
        keeper.latest = Some(renewed(
            None,
            &owner(),
            40,
            Timestamp::from_second(1).unwrap(),
        ));
        let started = tokio::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), keeper.renew()).await;
        let err = r.expect("the renewal ends").expect_err("and fails");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(err.to_string().contains("timed out after 10s"), "{err}");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(
            keeper.latest.is_none(),
            "the next renewal reads the Lease again"
        );
    }

    #[test]
    fn renewal_keeps_the_object_and_its_owner() {
        let t1 = Timestamp::from_second(1000).unwrap();
        let t2 = Timestamp::from_second(1010).unwrap();
        let mut base = renewed(None, &owner(), 40, t1);
        base.metadata.resource_version = Some("7".into());
        base.metadata.owner_references.as_mut().unwrap()[0].uid = "older".into();
        let l = renewed(Some(&base), &owner(), 40, t2);
        assert_eq!(l.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(l.spec.unwrap().renew_time, Some(MicroTime(t2)));
        assert_eq!(l.metadata.owner_references.unwrap()[0].uid, "older");
        // Without a known node UID no owner is set (the kubelet leaves it for a later renewal).
        let none = Owner {
            uid: String::new(),
            ..owner()
        };
        assert_eq!(renewed(None, &none, 40, t1).metadata.owner_references, None);
    }
}
