//! Request headers and redirect resolution of HTTP probes.

use super::*;

#[test]
fn headers_are_the_kubelets_under_the_specs() {
    let get: HTTPGetAction = serde_json::from_value(serde_json::json!({
        "port": 80, "httpHeaders": [{"name": "X-A", "value": "1"}, {"name": "X-A", "value": "2"}]
    }))
    .unwrap();
    let h = headers(&get).unwrap();
    assert_eq!(h.get(header::USER_AGENT).unwrap(), "kube-probe/1.37");
    assert_eq!(h.get(header::ACCEPT).unwrap(), "*/*");
    assert_eq!(h.get_all("x-a").iter().count(), 2);
    let get: HTTPGetAction = serde_json::from_value(serde_json::json!({
        "port": 80, "httpHeaders": [{"name": "Accept", "value": ""},
                                    {"name": "User-Agent", "value": "mine"}]
    }))
    .unwrap();
    let h = headers(&get).unwrap();
    assert!(
        h.get(header::ACCEPT).is_none(),
        "an empty Accept removes it"
    );
    assert_eq!(h.get(header::USER_AGENT).unwrap(), "mine");
}

#[test]
fn redirects_resolve_against_the_request() {
    let from: Uri = "http://10.0.0.1:8080/a/b?x=1".parse().unwrap();
    let r = |l: &str| resolve(&from, l).map(|u| u.to_string());
    assert_eq!(r("/c").as_deref(), Some("http://10.0.0.1:8080/c"));
    assert_eq!(r("c").as_deref(), Some("http://10.0.0.1:8080/a/c"));
    assert_eq!(r("http://other/x").as_deref(), Some("http://other/x"));
    assert_eq!(r("//other:1/y").as_deref(), Some("http://other:1/y"));
}

#[test]
fn named_and_numbered_ports_resolve_as_the_kubelet() {
    let c: Container = serde_json::from_value(serde_json::json!({
        "name": "c", "ports": [{"name": "web", "containerPort": 8080}]
    }))
    .unwrap();
    let s = |v: &str| IntOrString::String(v.into());
    assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
    assert_eq!(resolve_port(&s("web"), &c), Ok(8080));
    assert_eq!(
        resolve_port(&s("nope"), &c),
        Err("port \"nope\" not found".into())
    );
    assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
}
