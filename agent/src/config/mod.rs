//! Configuration: the KubeletConfiguration file plus the kubelet's flags, merged into one validated [`Config`].
//!
//! The file (`--config`, the one kubeadm writes to /var/lib/kubelet/config.yaml) is read with the
//! kubelet's v1beta1 defaults, flags override it as in the kubelet, and the result is validated
//! with the offending field named in the error. Without `--config` the v1beta1 defaults apply,
//! never the kubelet's insecure flag-only defaults: anonymous auth off, webhook authn/authz on,
//! read-only port off. Unknown, unsupported and deprecated settings, and fields accepted but not
//! acted on yet, become [`Config::warnings`].

pub mod duration;
pub mod eviction;
pub mod file;
pub mod flags;

mod not_acted_on;
pub mod sysctls;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{KubeletConfiguration, Taint, TaintEffect};
pub use flags::Flags;

/// The validated configuration bosun runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--config`: the KubeletConfiguration file read, if any.
    pub config_file: Option<PathBuf>,
    /// `--kubeconfig`: credentials for the API server; none: standalone mode.
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig`: credentials for TLS bootstrap.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// CRI runtime endpoint, `unix:///...`.
    pub container_runtime_endpoint: String,
    /// CRI image service endpoint; the runtime endpoint unless set.
    pub image_service_endpoint: String,
    /// Node name: `--hostname-override` or the machine's hostname, lowercased.
    pub node_name: String,
    /// `--node-ip`: the first (primary) node IP, if given.
    pub node_ip: Option<IpAddr>,
    /// `--node-ip`: all node IPs given (one per IP family, at most two).
    pub node_ips: Vec<IpAddr>,
    /// `--node-labels`: extra labels for the Node.
    pub node_labels: BTreeMap<String, String>,
    /// Taints the Node is registered with (`--register-with-taints` over `registerWithTaints`).
    pub register_with_taints: Vec<Taint>,
    /// `--root-dir`: the kubelet's state directory, /var/lib/kubelet.
    pub root_dir: PathBuf,
    /// `--cert-dir`: where certificates live, `<root-dir>/pki` by default.
    pub cert_dir: PathBuf,
    /// Directory (or file) of static pod manifests.
    pub static_pod_path: Option<PathBuf>,
    /// Root of per-pod log directories, /var/log/pods.
    pub pod_logs_dir: PathBuf,
    /// Where the /var/log/containers symlinks go.
    pub container_logs_link_dir: PathBuf,
    /// Period of rescanning the static pod path.
    pub file_check_frequency: Duration,
    /// Period of measuring the pods' volume usage (volumeStatsAggPeriod).
    pub volume_stats_agg_period: Duration,
    /// Maximum period between pod syncs.
    pub sync_frequency: Duration,
    /// Deadline of ordinary CRI calls.
    pub runtime_request_timeout: Duration,
    /// IP of the plain-HTTP /healthz endpoint.
    pub healthz_bind_address: String,
    /// Port of the /healthz endpoint; 0 disables it.
    pub healthz_port: u16,
    /// IP the HTTPS server listens on.
    pub address: String,
    /// Port of the HTTPS server, 10250.
    pub port: u16,
    /// Unauthenticated read-only port; 0 (the default) disables it.
    pub read_only_port: u16,
    /// Serving certificate and key, when not self-signed or bootstrapped.
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key matching `tls_cert_file`.
    pub tls_private_key_file: Option<PathBuf>,
    /// Rotate the client certificate through CSRs.
    pub rotate_certificates: bool,
    /// Request the serving certificate through a CSR.
    pub server_tls_bootstrap: bool,
    /// Authentication of requests to the server.
    pub authentication: Authentication,
    /// Authorization of requests to the server.
    pub authorization: Authorization,
    /// Cluster DNS server IPs for pods.
    pub cluster_dns: Vec<String>,
    /// Cluster DNS domain for pods; empty: none.
    pub cluster_domain: String,
    /// Host resolv.conf for pods' DNS; empty: host DNS disabled.
    pub resolv_conf: String,
    /// How cgroups are driven.
    pub cgroup_driver: CgroupDriver,
    /// How the configMaps and secrets pods use are kept current.
    pub config_map_and_secret_change_detection_strategy: ChangeDetectionStrategy,
    /// Root cgroup for pods; empty: the root.
    pub cgroup_root: String,
    /// QoS cgroup hierarchy on.
    pub cgroups_per_qos: bool,
    /// Allocatable enforcement: `pods`, `system-reserved`, `kube-reserved`, ... (empty or `none`: off).
    pub enforce_node_allocatable: Vec<String>,
    /// Resources reserved for the OS (resource -> quantity string).
    pub system_reserved: BTreeMap<String, String>,
    /// Resources reserved for Kubernetes daemons (resource -> quantity string).
    pub kube_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds (signal -> quantity or percentage).
    pub eviction_hard: BTreeMap<String, String>,
    /// The eviction manager's thresholds and periods.
    pub eviction: eviction::EvictionConfig,
    /// Maximum number of pods.
    pub max_pods: u32,
    /// Maximum PIDs per pod; None: no per-pod limit.
    pub pod_pids_limit: Option<u64>,
    /// Pull one image at a time.
    pub serialize_image_pulls: bool,
    /// Maximum parallel pulls when not serialized; None: no limit.
    pub max_parallel_image_pulls: Option<u32>,
    /// Period of computing node status.
    pub node_status_update_frequency: Duration,
    /// Maximum period between node status writes when nothing changed.
    pub node_status_report_frequency: Duration,
    /// Node Lease duration.
    pub node_lease_duration_seconds: u32,
    /// The sysctls pods may set: the safe ones and `allowedUnsafeSysctls`.
    pub sysctls: sysctls::SysctlAllowlist,
    /// Minimum age of an unused image before GC.
    pub image_minimum_gc_age: Duration,
    /// Maximum unused age of an image; None: no age-based GC.
    pub image_maximum_gc_age: Option<Duration>,
    /// Disk usage percent above which image GC runs.
    pub image_gc_high_threshold_percent: u8,
    /// Disk usage percent image GC frees down to.
    pub image_gc_low_threshold_percent: u8,
    /// Container log size that triggers rotation, bytes.
    pub container_log_max_size: u64,
    /// Log files kept per container.
    pub container_log_max_files: u32,
    /// Containers whose logs are rotated concurrently.
    pub container_log_max_workers: u32,
    /// How often container logs are checked for rotation.
    pub container_log_monitor_interval: Duration,
    /// Container garbage collection (the kubelet's deprecated GC flags).
    pub container_gc: ContainerGcPolicy,
    /// Refuse to start with swap on.
    pub fail_swap_on: bool,
    /// Refuse to start on cgroup v1.
    pub fail_cgroup_v1: bool,
    /// Register the Node with the API server.
    pub register_node: bool,
    /// Node shutdown delay for pods; zero: graceful node shutdown off.
    pub shutdown_grace_period: Duration,
    /// Part of `shutdown_grace_period` for critical pods.
    pub shutdown_grace_period_critical_pods: Duration,
    /// Feature gates as given (bosun has none yet).
    pub feature_gates: BTreeMap<String, bool>,
    /// Log verbosity (`--v` over `logging.verbosity`).
    pub verbosity: u8,
    /// Log format (`--log-format` over `logging.format`).
    pub log_format: LogFormat,
    /// Warnings for `main` to log once: unknown, unsupported and deprecated settings.
    pub warnings: Vec<String>,
    /// `--version` was given: print [`crate::version::version_string`] and exit.
    pub show_version: bool,
    /// The defaulted KubeletConfiguration after flag overrides, for fields not typed above.
    pub kubelet: KubeletConfiguration,
}

