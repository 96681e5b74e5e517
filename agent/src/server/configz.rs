//! `GET /configz`: the effective KubeletConfiguration under the key `kubeletconfig`, as the
//! kubelet's configz handler serves it (component-base `configz`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use super::Server;

/// The handler.
pub async fn get(State(s): State<Arc<Server>>) -> Response {
    let body = serde_json::json!({ "kubeletconfig": &s.configz });
    match serde_json::to_vec(&body) {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
