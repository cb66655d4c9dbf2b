//! Nothing installed by hand: every external program the harness and its
//! scenarios run, and every system path they or the README's and docs/' examples name,
//! is either part of a bare Debian 12 machine with cargo, or provided by a
//! requirement in the provisioning table — which `cargo xtask test` (and
//! `setup --all`) installs whole, and `doctor` lists. A new scenario that
//! needs a package the table does not name fails here, not on a new
//! user's machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use xtask::support::provision;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a minimal Debian 12 (debootstrap minbase) has, plus what any
/// machine that builds with cargo has (cargo, git, gcc, libc6-dev).
const BASE_PROGRAMS: &[&str] = &[
    "apt-get", "cargo", "chroot", "cp", "diff", "dpkg", "du", "git", "mount", "setpriv", "sh",
    "tar", "true", "umount", "unshare", "useradd",
];

/// System paths every Debian 12 root has (or that the scenarios name to
/// be refused: a directory that is not a kernel tree).
const BASE_PATHS: &[&str] = &[
    "/bin/false",
    "/bin/sh",
    "/etc/passwd",
    "/etc/shadow",
    "/usr/sbin/nologin",
    "/usr/share",
    "/usr/src",
    "/var/tmp",
];

/// Paths below these are installed by packages; others (/proc, /dev, /tmp,
/// the made-up paths of unit tests and failure scenarios) are not.
const SYSTEM_PREFIXES: &[&str] = &[
    "/usr/", "/bin/", "/sbin/", "/etc/", "/lib/", "/opt/", "/var/",
];

/// The harness's and the scenarios' sources (not this file: its examples
/// and prefixes are not uses).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.ends_with(file!()) || path.file_name().is_some_and(|n| n == "provisioned.rs") {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal that follows each `opener` (whitespace allowed).
fn literals_after(text: &str, opener: &str) -> Vec<String> {
    text.match_indices(opener)
        .filter_map(|(at, _)| {
            let rest = text[at + opener.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// Programs started by name: `Command::new("x")`, `duct::cmd!("x", …)`,
/// `Server::start("x", …)`.
fn programs_in(text: &str) -> Vec<String> {
    ["Command::new(", "cmd!(", "cmd(", "Server::start("]
        .iter()
        .flat_map(|opener| literals_after(text, opener))
        .filter(|p| !p.contains('/') && !p.is_empty())
        .collect()
}

/// System paths named in `text`: in string literals (Rust) or in code
/// (the README's backtick spans and indented examples).
fn system_paths_in(text: &str) -> Vec<String> {
    let stop = |c: char| !(c.is_ascii_alphanumeric() || "._+-/".contains(c));
    // An absolute path starts a word; `{dir}/lib/…` is a relative one.
    let starts_word = |before: Option<char>| before.is_none_or(|c| " \t\n\"'`(=:,[".contains(c));
    SYSTEM_PREFIXES
        .iter()
        .flat_map(|prefix| {
            text.match_indices(prefix)
                .filter(|(at, _)| starts_word(text[..*at].chars().last()))
                .map(|(at, _)| {
                    let rest = &text[at..];
                    rest[..rest.find(stop).unwrap_or(rest.len())].to_string()
                })
        })
        .map(|p| p.trim_end_matches(['.', '/']).to_string())
        .filter(|p| p.matches('/').count() >= 2)
        // A placeholder (`/usr/src/linux-source-X.tar.xz`) names no file.
        .filter(|p| !p.contains("-X.") && !p.contains("/path/to/"))
        .collect()
}

/// The README's code: backtick spans and indented lines.
fn readme_code(readme: &str) -> String {
    let mut code = String::new();
    for line in readme.lines() {
        if line.starts_with("    ") {
            code += line;
            code.push('\n');
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    code += span;
                    code.push('\n');
                }
            }
        }
    }
    code
}

fn provided() -> BTreeSet<&'static str> {
    provision::requirements()
        .flat_map(|(_, _, provides)| provides.iter().copied())
        .collect()
}

fn covered(path: &str, provided: &BTreeSet<&str>) -> bool {
    BASE_PATHS.contains(&path)
        || provided
            .iter()
            .any(|p| p.starts_with('/') && (path == *p || path.starts_with(&format!("{p}/"))))
}

#[test]
fn every_program_the_harness_and_scenarios_run_is_provisioned() {
    let provided = provided();
    let mut files = Vec::new();
    rust_files(&repo().join("xtask/src"), &mut files);
    rust_files(&repo().join("xtask/tests"), &mut files);
    let mut unprovided = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for program in programs_in(&text) {
            if !BASE_PROGRAMS.contains(&program.as_str()) && !provided.contains(program.as_str()) {
                unprovided.insert(format!("{program} ({})", file.display()));
            }
        }
    }
    assert!(
        unprovided.is_empty(),
        "programs no requirement in xtask/src/support/provision.rs provides: {unprovided:?}"
    );
}

