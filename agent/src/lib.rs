//! bosun: a Kubernetes node agent. The library holds one module per kubelet concept; `main` wires.

pub mod version;
