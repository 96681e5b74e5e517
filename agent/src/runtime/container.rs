//! Container spec -> CRI ContainerConfig: command, env with `$(VAR)` expansion, mounts, log path,
//! resources (cpu shares and quota, memory limit, oom_score_adj) and security context.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bosun_cri::types::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, Mount, MountPropagation, NamespaceMode, NamespaceOption,
};
use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use super::hosts;
use super::labels;
use super::sandbox::{PodKey, namespace_options};
use super::subpath;
use crate::cgroup::resources::{QUOTA_PERIOD_US, milli_cpu_to_quota, milli_cpu_to_shares};
use crate::resource::{QosClass, parse_quantity, qos_class};

/// CFS period the kubelet uses for quotas (100 ms).
pub const CPU_PERIOD_US: i64 = QUOTA_PERIOD_US as i64;

/// Why a container config could not be built: the kubelet's CreateContainerConfigError.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What the container config needs besides the pod and container specs.
pub struct ContainerContext<'a> {
    /// Host paths of the pod's volumes by volume name.
    pub volumes: &'a HashMap<String, String>,
    /// The image ref of each image volume by volume name (the runtime mounts the image).
    pub image_volumes: &'a HashMap<String, String>,
    /// `<pod>/volume-subpaths`, where subPaths are bound for the runtime to mount.
    pub subpaths_dir: &'a Path,
    /// The pod's IP, for `status.podIP` env references.
    pub pod_ip: &'a str,
    /// The node's IP, for `status.hostIP`.
    pub host_ip: &'a str,
    /// The node's name, for `spec.nodeName`.
    pub node_name: &'a str,
    /// The pod's managed /etc/hosts mount, when the pod gets one (see [`hosts::should_mount`]).
    pub etc_hosts: Option<&'a Mount>,
    /// The host file mounted at the container's terminationMessagePath.
    pub termination_log: &'a Path,
    /// The node's memory capacity in bytes, for the Burstable oom_score_adj.
    pub memory_capacity: i64,
    /// The node's allocatable in thousandths by resource, for resourceFieldRef limits the
    /// container does not set.
    pub allocatable: &'a BTreeMap<String, i128>,
    /// ConfigMaps the env refers to, by name (None: does not exist); empty without an API.
    pub config_maps: &'a HashMap<String, Option<BTreeMap<String, String>>>,
    /// Secrets the env refers to, by name (None: does not exist).
    pub secrets: &'a HashMap<String, Option<BTreeMap<String, String>>>,
    /// Service link variables (KUBERNETES_SERVICE_HOST, ...), set before the container's own env.
    pub service_env: &'a [(String, String)],
    /// For an ephemeral container with a targetContainerName: the CRI id of that container,
    /// whose process namespace it joins (when the pod's containers have their own).
    pub pid_target: Option<&'a str>,
    /// Node settings and the image's user for the security context.
    pub security: super::security_context::SecurityInputs<'a>,
}

/// The container's namespaces: the pod's, with the PID namespace of `pid_target` instead of
/// its own when it has one (an ephemeral container targeting another), as the kubelet's
/// generateLinuxContainerConfig.
fn container_namespaces(pod: &Pod, pid_target: Option<&str>) -> NamespaceOption {
    let mut ns = namespace_options(pod);
    if let Some(target) = pid_target
        && ns.pid == NamespaceMode::Container as i32
    {
        ns.pid = NamespaceMode::Target as i32;
        ns.target_id = target.to_string();
    }
    ns
}

