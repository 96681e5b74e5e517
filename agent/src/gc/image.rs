//! The kubelet's image garbage collector (`image_gc_manager.go`): keeps a record of every image
//! (first detected, last used by a container), removes images unused for longer than
//! imageMaximumGCAge, and when the image filesystem's usage reaches imageGCHighThresholdPercent
//! removes unused images, least recently used first, down to imageGCLowThresholdPercent. Never an
//! image a container (running or not) uses, a pinned one, or the runtime's sandbox image.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use bosun_cri::{CriClient, CriError};
use tracing::{debug, info, warn};

use super::image_policy::{
    ImageGcPolicy, ImageRecord, ListedImage, bytes_to_free, detect, eviction_order, format_size,
    to_free, too_old,
};
use crate::events::{EventType, Recorder};

/// Why a collection failed, with the kubelet's messages (they become ImageGCFailed events).
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    /// Listing images or containers, or ImageFsInfo, failed.
    #[error(transparent)]
    Runtime(#[from] CriError),
    /// ImageFsInfo named no filesystem.
    #[error("the runtime reported no image filesystem")]
    NoImageFs,
    /// The image filesystem's mountpoint could not be statfs'd.
    #[error("cannot statfs the image filesystem at {mountpoint}")]
    Statfs {
        /// The mountpoint ImageFsInfo named.
        mountpoint: String,
    },
    /// The image filesystem reports no capacity (also an InvalidDiskCapacity event).
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    /// Images over imageMaximumGCAge could not all be removed.
    #[error(
        "wanted to free images older than {}, encountered errors in image deletion: {errors}",
        crate::config::duration::format(*max_age)
    )]
    OldImages {
        /// imageMaximumGCAge.
        max_age: Duration,
        /// The removals that failed.
        errors: Aggregate,
    },
    /// Images chosen to free space could not all be removed.
    #[error(
        "wanted to free {amount} bytes, but freed {freed} bytes space with errors in image deletion: {errors}"
    )]
    Deletion {
        /// Bytes to free to reach the low threshold.
        amount: u64,
        /// Bytes the removed images took.
        freed: u64,
        /// The removals that failed.
        errors: Aggregate,
    },
    /// Every removable image is gone and usage is still above the low threshold (also a
    /// FreeDiskSpaceFailed event).
    #[error(
        "Insufficient free disk space on the node's image filesystem ({usage}% of {} used). \
         Failed to free sufficient space by deleting unused images (freed {freed} bytes). \
         Investigate disk usage, as it could be used by active images, logs, volumes, or other data.",
        format_size(*capacity)
    )]
    Insufficient {
        /// Usage in percent when the collection began.
        usage: u8,
        /// Capacity of the image filesystem in bytes.
        capacity: u64,
        /// Bytes the removed images took.
        freed: u64,
    },
}

/// Several errors printed as the kubelet's `errors.NewAggregate`: one bare, more in brackets.
#[derive(Debug)]
pub struct Aggregate(pub Vec<CriError>);

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let all: Vec<String> = many.iter().map(|e| e.to_string()).collect();
                write!(f, "[{}]", all.join(", "))
            }
        }
    }
}

/// The image garbage collector of one node.
pub struct ImageGc {
    /// The runtime (image and runtime service).
    pub cri: CriClient,
    /// Thresholds and ages from the configuration.
    pub policy: ImageGcPolicy,
    /// Node events (FreeDiskSpaceFailed, InvalidDiskCapacity).
    pub events: Recorder,
    /// The node's name, for its events.
    pub node_name: String,
    /// What the collector knows of each image, by id.
    pub records: HashMap<String, ImageRecord>,
    /// The runtime's sandbox (pause) image, read once from its verbose status.
    pub sandbox_image: Option<String>,
}

impl ImageGc {
    /// A collector with no records yet.
    pub fn new(cri: CriClient, policy: ImageGcPolicy, events: Recorder, node_name: String) -> Self {
        ImageGc {
            cri,
            policy,
            events,
            node_name,
            records: HashMap::new(),
            sandbox_image: None,
        }
    }

