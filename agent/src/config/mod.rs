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

/// The validated configuration bosun runs with: one typed slice per subsystem, handed out by
/// the wiring (`app`) so each part sees only its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--config`: the KubeletConfiguration file read, if any.
    pub config_file: Option<PathBuf>,
    /// The node's identity, registration, status and reservations.
    pub node: NodeConfig,
    /// The kubelet's directories.
    pub paths: PathsConfig,
    /// How the API server is reached.
    pub api: ApiConfig,
    /// The CRI runtime.
    pub runtime: RuntimeConfig,
    /// Pod sources, sync, DNS, sysctls and the objects pods read.
    pub pods: PodsConfig,
    /// The container manager's cgroups.
    pub cgroups: CgroupConfig,
    /// The kubelet port and /healthz.
    pub server: ServerConfig,
    /// Image pulls and image garbage collection.
    pub images: ImagesConfig,
    /// Container log rotation.
    pub container_logs: ContainerLogsConfig,
    /// The eviction manager's thresholds and periods.
    pub eviction: eviction::EvictionConfig,
    /// Container garbage collection (the kubelet's deprecated GC flags).
    pub container_gc: ContainerGcPolicy,
    /// Bosun's own log output.
    pub logging: LoggingConfig,
    /// Feature gates as given (bosun has none yet).
    pub feature_gates: BTreeMap<String, bool>,
    /// Warnings for `main` to log once: unknown, unsupported and deprecated settings.
    pub warnings: Vec<String>,
    /// `--version` was given: print [`crate::version::version_string`] and exit.
    pub show_version: bool,
    /// The defaulted KubeletConfiguration after flag overrides: what `/configz` serves.
    pub effective: KubeletConfiguration,
}

/// The node's identity, registration, status reporting and what it keeps from pods.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Node name: `--hostname-override` or the machine's hostname, lowercased.
    pub name: String,
    /// `--node-ip`: the node IPs given (one per IP family, at most two; primary first).
    pub ips: Vec<IpAddr>,
    /// `--node-labels`: extra labels for the Node.
    pub labels: BTreeMap<String, String>,
    /// Taints the Node is registered with (`--register-with-taints` over `registerWithTaints`).
    pub register_with_taints: Vec<Taint>,
    /// Register the Node with the API server (`registerNode`).
    pub register: bool,
    /// Maximum number of pods (`maxPods`).
    pub max_pods: u32,
    /// Period of computing node status (`nodeStatusUpdateFrequency`).
    pub status_update_frequency: Duration,
    /// Maximum period between node status writes when nothing changed.
    pub status_report_frequency: Duration,
    /// Node Lease duration (`nodeLeaseDurationSeconds`).
    pub lease_duration_seconds: u32,
    /// systemReserved, kubeReserved and hard eviction, parsed with the exact quantity parser.
    pub reserved: Reserved,
    /// Refuse to start with swap on (`failSwapOn`).
    pub fail_swap_on: bool,
    /// Node shutdown delay for pods; zero: graceful node shutdown off.
    pub shutdown_grace_period: Duration,
    /// Part of `shutdown_grace_period` for critical pods.
    pub shutdown_grace_period_critical_pods: Duration,
    /// Shutdown grace periods by pod priority (`shutdownGracePeriodByPodPriority`): (priority,
    /// seconds) as configured; empty: the two fields above.
    pub shutdown_grace_period_by_pod_priority: Vec<(i32, i64)>,
}

/// The kubelet's directories.
#[derive(Debug, Clone, PartialEq)]
pub struct PathsConfig {
    /// `--root-dir`: the kubelet's state directory, /var/lib/kubelet.
    pub root_dir: PathBuf,
    /// `--cert-dir`: where certificates live, `<root-dir>/pki` by default.
    pub cert_dir: PathBuf,
    /// Root of per-pod log directories, /var/log/pods (`podLogsDir`).
    pub pod_logs_dir: PathBuf,
    /// Where the /var/log/containers symlinks go.
    pub container_logs_link_dir: PathBuf,
}

/// How the API server is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// `--kubeconfig`: credentials for the API server; none: standalone mode.
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig`: credentials for TLS bootstrap.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Rotate the client certificate through CSRs (`rotateCertificates`).
    pub rotate_certificates: bool,
}

/// The CRI runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// CRI runtime endpoint, `unix:///...`.
    pub endpoint: String,
    /// CRI image service endpoint; the runtime endpoint unless set.
    pub image_endpoint: String,
    /// Deadline of ordinary CRI calls (`runtimeRequestTimeout`).
    pub request_timeout: Duration,
}

