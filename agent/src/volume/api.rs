//! Volumes whose content comes from the API: configMap, secret, downwardAPI and projected (with
//! serviceAccountToken through the TokenRequest API), written atomically and refreshed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
    ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::Api;
use kube::api::PostParams;

use super::{VolumeError, atomic, mount_tmpfs};
use crate::client::watch::forbidden_retry;
use crate::objects::{ObjectError, Objects};

/// How often API-backed volume content is rewritten (the kubelet remounts on its pod sync, every
/// syncFrequency, 1 min by default); configMaps and secrets come from the object managers.
pub const REFRESH: Duration = Duration::from_secs(60);

/// A token the pod holds, and when to renew it (at 80% of its lifetime, as the kubelet).
#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// Per-pod state of API-backed volumes: the tokens it holds and when content was last read.
#[derive(Debug, Default)]
pub struct ApiVolumes {
    tokens: HashMap<String, Token>,
    last_refresh: Option<Instant>,
    /// The node's allocatable in thousandths (resourceFieldRef limits a container does not set).
    allocatable: BTreeMap<String, i128>,
}

/// True for the volume types this module handles.
pub fn is_api_volume(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// Content of one file: bytes and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

impl ApiVolumes {
    /// No volume read yet; resourceFieldRef limits a container does not set resolve to the
    /// node's `allocatable` (thousandths by resource), as the kubelet's downwardAPI volumes.
    pub fn new(allocatable: BTreeMap<String, i128>) -> ApiVolumes {
        ApiVolumes {
            allocatable,
            ..Default::default()
        }
    }

    /// True when the content should be read again.
    pub fn due(&self) -> bool {
        self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH)
            || self.tokens.values().any(|t| Instant::now() >= t.renew_at)
    }

    /// Writes every API-backed volume of `pod` under `pod_dir`; returns their host paths by name.
    pub async fn set_up(
        &mut self,
        client: &kube::Client,
        objects: &Objects,
        pod: &Pod,
        pod_dir: &Path,
    ) -> Result<HashMap<String, String>, VolumeError> {
        let mut out = HashMap::new();
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        for v in pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| is_api_volume(v))
        {
            let err = |reason: String| VolumeError {
                volume: v.name.clone(),
                reason,
                op: Default::default(),
            };
            let Some((kind, files, tmpfs)) = self
                .content(client, objects, pod, &ns, v)
                .await
                .map_err(err)?
            else {
                continue;
            };
            let dir = write_volume(pod, pod_dir, &v.name, kind, &files, tmpfs).map_err(err)?;
            // A token belongs to the pod's fsUser (the kubelet's FileProjection.FsUser).
            if let (Some(p), Some(uid)) = (&v.projected, super::ownership::fs_user(pod)) {
                for t in p.sources.iter().flatten() {
                    if let Some(t) = &t.service_account_token {
                        super::ownership::set_file_owner(Path::new(&dir), &t.path, uid)
                            .map_err(|e| err(format!("owner {uid} of {}: {e}", t.path)))?;
                    }
                }
            }
            out.insert(v.name.clone(), dir);
        }
        self.last_refresh = Some(Instant::now());
        Ok(out)
    }

    /// The files of the API-backed volume `v` (in namespace `ns`), the plugin directory it goes
    /// in and whether that is a tmpfs; None for a volume of another kind.
    async fn content(
        &mut self,
        client: &kube::Client,
        objects: &Objects,
        pod: &Pod,
        ns: &str,
        v: &Volume,
    ) -> Result<Option<(&'static str, Files, bool)>, String> {
        Ok(Some(if let Some(cm) = &v.config_map {
            let files = match get_config_map(objects, ns, &cm.name).await? {
                Some(obj) => {
                    config_map_files(&obj, cm.items.as_deref(), cm.default_mode.unwrap_or(0o644))?
                }
                None if cm.optional == Some(true) => Files::new(),
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            };
            ("kubernetes.io~configmap", files, false)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let files = match get_secret(objects, ns, &name).await? {
                Some(obj) => {
                    secret_files(&obj, s.items.as_deref(), s.default_mode.unwrap_or(0o644))?
                }
                None if s.optional == Some(true) => Files::new(),
                None => return Err(format!("secret \"{name}\" not found")),
            };
            ("kubernetes.io~secret", files, true)
        } else if let Some(d) = &v.downward_api {
            let files = downward_files(
                pod,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode.unwrap_or(0o644),
                &self.allocatable,
            )?;
            ("kubernetes.io~downward-api", files, false)
        } else if let Some(p) = &v.projected {
            let files = self.projected(client, objects, pod, ns, p).await?;
            ("kubernetes.io~projected", files, true)
        } else {
            return Ok(None);
        }))
    }

    /// The files of a projected volume: its sources' files merged in order.
    async fn projected(
        &mut self,
        client: &kube::Client,
        objects: &Objects,
        pod: &Pod,
        ns: &str,
        p: &ProjectedVolumeSource,
    ) -> Result<Files, String> {
        let mode = p.default_mode.unwrap_or(0o644);
        let mut files = Files::new();
        for src in p.sources.iter().flatten() {
            // ClusterTrustBundleProjection and PodCertificateRequest (on by default in v1.37):
            // the kubelet writes the bundle, or a key and its issued certificate; never mount
            // the volume without those files.
            if src.cluster_trust_bundle.is_some() || src.pod_certificate.is_some() {
                let what = if src.pod_certificate.is_some() {
                    "podCertificate"
                } else {
                    "clusterTrustBundle"
                };
                return Err(format!(
                    "projected source {what} is not supported by bosun yet"
                ));
            }
            if let Some(cm) = &src.config_map {
                match get_config_map(objects, ns, &cm.name).await? {
                    Some(obj) => files.extend(config_map_files(&obj, cm.items.as_deref(), mode)?),
                    None if cm.optional == Some(true) => {}
                    None => {
                        return Err(format!("configmap \"{}\" not found", cm.name));
                    }
                }
            }
            if let Some(s) = &src.secret {
                match get_secret(objects, ns, &s.name).await? {
                    Some(obj) => files.extend(secret_files(&obj, s.items.as_deref(), mode)?),
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward_files(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                    &self.allocatable,
                )?);
            }
            if let Some(t) = &src.service_account_token {
                let token = self.token(client, pod, t).await?;
                let mode = super::ownership::token_mode(pod, mode as u32);
                files.insert(t.path.clone(), (token.into_bytes(), mode));
            }
        }
        Ok(files)
    }

    /// A service account token for the projection `t`: the one requested before while it is
    /// not due for renewal, else a new TokenRequest.
    async fn token(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        t: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let audience = t.audience.clone().unwrap_or_default();
        let exp = t.expiration_seconds.unwrap_or(3600).max(600);
        let key = format!("{sa}|{audience}|{exp}");
        Ok(
            match self
                .tokens
                .get(&key)
                .filter(|t| Instant::now() < t.renew_at)
            {
                Some(t) => t.value.clone(),
                None => {
                    let t = request_token(client, pod, &sa, &audience, exp).await?;
                    self.tokens.insert(key, t.clone());
                    t.value
                }
            },
        )
    }
}

