//! Container log rotation, as the kubelet's `pkg/kubelet/logs`: a pure plan per rotation
//! ([`rotation`]) and the workers that apply it through CRI ReopenContainerLog ([`manager`]).

pub mod manager;
pub mod rotation;