/// `authentication`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Authentication {
    /// CA bundle for client certificates; None: x509 authentication off.
    pub client_ca_file: Option<PathBuf>,
    /// Bearer tokens checked with TokenReview.
    pub webhook_enabled: bool,
    /// TokenReview cache lifetime.
    pub webhook_cache_ttl: Duration,
    /// Anonymous requests allowed.
    pub anonymous_enabled: bool,
}

/// `authorization`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// Webhook (SubjectAccessReview) or AlwaysAllow.
    pub mode: AuthorizationMode,
    /// Cache lifetime of allowed answers.
    pub cache_authorized_ttl: Duration,
    /// Cache lifetime of denied answers.
    pub cache_unauthorized_ttl: Duration,
}

/// How requests to the server are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Ask the API server with SubjectAccessReview.
    Webhook,
    /// Allow every authenticated request.
    AlwaysAllow,
}

/// The cgroup driver, which must match the runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Write cgroupfs directly.
    Cgroupfs,
    /// Go through systemd slices and scopes.
    Systemd,
}

/// `configMapAndSecretChangeDetectionStrategy`: how the configMaps and secrets pods refer to are
/// read (the kubelet's configmap and secret managers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeDetectionStrategy {
    /// A GET from the API server at every read.
    Get,
    /// A GET at most once per TTL (one minute) per object, shared by the pods using it.
    Cache,
    /// One watch per object referenced by a registered pod; reads come from it (the default).
    #[default]
    Watch,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One invalid setting: the field (or flag) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The file field (`healthzPort`, `authentication.webhook.cacheTTL`) or flag (`--node-ip`).
    pub field: String,
    /// What is wrong, with the value given.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why the configuration could not be loaded; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad command line, or `--help`: `main` should call [`clap::Error::exit`] on it.
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// The configuration file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML/JSON (the message has line and column).
    #[error("config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Settings that are invalid, each naming its field.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The machine's hostname could not be read and no `--hostname-override` was given.
    #[error("node name: reading the hostname: {0}")]
    Hostname(std::io::Error),
}

