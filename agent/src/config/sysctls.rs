//! The sysctls a pod may set on this node (the kubelet's pkg/kubelet/sysctl allowlist): the safe
//! sysctls and those `allowedUnsafeSysctls` names (exact or `prefix*`), each with the kernel
//! namespace it belongs to. Parsed once at load; admission (`pod::sysctls`) checks pods
//! against it.

use std::collections::BTreeMap;

/// The kernel namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Ipc,
    Net,
    Uts,
    User,
}

impl Namespace {
    /// As the kubelet names it in messages.
    fn name(self) -> &'static str {
        match self {
            Namespace::Ipc => "IPC",
            Namespace::Net => "Net",
            Namespace::Uts => "UTS",
            Namespace::User => "User",
        }
    }
}

/// The safe sysctls (safe_sysctls.go); all namespaced since kernels older than any this runs on.
const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// Sysctls and sysctl prefixes a pod may set on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysctlAllowlist {
    exact: BTreeMap<String, Namespace>,
    prefixes: BTreeMap<String, Namespace>,
}

/// A sysctl name with `/` separators in the kubelet's dotted form (`net/ipv4/conf/eth0.1/x` is
/// `net.ipv4.conf.eth0/1.x`).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn namespace_of(name: &str) -> Option<Namespace> {
    const NAMES: &[(&str, Namespace)] = &[
        ("kernel.domainname", Namespace::Uts),
        ("kernel.sem", Namespace::Ipc),
        ("kernel.shmall", Namespace::Ipc),
        ("kernel.shmmax", Namespace::Ipc),
        ("kernel.shmmni", Namespace::Ipc),
        ("kernel.shm_rmid_forced", Namespace::Ipc),
        ("kernel.shm", Namespace::Ipc),
        ("kernel.msgmax", Namespace::Ipc),
        ("kernel.msgmnb", Namespace::Ipc),
        ("kernel.msgmni", Namespace::Ipc),
        ("kernel.msg", Namespace::Ipc),
    ];
    const PREFIXES: &[(&str, Namespace)] = &[
        ("net.", Namespace::Net),
        ("fs.mqueue.", Namespace::Ipc),
        ("user.", Namespace::User),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .or_else(|| PREFIXES.iter().find(|(p, _)| name.starts_with(p)))
        .map(|(_, ns)| *ns)
}

/// True for a valid sysctl pattern: at most 253 characters, segments `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`
/// separated by `.` or `/`, the last of which may end in `*`.
fn valid_pattern(s: &str) -> bool {
    let segment = |seg: &str, last: bool| {
        let b = seg.as_bytes();
        let inner = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_';
        let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match b {
            [] => false,
            [c] => edge(*c) || (last && *c == b'*'),
            [first, mid @ .., end] => {
                edge(*first)
                    && mid.iter().all(|c| inner(*c))
                    && (edge(*end) || (last && *end == b'*'))
            }
        }
    };
    if s.len() > 253 {
        return false;
    }
    let parts: Vec<&str> = s.split(['.', '/']).collect();
    let n = parts.len();
    parts
        .iter()
        .enumerate()
        .all(|(i, p)| segment(p, i + 1 == n))
}

impl SysctlAllowlist {
    /// The safe sysctls and `allowed_unsafe` (`allowedUnsafeSysctls`), or the kubelet's error
    /// for a pattern that is not valid or not known to be namespaced.
    pub fn new(allowed_unsafe: &[String]) -> Result<Self, String> {
        let mut w = SysctlAllowlist::default();
        for s in SAFE
            .iter()
            .map(|s| s.to_string())
            .chain(allowed_unsafe.iter().cloned())
        {
            if !valid_pattern(&s) {
                return Err(format!(
                    "sysctl {s:?} must have at most 253 characters and match regex \
                     ([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*([a-z0-9][-_a-z0-9]*)?[a-z0-9*]"
                ));
            }
            let mut name = normalize(&s);
            let prefixed = match name.find('*') {
                Some(i) => {
                    name.truncate(i);
                    true
                }
                None => false,
            };
            let ns = namespace_of(&name)
                .ok_or_else(|| format!("the sysctls {name:?} are not known to be namespaced"))?;
            if prefixed {
                w.prefixes.insert(name, ns);
            } else {
                w.exact.insert(name, ns);
            }
        }
        Ok(w)
    }

    /// Checks one sysctl of a pod with the given host namespaces; the kubelet's message when it
    /// is not allowed.
    pub fn validate(
        &self,
        sysctl: &str,
        host_net: bool,
        host_ipc: bool,
        host_users: bool,
    ) -> Result<(), String> {
        let sysctl = normalize(sysctl);
        let ns = self.exact.get(&sysctl).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| sysctl.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        let Some(ns) = ns else {
            return Err(format!("{sysctl:?} not allowlisted"));
        };
        let on_host = match ns {
            Namespace::Ipc => host_ipc,
            Namespace::Net => host_net,
            Namespace::User => host_users,
            Namespace::Uts => false,
        };
        if on_host {
            return Err(format!(
                "{sysctl:?} not allowed with host {} enabled",
                ns.name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_patterns_are_startup_errors() {
        assert!(SysctlAllowlist::new(&["net.*".into(), "fs.mqueue.*".into()]).is_ok());
        let e = SysctlAllowlist::new(&["kernel.panic".into()]).unwrap_err();
        assert_eq!(
            e,
            "the sysctls \"kernel.panic\" are not known to be namespaced"
        );
        for bad in ["Net.core", "net..core", "net.*.x", "net.core-", "*"] {
            let e = SysctlAllowlist::new(&[bad.into()]).unwrap_err();
            assert!(
                e.contains("must have at most 253 characters") || e.contains("namespaced"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn slash_names_are_normalized() {
        assert_eq!(
            normalize("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            normalize("net.ipv4.conf.eno2/100.rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
    }
}
