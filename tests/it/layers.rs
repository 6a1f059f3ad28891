//! The crate's modules import downwards only: every `crate::` path in `src/` names a module of
//! a lower layer than its own, in the order `docs/ARCHITECTURE.md` writes down (its `layers`
//! block, highest first), and sibling files of a folder import one way. A module added to
//! `src/` without a place in that order fails here too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer of each top-level module: 0 is the bottom. Modules on one line share a layer and
/// may not import each other.
fn layer_order(architecture: &str) -> BTreeMap<String, usize> {
    let block = architecture
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/ARCHITECTURE.md has a ```layers block");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut layers = BTreeMap::new();
    for (k, line) in lines.iter().rev().enumerate() {
        for module in line.split_whitespace() {
            let old = layers.insert(module.to_string(), k);
            assert!(
                old.is_none(),
                "{module} is listed twice in the layers block"
            );
        }
    }
    layers
}

/// A source file's code without comments and without its `#[cfg(test)]` module (tests of
/// internals may reach across layers).
fn code_of(source: &str) -> String {
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    (source.lines())
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segments of the paths that follow `prefix` in `code` (`prefix` then `a::b` gives
/// `a`; `prefix` then `{a::X, b}` gives `a` and `b`). `$crate` paths (macro bodies, resolved
/// where the macro is used) are not imports of their file.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        let s = s.trim_start();
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        if code[..at].ends_with('$') || code[..at].ends_with(|c: char| c.is_alphanumeric()) {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

/// The top-level module each root re-export of `lib.rs` comes from (`pub use groups::Router`
/// makes `crate::Router` an import of `groups`).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let code = code_of(lib);
    let mut map = BTreeMap::new();
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or_default().trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// Every violation of the layering in `files` (path relative to `src/` → source).
fn violations(files: &BTreeMap<String, String>, architecture: &str) -> Vec<String> {
    let layers = layer_order(architecture);
    let reexports = root_reexports(files.get("lib.rs").map_or("", String::as_str));
    let mut found = Vec::new();
    let top_of = |path: &str| -> String {
        let first = path.split('/').next().unwrap_or_default();
        first.trim_end_matches(".rs").to_string()
    };

    let modules: BTreeSet<String> = files.keys().map(|p| top_of(p)).collect();
    for module in modules.iter().filter(|m| *m != "lib") {
        if !layers.contains_key(module) {
            found.push(format!("src/{module} has no layer in docs/ARCHITECTURE.md"));
        }
    }
    for listed in layers.keys() {
        if !modules.contains(listed) {
            found.push(format!("the layers block lists {listed}, which src/ lacks"));
        }
    }

    // Top-level modules: downwards only.
    for (path, source) in files.iter().filter(|(p, _)| *p != "lib.rs") {
        let own = top_of(path);
        let code = code_of(source);
        for name in first_segments(&code, "crate::") {
            let target = match reexports.get(&name) {
                Some(module) => module.clone(),
                None => name,
            };
            if target == own || !modules.contains(&target) {
                continue;
            }
            match (layers.get(&own), layers.get(&target)) {
                (Some(a), Some(b)) if b < a => {}
                (Some(_), Some(_)) => found.push(format!(
                    "src/{path} ({own}) imports {target}, which is not below it"
                )),
                _ => {}
            }
        }
    }

    // Sibling files of a folder (its `mod.rs` declares and re-exports them): no circle.
    let mut siblings: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (path, source) in files {
        let Some((folder, file)) = path.rsplit_once('/') else {
            continue;
        };
        let file = file.trim_end_matches(".rs").to_string();
        if file == "mod" {
            continue;
        }
        let code = code_of(source);
        let mut uses = first_segments(&code, "super::");
        uses.extend(first_segments(&code, &format!("crate::{folder}::")));
        let is_sibling = |n: &String| files.contains_key(&format!("{folder}/{n}.rs"));
        let uses: BTreeSet<String> = uses.into_iter().filter(is_sibling).collect();
        siblings.insert((folder.to_string(), file), uses);
    }
    for ((folder, file), uses) in &siblings {
        for used in uses {
            if reaches(&siblings, folder, used, file, &mut BTreeSet::new()) {
                found.push(format!(
                    "src/{folder}/{file}.rs imports {used}.rs, which imports it back"
                ));
            }
        }
    }
    found
}

/// Whether `from` reaches `to` through sibling imports in `folder`.
fn reaches(
    graph: &BTreeMap<(String, String), BTreeSet<String>>,
    folder: &str,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    if from == to {
        return true;
    }
    if !seen.insert(from.to_string()) {
        return false;
    }
    let next = graph.get(&(folder.to_string(), from.to_string()));
    next.into_iter()
        .flatten()
        .any(|n| reaches(graph, folder, n, to, seen))
}

/// Every `.rs` file under `dir`, keyed by its path relative to `root`.
fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn modules_import_downwards_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeMap::new();
    read_tree(&root.join("src"), &root.join("src"), &mut files);
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let found = violations(&files, &architecture);
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        found.join("\n")
    );
}

/// The check itself: it names an upward import, a circle of siblings, an import through a root
/// re-export, and a module without a layer; it ignores comments, `$crate` and test modules.
#[test]
fn the_layering_check_names_what_breaks_it() {
    let architecture = "```layers\nhigh\nmid other\nlow\n```\n";
    let file = |p: &str, s: &str| (p.to_string(), s.to_string());
    let clean: BTreeMap<String, String> = [
        file("lib.rs", "pub use low::Thing;\npub use mid::{A, B};"),
        file("low.rs", "// crate::high is only a comment\nmacro_rules! m { () => { $crate::high::X } }\n#[cfg(test)]\nmod tests { use crate::high; }"),
        file("mid/mod.rs", "mod a; mod b; use crate::low::Thing;"),
        file("mid/a.rs", "use super::b::X; use crate::Thing;"),
        file("mid/b.rs", "use crate::{low, error::E};"),
        file("other.rs", "use crate::low;"),
        file("high.rs", "use crate::{mid::A, other};\nuse crate::B;"),
    ]
    .into_iter()
    .collect();
    assert_eq!(violations(&clean, architecture), Vec::<String>::new());

    let broken = |p: &str, s: &str| {
        let mut files = clean.clone();
        files.insert(p.to_string(), s.to_string());
        violations(&files, architecture)
    };
    assert_eq!(
        broken("low.rs", "use crate::{mid::A};"),
        ["src/low.rs (low) imports mid, which is not below it"]
    );
    assert_eq!(
        broken("other.rs", "fn f() { crate::mid::a(); }"),
        ["src/other.rs (other) imports mid, which is not below it"]
    );
    assert_eq!(
        broken("low.rs", "use crate::A;"),
        ["src/low.rs (low) imports mid, which is not below it"]
    );
    assert_eq!(
        broken("mid/b.rs", "use super::a::Y;"),
        [
            "src/mid/a.rs imports b.rs, which imports it back",
            "src/mid/b.rs imports a.rs, which imports it back"
        ]
    );
    assert_eq!(
        broken("new.rs", ""),
        ["src/new has no layer in docs/ARCHITECTURE.md"]
    );
}
