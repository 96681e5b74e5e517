//! Tests of the whole path: flags + file -> validated Config.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::eviction::ThresholdValue;
use super::*;

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn flags(args: &[&str]) -> Flags {
    Flags::parse_args(std::iter::once("bosun").chain(args.iter().copied())).unwrap()
}

/// Loads `body` (after the header) as the config file, then `args`, with hostname "Node-1".
fn from_text(body: &str, args: &[&str]) -> Result<Config, ConfigError> {
    let f = flags(args);
    let (kubelet, mut warnings) = file::parse(
        Path::new("/etc/bosun/config.yaml"),
        &format!("{HEADER}{body}"),
    )?;
    warnings.extend(f.warnings());
    let mut config = validate::build(kubelet, &f, "node-1".into(), &mut warnings)?;
    config.warnings = warnings;
    Ok(config)
}

fn host() -> std::io::Result<String> {
    Ok("Node-1.Example\n".into())
}

#[test]
fn without_a_file_the_defaults_are_the_kubelets_and_secure() {
    let c = load_with(flags(&[]), host).unwrap();
    assert_eq!(c.node.name, "node-1.example");
    assert_eq!(c.config_file, None);
    assert_eq!(c.api.kubeconfig, None);
    assert_eq!(c.runtime.endpoint, "unix:///run/containerd/containerd.sock");
    assert_eq!(c.runtime.image_endpoint, c.runtime.endpoint);
    assert_eq!(c.paths.root_dir, Path::new("/var/lib/kubelet"));
    assert_eq!(c.paths.cert_dir, Path::new("/var/lib/kubelet/pki"));
    assert_eq!(c.paths.pod_logs_dir, Path::new("/var/log/pods"));
    assert_eq!(
        c.paths.container_logs_link_dir,
        Path::new("/var/log/containers")
    );
    assert_eq!(c.pods.static_pod_path, None);
    assert_eq!(c.pods.file_check_frequency, Duration::from_secs(20));
    assert_eq!(c.pods.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.runtime.request_timeout, Duration::from_secs(120));
    assert_eq!(
        (
            c.server.healthz_bind_address.as_str(),
            c.server.healthz_port
        ),
        ("127.0.0.1", 10248)
    );
    assert_eq!(
        (
            c.server.address.as_str(),
            c.server.port,
            c.server.read_only_port
        ),
        ("0.0.0.0", 10250, 0)
    );
    assert!(!c.server.authentication.anonymous_enabled);
    assert!(c.server.authentication.webhook_enabled);
    assert_eq!(
        c.server.authentication.webhook_cache_ttl,
        Duration::from_secs(120)
    );
    assert_eq!(c.server.authorization.mode, AuthorizationMode::Webhook);
    assert_eq!(
        c.server.authorization.cache_authorized_ttl,
        Duration::from_secs(300)
    );
    assert_eq!(
        c.server.authorization.cache_unauthorized_ttl,
        Duration::from_secs(30)
    );
    assert_eq!(c.cgroups.driver, CgroupDriver::Cgroupfs);
    assert_eq!(c.pods.change_detection, ChangeDetectionStrategy::Watch);
    assert!(c.cgroups.per_qos);
    assert_eq!(c.cgroups.enforce_node_allocatable, ["pods"]);
    // The default evictionHard, typed: memory.available and nodefs.available come off capacity.
    assert_eq!(
        c.node.reserved.hard_eviction,
        BTreeMap::from([
            (
                "ephemeral-storage".to_string(),
                ThresholdValue::Percentage(0.1)
            ),
            (
                "memory".to_string(),
                ThresholdValue::Quantity(100 * 1024 * 1024 * 1000)
            ),
        ])
    );
    assert_eq!(c.node.max_pods, 110);
    assert_eq!(c.cgroups.pod_pids_limit, None);
    assert!(c.images.serialize_pulls);
    assert_eq!(c.node.status_update_frequency, Duration::from_secs(10));
    assert_eq!(c.node.status_report_frequency, Duration::from_secs(300));
    assert_eq!(c.node.lease_duration_seconds, 40);
    assert_eq!(c.images.minimum_gc_age, Duration::from_secs(120));
    assert_eq!(c.images.maximum_gc_age, None);
    assert_eq!(
        (
            c.images.gc_high_threshold_percent,
            c.images.gc_low_threshold_percent
        ),
        (85, 80)
    );
    assert_eq!(c.container_logs.max_size, 10 * 1024 * 1024);
    assert_eq!(c.container_logs.max_files, 5);
    assert_eq!(c.pods.resolv_conf, "/etc/resolv.conf");
    assert!(c.node.fail_swap_on && c.node.register && c.cgroups.fail_cgroup_v1);
    assert_eq!(
        (c.logging.verbosity, c.logging.format),
        (0, LogFormat::Text)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(!c.show_version);
}

#[test]
fn an_empty_file_equals_no_file() {
    let with_file = from_text("", &[]).unwrap();
    let mut without = load_with(flags(&[]), host).unwrap();
    without.node.name = with_file.node.name.clone();
    assert_eq!(with_file, without);
}

#[test]
fn kubeadm_config_loads() {
    let path = fixture("kubeadm-kubelet-config.yaml");
    let c = load_with(
        flags(&[
            &format!("--config={path}"),
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        ]),
        host,
    )
    .unwrap();
    assert_eq!(c.config_file.as_deref(), Some(Path::new(&path)));
    assert_eq!(
        c.api.kubeconfig.as_deref(),
        Some(Path::new("/etc/kubernetes/kubelet.conf"))
    );
    assert_eq!(
        c.api.bootstrap_kubeconfig.as_deref(),
        Some(Path::new("/etc/kubernetes/bootstrap-kubelet.conf"))
    );
    assert_eq!(
        c.runtime.endpoint,
        "unix:///var/run/containerd/containerd.sock"
    );
    assert_eq!(c.cgroups.driver, CgroupDriver::Systemd);
    assert_eq!(c.pods.cluster_dns, ["10.96.0.10"]);
    assert_eq!(c.pods.cluster_domain, "cluster.local");
    assert_eq!(
        c.pods.static_pod_path.as_deref(),
        Some(Path::new("/etc/kubernetes/manifests"))
    );
    assert_eq!(
        c.server.authentication.client_ca_file.as_deref(),
        Some(Path::new("/etc/kubernetes/pki/ca.crt"))
    );
    assert_eq!(c.pods.resolv_conf, "/run/systemd/resolve/resolv.conf");
    assert!(c.api.rotate_certificates);
    // kubeadm's explicit zero values take the kubelet's defaults.
    assert_eq!(c.pods.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.pods.file_check_frequency, Duration::from_secs(20));
    assert_eq!(
        c.server.authentication.webhook_cache_ttl,
        Duration::from_secs(120)
    );
    assert_eq!(c.node.status_report_frequency, Duration::from_secs(300));
    // Only the deprecated flag warns: kubeadm's zero-valued unsupported fields do not.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("--pod-infra-container-image"));
}

#[test]
fn flags_override_the_file() {
    let body = "containerRuntimeEndpoint: unix:///file.sock\nmaxPods: 50\ncgroupDriver: systemd\n\
                staticPodPath: /file/manifests\nhealthzPort: 1234\nclusterDNS: [10.0.0.10]\n\
                logging:\n  verbosity: 3\n  format: json\n\
                registerWithTaints:\n- key: file\n  effect: NoSchedule\n";
    type Case<'a> = (&'a str, fn(&Config) -> String, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "--container-runtime-endpoint=unix:///flag.sock",
            |c| c.runtime.endpoint.clone(),
            "unix:///file.sock",
            "unix:///flag.sock",
        ),
        ("--max-pods=20", |c| c.node.max_pods.to_string(), "50", "20"),
        (
            "--cgroup-driver=cgroupfs",
            |c| format!("{:?}", c.cgroups.driver),
            "Systemd",
            "Cgroupfs",
        ),
        (
            "--pod-manifest-path=/flag/manifests",
            |c| format!("{:?}", c.pods.static_pod_path),
            "Some(\"/file/manifests\")",
            "Some(\"/flag/manifests\")",
        ),
        (
            "--healthz-port=0",
            |c| c.server.healthz_port.to_string(),
            "1234",
            "0",
        ),
        (
            "--cluster-dns=10.0.0.1,fd00::a",
            |c| c.pods.cluster_dns.join(","),
            "10.0.0.10",
            "10.0.0.1,fd00::a",
        ),
        ("--v=5", |c| c.logging.verbosity.to_string(), "3", "5"),
        (
            "--log-format=text",
            |c| format!("{:?}", c.logging.format),
            "Json",
            "Text",
        ),
        (
            "--register-with-taints=a=b:NoExecute,c:PreferNoSchedule",
            |c| format!("{:?}", c.node.register_with_taints),
            "[Taint { key: \"file\", value: \"\", effect: NoSchedule }]",
            "[Taint { key: \"a\", value: \"b\", effect: NoExecute }, Taint { key: \"c\", value: \"\", effect: PreferNoSchedule }]",
        ),
        (
            "--anonymous-auth=true",
            |c| c.server.authentication.anonymous_enabled.to_string(),
            "false",
            "true",
        ),
        (
            "--root-dir=/tmp/root",
            |c| c.paths.cert_dir.display().to_string(),
            "/var/lib/kubelet/pki",
            "/tmp/root/pki",
        ),
        (
            "--cert-dir=/tmp/pki",
            |c| c.paths.cert_dir.display().to_string(),
            "/var/lib/kubelet/pki",
            "/tmp/pki",
        ),
        (
            "--container-logs-link-dir=/tmp/links",
            |c| c.paths.container_logs_link_dir.display().to_string(),
            "/var/log/containers",
            "/tmp/links",
        ),
        (
            "--node-labels=a=1,node.kubernetes.io/x=y",
            |c| format!("{:?}", c.node.labels),
            "{}",
            "{\"a\": \"1\", \"node.kubernetes.io/x\": \"y\"}",
        ),
        (
            "--node-ip=10.1.2.3,fd00::3",
            |c| format!("{:?} {:?}", c.node.ips.first(), c.node.ips),
            "None []",
            "Some(10.1.2.3) [10.1.2.3, fd00::3]",
        ),
        (
            "--feature-gates=A=true,B=false",
            |c| format!("{:?}", c.feature_gates),
            "{}",
            "{\"A\": true, \"B\": false}",
        ),
        (
            "--system-reserved=cpu=100m,memory=1Gi",
            |c| format!("{:?}", c.node.reserved.system),
            "{}",
            "{\"cpu\": 100, \"memory\": 1073741824000}",
        ),
    ];
    for (arg, get, from_file, from_flag) in cases {
        assert_eq!(
            get(&from_text(body, &[]).unwrap()),
            *from_file,
            "file value for {arg}"
        );
        assert_eq!(
            get(&from_text(body, &[arg]).unwrap()),
            *from_flag,
            "flag {arg}"
        );
    }
}

