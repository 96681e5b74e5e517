//! Authorization of requests to the :10250 server, as the kubelet's: each request maps to
//! `nodes/<subresource>` of this node with a verb from the HTTP method (fine-grained subresources
//! first, then `proxy` where the kubelet falls back to it), checked with a SubjectAccessReview;
//! allowed answers are cached for `cacheAuthorizedTTL`, denied ones for `cacheUnauthorizedTTL`.
//! `AlwaysAllow` skips all of it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tracing::warn;

use super::auth::User;
use super::cache::TtlCache;
use crate::config::AuthorizationMode;

/// What a request asks to do, in API terms: `<verb> nodes/<subresource>` of this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// API verb from the HTTP method (`get`, `create`, ...; empty for other methods).
    pub verb: &'static str,
    /// Subresource of `nodes`.
    pub subresource: &'static str,
    /// The node's name.
    pub name: String,
}

/// The API verb of an HTTP method, as the kubelet maps it.
pub fn verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::GET => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
}

/// True when `path` is `prefix` or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// The subresources a request path is authorized against, in order (the kubelet's fine-grained
/// mapping; `/pods`, `/runningpods`, `/healthz`, `/configz` also pass with `proxy`).
pub fn subresources(path: &str) -> &'static [&'static str] {
    const TABLE: &[(&str, &[&str])] = &[
        ("/stats", &["stats"]),
        ("/metrics", &["metrics"]),
        ("/logs", &["log"]),
        ("/pods", &["pods", "proxy"]),
        ("/runningpods", &["pods", "proxy"]),
        ("/healthz", &["healthz", "proxy"]),
        ("/configz", &["configz", "proxy"]),
        ("/spec", &["spec"]),
        ("/checkpoint", &["checkpoint"]),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| is_subpath(path, prefix))
        .map(|(_, s)| *s)
        .unwrap_or(&["proxy"])
}

/// The attributes to check for a request, in order; any allowed one admits it.
pub fn request_attributes(method: &http::Method, path: &str, node: &str) -> Vec<Attributes> {
    subresources(path)
        .iter()
        .map(|s| Attributes {
            verb: verb(method),
            subresource: s,
            name: node.to_string(),
        })
        .collect()
}

/// Why a decision could not be made (answered with 500).
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// The SubjectAccessReview failed.
    #[error("SubjectAccessReview: {0}")]
    Review(String),
}

/// Decides access reviews; the seam between the authorizer and the API.
pub trait AccessReviewer: Send + Sync {
    /// True when `user` may do `attrs`.
    fn review<'a>(
        &'a self,
        user: &'a User,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthzError>>;
}

impl AccessReviewer for kube::Client {
    fn review<'a>(
        &'a self,
        user: &'a User,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthzError>> {
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.into()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(attrs.name.clone()),
                    namespace: Some(String::new()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            ..Default::default()
        };
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.clone());
            let r = api
                .create(&PostParams::default(), &sar)
                .await
                .map_err(|e| AuthzError::Review(e.to_string()))?;
            // Denied and no opinion both leave the request unauthorized, as in the kubelet.
            Ok(r.status.is_some_and(|s| s.allowed))
        })
    }
}

/// The request authorizer of the server.
pub struct Authorizer {
    mode: AuthorizationMode,
    reviewer: Option<Arc<dyn AccessReviewer>>,
    cache: TtlCache<(User, Attributes), bool>,
    allowed_ttl: Duration,
    denied_ttl: Duration,
}

impl Authorizer {
    /// An authorizer; in Webhook mode without a reviewer (no API client) everything is denied.
    pub fn new(
        mode: AuthorizationMode,
        reviewer: Option<Arc<dyn AccessReviewer>>,
        allowed_ttl: Duration,
        denied_ttl: Duration,
    ) -> Authorizer {
        Authorizer {
            mode,
            reviewer,
            cache: TtlCache::new(10_000),
            allowed_ttl,
            denied_ttl,
        }
    }

    /// True when `user` may do `attrs`.
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<bool, AuthzError> {
        if self.mode == AuthorizationMode::AlwaysAllow {
            return Ok(true);
        }
        let Some(reviewer) = &self.reviewer else {
            return Ok(false);
        };
        let key = (user.clone(), attrs.clone());
        if let Some(allowed) = self.cache.get(&key) {
            return Ok(allowed);
        }
        let allowed = reviewer.review(user, attrs).await.inspect_err(|e| {
            warn!(error = %e, user = %user.name, "access review failed");
        })?;
        let ttl = if allowed {
            self.allowed_ttl
        } else {
            self.denied_ttl
        };
        self.cache.insert(key, allowed, ttl);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn paths_map_as_the_kubelets() {
        let cases: &[(&str, &[&str])] = &[
            ("/stats/summary", &["stats"]),
            ("/stats", &["stats"]),
            ("/statsx", &["proxy"]),
            ("/metrics", &["metrics"]),
            ("/metrics/resource", &["metrics"]),
            ("/metrics/probes", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/logs/", &["log"]),
            ("/pods", &["pods", "proxy"]),
            ("/pods/", &["pods", "proxy"]),
            ("/runningpods/", &["pods", "proxy"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/configz", &["configz", "proxy"]),
            ("/spec/", &["spec"]),
            ("/containerLogs/ns/pod/c", &["proxy"]),
            ("/exec/ns/pod/c", &["proxy"]),
            ("/", &["proxy"]),
        ];
        for (path, want) in cases {
            assert_eq!(subresources(path), *want, "{path}");
        }
        assert_eq!(verb(&http::Method::GET), "get");
        assert_eq!(verb(&http::Method::POST), "create");
        assert_eq!(verb(&http::Method::HEAD), "");
        let a = request_attributes(&http::Method::GET, "/pods", "n1");
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[1].verb, a[1].subresource, a[1].name.as_str()),
            ("get", "proxy", "n1")
        );
    }

    struct Fake {
        calls: AtomicUsize,
    }

    impl AccessReviewer for Fake {
        fn review<'a>(
            &'a self,
            user: &'a User,
            attrs: &'a Attributes,
        ) -> BoxFuture<'a, Result<bool, AuthzError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let ok = user.name == "admin" || attrs.subresource == "healthz";
            Box::pin(async move { Ok(ok) })
        }
    }

    #[tokio::test]
    async fn webhook_answers_are_cached_per_decision_ttl() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
        });
        let a = Authorizer::new(
            AuthorizationMode::Webhook,
            Some(fake.clone()),
            Duration::from_secs(300),
            Duration::ZERO,
        );
        let admin = User {
            name: "admin".into(),
            ..Default::default()
        };
        let nobody = User {
            name: "nobody".into(),
            ..Default::default()
        };
        let stats = &request_attributes(&http::Method::GET, "/stats/summary", "n")[0];
        assert!(a.authorize(&admin, stats).await.unwrap());
        assert!(a.authorize(&admin, stats).await.unwrap());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Denied with a zero TTL: asked every time.
        assert!(!a.authorize(&nobody, stats).await.unwrap());
        assert!(!a.authorize(&nobody, stats).await.unwrap());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        let allow = Authorizer::new(
            AuthorizationMode::AlwaysAllow,
            None,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert!(allow.authorize(&nobody, stats).await.unwrap());
        let no_client = Authorizer::new(
            AuthorizationMode::Webhook,
            None,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert!(!no_client.authorize(&admin, stats).await.unwrap());
    }
}
