//! Reading one container's log file into chunks of output, as the kubelet's `ReadLogs`: the start
//! found by [`super::tail`], records parsed by [`super::format`], filtered and prefixed by the
//! options, and with `follow` new records as they are written, across a rotation (a new file at
//! the same path), until the container is no longer running.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::debug;

use super::format::{self, Record, Stream};

/// Output is sent in chunks of about this size (and whenever the reader catches up).
const CHUNK: usize = 64 * 1024;
/// The longest record kept; the rest of a longer one is dropped (runtimes split lines at 16 KiB).
const MAX_LINE: usize = 1024 * 1024;
/// First and longest wait for new data while following.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(200);
/// How often a follower asks whether the container still runs while it waits for data.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);

/// What to read (the kubelet's `LogOptions`, from a `PodLogOptions`).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Only the last lines (records) of the file.
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
    /// Skip records written before this time.
    pub since: Option<Timestamp>,
    /// Keep reading new records until the container stops.
    pub follow: bool,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            tail_lines: None,
            limit_bytes: None,
            since: None,
            follow: false,
            timestamps: false,
            stdout: true,
            stderr: true,
        }
    }
}

/// Whether the container whose log is followed still runs (the seam to the runtime).
pub trait Liveness: Send + Sync {
    /// False once the container has stopped.
    fn running(&self) -> BoxFuture<'_, bool>;
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened or positioned.
    #[error("failed to open log file {path:?}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("failed to read log file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens `path` positioned at the start of its last `tail` lines; returns it and its inode.
async fn open(path: &Path, tail: Option<u64>) -> Result<(tokio::fs::File, u64), LogError> {
    let p = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&p)?;
        let start = match tail {
            Some(n) => super::tail::start_of_last_lines(&mut f, n)?,
            None => 0,
        };
        f.seek(SeekFrom::Start(start))?;
        let ino = f.metadata()?.ino();
        Ok((f, ino))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let (f, ino) = opened.map_err(|source| LogError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((tokio::fs::File::from_std(f), ino))
}

/// Output under the options: filtering, prefixes, the byte limit, chunking.
struct Writer<'a> {
    opts: &'a LogOptions,
    out: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    remain: u64,
}

impl Writer<'_> {
    /// Adds a record; false once the byte limit is reached.
    fn write(&mut self, rec: &Record<'_>, new_line: bool) -> bool {
        if self.opts.since.is_some_and(|since| rec.time < since) {
            return true;
        }
        let wanted = match rec.stream {
            Stream::Stdout => self.opts.stdout,
            Stream::Stderr => self.opts.stderr,
        };
        if !wanted {
            return true;
        }
        let before = self.buf.len();
        if self.opts.timestamps && new_line {
            self.buf.extend(format::fixed_nanos(rec.time_text));
            self.buf.push(b' ');
        }
        self.buf.extend_from_slice(rec.content);
        let added = (self.buf.len() - before) as u64;
        if added >= self.remain {
            self.buf.truncate(before + self.remain as usize);
            self.remain = 0;
            return false;
        }
        self.remain -= added;
        true
    }

    /// Sends what is buffered; false when the reader of the output is gone.
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return !self.out.is_closed();
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.out.send(chunk).await.is_ok()
    }
}