/// Writes `files` into the volume directory of `name` (a tmpfs when `tmpfs`), giving new
/// content the pod's fsGroup; returns the directory.
fn write_volume(
    pod: &Pod,
    pod_dir: &Path,
    name: &str,
    kind: &str,
    files: &Files,
    tmpfs: bool,
) -> Result<String, String> {
    let dir = pod_dir.join("volumes").join(kind).join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    if tmpfs {
        mount_tmpfs(&dir, None)?;
    }
    let changed =
        atomic::write(&dir, files).map_err(|e| format!("write {}: {e}", dir.display()))?;
    // New content gets the group (read-only volumes: group read, never group write,
    // the kubelet's roMask); unchanged content already has it.
    if let Some((gid, _)) = super::ownership::fs_group(pod).filter(|_| changed) {
        super::ownership::set_volume_ownership(&dir, gid, true, false)
            .map_err(|e| format!("fsGroup {gid} on {}: {e}", dir.display()))?;
    }
    Ok(dir.display().to_string())
}

/// A ConfigMap from the configmap manager, or None when it does not exist.
pub async fn get_config_map(
    objects: &Objects,
    ns: &str,
    name: &str,
) -> Result<Option<std::sync::Arc<ConfigMap>>, String> {
    objects
        .config_maps
        .get(ns, name)
        .await
        .map_err(|e: ObjectError| e.to_string())
}

/// A Secret from the secret manager, or None when it does not exist.
pub async fn get_secret(
    objects: &Objects,
    ns: &str,
    name: &str,
) -> Result<Option<std::sync::Arc<Secret>>, String> {
    objects
        .secrets
        .get(ns, name)
        .await
        .map_err(|e: ObjectError| e.to_string())
}

fn select(
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    what: &str,
) -> Result<Files, String> {
    match items {
        None => Ok(all
            .into_iter()
            .map(|(k, v)| (k, (v, mode as u32)))
            .collect()),
        Some(items) => {
            let mut out = Files::new();
            for it in items {
                let v = all.get(&it.key).ok_or_else(|| {
                    format!(
                        "configured to use key {:?} of {what}, which has no such key",
                        it.key
                    )
                })?;
                out.insert(it.path.clone(), (v.clone(), it.mode.unwrap_or(mode) as u32));
            }
            Ok(out)
        }
    }
}