/// Builds the CRI config of `container` for its `restart_count`-th run.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    init: bool,
    ctx: &ContainerContext<'_>,
) -> Result<ContainerConfig, ConfigError> {
    let key = PodKey::of(pod);
    let envs = env_vars(pod, container, ctx)?;
    let env_map: HashMap<&str, &str> = envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    let command = container
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &env_map))
        .collect();
    let args = container
        .args
        .iter()
        .flatten()
        .map(|s| expand(s, &env_map))
        .collect();
    let tm_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let mounts = mounts(container, ctx, &tm_path, &env_map)?;
    let annotations = annotations(pod, container, restart_count, init, tm_path);
    // Each container joins the pod's namespaces as the sandbox has them; without this the
    // runtime reads "POD" for the PID namespace and every pod would share one.
    let security = super::security_context::effective(
        pod,
        container,
        &ctx.security,
        container_namespaces(pod, ctx.pid_target),
    )
    .map_err(ConfigError)?;
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: restart_count,
        }),
        image: Some(ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels: labels::container_labels(&key.name, &key.namespace, &key.uid, &container.name),
        annotations,
        log_path: format!("{}/{restart_count}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(linux_resources(pod, container, ctx.memory_capacity)),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

/// The container's mounts: its volumeMounts (subPaths made, subPathExpr expanded from `env`),
/// the pod's /etc/hosts unless it mounts its own, and the termination log at `tm_path`.
fn mounts(
    container: &Container,
    ctx: &ContainerContext<'_>,
    tm_path: &str,
    env: &HashMap<&str, &str>,
) -> Result<Vec<Mount>, ConfigError> {
    let mut mounts = Vec::new();
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
        if let Some(image_ref) = ctx.image_volumes.get(&m.name) {
            mounts.push(image_mount(m, image_ref, container)?);
            continue;
        }
        let host = ctx.volumes.get(&m.name).ok_or_else(|| {
            ConfigError(format!(
                "cannot find volume \"{}\" to mount into container \"{}\"",
                m.name, container.name
            ))
        })?;
        let propagation = mount_propagation(m.mount_propagation.as_deref(), privileged)?;
        let host = match sub_path(m, env)?.filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = Path::new(host).join(&sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|_| {
                        ConfigError(format!(
                            "failed to create subPath directory for volumeMount \"{}\" of container \"{}\"",
                            m.name, container.name
                        ))
                    })?;
                }
                let real = within_volume(&p, host, m, container)?;
                let prepare = |e: String| {
                    ConfigError(format!(
                        "failed to prepare subPath for volumeMount \"{}\" of container \"{}\": {e}",
                        m.name, container.name
                    ))
                };
                let root = std::fs::canonicalize(host).map_err(|e| prepare(e.to_string()))?;
                let target =
                    subpath::bind_target(ctx.subpaths_dir, &m.name, &container.name, index);
                subpath::bind(&root, Path::new(&real), &target).map_err(prepare)?
            }
            None => host.clone(),
        };
        mounts.push(Mount {
            container_path: m.mount_path.clone(),
            host_path: host,
            readonly: m.read_only.unwrap_or(false),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    if let Some(hosts) = ctx.etc_hosts
        && !mounts.iter().any(|m| m.container_path == hosts::ETC_HOSTS)
    {
        mounts.push(hosts.clone());
    }
    mounts.push(Mount {
        container_path: tm_path.to_string(),
        host_path: ctx.termination_log.display().to_string(),
        ..Default::default()
    });
    Ok(mounts)
}

/// The mount of image volume `m`: the runtime mounts image `image_ref` read-only (the kubelet's
/// image volume plugin is read-only), with the mount's propagation. A subPath into the image
/// needs the CRI's image_sub_path, which this CRI API version lacks: refused by name.
fn image_mount(
    m: &VolumeMount,
    image_ref: &str,
    container: &Container,
) -> Result<Mount, ConfigError> {
    let sub = m.sub_path.as_deref().unwrap_or_default();
    let sub_expr = m.sub_path_expr.as_deref().unwrap_or_default();
    if !sub.is_empty() || !sub_expr.is_empty() {
        return Err(ConfigError(format!(
            "volumeMount \"{}\" of container \"{}\": subPath into an image volume is not supported by bosun yet",
            m.name, container.name
        )));
    }
    let propagation = mount_propagation(m.mount_propagation.as_deref(), false)?;
    Ok(Mount {
        container_path: m.mount_path.clone(),
        readonly: true,
        propagation: propagation as i32,
        image: Some(ImageSpec {
            image: image_ref.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The subPath `p` resolved (symlinks followed), refused when it leads out of the volume at
/// `root` (the kubelet's "subpath ... not within volume path": a container could otherwise plant
/// a symlink that a later mount follows into the host). What is then mounted is opened beneath
/// the volume and bound through that descriptor (subpath.rs), so a symlink planted after this
/// check is refused, not followed.
fn within_volume(
    p: &Path,
    root: &str,
    m: &VolumeMount,
    container: &Container,
) -> Result<String, ConfigError> {
    let fail = |why: String| {
        ConfigError(format!(
            "failed to prepare subPath for volumeMount \"{}\" of container \"{}\": {why}",
            m.name, container.name
        ))
    };
    let root = std::fs::canonicalize(root).map_err(|e| fail(e.to_string()))?;
    let real = std::fs::canonicalize(p).map_err(|e| fail(e.to_string()))?;
    if !real.starts_with(&root) {
        return Err(fail(format!(
            "subpath {:?} not within volume path {:?}",
            real.display().to_string(),
            root.display().to_string()
        )));
    }
    Ok(real.display().to_string())
}

/// The mount's subPath, or its subPathExpr expanded from the container's `env` (the kubelet's
/// ExpandContainerVolumeMounts: a variable unset or empty is an error naming it), checked as
/// makeMounts checks it: relative, and no `..` component.
fn sub_path(m: &VolumeMount, env: &HashMap<&str, &str>) -> Result<Option<String>, ConfigError> {
    let sub = match m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        Some(expr) => {
            let mut missing = std::collections::BTreeSet::new();
            let expanded = expand_with(expr, |name| match env.get(name) {
                Some(v) if !v.is_empty() => v.to_string(),
                _ => {
                    missing.insert(name.to_string());
                    String::new()
                }
            });
            if !missing.is_empty() {
                let names: Vec<String> = missing.into_iter().collect();
                return Err(ConfigError(format!(
                    "missing value for {}",
                    names.join(", ")
                )));
            }
            Some(expanded)
        }
        None => m.sub_path.clone(),
    };
    if let Some(sub) = sub.as_deref().filter(|s| !s.is_empty()) {
        if sub.starts_with('/') {
            return Err(ConfigError(format!(
                "error SubPath `{sub}` must not be an absolute path"
            )));
        }
        if sub.split('/').any(|c| c == "..") {
            return Err(ConfigError(format!(
                "unable to provision SubPath `{sub}`: must not contain '..'"
            )));
        }
    }
    Ok(sub)
}

/// A volumeMount's mountPropagation as CRI's (the kubelet's translateMountPropagation: unset
/// and None private, HostToContainer rslave, Bidirectional rshared); Bidirectional only for a
/// privileged container, as the API's validation allows it.
fn mount_propagation(
    mode: Option<&str>,
    privileged: bool,
) -> Result<MountPropagation, ConfigError> {
    match mode {
        None | Some("None") => Ok(MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") if privileged => Ok(MountPropagation::PropagationBidirectional),
        Some("Bidirectional") => Err(ConfigError(
            "Bidirectional mount propagation is available only to privileged containers".into(),
        )),
        Some(other) => Err(ConfigError(format!(
            "invalid MountPropagation mode: {other:?}"
        ))),
    }
}

/// The annotations the kubelet puts on a container (restart count, the kubelet's container hash,
/// termination message path and policy, the pod's grace period), and Bosun's own (init).
fn annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    init: bool,
    tm_path: String,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (labels::RESTART_COUNT.to_string(), restart_count.to_string()),
        (
            labels::CONTAINER_HASH.to_string(),
            super::hash::container_hash_label(container),
        ),
        (labels::TERMINATION_MESSAGE_PATH.to_string(), tm_path),
        (
            labels::TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
        (
            labels::POD_TERMINATION_GRACE.to_string(),
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .to_string(),
        ),
    ]);
    if init {
        annotations.insert(labels::BOSUN_CONTAINER_KIND.into(), "init".into());
    }
    annotations
}

/// CPU shares and quota, memory limit and oom_score_adj with the kubelet's formulas.
pub fn linux_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> LinuxContainerResources {
    let get = |limits: bool, key: &str| {
        let r = container.resources.as_ref()?;
        let m = if limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }?;
        parse_quantity(&m.get(key)?.0).ok()
    };
    let cpu_limit = get(true, "cpu").map(|q| q.milli_value());
    let cpu_request = get(false, "cpu").map(|q| q.milli_value()).or(cpu_limit);
    let mem_limit = get(true, "memory").map(|q| q.value());
    let mem_request = get(false, "memory").map(|q| q.value()).or(mem_limit);
    let cpu_shares = milli_cpu_to_shares(cpu_request.unwrap_or(0)) as i64;
    let cpu_quota = milli_cpu_to_quota(cpu_limit.unwrap_or(0), QUOTA_PERIOD_US);
    let qos = qos_class(pod);
    LinuxContainerResources {
        cpu_period: if cpu_quota > 0 { CPU_PERIOD_US } else { 0 },
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: mem_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj(qos, mem_request.unwrap_or(0), memory_capacity),
        ..Default::default()
    }
}

/// The kubelet's oom_score_adj: -997 Guaranteed, 1000 BestEffort, Burstable by memory request share.
pub fn oom_score_adj(qos: QosClass, memory_request: i64, memory_capacity: i64) -> i64 {
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let adj = if memory_capacity > 0 {
                1000 - (1000 * i128::from(memory_request)) / i128::from(memory_capacity)
            } else {
                999
            };
            adj.clamp(2, 999) as i64
        }
    }
}

/// Env of the container, as the kubelet builds it: service link variables, then envFrom
/// (configMapRef, secretRef, with prefix), then env (value with `$(VAR)` expansion, fieldRef,
/// resourceFieldRef, configMapKeyRef, secretKeyRef). Missing objects or keys that are not
/// optional are a CreateContainerConfigError with the kubelet's message.
fn env_vars(
    pod: &Pod,
    container: &Container,
    ctx: &ContainerContext<'_>,
) -> Result<Vec<KeyValue>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out: Vec<KeyValue> = Vec::new();
    for (k, v) in ctx.service_env {
        set_env(&mut out, k.clone(), v.clone());
    }
    env_from_sources(container, ctx, &mut out)?;
    for e in container.env.iter().flatten() {
        let defined: HashMap<&str, &str> = out
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        let value = if let Some(v) = &e.value {
            expand(v, &defined)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, ctx).ok_or_else(|| {
                    ConfigError(format!(
                        "unsupported fieldRef {:?} in env {}",
                        f.field_path, e.name
                    ))
                })?
            } else if let Some(r) = &src.resource_field_ref {
                let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter())
                        .find(|c| c.name == n)
                        .unwrap_or(container),
                    None => container,
                };
                resource_value(c, &r.resource, r.divisor.as_ref(), ctx.allocatable).ok_or_else(
                    || {
                        ConfigError(format!(
                            "unsupported resourceFieldRef {:?} in env {}",
                            r.resource, e.name
                        ))
                    },
                )?
            } else if let Some(cm) = &src.config_map_key_ref {
                match ctx.config_maps.get(&cm.name).cloned().flatten() {
                    Some(d) => match d.get(&cm.key) {
                        Some(v) => v.clone(),
                        None if cm.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                cm.key, cm.name
                            )));
                        }
                    },
                    None if cm.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError(format!("configmap \"{}\" not found", cm.name)));
                    }
                }
            } else if let Some(sk) = &src.secret_key_ref {
                match ctx.secrets.get(&sk.name).cloned().flatten() {
                    Some(d) => match d.get(&sk.key) {
                        Some(v) => v.clone(),
                        None if sk.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                sk.key, sk.name
                            )));
                        }
                    },
                    None if sk.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", sk.name))),
                }
            } else if src.file_key_ref.is_some() {
                // EnvFiles (on by default since v1.35): the kubelet reads the key from an env file
                // in the pod's emptyDir; never start the container with the variable missing.
                return Err(ConfigError(format!(
                    "fileKeyRef in env {} is not supported by bosun yet",
                    e.name
                )));
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set_env(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

/// Sets `key` to `value`, replacing an earlier definition (a later source wins).
fn set_env(out: &mut Vec<KeyValue>, key: String, value: String) {
    out.retain(|kv| kv.key != key);
    out.push(KeyValue { key, value });
}

/// The container's envFrom sources (configMaps and secrets, each key with the source's prefix)
/// into `out`, in order; a missing source that is not optional is a config error.
fn env_from_sources(
    container: &Container,
    ctx: &ContainerContext<'_>,
    out: &mut Vec<KeyValue>,
) -> Result<(), ConfigError> {
    for src in container.env_from.iter().flatten() {
        let prefix = src.prefix.clone().unwrap_or_default();
        let (data, optional, what, name) = if let Some(cm) = &src.config_map_ref {
            (
                ctx.config_maps.get(&cm.name).cloned().flatten(),
                cm.optional == Some(true),
                "configmap",
                cm.name.clone(),
            )
        } else if let Some(sr) = &src.secret_ref {
            (
                ctx.secrets.get(&sr.name).cloned().flatten(),
                sr.optional == Some(true),
                "secret",
                sr.name.clone(),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set_env(out, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{what} \"{name}\" not found"))),
        }
    }
    Ok(())
}

fn field_value(pod: &Pod, path: &str, ctx: &ContainerContext<'_>) -> Option<String> {
    let md = &pod.metadata;
    Some(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => ctx.node_name.to_string(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()?
            .service_account_name
            .clone()
            .unwrap_or_default(),
        "status.podIP" => ctx.pod_ip.to_string(),
        "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        p => {
            let (map, key) = if let Some(k) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                (md.labels.as_ref(), k)
            } else if let Some(k) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                (md.annotations.as_ref(), k)
            } else {
                return None;
            };
            map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
        }
    })
}

