//! Image pull policy as the kubelet applies it, and image name checks.

use k8s_openapi::api::core::v1::Container;

use super::runtime::PodRuntime;

/// Why an image is not there: the kubelet's waiting reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The name cannot be an image reference.
    InvalidImageName(String),
    /// imagePullPolicy Never and the image is absent.
    NeverPull(String),
    /// The pull failed.
    Pull(String),
}

impl PullError {
    /// The container waiting reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::InvalidImageName(_) => "InvalidImageName",
            PullError::NeverPull(_) => "ErrImageNeverPull",
            PullError::Pull(_) => "ErrImagePull",
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            PullError::InvalidImageName(m) | PullError::NeverPull(m) | PullError::Pull(m) => m,
        }
    }
}

/// The effective pull policy: the spec's, else Always for `:latest` or untagged, IfNotPresent otherwise.
pub fn pull_policy(c: &Container) -> &str {
    if let Some(p) = c.image_pull_policy.as_deref() {
        return p;
    }
    let image = c.image.as_deref().unwrap_or_default();
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        _ => "IfNotPresent",
    }
}

/// Rough check of an image reference: non-empty, no whitespace, lowercase repository path.
pub fn valid_image_name(image: &str) -> bool {
    if image.is_empty() || image.chars().any(char::is_whitespace) || image.starts_with('/') {
        return false;
    }
    let name = image.split('@').next().unwrap_or(image);
    let slash = name.rfind('/').map(|i| i as isize).unwrap_or(-1);
    let repo = match name.rfind(':') {
        Some(colon) if colon as isize > slash => {
            if colon + 1 == name.len() {
                return false;
            }
            &name[..colon]
        }
        _ => name,
    };
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repo,
    };
    !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
}

/// The image `c` asks for when its pull policy lets it be used as it is on the node: its id,
/// None when it must be pulled (absent, or policy Always); an invalid name, a Never policy with
/// no image, or a failed inspection are errors (the kubelet's EnsureImageExists before it pulls).
pub async fn image_present(
    cri: &impl PodRuntime,
    c: &Container,
) -> Result<Option<String>, PullError> {
    let image = c.image.clone().unwrap_or_default();
    if !valid_image_name(&image) {
        return Err(PullError::InvalidImageName(format!(
            "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
        )));
    }
    let policy = pull_policy(c);
    if policy == "Always" {
        return Ok(None);
    }
    match cri.image_status(&image).await {
        Ok(Some(img)) => Ok(Some(img.id)),
        Ok(None) if policy == "Never" => Err(PullError::NeverPull(format!(
            "Container image {image:?} is not present with pull policy of Never"
        ))),
        Ok(None) => Ok(None),
        Err(e) => Err(PullError::Pull(format!(
            "Failed to inspect image {image:?}: {e}"
        ))),
    }
}

/// Pulls `image` with the pod's credentials `auths` (every matching one in turn, the first pull
/// that works wins, as the kubelet); the image id and its size in bytes (0 when the runtime
/// does not say).
pub async fn pull_image(
    cri: &impl PodRuntime,
    image: &str,
    auths: &[bosun_cri::types::AuthConfig],
) -> Result<(String, u64), PullError> {
    let pulled = if auths.is_empty() {
        cri.pull_image(image, None)
            .await
            .map_err(|e| PullError::Pull(format!("Failed to pull image {image:?}: {e}")))?
    } else {
        let mut errors = Vec::new();
        let mut id = None;
        for auth in auths {
            match cri.pull_image(image, Some(auth.clone())).await {
                Ok(i) => {
                    id = Some(i);
                    break;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        match id {
            Some(id) => id,
            None => {
                let e = if errors.len() == 1 {
                    errors.remove(0)
                } else {
                    format!("[{}]", errors.join(", "))
                };
                return Err(PullError::Pull(format!(
                    "Failed to pull image {image:?}: {e}"
                )));
            }
        }
    };
    let size = match cri.image_status(&pulled).await {
        Ok(Some(img)) => img.size,
        _ => 0,
    };
    Ok((pulled, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy() {
        let c = |image: &str| Container {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("127.0.0.1:5000/busybox")), "Always");
        assert_eq!(pull_policy(&c("127.0.0.1:5000/busybox:1")), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
    }

    #[test]
    fn image_names() {
        for ok in [
            "busybox",
            "busybox:1",
            "127.0.0.1:5000/busybox:1",
            "localhost:5000/a/b:c",
            "registry.example/x/y@sha256:ab",
        ] {
            assert!(valid_image_name(ok), "{ok}");
        }
        for bad in ["", "Busybox", "a b", "busybox:", "/x"] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }
}
