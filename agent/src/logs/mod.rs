//! Container logs as the kubelet's: the reader of the CRI log files a runtime writes for each
//! container (`<time> <stdout|stderr> <P|F> <content>`, partial `P` records joined), as the
//! kubelet's log reader does (cri-client `pkg/logs`): `tailLines` found by seeking backwards,
//! `sinceTime`, `limitBytes`, `timestamps`, a stream filter, and `follow` across a rotation until
//! the container stops, in bounded memory; and their rotation (`pkg/kubelet/logs`): a pure plan
//! per rotation ([`rotation`]) and the workers that apply it through CRI ReopenContainerLog
//! ([`manager`]).

pub mod format;
pub mod manager;
pub mod reader;
pub mod rotation;
pub mod tail;

pub use reader::{Liveness, LogError, LogOptions, read_logs};
