//! The pod's hostname and domain, as the kubelet's `GeneratePodHostNameAndDomain` and
//! `GetNodenameForKernel` make them: for the sandbox's UTS namespace and the pod's /etc/hosts.

use k8s_openapi::api::core::v1::Pod;

/// Longest hostname the kernel takes (64 bytes with the terminating NUL).
const HOSTNAME_MAX: usize = 63;
/// Longest FQDN used as the kernel hostname with `setHostnameAsFQDN`.
const FQDN_MAX: usize = 64;

/// A pod's hostname and, with a subdomain, its domain (`<subdomain>.<ns>.svc.<clusterDomain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostname {
    /// `hostnameOverride`, else `spec.hostname`, else the pod's name; at most 63 characters.
    pub hostname: String,
    /// Empty without `spec.subdomain` (and always with `hostnameOverride`).
    pub domain: String,
}

/// Why a pod's hostname cannot be made; the kubelet fails the sandbox with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostnameError(pub String);

impl PodHostname {
    /// The hostname and domain of `pod` in a cluster whose domain is `cluster_domain`.
    pub fn of(pod: &Pod, cluster_domain: &str) -> Result<PodHostname, HostnameError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let spec = pod.spec.as_ref();
        if let Some(o) = spec.and_then(|s| s.hostname_override.as_deref()) {
            if let Some(why) = dns1123_subdomain_error(o) {
                return Err(HostnameError(format!(
                    "pod HostnameOverride {o:?} is not a valid DNS subdomain: {why}"
                )));
            }
            return Ok(PodHostname {
                hostname: truncate(name, o)?,
                domain: String::new(),
            });
        }
        let mut hostname = name;
        if let Some(h) = spec
            .and_then(|s| s.hostname.as_deref())
            .filter(|h| !h.is_empty())
        {
            if let Some(why) = dns1123_label_error(h) {
                return Err(HostnameError(format!(
                    "pod Hostname {h:?} is not a valid DNS label: {why}"
                )));
            }
            hostname = h;
        }
        let hostname = truncate(name, hostname)?;
        let mut domain = String::new();
        if let Some(sub) = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
        {
            if let Some(why) = dns1123_label_error(sub) {
                return Err(HostnameError(format!(
                    "pod Subdomain {sub:?} is not a valid DNS label: {why}"
                )));
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            domain = format!("{sub}.{ns}.svc.{cluster_domain}");
        }
        Ok(PodHostname { hostname, domain })
    }

    /// The name the sandbox's UTS namespace gets: the FQDN with `setHostnameAsFQDN` and a domain,
    /// else the hostname.
    pub fn kernel_hostname(&self, set_as_fqdn: bool) -> Result<String, HostnameError> {
        if self.domain.is_empty() || !set_as_fqdn {
            return Ok(self.hostname.clone());
        }
        let fqdn = format!("{}.{}", self.hostname, self.domain);
        if fqdn.len() > FQDN_MAX {
            return Err(HostnameError(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX} characters is the max, {} characters requested)",
                fqdn.len()
            )));
        }
        Ok(fqdn)
    }
}

/// Cuts `hostname` to 63 characters without a trailing `-` or `.`, as the kubelet does.
fn truncate(pod_name: &str, hostname: &str) -> Result<String, HostnameError> {
    if hostname.len() <= HOSTNAME_MAX {
        return Ok(hostname.to_string());
    }
    // DNS names are ASCII, so cutting at a byte index is a character boundary.
    let cut = hostname
        .get(..HOSTNAME_MAX)
        .unwrap_or(hostname)
        .trim_end_matches(['-', '.']);
    if cut.is_empty() {
        return Err(HostnameError(format!(
            "hostname for pod {pod_name:?} was invalid: {hostname:?}"
        )));
    }
    Ok(cut.to_string())
}

/// Why `s` is not an RFC 1123 label (lower-case alphanumerics and `-`, alphanumeric at both
/// ends, at most 63 characters); None when it is one.
fn dns1123_label_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into()
    })
}

/// Why `s` is not an RFC 1123 subdomain (dot-separated labels, at most 253 characters).
fn dns1123_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    s.split('.').any(|l| dns1123_label_error(l).is_some()).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "prod"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn hostname_and_domain_as_the_kubelet() {
        let cases = [
            (serde_json::json!({}), Ok(("web-0", ""))),
            (serde_json::json!({"hostname": "db"}), Ok(("db", ""))),
            (
                serde_json::json!({"hostname": "db", "subdomain": "svc1"}),
                Ok(("db", "svc1.prod.svc.cluster.local")),
            ),
            (
                serde_json::json!({"hostnameOverride": "a.b", "subdomain": "svc1"}),
                Ok(("a.b", "")),
            ),
            (
                serde_json::json!({"hostname": "Bad_Name"}),
                Err("pod Hostname \"Bad_Name\" is not a valid DNS label"),
            ),
            (
                serde_json::json!({"subdomain": "-x"}),
                Err("pod Subdomain \"-x\" is not a valid DNS label"),
            ),
            (
                serde_json::json!({"hostnameOverride": "a..b"}),
                Err("pod HostnameOverride \"a..b\" is not a valid DNS subdomain"),
            ),
        ];
        for (spec, want) in cases {
            let got = PodHostname::of(&pod(spec.clone()), "cluster.local");
            match (got, want) {
                (Ok(h), Ok((name, domain))) => {
                    assert_eq!(
                        (h.hostname.as_str(), h.domain.as_str()),
                        (name, domain),
                        "{spec}"
                    )
                }
                (Err(e), Err(prefix)) => assert!(e.0.starts_with(prefix), "{spec}: {e}"),
                (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn long_names_are_cut_to_63_without_trailing_dash() {
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": long, "namespace": "prod"}, "spec": {"containers": []}
        }))
        .unwrap();
        assert_eq!(
            PodHostname::of(&p, "cluster.local").unwrap().hostname,
            "a".repeat(62)
        );
    }

    #[test]
    fn kernel_hostname_is_the_fqdn_only_when_asked_and_short_enough() {
        let h = PodHostname {
            hostname: "db".into(),
            domain: "svc1.prod.svc.cluster.local".into(),
        };
        assert_eq!(h.kernel_hostname(false).unwrap(), "db");
        assert_eq!(
            h.kernel_hostname(true).unwrap(),
            "db.svc1.prod.svc.cluster.local"
        );
        let long = PodHostname {
            hostname: "h".repeat(40),
            domain: "d".repeat(30),
        };
        assert!(
            long.kernel_hostname(true)
                .unwrap_err()
                .0
                .contains("is too long")
        );
    }
}
