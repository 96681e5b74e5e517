//! Which images to remove: the kubelet's image GC policy (`image_gc_manager.go`) as pure
//! functions over the records it keeps (first detected, last used, size, pinned).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// The kubelet's `ImageGCPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// imageGCHighThresholdPercent: usage at or above which images are freed.
    pub high_threshold_percent: u8,
    /// imageGCLowThresholdPercent: usage freed down to.
    pub low_threshold_percent: u8,
    /// imageMinimumGCAge: an image detected more recently is never removed.
    pub min_age: Duration,
    /// imageMaximumGCAge: an image unused for longer is removed whatever the usage; None: never.
    pub max_age: Option<Duration>,
}

/// What the kubelet remembers of an image (`imageRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// When this agent first saw the image.
    pub first_detected: SystemTime,
    /// When a container last used it; the epoch when never.
    pub last_used: SystemTime,
    /// Size in bytes as the runtime reports it.
    pub size: u64,
    /// Pinned by the runtime (the sandbox image, typically): never removed.
    pub pinned: bool,
}

/// An image as the runtime lists it, reduced to what the records need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedImage {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Pinned by the runtime, or the runtime's sandbox image.
    pub pinned: bool,
}

/// Updates `records` from a listing (the kubelet's `detectImages`): new images get
/// `first_detected = detect_time`, images used by a container get `last_used = now`, size and
/// pinned are refreshed, and images the runtime no longer has are forgotten.
pub fn detect(
    records: &mut HashMap<String, ImageRecord>,
    images: &[ListedImage],
    in_use: &HashSet<String>,
    detect_time: SystemTime,
    now: SystemTime,
) {
    for img in images {
        let r = records.entry(img.id.clone()).or_insert(ImageRecord {
            first_detected: detect_time,
            last_used: SystemTime::UNIX_EPOCH,
            size: 0,
            pinned: false,
        });
        if in_use.contains(&img.id) {
            r.last_used = now;
        }
        r.size = img.size;
        r.pinned = img.pinned;
    }
    let current: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    records.retain(|id, _| current.contains(id.as_str()));
}

/// The images that may be removed, least recently used first, then first detected first (the
/// kubelet's `imagesInEvictionOrder`): never one in use or pinned.
pub fn eviction_order(
    records: &HashMap<String, ImageRecord>,
    in_use: &HashSet<String>,
) -> Vec<(String, ImageRecord)> {
    let mut v: Vec<(String, ImageRecord)> = records
        .iter()
        .filter(|(id, r)| !in_use.contains(*id) && !r.pinned)
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect();
    v.sort_by(|a, b| {
        a.1.last_used
            .cmp(&b.1.last_used)
            .then(a.1.first_detected.cmp(&b.1.first_detected))
            .then(a.0.cmp(&b.0))
    });
    v
}

/// The images unused for longer than `max_age` (the kubelet's `freeOldImages`); none while the
/// collector itself has not run for `max_age` yet (`began`), or without a maximum age.
pub fn too_old(
    order: &[(String, ImageRecord)],
    policy: &ImageGcPolicy,
    free_time: SystemTime,
    began: SystemTime,
) -> Vec<String> {
    let Some(max_age) = policy.max_age else {
        return Vec::new();
    };
    if elapsed(began, free_time) <= max_age {
        return Vec::new();
    }
    order
        .iter()
        .filter(|(_, r)| elapsed(r.last_used, free_time) > max_age)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The usage of the image filesystem in percent and the bytes to free to reach the low
/// threshold, when usage is at or above the high one (the kubelet's `GarbageCollect`).
pub fn bytes_to_free(capacity: u64, available: u64, policy: &ImageGcPolicy) -> (u8, Option<u64>) {
    if capacity == 0 {
        return (0, None);
    }
    let available = available.min(capacity);
    let usage = 100 - (available as u128 * 100 / capacity as u128) as u64;
    if usage < u64::from(policy.high_threshold_percent) {
        return (usage as u8, None);
    }
    let target = capacity as u128 * (100 - u128::from(policy.low_threshold_percent)) / 100;
    let amount = target.saturating_sub(available as u128) as u64;
    (usage as u8, Some(amount))
}

/// The images to remove, in order, to free `amount` bytes (the kubelet's `freeSpace`): an image
/// used at `free_time` or later, or detected less than `min_age` before it, is skipped; stops
/// once the sizes removed reach `amount`.
pub fn to_free(
    order: &[(String, ImageRecord)],
    amount: u64,
    policy: &ImageGcPolicy,
    free_time: SystemTime,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut freed = 0u64;
    for (id, r) in order {
        if r.last_used >= free_time {
            continue;
        }
        if elapsed(r.first_detected, free_time) < policy.min_age {
            continue;
        }
        out.push((id.clone(), r.size));
        freed = freed.saturating_add(r.size);
        if freed >= amount {
            break;
        }
    }
    out
}

/// The kubelet's `formatSize`: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("TiB", 1099511627776.0),
        ("GiB", 1073741824.0),
        ("MiB", 1048576.0),
        ("KiB", 1024.0),
    ];
    let b = bytes as f64;
    for (unit, size) in UNITS {
        if b >= size {
            return format!("{:.1} {unit}", b / size);
        }
    }
    format!("{bytes} B")
}

