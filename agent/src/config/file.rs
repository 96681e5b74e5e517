//! The KubeletConfiguration file (`kubelet.config.k8s.io/v1beta1`): one serde tree, the kubelet's defaults.
//!
//! Defaulting follows the kubelet's `SetDefaults_KubeletConfiguration` in two steps: serde fills
//! absent fields (pointer fields in Go get their default here, so an explicit `0`/`false` stays),
//! then [`KubeletConfiguration::set_defaults`] replaces the zero value of non-pointer fields
//! (`syncFrequency: 0s`, `port: 0`, `cgroupDriver: ""`, as kubeadm writes them) with the default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ConfigError;
use super::duration;

/// The only `apiVersion` bosun reads.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only `kind` bosun reads.
pub const KIND: &str = "KubeletConfiguration";

/// Named defaults, shared by serde and [`KubeletConfiguration::set_defaults`] (kubelet v1beta1 values).
pub mod defaults {
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// `syncFrequency`: 1m.
    pub fn sync_frequency() -> Duration {
        Duration::from_secs(60)
    }
    /// `fileCheckFrequency`: 20s.
    pub fn file_check_frequency() -> Duration {
        Duration::from_secs(20)
    }
    /// `volumeStatsAggPeriod`: 1m.
    pub fn volume_stats_agg_period() -> Duration {
        Duration::from_secs(60)
    }
    /// `address`: all interfaces.
    pub fn address() -> String {
        "0.0.0.0".into()
    }
    /// `port`: 10250.
    pub fn port() -> i32 {
        10250
    }
    /// `healthzPort`: 10248 (0 disables).
    pub fn healthz_port() -> i32 {
        10248
    }
    /// `healthzBindAddress`: loopback.
    pub fn healthz_bind_address() -> String {
        "127.0.0.1".into()
    }
    /// `authentication.webhook.enabled`: true.
    pub fn authn_webhook_enabled() -> bool {
        true
    }
    /// `authentication.webhook.cacheTTL`: 2m.
    pub fn authn_webhook_cache_ttl() -> Duration {
        Duration::from_secs(120)
    }
    /// `authorization.mode`: Webhook.
    pub fn authz_mode() -> String {
        "Webhook".into()
    }
    /// `authorization.webhook.cacheAuthorizedTTL`: 5m.
    pub fn authz_cache_authorized_ttl() -> Duration {
        Duration::from_secs(300)
    }
    /// `authorization.webhook.cacheUnauthorizedTTL`: 30s.
    pub fn authz_cache_unauthorized_ttl() -> Duration {
        Duration::from_secs(30)
    }
    /// `nodeStatusUpdateFrequency`: 10s.
    pub fn node_status_update_frequency() -> Duration {
        Duration::from_secs(10)
    }
    /// `nodeStatusReportFrequency`: 5m (or nodeStatusUpdateFrequency when that one is set).
    pub fn node_status_report_frequency() -> Duration {
        Duration::from_secs(300)
    }
    /// `nodeLeaseDurationSeconds`: 40.
    pub fn node_lease_duration_seconds() -> i32 {
        40
    }
    /// `streamingConnectionIdleTimeout`: 4h.
    pub fn streaming_connection_idle_timeout() -> Duration {
        Duration::from_secs(4 * 3600)
    }
    /// `imageMinimumGCAge`: 2m.
    pub fn image_minimum_gc_age() -> Duration {
        Duration::from_secs(120)
    }
    /// `imageGCHighThresholdPercent`: 85.
    pub fn image_gc_high_threshold_percent() -> i32 {
        85
    }
    /// `imageGCLowThresholdPercent`: 80.
    pub fn image_gc_low_threshold_percent() -> i32 {
        80
    }
    /// `cgroupsPerQOS`: true.
    pub fn cgroups_per_qos() -> bool {
        true
    }
    /// `cgroupDriver`: cgroupfs.
    pub fn cgroup_driver() -> String {
        "cgroupfs".into()
    }
    /// `configMapAndSecretChangeDetectionStrategy`: Watch.
    pub fn config_map_and_secret_change_detection_strategy() -> String {
        "Watch".into()
    }
    /// `runtimeRequestTimeout`: 2m.
    pub fn runtime_request_timeout() -> Duration {
        Duration::from_secs(120)
    }
    /// `hairpinMode`: promiscuous-bridge.
    pub fn hairpin_mode() -> String {
        "promiscuous-bridge".into()
    }
    /// `maxPods`: 110.
    pub fn max_pods() -> i32 {
        110
    }
    /// `podPidsLimit`: -1 (no per-pod limit beyond node allocatable).
    pub fn pod_pids_limit() -> i64 {
        -1
    }
    /// `resolvConf`: /etc/resolv.conf (an explicit "" disables DNS from the host).
    pub fn resolv_conf() -> String {
        "/etc/resolv.conf".into()
    }
    /// `evictionHard`: the kubelet's hard eviction thresholds.
    pub fn eviction_hard() -> BTreeMap<String, String> {
        [
            ("memory.available", "100Mi"),
            ("nodefs.available", "10%"),
            ("nodefs.inodesFree", "5%"),
            ("imagefs.available", "15%"),
            ("imagefs.inodesFree", "5%"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
    /// `evictionPressureTransitionPeriod`: 5m.
    pub fn eviction_pressure_transition_period() -> Duration {
        Duration::from_secs(300)
    }
    /// `failSwapOn`: true.
    pub fn fail_swap_on() -> bool {
        true
    }
    /// `localStorageCapacityIsolation`: true.
    pub fn local_storage_capacity_isolation() -> bool {
        true
    }
    /// `containerLogMaxSize`: 10Mi.
    pub fn container_log_max_size() -> String {
        "10Mi".into()
    }
    /// `containerLogMaxFiles`: 5.
    pub fn container_log_max_files() -> i32 {
        5
    }
    /// `containerLogMaxWorkers`: 1.
    pub fn container_log_max_workers() -> i32 {
        1
    }
    /// `containerLogMonitorInterval`: 10s.
    pub fn container_log_monitor_interval() -> Duration {
        Duration::from_secs(10)
    }
    /// `enforceNodeAllocatable`: `[pods]`.
    pub fn enforce_node_allocatable() -> Vec<String> {
        vec!["pods".into()]
    }
    /// `logging.format`: text.
    pub fn log_format() -> String {
        "text".into()
    }
    /// `registerNode`: true.
    pub fn register_node() -> bool {
        true
    }
    /// `containerRuntimeEndpoint`: containerd's socket.
    pub fn container_runtime_endpoint() -> String {
        "unix:///run/containerd/containerd.sock".into()
    }
    /// `podLogsDir`: /var/log/pods.
    pub fn pod_logs_dir() -> String {
        "/var/log/pods".into()
    }
    /// `failCgroupV1`: true, as since Kubernetes 1.35.
    pub fn fail_cgroup_v1() -> bool {
        true
    }
    /// The `enable*Handler` switches that default to on.
    pub fn enabled() -> bool {
        true
    }
}

/// The kubelet's v1beta1 KubeletConfiguration, restricted to the fields bosun reads.
///
/// Field types follow the kubelet's (i32 ports, string quantities); [`super::Config`] holds the
/// validated, typed form. Other kubelet fields are reported as warnings, never silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// Must be `kubelet.config.k8s.io/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// Must be `KubeletConfiguration`.
    #[serde(default)]
    pub kind: String,
    /// Directory (or single file) of static pod manifests; empty: none.
    #[serde(default)]
    pub static_pod_path: String,
    /// Root of the per-pod log directories.
    #[serde(default)]
    pub pod_logs_dir: String,
    /// Maximum period between pod syncs.
    #[serde(default, with = "duration::serde")]
    pub sync_frequency: Duration,
    /// Period of rescanning staticPodPath.
    #[serde(default, with = "duration::serde")]
    pub file_check_frequency: Duration,
    /// Period of measuring the disk usage of the pods' volumes.
    #[serde(default, with = "duration::serde")]
    pub volume_stats_agg_period: Duration,
    /// IP the :10250 server listens on.
    #[serde(default)]
    pub address: String,
    /// Port of the authenticated HTTPS server.
    #[serde(default)]
    pub port: i32,
    /// Unauthenticated read-only port; 0 disables it.
    #[serde(default)]
    pub read_only_port: i32,
    /// Serving certificate (PEM); empty: self-signed under the cert dir.
    #[serde(default, rename = "tlsCertFile")]
    pub tls_cert_file: String,
    /// Serving key (PEM).
    #[serde(default, rename = "tlsPrivateKeyFile")]
    pub tls_private_key_file: String,
    /// Rotate the client certificate through CSRs.
    #[serde(default)]
    pub rotate_certificates: bool,
    /// Request the serving certificate through a CSR instead of self-signing.
    #[serde(default, rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    /// How requests to the server are authenticated.
    #[serde(default)]
    pub authentication: KubeletAuthentication,
    /// How requests to the server are authorized.
    #[serde(default)]
    pub authorization: KubeletAuthorization,
    /// Port of the plain-HTTP /healthz endpoint; 0 disables it.
    #[serde(default = "defaults::healthz_port")]
    pub healthz_port: i32,
    /// IP of the /healthz endpoint.
    #[serde(default)]
    pub healthz_bind_address: String,
    /// Cluster DNS domain added to pods' search path.
    #[serde(default)]
    pub cluster_domain: String,
    /// Cluster DNS server IPs given to pods.
    #[serde(default, rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// Period of computing node status.
    #[serde(default, with = "duration::serde")]
    pub node_status_update_frequency: Duration,
    /// Maximum period between node status writes when nothing changed.
    #[serde(default, with = "duration::serde")]
    pub node_status_report_frequency: Duration,
    /// Duration of the node Lease.
    #[serde(default)]
    pub node_lease_duration_seconds: i32,
    /// How long an exec, attach or port-forward stream may be idle before it is closed.
    #[serde(default, with = "duration::serde")]
    pub streaming_connection_idle_timeout: Duration,
    /// Minimum age of an unused image before GC.
    #[serde(default, rename = "imageMinimumGCAge", with = "duration::serde")]
    pub image_minimum_gc_age: Duration,
    /// Maximum unused age of an image before GC; 0 disables.
    #[serde(default, rename = "imageMaximumGCAge", with = "duration::serde")]
    pub image_maximum_gc_age: Duration,
    /// Disk usage percent above which image GC always runs.
    #[serde(
        default = "defaults::image_gc_high_threshold_percent",
        rename = "imageGCHighThresholdPercent"
    )]
    pub image_gc_high_threshold_percent: i32,
    /// Disk usage percent image GC frees down to.
    #[serde(
        default = "defaults::image_gc_low_threshold_percent",
        rename = "imageGCLowThresholdPercent"
    )]
    pub image_gc_low_threshold_percent: i32,
    /// Root cgroup for pods; empty: the root.
    #[serde(default)]
    pub cgroup_root: String,
    /// QoS cgroup hierarchy (kubepods/burstable, kubepods/besteffort).
    #[serde(default = "defaults::cgroups_per_qos", rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    /// `cgroupfs` or `systemd`.
    #[serde(default)]
    pub cgroup_driver: String,
    /// Deadline of ordinary CRI calls.
    #[serde(default, with = "duration::serde")]
    pub runtime_request_timeout: Duration,
    /// How configMaps and secrets pods use are kept current: `Watch`, `Cache` or `Get`.
    #[serde(default)]
    pub config_map_and_secret_change_detection_strategy: String,
    /// `promiscuous-bridge`, `hairpin-veth` or `none`.
    #[serde(default)]
    pub hairpin_mode: String,
    /// Maximum number of pods on the node.
    #[serde(default)]
    pub max_pods: i32,
    /// Maximum PIDs per pod; -1: no per-pod limit.
    #[serde(default = "defaults::pod_pids_limit")]
    pub pod_pids_limit: i64,
    /// resolv.conf used as the base of pods' DNS config; "" disables host DNS.
    #[serde(default = "defaults::resolv_conf", rename = "resolvConf")]
    pub resolv_conf: String,
    /// Pull images one at a time; defaulted from maxParallelImagePulls when absent.
    #[serde(default)]
    pub serialize_image_pulls: Option<bool>,
    /// Maximum parallel image pulls; absent: no limit.
    #[serde(default)]
    pub max_parallel_image_pulls: Option<i32>,
    /// Hard eviction thresholds by signal; absent: the kubelet's.
    #[serde(default)]
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Merge the default evictionHard signals into a partial evictionHard.
    #[serde(default)]
    pub merge_default_eviction_settings: bool,
    /// Soft eviction thresholds by signal (each needs a grace period).
    #[serde(default)]
    pub eviction_soft: BTreeMap<String, String>,
    /// How long each soft threshold must be met before it is acted on, by signal.
    #[serde(default)]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// How long a pressure condition stays True after its thresholds stop being met.
    #[serde(default, with = "duration::serde")]
    pub eviction_pressure_transition_period: Duration,
    /// The longest grace period (seconds) a pod evicted on a soft threshold gets.
    #[serde(default)]
    pub eviction_max_pod_grace_period: i32,
    /// The least amount reclaimed beyond a met threshold, by signal.
    #[serde(default)]
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    /// Feature gates by name.
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
    /// Refuse to start when swap is on.
    #[serde(default = "defaults::fail_swap_on")]
    pub fail_swap_on: bool,
    /// Evict pods over their ephemeral-storage limits or emptyDir sizeLimit.
    #[serde(default = "defaults::local_storage_capacity_isolation")]
    pub local_storage_capacity_isolation: bool,
    /// Have the kernel signal memory eviction thresholds crossed (cgroup v1).
    #[serde(default)]
    pub kernel_memcg_notification: bool,
    /// Size at which a container log is rotated (quantity).
    #[serde(default)]
    pub container_log_max_size: String,
    /// Number of log files kept per container.
    #[serde(default = "defaults::container_log_max_files")]
    pub container_log_max_files: i32,
    /// Containers whose logs are rotated concurrently.
    #[serde(default = "defaults::container_log_max_workers")]
    pub container_log_max_workers: i32,
    /// How often container logs are checked for rotation.
    #[serde(
        default = "defaults::container_log_monitor_interval",
        with = "duration::serde"
    )]
    pub container_log_monitor_interval: Duration,
    /// Resources reserved for the OS (resource name -> quantity).
    #[serde(default)]
    pub system_reserved: BTreeMap<String, String>,
    /// Resources reserved for Kubernetes daemons (resource name -> quantity).
    #[serde(default)]
    pub kube_reserved: BTreeMap<String, String>,
    /// Which allocatable limits are enforced with cgroups.
    #[serde(default = "defaults::enforce_node_allocatable")]
    pub enforce_node_allocatable: Vec<String>,
    /// Log format and verbosity.
    #[serde(default)]
    pub logging: LoggingConfiguration,
    /// Delay of node shutdown for pod termination; 0 disables graceful shutdown.
    #[serde(default, with = "duration::serde")]
    pub shutdown_grace_period: Duration,
    /// Part of shutdownGracePeriod reserved for critical pods.
    #[serde(default, with = "duration::serde")]
    pub shutdown_grace_period_critical_pods: Duration,
    /// Shutdown grace periods by pod priority, in place of the two fields above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shutdown_grace_period_by_pod_priority: Vec<ShutdownGracePeriodByPodPriority>,
    /// Taints the Node is registered with.
    #[serde(default)]
    pub register_with_taints: Vec<Taint>,
    /// Register the Node with the API server.
    #[serde(default = "defaults::register_node")]
    pub register_node: bool,
    /// CRI runtime service endpoint.
    #[serde(default)]
    pub container_runtime_endpoint: String,
    /// CRI image service endpoint; empty: containerRuntimeEndpoint.
    #[serde(default)]
    pub image_service_endpoint: String,
    /// Refuse to start on a cgroup v1 host.
    #[serde(default = "defaults::fail_cgroup_v1", rename = "failCgroupV1")]
    pub fail_cgroup_v1: bool,
    /// Containers without a seccomp profile run the runtime's default instead of Unconfined.
    #[serde(default)]
    pub seccomp_default: bool,
    /// Sysctl names or `prefix*` patterns pods may set beyond the safe set.
    #[serde(default)]
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Serve exec, attach, portForward, containerLogs, runningpods, logs and pprof.
    #[serde(default = "defaults::enabled")]
    pub enable_debugging_handlers: bool,
    /// Serve the node's log directory at `/logs/` (with the debugging handlers).
    #[serde(default = "defaults::enabled")]
    pub enable_system_log_handler: bool,
    /// The node log query on `/logs/` (bosun serves files only; see not_acted_on).
    #[serde(default)]
    pub enable_system_log_query: bool,
    /// Serve `/debug/pprof/` (bosun has no Go profiler: it answers as the kubelet with it off).
    #[serde(default = "defaults::enabled")]
    pub enable_profiling_handler: bool,
}

