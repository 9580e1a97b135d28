//! The dependency rule of docs/architecture.md, checked on the source: every `crate::…` path in
//! a top-level module's code (comments aside) names a module of a strictly lower layer. So no
//! cycle can form between top-level modules, and no layer reaches up. A new edge that breaks the
//! rule fails here with the file and line that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom: a module may use only modules of lower layers. Keep in step with the
/// table in docs/architecture.md.
const LAYERS: &[&[&str]] = &[
    &["time", "sync", "random", "limits"],
    &["config", "error", "metrics"],
    &["storage", "machine", "tls", "redis"],
    &["queue"],
    &["shard", "http"],
    &["auth"],
    &["api"],
    &["settings", "preflight", "client"],
    &["server"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (doc comments included); string literals are rare enough
/// in `use` positions that a `//` inside one is not worth a tokenizer.
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Top-level modules named by `crate::x` in `code`, including `use crate::{x, y::{z, w}}` groups
/// (only the first name of each item at the group's own depth is a top-level module).
fn named_modules(code: &str, out: &mut BTreeSet<String>) {
    let ident =
        |s: &str| -> String { s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    _ if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
}

/// (from, to) → the first place that made the edge.
fn edges() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel.components().next().expect("a component").as_os_str().to_string_lossy();
        let from = top.trim_end_matches(".rs").to_owned();
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // A `use … {` group may span lines: join each statement before scanning it.
        let mut statement = String::new();
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            statement.push_str(code);
            if statement.contains("crate::{") && !statement.contains('}') {
                continue;
            }
            let mut named = BTreeSet::new();
            named_modules(&statement, &mut named);
            for to in named.into_iter().filter(|to| *to != from) {
                edges.entry((from.clone(), to)).or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
            }
            statement.clear();
        }
    }
    edges
}

#[test]
fn every_module_uses_only_lower_layers() {
    let edges = edges();
    assert!(edges.len() > 20, "the scan found too few edges to be reading the source: {edges:?}");
    let mut problems = Vec::new();
    for ((from, to), place) in &edges {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b < a => {}
            (None, _) => problems.push(format!("{from} is in no layer of LAYERS (used at {place})")),
            (_, None) => problems.push(format!("{to} is in no layer of LAYERS (used by {from} at {place})")),
            _ => problems.push(format!("{from} → {to} goes up or sideways, at {place}")),
        }
    }
    assert!(problems.is_empty(), "the layering is broken:\n{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_multi_line_groups_and_ignores_comments() {
    let mut named = BTreeSet::new();
    named_modules("use crate::{config::Config, http::{self, Shutdown}, shard};", &mut named);
    assert_eq!(named, BTreeSet::from(["config".into(), "http".into(), "shard".into()]));
    assert_eq!(code_of("let x = 1; // crate::api"), "let x = 1; ");
    assert_eq!(code_of("//! see [`crate::server`]"), "");
}
