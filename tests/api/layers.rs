//! The layer rule of docs/design.md, checked over the source: every `crate::` and `super::`
//! path in `src/` (test modules aside), and every path a `mod.rs` starts with one of its own
//! children (`source::Source`), is an edge between modules (files); there is no cycle among
//! them, not even between the files of one folder (a `mod.rs` that uses its children does
//! not hold what they import back: that goes in a file of its own, e.g. `monitor/error.rs`),
//! and a top-level module only uses modules of its own layer or below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module uses only its own layer and the ones before it.
const LAYERS: &[&[&str]] = &[
    &[
        "keys",
        "clock",
        "timefmt",
        "config_error",
        "telemetry",
        "memory",
        "lenient",
        "glob",
        "billing",
        "bruteforce",
        "conn_trust",
        "sealed",
        "accounts",
    ],
    &["store", "auth"],
    &[
        "ledger",
        "keyadmin",
        "useradmin",
        "invites",
        "quota_requests",
        "gateway",
        "monitor",
        "alerts",
    ],
    &["config", "config_view", "state", "error", "extract"],
    &["api", "web"],
    &["app", "middleware", "listener", "wire"],
    &["cli"],
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`.
fn module_of(root: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The source without its `#[cfg(test)] mod tests { … }` (always the file's end here).
fn without_tests(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    }
}

/// The identifiers after `prefix`, e.g. `crate::a::b::{c, d}` → [`a::b::c`, `a::b::d`].
fn paths_after(src: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_owned();
        let after = &rest[path.len()..];
        if let Some(group) = after
            .strip_prefix("::{")
            .or_else(|| after.strip_prefix('{'))
        {
            let inner = &group[..group.find('}').unwrap_or(0)];
            for item in inner.split(',') {
                let item = item.trim().split([' ', ':']).next().unwrap_or("");
                if !item.is_empty() && item != "self" {
                    out.push(if path.is_empty() {
                        item.to_owned()
                    } else {
                        format!("{path}::{item}")
                    });
                }
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// The modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_children(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

fn graph() -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut fs = Vec::new();
    files(&root, &mut fs);
    let mods: BTreeMap<String, PathBuf> = fs
        .iter()
        .map(|p| (module_of(&root, p), p.clone()))
        .filter(|(m, _)| m != "lib" && m != "main")
        .collect();
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    // The longest module that is a prefix of `path`.
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|k| names.contains(k))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, p) in &mods {
        let src = std::fs::read_to_string(p).unwrap();
        let src = without_tests(&src);
        let parent: Vec<&str> = {
            let mut v: Vec<&str> = m.split("::").collect();
            v.pop();
            v
        };
        let mut targets: Vec<String> = paths_after(src, "crate::");
        for s in paths_after(src, "super::") {
            let mut full = parent.clone();
            full.push(&s);
            targets.push(full.join("::"));
        }
        for child in declared_children(src) {
            for s in paths_after(src, &format!("{child}::")) {
                targets.push(format!("{m}::{child}::{s}"));
            }
        }
        for t in targets {
            let Some(t) = resolve(&t) else { continue };
            if &t != m {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    (names, edges)
}

fn cycle_from(
    v: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    state: &mut BTreeMap<String, u8>,
    stack: &mut Vec<String>,
) -> Option<Vec<String>> {
    state.insert(v.to_owned(), 1);
    stack.push(v.to_owned());
    for w in edges.get(v).into_iter().flatten() {
        match state.get(w.as_str()) {
            Some(1) => {
                let at = stack.iter().position(|s| s == w).unwrap_or(0);
                let mut c = stack[at..].to_vec();
                c.push(w.clone());
                return Some(c);
            }
            Some(_) => {}
            None => {
                if let Some(c) = cycle_from(w, edges, state, stack) {
                    return Some(c);
                }
            }
        }
    }
    stack.pop();
    state.insert(v.to_owned(), 2);
    None
}

#[test]
fn src_modules_have_no_import_cycle_and_respect_the_layers() {
    let (names, edges) = graph();
    assert!(names.len() > 40, "found only {} modules", names.len());
    let mut state = BTreeMap::new();
    for v in &names {
        if !state.contains_key(v.as_str())
            && let Some(c) = cycle_from(v, &edges, &mut state, &mut Vec::new())
        {
            panic!("import cycle: {}", c.join(" → "));
        }
    }
    let layer_of = |m: &str| {
        let top = m.split("::").next().unwrap_or("");
        LAYERS
            .iter()
            .position(|l| l.contains(&top))
            .unwrap_or_else(|| panic!("module {top} is in no layer of LAYERS"))
    };
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if layer_of(to) > layer_of(from) {
                wrong.push(format!("{from} → {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports: {wrong:?}");
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let src = "use crate::a::{b, c::D};\nuse super::{x, y::Z};\nlet v = crate::e::f();\n";
    let got = paths_after(src, "crate::");
    assert!(
        got.contains(&"a::b".to_owned()) && got.contains(&"a::c".to_owned()),
        "{got:?}"
    );
    assert!(got.contains(&"e::f".to_owned()));
    assert_eq!(
        paths_after(src, "super::"),
        vec!["x", "y", ""]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(cycle_from("a", &edges, &mut BTreeMap::new(), &mut Vec::new()).is_some());
}
