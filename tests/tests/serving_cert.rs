//! serverTLSBootstrap on a Bosun node: the serving certificate is requested by CSR as the
//! kubelet requests it (signer kubernetes.io/kubelet-serving, usages digital signature and server
//! auth, subject system:node:<name> in system:nodes, the node's name and IP as SANs); nothing is
//! served before the CSR is approved; once the test approves it (the controller-manager signs
//! it with the cluster CA) a TLS client verifying the node against the cluster CA gets /healthz,
//! and metrics-server scrapes the node with TLS verification on (`--kubelet-certificate-authority`,
//! no `--kubelet-insecure-tls`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bosun_tests::metrics_server::MetricsServer;
use bosun_tests::{
    ClusterNode, Env, KubeletClient, NodeOptions, admin_client, mint_client_cert, wait_until_async,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_by_csr_once_approved() {
    let opts = NodeOptions {
        extra_config: "serverTLSBootstrap: true\n".into(),
        ..Default::default()
    };
    let node = ClusterNode::with_options("serving", &opts);
    let mut bosun = node.start();
    let started = Instant::now();
    let client = admin_client().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let user = format!("system:node:{}", node.name);
    let csr = wait_until_async("the serving CSR", Duration::from_secs(60), || async {
        let list = csrs.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|c| {
            c.spec.username.as_deref() == Some(user.as_str())
                && c.spec.signer_name == "kubernetes.io/kubelet-serving"
        })
    })
    .await;
    eprintln!("serving CSR created {:?} after start", started.elapsed());
    assert_eq!(
        csr.spec.usages.clone().unwrap_or_default(),
        ["digital signature", "server auth"]
    );
    let pem = String::from_utf8(csr.spec.request.0.clone()).expect("PEM");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .expect("CSR PEM");
    let (_, req) = <x509_parser::certification_request::X509CertificationRequest as
        x509_parser::prelude::FromDer<_>>::from_der(&der)
    .expect("CSR DER");
    let subject = req.certification_request_info.subject.to_string();
    assert!(subject.contains(&format!("CN={user}")), "{subject}");
    assert!(subject.contains("O=system:nodes"), "{subject}");
    let node_ip: IpAddr = Env::cluster().var("NODE_IP").parse().expect("NODE_IP");
    let exts = format!(
        "{:?}",
        req.requested_extensions().map(|e| e.collect::<Vec<_>>())
    );
    let IpAddr::V4(v4) = node_ip else {
        panic!("NODE_IP {node_ip} is not IPv4")
    };
    assert!(
        exts.contains(&format!("DNSName({:?})", node.name)),
        "no DNS SAN {}: {exts}",
        node.name
    );
    assert!(
        exts.contains(&format!("IPAddress({:?})", v4.octets())),
        "no IP SAN {node_ip}: {exts}"
    );

    // Nothing is served before approval: a client verifying against the cluster CA fails.
    let addr = SocketAddr::new(node_ip, node.server_port());
    let ca = PathBuf::from(Env::cluster().var("CLUSTER_CA"));
    let certs = tempfile::tempdir().unwrap();
    let (crt, key) = mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let kubelet = KubeletClient::new(addr, &ca, Some((&crt, &key)));
    assert!(
        kubelet.get("/healthz").await.is_err(),
        "the port served a certificate the cluster CA verifies before the CSR was approved"
    );

    let name = csr.metadata.name.clone().expect("CSR name");
    let approval = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "BosunTest",
        "message": "approved by the serving certificate test"}]}});
    csrs.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval))
        .await
        .expect("approve the CSR");
    let approved = Instant::now();

    let answer = wait_until_async(
        "the node port verified against the cluster CA",
        Duration::from_secs(60),
        || async { kubelet.get("/healthz").await.ok() },
    )
    .await;
    eprintln!(
        "serving with the signed certificate {:?} after approval",
        approved.elapsed()
    );
    assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
    assert!(
        node.path().join("pki/kubelet-server-current.pem").exists(),
        "the signed certificate is not stored"
    );

    // metrics-server verifying the node against the cluster CA (no --kubelet-insecure-tls)
    // scrapes it: what the serving certificate is for.
    node.kubectl(&[
        "label",
        "node",
        &node.name,
        &format!("bosun.test/metrics={}", node.name),
        "--overwrite",
    ]);
    let verify = format!("--kubelet-certificate-authority={}", ca.display());
    let ms = MetricsServer::start(&node.name, node.path(), &[verify]);
    let metrics = wait_until_async(
        "metrics-server scraping the node with TLS verification",
        Duration::from_secs(120),
        || async {
            let v = ms.get(&format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", node.name))?;
            v["usage"]["memory"].is_string().then_some(v)
        },
    )
    .await;
    eprintln!("metrics-server, verifying: {metrics}");
    let log = ms.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("x509") || l.contains("Failed to scrape")),
        "metrics-server could not verify or scrape {}:\n{log}",
        node.name
    );
    drop(ms);

    if let Some(status) = bosun.try_exit() {
        panic!(
            "bosun exited during the test ({status}):\n{}",
            bosun.log_text()
        );
    }
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "bosun exited with {code:?} {took:?}");
    let _ = csrs.delete(&name, &Default::default()).await;
}