/// Reads the log at `path` under `opts` into `out`, chunk by chunk, until the end of the file
/// (or, following, until `live` says the container stopped and the file is drained), the byte
/// limit, or `out` being dropped.
pub async fn read_logs(
    path: &Path,
    opts: &LogOptions,
    live: &dyn Liveness,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<(), LogError> {
    let (file, mut ino) = open(path, opts.tail_lines).await?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut w = Writer {
        opts,
        out,
        buf: Vec::with_capacity(CHUNK),
        remain: opts.limit_bytes.unwrap_or(u64::MAX),
    };
    // Without follow, a tail is the number of records to print.
    let mut lines_left = opts.tail_lines.filter(|_| !opts.follow);
    let mut line = Vec::new();
    let mut new_line = true;
    let mut skipping = false;
    let mut poll = POLL_MIN;
    let mut last_check: Option<Instant> = None;
    let mut final_pass = false;
    let mut rotation_seen = false;
    let read_error = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    while lines_left != Some(0) {
        let room = (MAX_LINE - line.len()) as u64;
        let n = (&mut reader)
            .take(room)
            .read_until(b'\n', &mut line)
            .await
            .map_err(read_error)?;
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() < MAX_LINE {
            // The end of the file, possibly in the middle of a record.
            if !opts.follow {
                if !line.is_empty() && !skipping {
                    debug!(path = %path.display(), "incomplete line at the end of the log");
                    if let Ok(rec) = format::parse(&line) {
                        w.write(&rec, new_line);
                    }
                }
                break;
            }
            if n > 0 {
                continue;
            }
            if !w.flush().await {
                return Ok(());
            }
            if final_pass {
                break;
            }
            if let Ok(m) = tokio::fs::metadata(path).await
                && m.ino() != ino
            {
                // Rotated: drain the old file once more, then go on with the new one.
                if rotation_seen {
                    let (file, new_ino) = open(path, None).await?;
                    reader = BufReader::with_capacity(CHUNK, file);
                    ino = new_ino;
                    line.clear();
                    skipping = false;
                }
                rotation_seen = !rotation_seen;
                continue;
            }
            if last_check.is_none_or(|t| t.elapsed() >= LIVENESS_EVERY) {
                last_check = Some(Instant::now());
                if !live.running().await {
                    // One last read of what was written before it stopped.
                    final_pass = true;
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = w.out.closed() => return Ok(()),
            }
            poll = (poll * 2).min(POLL_MAX);
            continue;
        }
        poll = POLL_MIN;
        if skipping {
            skipping = !complete;
            line.clear();
            continue;
        }
        // A record longer than MAX_LINE: what fits is printed, the rest up to its newline dropped.
        skipping = !complete;
        match format::parse(&line) {
            Ok(rec) => {
                let more = w.write(&rec, new_line);
                new_line = rec.content.last().is_none_or(|&b| b == b'\n');
                if !more {
                    break;
                }
                if let Some(n) = lines_left.as_mut() {
                    *n -= 1;
                }
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "skipping a line that is not a CRI log record")
            }
        }
        line.clear();
        if w.buf.len() >= CHUNK && !w.flush().await {
            return Ok(());
        }
    }
    w.flush().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);

    impl Liveness for Flag {
        fn running(&self) -> BoxFuture<'_, bool> {
            let r = self.0.load(Ordering::SeqCst);
            Box::pin(async move { r })
        }
    }

    const LOG: &str = "\
2026-12-02T10:00:00.000000001Z stdout F one
2026-12-02T10:00:01Z stderr F two
2026-12-02T10:00:02.5Z stdout P thr
2026-12-02T10:00:02.6Z stdout F ee
not a record
2026-12-02T10:00:03Z stdout F four
";

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    async fn read(path: &Path, opts: LogOptions, running: bool) -> String {
        let (tx, mut rx) = mpsc::channel(4);
        let live = Flag(Arc::new(AtomicBool::new(running)));
        let path = path.to_path_buf();
        let task = tokio::spawn(async move { read_logs(&path, &opts, &live, tx).await });
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn ts(s: &str) -> Option<Timestamp> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn options_as_the_kubelets() {
        let (_d, path) = file(LOG);
        let o = LogOptions::default;
        let cases: Vec<(&str, LogOptions, &str)> = vec![
            ("all", o(), "one\ntwo\nthree\nfour\n"),
            (
                "stdout",
                LogOptions {
                    stderr: false,
                    ..o()
                },
                "one\nthree\nfour\n",
            ),
            (
                "stderr",
                LogOptions {
                    stdout: false,
                    ..o()
                },
                "two\n",
            ),
            // Records, not lines: the partial record counts, the bad line is not printed.
            (
                "tail 1",
                LogOptions {
                    tail_lines: Some(1),
                    ..o()
                },
                "four\n",
            ),
            (
                "tail 3",
                LogOptions {
                    tail_lines: Some(3),
                    ..o()
                },
                "ee\nfour\n",
            ),
            (
                "tail 0",
                LogOptions {
                    tail_lines: Some(0),
                    ..o()
                },
                "",
            ),
            (
                "limit",
                LogOptions {
                    limit_bytes: Some(6),
                    ..o()
                },
                "one\ntw",
            ),
            (
                "since",
                LogOptions {
                    since: ts("2026-12-02T10:00:02.55Z"),
                    ..o()
                },
                "ee\nfour\n",
            ),
            (
                "timestamps",
                LogOptions {
                    timestamps: true,
                    tail_lines: Some(4),
                    ..o()
                },
                "2026-12-02T10:00:02.500000000Z three\n2026-12-02T10:00:03.000000000Z four\n",
            ),
            (
                "timestamps limit",
                LogOptions {
                    timestamps: true,
                    limit_bytes: Some(10),
                    ..o()
                },
                "2026-12-02",
            ),
        ];
        for (what, opts, want) in cases {
            assert_eq!(read(&path, opts, false).await, want, "{what}");
        }
    }

    #[tokio::test]
    async fn an_incomplete_last_line_is_printed_without_follow() {
        let (_d, path) = file("2026-12-02T10:00:00Z stdout F a\n2026-12-02T10:00:00Z stdout F b");
        assert_eq!(read(&path, LogOptions::default(), false).await, "a\nb");
    }

    #[tokio::test]
    async fn an_over_long_record_is_cut_and_the_next_one_read() {
        let long = "x".repeat(MAX_LINE + 10);
        let (_d, path) = file(&format!(
            "2026-12-02T10:00:00Z stdout F {long}\n2026-12-02T10:00:01Z stdout F next\n"
        ));
        let out = read(&path, LogOptions::default(), false).await;
        assert!(out.ends_with("xnext\n"), "{}", &out[out.len() - 20..]);
        assert!(out.len() < MAX_LINE + 5);
    }

    /// Appends lines to `path` as the runtime does.
    fn append(path: &Path, lines: &[&str]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "2026-12-02T10:00:00Z stdout F {l}").unwrap();
        }
    }

    /// Receives output into `got` until it ends with `want` (10 s at most).
    async fn expect(rx: &mut mpsc::Receiver<Vec<u8>>, got: &mut String, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got.ends_with(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, rx.recv()).await;
            let chunk = chunk.unwrap_or_else(|_| panic!("waiting for {want:?}, got {got:?}"));
            got.push_str(std::str::from_utf8(&chunk.expect("ended early")).unwrap());
        }
    }

    #[tokio::test]
    async fn follow_reads_new_lines_across_a_rotation_until_the_container_stops() {
        let (dir, path) = file("");
        append(&path, &["first"]);
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let live = Flag(running.clone());
        let p = path.clone();
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(5),
            ..LogOptions::default()
        };
        let task = tokio::spawn(async move { read_logs(&p, &opts, &live, tx).await });
        let mut got = String::new();
        expect(&mut rx, &mut got, "first\n").await;
        append(&path, &["second"]);
        expect(&mut rx, &mut got, "second\n").await;
        // A partial record waits for its end.
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            write!(f, "2026-12-02T10:00:00Z stdout F thi").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            writeln!(f, "rd").unwrap();
        }
        expect(&mut rx, &mut got, "third\n").await;
        // Rotation as the kubelet's log manager does it: rename, then the runtime reopens.
        append(&path, &["last of old"]);
        std::fs::rename(&path, dir.path().join("0.log.20261202-100000")).unwrap();
        append(&path, &["first of new"]);
        expect(&mut rx, &mut got, "first of new\n").await;
        running.store(false, Ordering::SeqCst);
        append(&path, &["after stop"]);
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            let mut rest = String::new();
            while let Some(c) = rx.recv().await {
                rest.push_str(std::str::from_utf8(&c).unwrap());
            }
            rest
        })
        .await
        .expect("follow ends once the container stopped");
        task.await.unwrap().unwrap();
        assert_eq!(
            format!("{got}{rest}"),
            "first\nsecond\nthird\nlast of old\nfirst of new\nafter stop\n"
        );
    }

    #[tokio::test]
    async fn follow_stops_when_the_output_is_dropped() {
        let (_d, path) = file("2026-12-02T10:00:00Z stdout F a\n");
        let (tx, mut rx) = mpsc::channel(4);
        let live = Flag(Arc::new(AtomicBool::new(true)));
        let opts = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let task = tokio::spawn(async move { read_logs(&path, &opts, &live, tx).await });
        assert_eq!(rx.recv().await.unwrap(), b"a\n");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("reader ends with its client")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn tail_of_a_sparse_gigabyte_reads_only_its_end() {
        let (_d, path) = file("");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        append(&path, &["x", "y", "z"]);
        let opts = LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        assert_eq!(read(&path, opts, false).await, "y\nz\n");
    }
}
