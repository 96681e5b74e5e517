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

/// Makes sure the container's image is present by its pull policy; returns the image reference.
pub async fn ensure_image(
    cri: &impl PodRuntime,
    c: &Container,
    auths: &[bosun_cri::types::AuthConfig],
) -> Result<String, PullError> {
    let image = c.image.clone().unwrap_or_default();
    if !valid_image_name(&image) {
        return Err(PullError::InvalidImageName(format!(
            "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
        )));
    }
    let policy = pull_policy(c);
    if policy != "Always" {
        match cri.image_status(&image).await {
            Ok(Some(img)) => return Ok(img.id),
            Ok(None) if policy == "Never" => {
                return Err(PullError::NeverPull(format!(
                    "Container image {image:?} is not present with pull policy of Never"
                )));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(PullError::Pull(format!(
                    "Failed to inspect image {image:?}: {e}"
                )));
            }
        }
    }
    if auths.is_empty() {
        return cri
            .pull_image(&image, None)
            .await
            .map_err(|e| PullError::Pull(format!("Failed to pull image {image:?}: {e}")));
    }
    // As the kubelet: every matching credential in turn, the first pull that works wins.
    let mut errors = Vec::new();
    for auth in auths {
        match cri.pull_image(&image, Some(auth.clone())).await {
            Ok(id) => return Ok(id),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let e = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(PullError::Pull(format!(
        "Failed to pull image {image:?}: {e}"
    )))
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
