//! A container's device run options (the kubelet's deviceRunContainerOptions and makeDevices):
//! the plugins' Allocate answers applied to its CRI config. Env vars and mounts come before the
//! container's own (its own env wins), a container path is mounted or given a device once, and
//! the kubelet's own annotations win over a plugin's.

use bosun_cri::types::{CdiDevice, ContainerConfig, Device, KeyValue, Mount};
use bosun_proto::deviceplugin_v1beta1 as dp;
use prost::Message;

/// Decodes an Allocate answer as the checkpoint keeps it.
pub fn decode(bytes: &[u8]) -> Result<dp::ContainerAllocateResponse, prost::DecodeError> {
    dp::ContainerAllocateResponse::decode(bytes)
}

/// Applies `responses` (one per resource the container holds devices of) to `config`.
pub fn apply(config: &mut ContainerConfig, responses: &[dp::ContainerAllocateResponse]) {
    let mut envs: Vec<KeyValue> = Vec::new();
    let mut mounts: Vec<Mount> = Vec::new();
    let mut devices: Vec<Device> = Vec::new();
    for r in responses {
        let mut keys: Vec<&String> = r.envs.keys().collect();
        keys.sort();
        for k in keys {
            envs.retain(|e| &e.key != k);
            envs.push(KeyValue {
                key: k.clone(),
                value: r.envs[k].clone(),
            });
        }
        for m in &r.mounts {
            if mounts.iter().any(|x| x.container_path == m.container_path) {
                continue;
            }
            mounts.push(Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.read_only,
                ..Default::default()
            });
        }
        for d in &r.devices {
            if devices.iter().any(|x| x.container_path == d.container_path) {
                continue;
            }
            devices.push(Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone(),
                permissions: d.permissions.clone(),
            });
        }
        for (k, v) in &r.annotations {
            config
                .annotations
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for c in &r.cdi_devices {
            if !config.cdi_devices.iter().any(|x| x.name == c.name) {
                config.cdi_devices.push(CdiDevice {
                    name: c.name.clone(),
                });
            }
        }
    }
    envs.append(&mut config.envs);
    config.envs = envs;
    mounts.append(&mut config.mounts);
    config.mounts = mounts;
    config.devices.append(&mut devices);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_becomes_envs_mounts_devices_and_annotations() {
        let r = dp::ContainerAllocateResponse {
            envs: [("WIDGET_IDS".to_string(), "w0".to_string())].into(),
            mounts: vec![dp::Mount {
                container_path: "/dev/widget0".into(),
                host_path: "/state/w0".into(),
                read_only: true,
            }],
            devices: vec![dp::DeviceSpec {
                container_path: "/dev/w".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            annotations: [("bosun.test/widget".to_string(), "w0".to_string())].into(),
            cdi_devices: vec![dp::CdiDevice {
                name: "v.io/w=0".into(),
            }],
        };
        let bytes = r.encode_to_vec();
        let mut config = ContainerConfig {
            envs: vec![KeyValue {
                key: "A".into(),
                value: "1".into(),
            }],
            annotations: [("bosun.test/widget".to_string(), "kubelet's".to_string())].into(),
            ..Default::default()
        };
        apply(&mut config, &[decode(&bytes).unwrap()]);
        let envs: Vec<(&str, &str)> = config
            .envs
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(envs, [("WIDGET_IDS", "w0"), ("A", "1")]);
        assert_eq!(config.mounts[0].host_path, "/state/w0");
        assert!(config.mounts[0].readonly);
        assert_eq!(config.devices[0].permissions, "rw");
        assert_eq!(config.annotations["bosun.test/widget"], "kubelet's");
        assert_eq!(config.cdi_devices[0].name, "v.io/w=0");
    }
}
