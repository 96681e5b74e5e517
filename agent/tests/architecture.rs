//! The agent's structure as ARCHITECTURE.md states it: every module placed in a layer, no
//! import from a lower layer (or a left neighbour) to a higher one, and no function over 120
//! lines outside tests. Reads the source tree; builds nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The agent crate's source directory.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The layers of ARCHITECTURE.md, lowest first: each a list of module names, left to right.
fn layers() -> Vec<Vec<String>> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
        .unwrap();
    let doc = doc.split("## Checking the layers").next().unwrap();
    let mut layers: Vec<Vec<String>> = Vec::new();
    for line in doc.lines() {
        if line.starts_with("**") && line[2..].starts_with(|c: char| c.is_ascii_digit()) {
            layers.push(Vec::new());
            continue;
        }
        // A module line: four spaces, the name, then at least two spaces before its text.
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let after = &rest[name.len()..];
        if !name.is_empty()
            && (after.starts_with("  ") || after.is_empty())
            && let Some(layer) = layers.last_mut()
        {
            layer.push(name);
        }
    }
    layers
}

/// The crate modules that `text` names as `crate::<module>`.
fn crate_imports(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The top-level module a file under src/ belongs to.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_is_in_a_layer_and_imports_only_downwards() {
    let layers = layers();
    let mut place: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (l, mods) in layers.iter().enumerate() {
        for (i, m) in mods.iter().enumerate() {
            place.insert(m.clone(), (l, i));
        }
    }
    assert!(
        place.len() > 20,
        "ARCHITECTURE.md's layers not found: {layers:?}"
    );
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(&src()) {
        let m = module_of(&f);
        if matches!(m.as_str(), "lib" | "main" | "fuzz") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::{"),
            "{}: a crate::{{...}} group hides which modules it uses",
            f.display()
        );
        let imports = crate_imports(&text);
        uses.entry(m).or_default().extend(imports);
    }
    let mut wrong = Vec::new();
    for (m, used) in &uses {
        let Some(&(layer, index)) = place.get(m) else {
            wrong.push(format!("module {m} is in no layer of ARCHITECTURE.md"));
            continue;
        };
        for u in used.iter().filter(|u| *u != m) {
            match place.get(u) {
                None => wrong.push(format!("{m} uses {u}, which is in no layer")),
                Some(&(l, i)) if l > layer || (l == layer && i > index) => wrong.push(format!(
                    "{m} (layer {layer}) uses {u} (layer {l}), above it"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_function_outside_tests_is_over_120_lines() {
    let mut long = Vec::new();
    for f in rust_files(&src()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name == "tests.rs" || name == "fuzz.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Test modules sit at the end of a file, after #[cfg(test)].
        let end = lines
            .iter()
            .position(|l| l.starts_with("#[cfg(test)]"))
            .unwrap_or(lines.len());
        for (start, line) in lines[..end].iter().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| *w == "fn") else {
                continue;
            };
            let qualifiers = &words[..at];
            let is_item = qualifiers.iter().all(|w| {
                w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe" | "extern")
            });
            if !is_item {
                continue;
            }
            // The signature ends at the first line ending in `{` (a body) or `;` (a declaration).
            let Some(sig_end) = lines[start..end]
                .iter()
                .map(|l| l.trim_end())
                .find(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with("{}"))
            else {
                continue;
            };
            if !sig_end.ends_with('{') {
                continue;
            }
            // rustfmt closes an item at its own indent with a lone `}`.
            let close = " ".repeat(indent) + "}";
            let Some(len) = lines[start..end].iter().position(|l| *l == close) else {
                continue;
            };
            if len + 1 > 120 {
                long.push(format!("{}:{} {} lines", f.display(), start + 1, len + 1));
            }
        }
    }
    assert!(long.is_empty(), "functions over 120 lines: {long:#?}");
}
