//! `GET /logs/{path}`: the node's log directory (/var/log) as the kubelet serves it with
//! `enableSystemLogHandler` (Go's `http.FileServer` over it): a directory answers with an HTML
//! listing, a file with its content, a directory without its trailing slash with a redirect.
//! Unlike Go's file server, nothing outside the directory is served, symlinks included.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use tokio::io::AsyncReadExt;

use super::Server;

fn plain(code: StatusCode, body: &str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// `rel` cleaned as Go's `path.Clean("/" + rel)` does (no `..` can climb above the root), as a
/// relative path; `trailing_slash` tells whether the request ended with `/`.
pub fn clean(rel: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().collect()
}

/// The file `rel` names under `root`, resolved, if it exists inside `root`.
pub fn resolve(root: &Path, rel: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let path = std::fs::canonicalize(root.join(rel)).ok()?;
    let inside = path.starts_with(&root)
        && path
            .strip_prefix(&root)
            .ok()?
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    inside.then_some(path)
}

/// Escapes text for HTML as Go's `htmlReplacer` does.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// Escapes a name for an href as Go's `url.URL{Path: name}.String()` does (enough of it: the
/// characters that would end or change the meaning of a path segment).
fn href_escape(s: &str) -> String {
    // A colon in the first segment would read as a URL scheme.
    let mut out = String::with_capacity(s.len() + 2);
    if s.split('/').next().is_some_and(|first| first.contains(':')) {
        out.push_str("./");
    }
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'/'
            | b'$'
            | b'&'
            | b'+'
            | b','
            | b';'
            | b'='
            | b'@'
            | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The HTML listing of a directory (Go's `dirList`): entries sorted by name, directories with `/`.
pub fn listing(entries: &mut [(String, bool)]) -> String {
    entries.sort();
    let mut out = String::from(
        "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
    );
    for (name, dir) in entries.iter() {
        let name = if *dir {
            format!("{name}/")
        } else {
            name.clone()
        };
        out.push_str(&format!(
            "<a href=\"{}\">{}</a>\n",
            href_escape(&name),
            html_escape(&name)
        ));
    }
    out.push_str("</pre>\n");
    out
}

/// `GET /logs/`.
pub async fn root(state: State<Arc<Server>>) -> Response {
    get(state, UrlPath(String::new())).await
}

/// `GET /logs/{*path}`.
pub async fn get(State(s): State<Arc<Server>>, UrlPath(rel): UrlPath<String>) -> Response {
    let trailing_slash = rel.is_empty() || rel.ends_with('/');
    let cleaned = clean(&rel);
    let Some(path) = resolve(&s.node_log_dir, &cleaned) else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    let last = cleaned
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if meta.is_dir() {
        if !trailing_slash {
            return redirect(&format!("{last}/"));
        }
        let mut entries = Vec::new();
        let Ok(mut dir) = tokio::fs::read_dir(&path).await else {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "Error reading directory");
        };
        while let Ok(Some(e)) = dir.next_entry().await {
            let is_dir = e.metadata().await.is_ok_and(|m| m.is_dir());
            entries.push((e.file_name().to_string_lossy().into_owned(), is_dir));
        }
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            listing(&mut entries),
        )
            .into_response();
    }
    if trailing_slash {
        return redirect(&format!("../{last}"));
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return plain(StatusCode::FORBIDDEN, "403 Forbidden");
    };
    // Go sniffs the first 512 bytes; logs are text unless they hold control bytes.
    let mut head = vec![0u8; 512];
    let n = file.read(&mut head).await.unwrap_or(0);
    head.truncate(n);
    let binary = head
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b));
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let rest = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes_of(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes_of(head)) }),
        rest,
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, meta.len().to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

fn redirect(location: &str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
        String::new(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_never_climbs_above_the_root() {
        let cases = [
            ("", ""),
            ("a/b", "a/b"),
            ("../../etc/passwd", "etc/passwd"),
            ("a/../../b", "b"),
            ("/etc/passwd", "etc/passwd"),
            ("./a//b/", "a/b"),
        ];
        for (rel, want) in cases {
            assert_eq!(clean(rel), PathBuf::from(want), "{rel}");
        }
    }

    #[test]
    fn resolves_only_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("syslog"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("syslog", root.join("in")).unwrap();
        assert!(resolve(&root, Path::new("syslog")).is_some());
        assert!(resolve(&root, Path::new("in")).is_some());
        assert_eq!(resolve(&root, Path::new("out")), None);
        assert_eq!(resolve(&root, Path::new("missing")), None);
    }

    #[test]
    fn lists_as_gos_file_server() {
        let mut entries = vec![("b.log".into(), false), ("a<&>".into(), true)];
        assert_eq!(
            listing(&mut entries),
            "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n\
             <a href=\"a%3C&%3E/\">a&lt;&amp;&gt;/</a>\n<a href=\"b.log\">b.log</a>\n</pre>\n"
        );
    }
}
