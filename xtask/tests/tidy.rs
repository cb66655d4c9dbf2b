//! Repository checks kept as tests (as rust-analyzer keeps its tidy checks):
//! formatting, clippy, the module's formatting, function length, and that
//! nothing cites a file outside the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[test]
fn host_crates_are_formatted() {
    let (ok, text) = run(&cargo(), &["fmt", "--all", "--check"]);
    assert!(ok, "run `cargo fmt`:\n{text}");
}

#[test]
fn host_crates_pass_clippy() {
    // A target directory of its own: the test binary's cargo holds the main one.
    let target = repo().join("target/tidy");
    let target = target.to_string_lossy();
    let args = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--target-dir",
        &target,
        "--",
        "-D",
        "warnings",
    ];
    let (ok, text) = run(&cargo(), &args);
    assert!(ok, "cargo clippy found problems:\n{text}");
}

#[test]
fn the_module_is_formatted() {
    let (ok, text) = run(
        "rustfmt",
        &["--edition", "2021", "--check", "module/patverify.rs"],
    );
    assert!(
        ok,
        "run `rustfmt --edition 2021 module/patverify.rs`:\n{text}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line after the item that starts at `start` (braces counted).
fn item_end(lines: &[&str], start: usize) -> usize {
    let (mut depth, mut opened) = (0i32, false);
    for (i, line) in lines.iter().enumerate().skip(start) {
        // A brace as a char literal is no block.
        let line = line.replace("'{'", "").replace("'}'", "");
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        opened |= line.contains('{');
        if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
            return i + 1;
        }
    }
    lines.len()
}

/// `(length, name)` of every function outside `#[cfg(test)]` items.
fn long_functions(text: &str, limit: usize) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("#[cfg(test)]") {
            i = item_end(&lines, i + 1);
            continue;
        }
        let signature = line
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ")
            .trim_start_matches("extern \"C\" ");
        if let Some(rest) = signature.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let length = item_end(&lines, i) - i;
            if length > limit {
                found.push((length, name));
            }
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_is_longer_than_60_lines() {
    let mut files = Vec::new();
    for dir in ["xtask/src", "xtask/tests", "init/src", "protocol/src"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (length, name) in long_functions(&text, 60) {
            long.push(format!("{} {name}: {length} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these functions:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_check_sees_functions_and_skips_tests() {
    let body = "    x();\n".repeat(61);
    let text = format!(
        "fn long() {{\n{body}}}\n#[cfg(test)]\nmod tests {{\n    fn also_long() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&text, 60), [(63, "long".to_string())]);
}

#[test]
fn nothing_cites_files_outside_the_repository() {
    let mut files = Vec::new();
    for dir in ["xtask", "init", "protocol", "module", "patches", "configs"] {
        let mut found = Vec::new();
        rust_files(&repo().join(dir), &mut found);
        files.extend(found);
    }
    for other in ["README.md", "module/helpers.c"] {
        files.push(repo().join(other));
    }
    files.extend(doc_pages());
    let patches = std::fs::read_dir(repo().join("patches")).unwrap().flatten();
    files.extend(patches.map(|e| e.path()));
    let tidy = Path::new(file!()).file_name().unwrap().to_owned();
    let outside = ["DESIGN.md", "../shared"];
    for file in files.iter().filter(|f| f.file_name() != Some(&tidy)) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for name in outside {
            assert!(
                !text.contains(name),
                "{} cites {name}, which is not in the repository",
                file.display()
            );
        }
    }
}

/// `stages::build`, `support::proc`, `record`…: the module a path under
/// xtask/src/ is (folders of stages, support and commands count per file).
fn module_of(rel: &Path) -> String {
    let name = rel.with_extension("").to_string_lossy().replace('/', "::");
    name.trim_end_matches("::mod").to_string()
}

/// The crate modules a source file uses, outside its tests.
fn uses_of(text: &str) -> std::collections::BTreeSet<String> {
    let text = text.split("#[cfg(test)]\n").next().unwrap_or(text);
    let mut uses = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let path: String = text[at + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let grouped = matches!(parts.first(), Some(&"stages" | &"support" | &"commands"));
        let depth = if grouped { 2 } else { 1 };
        if parts.len() >= depth {
            uses.insert(parts[..depth].join("::"));
        }
    }
    uses
}

#[test]
fn the_modules_import_each_other_without_cycles() {
    let src = repo().join("xtask/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = std::collections::BTreeMap::new();
    for file in files {
        let module = module_of(file.strip_prefix(&src).unwrap());
        let mut uses = uses_of(&std::fs::read_to_string(&file).unwrap());
        uses.remove(&module);
        graph.insert(module, uses);
    }
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        module: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

/// docs/*.md.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The targets of `[text](target)` links in a Markdown text.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            Some(rest[..rest.find(')')?].to_string())
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut broken = Vec::new();
    for page in std::iter::once(repo().join("README.md")).chain(doc_pages()) {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let Ok(linked_text) = std::fs::read_to_string(&linked) else {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            };
            let headings: Vec<String> = linked_text
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|h| anchor(h.trim_start_matches('#')))
                .collect();
            if !fragment.is_empty() && !headings.iter().any(|h| h == fragment) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
}

#[test]
fn the_link_check_sees_links_and_anchors() {
    assert_eq!(
        link_targets("see [a](docs/a.md) and [b](b.md#failure-modes)."),
        ["docs/a.md", "b.md#failure-modes"]
    );
    assert_eq!(anchor(" Failure modes"), "failure-modes");
    assert_eq!(anchor("What `verify` does"), "what-verify-does");
}

#[test]
fn the_readme_is_a_manual_of_at_most_250_lines() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move detail into docs/"
    );
    let first_screen: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        first_screen.contains("docs/layout.md"),
        "the code's layout must be reachable from the README's first screen"
    );
}

/// "MODULE uses USED" for each import `forbidden(module, used)` names.
fn imports_where(forbidden: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (file, rel) in host_sources() {
        let module = module_of(&rel);
        for used in uses_of(&std::fs::read_to_string(&file).unwrap()) {
            if forbidden(&module, &used) {
                found.push(format!("{module} uses {used}"));
            }
        }
    }
    found
}

/// The data the stages hand each other (the model, the record) and the
/// ground floor (support) sit below the stages and the commands: they never
/// import them, so a stage can change without the record or the support
/// code following it.
#[test]
fn the_data_and_the_ground_floor_sit_below_the_stages() {
    let upward = imports_where(|module, used| {
        let below =
            module.starts_with("model") || module == "record" || module.starts_with("support::");
        below
            && ["stages", "commands", "pipeline"]
                .iter()
                .any(|up| used.starts_with(up))
    });
    assert!(upward.is_empty(), "imports upward: {upward:?}");
}

/// The stages are the pipeline's steps: a stage never reaches up to the
/// pipeline that runs it or to a command.
#[test]
fn the_stages_sit_below_the_pipeline() {
    let upward = imports_where(|module, used| {
        module.starts_with("stages")
            && (used.starts_with("commands") || used.starts_with("pipeline"))
    });
    assert!(upward.is_empty(), "stages import upward: {upward:?}");
}

/// A command calls no other command: what two share sits below them.
#[test]
fn no_command_calls_another() {
    let calls = imports_where(|module, used| {
        module.strip_prefix("commands::").is_some_and(|command| {
            used.starts_with("commands") && !used.starts_with(&format!("commands::{command}"))
        })
    });
    assert!(calls.is_empty(), "commands calling commands: {calls:?}");
}

/// Every line a command shows goes through `output` (which a matrix job's
/// capture and `--verbose` rely on): printing macros only there, and in
/// `main.rs` for the Rust compile cache wrapper, which runs inside make.
#[test]
fn only_the_output_module_prints() {
    let mut printing = Vec::new();
    for (file, rel) in host_sources() {
        if rel == Path::new("output.rs") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let called = ["println!(", "eprintln!(", "print!(", "eprint!("]
                .iter()
                .any(|m| line.contains(m));
            if called && !line.trim_start().starts_with("//") {
                printing.push(format!("{}:{}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        printing.is_empty(),
        "print through crate::output instead: {printing:?}"
    );
}

/// The harness's sources under xtask/src: each file and its path there.
fn host_sources() -> Vec<(PathBuf, PathBuf)> {
    let src = repo().join("xtask/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().to_path_buf();
            (f, rel)
        })
        .collect()
}
