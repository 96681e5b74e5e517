//! `rest_client_requests_total`: a tower layer on the API client counting every request by
//! status code, method and host, as client-go's metrics do; it also hands each outcome to an
//! observer the client gives it (the API server's reachability).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

/// Told of each request's outcome: the response's status code, None when none came.
pub type Observer = fn(Option<u16>);

/// Counts the requests of the service it wraps.
#[derive(Clone)]
pub struct RestMetricsLayer {
    host: String,
    observer: Observer,
}

impl RestMetricsLayer {
    /// Requests go to `host` (`127.0.0.1:6443`); `observer` sees each outcome too.
    pub fn new(host: impl Into<String>, observer: Observer) -> Self {
        RestMetricsLayer {
            host: host.into(),
            observer,
        }
    }
}

impl<S> Layer<S> for RestMetricsLayer {
    type Service = RestMetrics<S>;

    fn layer(&self, inner: S) -> RestMetrics<S> {
        RestMetrics {
            inner,
            host: self.host.clone(),
            observer: self.observer,
        }
    }
}

/// The service of [`RestMetricsLayer`].
#[derive(Clone)]
pub struct RestMetrics<S> {
    inner: S,
    host: String,
    observer: Observer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RestMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = req.method().to_string();
        let host = self.host.clone();
        let observer = self.observer;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            let code = r.as_ref().ok().map(|r| r.status().as_u16());
            super::global().observe_api_request(&method, &host, code);
            observer(code);
            r
        })
    }
}