fn join(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl ConfigError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

/// Parses the command line (`args` include argv\[0\]), reads `--config`, and validates the result.
pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let flags = Flags::parse_args(args)?;
    load_with(flags, machine_hostname)
}

/// [`load`] from parsed flags, with the hostname source as a seam for tests.
pub fn load_with(
    flags: Flags,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let mut warnings = flags.warnings();
    // `--version` prints and exits before anything is read, as in the kubelet.
    let (kubelet, file_warnings) = match &flags.config {
        Some(path) if !flags.show_version() => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            file::parse(path, &text)?
        }
        _ => (KubeletConfiguration::default(), Vec::new()),
    };
    warnings.splice(0..0, file_warnings);
    let node_name = match flags.hostname_override.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_lowercase(),
        _ if flags.show_version() => String::new(),
        _ => {
            let name = hostname().map_err(ConfigError::Hostname)?;
            let name = name.trim().to_lowercase();
            if name.is_empty() {
                return Err(ConfigError::Hostname(std::io::Error::other(
                    "the hostname is empty",
                )));
            }
            name
        }
    };
    let mut config = validate::build(kubelet, &flags, node_name, &mut warnings)?;
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    config.warnings = warnings;
    Ok(config)
}

/// The machine's hostname, as the kernel reports it.
pub fn machine_hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
}

/// `path` as an Option, None when empty.
fn non_empty_path(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| Path::new(path).to_path_buf())
}

/// The kubelet's container GC policy (`kubecontainer.GCPolicy`), set only by its deprecated flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// Minimum age of a dead container before it may be removed (`--minimum-container-ttl-duration`, 0).
    pub min_age: Duration,
    /// Dead instances kept per pod and container name; negative: no limit
    /// (`--maximum-dead-containers-per-container`, 1).
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node; negative: no limit (`--maximum-dead-containers`, -1).
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}
