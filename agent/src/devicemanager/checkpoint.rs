//! The kubelet's device manager checkpoint, `<root>/device-plugins/kubelet_internal_checkpoint`:
//! `{"Data":{"PodDeviceEntries":[{PodUID, ContainerName, ResourceName, DeviceIDs (by NUMA node,
//! -1 without one), AllocResp (base64 of the protobuf ContainerAllocateResponse)}],
//! "RegisteredDevices":{resource: [healthy IDs]}},"Checksum":N}` as checkpoint.go writes it.
//! The checksum is the kubelet's: FNV-32a over the go-spew `%#v` dump of the data
//! (hashutil.DeepHashObject through dump.ForHash), so either agent reads the other's file; a
//! file whose checksum does not match is corrupt and ignored, as the kubelet ignores it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{Allocation, PodDevices};

/// What a checkpoint holds: the allocations and the resources registered.
pub type Contents = (PodDevices, Vec<String>);

/// One container's devices of one resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    container_name: String,
    resource_name: String,
    #[serde(rename = "DeviceIDs")]
    device_ids: BTreeMap<String, Vec<String>>,
    /// base64, as Go's encoding/json writes a []byte; null before Allocate answered.
    alloc_resp: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Data {
    #[serde(default)]
    pod_device_entries: Vec<Entry>,
    #[serde(default)]
    registered_devices: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct File {
    data: Data,
    #[serde(default)]
    checksum: u64,
}

/// A checkpoint that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file.
    #[error("device checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The checksum does not match the data.
    #[error(
        "device checkpoint {path}: checkpoint is corrupted (checksum {found}, expected {expected})"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// The checksum the file holds.
        found: u64,
        /// The checksum of its data.
        expected: u64,
    },
    /// Not the kubelet's JSON.
    #[error("device checkpoint {path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
}

