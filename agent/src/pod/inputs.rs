//! What a container's start reads besides the runtime: registry credentials from the pod's
//! imagePullSecrets, the ConfigMaps and Secrets its env names, the service link variables, and the
//! host paths of the pod's volumes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use tracing::warn;

use super::context::NodeContext;
use super::keyring::Keyring;
use super::runtime::PodRuntime;
use crate::events::EventType;
use crate::volume;
use crate::volume::api::{ApiVolumes, get_config_map, get_secret};

/// ConfigMap or Secret data by object name; None where the object does not exist.
pub type EnvObjects = HashMap<String, Option<BTreeMap<String, String>>>;

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The registry credentials for `image` from the pod's imagePullSecrets (the kubelet reads only
/// the pod's list: the ServiceAccount admission copies the account's into it). Secrets that
/// cannot be read are named in a FailedToRetrieveImagePullSecret event and the pull goes on.
pub async fn pull_credentials(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    image: &str,
) -> Result<Vec<bosun_cri::types::AuthConfig>, String> {
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let Some(objects) = ctx.objects.as_ref().filter(|_| !refs.is_empty()) else {
        return Ok(vec![]);
    };
    let mut secrets = Vec::new();
    let mut failed = Vec::new();
    for r in refs.iter().filter(|r| !r.name.is_empty()) {
        match get_secret(objects, namespace(pod), &r.name).await {
            Ok(Some(s)) => secrets.push(Secret::clone(&s)),
            Ok(None) | Err(_) => failed.push(r.name.clone()),
        }
    }
    if !failed.is_empty() {
        let msg = format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            failed.join(", ")
        );
        warn!("FailedToRetrieveImagePullSecret: {msg}");
        let reason = "FailedToRetrieveImagePullSecret";
        ctx.events.pod(pod, None, EventType::Warning, reason, msg);
    }
    let ring = Keyring::from_secrets(&secrets)?;
    Ok(ring.lookup(image).iter().map(|c| c.to_cri()).collect())
}

/// The ConfigMaps and Secrets the container's env refers to (None where absent).
pub async fn env_objects(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    c: &Container,
) -> Result<(EnvObjects, EnvObjects), String> {
    let mut cms: EnvObjects = HashMap::new();
    let mut secrets: EnvObjects = HashMap::new();
    let Some(objects) = &ctx.objects else {
        return Ok((cms, secrets));
    };
    let ns = namespace(pod);
    let mut cm_names: Vec<String> = Vec::new();
    let mut secret_names: Vec<String> = Vec::new();
    for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
        cm_names.extend(e.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        secret_names.extend(e.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    for e in c.env_from.iter().flatten() {
        cm_names.extend(e.config_map_ref.as_ref().map(|r| r.name.clone()));
        secret_names.extend(e.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    cm_names.sort();
    cm_names.dedup();
    secret_names.sort();
    secret_names.dedup();
    for name in cm_names {
        let obj = get_config_map(objects, ns, &name).await?;
        cms.insert(name, obj.map(|o| o.data.clone().unwrap_or_default()));
    }
    for name in secret_names {
        let obj = get_secret(objects, ns, &name).await?;
        let data = obj.map(|o| {
            o.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        secrets.insert(name, data);
    }
    Ok((cms, secrets))
}

/// Service link variables: the master service's always, the namespace's services' unless
/// enableServiceLinks is false.
pub async fn service_env(ctx: &NodeContext<impl PodRuntime>, pod: &Pod) -> Vec<(String, String)> {
    let Some(client) = &ctx.api else {
        return vec![];
    };
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    ctx.services.env(client, namespace(pod), links).await
}

/// Host paths of every volume of `pod`, setting up (or refreshing, when due) the API-backed ones
/// and remembering their paths in `known`.
pub async fn set_up_volumes(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    api_volumes: &mut ApiVolumes,
    known: &mut Option<HashMap<String, String>>,
) -> Result<HashMap<String, String>, volume::VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = ctx.dirs.pod_dir(uid);
    let mut paths = volume::set_up(pod, &dir)?;
    paths.extend(set_up_csi_volumes(ctx, pod, &dir).await?);
    if let (Some(client), Some(objects)) = (&ctx.api, &ctx.objects) {
        if known.is_none() || api_volumes.due() {
            let api_paths = api_volumes.set_up(client, objects, pod, &dir).await?;
            paths.extend(api_paths);
            *known = Some(paths.clone());
        } else if let Some(known) = known.as_ref() {
            paths.extend(known.clone());
        }
    } else if pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(volume::api::is_api_volume)
    {
        return Err(volume::VolumeError {
            volume: "*".into(),
            reason: "configMap, secret and projected volumes need an API server".into(),
            op: Default::default(),
        });
    } else {
        *known = Some(paths.clone());
    }
    Ok(paths)
}

/// The mount paths of the pod's CSI volumes (persistentVolumeClaim, ephemeral, csi), staged and
/// published through their drivers; without an API server they are not supported.
async fn set_up_csi_volumes(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    dir: &std::path::Path,
) -> Result<HashMap<String, String>, volume::VolumeError> {
    let Some(client) = &ctx.api else {
        let csi = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| volume::csi::is_csi_volume(v));
        return match csi {
            Some(v) => Err(volume::VolumeError {
                volume: v.name.clone(),
                reason: "volume type not supported by bosun yet without an API server".into(),
                op: Default::default(),
            }),
            None => Ok(HashMap::new()),
        };
    };
    let set_up = volume::csi::SetUp {
        client,
        volumes: &ctx.csi,
        root_dir: &ctx.dirs.root_dir,
        node_name: &ctx.node_name,
    };
    set_up.set_up(pod, dir).await
}

/// Grows the pod's writable claim volumes whose claim the resizer has grown, recording the
/// kubelet's events (FileSystemResizeSuccess on the pod and the claim, VolumeResizeFailed).
pub async fn expand_claims(ctx: &NodeContext<impl PodRuntime>, pod: &Pod) {
    let Some(client) = &ctx.api else {
        return;
    };
    let claims = ctx.csi.writable_claims_of(pod);
    if claims.is_empty() {
        return;
    }
    let expander = volume::expand::Expander {
        client,
        drivers: &ctx.csi.drivers,
        root_dir: &ctx.dirs.root_dir,
        node_name: &ctx.node_name,
    };
    for (_, published) in claims {
        for ev in expander.check(&published).await {
            let kind = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            match ev.claim {
                Some(claim) => ctx.events.claim(claim, kind, ev.reason, ev.message),
                None => ctx.events.pod(pod, None, kind, ev.reason, ev.message),
            }
        }
    }
}