/// The value a resourceFieldRef (`limits.cpu`, `requests.memory`) resolves to, in units of its
/// `divisor` (unset or zero: 1), rounded up as the kubelet's ExtractContainerResourceValue: CPU in
/// millicores over the divisor's millicores, anything else in whole units over the divisor's. A
/// cpu, memory or ephemeral-storage limit the container does not set (or sets to zero) is the
/// node's `allocatable` (thousandths by resource), as the kubelet's
/// defaultPodLimitsForDownwardAPI.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    allocatable: &BTreeMap<String, i128>,
) -> Option<String> {
    let (limits, key) = resource.split_once('.')?;
    let r = container.resources.as_ref();
    let m = if limits == "limits" {
        r.and_then(|r| r.limits.as_ref())
    } else {
        r.and_then(|r| r.requests.as_ref())
    };
    let mut milli = m
        .and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0).ok())
        .map(|q| i128::from(q.milli_value()));
    // MergeContainerResourceLimits (hugepages are never defaulted: they are never overcommitted).
    if limits == "limits"
        && ["cpu", "memory", "ephemeral-storage"].contains(&key)
        && milli.unwrap_or(0) == 0
    {
        milli = allocatable.get(key).copied().or(milli);
    }
    let one = parse_quantity("1").ok()?;
    let divisor = match divisor.map(|d| parse_quantity(&d.0)) {
        Some(Ok(d)) if d.milli_value() != 0 => d,
        Some(Err(_)) => return None,
        _ => one,
    };
    let Some(milli) = milli else {
        return Some("0".to_string());
    };
    let (value, per) = if key == "cpu" {
        (milli, i128::from(divisor.milli_value()))
    } else {
        // Whole units, rounded up as Quantity.Value().
        ((milli + 999).div_euclid(1000), i128::from(divisor.value()))
    };
    let per = per.max(1);
    // Ceiling division; quantities in a pod spec are never negative.
    Some(((value + per - 1).div_euclid(per)).to_string())
}

