//! The library's layering, checked on its sources: crates depend only on the layers below
//! them, and no module of a crate imports one that imports it back (issue 10).
//!
//! A module's imports are the `crate::m` and `super::m` paths outside comments and outside its
//! `#[cfg(test)] mod tests` (unit tests may use anything). Modules are the top-level ones of a
//! crate (`src/m.rs` or `src/m/`), which is the granularity at which circles hurt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vmt_tests::workspace_root;

/// The library crates, lowest layer first, with the vmt crates each may depend on.
const LAYERS: &[(&str, &[&str])] = &[
    ("formats", &[]),
    ("model", &["vmt-formats"]),
    ("swarm", &["vmt-formats"]),
    ("fs", &["vmt-formats"]),
    ("appliance", &["vmt-formats", "vmt-fs"]),
    (
        "runtime",
        &[
            "vmt-formats",
            "vmt-model",
            "vmt-swarm",
            "vmt-fs",
            "vmt-appliance",
        ],
    ),
];

#[test]
fn crates_depend_only_on_lower_layers() {
    for (dir, allowed) in LAYERS {
        let manifest = workspace_root().join("shared").join(dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let deps = text.split("[dev-dependencies]").next().unwrap();
        for line in deps.lines() {
            let name = line.split(['.', ' ', '=']).next().unwrap_or("");
            if name.starts_with("vmt-") {
                assert!(
                    allowed.contains(&name),
                    "{}: {name} is not a lower layer (allowed: {allowed:?})",
                    manifest.display()
                );
            }
        }
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut checked = 0;
    for (dir, _) in LAYERS {
        let src = workspace_root().join("shared").join(dir).join("src");
        let graph = module_graph(&src);
        assert!(graph.len() > 1, "{}: no modules found", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: import circle {}", src.display(), cycle.join(" -> "));
        }
        checked += graph.len();
    }
    assert!(checked > 40, "only {checked} modules seen");
}

/// Top-level module name of each source file, and the modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for f in walk(&path) {
                files.push((name.clone(), f));
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            files.push((name, path));
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for prefix in ["crate::", "super::"] {
                for (i, _) in line.match_indices(prefix) {
                    let rest = &line[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // `super::` inside a folder module means a sibling in that folder.
                    let nested = prefix == "super::" && path.parent() != Some(src);
                    if !nested && modules.contains(&name) && &name != module {
                        edges.insert(name);
                    }
                }
            }
        }
    }
    graph
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// A cycle of the graph, if it has one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        node: &'a str,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|&n| n == next).unwrap();
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(graph, next, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(c) = visit(graph, node, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    assert!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_none());
    let c = find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
}
