//! The Debian package `packaging/deb/build` makes, as an operator installs it: its control fields
//! (it provides, replaces and conflicts with `kubelet`), the files and their modes (the unit and
//! the kubeadm drop-in 0600 as CIS 4.1.1 asks, `/usr/bin/kubelet` leading to bosun, whose
//! `--version` kubeadm's preflight reads), and the unit enabled in the unpacked root: kubelet.service
//! is then bosun.service (so kubeadm's `systemctl restart kubelet` restarts bosun), and
//! `systemd-analyze verify` passes clean under both names.

use std::path::Path;
use std::process::Command;

use bosun_tests::{bosun_bin, repo_root};

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The package's files: (mode string, path, symlink target).
fn listing(deb: &Path) -> Vec<(String, String, Option<String>)> {
    let (ok, out, err) = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert!(ok, "dpkg-deb -c: {err}");
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            let target = (f.len() > 7 && f[6] == "->").then(|| f[7].to_string());
            (f[0].to_string(), path, target)
        })
        .collect()
}

#[test]
fn the_debian_package_installs_bosun_as_kubelet_service() {
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, err) = run(Command::new(repo_root().join("packaging/deb/build"))
        .arg(out.path())
        .arg(bosun_bin())
        // The debug binary is large: no compression for the test.
        .env("BOSUN_DEB_COMPRESSION", "none"));
    assert!(ok, "packaging/deb/build: {err}");
    let deb = Path::new(stdout.trim());
    assert!(
        deb.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("bosun_")),
        "{}",
        deb.display()
    );

    let field = |name: &str| {
        let (ok, out, err) = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
        assert!(ok, "dpkg-deb -f {name}: {err}");
        out.trim().to_string()
    };
    assert_eq!(field("Package"), "bosun");
    assert_eq!(field("Conflicts"), "kubelet");
    assert_eq!(field("Replaces"), "kubelet");
    assert!(
        field("Provides").starts_with("kubelet (= 1."),
        "{}",
        field("Provides")
    );

    let files = listing(deb);
    let entry = |path: &str| {
        files
            .iter()
            .find(|(_, p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not in the package: {files:#?}"))
            .clone()
    };
    assert_eq!(entry("/usr/bin/bosun").0, "-rwxr-xr-x");
    assert_eq!(
        entry("/usr/lib/systemd/system/bosun.service").0,
        "-rw-------"
    );
    assert_eq!(
        entry("/usr/lib/systemd/system/bosun.service.d/10-kubeadm.conf").0,
        "-rw-------"
    );
    assert_eq!(entry("/usr/bin/kubelet").2.as_deref(), Some("bosun"));

    // Unpacked into a root of its own, with the host's targets and slices for the unit's
    // dependencies to resolve.
    let root = tempfile::tempdir().expect("root");
    let (ok, _, err) = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    assert!(ok, "dpkg-deb -x: {err}");
    let units = root.path().join("usr/lib/systemd/system");
    for e in std::fs::read_dir("/usr/lib/systemd/system")
        .expect("host units")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".target") || name.ends_with(".slice") {
            let _ = std::fs::copy(e.path(), units.join(&name));
        }
    }
    // What kubeadm's preflight runs: `kubelet --version`.
    let (ok, version, err) =
        run(Command::new(root.path().join("usr/bin/kubelet")).arg("--version"));
    assert!(ok, "kubelet --version: {err}");
    assert!(version.starts_with("Kubernetes v1."), "{version}");

    let (ok, _, err) = run(Command::new("systemctl")
        .arg(format!("--root={}", root.path().display()))
        .args(["enable", "bosun.service"]));
    assert!(ok, "systemctl enable: {err}");
    let alias = root.path().join("etc/systemd/system/kubelet.service");
    assert_eq!(
        std::fs::read_link(&alias).expect("kubelet.service alias"),
        Path::new("/usr/lib/systemd/system/bosun.service")
    );
    assert!(
        root.path()
            .join("etc/systemd/system/multi-user.target.wants/bosun.service")
            .is_symlink()
    );
    for name in ["bosun.service", "kubelet.service"] {
        let (ok, out, err) = run(Command::new("systemd-analyze")
            .arg(format!("--root={}", root.path().display()))
            .args(["verify", name]));
        assert!(ok && err.trim().is_empty(), "verify {name}: {out}{err}");
    }
}
