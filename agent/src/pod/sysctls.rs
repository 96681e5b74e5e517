//! The kubelet's sysctl admission (pkg/kubelet/sysctl): a pod may set the sysctls of the node's
//! [`SysctlAllowlist`], each only where its namespace is the pod's own (no net.* with
//! hostNetwork, no IPC sysctl with hostIPC); anything else is rejected as SysctlForbidden.

use k8s_openapi::api::core::v1::Pod;

use super::admission::Rejection;
pub use crate::config::sysctls::SysctlAllowlist;

/// Admits `pod`'s sysctls or rejects it as the kubelet (SysctlForbidden).
pub fn admit(allowlist: &SysctlAllowlist, pod: &Pod) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    let host_users = spec.host_users.unwrap_or(true);
    for s in sysctls.into_iter().flatten() {
        let (net, ipc) = (
            spec.host_network.unwrap_or(false),
            spec.host_ipc.unwrap_or(false),
        );
        if let Err(e) = allowlist.validate(&s.name, net, ipc, host_users) {
            return Err(Rejection {
                reason: "SysctlForbidden".into(),
                message: format!("forbidden sysctl: {e}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sysctls: &[&str], host_network: bool, host_ipc: bool) -> Pod {
        let s: Vec<_> = sysctls
            .iter()
            .map(|n| serde_json::json!({"name": n, "value": "1"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"hostNetwork": host_network, "hostIPC": host_ipc,
                "securityContext": {"sysctls": s}, "containers": []},
        }))
        .unwrap()
    }

    #[test]
    fn admission_as_the_kubelet() {
        let w = SysctlAllowlist::new(&["kernel.msg*".into(), "net.core.somaxconn".into()]).unwrap();
        let cases: &[(&[&str], bool, bool, Option<&str>)] = &[
            (&[], false, false, None),
            (&["net.ipv4.ip_local_port_range"], false, false, None),
            (&["net/ipv4/ip_local_port_range"], false, false, None),
            (&["kernel.msgmax", "net.core.somaxconn"], false, false, None),
            (
                &["net.ipv4.tcp_syncookies", "kernel.shmmax"],
                false,
                false,
                Some("forbidden sysctl: \"kernel.shmmax\" not allowlisted"),
            ),
            (
                &["net.core.somaxconn"],
                true,
                false,
                Some("forbidden sysctl: \"net.core.somaxconn\" not allowed with host Net enabled"),
            ),
            (
                &["kernel.msgmax"],
                false,
                true,
                Some("forbidden sysctl: \"kernel.msgmax\" not allowed with host IPC enabled"),
            ),
            (&["kernel.msgmax"], true, false, None),
        ];
        for (names, net, ipc, want) in cases {
            let got = admit(&w, &pod(names, *net, *ipc));
            match want {
                None => assert_eq!(got, Ok(()), "{names:?}"),
                Some(m) => {
                    let r = got.unwrap_err();
                    assert_eq!(
                        (r.reason.as_str(), r.message.as_str()),
                        ("SysctlForbidden", *m)
                    );
                }
            }
        }
    }
}
