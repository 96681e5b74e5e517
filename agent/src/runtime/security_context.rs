//! A container's CRI security context as the kubelet's `determineEffectiveSecurityContext`: the
//! pod's security context overridden field by field by the container's, the seccomp profile
//! (with `seccompDefault` and Localhost profiles under `<rootDir>/seccomp`), the AppArmor profile
//! (field or legacy annotation), SELinux options, the masked and read-only /proc paths of the
//! procMount, supplemental groups with their policy, and the image's user when none is set.

use std::path::Path;
use std::sync::OnceLock;

use bosun_cri::types::{
    Capability, Int64Value, LinuxContainerSecurityContext, NamespaceOption, SeLinuxOption,
    SecurityProfile, SupplementalGroupsPolicy, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile,
};

/// The pod annotation prefix of the legacy (beta) AppArmor profile of one container.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// What the security context needs besides the pod: node settings and the image's user.
#[derive(Debug, Clone, Copy)]
pub struct SecurityInputs<'a> {
    /// `seccompDefault`: RuntimeDefault instead of Unconfined when no profile is set.
    pub seccomp_default: bool,
    /// Where Localhost seccomp profiles live (`<rootDir>/seccomp`).
    pub seccomp_root: &'a Path,
    /// The image's numeric user (CRI ImageStatus), 0 when the image names none.
    pub image_uid: Option<i64>,
    /// The image's non-numeric user name, when it has one.
    pub image_username: &'a str,
}

/// The container's security context for CreateContainer, or the kubelet's error for a profile
/// that cannot be expressed (a CreateContainerConfigError).
pub fn effective(
    pod: &Pod,
    container: &Container,
    inputs: &SecurityInputs<'_>,
    namespace_options: NamespaceOption,
) -> Result<LinuxContainerSecurityContext, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    // Field by field, the container's value wins (DetermineEffectiveSecurityContext).
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let selinux = sc
        .and_then(|s| s.se_linux_options.as_ref())
        .or(pod_sc.and_then(|s| s.se_linux_options.as_ref()));
    let unmasked = sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    let (image_uid, image_username) = match run_as_user {
        Some(_) => (None, String::new()),
        None => (inputs.image_uid, inputs.image_username.to_string()),
    };
    let (apparmor, apparmor_profile) = apparmor(pod, container)?;
    // The deprecated string form too, as the kubelet sends it: runtimes older than the
    // `apparmor` field (containerd 1.6) read only this one.
    #[allow(deprecated)]
    Ok(LinuxContainerSecurityContext {
        capabilities: sc
            .and_then(|s| s.capabilities.as_ref())
            .map(|c| Capability {
                add_capabilities: c.add.clone().unwrap_or_default(),
                drop_capabilities: c.drop.clone().unwrap_or_default(),
                ..Default::default()
            }),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        namespace_options: Some(namespace_options),
        selinux_options: selinux.map(selinux_option),
        run_as_user: run_as_user.or(image_uid).map(|value| Int64Value { value }),
        run_as_group: run_as_group.map(|value| Int64Value { value }),
        run_as_username: image_username,
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups: supplemental_groups(pod_sc),
        supplemental_groups_policy: supplemental_groups_policy(pod_sc)?,
        no_new_privs: sc
            .and_then(|s| s.allow_privilege_escalation)
            .is_some_and(|a| !a),
        masked_paths: if unmasked {
            Vec::new()
        } else {
            default_masked_paths().to_vec()
        },
        readonly_paths: if unmasked {
            Vec::new()
        } else {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        },
        seccomp: Some(seccomp(pod_sc, container, inputs)?),
        apparmor,
        apparmor_profile,
        ..Default::default()
    })
}

/// fsGroup first, then the pod's supplementalGroups (the kubelet's order).
fn supplemental_groups(pod_sc: Option<&PodSecurityContext>) -> Vec<i64> {
    pod_sc
        .and_then(|s| s.fs_group)
        .into_iter()
        .chain(
            pod_sc
                .and_then(|s| s.supplemental_groups.clone())
                .unwrap_or_default(),
        )
        .collect()
}

fn supplemental_groups_policy(pod_sc: Option<&PodSecurityContext>) -> Result<i32, String> {
    match pod_sc.and_then(|s| s.supplemental_groups_policy.as_deref()) {
        None | Some("Merge") => Ok(SupplementalGroupsPolicy::Merge as i32),
        Some("Strict") => Ok(SupplementalGroupsPolicy::Strict as i32),
        Some(other) => Err(format!("unsupported supplementalGroupsPolicy: {other}")),
    }
}

