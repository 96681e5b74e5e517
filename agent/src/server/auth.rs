//! Authentication of requests to the :10250 server, as the kubelet's: a client certificate
//! verified against the client CA (user = CN, groups = O), else a bearer token checked with a
//! TokenReview (answers cached for `authentication.webhook.cacheTTL`), else anonymous when
//! `authentication.anonymous.enabled`, else 401.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::cache::TtlCache;

/// The group every authenticated user gets.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The anonymous user's name.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The anonymous user's group.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, if the authenticator knows one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (from TokenReview).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The user of a verified client certificate: CN is the name, each O a group.
    pub fn from_certificate(der: &[u8]) -> Option<User> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(User {
            name,
            groups,
            ..Default::default()
        })
    }

    fn with_authenticated_group(mut self) -> User {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// Why a request could not be authenticated (answered with 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No credentials and anonymous requests are not allowed.
    #[error("no credentials")]
    NoCredentials,
    /// The bearer token was rejected by the TokenReview.
    #[error("invalid bearer token")]
    InvalidToken,
    /// Bearer tokens cannot be checked (webhook off, or no API client).
    #[error("bearer token authentication is not enabled")]
    TokenAuthDisabled,
    /// The TokenReview failed.
    #[error("TokenReview: {0}")]
    Review(String),
}

/// What a TokenReview said about a token: the user, or None when not authenticated.
pub type TokenOutcome = Option<User>;

/// Checks bearer tokens; the seam between the authenticator and the API.
pub trait TokenReviewer: Send + Sync {
    /// Reviews `token`.
    fn review(&self, token: &str) -> BoxFuture<'_, Result<TokenOutcome, AuthnError>>;
}

impl TokenReviewer for kube::Client {
    fn review(&self, token: &str) -> BoxFuture<'_, Result<TokenOutcome, AuthnError>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.clone());
            let r = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| AuthnError::Review(e.to_string()))?;
            let Some(status) = r.status else {
                return Ok(None);
            };
            if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                return Err(AuthnError::Review(e));
            }
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            let u = status.user.unwrap_or_default();
            Ok(Some(User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }))
        })
    }
}

/// The request authenticator of the server.
pub struct Authenticator {
    tokens: Option<Arc<dyn TokenReviewer>>,
    cache: TtlCache<[u8; 32], TokenOutcome>,
    cache_ttl: Duration,
    anonymous: bool,
}

impl Authenticator {
    /// An authenticator; `tokens` None turns bearer token authentication off.
    pub fn new(
        tokens: Option<Arc<dyn TokenReviewer>>,
        cache_ttl: Duration,
        anonymous: bool,
    ) -> Authenticator {
        Authenticator {
            tokens,
            cache: TtlCache::new(4096),
            cache_ttl,
            anonymous,
        }
    }

    /// Who made the request: the verified client certificate's user (`peer`), else the bearer
    /// token's, else anonymous if allowed.
    pub async fn authenticate(
        &self,
        peer: Option<&User>,
        headers: &HeaderMap,
    ) -> Result<User, AuthnError> {
        if let Some(u) = peer {
            return Ok(u.clone().with_authenticated_group());
        }
        if let Some(token) = bearer_token(headers) {
            return self.token(token).await;
        }
        if self.anonymous {
            return Ok(User {
                name: ANONYMOUS_USER.into(),
                groups: vec![UNAUTHENTICATED_GROUP.into()],
                ..Default::default()
            });
        }
        Err(AuthnError::NoCredentials)
    }

    async fn token(&self, token: &str) -> Result<User, AuthnError> {
        let Some(reviewer) = &self.tokens else {
            return Err(AuthnError::TokenAuthDisabled);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let outcome = match self.cache.get(&key) {
            Some(o) => o,
            None => {
                let o = reviewer.review(token).await.inspect_err(|e| {
                    warn!(error = %e, "token review failed");
                })?;
                self.cache.insert(key, o.clone(), self.cache_ttl);
                o
            }
        };
        outcome
            .map(User::with_authenticated_group)
            .ok_or(AuthnError::InvalidToken)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any and not empty.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        calls: AtomicUsize,
    }

    impl TokenReviewer for Fake {
        fn review(&self, token: &str) -> BoxFuture<'_, Result<TokenOutcome, AuthnError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let ok = token == "good";
            Box::pin(async move {
                Ok(ok.then(|| User {
                    name: "alice".into(),
                    groups: vec!["devs".into()],
                    ..Default::default()
                }))
            })
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn certificate_then_token_then_anonymous() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
        });
        let a = Authenticator::new(Some(fake.clone()), Duration::from_secs(60), false);
        let cert_user = User {
            name: "bob".into(),
            ..Default::default()
        };
        let u = a
            .authenticate(Some(&cert_user), &headers("Bearer bad"))
            .await
            .unwrap();
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, vec![AUTHENTICATED_GROUP.to_string()]);
        let u = a.authenticate(None, &headers("Bearer good")).await.unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(
            u.groups,
            vec!["devs".to_string(), AUTHENTICATED_GROUP.into()]
        );
        // Cached: no second review, for good and for bad tokens.
        a.authenticate(None, &headers("bearer good")).await.unwrap();
        assert!(matches!(
            a.authenticate(None, &headers("Bearer bad")).await,
            Err(AuthnError::InvalidToken)
        ));
        assert!(matches!(
            a.authenticate(None, &headers("Bearer bad")).await,
            Err(AuthnError::InvalidToken)
        ));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert!(matches!(
            a.authenticate(None, &HeaderMap::new()).await,
            Err(AuthnError::NoCredentials)
        ));
        let anon = Authenticator::new(None, Duration::from_secs(60), true);
        let u = anon.authenticate(None, &HeaderMap::new()).await.unwrap();
        assert_eq!(u.name, ANONYMOUS_USER);
        // A token that cannot be checked is refused, never treated as anonymous.
        assert!(anon.authenticate(None, &headers("Bearer x")).await.is_err());
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
    }
}