fn elapsed(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    const POLICY: ImageGcPolicy = ImageGcPolicy {
        high_threshold_percent: 85,
        low_threshold_percent: 80,
        min_age: Duration::from_secs(120),
        max_age: None,
    };

    fn rec(first: u64, last_used: Option<u64>, size: u64) -> ImageRecord {
        ImageRecord {
            first_detected: t(first),
            last_used: last_used.map(t).unwrap_or(SystemTime::UNIX_EPOCH),
            size,
            pinned: false,
        }
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detection_records_first_sight_use_and_forgets_the_gone() {
        let mut records = HashMap::new();
        let listed = |ids: &[&str]| -> Vec<ListedImage> {
            ids.iter()
                .map(|id| ListedImage {
                    id: id.to_string(),
                    size: 10,
                    pinned: *id == "pause",
                })
                .collect()
        };
        detect(
            &mut records,
            &listed(&["a", "b", "pause"]),
            &set(&["a"]),
            t(0),
            t(0),
        );
        detect(&mut records, &listed(&["a", "b"]), &set(&[]), t(60), t(60));
        assert_eq!(records["a"].first_detected, t(0));
        assert_eq!(records["a"].last_used, t(0));
        assert_eq!(records["b"].last_used, SystemTime::UNIX_EPOCH);
        assert!(!records.contains_key("pause"));
    }

    #[test]
    fn least_recently_used_first_never_in_use_or_pinned() {
        let mut pinned = rec(0, None, 1);
        pinned.pinned = true;
        let records = HashMap::from([
            ("used-late".to_string(), rec(0, Some(50), 1)),
            ("never-used-new".to_string(), rec(30, None, 1)),
            ("never-used-old".to_string(), rec(10, None, 1)),
            ("used-early".to_string(), rec(0, Some(20), 1)),
            ("running".to_string(), rec(0, Some(60), 1)),
            ("pause".to_string(), pinned),
        ]);
        let order: Vec<String> = eviction_order(&records, &set(&["running"]))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            order,
            [
                "never-used-old",
                "never-used-new",
                "used-early",
                "used-late"
            ]
        );
    }

    /// The kubelet's `GarbageCollect` threshold arithmetic (`TestGarbageCollect*` in
    /// image_gc_manager_test.go): (capacity, available, high, low) -> (usage, bytes to free).
    #[test]
    fn usage_at_or_over_the_high_threshold_frees_down_to_the_low_one() {
        type Case = (&'static str, u64, u64, u8, u8, (u8, Option<u64>));
        let cases: &[Case] = &[
            ("below high", 100, 16, 85, 80, (84, None)),
            ("at high: free to low", 100, 15, 85, 80, (85, Some(5))),
            ("over high", 1000, 50, 85, 80, (95, Some(150))),
            ("full", 1000, 0, 85, 80, (100, Some(200))),
            (
                "usage rounds down as Go's",
                1000,
                151,
                85,
                80,
                (85, Some(49)),
            ),
            (
                "available over capacity is capacity",
                100,
                200,
                85,
                80,
                (0, None),
            ),
            ("no capacity: nothing to decide", 0, 0, 85, 80, (0, None)),
            ("high 100: only a full disk", 100, 1, 100, 80, (99, None)),
            ("high 0: always, down to low", 100, 90, 0, 0, (10, Some(10))),
            (
                "a 250 GB disk at 87%",
                250_000_000_000,
                32_500_000_000,
                85,
                80,
                (87, Some(17_500_000_000)),
            ),
        ];
        for (name, capacity, available, high, low, want) in cases {
            let policy = ImageGcPolicy {
                high_threshold_percent: *high,
                low_threshold_percent: *low,
                ..POLICY
            };
            assert_eq!(
                bytes_to_free(*capacity, *available, &policy),
                *want,
                "{name}"
            );
        }
    }

    /// The kubelet's `freeSpace`: which images go, in order, for an amount at time 300.
    #[test]
    fn freeing_skips_young_and_just_used_images_and_stops_when_enough() {
        let order = vec![
            ("young".to_string(), rec(250, None, 100)),
            ("a".to_string(), rec(0, Some(10), 30)),
            ("just-used".to_string(), rec(0, Some(300), 100)),
            ("b".to_string(), rec(0, Some(20), 30)),
            ("c".to_string(), rec(0, Some(30), 30)),
        ];
        let cases: &[(&str, u64, Duration, &[&str])] = &[
            ("one is enough", 30, POLICY.min_age, &["a"]),
            ("stops once enough", 50, POLICY.min_age, &["a", "b"]),
            (
                "all eligible, still short",
                500,
                POLICY.min_age,
                &["a", "b", "c"],
            ),
            (
                "no minimum age: the young too",
                50,
                Duration::ZERO,
                &["young"],
            ),
            ("nothing to free: still one", 0, POLICY.min_age, &["a"]),
            (
                "minimum age over everything",
                50,
                Duration::from_secs(1000),
                &[],
            ),
        ];
        for (name, amount, min_age, want) in cases {
            let policy = ImageGcPolicy {
                min_age: *min_age,
                ..POLICY
            };
            let got: Vec<String> = to_free(&order, *amount, &policy, t(300))
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(got, *want, "{name}");
        }
    }

    /// The kubelet's `freeOldImages`: (max age, collector began, images unused for longer).
    #[test]
    fn maximum_age_applies_only_once_the_collector_ran_that_long() {
        let order = vec![
            ("stale".to_string(), rec(0, Some(0), 1)),
            ("never-used".to_string(), rec(280, None, 1)),
            ("fresh".to_string(), rec(0, Some(250), 1)),
        ];
        let cases: &[(&str, Option<u64>, u64, &[&str])] = &[
            ("no maximum age", None, 0, &[]),
            ("unused too long", Some(100), 0, &["stale", "never-used"]),
            ("collector younger than the age", Some(100), 250, &[]),
            ("collector exactly that old", Some(100), 200, &[]),
        ];
        for (name, max_age, began, want) in cases {
            let policy = ImageGcPolicy {
                max_age: max_age.map(Duration::from_secs),
                ..POLICY
            };
            assert_eq!(too_old(&order, &policy, t(300), t(*began)), *want, "{name}");
        }
    }

    /// The threshold path end to end over the records: detect, order, amount, removals.
    #[test]
    fn over_the_threshold_the_least_recently_used_go_first_in_use_and_pinned_never() {
        let mut records = HashMap::new();
        let img = |id: &str, size: u64, pinned: bool| ListedImage {
            id: id.to_string(),
            size,
            pinned,
        };
        let listed = [
            img("pause", 1, true),
            img("busybox", 5, false),
            img("old-app", 20, false),
            img("recent-app", 20, false),
            img("fill", 30, false),
        ];
        // Started at 0: everything detected; old-app ran until 10, recent-app until 200, busybox
        // still runs at 300.
        detect(
            &mut records,
            &listed,
            &set(&["old-app", "recent-app", "busybox"]),
            t(0),
            t(10),
        );
        detect(
            &mut records,
            &listed,
            &set(&["recent-app", "busybox"]),
            t(200),
            t(200),
        );
        detect(&mut records, &listed, &set(&["busybox"]), t(300), t(300));
        let order = eviction_order(&records, &set(&["busybox"]));
        let ids: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["fill", "old-app", "recent-app"]);
        // 100 bytes, 10 available: 90% used over 85; down to 80% means 10 more bytes.
        let (usage, amount) = bytes_to_free(100, 10, &POLICY);
        assert_eq!((usage, amount), (90, Some(10)));
        let gone: Vec<String> = to_free(&order, amount.unwrap(), &POLICY, t(300))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(gone, ["fill"]);
        let gone: Vec<String> = to_free(&order, 45, &POLICY, t(300))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(gone, ["fill", "old-app"]);
    }

    #[test]
    fn sizes_print_as_the_kubelet_prints_them() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(64 * 1048576), "64.0 MiB");
        assert_eq!(format_size(3 * 1073741824), "3.0 GiB");
    }
}
