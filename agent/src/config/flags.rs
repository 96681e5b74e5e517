//! The kubelet's command line, as kubeadm's systemd drop-in passes it (`--flag=value`).
//!
//! Flags override the configuration file. Deprecated kubelet flags that set a file field still
//! work (with a warning, as in the kubelet); flags that no longer do anything are accepted with
//! a warning so a kubeadm node's flag files keep working.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::LogFormat;
use super::duration;

/// Go's `strconv.ParseBool`, which kubelet bool flags use (`--fail-swap-on=false`).
pub(super) fn go_bool_value(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn go_bool(s: &str) -> Result<bool, String> {
    go_bool_value(s).ok_or_else(|| format!("invalid boolean {s:?}"))
}

/// `--version`, `--version=true` or `--version=raw`.
fn version_value(s: &str) -> Result<bool, String> {
    if s == "raw" { Ok(true) } else { go_bool(s) }
}

fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// The command line. Flags without a value given are `None` and leave the file's value alone.
#[derive(Debug, Clone, Default, PartialEq, Parser)]
#[command(
    name = "bosun",
    about = "A Kubernetes node agent: the kubelet's job, in Rust",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Flags {
    /// KubeletConfiguration file (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kubeconfig for the API server; none: standalone mode.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig used to get a client certificate when --kubeconfig is missing or unusable.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// CRI endpoint (unix:///run/containerd/containerd.sock).
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// CRI image service endpoint; default: the runtime endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    pub image_service_endpoint: Option<String>,
    /// Node IP (or comma-separated dual-stack pair).
    #[arg(long, value_name = "IP[,IP]")]
    pub node_ip: Option<String>,
    /// Node name instead of the hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Labels to register the Node with: key=value,key2=value2 (may repeat).
    #[arg(long, value_name = "LABELS", action = clap::ArgAction::Append)]
    pub node_labels: Vec<String>,
    /// Taints to register the Node with: key=value:Effect,key2:Effect.
    #[arg(long, value_name = "TAINTS")]
    pub register_with_taints: Option<String>,
    /// State directory.
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Certificate directory; default: <root-dir>/pki.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Log verbosity.
    #[arg(long = "v", short = 'v', value_name = "LEVEL")]
    pub verbosity: Option<u8>,
    /// Print the version and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = version_value)]
    pub version: Option<bool>,
    /// Log format (bosun).
    #[arg(long, alias = "logging-format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Directory of the /var/log/containers symlinks (bosun).
    #[arg(long, value_name = "DIR")]
    pub container_logs_link_dir: Option<PathBuf>,

    // Deprecated kubelet flags that set a configuration file field.
    /// Deprecated: staticPodPath.
    #[arg(long, value_name = "PATH")]
    pub pod_manifest_path: Option<String>,
    /// Deprecated: cgroupDriver.
    #[arg(long, value_name = "DRIVER")]
    pub cgroup_driver: Option<String>,
    /// Deprecated: cgroupRoot.
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_root: Option<String>,
    /// Deprecated: cgroupsPerQOS.
    #[arg(long = "cgroups-per-qos", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub cgroups_per_qos: Option<bool>,
    /// Deprecated: maxPods.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_pods: Option<i32>,
    /// Deprecated: clusterDNS (comma-separated, may repeat).
    #[arg(long = "cluster-dns", value_name = "IPS", action = clap::ArgAction::Append)]
    pub cluster_dns: Vec<String>,
    /// Deprecated: clusterDomain.
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Deprecated: resolvConf.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<String>,
    /// Deprecated: failSwapOn.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub fail_swap_on: Option<bool>,
    /// Deprecated (kubelet): minimum age of a dead container before it is garbage collected.
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub minimum_container_ttl_duration: Option<Duration>,
    /// Deprecated (kubelet): dead instances kept per container (default 1).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub maximum_dead_containers_per_container: Option<i32>,
    /// Deprecated (kubelet): dead containers kept on the node; negative: no limit (default -1).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub maximum_dead_containers: Option<i32>,
    /// Deprecated: runtimeRequestTimeout.
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub runtime_request_timeout: Option<Duration>,
    /// Deprecated: authentication.anonymous.enabled.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub anonymous_auth: Option<bool>,
    /// Deprecated: authentication.webhook.enabled.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub authentication_token_webhook: Option<bool>,
    /// Deprecated: authorization.mode.
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<String>,
    /// Deprecated: authentication.x509.clientCAFile.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<String>,
    /// Deprecated: readOnlyPort.
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub read_only_port: Option<i32>,
    /// Deprecated: healthzPort.
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub healthz_port: Option<i32>,
    /// Deprecated: healthzBindAddress.
    #[arg(long, value_name = "IP")]
    pub healthz_bind_address: Option<String>,
    /// Deprecated: address.
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// Deprecated: port.
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub port: Option<i32>,
    /// Deprecated: tlsCertFile.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<String>,
    /// Deprecated: tlsPrivateKeyFile.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<String>,
    /// Deprecated: rotateCertificates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub rotate_certificates: Option<bool>,
    /// Deprecated: nodeStatusUpdateFrequency.
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub node_status_update_frequency: Option<Duration>,
    /// Deprecated: registerNode.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub register_node: Option<bool>,
    /// Deprecated: featureGates (Name=true,Other=false).
    #[arg(long, value_name = "GATES", action = clap::ArgAction::Append)]
    pub feature_gates: Vec<String>,
    /// Deprecated: podPidsLimit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pod_max_pids: Option<i64>,
    /// Deprecated: systemReserved (cpu=100m,memory=100Mi).
    #[arg(long, value_name = "RESOURCES", action = clap::ArgAction::Append)]
    pub system_reserved: Vec<String>,
    /// Deprecated: kubeReserved (cpu=100m,memory=100Mi).
    #[arg(long, value_name = "RESOURCES", action = clap::ArgAction::Append)]
    pub kube_reserved: Vec<String>,

    // Deprecated kubelet flags that no longer do anything.
    /// Ignored: the sandbox image is the runtime's choice.
    #[arg(long, value_name = "IMAGE", hide = true)]
    pub pod_infra_container_image: Option<String>,
    /// Ignored: networking is the runtime's (CNI) job.
    #[arg(long, value_name = "NAME", hide = true)]
    pub network_plugin: Option<String>,
    /// Ignored: networking is the runtime's (CNI) job.
    #[arg(long, value_name = "DIR", hide = true)]
    pub cni_bin_dir: Option<String>,
    /// Ignored: networking is the runtime's (CNI) job.
    #[arg(long, value_name = "DIR", hide = true)]
    pub cni_conf_dir: Option<String>,
    /// Ignored: the runtime is always remote (CRI).
    #[arg(long, value_name = "NAME", hide = true)]
    pub container_runtime: Option<String>,
    /// Ignored: bosun has no in-tree cloud provider.
    #[arg(long, value_name = "NAME", hide = true)]
    pub cloud_provider: Option<String>,
}

/// Flags that set a file field: flag name, file field.
const CONFIG_FIELD_FLAGS: &[(&str, &str)] = &[
    ("pod-manifest-path", "staticPodPath"),
    ("cgroup-driver", "cgroupDriver"),
    ("cgroup-root", "cgroupRoot"),
    ("cgroups-per-qos", "cgroupsPerQOS"),
    ("max-pods", "maxPods"),
    ("cluster-dns", "clusterDNS"),
    ("cluster-domain", "clusterDomain"),
    ("resolv-conf", "resolvConf"),
    ("fail-swap-on", "failSwapOn"),
    ("runtime-request-timeout", "runtimeRequestTimeout"),
    ("anonymous-auth", "authentication.anonymous.enabled"),
    (
        "authentication-token-webhook",
        "authentication.webhook.enabled",
    ),
    ("authorization-mode", "authorization.mode"),
    ("client-ca-file", "authentication.x509.clientCAFile"),
    ("read-only-port", "readOnlyPort"),
    ("healthz-port", "healthzPort"),
    ("healthz-bind-address", "healthzBindAddress"),
    ("address", "address"),
    ("port", "port"),
    ("tls-cert-file", "tlsCertFile"),
    ("tls-private-key-file", "tlsPrivateKeyFile"),
    ("rotate-certificates", "rotateCertificates"),
    ("node-status-update-frequency", "nodeStatusUpdateFrequency"),
    ("register-node", "registerNode"),
    ("feature-gates", "featureGates"),
    ("pod-max-pids", "podPidsLimit"),
    ("system-reserved", "systemReserved"),
    ("kube-reserved", "kubeReserved"),
];

impl Flags {
    /// Parses a command line (with argv\[0\]).
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }

    /// True when `--version` asks for the version.
    pub fn show_version(&self) -> bool {
        self.version == Some(true)
    }

    /// Whether a flag (by its long name) was given.
    fn given(&self, name: &str) -> bool {
        match name {
            "pod-manifest-path" => self.pod_manifest_path.is_some(),
            "cgroup-driver" => self.cgroup_driver.is_some(),
            "cgroup-root" => self.cgroup_root.is_some(),
            "cgroups-per-qos" => self.cgroups_per_qos.is_some(),
            "max-pods" => self.max_pods.is_some(),
            "cluster-dns" => !self.cluster_dns.is_empty(),
            "cluster-domain" => self.cluster_domain.is_some(),
            "resolv-conf" => self.resolv_conf.is_some(),
            "fail-swap-on" => self.fail_swap_on.is_some(),
            "runtime-request-timeout" => self.runtime_request_timeout.is_some(),
            "anonymous-auth" => self.anonymous_auth.is_some(),
            "authentication-token-webhook" => self.authentication_token_webhook.is_some(),
            "authorization-mode" => self.authorization_mode.is_some(),
            "client-ca-file" => self.client_ca_file.is_some(),
            "read-only-port" => self.read_only_port.is_some(),
            "healthz-port" => self.healthz_port.is_some(),
            "healthz-bind-address" => self.healthz_bind_address.is_some(),
            "address" => self.address.is_some(),
            "port" => self.port.is_some(),
            "tls-cert-file" => self.tls_cert_file.is_some(),
            "tls-private-key-file" => self.tls_private_key_file.is_some(),
            "rotate-certificates" => self.rotate_certificates.is_some(),
            "node-status-update-frequency" => self.node_status_update_frequency.is_some(),
            "register-node" => self.register_node.is_some(),
            "feature-gates" => !self.feature_gates.is_empty(),
            "pod-max-pids" => self.pod_max_pids.is_some(),
            "system-reserved" => !self.system_reserved.is_empty(),
            "kube-reserved" => !self.kube_reserved.is_empty(),
            _ => false,
        }
    }

    /// Warnings for the deprecated flags given.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = CONFIG_FIELD_FLAGS
            .iter()
            .filter(|(flag, _)| self.given(flag))
            .map(|(flag, field)| {
                format!("--{flag} is deprecated: set {field} in the --config file instead")
            })
            .collect();
        let no_ops = [
            (
                "pod-infra-container-image",
                &self.pod_infra_container_image,
                "the sandbox image is set in the container runtime's configuration",
            ),
            (
                "network-plugin",
                &self.network_plugin,
                "pod networking is configured in the container runtime (CNI)",
            ),
            (
                "cni-bin-dir",
                &self.cni_bin_dir,
                "pod networking is configured in the container runtime (CNI)",
            ),
            (
                "cni-conf-dir",
                &self.cni_conf_dir,
                "pod networking is configured in the container runtime (CNI)",
            ),
            (
                "container-runtime",
                &self.container_runtime,
                "the runtime is always a CRI endpoint (--container-runtime-endpoint)",
            ),
            (
                "cloud-provider",
                &self.cloud_provider,
                "bosun has no in-tree cloud provider",
            ),
        ];
        // The container GC flags still work in the kubelet, deprecated with this message.
        let gc = [
            (
                "minimum-container-ttl-duration",
                self.minimum_container_ttl_duration.is_some(),
            ),
            (
                "maximum-dead-containers-per-container",
                self.maximum_dead_containers_per_container.is_some(),
            ),
            (
                "maximum-dead-containers",
                self.maximum_dead_containers.is_some(),
            ),
        ];
        for (flag, _) in gc.iter().filter(|(_, given)| *given) {
            warnings.push(format!(
                "--{flag} is deprecated: Use --eviction-hard or --eviction-soft instead. Will be removed in a future version."
            ));
        }
        for (flag, value, why) in no_ops {
            if value.is_some() {
                warnings.push(format!("--{flag} is deprecated and ignored: {why}"));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::parse_args(std::iter::once("bosun").chain(args.iter().copied()))
    }

    #[test]
    fn kubeadm_flags_parse() {
        let f = parse(&[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10",
            "--node-ip",
            "10.0.0.5",
            "--v=2",
        ])
        .unwrap();
        assert_eq!(f.config, Some("/var/lib/kubelet/config.yaml".into()));
        assert_eq!(f.kubeconfig, Some("/etc/kubernetes/kubelet.conf".into()));
        assert_eq!(f.node_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(f.verbosity, Some(2));
        assert_eq!(
            f.warnings(),
            [
                "--pod-infra-container-image is deprecated and ignored: the sandbox image is set in the container runtime's configuration"
            ]
        );
    }

    #[test]
    fn repeated_flags_last_wins_and_lists_append() {
        let f = parse(&[
            "--node-ip=10.0.0.1",
            "--node-ip=10.0.0.2",
            "--node-labels=a=1",
            "--node-labels=b=2,c=3",
        ])
        .unwrap();
        assert_eq!(f.node_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(f.node_labels, ["a=1", "b=2,c=3"]);
    }

    #[test]
    fn bools_and_version() {
        let cases: &[(&[&str], Option<bool>, Option<bool>)] = &[
            (&[], None, None),
            (&["--version"], Some(true), None),
            (&["--version=raw"], Some(true), None),
            (&["--version=false"], Some(false), None),
            (&["--fail-swap-on=false"], None, Some(false)),
            (&["--fail-swap-on"], None, Some(true)),
            (&["--fail-swap-on=F"], None, Some(false)),
        ];
        for (args, version, swap) in cases {
            let f = parse(args).unwrap();
            assert_eq!(f.version, *version, "{args:?}");
            assert_eq!(f.fail_swap_on, *swap, "{args:?}");
        }
        assert!(parse(&["--fail-swap-on=maybe"]).is_err());
        for args in [&["-v=3"][..], &["-v", "3"], &["--v", "3"], &["--v=3"]] {
            assert_eq!(parse(args).unwrap().verbosity, Some(3), "{args:?}");
        }
    }

    #[test]
    fn deprecated_flags_warn() {
        let cases: &[(&str, &str)] = &[
            (
                "--pod-infra-container-image=pause:3.9",
                "--pod-infra-container-image is deprecated and ignored",
            ),
            (
                "--network-plugin=cni",
                "--network-plugin is deprecated and ignored",
            ),
            (
                "--cni-bin-dir=/opt/cni/bin",
                "--cni-bin-dir is deprecated and ignored",
            ),
            (
                "--cni-conf-dir=/etc/cni/net.d",
                "--cni-conf-dir is deprecated and ignored",
            ),
            (
                "--container-runtime=remote",
                "--container-runtime is deprecated and ignored",
            ),
            (
                "--cloud-provider=external",
                "--cloud-provider is deprecated and ignored",
            ),
            (
                "--max-pods=20",
                "--max-pods is deprecated: set maxPods in the --config file instead",
            ),
            (
                "--cgroup-driver=systemd",
                "--cgroup-driver is deprecated: set cgroupDriver",
            ),
            (
                "--anonymous-auth=false",
                "--anonymous-auth is deprecated: set authentication.anonymous.enabled",
            ),
            (
                "--runtime-request-timeout=1m",
                "--runtime-request-timeout is deprecated",
            ),
        ];
        for (arg, want) in cases {
            let warnings = parse(&[arg]).unwrap().warnings();
            assert_eq!(warnings.len(), 1, "{arg}: {warnings:?}");
            assert!(warnings[0].starts_with(want), "{arg}: {warnings:?}");
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--v=300"], "--v"),
            (&["--log-format=xml"], "--log-format"),
            (
                &["--runtime-request-timeout=abc"],
                "invalid duration \"abc\"",
            ),
            (&["--no-such-flag"], "--no-such-flag"),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
