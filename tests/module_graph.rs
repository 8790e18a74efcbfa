//! The shape of the house: `src/`'s top-level modules, in production code, import each
//! other without a cycle, so the tree reads bottom-up (leaves, settings, clients, sources,
//! the pipeline, the handler, the command line). A `use crate::x` that closes a loop fails
//! here with the loop named and the files that make each edge.
//!
//! The reading is textual: every `crate::<module>` path in a file, its `#[cfg(test)]`
//! tail and the simulators (`sim.rs`, the `local` harness) left out, since those exist for
//! the tests alone. Doc links count, as they are imports for a reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules: `src/x.rs` and `src/x/`, less the crate roots and `bin/`.
fn top_level_modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let is_dir = e.file_type().unwrap().is_dir();
            match (is_dir, name.strip_suffix(".rs")) {
                (true, _) if name != "bin" => Some(name),
                (false, Some(stem)) if !["lib", "main"].contains(&stem) => Some(stem.into()),
                _ => None,
            }
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a file: up to its unit tests.
fn production(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The top-level modules `text` names as `crate::<name>`, directly or in a `use crate::{…}`
/// group (only the group's first level).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// module → (module it imports → the files that do).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn graph() -> Graph {
    let modules = top_level_modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g = Graph::new();
    for file in files {
        let rel = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if !modules.contains(&top) || top == "local" || rel.ends_with("/sim.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for used in named_modules(production(&text)) {
            if used != top && modules.contains(&used) {
                g.entry(top.clone())
                    .or_default()
                    .entry(used)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one (depth-first, the path so far in `path`).
fn cycle_from(g: &Graph, start: &str, at: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    for next in g.get(at).into_iter().flat_map(|m| m.keys()) {
        if next == start {
            let mut c = path.clone();
            c.push(start.to_string());
            return Some(c);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(g, start, next, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn src_top_level_modules_import_each_other_without_a_cycle() {
    let g = graph();
    assert!(
        g.get("pipeline").is_some_and(|m| m.contains_key("source")),
        "the reader sees the pipeline's imports: {g:?}"
    );
    for start in g.keys() {
        if let Some(cycle) = cycle_from(&g, start, start, &mut vec![start.clone()]) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} in {:?}", w[0], w[1], g[&w[0]][&w[1]]))
                .collect();
            panic!(
                "import cycle {}:\n  {}",
                cycle.join(" -> "),
                edges.join("\n  ")
            );
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_nested_imports() {
    let text = "use crate::a::X;\nuse crate::{b::{c, d}, e};\nlet f = crate::f::g();\n#[cfg(test)]\nmod tests { use crate::z; }";
    let found = named_modules(production(text));
    assert_eq!(
        found,
        ["a", "b", "e", "f"].map(String::from).into_iter().collect()
    );
}

#[test]
fn settings_and_leaves_import_nothing_above_them() {
    let g = graph();
    let leaves = [
        "codec",
        "json",
        "model",
        "duration",
        "secret",
        "loopback",
        "net",
        "telemetry",
    ];
    for leaf in leaves {
        assert!(!g.contains_key(leaf), "{leaf} imports {:?}", g[leaf]);
    }
    let config: BTreeSet<&str> = g["config"].keys().map(String::as_str).collect();
    assert!(
        config.iter().all(|m| leaves.contains(m)),
        "config imports more than leaves: {config:?}"
    );
}