#[test]
fn every_validation_error_names_its_field() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "healthzPort: 70000\n",
            &[],
            "healthzPort: must be between 1 and 65535, got 70000",
        ),
        (
            "port: 0\n",
            &["--port=0"],
            "port: must be between 1 and 65535, got 0",
        ),
        (
            "port: -1\n",
            &[],
            "port: must be between 1 and 65535, got -1",
        ),
        (
            "readOnlyPort: 99999\n",
            &[],
            "readOnlyPort: must be between 1 and 65535",
        ),
        (
            "cgroupDriver: foo\n",
            &[],
            "cgroupDriver: must be cgroupfs or systemd, got \"foo\"",
        ),
        (
            "configMapAndSecretChangeDetectionStrategy: Poll\n",
            &[],
            "configMapAndSecretChangeDetectionStrategy: unknown configmap and secret manager mode: \"Poll\"",
        ),
        (
            "authorization:\n  mode: RBAC\n",
            &[],
            "authorization.mode: must be Webhook or AlwaysAllow, got \"RBAC\"",
        ),
        ("hairpinMode: weird\n", &[], "hairpinMode: must be"),
        (
            "logging:\n  format: xml\n",
            &[],
            "logging.format: must be text or json, got \"xml\"",
        ),
        (
            "logging:\n  verbosity: 1000\n",
            &[],
            "logging.verbosity: must be at most 255",
        ),
        (
            "address: nowhere\n",
            &[],
            "address: must be a valid IP address",
        ),
        (
            "healthzBindAddress: localhost\n",
            &[],
            "healthzBindAddress: must be a valid IP address",
        ),
        (
            "clusterDNS: [10.0.0.10, dns]\n",
            &[],
            "clusterDNS[1]: must be a valid IP address",
        ),
        (
            "maxPods: -3\n",
            &[],
            "maxPods: must be greater than 0, got -3",
        ),
        (
            "nodeLeaseDurationSeconds: -1\n",
            &[],
            "nodeLeaseDurationSeconds: must be greater than 0",
        ),
        (
            "imageGCHighThresholdPercent: 101\n",
            &[],
            "imageGCHighThresholdPercent: must be between 0 and 100, got 101",
        ),
        (
            "imageGCLowThresholdPercent: 90\n",
            &[],
            "imageGCLowThresholdPercent: must be less than imageGCHighThresholdPercent (85), got 90",
        ),
        (
            "imageMaximumGCAge: 1m\n",
            &[],
            "imageMaximumGCAge: must be greater than imageMinimumGCAge (2m0s), got 1m0s",
        ),
        (
            "containerLogMaxWorkers: 0\n",
            &[],
            "containerLogMaxWorkers: must be greater than or equal to 1, got 0",
        ),
        (
            "containerLogMonitorInterval: 2s\n",
            &[],
            "containerLogMonitorInterval: must be a positive time duration greater than or equal to 3s, got 2s",
        ),
        (
            "containerLogMaxFiles: 1\n",
            &[],
            "containerLogMaxFiles: must be at least 2, got 1",
        ),
        (
            "containerLogMaxSize: ten\n",
            &[],
            "containerLogMaxSize: must be a positive quantity",
        ),
        (
            "maxParallelImagePulls: 0\n",
            &[],
            "maxParallelImagePulls: must be at least 1",
        ),
        (
            "maxParallelImagePulls: 4\nserializeImagePulls: true\n",
            &[],
            "maxParallelImagePulls: must not be set above 1",
        ),
        (
            "evictionHard:\n  memory.available: lots\n",
            &[],
            "evictionHard.memory.available: must be a non-negative quantity or a percentage",
        ),
        (
            "evictionHard:\n  nodefs.available: 120%\n",
            &[],
            "evictionHard.nodefs.available: must be",
        ),
        (
            "evictionHard:\n  memory.available: \"0\"\n",
            &[],
            "evictionHard.memory.available: must be positive",
        ),
        (
            "evictionSoft:\n  memory.available: 1Gi\n",
            &[],
            "evictionSoft.memory.available: grace period must be specified",
        ),
        (
            "evictionMinimumReclaim:\n  nodefs.available: 0%\n",
            &[],
            "evictionMinimumReclaim.nodefs.available: must be a positive percentage",
        ),
        (
            "evictionHard:\n  cpu.available: 1Gi\n",
            &[],
            "evictionHard.cpu.available: unknown eviction signal",
        ),
        (
            "systemReserved:\n  memory: -1Gi\n",
            &[],
            "systemReserved.memory: must be a non-negative quantity",
        ),
        (
            "kubeReserved:\n  gpu: \"1\"\n",
            &[],
            "kubeReserved.gpu: cannot reserve",
        ),
        (
            "enforceNodeAllocatable: [pods, everything]\n",
            &[],
            "enforceNodeAllocatable: unknown value \"everything\"",
        ),
        (
            "enforceNodeAllocatable: [none, pods]\n",
            &[],
            "enforceNodeAllocatable: \"none\" must be the only value",
        ),
        (
            "cgroupsPerQOS: false\n",
            &[],
            "enforceNodeAllocatable: requires cgroupsPerQOS",
        ),
        (
            "tlsCertFile: /a.crt\n",
            &[],
            "tlsPrivateKeyFile: tlsCertFile and tlsPrivateKeyFile must be set together",
        ),
        (
            "podLogsDir: logs\n",
            &[],
            "podLogsDir: must be an absolute path",
        ),
        (
            "containerRuntimeEndpoint: tcp://1.2.3.4:1\n",
            &[],
            "containerRuntimeEndpoint: must be a unix:///path endpoint",
        ),
        (
            "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 20s\n",
            &[],
            "shutdownGracePeriodCriticalPods: shutdownGracePeriodCriticalPods 20s must be <= \
             shutdownGracePeriod 10s",
        ),
        (
            "shutdownGracePeriod: 500ms\n",
            &[],
            "shutdownGracePeriod: shutdownGracePeriod 500ms must be either zero or otherwise >= 1 sec",
        ),
        (
            "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 500ms\n",
            &[],
            "shutdownGracePeriodCriticalPods: shutdownGracePeriodCriticalPods 500ms must be either zero",
        ),
        (
            "shutdownGracePeriod: 10s\nshutdownGracePeriodByPodPriority:\n- priority: 0\n  shutdownGracePeriodSeconds: 5\n",
            &[],
            "shutdownGracePeriodByPodPriority: Cannot specify both shutdownGracePeriodByPodPriority \
             and shutdownGracePeriod at the same time",
        ),
        (
            "registerWithTaints:\n- key: \"bad key\"\n  effect: NoSchedule\n",
            &[],
            "registerWithTaints: taint key \"bad key\"",
        ),
        (
            "",
            &["--node-ip=10.0.0.300"],
            "--node-ip: invalid IP address \"10.0.0.300\"",
        ),
        (
            "",
            &["--node-ip=10.0.0.1,10.0.0.2"],
            "--node-ip: want one IP or one IPv4 and one IPv6",
        ),
        (
            "",
            &["--node-labels=novalue"],
            "--node-labels: \"novalue\" is not key=value",
        ),
        (
            "",
            &["--node-labels=kubernetes.io/role=master"],
            "--node-labels: \"kubernetes.io/role\": labels in the kubernetes.io",
        ),
        (
            "",
            &["--node-labels=a=not valid"],
            "--node-labels: value \"not valid\"",
        ),
        (
            "",
            &["--register-with-taints=a=b"],
            "--register-with-taints: \"a=b\": want key=value:Effect",
        ),
        (
            "",
            &["--register-with-taints=a=b:Sometimes"],
            "--register-with-taints: \"a=b:Sometimes\": effect must be",
        ),
        (
            "",
            &["--feature-gates=A=maybe"],
            "--feature-gates: A: invalid boolean \"maybe\"",
        ),
        (
            "",
            &["--system-reserved=cpu"],
            "--system-reserved: \"cpu\" is not key=value",
        ),
        (
            "",
            &["--authorization-mode=AlwaysDeny"],
            "authorization.mode: must be Webhook or AlwaysAllow",
        ),
    ];
    for (body, args, want) in cases {
        match from_text(body, args) {
            Ok(_) => panic!("{body:?} {args:?}: no error, want {want:?}"),
            Err(e) => {
                let got = e.to_string();
                assert!(
                    got.contains(want),
                    "{body:?} {args:?}: got {got:?}, want {want:?}"
                );
            }
        }
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let err = from_text("port: 0\ncgroupDriver: foo\n", &[]);
    let Err(ConfigError::Invalid(errors)) = err else {
        panic!("{err:?}");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["cgroupDriver"]);
    let err = from_text("port: 70000\ncgroupDriver: foo\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "port: must be between 1 and 65535, got 70000; \
         cgroupDriver: must be cgroupfs or systemd, got \"foo\""
    );
}

