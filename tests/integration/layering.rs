//! The layout's promises, checked on the source: every module is on the layer list in
//! `src/lib.rs` and imports only modules above it there, so every arrow points one way (no
//! cycle can form); the admin protocol is a leaf that only the admin socket, the API and the watch page use; the
//! snapshot knows neither the cutover nor the metrics.
//!
//! An edge is any `crate::MODULE` written in code (comments and `#[cfg(test)]` modules are
//! skipped), from the top-level module of the file it is in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Files of `src/` that are not library modules.
const NOT_MODULES: [&str; 3] = ["lib", "main", "build_script"];

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each module's imports of other modules, read from the source.
fn graph_of(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if NOT_MODULES.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = without_test_modules(&text);
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

/// `text` without its `#[cfg(test)] mod NAME { ... }` blocks (braces counted outside
/// strings, chars and comments), so code after a test module still counts.
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let end = closing_brace(after, open).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The index just past the brace that closes the one at `open`.
fn closing_brace(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, open);
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i += text[i..].find('\n').unwrap_or(text.len() - i);
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'#' | b'"')) && !ident(bytes[i - 1]) => {
                let hashes = text[i + 1..].bytes().take_while(|&b| b == b'#').count();
                let close = format!("\"{}", "#".repeat(hashes));
                let body = i + 2 + hashes;
                i = body + text[body..].find(&close)? + close.len() - 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The layer list of the crate docs, ground first: the module named at column 13 of each
/// line of the ```text block under "# Layout".
fn layers_of(lib: &str) -> Vec<String> {
    let layout = lib
        .split("//! # Layout")
        .nth(1)
        .expect("src/lib.rs has a # Layout section");
    let block = layout
        .split("//! ```text\n")
        .nth(1)
        .and_then(|b| b.split("//! ```\n").next())
        .expect("the layout is a ```text block");
    block
        .lines()
        .map(|l| l.strip_prefix("//! ").unwrap_or(""))
        .filter_map(|l| {
            let rest = l.get(13..)?;
            (!rest.starts_with(' ')).then(|| rest.split_whitespace().next().unwrap_or(""))
        })
        .map(|m| m.trim_end_matches('/').trim_end_matches(".rs").to_string())
        .collect()
}

/// Every import that points down the list (or out of it), as `from -> to` lines.
fn downward(graph: &Graph, layers: &[String]) -> Vec<String> {
    let position = |m: &str| layers.iter().position(|l| l == m);
    let mut wrong = Vec::new();
    for (from, to) in graph {
        let Some(at) = position(from) else {
            wrong.push(format!("{from} is not on the layer list in src/lib.rs"));
            continue;
        };
        for target in to {
            match position(target) {
                Some(t) if t < at => {}
                Some(_) => wrong.push(format!("{from} -> {target} (listed below it)")),
                None => wrong.push(format!("{from} -> {target} (not on the list)")),
            }
        }
    }
    wrong
}

fn importers_of<'g>(graph: &'g Graph, target: &str) -> Vec<&'g str> {
    graph
        .iter()
        .filter(|(_, to)| to.contains(target))
        .map(|(from, _)| from.as_str())
        .collect()
}

#[test]
fn every_import_points_up_the_layer_list() {
    let src = src();
    let layers = layers_of(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let graph = graph_of(&src);
    let listed: BTreeSet<&String> = layers.iter().collect();
    let present: BTreeSet<&String> = graph.keys().collect();
    assert_eq!(
        listed, present,
        "the layer list names exactly the modules in src/"
    );
    let wrong = downward(&graph, &layers);
    assert!(
        wrong.is_empty(),
        "imports against the layer list:\n{}",
        wrong.join("\n")
    );
}

/// The check itself can fail: a module that imports one listed below it is caught.
#[test]
fn a_downward_import_is_caught() {
    let lib = "//! # Layout\n//! ```text\n//! foundation   clock.rs     time\n//! query        dns/         answers\n//!                           more words\n//! ```\n";
    let layers = layers_of(lib);
    assert_eq!(layers, ["clock", "dns"]);
    let mut graph = Graph::new();
    graph.insert("clock".into(), BTreeSet::from(["dns".to_string()]));
    graph.insert("dns".into(), BTreeSet::from(["clock".to_string()]));
    assert_eq!(
        downward(&graph, &layers),
        ["clock -> dns (listed below it)"]
    );
}

#[test]
fn only_the_admin_edges_speak_the_admin_protocol() {
    let graph = graph_of(&src());
    assert_eq!(
        graph["protocol"],
        BTreeSet::from(["color".to_string()]),
        "the protocol depends on nothing of the daemon"
    );
    assert_eq!(importers_of(&graph, "protocol"), ["admin", "api", "page"]);
}

#[test]
fn the_snapshot_knows_neither_the_cutover_nor_the_metrics() {
    let graph = graph_of(&src());
    for forbidden in ["cutover", "metrics", "switch", "server", "admin"] {
        assert!(
            !graph["records"].contains(forbidden),
            "records imports {forbidden}"
        );
    }
}
