//! Service link environment variables (`KUBERNETES_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, ...)
//! from a cached list of services, refreshed at most every 30 s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use tracing::warn;

/// How long a service list is reused.
const TTL: Duration = Duration::from_secs(30);

/// A cache of the cluster's services for env vars.
#[derive(Default)]
pub struct ServiceCache {
    cached: tokio::sync::Mutex<Option<(Instant, Vec<Service>)>>,
    warned: Mutex<bool>,
}

impl ServiceCache {
    /// The env vars of the services visible to a pod in `ns`.
    pub async fn env(&self, client: &kube::Client, ns: &str, links: bool) -> Vec<(String, String)> {
        let services = self.list(client).await;
        let mut out = Vec::new();
        for s in &services {
            let sns = s.metadata.namespace.as_deref().unwrap_or_default();
            let name = s.metadata.name.as_deref().unwrap_or_default();
            let master = sns == "default" && name == "kubernetes";
            if !(master || (links && sns == ns)) {
                continue;
            }
            out.extend(vars(s));
        }
        out
    }

    async fn list(&self, client: &kube::Client) -> Vec<Service> {
        let mut guard = self.cached.lock().await;
        if let Some((at, list)) = guard.as_ref()
            && at.elapsed() < TTL
        {
            return list.clone();
        }
        match Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => {
                *guard = Some((Instant::now(), list.items.clone()));
                list.items
            }
            Err(e) => {
                if let Ok(mut w) = self.warned.lock()
                    && !*w
                {
                    warn!(error = %e, "cannot list services for env vars");
                    *w = true;
                }
                guard.as_ref().map(|(_, l)| l.clone()).unwrap_or_default()
            }
        }
    }
}

/// The docker-link style variables of one service, as the kubelet makes them.
pub fn vars(s: &Service) -> Vec<(String, String)> {
    let Some(spec) = &s.spec else { return vec![] };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    if ip.is_empty() || ip == "None" {
        return vec![];
    }
    let ports = spec.ports.clone().unwrap_or_default();
    let Some(first) = ports.first() else {
        return vec![];
    };
    let prefix = s
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .to_uppercase()
        .replace('-', "_");
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.clone()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!(
                    "{prefix}_SERVICE_PORT_{}",
                    n.to_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    out.push((
        format!("{prefix}_PORT"),
        format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
    ));
    for p in &ports {
        let pr = proto(p);
        let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_uppercase());
        out.push((
            base.clone(),
            format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
        ));
        out.push((format!("{base}_PROTO"), pr.to_lowercase()));
        out.push((format!("{base}_PORT"), p.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_service_vars() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
        }))
        .unwrap();
        let v: std::collections::HashMap<_, _> = vars(&s).into_iter().collect();
        assert_eq!(v["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(v["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(v["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(v["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(v["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
    }
}
