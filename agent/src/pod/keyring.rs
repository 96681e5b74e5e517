//! Registry credentials from a pod's imagePullSecrets, as the kubelet's credential keyring
//! (`credentialprovider`) matches them: `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`,
//! its `auths`) and `kubernetes.io/dockercfg` (`.dockercfg`) secrets; each entry's location is
//! keyed by host and path (scheme and a `/v1/` or `/v2/` prefix dropped), and an image matches
//! a key with the same number of host labels (each may be a glob), the same port, and a path
//! prefix. More specific keys come first; every matching credential is tried in turn.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

/// One username and password to offer a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl Credential {
    /// The CRI AuthConfig of this credential.
    pub fn to_cri(&self) -> bosun_cri::types::AuthConfig {
        bosun_cri::types::AuthConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            ..Default::default()
        }
    }
}

/// Credentials by registry key (`host[:port][/path]`).
#[derive(Debug, Default)]
pub struct Keyring {
    creds: BTreeMap<String, Vec<Credential>>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

impl Keyring {
    /// The keyring of `secrets`; secrets of other types (or without their key) are ignored, a
    /// malformed one is an error.
    pub fn from_secrets(secrets: &[Secret]) -> Result<Keyring, String> {
        let mut ring = Keyring::default();
        for s in secrets {
            let data = s.data.clone().unwrap_or_default();
            let entries = match (
                s.type_.as_deref(),
                data.get(".dockerconfigjson"),
                data.get(".dockercfg"),
            ) {
                (Some("kubernetes.io/dockerconfigjson"), Some(b), _) if !b.0.is_empty() => {
                    serde_json::from_slice::<ConfigJson>(&b.0)
                        .map_err(|e| format!("{}: {e}", name(s)))?
                        .auths
                }
                (Some("kubernetes.io/dockercfg"), _, Some(b)) if !b.0.is_empty() => {
                    serde_json::from_slice::<BTreeMap<String, Entry>>(&b.0)
                        .map_err(|e| format!("{}: {e}", name(s)))?
                }
                _ => continue,
            };
            for (location, entry) in entries {
                let cred = entry
                    .credential()
                    .map_err(|e| format!("{}: {e}", name(s)))?;
                ring.creds.entry(key(&location)).or_default().push(cred);
            }
        }
        Ok(ring)
    }

    /// The credentials to try for `image`, most specific location first.
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let image = normalize(image);
        let mut found = Vec::new();
        // Reverse order: `host/path` before `host`.
        for (k, creds) in self.creds.iter().rev() {
            if urls_match(k, &image) {
                found.extend(creds.iter().cloned());
            }
        }
        found
    }
}

fn name(s: &Secret) -> String {
    format!(
        "secret {:?}",
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Entry {
    fn credential(self) -> Result<Credential, String> {
        if self.auth.is_empty() {
            return Ok(Credential {
                username: self.username,
                password: self.password,
            });
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .map_err(|e| format!("auth: {e}"))?;
        let text = String::from_utf8(raw).map_err(|e| format!("auth: {e}"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or("auth: not in the form user:password")?;
        Ok(Credential {
            username: user.to_string(),
            password: pass.to_string(),
        })
    }
}

/// The keyring key of a config location: host plus path, without scheme or `/v1/`, `/v2/`.
fn key(location: &str) -> String {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

/// The image with its registry made explicit: Docker Hub for names without a registry host.
fn normalize(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => image.into(),
        Some(_) => format!("docker.io/{image}"),
        None => format!("docker.io/library/{image}"),
    }
}

/// (host, port, path) of a schemeless URL.
fn split(url: &str) -> (&str, &str, &str) {
    let (authority, path) = match url.find('/') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, p, path),
        None => (authority, "", path),
    }
}

/// The kubelet's URLsMatch: as many host labels, each glob-matching; equal ports; path prefix.
fn urls_match(glob: &str, target: &str) -> bool {
    let (gh, gp, gpath) = split(glob);
    let (th, tp, tpath) = split(target);
    let (gparts, tparts): (Vec<&str>, Vec<&str>) =
        (gh.split('.').collect(), th.split('.').collect());
    // Docker Hub credentials are stored under index.docker.io.
    fn hub(h: &str) -> &str {
        if h == "index.docker.io" {
            "docker.io"
        } else {
            h
        }
    }
    if hub(gh) != hub(th)
        && (gparts.len() != tparts.len()
            || !gparts.iter().zip(&tparts).all(|(g, t)| glob_match(g, t)))
    {
        return false;
    }
    gp == tp && tpath.starts_with(gpath)
}

/// `*` matches any run of characters, `?` one character (enough for registry host labels).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(kind: &str, key: &str, json: serde_json::Value) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(
            key.to_string(),
            k8s_openapi::ByteString(json.to_string().into_bytes()),
        );
        Secret {
            type_: Some(kind.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    fn cred(u: &str, p: &str) -> Credential {
        Credential {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn matches_as_the_kubelet_keyring() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let ring = Keyring::from_secrets(&[
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                serde_json::json!({"auths": {
                    "127.0.0.1:5001": {"auth": b64},
                    "https://reg.example/v2/team": {"username": "team", "password": "t"},
                    "*.mirror.example": {"username": "m", "password": "m"},
                    "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
                }}),
            ),
            secret(
                "kubernetes.io/dockercfg",
                ".dockercfg",
                serde_json::json!({"reg.example": {"username": "any", "password": "a"}}),
            ),
            // Wrong type for its key: ignored, as the kubelet.
            secret(
                "Opaque",
                ".dockerconfigjson",
                serde_json::json!({"auths": {"127.0.0.1:5001": {"username": "x", "password": "y"}}}),
            ),
        ])
        .unwrap();
        let cases: &[(&str, Vec<Credential>)] = &[
            (
                "127.0.0.1:5001/private/busybox:1",
                vec![cred("alice", "s3cret")],
            ),
            ("127.0.0.1:5000/busybox:1", vec![]),
            (
                "reg.example/team/app:1",
                vec![cred("team", "t"), cred("any", "a")],
            ),
            ("reg.example/other/app:1", vec![cred("any", "a")]),
            ("eu.mirror.example/x:1", vec![cred("m", "m")]),
            ("a.b.mirror.example/x:1", vec![]),
            ("busybox", vec![cred("hub", "h")]),
            ("library/busybox:1", vec![cred("hub", "h")]),
        ];
        for (image, want) in cases {
            assert_eq!(&ring.lookup(image), want, "{image}");
        }
    }

    #[test]
    fn malformed_secret_is_an_error() {
        let s = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            serde_json::json!({"auths": {"r": {"auth": "not base64!"}}}),
        );
        assert!(Keyring::from_secrets(&[s]).is_err());
    }
}
