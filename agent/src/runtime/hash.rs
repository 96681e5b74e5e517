//! The container hash, as the kubelet's HashContainer (pkg/kubelet/container/helpers.go): the
//! fields that make a running container stale when they change. In v1.37 they are the name and
//! the image only (pickFieldsToHash), the only container fields the API lets change that need a
//! new container. The value is written to the `io.kubernetes.container.hash` annotation, the
//! kubelet's hex format, so containers made by either agent compare equal on the other.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Container;

use super::labels;

/// The kubelet's HashContainer of `container`: FNV-32a over the hash dump of the JSON of
/// `{"image": .., "name": ..}` (Go's json.Marshal, then k8s.io/utils dump.ForHash of the bytes).
pub fn hash_container(container: &Container) -> u32 {
    let json = format!(
        "{{\"image\":{},\"name\":{}}}",
        go_json_string(container.image.as_deref().unwrap_or_default()),
        go_json_string(&container.name)
    );
    // dump.ForHash of a []byte: its type, then the bytes in decimal, as spew prints them.
    let mut dump = String::from("([]uint8)[");
    for (i, b) in json.bytes().enumerate() {
        if i > 0 {
            dump.push(' ');
        }
        dump.push_str(&b.to_string());
    }
    dump.push(']');
    fnv32a(dump.as_bytes())
}

/// The annotation value: the hash in lowercase hex, as the kubelet's strconv.FormatUint(h, 16).
pub fn container_hash_label(container: &Container) -> String {
    format!("{:x}", hash_container(container))
}

/// The hash a container instance was made with, from its CRI annotations: the kubelet's
/// `io.kubernetes.container.hash`; for a container made by an older Bosun, which recorded its
/// spec's image apart (`bosun.dev/spec-image`), the kubelet's hash of that name and image; None
/// when neither is known (an older Bosun's own hash, not comparable: left alone).
pub fn hash_of_instance(name: &str, annotations: &HashMap<String, String>) -> Option<String> {
    if let Some(image) = annotations.get(labels::BOSUN_SPEC_IMAGE) {
        let made_from = Container {
            name: name.into(),
            image: Some(image.clone()),
            ..Default::default()
        };
        return Some(container_hash_label(&made_from));
    }
    let hash = annotations.get(labels::CONTAINER_HASH)?;
    // The kubelet parses it as a 64-bit hex number; its values fit in 32 bits.
    u32::from_str_radix(hash, 16).ok().map(|h| format!("{h:x}"))
}

/// A string as Go's encoding/json writes it: serde_json's escapes plus Go's HTML-safe ones
/// (`<`, `>`, `&`) and the JavaScript line separators.
fn go_json_string(s: &str) -> String {
    let plain = serde_json::to_string(s).unwrap_or_default();
    let mut out = String::with_capacity(plain.len());
    for ch in plain.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// 32-bit FNV-1a.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    /// Values computed by the kubelet v1.37.2's own functions (json.Marshal of the picked fields,
    /// dump.ForHash, FNV-32a, FormatUint base 16) in a Go program.
    #[test]
    fn the_kubelets_hash_values() {
        let cases = [
            ("c", "127.0.0.1:5000/busybox:1", "34d8fa8f"),
            ("app", "nginx", "807ef53b"),
            ("x", "a<b>&", "331ad08c"),
            ("", "", "edd67cc4"),
        ];
        for (name, image, want) in cases {
            assert_eq!(
                container_hash_label(&container(name, image)),
                want,
                "{name} {image}"
            );
        }
    }

    #[test]
    fn the_hash_an_instance_was_made_with() {
        let ann = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = container("c", "127.0.0.1:5000/busybox:1");
        let cases = [
            // The kubelet's (or this Bosun's) annotation.
            (
                ann(&[(labels::CONTAINER_HASH, "34d8fa8f")]),
                Some("34d8fa8f"),
            ),
            // An older Bosun's: the image it recorded, hashed as the kubelet.
            (
                ann(&[
                    (labels::CONTAINER_HASH, "0123456789abcdef"),
                    (labels::BOSUN_SPEC_IMAGE, "127.0.0.1:5000/busybox:1"),
                ]),
                Some("34d8fa8f"),
            ),
            // An older Bosun's own hash alone, or nothing: unknown.
            (ann(&[(labels::CONTAINER_HASH, "0123456789abcdef")]), None),
            (ann(&[]), None),
        ];
        for (annotations, want) in cases {
            assert_eq!(
                hash_of_instance(&c.name, &annotations).as_deref(),
                want,
                "{annotations:?}"
            );
        }
    }

    #[test]
    fn only_the_name_and_image_count() {
        let a = container("c", "busybox");
        let mut b = a.clone();
        b.command = Some(vec!["sleep".into(), "1".into()]);
        b.working_dir = Some("/tmp".into());
        assert_eq!(hash_container(&a), hash_container(&b));
        b.image = Some("busybox:2".into());
        assert_ne!(hash_container(&a), hash_container(&b));
    }
}
