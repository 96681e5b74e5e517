//! The shared environment: `tests/env/up` run once per test process, and the variables it wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The variables of `$BOSUN_ENV_DIR/env.sh` (runtime, and cluster when it was started).
#[derive(Debug, Clone)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$BOSUN_ENV_DIR`, default `<repo>/tests/env/run`.
pub fn env_dir() -> PathBuf {
    std::env::var_os("BOSUN_ENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/env/run"))
}

impl Env {
    /// The runtime environment (containerd, registry, images), started if it is not running.
    pub fn runtime() -> &'static Env {
        static RUNTIME: OnceLock<Env> = OnceLock::new();
        RUNTIME.get_or_init(|| Env::up(&[]))
    }

    /// The runtime environment and the control plane, started if they are not running.
    pub fn cluster() -> &'static Env {
        static CLUSTER: OnceLock<Env> = OnceLock::new();
        CLUSTER.get_or_init(|| Env::up(&["--cluster"]))
    }

    fn up(args: &[&str]) -> Env {
        let script = repo_root().join("tests/env/up");
        let out = Command::new(&script)
            .args(args)
            .env("BOSUN_ENV_DIR", env_dir())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        if !out.status.success() {
            panic!(
                "{} {} failed ({}):\n{}{}",
                script.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut vars = HashMap::new();
        for file in ["runtime.env.sh", "cluster.env.sh"] {
            if let Ok(text) = std::fs::read_to_string(env_dir().join(file)) {
                vars.extend(parse_exports(&text));
            }
        }
        Env { vars }
    }

    /// One variable, panicking with its name when the environment lacks it.
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| {
            panic!(
                "environment variable {name} missing from {}/env.sh",
                env_dir().display()
            )
        })
    }

    /// All variables, for passing to child processes.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// The registry address, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        self.var("REGISTRY")
    }

    /// `127.0.0.1:5000/busybox:1`.
    pub fn busybox_image(&self) -> &str {
        self.var("BUSYBOX_IMAGE")
    }

    /// `127.0.0.1:5000/pause:1`, the sandbox image.
    pub fn pause_image(&self) -> &str {
        self.var("PAUSE_IMAGE")
    }
}

/// Parses `export NAME=value` lines (values optionally quoted) as env.sh files hold them.
pub(crate) fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_quoted_exports() {
        let vars = parse_exports("# c\nexport A=1\nexport B=\"x y\"\nexport C='z'\nD=4\n");
        assert_eq!(vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(vars.get("B").map(String::as_str), Some("x y"));
        assert_eq!(vars.get("C").map(String::as_str), Some("z"));
        assert!(!vars.contains_key("D"));
    }
}