    /// One collection (the kubelet's `GarbageCollect`); `began` is when the collector started.
    pub async fn collect(&mut self, began: SystemTime) -> Result<(), ImageGcError> {
        let free_time = SystemTime::now();
        let in_use = self.detect(free_time).await?;
        let mut order = eviction_order(&self.records, &in_use);

        let mut errors = Vec::new();
        for id in too_old(&order, &self.policy, free_time, began) {
            match self.remove(&id, "age").await {
                Ok(()) => order.retain(|(i, _)| *i != id),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ImageGcError::OldImages {
                max_age: self.policy.max_age.unwrap_or_default(),
                errors: Aggregate(errors),
            });
        }

        let (capacity, available) = self.image_fs().await?;
        if capacity == 0 {
            let e = ImageGcError::InvalidCapacity;
            self.event("InvalidDiskCapacity", e.to_string());
            return Err(e);
        }
        let (usage, amount) = bytes_to_free(capacity, available, &self.policy);
        let Some(amount) = amount else {
            return Ok(());
        };
        info!(
            usage,
            high_threshold = self.policy.high_threshold_percent,
            amount_to_free = amount,
            low_threshold = self.policy.low_threshold_percent,
            "Disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
        );
        let mut freed = 0u64;
        for (id, size) in to_free(&order, amount, &self.policy, free_time) {
            match self.remove(&id, "space").await {
                Ok(()) => freed += size,
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ImageGcError::Deletion {
                amount,
                freed,
                errors: Aggregate(errors),
            });
        }
        if freed < amount {
            let e = ImageGcError::Insufficient {
                usage,
                capacity,
                freed,
            };
            self.event("FreeDiskSpaceFailed", e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Removes every unused image past imageMinimumGCAge, least recently used first (the
    /// kubelet's DeleteUnusedImages: the eviction manager's node-level reclaim); returns the
    /// bytes freed.
    pub async fn delete_unused(&mut self) -> Result<u64, ImageGcError> {
        let free_time = SystemTime::now();
        let in_use = self.detect(free_time).await?;
        let order = eviction_order(&self.records, &in_use);
        let (mut freed, mut errors) = (0u64, Vec::new());
        for (id, size) in to_free(&order, u64::MAX, &self.policy, free_time) {
            match self.remove(&id, "space").await {
                Ok(()) => freed += size,
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ImageGcError::Deletion {
                amount: u64::MAX,
                freed,
                errors: Aggregate(errors),
            });
        }
        Ok(freed)
    }

    /// Lists images and containers, updates the records; returns the ids of images in use.
    async fn detect(&mut self, detect_time: SystemTime) -> Result<HashSet<String>, ImageGcError> {
        if self.sandbox_image.is_none() {
            self.sandbox_image = sandbox_image(&self.cri).await;
        }
        let (images, containers) =
            tokio::try_join!(self.cri.list_images(), self.cri.list_containers(None))?;
        // image_id where the runtime sets it (CRI 1.30), else image_ref, as the kubelet's
        // toKubeContainer: containerd 1.x puts the image id in image_ref.
        let in_use: HashSet<String> = containers
            .iter()
            .map(|c| {
                if c.image_id.is_empty() {
                    c.image_ref.clone()
                } else {
                    c.image_id.clone()
                }
            })
            .filter(|r| !r.is_empty())
            .collect();
        let sandbox = self.sandbox_image.as_deref();
        let listed: Vec<ListedImage> = images
            .iter()
            .map(|i| ListedImage {
                id: i.id.clone(),
                size: i.size,
                pinned: i.pinned
                    || sandbox.is_some_and(|s| {
                        i.repo_tags.iter().any(|t| t == s) || i.repo_digests.iter().any(|d| d == s)
                    }),
            })
            .collect();
        detect(
            &mut self.records,
            &listed,
            &in_use,
            detect_time,
            SystemTime::now(),
        );
        Ok(in_use)
    }

    /// Capacity and available bytes of the image filesystem: statfs of the mountpoint CRI
    /// ImageFsInfo names (as cadvisor, which the kubelet reads them from).
    async fn image_fs(&self) -> Result<(u64, u64), ImageGcError> {
        let info = self.cri.image_fs_info().await?;
        let mountpoint = info
            .image_filesystems
            .first()
            .and_then(|f| f.fs_id.as_ref())
            .map(|id| id.mountpoint.clone())
            .ok_or(ImageGcError::NoImageFs)?;
        let cap = crate::stats::fs::capacity(Path::new(&mountpoint))
            .ok_or(ImageGcError::Statfs { mountpoint })?;
        Ok((cap.capacity, cap.available))
    }

    async fn remove(&mut self, id: &str, reason: &str) -> Result<(), CriError> {
        let size = self.records.get(id).map(|r| r.size).unwrap_or(0);
        info!(image.id = %id, size, reason, "Removing image to free bytes");
        match self.cri.remove_image(id).await {
            Ok(()) => {
                self.records.remove(id);
                Ok(())
            }
            Err(e) => {
                warn!(image.id = %id, error = %e, "cannot remove image");
                Err(e)
            }
        }
    }

    fn event(&self, reason: &str, message: String) {
        self.events
            .node(&self.node_name, EventType::Warning, reason, message);
    }
}

/// The runtime's sandbox image from its verbose status (containerd: `config.sandboxImage`).
async fn sandbox_image(cri: &CriClient) -> Option<String> {
    let st = cri.status(true).await.ok()?;
    let config: serde_json::Value = serde_json::from_str(st.info.get("config")?).ok()?;
    let image = config.get("sandboxImage")?.as_str()?.to_string();
    debug!(image = %image, "the runtime's sandbox image is never collected");
    Some(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(message: &str) -> CriError {
        CriError::Status {
            op: "RemoveImage",
            code: bosun_cri::Code::Unknown,
            message: message.into(),
        }
    }

    #[test]
    fn errors_read_as_the_kubelets() {
        let cases = [
            (
                ImageGcError::InvalidCapacity,
                "invalid capacity 0 on image filesystem".to_string(),
            ),
            (
                ImageGcError::Insufficient {
                    usage: 91,
                    capacity: 128 * 1048576,
                    freed: 8388608,
                },
                "Insufficient free disk space on the node's image filesystem (91% of 128.0 MiB \
                 used). Failed to free sufficient space by deleting unused images (freed 8388608 \
                 bytes). Investigate disk usage, as it could be used by active images, logs, \
                 volumes, or other data."
                    .to_string(),
            ),
            (
                ImageGcError::OldImages {
                    max_age: Duration::from_secs(3600),
                    errors: Aggregate(vec![failed("busy")]),
                },
                format!(
                    "wanted to free images older than 1h0m0s, encountered errors in image \
                     deletion: {}",
                    failed("busy")
                ),
            ),
            (
                ImageGcError::Deletion {
                    amount: 100,
                    freed: 40,
                    errors: Aggregate(vec![failed("a"), failed("b")]),
                },
                format!(
                    "wanted to free 100 bytes, but freed 40 bytes space with errors in image \
                     deletion: [{}, {}]",
                    failed("a"),
                    failed("b")
                ),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
