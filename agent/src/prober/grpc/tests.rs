//! The gRPC probe against an in-process tonic health server (no gRPC server image runs in the
//! test environment): SERVING passes, NOT_SERVING fails with the kubelet's message, the
//! `service` reaches the server, and a closed port fails to connect.

use super::*;
use bosun_proto::health_v1::HealthCheckResponse;
use bosun_proto::health_v1::health_server::{Health, HealthServer};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Fake {
    status: Arc<Mutex<ServingStatus>>,
    asked: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for Fake {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        self.asked.lock().unwrap().push(req.into_inner().service);
        let status = *self.status.lock().unwrap() as i32;
        Ok(tonic::Response::new(HealthCheckResponse { status }))
    }
}

#[tokio::test]
async fn serving_passes_not_serving_fails_closed_port_fails() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port() as i32;
    let fake = Fake::default();
    *fake.status.lock().unwrap() = ServingStatus::Serving;
    let server = tonic::transport::Server::builder()
        .add_service(HealthServer::new(fake.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let t = Duration::from_secs(2);
    assert_eq!(
        probe("127.0.0.1", port, "db", t).await,
        ProbeResult::Success("service healthy".into())
    );
    *fake.status.lock().unwrap() = ServingStatus::NotServing;
    assert_eq!(
        probe("127.0.0.1", port, "", t).await,
        ProbeResult::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        *fake.asked.lock().unwrap(),
        vec!["db".to_string(), String::new()]
    );
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port() as i32;
    drop(closed);
    // As grpc-go's blocking dial: a refused connection is retried until the probe's timeout.
    let t = Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    assert_eq!(
        probe("127.0.0.1", dead, "", t).await,
        ProbeResult::Failure(format!(
            "timeout: failed to connect service \"127.0.0.1:{dead}\" within 1s: context deadline exceeded"
        ))
    );
    assert!(started.elapsed() >= t);
}
