//! Flags over the file, then validation into the typed [`Config`], every error naming its field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::eviction::{Signal, Threshold};
use super::file::{KubeletConfiguration, Taint};
use super::sysctls::SysctlAllowlist;
use super::{
    ApiConfig, Authentication, Authorization, AuthorizationMode, CgroupConfig, CgroupDriver,
    ChangeDetectionStrategy, Config, ConfigError, ContainerLogsConfig, FieldError, Flags,
    ImagesConfig, LogFormat, LoggingConfig, NodeConfig, PathsConfig, PodsConfig, Reserved,
    RuntimeConfig, ServerConfig, non_empty_path,
};
use crate::resource::parse_quantity;

/// The kubelet's state directory.
const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Where the kubelet links container logs for log shippers.
const DEFAULT_CONTAINER_LOGS_LINK_DIR: &str = "/var/log/containers";

/// Collects field errors so one run reports all of them.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value` as a port, 0 allowed when `zero_ok`.
    fn port(&mut self, field: &str, value: i32, zero_ok: bool) -> u16 {
        if (zero_ok && value == 0) || (1..=65535).contains(&value) {
            value as u16
        } else {
            self.push(field, format!("must be between 1 and 65535, got {value}"));
            0
        }
    }

    /// `value` as a positive u32.
    fn positive(&mut self, field: &str, value: i32) -> u32 {
        if value > 0 {
            value as u32
        } else {
            self.push(field, format!("must be greater than 0, got {value}"));
            0
        }
    }

    /// `value` as a percentage 0..=100.
    fn percent(&mut self, field: &str, value: i32) -> u8 {
        if (0..=100).contains(&value) {
            value as u8
        } else {
            self.push(field, format!("must be between 0 and 100, got {value}"));
            0
        }
    }

    fn ip(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.push(field, format!("must be a valid IP address, got {value:?}"));
        }
    }

    fn positive_duration(&mut self, field: &str, value: Duration) {
        if value.is_zero() {
            self.push(field, "must be greater than 0");
        }
    }
}

/// Parses `k=v,k2=v2` (several occurrences merge) into a map.
fn parse_map(flag: &str, values: &[String], errors: &mut Errors) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for pair in values.iter().flat_map(|v| v.split(',')) {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        match pair.split_once('=') {
            Some((k, v)) => {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
            None => errors.push(flag, format!("{pair:?} is not key=value")),
        }
    }
    map
}

/// Parses `key=value:Effect,key2:Effect` as `--register-with-taints` does.
pub(super) fn parse_taints(value: &str) -> Result<Vec<Taint>, String> {
    let mut taints = Vec::new();
    for spec in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key_value, effect) = spec
            .rsplit_once(':')
            .ok_or_else(|| format!("{spec:?}: want key=value:Effect or key:Effect"))?;
        let effect = effect.parse().map_err(|e| format!("{spec:?}: {e}"))?;
        let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
        taints.push(Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        });
    }
    Ok(taints)
}

