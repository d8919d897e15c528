//! The layering of `server/src` (README.md, "Architecture", "Layers of `server/src`"): every
//! top-level module sits in one layer and imports only from its own layer or the ones below,
//! and the top-level modules import each other without a cycle. The test reads every
//! `server/src/**/*.rs`, collects its `crate::X` paths (and `super::` paths that climb to the
//! crate root), and names file, line and import of each offending one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. Mirrored in README.md; a new top-level module must be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    ("basics", &["basics", "config"]),
    ("store", &["store"]),
    (
        "domain",
        &[
            "metrics",
            "keys",
            "budget",
            "ratelimit",
            "ssrf",
            "sessions",
            "devices",
            "peers",
            "node",
            "oblivious",
            "accounts",
            "auth",
            "delivery",
            "forward",
            "bounce",
        ],
    ),
    (
        "workers and edge",
        &["relay", "gateway", "api", "acme", "admin"],
    ),
    ("start-up", &["server", "init", "main", "lib"]),
];

/// The layer index of a top-level module.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// The top-level module a file belongs to and its module path (`store/writer/tests.rs` is
/// `["store", "writer", "tests"]`).
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The imports in one file: (line number, first segment after the crate root, the line,
/// whether it was reached through `super::`).
fn imports(rel: &str, text: &str) -> Vec<(usize, String, String, bool)> {
    let depth = module_path(rel).len();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            // `sealpost_server::` is another crate; `crate::` must start a path.
            let before = rest[..at].chars().next_back();
            let after = &rest[at + "crate::".len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for name in first_segments(after) {
                out.push((i + 1, name, code.to_string(), false));
            }
        }
        // `super::super::x` that climbs out of the file's top-level module.
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            let before = rest[..at].chars().next_back();
            let mut after = &rest[at..];
            let mut ups = 0;
            while let Some(r) = after.strip_prefix("super::") {
                ups += 1;
                after = r;
            }
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if depth > 0 && ups >= depth {
                for name in first_segments(after) {
                    out.push((i + 1, name, code.to_string(), true));
                }
            }
        }
    }
    // One report per module per line, however often the line names it.
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}

/// The first path segment(s) after `crate::`: one name, or each name of a `{a, b::c}` group.
fn first_segments(after: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = after.strip_prefix('{') {
        let mut names = Vec::new();
        let mut level = 0;
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => break,
                '}' => level -= 1,
                ',' if level == 0 => start = true,
                c if c.is_whitespace() => {}
                _ if start => {
                    start = false;
                    names.push(ident(&group[i..]));
                }
                _ => {}
            }
        }
        names.retain(|n| !n.is_empty() && n != "self");
        names
    } else {
        let n = ident(after);
        if n.is_empty() { vec![] } else { vec![n] }
    }
}

/// Every layering violation in `files` (path relative to `src/`, text), one line each.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    let present: BTreeSet<String> = files
        .iter()
        .map(|(rel, _)| module_path(rel)[0].clone())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let from = module_path(rel)[0].clone();
        let Some(from_layer) = layer_of(&from) else {
            bad.push(format!(
                "src/{rel}: top-level module `{from}` has no layer; add it to LAYERS in \
                 server/tests/layering.rs and to the table in README.md"
            ));
            continue;
        };
        for (line, to, code, via_super) in imports(rel, text) {
            // A `super::` path counted from the file's depth may really end in an inline
            // module (`mod tests`): only a name that is a top-level module counts.
            if to == from || (via_super && !present.contains(&to)) {
                continue;
            }
            let Some(to_layer) = layer_of(&to) else {
                bad.push(format!(
                    "src/{rel}:{line}: imports `{to}`, a module without a layer: {code}"
                ));
                continue;
            };
            graph.entry(from.clone()).or_default().insert(to.clone());
            if to_layer > from_layer {
                bad.push(format!(
                    "src/{rel}:{line}: `{from}` ({}) imports `{to}` from the layer above ({}): {code}",
                    LAYERS[from_layer].0, LAYERS[to_layer].0
                ));
            }
        }
    }
    for (_, mods) in LAYERS {
        for m in *mods {
            if !present.contains(&m.to_string()) {
                bad.push(format!("LAYERS names `{m}`, which is not a module of src/"));
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        bad.push(format!(
            "the top-level modules import each other in a cycle: {}",
            cycle.join(" -> ")
        ));
    }
    bad
}

/// A cycle in the module graph, as its modules with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push((rel, text));
        }
    }
}