/// `authentication`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KubeletAuthentication {
    /// Client certificate authentication.
    #[serde(default)]
    pub x509: X509Authentication,
    /// Bearer token authentication through TokenReview.
    #[serde(default)]
    pub webhook: WebhookAuthentication,
    /// Anonymous requests.
    #[serde(default)]
    pub anonymous: AnonymousAuthentication,
}

/// `authentication.x509`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct X509Authentication {
    /// CA bundle that client certificates are verified against; empty: no x509 authn.
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: String,
}

/// `authentication.webhook`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAuthentication {
    /// Authenticate bearer tokens with TokenReview.
    #[serde(default = "defaults::authn_webhook_enabled")]
    pub enabled: bool,
    /// How long TokenReview results are cached.
    #[serde(default, rename = "cacheTTL", with = "duration::serde")]
    pub cache_ttl: Duration,
}

impl Default for WebhookAuthentication {
    fn default() -> Self {
        Self {
            enabled: defaults::authn_webhook_enabled(),
            cache_ttl: Duration::ZERO,
        }
    }
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnonymousAuthentication {
    /// Let unauthenticated requests through as `system:anonymous`.
    #[serde(default)]
    pub enabled: bool,
}

/// `authorization`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KubeletAuthorization {
    /// `Webhook` or `AlwaysAllow`.
    #[serde(default)]
    pub mode: String,
    /// SubjectAccessReview cache settings.
    #[serde(default)]
    pub webhook: WebhookAuthorization,
}

