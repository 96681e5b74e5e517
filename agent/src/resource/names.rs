//! Kinds of resource names, as the API's helpers (k8s.io/kubernetes pkg/apis/core/v1/helper).

/// IsExtendedResourceName: a name with a domain outside `kubernetes.io`, not a `requests.`
/// quota name (`example.com/dongle`, a device plugin's `vendor.com/gpu`).
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// IsScalarResourceName: an extended resource, hugepages, or a native resource under a
/// `kubernetes.io/` prefix; the scheduler's and the kubelet's admission count these apart.
pub fn is_scalar_resource(name: &str) -> bool {
    is_extended_resource(name) || name.starts_with("hugepages-") || name.contains("kubernetes.io/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_api() {
        let cases = [
            ("cpu", false, false),
            ("ephemeral-storage", false, false),
            ("hugepages-2Mi", false, true),
            ("example.com/dongle", true, true),
            ("kubernetes.io/batch", false, true),
            ("requests.example.com/dongle", false, false),
        ];
        for (name, extended, scalar) in cases {
            assert_eq!(is_extended_resource(name), extended, "{name}");
            assert_eq!(is_scalar_resource(name), scalar, "{name}");
        }
    }
}
