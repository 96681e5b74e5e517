//! The container log reader: the CRI log files a runtime writes for each container
//! (`<time> <stdout|stderr> <P|F> <content>`, partial `P` records joined), read as the kubelet's
//! log reader does (cri-client `pkg/logs`): `tailLines` found by seeking backwards, `sinceTime`,
//! `limitBytes`, `timestamps`, a stream filter, and `follow` across a rotation until the container
//! stops. Memory is bounded whatever the file's size: one read buffer, one line, one output chunk.

pub mod format;
pub mod reader;
pub mod tail;

pub use reader::{Liveness, LogError, LogOptions, read_logs};