fn config_map_files(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    mode: i32,
) -> Result<Files, String> {
    let mut all: BTreeMap<String, Vec<u8>> = cm
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    all.extend(
        cm.binary_data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    select(
        all,
        items,
        mode,
        &format!(
            "configmap {:?}",
            cm.metadata.name.as_deref().unwrap_or_default()
        ),
    )
}

fn secret_files(s: &Secret, items: Option<&[KeyToPath]>, mode: i32) -> Result<Files, String> {
    let mut all: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    all.extend(
        s.string_data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    select(
        all,
        items,
        mode,
        &format!(
            "secret {:?}",
            s.metadata.name.as_deref().unwrap_or_default()
        ),
    )
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    allocatable: &BTreeMap<String, i128>,
) -> Result<Files, String> {
    let mut out = Files::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            let md = &pod.metadata;
            let map_text = |m: Option<&BTreeMap<String, String>>| {
                m.into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                    .collect::<String>()
            };
            match f.field_path.as_str() {
                "metadata.name" => md.name.clone().unwrap_or_default(),
                "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
                "metadata.uid" => md.uid.clone().unwrap_or_default(),
                "metadata.labels" => map_text(md.labels.as_ref()),
                "metadata.annotations" => map_text(md.annotations.as_ref()),
                p => return Err(format!("unsupported downward API field {p:?}")),
            }
        } else if let Some(r) = &it.resource_field_ref {
            let c = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .ok_or_else(|| {
                    format!("no container {:?} for resourceFieldRef", r.container_name)
                })?;
            crate::runtime::container::resource_value(
                c,
                &r.resource,
                r.divisor.as_ref(),
                allocatable,
            )
            .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            (value.into_bytes(), it.mode.unwrap_or(mode) as u32),
        );
    }
    Ok(out)
}

/// True for the Node authorizer's 403 for an object it does not yet relate to this node ("no
/// relationship found between node ... and this object"): asked again on [`forbidden_retry`]'s
/// schedule, the pod just bound.
fn not_yet_related(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("no relationship found"))
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    sa: &str,
    audience: &str,
    exp: i64,
) -> Result<Token, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: (!audience.is_empty()).then(|| vec![audience.to_string()]),
            expiration_seconds: Some(exp),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let mut tries = 0;
    let resp = loop {
        match api
            .create_token_request(sa, &PostParams::default(), &req)
            .await
        {
            Err(e) if not_yet_related(&e) => match forbidden_retry(tries) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                None => break Err(e),
            },
            r => break r,
        }
    }
    .map_err(|e| format!("failed to fetch token for service account {ns}/{sa}: {e}"))?;
    let status = resp.status.ok_or("TokenRequest returned no token")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expires = status
        .expiration_timestamp
        .map(|t| t.0.as_second())
        .unwrap_or(now + exp);
    let lifetime = (expires - now).max(60);
    let value = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or("TokenRequest returned an empty token")?;
    Ok(Token {
        value,
        renew_at: Instant::now() + Duration::from_secs((lifetime * 8 / 10) as u64),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A client whose API server refuses the first `refusals` TokenRequests with `message` (403),
    /// then issues a token; and the count of requests it got.
    fn token_server(refusals: usize, message: &'static str) -> (kube::Client, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let svc = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            async move {
                let (code, body) = if n < refusals {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": message, "reason": "Forbidden", "code": 403,
                    });
                    (403, status)
                } else {
                    let token = serde_json::json!({
                        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                        "spec": {"audiences": []},
                        "status": {"token": "t0k3n", "expirationTimestamp": "2099-01-01T00:00:00Z"},
                    });
                    (201, token)
                };
                let res = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        body.to_string(),
                    )))
                    .unwrap();
                Ok::<_, Infallible>(res)
            }
        });
        (kube::Client::new(svc, "default"), seen)
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
        }))
        .unwrap()
    }

    const NOT_RELATED: &str = "serviceaccounts \"default\" is forbidden: User \"system:node:n1\" \
        cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"ns\": \
        node: no relationship found between node 'n1' and this object";

    /// A pod bound a moment ago: the Node authorizer refuses its token until it has seen the
    /// binding; the request is made again until it is issued, with no error surfaced.
    #[tokio::test(start_paused = true)]
    async fn a_token_refused_before_the_authorizer_knows_the_binding_is_asked_again() {
        let (client, seen) = token_server(5, NOT_RELATED);
        let t = request_token(&client, &pod(), "default", "", 3600).await;
        assert_eq!(t.map(|t| t.value), Ok("t0k3n".to_string()));
        assert_eq!(seen.load(Ordering::SeqCst), 6);
    }

    /// Any other refusal, or one that outlasts the retries, is the mount's error at once.
    #[tokio::test(start_paused = true)]
    async fn other_refusals_and_a_lasting_one_fail_the_mount() {
        let (client, seen) = token_server(1, "serviceaccounts \"default\" is forbidden: no");
        let err = request_token(&client, &pod(), "default", "", 3600)
            .await
            .unwrap_err();
        assert!(
            err.contains("failed to fetch token for service account ns/default"),
            "{err}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        let (client, seen) = token_server(usize::MAX, NOT_RELATED);
        let err = request_token(&client, &pod(), "default", "", 3600)
            .await
            .unwrap_err();
        assert!(err.contains("no relationship found"), "{err}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            (0..).take_while(|&n| forbidden_retry(n).is_some()).count() + 1
        );
    }
}
