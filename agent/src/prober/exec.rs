//! Exec probes: the command through CRI ExecSync with the probe's timeout; stdout and stderr
//! together, capped at the kubelet's 10 KiB, are the output; exit 0 passes.

use std::time::Duration;

use bosun_cri::{Code, CriClient};

use super::ProbeResult;

/// The most output an exec probe keeps (the kubelet's maxReadLength).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// A duration as Go prints it (`1s`, `1m30s`, `1h0m0s`) for whole seconds.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// Runs `cmd` in container `id`.
pub async fn probe(cri: &CriClient, id: &str, cmd: &[String], timeout: Duration) -> ProbeResult {
    match cri.exec_sync(id, cmd.to_vec(), timeout).await {
        Ok(out) => {
            let mut data = out.stdout;
            data.extend(out.stderr);
            data.truncate(MAX_OUTPUT);
            let text = String::from_utf8_lossy(&data).into_owned();
            if out.exit_code == 0 {
                ProbeResult::Success(text)
            } else {
                ProbeResult::Failure(text)
            }
        }
        // The kubelet's CRI client turns DeadlineExceeded into ErrCommandTimedOut.
        Err(e) if e.code() == Code::DeadlineExceeded => ProbeResult::Failure(format!(
            "command timed out: {:?} timed out after {}",
            cmd.join(" "),
            go_duration(timeout)
        )),
        Err(e) => ProbeResult::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(s(1)), "1s");
        assert_eq!(go_duration(s(90)), "1m30s");
        assert_eq!(go_duration(s(3600)), "1h0m0s");
    }
}