#[test]
fn warnings_collect_unknown_fields_and_deprecated_flags() {
    let c = from_text(
        "someNewField: true\ncpuManagerPolicy: static\ncontainerRuntimeEndpoint: /run/crio/crio.sock\nreadOnlyPort: 10255\n",
        &["--network-plugin=cni", "--cni-bin-dir=/opt/cni/bin", "--container-runtime=remote"],
    )
    .unwrap();
    let want = [
        "someNewField: unknown field; ignored",
        "cpuManagerPolicy: kubelet field not supported by bosun; ignored",
        "--network-plugin is deprecated and ignored",
        "--cni-bin-dir is deprecated and ignored",
        "--container-runtime is deprecated and ignored",
        "containerRuntimeEndpoint: \"/run/crio/crio.sock\" has no scheme",
        "readOnlyPort: the unauthenticated read-only server is not served by bosun",
    ];
    for w in want {
        assert!(
            c.warnings.iter().any(|got| got.starts_with(w)),
            "missing {w:?} in {:?}",
            c.warnings
        );
    }
    assert_eq!(c.warnings.len(), want.len(), "{:?}", c.warnings);
    assert_eq!(c.runtime.endpoint, "unix:///run/crio/crio.sock");
}

#[test]
fn warnings_are_logged_once() {
    let c = load_with(flags(&["--network-plugin=a", "--network-plugin=b"]), host).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}

