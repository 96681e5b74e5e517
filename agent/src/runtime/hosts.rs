//! The pod's /etc/hosts (`<root>/pods/<uid>/etc-hosts`), as the kubelet writes it: a managed file
//! with the pod's IPs and host aliases, or for a host-network pod the node's own hosts file.

use std::path::{Path, PathBuf};

use bosun_cri::types::Mount;
use k8s_openapi::api::core::v1::{HostAlias, Pod};

use super::hostname::PodHostname;

/// Where containers see the file.
pub const ETC_HOSTS: &str = "/etc/hosts";
const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const HOST_NETWORK_HEADER: &str = "# Kubernetes-managed hosts file (host network).\n";

/// Whether the pod's containers get the managed /etc/hosts: once the pod has an IP, or always on
/// the host network (the kubelet's `shouldMountHostsFile`).
pub fn should_mount(pod: &Pod, pod_ips: &[String]) -> bool {
    !pod_ips.is_empty() || host_network(pod)
}

/// Whether the pod runs in the node's network namespace (`spec.hostNetwork`).
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The managed content for a pod network: localhost entries, the pod's IPs with its hostname
/// (and FQDN with a subdomain), then the host aliases.
pub fn managed_content(pod_ips: &[String], name: &PodHostname, aliases: &[HostAlias]) -> String {
    let mut s = String::from(MANAGED_HEADER);
    s.push_str("127.0.0.1\tlocalhost\n");
    s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\n");
    s.push_str("fe00::0\tip6-mcastprefix\n");
    s.push_str("fe00::1\tip6-allnodes\n");
    s.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if name.domain.is_empty() {
            s.push_str(&format!("{ip}\t{}\n", name.hostname));
        } else {
            s.push_str(&format!(
                "{ip}\t{h}.{d}\t{h}\n",
                h = name.hostname,
                d = name.domain
            ));
        }
    }
    s.push_str(&alias_entries(aliases));
    s
}

/// The content for a host-network pod: the node's hosts file, then the host aliases.
pub fn host_network_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    format!(
        "{HOST_NETWORK_HEADER}{node_hosts}{}",
        alias_entries(aliases)
    )
}

fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

/// Writes the pod's hosts file under `pod_dir` (rewritten before every container start, as the
/// kubelet does) and returns the container mount; `node_hosts` is the node's /etc/hosts path.
pub fn ensure(
    pod: &Pod,
    pod_dir: &Path,
    pod_ips: &[String],
    name: &PodHostname,
    node_hosts: &Path,
) -> std::io::Result<Mount> {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    let content = if host_network(pod) {
        host_network_content(&std::fs::read_to_string(node_hosts)?, aliases)
    } else {
        managed_content(pod_ips, name, aliases)
    };
    let file: PathBuf = pod_dir.join("etc-hosts");
    std::fs::create_dir_all(pod_dir)?;
    std::fs::write(&file, content)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    Ok(Mount {
        container_path: ETC_HOSTS.into(),
        host_path: file.display().to_string(),
        readonly: false,
        selinux_relabel: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.into(),
            hostnames: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn managed_file_as_the_kubelet_writes_it() {
        let name = PodHostname {
            hostname: "web".into(),
            domain: String::new(),
        };
        assert_eq!(
            managed_content(&["10.0.0.5".into()], &name, &[]),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.0.0.5\tweb\n"
        );
        let fqdn = PodHostname {
            hostname: "web".into(),
            domain: "s.ns.svc.cluster.local".into(),
        };
        let text = managed_content(
            &["10.0.0.5".into(), "fd00::5".into()],
            &fqdn,
            &[alias("1.2.3.4", &["a", "b"])],
        );
        assert!(
            text.ends_with(
                "10.0.0.5\tweb.s.ns.svc.cluster.local\tweb\nfd00::5\tweb.s.ns.svc.cluster.local\tweb\n\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn host_network_file_is_the_nodes_with_aliases() {
        assert_eq!(
            host_network_content("127.0.0.1 localhost\n", &[]),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
        assert_eq!(
            host_network_content("127.0.0.1 localhost\n", &[alias("1.2.3.4", &["x"])]),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n"
        );
    }

    #[test]
    fn written_under_the_pod_dir_and_mounted_at_etc_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let node_hosts = dir.path().join("hosts");
        std::fs::write(&node_hosts, "127.0.0.1 node\n").unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"hostNetwork": true, "containers": []}
        }))
        .unwrap();
        let name = PodHostname {
            hostname: "p".into(),
            domain: String::new(),
        };
        assert!(should_mount(&pod, &[]));
        let m = ensure(&pod, &dir.path().join("pod"), &[], &name, &node_hosts).unwrap();
        assert_eq!(m.container_path, "/etc/hosts");
        assert_eq!(
            std::fs::read_to_string(&m.host_path).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 node\n"
        );
        let normal: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": []}
        }))
        .unwrap();
        assert!(!should_mount(&normal, &[]));
    }
}