/// Pod sources, sync, DNS, sysctls and the objects pods read.
#[derive(Debug, Clone, PartialEq)]
pub struct PodsConfig {
    /// Directory (or file) of static pod manifests.
    pub static_pod_path: Option<PathBuf>,
    /// Period of rescanning the static pod path.
    pub file_check_frequency: Duration,
    /// Maximum period between pod syncs.
    pub sync_frequency: Duration,
    /// Period of measuring the pods' volume usage (volumeStatsAggPeriod).
    pub volume_stats_agg_period: Duration,
    /// Cluster DNS server IPs for pods.
    pub cluster_dns: Vec<String>,
    /// Cluster DNS domain for pods; empty: none.
    pub cluster_domain: String,
    /// Host resolv.conf for pods' DNS; empty: host DNS disabled.
    pub resolv_conf: String,
    /// The sysctls pods may set: the safe ones and `allowedUnsafeSysctls`.
    pub sysctls: sysctls::SysctlAllowlist,
    /// How the configMaps and secrets pods use are kept current.
    pub change_detection: ChangeDetectionStrategy,
    /// `seccompDefault`: RuntimeDefault for containers that name no profile.
    pub seccomp_default: bool,
}

/// The container manager's cgroups.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupConfig {
    /// How cgroups are driven.
    pub driver: CgroupDriver,
    /// Root cgroup for pods; empty: the root.
    pub root: String,
    /// QoS cgroup hierarchy on.
    pub per_qos: bool,
    /// Allocatable enforcement: `pods`, `system-reserved`, `kube-reserved`, ... (empty or `none`: off).
    pub enforce_node_allocatable: Vec<String>,
    /// Maximum PIDs per pod; None: no per-pod limit.
    pub pod_pids_limit: Option<u64>,
    /// Refuse to start on cgroup v1.
    pub fail_cgroup_v1: bool,
}

impl CgroupConfig {
    /// True when `pods` is enforced: the pods cgroup is limited to allocatable.
    pub fn enforces_pods(&self) -> bool {
        self.enforce_node_allocatable.iter().any(|v| v == "pods")
    }
}

/// The kubelet port (HTTPS, 10250) and the plain-HTTP /healthz.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// IP the HTTPS server listens on.
    pub address: String,
    /// Port of the HTTPS server, 10250.
    pub port: u16,
    /// Unauthenticated read-only port; 0 (the default) disables it.
    pub read_only_port: u16,
    /// IP of the plain-HTTP /healthz endpoint.
    pub healthz_bind_address: String,
    /// Port of the /healthz endpoint; 0 disables it.
    pub healthz_port: u16,
    /// Serving certificate and key, when not self-signed or bootstrapped.
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key matching `tls_cert_file`.
    pub tls_private_key_file: Option<PathBuf>,
    /// Request the serving certificate through a CSR.
    pub server_tls_bootstrap: bool,
    /// Authentication of requests to the server.
    pub authentication: Authentication,
    /// Authorization of requests to the server.
    pub authorization: Authorization,
    /// Idle timeout of exec, attach and port-forward streams.
    pub streaming_connection_idle_timeout: Duration,
    /// `enableDebuggingHandlers`: logs, exec, attach, port-forward, run.
    pub enable_debugging_handlers: bool,
    /// `enableSystemLogHandler`: /logs/ of the node.
    pub enable_system_log_handler: bool,
}

/// Image pulls and image garbage collection.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesConfig {
    /// Pull one image at a time.
    pub serialize_pulls: bool,
    /// Maximum parallel pulls when not serialized; None: no limit.
    pub max_parallel_pulls: Option<u32>,
    /// Minimum age of an unused image before GC.
    pub minimum_gc_age: Duration,
    /// Maximum unused age of an image; None: no age-based GC.
    pub maximum_gc_age: Option<Duration>,
    /// Disk usage percent above which image GC runs.
    pub gc_high_threshold_percent: u8,
    /// Disk usage percent image GC frees down to.
    pub gc_low_threshold_percent: u8,
}

impl ImagesConfig {
    /// How many pulls may run at once: 1 when serialized, else maxParallelImagePulls (16 when
    /// unset).
    pub fn parallel_pulls(&self) -> usize {
        if self.serialize_pulls {
            1
        } else {
            (self.max_parallel_pulls.unwrap_or(16) as usize).max(1)
        }
    }
}

/// Container log rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerLogsConfig {
    /// Container log size that triggers rotation, bytes.
    pub max_size: u64,
    /// Log files kept per container.
    pub max_files: u32,
    /// Containers whose logs are rotated concurrently.
    pub max_workers: u32,
    /// How often container logs are checked for rotation.
    pub monitor_interval: Duration,
}

/// Bosun's own log output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggingConfig {
    /// Log verbosity (`--v` over `logging.verbosity`).
    pub verbosity: u8,
    /// Log format (`--log-format` over `logging.format`).
    pub format: LogFormat,
}

pub use crate::resource::allocatable::Reserved;
pub use validate::reserved;

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