fn selinux_option(o: &SELinuxOptions) -> SeLinuxOption {
    SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    }
}

fn profile(t: ProfileType) -> SecurityProfile {
    SecurityProfile {
        profile_type: t as i32,
        ..Default::default()
    }
}

/// The kubelet's getSeccompProfile: the container's field, else the pod's, else RuntimeDefault
/// with `seccompDefault` or Unconfined.
fn seccomp(
    pod_sc: Option<&PodSecurityContext>,
    container: &Container,
    inputs: &SecurityInputs<'_>,
) -> Result<SecurityProfile, String> {
    let field = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    let Some(SeccompProfile {
        type_,
        localhost_profile,
    }) = field
    else {
        return Ok(profile(if inputs.seccomp_default {
            ProfileType::RuntimeDefault
        } else {
            ProfileType::Unconfined
        }));
    };
    match type_.as_str() {
        "RuntimeDefault" => Ok(profile(ProfileType::RuntimeDefault)),
        "Localhost" => match localhost_profile.as_deref() {
            Some(p) if !p.is_empty() => Ok(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: inputs.seccomp_root.join(p).display().to_string(),
            }),
            _ => Err("localhostProfile must be set if seccompProfile type is Localhost.".into()),
        },
        _ => Ok(profile(ProfileType::Unconfined)),
    }
}

/// The container's AppArmor profile as the kubelet's apparmor.GetProfile: its own field, the
/// legacy annotation, then the pod's field; none leaves the runtime's default.
pub fn apparmor_profile(pod: &Pod, container: &Container) -> Option<AppArmorProfile> {
    if let Some(p) = container
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
    {
        return Some(p);
    }
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{APPARMOR_ANNOTATION_PREFIX}{}", container.name)));
    if let Some(v) = annotation {
        let of = |t: &str, name: Option<&str>| AppArmorProfile {
            type_: t.to_string(),
            localhost_profile: name.map(str::to_string),
        };
        match v.as_str() {
            "runtime/default" => return Some(of("RuntimeDefault", None)),
            "unconfined" => return Some(of("Unconfined", None)),
            v => {
                if let Some(name) = v.strip_prefix("localhost/") {
                    return Some(of("Localhost", Some(name)));
                }
            }
        }
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.app_armor_profile.clone())
}

/// The CRI AppArmor profile and its deprecated string form.
fn apparmor(pod: &Pod, container: &Container) -> Result<(Option<SecurityProfile>, String), String> {
    let Some(p) = apparmor_profile(pod, container) else {
        return Ok((None, String::new()));
    };
    match p.type_.as_str() {
        "RuntimeDefault" => Ok((
            Some(profile(ProfileType::RuntimeDefault)),
            "runtime/default".into(),
        )),
        "Unconfined" => Ok((Some(profile(ProfileType::Unconfined)), "unconfined".into())),
        "Localhost" => {
            let name = p
                .localhost_profile
                .ok_or("missing localhost apparmor profile name")?;
            Ok((
                Some(SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: name.clone(),
                }),
                format!("localhost/{name}"),
            ))
        }
        other => Err(format!("unknown apparmor profile type: \"{other}\"")),
    }
}

/// The /proc paths made read-only unless procMount is Unmasked (the kubelet's list).
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The paths masked unless procMount is Unmasked: the kubelet's list, with each possible CPU's
/// thermal_throttle directory that exists on this host.
fn default_masked_paths() -> &'static [String] {
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths: Vec<String> = [
            "/proc/asound",
            "/proc/acpi",
            "/proc/interrupts",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        let possible =
            std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
        for cpu in cpu_list(&possible) {
            let p = format!("/sys/devices/system/cpu/cpu{cpu}/thermal_throttle");
            if Path::new(&p).exists() {
                paths.push(p);
            }
        }
        paths
    })
}

