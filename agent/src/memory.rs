//! The allocator's housekeeping: what the Go runtime's scavenger does for the kubelet. glibc's
//! malloc keeps memory a burst freed (a node filled with pods, then settled) as free chunks in
//! the middle of its heap, resident until reused; Bosun gives back what it holds free beyond
//! [`KEEP_FREE`] every [`PERIOD`] (malloc_trim), and keeps one arena for every thread (its work
//! runs on one thread; the blocking pool's threads would each take an arena of their own).
//! Measured in BENCHMARKS.md (density, 250 pods).

use std::time::Duration;

/// How often the free memory held is looked at.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Free memory the allocator may keep for the next burst without giving it back.
pub const KEEP_FREE: usize = 2 << 20;

/// One malloc arena for every thread; call first thing in main, before any thread starts.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Bytes the allocator holds free (glibc's mallinfo2 fordblks); None where unknown.
pub fn held_free() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 reads the allocator's statistics; it takes no pointers.
    return Some(unsafe { libc::mallinfo2() }.fordblks);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Gives free memory back to the kernel when more than [`KEEP_FREE`] is held; the bytes held
/// free when it did. (The trim releases their pages; the allocator still counts them free.)
pub fn trim_if_worth_it() -> Option<usize> {
    let free = held_free().filter(|&f| f > KEEP_FREE)?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    Some(free)
}

/// Trims every [`PERIOD`] until cancelled.
pub async fn run(cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(free) = trim_if_worth_it() {
            tracing::debug!(held_free = free, "malloc_trim");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident set, in bytes.
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Memory freed in the middle of the heap stays resident until trimmed; the trim gives it
    /// back to the kernel.
    #[test]
    fn a_freed_burst_is_given_back() {
        // 40 MiB in small blocks, then every other one freed: free space the heap's top cannot
        // release, as a burst of pods leaves it.
        let blocks: Vec<Vec<u8>> = (0..80_000).map(|i| vec![i as u8; 512]).collect();
        let kept: Vec<&Vec<u8>> = blocks.iter().step_by(2).collect();
        let kept: Vec<Vec<u8>> = kept.into_iter().cloned().collect();
        drop(blocks);
        let Some(free) = held_free() else { return };
        assert!(
            free > KEEP_FREE,
            "the freed blocks are held: {free} bytes free"
        );
        let before = rss();
        assert!(
            trim_if_worth_it().is_some(),
            "more than the limit held free: trimmed"
        );
        let after = rss();
        // About 40 MiB were freed (the copies kept live elsewhere in the heap).
        assert!(
            before.saturating_sub(after) >= 16 << 20,
            "RSS {before} -> {after}: the freed memory was not given back"
        );
        drop(kept);
    }
}