#[test]
fn server_modules_import_only_from_their_layer_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(files.len() > 20, "read only {} files", files.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

/// Every line of a library file (all of `src/` but the binary's `main.rs`) that mentions
/// `anyhow`: the library's entry points return typed errors; only the binary prints a chain.
fn anyhow_in_library(files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (rel, text) in files {
        if rel == "main.rs" {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if line.to_ascii_lowercase().contains("anyhow") {
                bad.push(format!("src/{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn only_the_binary_uses_anyhow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(files.iter().any(|(rel, _)| rel == "server.rs"), "read src/");
    let bad = anyhow_in_library(&files);
    assert!(
        bad.is_empty(),
        "anyhow in library code (return a typed error instead):\n{}",
        bad.join("\n")
    );
}

#[test]
fn anyhow_outside_main_is_named_with_file_and_line() {
    let files = vec![
        file("main.rs", "fn main() -> anyhow::Result<()> { Ok(()) }\n"),
        file("store/rocks.rs", "//! Rocks.\n\nuse anyhow::Context;\n"),
    ];
    assert_eq!(
        anyhow_in_library(&files),
        vec!["src/store/rocks.rs:3: use anyhow::Context;"]
    );
}

#[test]
fn the_readme_table_lists_every_module_in_its_layer() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    for (layer, mods) in LAYERS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {layer} |")))
            .unwrap_or_else(|| panic!("README.md has no row `| {layer} |` in its layer table"));
        for m in *mods {
            let m = if *m == "lib" || *m == "main" {
                format!("{m}.rs")
            } else {
                m.to_string()
            };
            assert!(
                row.contains(&format!("`{m}`")),
                "README.md's row for layer {layer} does not name `{m}`: {row}"
            );
        }
    }
}

/// Every line of a domain file that names the HTTP edge's types: the domain returns its own
/// errors (`delivery::DeliveryError`, `ratelimit::RateLimited`, `StoreError`, ...) and only
/// `api/` turns them into `ApiError` and status codes.
fn http_in_domain(files: &[(String, String)]) -> Vec<String> {
    let domain = LAYERS
        .iter()
        .find(|(name, _)| *name == "domain")
        .map(|(_, mods)| *mods)
        .unwrap_or_default();
    let mut bad = Vec::new();
    for (rel, text) in files {
        if !domain.contains(&module_path(rel)[0].as_str()) {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if ["ApiError", "StatusCode", "hyper::"]
                .iter()
                .any(|w| code.contains(w))
            {
                bad.push(format!("src/{rel}:{}: {code}", i + 1));
            }
        }
    }
    bad
}

#[test]
fn the_domain_returns_no_http_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(files.iter().any(|(rel, _)| rel == "node.rs"), "read src/");
    let bad = http_in_domain(&files);
    assert!(
        bad.is_empty(),
        "HTTP types in the domain (return a domain error; map it in api/):\n{}",
        bad.join("\n")
    );
}

#[test]
fn http_in_the_domain_is_named_with_file_and_line() {
    let files = vec![
        file(
            "node.rs",
            "//! ApiError is the edge's.\nuse crate::api::ApiError;\n",
        ),
        file(
            "api/error.rs",
            "pub enum ApiError {}\nuse hyper::StatusCode;\n",
        ),
        file("delivery.rs", "fn f() -> hyper::StatusCode { todo!() }\n"),
    ];
    assert_eq!(
        http_in_domain(&files),
        vec![
            "src/node.rs:2: use crate::api::ApiError;",
            "src/delivery.rs:1: fn f() -> hyper::StatusCode { todo!() }",
        ]
    );
}

fn file(rel: &str, text: &str) -> (String, String) {
    (rel.to_string(), text.to_string())
}

/// Every module in LAYERS, empty, so that only the files a case adds matter.
fn all_modules() -> Vec<(String, String)> {
    LAYERS
        .iter()
        .flat_map(|(_, mods)| mods.iter())
        .map(|m| file(&format!("{m}.rs"), ""))
        .collect()
}

#[test]
fn an_upward_import_is_named_with_file_and_line() {
    let mut files = all_modules();
    files.retain(|(rel, _)| rel != "node.rs");
    files.push(file(
        "node.rs",
        "//! The node.\n\nuse crate::store::Store;\nuse crate::relay::Job;\n",
    ));
    let bad = violations(&files);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(
        bad[0].starts_with("src/node.rs:4: `node` (domain) imports `relay`"),
        "{}",
        bad[0]
    );
    assert!(bad[0].ends_with("use crate::relay::Job;"), "{}", bad[0]);
}

#[test]
fn grouped_nested_and_super_paths_count() {
    let mut files = all_modules();
    files.push(file(
        "store/writer/tests.rs",
        "use super::super::rocks::X;\nfn f() { super::super::super::api::g(); }\n",
    ));
    files.push(file(
        "basics/clock.rs",
        "use crate::{config::Config, node::{Node, now}};\n// crate::server is only a comment\n",
    ));
    let bad = violations(&files);
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(bad[0].starts_with("src/store/writer/tests.rs:2: `store` (store) imports `api`"));
    assert!(bad[1].starts_with("src/basics/clock.rs:1: `basics` (basics) imports `node`"));
}

#[test]
fn a_cycle_within_one_layer_is_named() {
    let mut files = all_modules();
    files.retain(|(rel, _)| rel != "node.rs" && rel != "peers.rs");
    files.push(file("node.rs", "use crate::peers::Peers;\n"));
    files.push(file("peers.rs", "impl crate::node::Node {}\n"));
    let bad = violations(&files);
    assert_eq!(
        bad,
        vec!["the top-level modules import each other in a cycle: node -> peers -> node"]
    );
}

#[test]
fn a_module_without_a_layer_is_named() {
    let mut files = all_modules();
    files.push(file("fresh.rs", ""));
    files.push(file("api/mod.rs", "use crate::fresh::Thing;\n"));
    let bad = violations(&files);
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(bad[0].contains("`fresh` has no layer"), "{}", bad[0]);
    assert!(
        bad[1].starts_with("src/api/mod.rs:1: imports `fresh`"),
        "{}",
        bad[1]
    );
}