/// The CPUs of a kernel CPU list ("0-3,5").
fn cpu_list(s: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b.min(a.saturating_add(4096)));
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn inputs(default: bool) -> SecurityInputs<'static> {
        SecurityInputs {
            seccomp_default: default,
            seccomp_root: Path::new("/var/lib/kubelet/seccomp"),
            image_uid: Some(0),
            image_username: "",
        }
    }

    fn of(p: &Pod, i: &SecurityInputs<'_>) -> Result<LinuxContainerSecurityContext, String> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        effective(p, c, i, NamespaceOption::default())
    }

    #[test]
    fn seccomp_profiles_as_the_kubelet() {
        let cases: &[(
            serde_json::Value,
            serde_json::Value,
            bool,
            ProfileType,
            &str,
        )] = &[
            (json_null(), json_null(), false, ProfileType::Unconfined, ""),
            (
                json_null(),
                json_null(),
                true,
                ProfileType::RuntimeDefault,
                "",
            ),
            (
                serde_json::json!({"type": "RuntimeDefault"}),
                json_null(),
                false,
                ProfileType::RuntimeDefault,
                "",
            ),
            (
                serde_json::json!({"type": "Unconfined"}),
                json_null(),
                true,
                ProfileType::Unconfined,
                "",
            ),
            (
                serde_json::json!({"type": "RuntimeDefault"}),
                serde_json::json!({"type": "Localhost", "localhostProfile": "p/deny.json"}),
                false,
                ProfileType::Localhost,
                "/var/lib/kubelet/seccomp/p/deny.json",
            ),
        ];
        for (pod_p, c_p, default, want, want_ref) in cases {
            let p = pod(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {
                    "securityContext": {"seccompProfile": pod_p},
                    "containers": [{"name": "c", "securityContext": {"seccompProfile": c_p}}],
                },
            }));
            let s = of(&p, &inputs(*default)).unwrap().seccomp.unwrap();
            assert_eq!(s.profile_type, *want as i32, "{pod_p} {c_p} {default}");
            assert_eq!(s.localhost_ref, *want_ref);
        }
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c",
                "securityContext": {"seccompProfile": {"type": "Localhost"}}}]},
        }));
        assert_eq!(
            of(&p, &inputs(false)).unwrap_err(),
            "localhostProfile must be set if seccompProfile type is Localhost."
        );
    }

    fn json_null() -> serde_json::Value {
        serde_json::Value::Null
    }

    #[test]
    #[allow(deprecated)]
    fn container_fields_win_and_the_image_user_fills_in() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "annotations": {
                "container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-deny"}},
            "spec": {
                "securityContext": {"runAsGroup": 5, "fsGroup": 7, "supplementalGroups": [8, 9],
                    "supplementalGroupsPolicy": "Strict",
                    "seLinuxOptions": {"level": "s0:c1"},
                    "appArmorProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "securityContext": {
                    "runAsGroup": 6, "seLinuxOptions": {"type": "t"},
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            },
        }));
        let i = SecurityInputs {
            image_uid: Some(1000),
            ..inputs(false)
        };
        let s = of(&p, &i).unwrap();
        assert_eq!(s.run_as_user.unwrap().value, 1000);
        assert_eq!(s.run_as_group.unwrap().value, 6);
        assert_eq!(s.supplemental_groups, [7, 8, 9]);
        assert_eq!(
            s.supplemental_groups_policy,
            SupplementalGroupsPolicy::Strict as i32
        );
        let se = s.selinux_options.unwrap();
        assert_eq!((se.r#type.as_str(), se.level.as_str()), ("t", ""));
        assert!(s.no_new_privs && s.readonly_rootfs && !s.privileged);
        let caps = s.capabilities.unwrap();
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert_eq!(caps.add_capabilities, ["NET_BIND_SERVICE"]);
        // The annotation comes before the pod's field.
        assert_eq!(s.apparmor_profile, "localhost/k8s-deny");
        assert_eq!(s.apparmor.unwrap().localhost_ref, "k8s-deny");
        assert!(s.masked_paths.iter().any(|p| p == "/proc/kcore"));
        assert_eq!(s.readonly_paths.len(), 5);
    }

    #[test]
    fn unmasked_proc_and_an_explicit_user() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"securityContext": {"runAsUser": 0},
                "containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]},
        }));
        let i = SecurityInputs {
            image_uid: None,
            image_username: "nobody",
            ..inputs(false)
        };
        let s = of(&p, &i).unwrap();
        assert!(s.masked_paths.is_empty() && s.readonly_paths.is_empty());
        assert_eq!(s.run_as_user.unwrap().value, 0);
        assert_eq!(s.run_as_username, "");
        assert!(s.apparmor.is_none());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-3,5\n"), [0, 1, 2, 3, 5]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list("x"), Vec::<u32>::new());
    }
}