#[test]
fn node_name() {
    type Case<'a> = (
        &'a [&'a str],
        std::io::Result<String>,
        Result<&'a str, &'a str>,
    );
    let cases: &[Case] = &[
        (
            &["--hostname-override=Worker-A"],
            Ok("ignored".into()),
            Ok("worker-a"),
        ),
        (
            &["--hostname-override= "],
            Ok(" Host-B \n".into()),
            Ok("host-b"),
        ),
        (&[], Ok("HOST\n".into()), Ok("host")),
        (
            &[],
            Ok("\n".into()),
            Err("node name: reading the hostname: the hostname is empty"),
        ),
        (
            &[],
            Err(std::io::Error::other("boom")),
            Err("node name: reading the hostname: boom"),
        ),
    ];
    for (args, hostname, want) in cases {
        let hostname = match hostname {
            Ok(s) => Ok(s.clone()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let got = load_with(flags(args), || hostname)
            .map(|c| c.node.name)
            .map_err(|e| e.to_string());
        assert_eq!(got.as_deref().map_err(String::as_str), *want, "{args:?}");
    }
}

#[test]
fn version_needs_no_valid_config() {
    let c = load([
        "bosun",
        "--version",
        "--config=/nonexistent/config.yaml",
        "--node-ip=bad",
    ])
    .unwrap();
    assert!(c.show_version);
}

#[test]
fn file_errors() {
    let err = load([
        "bosun",
        "--config=/nonexistent/config.yaml",
        "--hostname-override=n",
    ])
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/config.yaml"),
        "{err}"
    );
    let err = load(["bosun", "--help"]).unwrap_err();
    let ConfigError::Flags(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
}

#[test]
fn quantities_are_validated_by_the_parser_that_uses_them() {
    // Validation and allocatable read systemReserved with the same exact parser: what one
    // accepts the other computes with.
    let cases: &[(&str, bool)] = &[
        ("10Mi", true),
        ("100m", true),
        ("1.5G", true),
        ("1e3", true),
        ("2E", true),
        ("0", true),
        ("-1Gi", false),
        ("ten", false),
        ("10MB", false),
        ("1.2.3", false),
        ("Mi", false),
    ];
    for (q, ok) in cases {
        let got = from_text(&format!("systemReserved:\n  memory: \"{q}\"\n"), &[]);
        assert_eq!(got.is_ok(), *ok, "{q}: {got:?}");
        if let Err(e) = got {
            assert!(e.to_string().contains("systemReserved.memory"), "{q}: {e}");
        }
    }
    // A fraction of a byte rounds up as the API server does; below one byte is refused.
    assert_eq!(
        from_text("containerLogMaxSize: 10Mi\n", &[])
            .unwrap()
            .container_logs
            .max_size,
        10 << 20
    );
    assert!(from_text("containerLogMaxSize: 500m\n", &[]).is_err());
}

/// The not-acted-on warning for `field`.
fn not_acted_on(field: &str) -> String {
    format!("field accepted but not acted on yet: {field} (")
}

#[test]
fn fields_not_acted_on_are_warned_about_by_name() {
    // (file body, flags, the fields warned about); defaults, and the same value spelled
    // differently, warn about nothing.
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("", &[], &[]),
        (
            "imageGCHighThresholdPercent: 85\nimageGCLowThresholdPercent: 80\n\
             imageMinimumGCAge: 2m0s\ncontainerLogMaxSize: \"10485760\"\ncontainerLogMaxFiles: 5\n\
             failSwapOn: true\nenforceNodeAllocatable: [pods]\nhairpinMode: promiscuous-bridge\n",
            &[],
            &[],
        ),
        // Image GC honours its four fields: no warning.
        (
            "imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 70\n\
             imageMinimumGCAge: 5m\nimageMaximumGCAge: 168h\n",
            &[],
            &[],
        ),
        // Log rotation honours its four fields: no warning.
        (
            "containerLogMaxSize: 50Mi\ncontainerLogMaxFiles: 3\ncontainerLogMaxWorkers: 2\n\
             containerLogMonitorInterval: 5s\n",
            &[],
            &[],
        ),
        ("serverTLSBootstrap: true\n", &[], &[]),
        ("failSwapOn: false\n", &[], &["failSwapOn"]),
        ("", &["--fail-swap-on=false"], &["failSwapOn"]),
        ("failCgroupV1: false\n", &[], &["failCgroupV1"]),
        ("hairpinMode: hairpin-veth\n", &[], &["hairpinMode"]),
        ("evictionHard:\n  memory.available: 200Mi\n", &[], &[]),
        (
            "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: 10%\n  \
             nodefs.inodesFree: 5%\n  imagefs.available: 15%\n  imagefs.inodesFree: 5%\n",
            &[],
            &[],
        ),
        (
            "enforceNodeAllocatable: [pods, system-reserved]\nsystemReserved:\n  cpu: 100m\n",
            &[],
            &["enforceNodeAllocatable"],
        ),
        ("shutdownGracePeriod: 30s\n", &[], &[]),
        (
            "shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n",
            &[],
            &[],
        ),
        (
            "",
            &["--image-service-endpoint=unix:///run/other.sock"],
            &["imageServiceEndpoint"],
        ),
        (
            "imageServiceEndpoint: unix:///run/containerd/containerd.sock\n",
            &[],
            &[],
        ),
        // The eviction manager acts on every eviction field: no warning.
        ("evictionPressureTransitionPeriod: 30s\n", &[], &[]),
        (
            "evictionSoft:\n  memory.available: 1Gi\nevictionSoftGracePeriod:\n  memory.available: 1m\n",
            &[],
            &[],
        ),
        ("evictionMaxPodGracePeriod: 30\n", &[], &[]),
        (
            "evictionMinimumReclaim:\n  memory.available: 500Mi\n",
            &[],
            &[],
        ),
        ("featureGates:\n  Foo: true\n", &[], &["featureGates.Foo"]),
        ("", &["--feature-gates=Bar=false"], &["featureGates.Bar"]),
    ];
    for (body, args, want) in cases {
        let c = from_text(body, args).unwrap_or_else(|e| panic!("{body}{args:?}: {e}"));
        let got: Vec<&String> = c
            .warnings
            .iter()
            .filter(|w| w.starts_with("field accepted but not acted on yet: "))
            .collect();
        assert_eq!(got.len(), want.len(), "{body}{args:?}: {got:?}");
        for field in *want {
            assert_eq!(
                got.iter()
                    .filter(|w| w.starts_with(&not_acted_on(field)))
                    .count(),
                1,
                "{body}{args:?}: {field} in {got:?}"
            );
        }
    }
}

