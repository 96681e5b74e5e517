//! What one rotation of a container log does, as the kubelet's `rotateLog`
//! (`pkg/kubelet/logs/container_log_manager.go`): pure, over file names.

use std::time::SystemTime;

/// Suffix of a compressed rotated log.
pub const COMPRESS_SUFFIX: &str = ".gz";
/// Suffix of a log being compressed.
pub const TMP_SUFFIX: &str = ".tmp";

/// The steps of one rotation of `<log>`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Leftovers of an interrupted rotation (`.tmp`, or a file whose `.gz` exists).
    pub remove_unused: Vec<String>,
    /// The oldest rotated files beyond `max_files - 2`.
    pub remove_excess: Vec<String>,
    /// Rotated files kept but not compressed yet: each becomes `<file>.gz`.
    pub compress: Vec<String>,
    /// Where the live log is renamed to (`<log>.<YYYYmmdd-HHMMSS>`), left uncompressed so that
    /// readers can finish it.
    pub rotate_to: String,
}

/// Splits `rotated` (the files named `<log>.*`) into in-use and unused, as the kubelet's
/// `filterUnusedLogs`: `.tmp` files and files whose `.gz` exists are unused.
pub fn filter_unused(rotated: &[String]) -> (Vec<String>, Vec<String>) {
    rotated.iter().cloned().partition(|l| {
        if l.ends_with(TMP_SUFFIX) {
            return false;
        }
        if l.ends_with(COMPRESS_SUFFIX) {
            return true;
        }
        let gz = format!("{l}{COMPRESS_SUFFIX}");
        !rotated.contains(&gz)
    })
}

/// The rotation of `log`, given the files named `<log>.*` and `containerLogMaxFiles`: with the
/// live log and the one rotated now, at most `max_files - 2` older rotated files stay, oldest
/// removed first; all but the newest rotated file are compressed.
pub fn plan(log: &str, rotated: &[String], max_files: u32, now: SystemTime) -> Plan {
    let (mut in_use, remove_unused) = filter_unused(rotated);
    in_use.sort();
    let keep = (max_files as usize).saturating_sub(2);
    let excess = in_use.len().saturating_sub(keep);
    let remove_excess: Vec<String> = in_use.drain(..excess).collect();
    let compress = in_use
        .into_iter()
        .filter(|l| !l.ends_with(COMPRESS_SUFFIX))
        .collect();
    Plan {
        remove_unused,
        remove_excess,
        compress,
        rotate_to: format!("{log}.{}", timestamp(now)),
    }
}

/// `YYYYmmdd-HHMMSS` in UTC (the kubelet's `20060102-150405` in the node's zone; nodes run UTC).
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| format!("0.log.{s}")).collect()
    }

    #[test]
    fn timestamps_are_the_kubelets_format() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(timestamp(at(0)), "19700101-000000");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(timestamp(at(1_709_251_199)), "20240229-235959");
        // 2026-12-02T10:11:12Z.
        assert_eq!(timestamp(at(1_796_206_272)), "20261202-101112");
    }

    /// The kubelet's `TestRotateLogs` / `TestCleanupUnusedLog` shapes, as a table: files
    /// present, containerLogMaxFiles -> removed (unused, excess), compressed.
    #[test]
    fn rotation_keeps_the_newest_compresses_all_but_the_newest_rotated() {
        type Case = (
            &'static str,
            &'static [&'static str],
            u32,
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            ("first rotation", &[], 3, &[], &[], &[]),
            (
                "one rotated: compressed, kept",
                &["20260101-000000"],
                3,
                &[],
                &[],
                &["20260101-000000"],
            ),
            (
                "max 3: one older stays",
                &["20260101-000000.gz", "20260101-000100"],
                3,
                &[],
                &["20260101-000000.gz"],
                &["20260101-000100"],
            ),
            (
                "max 5: three older stay",
                &[
                    "20260101-000000.gz",
                    "20260101-000100.gz",
                    "20260101-000200",
                ],
                5,
                &[],
                &[],
                &["20260101-000200"],
            ),
            (
                "max 2: none stays",
                &["20260101-000000.gz", "20260101-000100"],
                2,
                &[],
                &["20260101-000000.gz", "20260101-000100"],
                &[],
            ),
            (
                "interrupted compression is cleaned up",
                &[
                    "20260101-000000",
                    "20260101-000000.gz",
                    "20260101-000100.tmp",
                    "20260101-000100",
                ],
                4,
                &["20260101-000000", "20260101-000100.tmp"],
                &[],
                &["20260101-000100"],
            ),
        ];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_206_272);
        for (name, present, max_files, unused, excess, compress) in cases {
            let p = plan("0.log", &names(present), *max_files, now);
            assert_eq!(p.remove_unused, names(unused), "{name}: unused");
            assert_eq!(p.remove_excess, names(excess), "{name}: excess");
            assert_eq!(p.compress, names(compress), "{name}: compress");
            assert_eq!(p.rotate_to, "0.log.20261202-101112", "{name}");
        }
    }
}
