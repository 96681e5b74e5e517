//! Test harness: starts the real runtime, registry and control plane, hands tests their parts.