/// Expands `$(VAR)` from `env`; `$$(VAR)` escapes to a literal `$(VAR)`; unknown references stay.
pub fn expand(s: &str, env: &HashMap<&str, &str>) -> String {
    expand_with(s, |name| match env.get(name) {
        Some(v) => v.to_string(),
        None => format!("$({name})"),
    })
}

/// Expands every `$(VAR)` of `s` to `lookup(VAR)`; `$$` is a literal `$`.
fn expand_with(s: &str, mut lookup: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                out.push_str(&lookup(&s[i + 2..i + 2 + end]));
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_matches_the_kubelet() {
        let env = HashMap::from([("A", "1"), ("B", "two")]);
        let cases = [
            ("$(A)", "1"),
            ("x$(B)y", "xtwoy"),
            ("$$(A)", "$(A)"),
            ("$(C)", "$(C)"),
            ("$(A", "$(A"),
            ("$", "$"),
            ("ünï$(A)", "ünï1"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    fn volume_mount(json: serde_json::Value) -> VolumeMount {
        serde_json::from_value(json).unwrap()
    }

    /// A subPath that a symlink in the volume leads out of the volume is refused; one inside is
    /// mounted by its resolved path.
    #[test]
    fn a_sub_path_leading_out_of_the_volume_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        let outside = dir.path().join("host-etc");
        std::fs::create_dir_all(volume.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("escape")).unwrap();
        std::os::unix::fs::symlink("real", volume.join("inside")).unwrap();
        let c = Container {
            name: "c".into(),
            ..Default::default()
        };
        let m = volume_mount(serde_json::json!({"name": "v", "mountPath": "/m"}));
        let root = volume.display().to_string();
        let err = within_volume(&volume.join("escape"), &root, &m, &c).unwrap_err();
        assert!(
            err.0.starts_with(
                "failed to prepare subPath for volumeMount \"v\" of container \"c\": subpath"
            ) && err.0.contains("not within volume path"),
            "{}",
            err.0
        );
        let ok = within_volume(&volume.join("inside"), &root, &m, &c).unwrap();
        assert_eq!(
            ok,
            volume
                .canonicalize()
                .unwrap()
                .join("real")
                .display()
                .to_string()
        );
    }

    /// subPathExpr expands from the container's env as the kubelet's expandSubpath; a variable
    /// unset or empty is an error naming each, sorted; the result is checked as a subPath is.
    #[test]
    fn sub_path_expr_expands_from_the_env() {
        let env = HashMap::from([("POD_NAME", "web-0"), ("NS", "prod"), ("EMPTY", "")]);
        let expr = |e: &str| {
            volume_mount(serde_json::json!({"name": "v", "mountPath": "/m", "subPathExpr": e}))
        };
        let cases: [(&str, Result<Option<&str>, &str>); 8] = [
            ("$(POD_NAME)", Ok(Some("web-0"))),
            ("logs/$(NS)/$(POD_NAME)", Ok(Some("logs/prod/web-0"))),
            ("$$(POD_NAME)", Ok(Some("$(POD_NAME)"))),
            ("$(B)/$(A)/$(EMPTY)", Err("missing value for A, B, EMPTY")),
            (
                "/abs/$(NS)",
                Err("error SubPath `/abs/prod` must not be an absolute path"),
            ),
            (
                "$(NS)/../x",
                Err("unable to provision SubPath `prod/../x`: must not contain '..'"),
            ),
            ("a..b", Ok(Some("a..b"))),
            ("", Ok(None)),
        ];
        for (input, want) in cases {
            let got = sub_path(&expr(input), &env);
            let got = got.as_ref().map(|s| s.as_deref()).map_err(|e| e.0.as_str());
            assert_eq!(got, want, "{input:?}");
        }
        // A plain subPath is taken as is (no expansion), with the same checks.
        let plain =
            volume_mount(serde_json::json!({"name": "v", "mountPath": "/m", "subPath": "$(NS)"}));
        assert_eq!(sub_path(&plain, &env), Ok(Some("$(NS)".into())));
        let up =
            volume_mount(serde_json::json!({"name": "v", "mountPath": "/m", "subPath": "../x"}));
        assert_eq!(
            sub_path(&up, &env),
            Err(ConfigError(
                "unable to provision SubPath `../x`: must not contain '..'".into()
            ))
        );
    }

    /// An image volume is the runtime's to mount: the image ref, read-only whatever the mount
    /// says; a subPath into it is refused by name.
    #[test]
    fn an_image_volume_mounts_the_image_read_only() {
        let c = Container {
            name: "app".into(),
            ..Default::default()
        };
        let m = VolumeMount {
            name: "tools".into(),
            mount_path: "/tools".into(),
            read_only: Some(false),
            ..Default::default()
        };
        let got = image_mount(&m, "sha256:abc", &c).unwrap();
        assert_eq!(got.container_path, "/tools");
        assert!(got.readonly);
        assert_eq!(got.host_path, "");
        assert_eq!(got.image.map(|i| i.image), Some("sha256:abc".to_string()));
        let sub = VolumeMount {
            sub_path: Some("bin".into()),
            ..m
        };
        assert_eq!(
            image_mount(&sub, "sha256:abc", &c).unwrap_err().0,
            "volumeMount \"tools\" of container \"app\": subPath into an image volume is not supported by bosun yet"
        );
    }

    /// mountPropagation as CRI's, and Bidirectional for privileged containers only.
    #[test]
    fn mount_propagation_maps_to_cri() {
        use MountPropagation::*;
        let cases = [
            (None, false, Ok(PropagationPrivate)),
            (Some("None"), false, Ok(PropagationPrivate)),
            (
                Some("HostToContainer"),
                false,
                Ok(PropagationHostToContainer),
            ),
            (Some("Bidirectional"), true, Ok(PropagationBidirectional)),
            (
                Some("Bidirectional"),
                false,
                Err("Bidirectional mount propagation is available only to privileged containers"),
            ),
            (
                Some("Shared"),
                true,
                Err("invalid MountPropagation mode: \"Shared\""),
            ),
        ];
        for (mode, privileged, want) in cases {
            let got = mount_propagation(mode, privileged).map_err(|e| e.0);
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{mode:?} privileged={privileged}"
            );
        }
    }

    /// The kubelet's ExtractContainerResourceValue cases: the divisor, rounding up, defaults.
    #[test]
    fn resource_field_values_in_units_of_the_divisor() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                        "limits": {"cpu": "1500m", "memory": "100M"}}}
        ]}}))
        .unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let cases = [
            ("limits.cpu", None, "2"),
            ("limits.cpu", Some("1m"), "1500"),
            ("requests.cpu", Some("100m"), "3"),
            ("requests.cpu", Some("0"), "1"),
            ("requests.memory", None, "67108864"),
            ("requests.memory", Some("1Mi"), "64"),
            ("limits.memory", Some("1Mi"), "96"),
            ("limits.memory", Some("1k"), "100000"),
            // Limits the container does not set: the node's allocatable, as the kubelet's
            // defaultPodLimitsForDownwardAPI (MergeContainerResourceLimits).
            ("limits.ephemeral-storage", Some("1Mi"), "10240"),
            ("limits.ephemeral-storage", None, "10737418240"),
            // Requests are not defaulted.
            ("requests.ephemeral-storage", None, "0"),
        ];
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), 1_500),
            ("memory".to_string(), 3_000_000 * 1000),
            ("ephemeral-storage".to_string(), (10_i128 << 30) * 1000),
        ]);
        for (resource, divisor, want) in cases {
            let d = divisor.map(|d| Q(d.to_string()));
            assert_eq!(
                resource_value(c, resource, d.as_ref(), &allocatable).as_deref(),
                Some(want),
                "{resource} / {divisor:?}"
            );
        }
        // A container without limits: every defaulted limit is the allocatable's; a zero limit
        // counts as unset.
        let none: Container = serde_json::from_value(serde_json::json!(
            {"name": "n", "resources": {"limits": {"memory": "0"}}}))
        .unwrap();
        for (resource, divisor, want) in [
            ("limits.cpu", Some("1m"), "1500"),
            ("limits.cpu", None, "2"),
            ("limits.memory", None, "3000000"),
            ("limits.memory", Some("1k"), "3000"),
        ] {
            let d = divisor.map(|d| Q(d.to_string()));
            assert_eq!(
                resource_value(&none, resource, d.as_ref(), &allocatable).as_deref(),
                Some(want),
                "{resource} / {divisor:?}"
            );
        }
    }

    #[test]
    fn oom_score_adj_by_qos() {
        let gi = 1 << 30;
        assert_eq!(oom_score_adj(QosClass::Guaranteed, gi, 4 * gi), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, 0, 4 * gi), 1000);
        assert_eq!(oom_score_adj(QosClass::Burstable, gi, 4 * gi), 750);
        assert_eq!(oom_score_adj(QosClass::Burstable, 0, 4 * gi), 999);
        assert_eq!(oom_score_adj(QosClass::Burstable, 4 * gi, 4 * gi), 2);
        // Found by fuzzing: a request whose product overflows i64 is above capacity: 2.
        assert_eq!(oom_score_adj(QosClass::Burstable, i64::MAX, 4 * gi), 2);
    }

    #[test]
    fn resources_follow_the_kubelet_formulas() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}}
        ]}}))
        .unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&pod, c, 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, 1000 - 1000 * (64 << 20) / (1 << 30));
        let be: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}))
                .unwrap();
        let r = linux_resources(&be, &be.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
    }
}