/// `authorization.webhook`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAuthorization {
    /// How long "allowed" answers are cached.
    #[serde(default, rename = "cacheAuthorizedTTL", with = "duration::serde")]
    pub cache_authorized_ttl: Duration,
    /// How long "denied" answers are cached.
    #[serde(default, rename = "cacheUnauthorizedTTL", with = "duration::serde")]
    pub cache_unauthorized_ttl: Duration,
}

/// `logging` (component-base LoggingConfiguration): the parts bosun uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoggingConfiguration {
    /// `text` or `json`.
    #[serde(default)]
    pub format: String,
    /// klog verbosity.
    #[serde(default)]
    pub verbosity: u32,
}

/// Effect of a taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New pods are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods without a toleration are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

impl std::fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaintEffect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "NoSchedule" => Ok(Self::NoSchedule),
            "PreferNoSchedule" => Ok(Self::PreferNoSchedule),
            "NoExecute" => Ok(Self::NoExecute),
            _ => Err(format!(
                "effect must be NoSchedule, PreferNoSchedule or NoExecute, got {s:?}"
            )),
        }
    }
}

/// The shutdown grace period of pods from one priority up (`shutdownGracePeriodByPodPriority`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownGracePeriodByPodPriority {
    /// The lowest pod priority of the group.
    #[serde(default)]
    pub priority: i32,
    /// How long the group's pods get, in seconds.
    #[serde(default)]
    pub shutdown_grace_period_seconds: i64,
}

