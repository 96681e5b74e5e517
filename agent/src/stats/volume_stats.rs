//! The usage of pods' CSI volumes, as the kubelet's volumeStatCalculator with metricsCsi: for
//! each pod with published CSI volumes, at once for a pod not measured yet, then every
//! `volumeStatsAggPeriod` stretched by up to as much again at random (JitterUntil with factor
//! 1.0), NodeGetCapabilities and, when the driver has GET_VOLUME_STATS,
//! NodeGetVolumeStats(handle, publish path). A driver without the capability gives no stats (the
//! kubelet's NotSupported); one that fails or is not registered is skipped until the next
//! period. Runs beside the sampler, which reads the latest figures; a scrape never calls a
//! driver.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::summary::{FsStats, PvcReference, VolumeStats};
use crate::csi::client::VolumeUsage;
use crate::volume::csi::{CsiVolumes, Published};

/// How often the calculator looks for pods due a measurement.
const TICK: Duration = Duration::from_secs(1);

/// One pod's measured CSI volumes.
#[derive(Clone, Debug)]
struct Measured {
    /// When the pod is due again.
    next: Instant,
    stats: Vec<VolumeStats>,
}

/// The latest CSI volume stats by pod UID, shared by the calculator and the sampler.
#[derive(Clone, Debug, Default)]
pub struct CsiVolumeStats(Arc<RwLock<HashMap<String, Measured>>>);

impl CsiVolumeStats {
    /// The latest stats of pod `uid`'s CSI volumes (none before its first measurement).
    pub fn of(&self, uid: &str) -> Vec<VolumeStats> {
        self.0
            .read()
            .ok()
            .and_then(|m| m.get(uid).map(|e| e.stats.clone()))
            .unwrap_or_default()
    }

    /// Pods of `published` due a measurement at `now`, sorted; forgets pods no longer there.
    fn due(
        &self,
        published: &HashMap<String, HashMap<String, Published>>,
        now: Instant,
    ) -> Vec<String> {
        let Ok(mut m) = self.0.write() else {
            return vec![];
        };
        m.retain(|uid, _| published.contains_key(uid));
        let mut due: Vec<String> = published
            .keys()
            .filter(|uid| m.get(*uid).is_none_or(|e| now >= e.next))
            .cloned()
            .collect();
        due.sort();
        due
    }

    /// Records pod `uid`'s stats, due again after `wait`.
    fn store(&self, uid: &str, stats: Vec<VolumeStats>, wait: Duration) {
        if let Ok(mut m) = self.0.write() {
            let next = Instant::now() + wait;
            m.insert(uid.to_string(), Measured { next, stats });
        }
    }
}

/// Measures pods' CSI volumes into `out` every `period` until `cancel`.
pub async fn run(
    csi: CsiVolumes,
    out: CsiVolumeStats,
    period: Duration,
    cancel: CancellationToken,
) {
    loop {
        let published = csi.published();
        for uid in out.due(&published, Instant::now()) {
            let Some(volumes) = published.get(&uid) else {
                continue;
            };
            let stats = tokio::select! {
                _ = cancel.cancelled() => return,
                s = measure_pod(&csi, &uid, volumes) => s,
            };
            let wait = period.mul_f64(1.0 + crate::backoff::jitter());
            out.store(&uid, stats, wait);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One pod's CSI volumes that the drivers measure, sorted by name.
async fn measure_pod(
    csi: &CsiVolumes,
    uid: &str,
    volumes: &HashMap<String, Published>,
) -> Vec<VolumeStats> {
    let mut out = Vec::new();
    for (name, v) in volumes {
        let Some(client) = csi.drivers.client(&v.driver) else {
            debug!(pod.uid = %uid, volume = %name, driver = %v.driver, "volume stats: driver not registered");
            continue;
        };
        let time = Time(k8s_openapi::jiff::Timestamp::now());
        let usage = match client.node_get_capabilities().await {
            Ok(caps) if !caps.volume_stats => continue,
            Ok(_) => client.node_get_volume_stats(&v.handle, &v.path).await,
            Err(e) => Err(e),
        };
        match usage {
            Ok(u) => out.push(volume_stats(name, v, u, time)),
            Err(e) => {
                debug!(pod.uid = %uid, volume = %name, error = %e, "failed to calculate volume metrics")
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A volume's entry in the pod's `volume` list (parsePodVolumeStats): every figure set, zero
/// where the driver gave none, named after the pod's volume, with the claim for a PVC-backed or
/// generic ephemeral volume.
fn volume_stats(name: &str, v: &Published, u: VolumeUsage, time: Time) -> VolumeStats {
    let n = |x: i64| Some(x.max(0) as u64);
    let (capacity, available, used) = u.bytes;
    let (inodes, inodes_free, inodes_used) = u.inodes.unwrap_or_default();
    VolumeStats {
        fs: FsStats {
            time,
            available_bytes: n(available),
            capacity_bytes: n(capacity),
            used_bytes: n(used),
            inodes_free: n(inodes_free),
            inodes: n(inodes),
            inodes_used: n(inodes_used),
        },
        name: name.to_string(),
        pvc_ref: v.claim.as_ref().map(|c| PvcReference {
            name: c.clone(),
            namespace: v.namespace.clone(),
        }),
        volume_health_stats: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(claim: Option<&str>) -> Published {
        Published {
            path: "/p".into(),
            driver: "d".into(),
            handle: "h".into(),
            namespace: "ns".into(),
            claim: claim.map(str::to_string),
            attachable: false,
        }
    }

    #[test]
    fn entries_are_the_kubelets() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let u = VolumeUsage {
            bytes: (100, 60, 40),
            inodes: Some((10, 7, 3)),
        };
        let s = volume_stats("data", &published(Some("claim")), u, t.clone());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "1970-01-01T00:00:00Z",
                "availableBytes": 60, "capacityBytes": 100, "usedBytes": 40,
                "inodesFree": 7, "inodes": 10, "inodesUsed": 3,
                "name": "data",
                "pvcRef": {"name": "claim", "namespace": "ns"},
            })
        );
        // An inline volume has no claim; a driver without inode figures reports zeros; a
        // negative figure is no wrap-around.
        let u = VolumeUsage {
            bytes: (100, -1, 40),
            inodes: None,
        };
        let s = volume_stats("inline", &published(None), u, t);
        assert_eq!(s.pvc_ref, None);
        assert_eq!(
            (s.fs.available_bytes, s.fs.inodes, s.fs.inodes_used),
            (Some(0), Some(0), Some(0))
        );
    }

    #[test]
    fn pods_are_due_once_per_period_and_forgotten_when_gone() {
        let out = CsiVolumeStats::default();
        let vols = HashMap::from([("v".to_string(), published(None))]);
        let mut pods = HashMap::from([("a".to_string(), vols.clone()), ("b".to_string(), vols)]);
        let now = Instant::now();
        assert_eq!(
            out.due(&pods, now),
            ["a", "b"],
            "never measured: due at once"
        );
        out.store("a", vec![], Duration::from_secs(60));
        assert_eq!(out.due(&pods, now), ["b"], "a measured, due in a minute");
        let later = now + Duration::from_secs(61);
        assert_eq!(out.due(&pods, later), ["a", "b"], "a minute later");
        assert!(out.of("a").is_empty() && out.of("b").is_empty());
        pods.remove("a");
        out.due(&pods, now);
        assert!(out.0.read().unwrap().get("a").is_none(), "a forgotten");
    }
}
