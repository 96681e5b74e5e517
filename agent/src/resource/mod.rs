//! Resource quantities, the pod's QoS class and the node's allocatable, as the kubelet computes them.

pub mod allocatable;
pub mod amount;
pub mod names;
pub mod qos;
pub mod quantity;
pub mod requests;

pub use amount::{Amount, Format};
pub use names::{is_extended_resource, is_scalar_resource};
pub use qos::{QosClass, qos_class};
pub use quantity::{Quantity, QuantityError, parse_quantity};
pub use requests::{PodLimit, pod_limit, pod_request};
