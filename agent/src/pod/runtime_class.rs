//! The RuntimeClass of a pod through a cached reader: the CRI runtime handler its
//! runtimeClassName names (the kubelet's runtimeclass.Manager.LookupRuntimeHandler, which reads an
//! informer). Found classes are kept for [`TTL`]: a sandbox made again (a crash loop, a node
//! restart, many pods of one class) does not GET the class each time; a class changed or deleted
//! in the API is seen within the TTL. A missing class is not kept, so one created later is found
//! on the next sandbox attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::node::v1::RuntimeClass;

/// How long a RuntimeClass read from the API is used before it is read again.
pub const TTL: Duration = Duration::from_secs(60);

/// Why the handler of a RuntimeClass is not known: the kubelet's messages.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No RuntimeClass of that name.
    #[error("runtimeclass.node.k8s.io {0:?} not found")]
    NotFound(String),
    /// The API server did not answer.
    #[error("failed to lookup RuntimeClass {name}: {source}")]
    Api {
        /// The class.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// RuntimeClass handlers by class name, read from the API and kept for [`TTL`].
pub struct RuntimeClasses {
    client: Option<kube::Client>,
    handlers: Mutex<HashMap<String, (String, Instant)>>,
}

impl RuntimeClasses {
    /// A reader on `client`; without one (standalone) every pod gets the default handler.
    pub fn new(client: Option<kube::Client>) -> Self {
        RuntimeClasses {
            client,
            handlers: Mutex::new(HashMap::new()),
        }
    }

    /// The CRI handler of class `name`: empty for no class or without an API server.
    pub async fn handler(&self, name: Option<&str>) -> Result<String, LookupError> {
        let name = name.unwrap_or_default();
        let Some(client) = self.client.as_ref().filter(|_| !name.is_empty()) else {
            return Ok(String::new());
        };
        if let Some(h) = self.cached(name, Instant::now()) {
            return Ok(h);
        }
        let api: kube::Api<RuntimeClass> = kube::Api::all(client.clone());
        match api.get_opt(name).await {
            Ok(Some(rc)) => {
                self.remember(name, &rc.handler, Instant::now());
                Ok(rc.handler)
            }
            Ok(None) => {
                self.forget(name);
                Err(LookupError::NotFound(name.to_string()))
            }
            Err(source) => Err(LookupError::Api {
                name: name.to_string(),
                source,
            }),
        }
    }

    fn cached(&self, name: &str, now: Instant) -> Option<String> {
        let handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        handlers
            .get(name)
            .filter(|(_, at)| now.duration_since(*at) < TTL)
            .map(|(h, _)| h.clone())
    }

    fn remember(&self, name: &str, handler: &str, now: Instant) {
        let mut handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        handlers.retain(|_, (_, at)| now.duration_since(*at) < TTL);
        handlers.insert(name.to_string(), (handler.to_string(), now));
    }

    fn forget(&self, name: &str) {
        let mut handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        handlers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_for_the_ttl_then_read_again() {
        let classes = RuntimeClasses::new(None);
        let t0 = Instant::now();
        classes.remember("gvisor", "runsc", t0);
        let cases = [
            ("fresh", Duration::ZERO, Some("runsc")),
            (
                "just before the TTL",
                TTL - Duration::from_millis(1),
                Some("runsc"),
            ),
            ("at the TTL", TTL, None),
        ];
        for (name, after, want) in cases {
            assert_eq!(
                classes.cached("gvisor", t0 + after).as_deref(),
                want,
                "{name}"
            );
        }
        assert_eq!(classes.cached("kata", t0), None, "never read");
        classes.forget("gvisor");
        assert_eq!(classes.cached("gvisor", t0), None, "deleted in the API");
    }

    #[tokio::test]
    async fn no_class_or_no_api_server_is_the_default_handler() {
        let classes = RuntimeClasses::new(None);
        assert_eq!(classes.handler(None).await.unwrap(), "");
        assert_eq!(classes.handler(Some("gvisor")).await.unwrap(), "");
    }
}
