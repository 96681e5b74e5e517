//! TCP probes: a connection opened within the timeout passes, and is closed at once.

use std::time::Duration;

use super::ProbeResult;

/// `host:port` as Go joins them (brackets around an IPv6 address).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An I/O error as Go's net package words it after `dial tcp ADDR: ` (`connect: connection
/// refused`, `i/o timeout`).
pub fn go_dial_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            let lower = chars
                .next()
                .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
                .unwrap_or_default();
            format!("connect: {lower}")
        }
        None => e.to_string(),
    }
}

/// Connects to `host:port` within `timeout`.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(conn)) => {
            drop(conn);
            ProbeResult::Success(String::new())
        }
        Ok(Err(e)) => ProbeResult::Failure(format!("dial tcp {addr}: {}", go_dial_error(&e))),
        Err(_) => ProbeResult::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_port_passes_closed_port_fails_as_go_words_it() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let ok = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(ok, ProbeResult::Success(String::new()));
        drop(l);
        let bad = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(
            bad,
            ProbeResult::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