#[test]
fn eviction_settings_are_parsed_once_into_thresholds() {
    use super::eviction::{Signal, ThresholdValue};
    let c = from_text("", &[]).unwrap();
    assert_eq!(
        c.eviction.pressure_transition_period,
        Duration::from_secs(300)
    );
    // The kubelet's five default hard thresholds, and memory.available for the pods cgroup.
    let signals: Vec<Signal> = c.eviction.thresholds.iter().map(|t| t.signal).collect();
    assert_eq!(signals.len(), 6, "{signals:?}");
    assert!(signals.contains(&Signal::AllocatableMemoryAvailable));
    let c = from_text(
        "evictionPressureTransitionPeriod: 30s\nevictionSoft:\n  nodefs.available: 20%\n\
         evictionSoftGracePeriod:\n  nodefs.available: 1m30s\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.eviction.pressure_transition_period,
        Duration::from_secs(30)
    );
    let soft = c.eviction.thresholds.iter().find(|t| !t.is_hard()).unwrap();
    assert_eq!(
        (soft.signal, soft.value, soft.grace_period),
        (
            Signal::NodeFsAvailable,
            ThresholdValue::Percentage(0.2),
            Duration::from_secs(90)
        )
    );
}

#[test]
fn change_detection_strategy_values() {
    for (text, want) in [
        ("Watch", ChangeDetectionStrategy::Watch),
        ("Cache", ChangeDetectionStrategy::Cache),
        ("Get", ChangeDetectionStrategy::Get),
        ("\"\"", ChangeDetectionStrategy::Watch),
    ] {
        let c = from_text(
            &format!("configMapAndSecretChangeDetectionStrategy: {text}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.pods.change_detection, want);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}

/// Each subsystem's slice carries the fields set for it in the file and by flags, and nothing
/// else changes: one field per slice, compared with the defaults' slices.
#[test]
fn each_slice_carries_its_own_fields() {
    let body = "maxPods: 42\nseccompDefault: true\ncgroupDriver: systemd\n\
                streamingConnectionIdleTimeout: 1m\nserializeImagePulls: false\n\
                maxParallelImagePulls: 3\ncontainerLogMaxFiles: 7\n\
                runtimeRequestTimeout: 30s\nrotateCertificates: true\n";
    let c = from_text(body, &["--root-dir=/srv/k", "--v=4"]).unwrap();
    let d = from_text("", &[]).unwrap();
    assert_eq!(
        c.node,
        NodeConfig {
            max_pods: 42,
            ..d.node.clone()
        }
    );
    assert_eq!(c.paths.cert_dir, Path::new("/srv/k/pki"));
    assert_eq!(
        c.paths,
        PathsConfig {
            root_dir: "/srv/k".into(),
            cert_dir: "/srv/k/pki".into(),
            ..d.paths.clone()
        }
    );
    assert_eq!(
        c.pods,
        PodsConfig {
            seccomp_default: true,
            ..d.pods.clone()
        }
    );
    assert_eq!(
        c.cgroups,
        CgroupConfig {
            driver: CgroupDriver::Systemd,
            ..d.cgroups.clone()
        }
    );
    assert_eq!(
        c.server,
        ServerConfig {
            streaming_connection_idle_timeout: Duration::from_secs(60),
            ..d.server.clone()
        }
    );
    assert_eq!(
        c.images,
        ImagesConfig {
            serialize_pulls: false,
            max_parallel_pulls: Some(3),
            ..d.images.clone()
        }
    );
    assert_eq!(
        (c.images.parallel_pulls(), d.images.parallel_pulls()),
        (3, 1)
    );
    assert_eq!(
        c.container_logs,
        ContainerLogsConfig {
            max_files: 7,
            ..d.container_logs.clone()
        }
    );
    assert_eq!(c.runtime.request_timeout, Duration::from_secs(30));
    assert_eq!(c.runtime.endpoint, d.runtime.endpoint);
    assert!(c.api.rotate_certificates && !d.api.rotate_certificates);
    assert_eq!(c.logging.verbosity, 4);
    assert_eq!(c.eviction, d.eviction);
}

/// systemReserved, kubeReserved and the hard thresholds that come off capacity are typed at
/// load with the exact quantity parser, so what validation accepted is what allocatable uses.
#[test]
fn reservations_are_typed_at_load_with_the_exact_parser() {
    let body = "systemReserved:\n  memory: 1.5Gi\n  cpu: 100m\n  pid: \"1000\"\n\
                kubeReserved:\n  memory: 0.1Ki\n  ephemeral-storage: 2G\n\
                evictionHard:\n  memory.available: 5%\n  nodefs.available: 1Gi\n  \
                imagefs.available: 15%\n\
                evictionSoft:\n  memory.available: 1Gi\n\
                evictionSoftGracePeriod:\n  memory.available: 1m\n";
    let c = from_text(body, &[]).unwrap();
    let r = &c.node.reserved;
    assert_eq!(
        r.system,
        BTreeMap::from([
            ("cpu".to_string(), 100),
            ("memory".to_string(), 1_610_612_736_000),
            ("pid".to_string(), 1_000_000),
        ])
    );
    // 0.1Ki is 102.4 bytes: kept exactly, in thousandths.
    assert_eq!(
        r.kube,
        BTreeMap::from([
            ("ephemeral-storage".to_string(), 2_000_000_000_000),
            ("memory".to_string(), 102_400),
        ])
    );
    // Only the hard memory.available and nodefs.available reserve: not imagefs, not soft ones.
    assert_eq!(
        r.hard_eviction,
        BTreeMap::from([
            (
                "ephemeral-storage".to_string(),
                ThresholdValue::Quantity(1_073_741_824_000)
            ),
            ("memory".to_string(), ThresholdValue::Percentage(0.05)),
        ])
    );
    // A reservation validation refuses never reaches the typed slice.
    let err = from_text("systemReserved:\n  memory: 1.5.5Gi\n", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("systemReserved.memory: must be a non-negative quantity"),
        "{err}"
    );
}

/// The graceful node shutdown fields reach the node's slice as given, with no warning: bosun
/// acts on them.
#[test]
fn shutdown_grace_periods_are_read() {
    let c = from_text(
        "shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.node.shutdown_grace_period, Duration::from_secs(30));
    assert_eq!(
        c.node.shutdown_grace_period_critical_pods,
        Duration::from_secs(10)
    );
    assert!(
        c.warnings.iter().all(|w| !w.contains("shutdown")),
        "{:?}",
        c.warnings
    );
    let c = from_text(
        "shutdownGracePeriodByPodPriority:\n- priority: 100000\n  shutdownGracePeriodSeconds: 20\n\
         - priority: 0\n  shutdownGracePeriodSeconds: 5\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.node.shutdown_grace_period_by_pod_priority,
        vec![(100_000, 20), (0, 5)]
    );
    assert!(
        c.warnings.iter().all(|w| !w.contains("shutdown")),
        "{:?}",
        c.warnings
    );
}
