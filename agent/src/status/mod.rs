//! Pod status: computed from the spec and what the runtime holds, kept in one store that the
//! server and (with a cluster) the status writer read.

pub mod compute;
pub mod manager;
pub mod store;

pub use compute::{ProbeStatus, StatusInput, Waiting, compute};
pub use store::StatusStore;

/// The PodResizePending condition type (in-place resize: not allocated yet).
pub const POD_RESIZE_PENDING: &str = "PodResizePending";
/// The PodResizeInProgress condition type (in-place resize: allocated, not applied yet).
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