/// Applies the flags that override file fields.
fn apply_flags(k: &mut KubeletConfiguration, f: &Flags, errors: &mut Errors) {
    fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
        if let Some(v) = flag {
            *field = v.clone();
        }
    }
    set(
        &mut k.container_runtime_endpoint,
        &f.container_runtime_endpoint,
    );
    set(&mut k.image_service_endpoint, &f.image_service_endpoint);
    set(&mut k.static_pod_path, &f.pod_manifest_path);
    set(&mut k.cgroup_driver, &f.cgroup_driver);
    set(&mut k.cgroup_root, &f.cgroup_root);
    set(&mut k.cgroups_per_qos, &f.cgroups_per_qos);
    set(&mut k.max_pods, &f.max_pods);
    if !f.cluster_dns.is_empty() {
        k.cluster_dns = f
            .cluster_dns
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    set(&mut k.cluster_domain, &f.cluster_domain);
    set(&mut k.resolv_conf, &f.resolv_conf);
    set(&mut k.fail_swap_on, &f.fail_swap_on);
    set(&mut k.runtime_request_timeout, &f.runtime_request_timeout);
    set(&mut k.authentication.anonymous.enabled, &f.anonymous_auth);
    set(
        &mut k.authentication.webhook.enabled,
        &f.authentication_token_webhook,
    );
    set(&mut k.authorization.mode, &f.authorization_mode);
    set(&mut k.authentication.x509.client_ca_file, &f.client_ca_file);
    set(&mut k.read_only_port, &f.read_only_port);
    set(&mut k.healthz_port, &f.healthz_port);
    set(&mut k.healthz_bind_address, &f.healthz_bind_address);
    set(&mut k.address, &f.address);
    set(&mut k.port, &f.port);
    set(&mut k.tls_cert_file, &f.tls_cert_file);
    set(&mut k.tls_private_key_file, &f.tls_private_key_file);
    set(&mut k.rotate_certificates, &f.rotate_certificates);
    set(
        &mut k.node_status_update_frequency,
        &f.node_status_update_frequency,
    );
    set(&mut k.register_node, &f.register_node);
    set(&mut k.pod_pids_limit, &f.pod_max_pids);
    for (gate, value) in parse_map("--feature-gates", &f.feature_gates, errors) {
        match super::flags::go_bool_value(&value) {
            Some(v) => {
                k.feature_gates.insert(gate, v);
            }
            None => errors.push(
                "--feature-gates",
                format!("{gate}: invalid boolean {value:?}"),
            ),
        }
    }
    if !f.system_reserved.is_empty() {
        k.system_reserved = parse_map("--system-reserved", &f.system_reserved, errors);
    }
    if !f.kube_reserved.is_empty() {
        k.kube_reserved = parse_map("--kube-reserved", &f.kube_reserved, errors);
    }
    match f.register_with_taints.as_deref().map(parse_taints) {
        Some(Ok(taints)) => k.register_with_taints = taints,
        Some(Err(e)) => errors.push("--register-with-taints", e),
        None => {}
    }
    if let Some(format) = f.log_format {
        k.logging.format = match format {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        };
    }
    if let Some(v) = f.verbosity {
        k.logging.verbosity = u32::from(v);
    }
}

/// True when `s` is a quantity (the exact parser resources use) of at least zero.
fn non_negative_quantity(s: &str) -> bool {
    parse_quantity(s).is_ok_and(|q| q.milli_value() >= 0)
}

fn check_reserved(field: &str, map: &BTreeMap<String, String>, errors: &mut Errors) {
    for (resource, value) in map {
        let name = format!("{field}.{resource}");
        if !["cpu", "memory", "ephemeral-storage", "pid"].contains(&resource.as_str()) {
            errors.push(
                name,
                "cannot reserve this resource (cpu, memory, ephemeral-storage or pid)",
            );
        } else if !non_negative_quantity(value) {
            errors.push(
                name,
                format!("must be a non-negative quantity, got {value:?}"),
            );
        }
    }
}

