//! A loopback TCP proxy a test owns, between one node's agent and the shared API server: it
//! forwards, or on command cuts every connection and refuses (closes at once) or swallows
//! (accepts, never answers) new ones, so a node can lose "the API server" for minutes while
//! every other test keeps using it. It counts what it saw.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the upstream.
    Forward,
    /// Cut open connections; close new ones at once (a server that is down).
    Refuse,
    /// Cut open connections; accept new ones and never answer (a network that drops packets).
    Blackhole,
}

/// Counters of a [`FaultProxy`].
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted in any mode.
    pub accepted: AtomicU64,
    /// Connections forwarded to the upstream.
    pub forwarded: AtomicU64,
}

/// The proxy; stops listening when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// What it has seen so far.
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding from a free loopback port to `upstream` (on the current tokio runtime).
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, rx) = watch::channel(Mode::Forward);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle(client, upstream, rx.clone(), c.clone()));
            }
        });
        FaultProxy {
            addr,
            mode,
            counts,
            task,
        }
    }

    /// Its URL as an API server's (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Switches the mode; open connections are cut when leaving [`Mode::Forward`].
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Rewrites the `server:` of the kubeconfig at `path` to this proxy.
    pub fn point_kubeconfig(&self, path: &Path) {
        point_kubeconfig(path, &self.url());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Cut what is still open.
        self.mode.send_replace(Mode::Refuse);
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    counts: Arc<Counts>,
) {
    let now = *mode.borrow_and_update();
    match now {
        Mode::Refuse => return,
        Mode::Blackhole => {
            // Hold it, unread, until the proxy forwards again (then the client sees it close).
            let _ = mode.wait_for(|m| *m == Mode::Forward).await;
            return;
        }
        Mode::Forward => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut sw).await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut cw).await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = mode.wait_for(|m| *m != Mode::Forward) => {}
    }
}

/// Rewrites the `server:` line(s) of the kubeconfig at `path` to `url`.
pub fn point_kubeconfig(path: &Path, url: &str) {
    let text = std::fs::read_to_string(path).expect("read kubeconfig");
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server:") {
            Some(_) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: {url}")
            }
            None => l.to_string(),
        })
        .collect();
    assert!(
        out.iter().any(|l| l.contains(url)),
        "no server: line in {}",
        path.display()
    );
    std::fs::write(path, out.join("\n") + "\n").expect("write kubeconfig");
}
