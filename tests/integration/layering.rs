//! The layout's promises, checked on the source: the admin protocol is a leaf that only the
//! admin layer and the binary use, the snapshot knows neither the cutover nor the metrics,
//! and the modules import each other without a cycle, so every arrow points one way.
//!
//! An edge is any `crate::MODULE` written in code (comments are skipped), from the top-level
//! module of the file it is in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

fn importers_of<'g>(graph: &'g Graph, target: &str) -> Vec<&'g str> {
    graph
        .iter()
        .filter(|(_, to)| to.contains(target))
        .map(|(from, _)| from.as_str())
        .collect()
}

#[test]
fn only_the_admin_layer_speaks_the_admin_protocol() {
    let graph = graph();
    assert!(graph.contains_key("protocol"), "{graph:?}");
    assert_eq!(
        graph["protocol"],
        BTreeSet::from(["color".to_string()]),
        "the protocol depends on nothing of the daemon"
    );
    assert_eq!(importers_of(&graph, "protocol"), ["admin"]);
}

#[test]
fn the_snapshot_knows_neither_the_cutover_nor_the_metrics() {
    let graph = graph();
    for forbidden in ["cutover", "metrics", "switch", "server", "admin"] {
        assert!(
            !graph["records"].contains(forbidden),
            "records imports {forbidden}"
        );
    }
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let graph = graph();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit<'g>(
        graph: &'g Graph,
        module: &'g str,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            visit(graph, next, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(&graph, module, &mut Vec::new(), &mut done);
    }
}