/// A taint to register the Node with (`registerWithTaints`, `--register-with-taints`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What the taint does.
    pub effect: TaintEffect,
}

impl Default for KubeletConfiguration {
    /// The kubelet's defaults: what an empty configuration file gives.
    fn default() -> Self {
        let mut c: Self = serde_json::from_value(Value::Object(Default::default()))
            .expect("every field has a serde default");
        c.api_version = API_VERSION.into();
        c.kind = KIND.into();
        c.set_defaults();
        c
    }
}

/// Sets `field` to `default()` when it holds its zero value.
fn zero_to<T: PartialEq + Default>(field: &mut T, default: fn() -> T) {
    if *field == T::default() {
        *field = default();
    }
}

impl KubeletConfiguration {
    /// Replaces zero values with the kubelet's defaults, as `SetDefaults_KubeletConfiguration`.
    pub fn set_defaults(&mut self) {
        use defaults as d;
        zero_to(&mut self.sync_frequency, d::sync_frequency);
        zero_to(&mut self.file_check_frequency, d::file_check_frequency);
        zero_to(
            &mut self.volume_stats_agg_period,
            d::volume_stats_agg_period,
        );
        zero_to(&mut self.address, d::address);
        zero_to(&mut self.port, d::port);
        let authn = &mut self.authentication;
        zero_to(&mut authn.webhook.cache_ttl, d::authn_webhook_cache_ttl);
        let authz = &mut self.authorization;
        zero_to(&mut authz.mode, d::authz_mode);
        let webhook = &mut authz.webhook;
        zero_to(
            &mut webhook.cache_authorized_ttl,
            d::authz_cache_authorized_ttl,
        );
        zero_to(
            &mut webhook.cache_unauthorized_ttl,
            d::authz_cache_unauthorized_ttl,
        );
        zero_to(&mut self.healthz_bind_address, d::healthz_bind_address);
        if self.node_status_report_frequency.is_zero() {
            // An explicit update frequency is also the report frequency, for compatibility.
            self.node_status_report_frequency = if self.node_status_update_frequency.is_zero() {
                d::node_status_report_frequency()
            } else {
                self.node_status_update_frequency
            };
        }
        zero_to(
            &mut self.node_status_update_frequency,
            d::node_status_update_frequency,
        );
        zero_to(
            &mut self.node_lease_duration_seconds,
            d::node_lease_duration_seconds,
        );
        zero_to(&mut self.image_minimum_gc_age, d::image_minimum_gc_age);
        zero_to(
            &mut self.streaming_connection_idle_timeout,
            d::streaming_connection_idle_timeout,
        );
        zero_to(&mut self.cgroup_driver, d::cgroup_driver);
        zero_to(
            &mut self.config_map_and_secret_change_detection_strategy,
            d::config_map_and_secret_change_detection_strategy,
        );
        zero_to(
            &mut self.runtime_request_timeout,
            d::runtime_request_timeout,
        );
        zero_to(&mut self.hairpin_mode, d::hairpin_mode);
        zero_to(&mut self.max_pods, d::max_pods);
        if self.pod_pids_limit < 0 {
            self.pod_pids_limit = d::pod_pids_limit();
        }
        if self.serialize_image_pulls.is_none() {
            let parallel = self.max_parallel_image_pulls.is_some_and(|n| n >= 2);
            self.serialize_image_pulls = Some(!parallel);
        }
        let hard = self.eviction_hard.get_or_insert_with(d::eviction_hard);
        if self.merge_default_eviction_settings {
            for (signal, value) in d::eviction_hard() {
                hard.entry(signal).or_insert(value);
            }
        }
        zero_to(
            &mut self.eviction_pressure_transition_period,
            d::eviction_pressure_transition_period,
        );
        zero_to(&mut self.container_log_max_size, d::container_log_max_size);
        zero_to(&mut self.logging.format, d::log_format);
        zero_to(
            &mut self.container_runtime_endpoint,
            d::container_runtime_endpoint,
        );
        zero_to(&mut self.pod_logs_dir, d::pod_logs_dir);
    }