#[test]
fn every_system_path_the_scenarios_and_readme_name_is_provisioned() {
    let provided = provided();
    let mut texts = Vec::new();
    let mut files = Vec::new();
    rust_files(&repo().join("xtask/tests"), &mut files);
    rust_files(&repo().join("xtask/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests name made-up paths; what runs is above them.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        texts.push((file.display().to_string(), code.to_string()));
    }
    let pages = std::fs::read_dir(repo().join("docs")).unwrap().flatten();
    let docs = pages
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"));
    for page in std::iter::once(repo().join("README.md")).chain(docs) {
        let text = std::fs::read_to_string(&page).unwrap();
        texts.push((page.display().to_string(), readme_code(&text)));
    }
    let mut unprovided = BTreeSet::new();
    for (name, text) in &texts {
        for path in system_paths_in(text) {
            if !covered(&path, &provided) {
                unprovided.insert(format!("{path} ({name})"));
            }
        }
    }
    assert!(
        unprovided.is_empty(),
        "system paths no requirement in xtask/src/support/provision.rs provides: {unprovided:?}"
    );
}

#[test]
fn the_scans_find_what_they_are_for() {
    let text = "let x = Command::new(\"redis-server\");\nServer::start(\n \"distccd\", &a);\nduct::cmd!(\"tar\", \"-x\");\nlet k = \"/usr/src/linux-source-6.1.tar.xz\";";
    assert_eq!(programs_in(text), ["redis-server", "tar", "distccd"]);
    assert_eq!(system_paths_in(text), ["/usr/src/linux-source-6.1.tar.xz"]);
    let readme = "run `verify --kernel /usr/src/linux-source-X.tar.xz` or\n\n    cargo xtask verify --kernel /usr/src/linux-source-6.1.tar.xz\n";
    assert_eq!(
        system_paths_in(&readme_code(readme)),
        ["/usr/src/linux-source-6.1.tar.xz"]
    );
    let provided = provided();
    assert!(covered("/usr/src/linux-source-6.1.tar.xz", &provided));
    assert!(covered(
        "/usr/lib/rustlib/src/rust/library/core/src/lib.rs",
        &provided
    ));
    assert!(!covered("/usr/src/linux-source-6.6.tar.xz", &provided));
    assert!(!covered("/usr", &provided));
}

/// Under `cargo xtask test` everything is provisioned first: a requirement
/// that says it is present must really put on the machine what the table
/// says it provides (a wrong entry would let the scans above pass).
#[test]
fn what_a_present_requirement_provides_is_on_the_machine() {
    let path_dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([provision::cargo_bin_dir()])
            .collect();
    let on_machine = |thing: &str| {
        if thing.starts_with('/') {
            Path::new(thing).exists()
        } else {
            path_dirs.iter().any(|d| d.join(thing).is_file())
        }
    };
    let mut wrong = Vec::new();
    for (_, what, provides) in provision::requirements() {
        if !provision::is_present(what) {
            continue;
        }
        for thing in provides.iter().filter(|t| !on_machine(t)) {
            wrong.push(format!("{what}: {thing}"));
        }
    }
    assert!(wrong.is_empty(), "present, but not there: {wrong:?}");
}
