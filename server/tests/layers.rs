//! The layering of `server/src` (ARCHITECTURE.md): each layer uses only the layers below it —
//! `domain` < `storage` < `federation` < `api` < `node` — and `metrics` uses none of them.
//! Checked on the source: any `crate::<layer>` path in code (not comments) that names a
//! higher layer fails the test.

use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["domain", "storage", "federation", "api", "node"];

fn rank(name: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| *layer == name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<name>` in the code of `file` (comment lines left out).
fn crate_paths(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((number + 1, name));
        }
    }
    found
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for layer in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} holds no code");
        for file in files {
            checked += 1;
            for (line, name) in crate_paths(&file) {
                if rank(&name).is_some_and(|used| used > rank(layer).unwrap()) {
                    violations.push(format!(
                        "{}:{line} ({layer}) uses the higher layer {name}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    for (line, name) in crate_paths(&src.join("metrics.rs")) {
        if rank(&name).is_some() {
            violations.push(format!("metrics.rs:{line} uses the layer {name}"));
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn nothing_lives_beside_the_layers_but_the_crate_root_and_metrics() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut loose: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| !LAYERS.contains(&name.as_str()))
        .collect();
    loose.sort();
    assert_eq!(loose, ["lib.rs", "main.rs", "metrics.rs"]);
}