/// `name` is a DNS-1123 label-ish name part: alphanumeric ends, `-_.` inside, at most 63 chars.
fn is_label_name(name: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && name.len() <= 63
        && ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain (label key prefix).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A qualified name (`prefix/name` or `name`), as label and taint keys are.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Err(format!("key {key:?}: prefix must be a DNS subdomain"));
    }
    if !is_label_name(name) {
        return Err(format!(
            "key {key:?}: name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn check_label_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} of {key:?}: must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

/// kubernetes.io / k8s.io labels a kubelet may set on its own Node (the NodeRestriction rules).
fn is_allowed_node_label(key: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    ALLOWED.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

fn check_node_labels(labels: &BTreeMap<String, String>, errors: &mut Errors) {
    for (key, value) in labels {
        if let Err(e) = check_qualified_name(key).and_then(|()| check_label_value(key, value)) {
            errors.push("--node-labels", e);
        } else if !is_allowed_node_label(key) {
            errors.push(
                "--node-labels",
                format!(
                    "{key:?}: labels in the kubernetes.io and k8s.io namespaces must start with \
                     kubelet.kubernetes.io/ or node.kubernetes.io/ or be a well-known node label"
                ),
            );
        }
    }
}

fn check_taints(field: &str, taints: &[Taint], errors: &mut Errors) {
    for t in taints {
        if let Err(e) =
            check_qualified_name(&t.key).and_then(|()| check_label_value(&t.key, &t.value))
        {
            errors.push(field, format!("taint {e}"));
        }
    }
}

/// Parses `--node-ip`: one IP, or two of different families.
fn parse_node_ips(value: &str, errors: &mut Errors) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for part in value.split(',').map(str::trim) {
        match part.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => errors.push("--node-ip", format!("invalid IP address {part:?}")),
        }
    }
    if ips.len() > 2 || (ips.len() == 2 && ips[0].is_ipv4() == ips[1].is_ipv4()) {
        errors.push(
            "--node-ip",
            format!("want one IP or one IPv4 and one IPv6, got {value:?}"),
        );
    }
    ips
}

/// Normalizes the CRI endpoint: `unix://` URLs; a bare absolute path is accepted with a warning.
fn runtime_endpoint(
    field: &str,
    value: &str,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> String {
    if value.starts_with("unix:///") {
        value.to_string()
    } else if value.starts_with('/') {
        warnings.push(format!(
            "{field}: {value:?} has no scheme, using unix://{value}; write the unix:// URL"
        ));
        format!("unix://{value}")
    } else {
        errors.push(
            field,
            format!("must be a unix:///path endpoint, got {value:?}"),
        );
        value.to_string()
    }
}

/// Merges flags into the defaulted file configuration and validates the result.
pub(super) fn build(
    mut k: KubeletConfiguration,
    f: &Flags,
    node_name: String,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let mut e = Errors::default();
    apply_flags(&mut k, f, &mut e);
    warnings.extend(super::not_acted_on::warnings(&k));
    let v = validate(&k, f, &mut e, warnings);
    if !f.show_version() && !e.0.is_empty() {
        return Err(ConfigError::Invalid(e.0));
    }
    Ok(assemble(k, f, node_name, v))
}

/// What validation parsed out of the configuration, on its way into [`Config`].
struct Validated {
    ports: Ports,
    modes: Modes,
    max_pods: u32,
    node_lease_duration_seconds: u32,
    image_gc: (u8, u8),
    log_rotation: LogRotation,
    serialize_image_pulls: bool,
    max_parallel_image_pulls: Option<u32>,
    thresholds: Vec<super::eviction::Threshold>,
    endpoints: (String, String),
    sysctls: SysctlAllowlist,
    node_ips: Vec<IpAddr>,
    node_labels: BTreeMap<String, String>,
}

/// Validates every field, each problem pushed to `e` with the field's name, in the order the
/// fields are checked.
fn validate(
    k: &KubeletConfiguration,
    f: &Flags,
    e: &mut Errors,
    warnings: &mut Vec<String>,
) -> Validated {
    let ports = ports_and_addresses(k, e, warnings);
    let modes = modes(k, e);
    let max_pods = e.positive("maxPods", k.max_pods);
    let node_lease_duration_seconds =
        e.positive("nodeLeaseDurationSeconds", k.node_lease_duration_seconds);
    let image_gc = image_gc(k, e);
    let log_rotation = log_rotation(k, e);
    let (serialize_image_pulls, max_parallel_image_pulls) = image_pulls(k, e);
    check_periods(k, e);
    let eviction_hard = k.eviction_hard.clone().unwrap_or_default();
    let thresholds = eviction_thresholds(k, &eviction_hard, e);
    check_reserved("systemReserved", &k.system_reserved, e);
    check_reserved("kubeReserved", &k.kube_reserved, e);
    check_enforce_node_allocatable(k, e);
    check_paths(k, e);
    let endpoints = endpoints(k, e, warnings);
    check_taints("registerWithTaints", &k.register_with_taints, e);
    let sysctls = SysctlAllowlist::new(&k.allowed_unsafe_sysctls).unwrap_or_else(|m| {
        e.push("allowedUnsafeSysctls", m);
        Default::default()
    });
    let node_ips = f
        .node_ip
        .as_deref()
        .map_or_else(Vec::new, |v| parse_node_ips(v, e));
    let node_labels = parse_map("--node-labels", &f.node_labels, e);
    check_node_labels(&node_labels, e);
    Validated {
        ports,
        modes,
        max_pods,
        node_lease_duration_seconds,
        image_gc,
        log_rotation,
        serialize_image_pulls,
        max_parallel_image_pulls,
        thresholds,
        endpoints,
        sysctls,
        node_ips,
        node_labels,
    }
}

/// The ports Bosun serves on.
struct Ports {
    port: u16,
    healthz_port: u16,
    read_only_port: u16,
}

/// The ports and the addresses to bind and to resolve with.
fn ports_and_addresses(
    k: &KubeletConfiguration,
    e: &mut Errors,
    warnings: &mut Vec<String>,
) -> Ports {
    let port = e.port("port", k.port, false);
    let healthz_port = e.port("healthzPort", k.healthz_port, true);
    let read_only_port = e.port("readOnlyPort", k.read_only_port, true);
    if read_only_port != 0 {
        warnings.push(
            "readOnlyPort: the unauthenticated read-only server is not served by bosun".into(),
        );
    }
    e.ip("address", &k.address);
    e.ip("healthzBindAddress", &k.healthz_bind_address);
    for (i, ip) in k.cluster_dns.iter().enumerate() {
        e.ip(&format!("clusterDNS[{i}]"), ip);
    }
    Ports {
        port,
        healthz_port,
        read_only_port,
    }
}

/// The fields that name one of a few modes.
struct Modes {
    cgroup_driver: CgroupDriver,
    change_detection: ChangeDetectionStrategy,
    authorization: AuthorizationMode,
    log_format: LogFormat,
    verbosity: u8,
}

/// Parses the fields that name one of a few modes (cgroup driver, configMap and secret change
/// detection, authorization, hairpin, log format) and the log verbosity.
fn modes(k: &KubeletConfiguration, e: &mut Errors) -> Modes {
    let cgroup_driver = match k.cgroup_driver.as_str() {
        "cgroupfs" => CgroupDriver::Cgroupfs,
        "systemd" => CgroupDriver::Systemd,
        other => {
            e.push(
                "cgroupDriver",
                format!("must be cgroupfs or systemd, got {other:?}"),
            );
            CgroupDriver::Cgroupfs
        }
    };
    let change_detection = match k.config_map_and_secret_change_detection_strategy.as_str() {
        "Watch" => ChangeDetectionStrategy::Watch,
        "Cache" => ChangeDetectionStrategy::Cache,
        "Get" => ChangeDetectionStrategy::Get,
        other => {
            e.push(
                "configMapAndSecretChangeDetectionStrategy",
                format!("unknown configmap and secret manager mode: {other:?} (must be Watch, Cache or Get)"),
            );
            ChangeDetectionStrategy::Watch
        }
    };
    let authorization = match k.authorization.mode.as_str() {
        "Webhook" => AuthorizationMode::Webhook,
        "AlwaysAllow" => AuthorizationMode::AlwaysAllow,
        other => {
            e.push(
                "authorization.mode",
                format!("must be Webhook or AlwaysAllow, got {other:?}"),
            );
            AuthorizationMode::Webhook
        }
    };
    if !["promiscuous-bridge", "hairpin-veth", "none"].contains(&k.hairpin_mode.as_str()) {
        e.push(
            "hairpinMode",
            format!(
                "must be promiscuous-bridge, hairpin-veth or none, got {:?}",
                k.hairpin_mode
            ),
        );
    }
    let log_format = match k.logging.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            e.push(
                "logging.format",
                format!("must be text or json, got {other:?}"),
            );
            LogFormat::Text
        }
    };
    let verbosity = u8::try_from(k.logging.verbosity).unwrap_or_else(|_| {
        e.push(
            "logging.verbosity",
            format!("must be at most 255, got {}", k.logging.verbosity),
        );
        0
    });
    Modes {
        cgroup_driver,
        change_detection,
        authorization,
        log_format,
        verbosity,
    }
}

/// The image GC thresholds (high, low) and ages.
fn image_gc(k: &KubeletConfiguration, e: &mut Errors) -> (u8, u8) {
    let high = e.percent(
        "imageGCHighThresholdPercent",
        k.image_gc_high_threshold_percent,
    );
    let low = e.percent(
        "imageGCLowThresholdPercent",
        k.image_gc_low_threshold_percent,
    );
    if low >= high && k.image_gc_high_threshold_percent <= 100 {
        e.push(
            "imageGCLowThresholdPercent",
            format!("must be less than imageGCHighThresholdPercent ({high}), got {low}"),
        );
    }
    if !k.image_maximum_gc_age.is_zero() && k.image_maximum_gc_age <= k.image_minimum_gc_age {
        e.push(
            "imageMaximumGCAge",
            format!(
                "must be greater than imageMinimumGCAge ({}), got {}",
                super::duration::format(k.image_minimum_gc_age),
                super::duration::format(k.image_maximum_gc_age)
            ),
        );
    }
    (high, low)
}

/// The container log manager's settings.
struct LogRotation {
    max_size: u64,
    max_files: u32,
    max_workers: u32,
}

/// The container log manager's size, file count, workers and interval.
fn log_rotation(k: &KubeletConfiguration, e: &mut Errors) -> LogRotation {
    let max_files = if k.container_log_max_files >= 2 {
        k.container_log_max_files as u32
    } else {
        e.push(
            "containerLogMaxFiles",
            format!("must be at least 2, got {}", k.container_log_max_files),
        );
        0
    };
    let max_size = match parse_quantity(&k.container_log_max_size) {
        // At least one byte; a fraction of a byte rounds up as the API server does.
        Ok(q) if q.milli_value() >= 1000 => q.value() as u64,
        _ => {
            e.push(
                "containerLogMaxSize",
                format!(
                    "must be a positive quantity such as 10Mi, got {:?}",
                    k.container_log_max_size
                ),
            );
            0
        }
    };
    let max_workers = if k.container_log_max_workers >= 1 {
        k.container_log_max_workers as u32
    } else {
        e.push(
            "containerLogMaxWorkers",
            format!(
                "must be greater than or equal to 1, got {}",
                k.container_log_max_workers
            ),
        );
        0
    };
    if k.container_log_monitor_interval < Duration::from_secs(3) {
        e.push(
            "containerLogMonitorInterval",
            format!(
                "must be a positive time duration greater than or equal to 3s, got {}",
                super::duration::format(k.container_log_monitor_interval)
            ),
        );
    }
    LogRotation {
        max_size,
        max_files,
        max_workers,
    }
}

/// serializeImagePulls and maxParallelImagePulls, which must agree.
fn image_pulls(k: &KubeletConfiguration, e: &mut Errors) -> (bool, Option<u32>) {
    let max_parallel_image_pulls = match k.max_parallel_image_pulls {
        None => None,
        Some(n) if n >= 1 => Some(n as u32),
        Some(n) => {
            e.push(
                "maxParallelImagePulls",
                format!("must be at least 1, got {n}"),
            );
            None
        }
    };
    let serialize_image_pulls = k.serialize_image_pulls.unwrap_or(true);
    if serialize_image_pulls && max_parallel_image_pulls.is_some_and(|n| n > 1) {
        e.push(
            "maxParallelImagePulls",
            "must not be set above 1 when serializeImagePulls is true",
        );
    }
    (serialize_image_pulls, max_parallel_image_pulls)
}

/// The loops' periods and the shutdown grace periods.
fn check_periods(k: &KubeletConfiguration, e: &mut Errors) {
    for (field, value) in [
        ("syncFrequency", k.sync_frequency),
        ("fileCheckFrequency", k.file_check_frequency),
        ("runtimeRequestTimeout", k.runtime_request_timeout),
        ("nodeStatusUpdateFrequency", k.node_status_update_frequency),
        ("nodeStatusReportFrequency", k.node_status_report_frequency),
    ] {
        e.positive_duration(field, value);
    }
    check_shutdown(k, e);
}

/// The graceful node shutdown fields, as the kubelet validates them with GracefulNodeShutdown and
/// GracefulNodeShutdownBasedOnPodPriority on (their defaults).
fn check_shutdown(k: &KubeletConfiguration, e: &mut Errors) {
    let (period, critical) = (
        k.shutdown_grace_period,
        k.shutdown_grace_period_critical_pods,
    );
    if critical > period {
        e.push(
            "shutdownGracePeriodCriticalPods",
            format!(
                "shutdownGracePeriodCriticalPods {} must be <= shutdownGracePeriod {}",
                super::duration::format(critical),
                super::duration::format(period)
            ),
        );
    }
    for (field, value) in [
        ("shutdownGracePeriod", period),
        ("shutdownGracePeriodCriticalPods", critical),
    ] {
        if !value.is_zero() && value < Duration::from_secs(1) {
            e.push(
                field,
                format!(
                    "{field} {} must be either zero or otherwise >= 1 sec",
                    super::duration::format(value)
                ),
            );
        }
    }
    if !k.shutdown_grace_period_by_pod_priority.is_empty()
        && (!period.is_zero() || !critical.is_zero())
    {
        e.push(
            "shutdownGracePeriodByPodPriority",
            "Cannot specify both shutdownGracePeriodByPodPriority and shutdownGracePeriod at the \
             same time",
        );
    }
}

/// The eviction thresholds (hard, soft, grace periods, minimum reclaim), parsed once.
fn eviction_thresholds(
    k: &KubeletConfiguration,
    eviction_hard: &BTreeMap<String, String>,
    e: &mut Errors,
) -> Vec<super::eviction::Threshold> {
    super::eviction::thresholds(super::eviction::Fields {
        hard: eviction_hard,
        soft: &k.eviction_soft,
        soft_grace_period: &k.eviction_soft_grace_period,
        minimum_reclaim: &k.eviction_minimum_reclaim,
        enforce_node_allocatable: &k.enforce_node_allocatable,
    })
    .unwrap_or_else(|problems| {
        for (field, message) in problems {
            e.push(field, message);
        }
        Vec::new()
    })
}

/// enforceNodeAllocatable: known values, "none" alone, and cgroupsPerQOS to enforce with.
fn check_enforce_node_allocatable(k: &KubeletConfiguration, e: &mut Errors) {
    const ENFORCE: &[&str] = &[
        "none",
        "pods",
        "system-reserved",
        "system-reserved-compressible",
        "kube-reserved",
        "kube-reserved-compressible",
    ];
    for v in &k.enforce_node_allocatable {
        if !ENFORCE.contains(&v.as_str()) {
            e.push(
                "enforceNodeAllocatable",
                format!("unknown value {v:?}, want one of {}", ENFORCE.join(", ")),
            );
        }
    }
    let enforced = k.enforce_node_allocatable.iter().any(|v| v != "none");
    if enforced && k.enforce_node_allocatable.iter().any(|v| v == "none") {
        e.push("enforceNodeAllocatable", "\"none\" must be the only value");
    }
    if enforced && !k.cgroups_per_qos {
        e.push("enforceNodeAllocatable", "requires cgroupsPerQOS");
    }
}

/// The serving certificate pair and the pod log directory.
fn check_paths(k: &KubeletConfiguration, e: &mut Errors) {
    if k.tls_cert_file.is_empty() != k.tls_private_key_file.is_empty() {
        e.push(
            "tlsPrivateKeyFile",
            "tlsCertFile and tlsPrivateKeyFile must be set together",
        );
    }
    if !k.pod_logs_dir.starts_with('/') {
        e.push(
            "podLogsDir",
            format!("must be an absolute path, got {:?}", k.pod_logs_dir),
        );
    }
}

/// The CRI runtime and image endpoints (the image one defaults to the runtime's).
fn endpoints(
    k: &KubeletConfiguration,
    e: &mut Errors,
    warnings: &mut Vec<String>,
) -> (String, String) {
    let container_runtime_endpoint = runtime_endpoint(
        "containerRuntimeEndpoint",
        &k.container_runtime_endpoint,
        e,
        warnings,
    );
    let image_service_endpoint = if k.image_service_endpoint.is_empty() {
        container_runtime_endpoint.clone()
    } else {
        runtime_endpoint(
            "imageServiceEndpoint",
            &k.image_service_endpoint,
            e,
            warnings,
        )
    };
    (container_runtime_endpoint, image_service_endpoint)
}

/// thousandths by resource of a validated systemReserved or kubeReserved (the exact quantity
/// parser; validation refused what it cannot read).
fn reserved_milli(map: &BTreeMap<String, String>) -> BTreeMap<String, i128> {
    map.iter()
        .filter_map(|(k, v)| Some((k.clone(), i128::from(parse_quantity(v).ok()?.milli_value()))))
        .collect()
}

/// What comes off capacity: systemReserved, kubeReserved and the hard thresholds of
/// `memory.available` (memory) and `nodefs.available` (ephemeral-storage), as the kubelet's
/// GetNodeAllocatableReservation.
pub fn reserved(
    system: &BTreeMap<String, String>,
    kube: &BTreeMap<String, String>,
    thresholds: &[Threshold],
) -> Reserved {
    let hard_eviction = thresholds
        .iter()
        .filter(|t| t.is_hard())
        .filter_map(|t| {
            let resource = match t.signal {
                Signal::MemoryAvailable => "memory",
                Signal::NodeFsAvailable => "ephemeral-storage",
                _ => return None,
            };
            Some((resource.to_string(), t.value))
        })
        .collect();
    Reserved {
        system: reserved_milli(system),
        kube: reserved_milli(kube),
        hard_eviction,
    }
}

/// The server's slice: ports, addresses, serving certificate, authn and authz, streaming.
fn server(k: &KubeletConfiguration, v: &Validated) -> ServerConfig {
    ServerConfig {
        address: k.address.clone(),
        port: v.ports.port,
        read_only_port: v.ports.read_only_port,
        healthz_bind_address: k.healthz_bind_address.clone(),
        healthz_port: v.ports.healthz_port,
        tls_cert_file: non_empty_path(&k.tls_cert_file),
        tls_private_key_file: non_empty_path(&k.tls_private_key_file),
        server_tls_bootstrap: k.server_tls_bootstrap,
        authentication: Authentication {
            client_ca_file: non_empty_path(&k.authentication.x509.client_ca_file),
            webhook_enabled: k.authentication.webhook.enabled,
            webhook_cache_ttl: k.authentication.webhook.cache_ttl,
            anonymous_enabled: k.authentication.anonymous.enabled,
        },
        authorization: Authorization {
            mode: v.modes.authorization,
            cache_authorized_ttl: k.authorization.webhook.cache_authorized_ttl,
            cache_unauthorized_ttl: k.authorization.webhook.cache_unauthorized_ttl,
        },
        streaming_connection_idle_timeout: k.streaming_connection_idle_timeout,
        enable_debugging_handlers: k.enable_debugging_handlers,
        enable_system_log_handler: k.enable_system_log_handler,
    }
}

/// The [`Config`] of a validated configuration.
fn assemble(k: KubeletConfiguration, f: &Flags, node_name: String, v: Validated) -> Config {
    let root_dir = f
        .root_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT_DIR));
    let server = server(&k, &v);
    let (endpoint, image_endpoint) = v.endpoints;
    let (high, low) = v.image_gc;
    Config {
        config_file: f.config.clone(),
        node: NodeConfig {
            name: node_name,
            ips: v.node_ips,
            labels: v.node_labels,
            register_with_taints: k.register_with_taints.clone(),
            register: k.register_node,
            max_pods: v.max_pods,
            status_update_frequency: k.node_status_update_frequency,
            status_report_frequency: k.node_status_report_frequency,
            lease_duration_seconds: v.node_lease_duration_seconds,
            reserved: reserved(&k.system_reserved, &k.kube_reserved, &v.thresholds),
            fail_swap_on: k.fail_swap_on,
            shutdown_grace_period: k.shutdown_grace_period,
            shutdown_grace_period_critical_pods: k.shutdown_grace_period_critical_pods,
            shutdown_grace_period_by_pod_priority: k
                .shutdown_grace_period_by_pod_priority
                .iter()
                .map(|g| (g.priority, g.shutdown_grace_period_seconds))
                .collect(),
        },
        paths: PathsConfig {
            cert_dir: f.cert_dir.clone().unwrap_or_else(|| root_dir.join("pki")),
            root_dir,
            pod_logs_dir: PathBuf::from(&k.pod_logs_dir),
            container_logs_link_dir: f
                .container_logs_link_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINER_LOGS_LINK_DIR)),
        },
        api: ApiConfig {
            kubeconfig: f.kubeconfig.clone(),
            bootstrap_kubeconfig: f.bootstrap_kubeconfig.clone(),
            rotate_certificates: k.rotate_certificates,
        },
        runtime: RuntimeConfig {
            endpoint,
            image_endpoint,
            request_timeout: k.runtime_request_timeout,
        },
        pods: PodsConfig {
            static_pod_path: non_empty_path(&k.static_pod_path),
            file_check_frequency: k.file_check_frequency,
            sync_frequency: k.sync_frequency,
            volume_stats_agg_period: k.volume_stats_agg_period,
            cluster_dns: k.cluster_dns.clone(),
            cluster_domain: k.cluster_domain.clone(),
            resolv_conf: k.resolv_conf.clone(),
            sysctls: v.sysctls,
            change_detection: v.modes.change_detection,
            seccomp_default: k.seccomp_default,
        },
        cgroups: CgroupConfig {
            driver: v.modes.cgroup_driver,
            root: k.cgroup_root.clone(),
            per_qos: k.cgroups_per_qos,
            enforce_node_allocatable: k.enforce_node_allocatable.clone(),
            pod_pids_limit: u64::try_from(k.pod_pids_limit).ok(),
            fail_cgroup_v1: k.fail_cgroup_v1,
        },
        server,
        images: ImagesConfig {
            serialize_pulls: v.serialize_image_pulls,
            max_parallel_pulls: v.max_parallel_image_pulls,
            minimum_gc_age: k.image_minimum_gc_age,
            maximum_gc_age: (!k.image_maximum_gc_age.is_zero()).then_some(k.image_maximum_gc_age),
            gc_high_threshold_percent: high,
            gc_low_threshold_percent: low,
        },
        container_logs: ContainerLogsConfig {
            max_size: v.log_rotation.max_size,
            max_files: v.log_rotation.max_files,
            max_workers: v.log_rotation.max_workers,
            monitor_interval: k.container_log_monitor_interval,
        },
        eviction: super::eviction::EvictionConfig {
            thresholds: v.thresholds,
            pressure_transition_period: k.eviction_pressure_transition_period,
            max_pod_grace_period: k.eviction_max_pod_grace_period,
            local_storage_capacity_isolation: k.local_storage_capacity_isolation,
            kernel_memcg_notification: k.kernel_memcg_notification,
        },
        container_gc: super::ContainerGcPolicy {
            min_age: f.minimum_container_ttl_duration.unwrap_or_default(),
            max_per_pod_container: f.maximum_dead_containers_per_container.unwrap_or(1),
            max_containers: f.maximum_dead_containers.unwrap_or(-1),
        },
        logging: LoggingConfig {
            verbosity: v.modes.verbosity,
            format: v.modes.log_format,
        },
        feature_gates: k.feature_gates.clone(),
        warnings: Vec::new(),
        show_version: f.show_version(),
        effective: k,
    }
}