/// go-spew's `%#v` of a `[]string` element or map value (no type: spew skips it inside
/// slices and maps).
fn spew_strings(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// The go-spew dump (`%#v`, sorted keys) of the kubelet's checkpointData as Go holds it once
/// decoded from this JSON: a null AllocResp is a nil slice (`<nil>`), NUMA keys sort as numbers.
fn spew(d: &Data) -> String {
    let mut out = String::from(
        "(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)[",
    );
    for (i, e) in d.pod_device_entries.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut numa: Vec<(i64, &Vec<String>)> = e
            .device_ids
            .iter()
            .map(|(k, v)| (k.parse().unwrap_or(0), v))
            .collect();
        numa.sort_by_key(|(k, _)| *k);
        let numa: Vec<String> = numa
            .iter()
            .map(|(k, v)| format!("{k}:{}", spew_strings(v)))
            .collect();
        let resp = match e
            .alloc_resp
            .as_ref()
            .map(|r| base64::engine::general_purpose::STANDARD.decode(r))
        {
            Some(Ok(bytes)) => format!(
                "[{}]",
                bytes
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            _ => "<nil>".to_string(),
        };
        out.push_str(&format!(
            "{{PodUID:(string){} ContainerName:(string){} ResourceName:(string){} DeviceIDs:(checkpoint.DevicesPerNUMA)map[{}] AllocResp:([]uint8){}}}",
            e.pod_uid,
            e.container_name,
            e.resource_name,
            numa.join(" "),
            resp
        ));
    }
    out.push_str("] RegisteredDevices:(map[string][]string)map[");
    let reg: Vec<String> = d
        .registered_devices
        .iter()
        .map(|(k, v)| format!("{k}:{}", spew_strings(v)))
        .collect();
    out.push_str(&reg.join(" "));
    out.push_str("]}");
    out
}

/// The kubelet's checksum of the data: FNV-32a of its spew dump.
fn checksum(d: &Data) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in spew(d).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

/// The file's JSON for `pods` and the `registered` healthy devices (NUMA nodes unknown: -1).
pub fn encode(pods: &PodDevices, registered: &BTreeMap<String, Vec<String>>) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut entries = Vec::new();
    for (uid, containers) in pods {
        for (name, resources) in containers {
            for (resource, a) in resources {
                entries.push(Entry {
                    pod_uid: uid.clone(),
                    container_name: name.clone(),
                    resource_name: resource.clone(),
                    device_ids: BTreeMap::from([(
                        "-1".to_string(),
                        a.devices.iter().cloned().collect(),
                    )]),
                    alloc_resp: a.response.as_ref().map(|r| b64.encode(r)),
                });
            }
        }
    }
    let data = Data {
        pod_device_entries: entries,
        registered_devices: registered.clone(),
    };
    let file = File {
        checksum: checksum(&data),
        data,
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Parses the file's JSON: the allocations and the resources registered, or the checksum that
/// does not match (found, expected).
pub fn decode(bytes: &[u8]) -> Result<Result<Contents, (u64, u64)>, serde_json::Error> {
    let file: File = serde_json::from_slice(bytes)?;
    let expected = checksum(&file.data);
    if file.checksum != expected {
        return Ok(Err((file.checksum, expected)));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut pods = PodDevices::new();
    for e in file.data.pod_device_entries {
        let a = Allocation {
            devices: e.device_ids.into_values().flatten().collect(),
            response: e.alloc_resp.and_then(|r| b64.decode(r).ok()),
        };
        pods.entry(e.pod_uid)
            .or_default()
            .entry(e.container_name)
            .or_default()
            .insert(e.resource_name, a);
    }
    Ok(Ok((
        pods,
        file.data.registered_devices.into_keys().collect(),
    )))
}

/// Writes the checkpoint whole.
pub fn write(
    path: &Path,
    pods: &PodDevices,
    registered: &BTreeMap<String, Vec<String>>,
) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::atomic_file::write(path, &encode(pods, registered), 0o644).map_err(io)
}

/// Reads the checkpoint; None when there is none.
pub fn read(path: &Path) -> Result<Option<Contents>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let path = path.display().to_string();
    match decode(&bytes) {
        Ok(Ok(data)) => Ok(Some(data)),
        Ok(Err((found, expected))) => Err(CheckpointError::Corrupt {
            path,
            found,
            expected,
        }),
        Err(source) => Err(CheckpointError::Json { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_layout_round_trips() {
        let mut pods = PodDevices::new();
        pods.entry("u1".into())
            .or_default()
            .entry("c".into())
            .or_default()
            .insert(
                "bosun.test/widget".into(),
                Allocation {
                    devices: ["w0".to_string(), "w1".to_string()].into(),
                    response: Some(vec![10, 3, 1, 2, 3]),
                },
            );
        let reg = BTreeMap::from([("bosun.test/widget".to_string(), vec!["w0".to_string()])]);
        let bytes = encode(&pods, &reg);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let e = &v["Data"]["PodDeviceEntries"][0];
        assert_eq!(e["PodUID"], "u1");
        assert_eq!(e["ContainerName"], "c");
        assert_eq!(e["ResourceName"], "bosun.test/widget");
        assert_eq!(e["DeviceIDs"]["-1"], serde_json::json!(["w0", "w1"]));
        assert_eq!(e["AllocResp"], "CgMBAgM=");
        assert_eq!(v["Data"]["RegisteredDevices"]["bosun.test/widget"][0], "w0");
        assert!(v["Checksum"].is_u64());
        let (back, registered) = decode(&bytes).unwrap().unwrap();
        assert_eq!(back, pods);
        assert_eq!(registered, ["bosun.test/widget"]);
    }

    /// Files the kubelet's checkpoint package wrote (MarshalCheckpoint of k8s.io/kubernetes
    /// v1.37.2, run with Go on 2026-12-04): Bosun reads them, and writes the same bytes for the
    /// same data.
    #[test]
    fn the_kubelets_files_and_checksums() {
        let widget = r#"{"Data":{"PodDeviceEntries":[{"PodUID":"u1","ContainerName":"c","ResourceName":"bosun.test/widget","DeviceIDs":{"-1":["w0","w1"]},"AllocResp":"CgMBAgM="}],"RegisteredDevices":{"a.b/c":[],"bosun.test/widget":["w0"]}},"Checksum":2232948410}"#;
        let empty =
            r#"{"Data":{"PodDeviceEntries":[],"RegisteredDevices":{}},"Checksum":2932075448}"#;
        let numa = r#"{"Data":{"PodDeviceEntries":[{"PodUID":"u1","ContainerName":"c","ResourceName":"r.io/x","DeviceIDs":{"-1":["b"],"0":["a"]},"AllocResp":null}],"RegisteredDevices":{"r.io/x":["b","a"]}},"Checksum":510527780}"#;
        for json in [widget, empty, numa] {
            assert!(decode(json.as_bytes()).unwrap().is_ok(), "{json}");
        }
        let (pods, registered) = decode(numa.as_bytes()).unwrap().unwrap();
        let a = &pods["u1"]["c"]["r.io/x"];
        assert_eq!(a.devices, ["a".to_string(), "b".to_string()].into());
        assert_eq!(a.response, None);
        assert_eq!(registered, ["r.io/x"]);
        let (pods, _) = decode(widget.as_bytes()).unwrap().unwrap();
        let reg = BTreeMap::from([
            ("a.b/c".to_string(), vec![]),
            ("bosun.test/widget".to_string(), vec!["w0".to_string()]),
        ]);
        assert_eq!(String::from_utf8(encode(&pods, &reg)).unwrap(), widget);
        assert_eq!(
            String::from_utf8(encode(&PodDevices::new(), &BTreeMap::new())).unwrap(),
            empty
        );
        // A changed byte is a corrupt checkpoint.
        let tampered = widget.replace("\"w1\"", "\"w2\"");
        assert_eq!(
            decode(tampered.as_bytes()).unwrap(),
            Err((
                2232948410,
                checksum(&serde_json::from_str::<File>(&tampered).unwrap().data)
            ))
        );
    }
}