    /// Makes relative paths relative to the file's directory, as the kubelet does.
    fn resolve_relative_paths(&mut self, dir: &Path) {
        let fields = [
            &mut self.static_pod_path,
            &mut self.tls_cert_file,
            &mut self.tls_private_key_file,
            &mut self.authentication.x509.client_ca_file,
            &mut self.resolv_conf,
        ];
        for field in fields {
            if !field.is_empty() && Path::new(field.as_str()).is_relative() {
                *field = dir.join(field.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

/// Kubelet v1beta1 fields bosun does not read, with the kubelet's default (JSON), if not zero.
///
/// They are not unknown: a file setting one to something other than its zero value or this
/// default gets a "not supported" warning, anything else an "unknown field" warning.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    ("enableServer", "true"),
    ("httpCheckFrequency", "\"20s\""),
    ("staticPodURL", ""),
    ("staticPodURLHeader", ""),
    ("tlsCipherSuites", ""),
    ("tlsCurvePreferences", ""),
    ("tlsMinVersion", ""),
    ("registryPullQPS", "5"),
    ("registryBurst", "10"),
    (
        "imagePullCredentialsVerificationPolicy",
        "\"NeverVerifyPreloadedImages\"",
    ),
    ("preloadedImagesVerificationAllowlist", ""),
    ("eventRecordQPS", "50"),
    ("eventBurst", "100"),
    ("enableContentionProfiling", ""),
    ("oomScoreAdj", "-999"),
    ("kubeletCgroups", ""),
    ("systemCgroups", ""),
    ("cpuManagerPolicy", "\"none\""),
    ("singleProcessOOMKill", ""),
    ("cpuManagerPolicyOptions", ""),
    ("cpuManagerReconcilePeriod", "\"10s\""),
    ("draManagerReconcilePeriod", "\"60s\""),
    ("memoryManagerPolicy", "\"None\""),
    ("topologyManagerPolicy", "\"none\""),
    ("topologyManagerScope", "\"container\""),
    ("topologyManagerPolicyOptions", ""),
    ("qosReserved", ""),
    ("podCIDR", ""),
    ("runOnce", ""),
    ("cpuCFSQuota", "true"),
    ("cpuCFSQuotaPeriod", "\"100ms\""),
    ("nodeStatusMaxImages", "50"),
    ("maxOpenFiles", "1000000"),
    ("contentType", "\"application/vnd.kubernetes.protobuf\""),
    ("kubeAPIQPS", "50"),
    ("kubeAPIBurst", "100"),
    ("podsPerCore", ""),
    ("enableControllerAttachDetach", "true"),
    ("protectKernelDefaults", ""),
    ("makeIPTablesUtilChains", "true"),
    ("iptablesMasqueradeBit", "14"),
    ("iptablesDropBit", "15"),
    ("memorySwap", ""),
    ("reservedSystemCPUs", ""),
    ("showHiddenMetricsForVersion", ""),
    ("systemReservedCgroup", ""),
    ("kubeReservedCgroup", ""),
    (
        "volumePluginDir",
        "\"/usr/libexec/kubernetes/kubelet-plugins/volume/exec/\"",
    ),
    ("providerID", ""),
    ("crashLoopBackOff", ""),
    ("reservedMemory", ""),
    ("enableDebugFlagsHandler", "true"),
    ("memoryThrottlingFactor", "0.9"),
    ("memoryReservationPolicy", "\"None\""),
    ("tracing", ""),
    ("userNamespaces", ""),
    ("podHousekeepingPeriod", "\"2s\""),
    ("logging.flushFrequency", "\"5s\""),
    ("logging.options", ""),
    ("logging.vmodule", ""),
];

/// What `/configz` shows for fields [`NOT_SUPPORTED`] lists differently: a default the kubelet
/// fills only in its internal conversion (`None`: it shows nothing), as v1.37 serves them.
const CONFIGZ_DEFAULTS: &[(&str, Option<&str>)] = &[
    ("draManagerReconcilePeriod", None),
    ("memoryThrottlingFactor", None),
    ("podHousekeepingPeriod", None),
    ("memorySwap", Some("{}")),
    (
        "crashLoopBackOff",
        Some(r#"{"maxContainerRestartPeriod": "5m0s"}"#),
    ),
    (
        "logging.options",
        Some(r#"{"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}}"#),
    ),
];

/// v1beta1 fields that are pointers (or not `omitempty`) in the kubelet: their zero value is
/// shown; every other zero value is left out, as Go's `omitempty` does.
const SHOWN_WHEN_ZERO: &[&str] = &[
    "enableServer",
    "cgroupsPerQOS",
    "enableControllerAttachDetach",
    "makeIPTablesUtilChains",
    "failSwapOn",
    "failCgroupV1",
    "enableDebuggingHandlers",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "localStorageCapacityIsolation",
    "registerNode",
    "serializeImagePulls",
    "mergeDefaultEvictionSettings",
    "cpuCFSQuota",
    "healthzPort",
    "podPidsLimit",
    "eventRecordQPS",
    "eventBurst",
    "registryPullQPS",
    "registryBurst",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "nodeStatusMaxImages",
    "oomScoreAdj",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "nodeLeaseDurationSeconds",
    "memorySwap",
    "enabled",
    "verbosity",
    "infoBufferSize",
];

/// Drops what Go's `omitempty` would, recursively (see [`SHOWN_WHEN_ZERO`]).
fn omit_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|k, v| {
            omit_empty(v);
            let empty = match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::Bool(b) => !*b,
                Value::Number(n) => n.as_f64() == Some(0.0),
            };
            !empty || SHOWN_WHEN_ZERO.contains(&k.as_str())
        });
    }
}

/// A default as the kubelet prints it: durations in Go's form (`5m` is `5m0s`).
fn go_form(v: Value) -> Value {
    match &v {
        Value::String(s) => match duration::parse(s) {
            Ok(d) if s.chars().any(|c| c.is_ascii_alphabetic()) => {
                Value::String(duration::format(d))
            }
            _ => v,
        },
        _ => v,
    }
}

/// The configuration as the kubelet's `/configz` shows it (`kubelet.config.k8s.io/v1beta1`): the
/// fields bosun reads with their effective values, the kubelet's defaults of the ones it does not
/// read, zero values left out as Go's `omitempty` does.
pub fn effective(k: &KubeletConfiguration) -> Value {
    let mut v = serde_json::to_value(k).unwrap_or_default();
    let Value::Object(m) = &mut v else {
        return v;
    };
    let defaults = NOT_SUPPORTED.iter().map(|(field, default)| {
        let shown = CONFIGZ_DEFAULTS
            .iter()
            .find(|(f, _)| f == field)
            .map_or(Some(*default), |(_, d)| *d);
        (*field, shown)
    });
    for (field, default) in defaults {
        let Some(Ok(default)) = default.map(serde_json::from_str::<Value>) else {
            continue;
        };
        let default = go_form(default);
        match field.split_once('.') {
            Some((parent, child)) => {
                if let Some(Value::Object(p)) = m.get_mut(parent) {
                    p.entry(child.to_string()).or_insert(default);
                }
            }
            None => {
                m.entry(field.to_string()).or_insert(default);
            }
        }
    }
    m.insert("apiVersion".into(), API_VERSION.into());
    m.insert("kind".into(), KIND.into());
    omit_empty(&mut v);
    v
}

/// True for the values a Go zero value serializes to: null, false, 0, "", "0", "0s", [] and {} of those.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || duration::parse(s) == Ok(Duration::ZERO),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// True when `v` equals the default given as JSON, durations compared by value.
fn is_default(v: &Value, default_json: &str) -> bool {
    let Ok(default) = serde_json::from_str::<Value>(default_json) else {
        return false;
    };
    match (v, &default) {
        (Value::String(a), Value::String(b)) => match (duration::parse(a), duration::parse(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        },
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => *v == default,
    }
}

/// The value at a dotted path (`logging.options`, `registerWithTaints.0.timeAdded`).
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| match v {
        Value::Object(o) => o.get(key),
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The warning for a field serde did not read, if it deserves one.
fn ignored_field_warning(root: &Value, path: &str) -> Option<String> {
    let value = lookup(root, path);
    match NOT_SUPPORTED.iter().find(|(name, _)| *name == path) {
        Some((_, default)) => {
            let value = value?;
            (!is_zero(value) && !is_default(value, default))
                .then(|| format!("{path}: kubelet field not supported by bosun; ignored"))
        }
        None => Some(format!("{path}: unknown field; ignored")),
    }
}

/// Parses a configuration file's text (YAML or JSON) and applies the kubelet's defaults.
///
/// Relative paths are made relative to `path`'s directory. Returns the configuration and the
/// warnings for unknown and unsupported fields.
pub fn parse(path: &Path, text: &str) -> Result<(KubeletConfiguration, Vec<String>), ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        message,
    };
    let root: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| syntax(e.to_string()))?
    };
    if !root.is_object() {
        return Err(syntax("not a mapping".into()));
    }
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match root.get(field) {
            Some(Value::String(got)) if got == want => {}
            got => {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "must be {want:?}, got {}",
                        got.map_or("nothing".to_string(), Value::to_string)
                    ),
                ));
            }
        }
    }
    let mut ignored = Vec::new();
    let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(p.to_string());
    let de = serde_ignored::Deserializer::new(root.clone(), &mut on_ignored);
    let mut config: KubeletConfiguration = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::invalid(field, e.into_inner().to_string())
    })?;
    let warnings: Vec<String> = ignored
        .iter()
        .filter_map(|p| ignored_field_warning(&root, p))
        .collect();
    config.set_defaults();
    if let Some(dir) = path.parent() {
        config.resolve_relative_paths(dir);
    }
    Ok((config, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configz_shows_what_the_kubelets_shows() {
        let mut k = KubeletConfiguration::default();
        k.set_defaults();
        let v = effective(&k);
        let cases: &[(&str, serde_json::Value)] = &[
            ("kind", serde_json::json!("KubeletConfiguration")),
            ("port", serde_json::json!(10250)),
            (
                "evictionPressureTransitionPeriod",
                serde_json::json!("5m0s"),
            ),
            (
                "streamingConnectionIdleTimeout",
                serde_json::json!("4h0m0s"),
            ),
            (
                "crashLoopBackOff",
                serde_json::json!({"maxContainerRestartPeriod": "5m0s"}),
            ),
            ("seccompDefault", serde_json::json!(false)),
            ("memorySwap", serde_json::json!({})),
            ("enableDebuggingHandlers", serde_json::json!(true)),
            ("enableSystemLogQuery", serde_json::json!(false)),
        ];
        for (key, want) in cases {
            assert_eq!(&v[*key], want, "{key}");
        }
        assert_eq!(v["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(v["logging"]["verbosity"], 0);
        // Zero values of omitempty fields and defaults the kubelet does not show are left out.
        for key in [
            "readOnlyPort",
            "rotateCertificates",
            "featureGates",
            "registerWithTaints",
            "draManagerReconcilePeriod",
            "podHousekeepingPeriod",
            "imageServiceEndpoint",
        ] {
            assert!(v.get(key).is_none(), "{key}: {}", v[key]);
        }
    }

    fn parse_str(text: &str) -> Result<(KubeletConfiguration, Vec<String>), ConfigError> {
        parse(Path::new("/etc/bosun/config.yaml"), text)
    }

    const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    #[test]
    fn empty_file_has_kubelet_defaults() {
        let (c, warnings) = parse_str(HEADER).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c, KubeletConfiguration::default());
        let s = Duration::from_secs;
        let cases: &[(&str, String, String)] = &[
            ("staticPodPath", c.static_pod_path.clone(), "".into()),
            (
                "syncFrequency",
                format!("{:?}", c.sync_frequency),
                format!("{:?}", s(60)),
            ),
            (
                "fileCheckFrequency",
                format!("{:?}", c.file_check_frequency),
                format!("{:?}", s(20)),
            ),
            (
                "volumeStatsAggPeriod",
                format!("{:?}", c.volume_stats_agg_period),
                format!("{:?}", s(60)),
            ),
            ("address", c.address.clone(), "0.0.0.0".into()),
            ("port", c.port.to_string(), "10250".into()),
            ("readOnlyPort", c.read_only_port.to_string(), "0".into()),
            (
                "healthzBindAddress",
                c.healthz_bind_address.clone(),
                "127.0.0.1".into(),
            ),
            ("healthzPort", c.healthz_port.to_string(), "10248".into()),
            (
                "anonymous",
                c.authentication.anonymous.enabled.to_string(),
                "false".into(),
            ),
            (
                "webhook.enabled",
                c.authentication.webhook.enabled.to_string(),
                "true".into(),
            ),
            (
                "cacheTTL",
                format!("{:?}", c.authentication.webhook.cache_ttl),
                format!("{:?}", s(120)),
            ),
            (
                "authorization.mode",
                c.authorization.mode.clone(),
                "Webhook".into(),
            ),
            (
                "cacheAuthorizedTTL",
                format!("{:?}", c.authorization.webhook.cache_authorized_ttl),
                format!("{:?}", s(300)),
            ),
            (
                "cacheUnauthorizedTTL",
                format!("{:?}", c.authorization.webhook.cache_unauthorized_ttl),
                format!("{:?}", s(30)),
            ),
            ("cgroupDriver", c.cgroup_driver.clone(), "cgroupfs".into()),
            (
                "cgroupsPerQOS",
                c.cgroups_per_qos.to_string(),
                "true".into(),
            ),
            (
                "enforceNodeAllocatable",
                format!("{:?}", c.enforce_node_allocatable),
                "[\"pods\"]".into(),
            ),
            (
                "evictionHard",
                format!("{:?}", c.eviction_hard),
                format!("{:?}", Some(defaults::eviction_hard())),
            ),
            ("maxPods", c.max_pods.to_string(), "110".into()),
            ("podPidsLimit", c.pod_pids_limit.to_string(), "-1".into()),
            (
                "runtimeRequestTimeout",
                format!("{:?}", c.runtime_request_timeout),
                format!("{:?}", s(120)),
            ),
            (
                "serializeImagePulls",
                format!("{:?}", c.serialize_image_pulls),
                "Some(true)".into(),
            ),
            (
                "nodeStatusUpdateFrequency",
                format!("{:?}", c.node_status_update_frequency),
                format!("{:?}", s(10)),
            ),
            (
                "nodeStatusReportFrequency",
                format!("{:?}", c.node_status_report_frequency),
                format!("{:?}", s(300)),
            ),
            (
                "nodeLeaseDurationSeconds",
                c.node_lease_duration_seconds.to_string(),
                "40".into(),
            ),
            (
                "imageMinimumGCAge",
                format!("{:?}", c.image_minimum_gc_age),
                format!("{:?}", s(120)),
            ),
            (
                "imageGCHighThresholdPercent",
                c.image_gc_high_threshold_percent.to_string(),
                "85".into(),
            ),
            (
                "imageGCLowThresholdPercent",
                c.image_gc_low_threshold_percent.to_string(),
                "80".into(),
            ),
            (
                "containerLogMaxSize",
                c.container_log_max_size.clone(),
                "10Mi".into(),
            ),
            (
                "containerLogMaxFiles",
                c.container_log_max_files.to_string(),
                "5".into(),
            ),
            (
                "containerLogMaxWorkers",
                c.container_log_max_workers.to_string(),
                "1".into(),
            ),
            (
                "containerLogMonitorInterval",
                format!("{:?}", c.container_log_monitor_interval),
                format!("{:?}", s(10)),
            ),
            ("podLogsDir", c.pod_logs_dir.clone(), "/var/log/pods".into()),
            ("failSwapOn", c.fail_swap_on.to_string(), "true".into()),
            (
                "localStorageCapacityIsolation",
                c.local_storage_capacity_isolation.to_string(),
                "true".into(),
            ),
            ("registerNode", c.register_node.to_string(), "true".into()),
            (
                "resolvConf",
                c.resolv_conf.clone(),
                "/etc/resolv.conf".into(),
            ),
            (
                "hairpinMode",
                c.hairpin_mode.clone(),
                "promiscuous-bridge".into(),
            ),
            (
                "containerRuntimeEndpoint",
                c.container_runtime_endpoint.clone(),
                "unix:///run/containerd/containerd.sock".into(),
            ),
            ("logging.format", c.logging.format.clone(), "text".into()),
            (
                "rotateCertificates",
                c.rotate_certificates.to_string(),
                "false".into(),
            ),
        ];
        for (field, got, want) in cases {
            assert_eq!(got, want, "{field}");
        }
    }

    #[test]
    fn json_files_load() {
        let text = r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "maxPods": 50, "syncFrequency": "30s", "authentication": {"anonymous": {"enabled": false}}}"#;
        let (c, warnings) = parse_str(text).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.sync_frequency, Duration::from_secs(30));
    }

    #[test]
    fn zero_values_take_defaults_but_pointer_fields_keep_them() {
        let text = format!(
            "{HEADER}syncFrequency: 0s\nport: 0\ncgroupDriver: \"\"\nhealthzPort: 0\nfailSwapOn: false\n\
             resolvConf: \"\"\ncontainerLogMaxFiles: 0\nenforceNodeAllocatable: []\n"
        );
        let (c, _) = parse_str(&text).unwrap();
        assert_eq!(c.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.port, 10250);
        assert_eq!(c.cgroup_driver, "cgroupfs");
        assert_eq!(c.healthz_port, 0);
        assert!(!c.fail_swap_on);
        assert_eq!(c.resolv_conf, "");
        assert_eq!(c.container_log_max_files, 0);
        assert!(c.enforce_node_allocatable.is_empty());
    }

    #[test]
    fn dependent_defaults() {
        let cases: &[(&str, Duration, Option<bool>)] = &[
            (
                "nodeStatusUpdateFrequency: 20s\n",
                Duration::from_secs(20),
                Some(true),
            ),
            (
                "nodeStatusUpdateFrequency: 20s\nnodeStatusReportFrequency: 1m\n",
                Duration::from_secs(60),
                Some(true),
            ),
            (
                "maxParallelImagePulls: 3\n",
                Duration::from_secs(300),
                Some(false),
            ),
            (
                "maxParallelImagePulls: 1\n",
                Duration::from_secs(300),
                Some(true),
            ),
            (
                "maxParallelImagePulls: 3\nserializeImagePulls: true\n",
                Duration::from_secs(300),
                Some(true),
            ),
        ];
        for (body, report, serialize) in cases {
            let (c, _) = parse_str(&format!("{HEADER}{body}")).unwrap();
            assert_eq!(c.node_status_report_frequency, *report, "{body}");
            assert_eq!(c.serialize_image_pulls, *serialize, "{body}");
        }
    }

    #[test]
    fn eviction_hard_replaces_or_merges() {
        let (c, _) = parse_str(&format!(
            "{HEADER}evictionHard:\n  memory.available: 500Mi\n"
        ))
        .unwrap();
        let hard = c.eviction_hard.unwrap();
        assert_eq!(hard.len(), 1);
        assert_eq!(hard["memory.available"], "500Mi");
        let (c, _) = parse_str(&format!(
            "{HEADER}mergeDefaultEvictionSettings: true\nevictionHard:\n  memory.available: 500Mi\n"
        ))
        .unwrap();
        let hard = c.eviction_hard.unwrap();
        assert_eq!(hard.len(), 5);
        assert_eq!(hard["memory.available"], "500Mi");
        assert_eq!(hard["nodefs.available"], "10%");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let text = format!(
            "{HEADER}staticPodPath: manifests\ntlsCertFile: /abs/cert.pem\n\
             authentication:\n  x509:\n    clientCAFile: pki/ca.crt\n"
        );
        let (c, _) = parse_str(&text).unwrap();
        assert_eq!(c.static_pod_path, "/etc/bosun/manifests");
        assert_eq!(c.tls_cert_file, "/abs/cert.pem");
        assert_eq!(
            c.authentication.x509.client_ca_file,
            "/etc/bosun/pki/ca.crt"
        );
    }

    #[test]
    fn unknown_and_unsupported_fields_warn() {
        let text = format!(
            "{HEADER}fooBar: 1\nauthentication:\n  x509:\n    typo: x\n\
             cpuManagerPolicy: static\ncpuManagerReconcilePeriod: 0s\nenableServer: true\n\
             registryPullQPS: 5\nstreamingConnectionIdleTimeout: 4h0m0s\n\
             hairpinMode: hairpin-veth\nshutdownGracePeriod: 0s\nfeatureGates:\n  Foo: true\n\
             logging:\n  flushFrequency: 0\n  vmodule: x=2\n\
             registerWithTaints:\n- key: a\n  effect: NoSchedule\n  timeAdded: null\n"
        );
        let (_, warnings) = parse_str(&text).unwrap();
        let want = [
            "fooBar: unknown field; ignored",
            "authentication.x509.typo: unknown field; ignored",
            "cpuManagerPolicy: kubelet field not supported by bosun; ignored",
            "logging.vmodule: kubelet field not supported by bosun; ignored",
            "registerWithTaints.0.timeAdded: unknown field; ignored",
        ];
        let mut got = warnings.clone();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn wrong_type_or_header_names_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "apiVersion: v1\nkind: KubeletConfiguration\n",
                "apiVersion: must be \"kubelet.config.k8s.io/v1beta1\", got \"v1\"",
            ),
            (
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n",
                "kind: must be \"KubeletConfiguration\", got \"Pod\"",
            ),
            (
                "kind: KubeletConfiguration\n",
                "apiVersion: must be \"kubelet.config.k8s.io/v1beta1\", got nothing",
            ),
            ("", "apiVersion: must be"),
            (
                &format!("{HEADER}fileCheckFrequency: abc\n"),
                "fileCheckFrequency: invalid duration \"abc\"",
            ),
            (
                &format!("{HEADER}syncFrequency: 10\n"),
                "syncFrequency: invalid type",
            ),
            (
                &format!("{HEADER}authentication:\n  webhook:\n    cacheTTL: -1s\n"),
                "authentication.webhook.cacheTTL: invalid duration \"-1s\": must not be negative",
            ),
            (&format!("{HEADER}port: abc\n"), "port: invalid type"),
            (
                &format!("{HEADER}registerWithTaints:\n- key: a\n  effect: Bad\n"),
                "registerWithTaints[0].effect: unknown variant",
            ),
        ];
        for (text, want) in cases {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let err = parse_str(&format!("{HEADER}port: [1, 2\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("/etc/bosun/config.yaml"), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn round_trips_through_serialize() {
        let c = KubeletConfiguration::default();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"syncFrequency\":\"1m0s\""), "{json}");
        let back: KubeletConfiguration = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
