//! A compile cache for the kernel's Rust, which ccache cannot take (the
//! kernel calls rustc with `--sysroot=/dev/null`, and neither ccache nor
//! sccache caches that). `make RUSTC="xtask rustc-cache REAL-RUSTC"` runs
//! every rustc call through `run`: a compile whose outputs are all named
//! (`--emit=KIND=PATH`) is looked up by its inputs, anything else (`--version`,
//! `--print sysroot`, …) runs the real rustc.
//!
//! How a compile is keyed, in two steps as ccache's direct mode: the command
//! line (the tree and build paths replaced by placeholders — the harness
//! remaps them out of the objects too, so the output does not depend on
//! them), the contents of every file an argument names (target spec, `@`
//! response files), the crates in each `-L` directory, the real rustc's
//! version and the environment rustc reads (`OBJTREE`, `RUST_MODFILE`)
//! select a manifest; the manifest lists, per earlier compile, the source
//! files its dep-info named with their hashes. When every one still hashes
//! the same, the outputs are copied back (the dep-info with this build's
//! paths); otherwise rustc runs and its result is added.

use crate::support::cache::{sha256_hex, Key};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment the harness gives the wrapper (`Kbuild::make`).
pub const CACHE_ENV: &str = "PATVERIFY_RUSTC_CACHE";
pub const TREE_ENV: &str = "PATVERIFY_TREE";
pub const OUT_ENV: &str = "PATVERIFY_OUT";

/// Runs `real_rustc` with `args`, or copies the outputs of an identical
/// earlier compile; returns rustc's exit code.
pub fn run(real_rustc: &Path, args: &[OsString]) -> Result<i32> {
    match Places::from_env() {
        Some(places) => run_in(&places, real_rustc, args),
        None => exec(real_rustc, args, Path::new(".")),
    }
}

fn run_in(places: &Places, real_rustc: &Path, args: &[OsString]) -> Result<i32> {
    let Some(outputs) = named_outputs(args) else {
        return exec(real_rustc, args, &places.cwd);
    };
    let key = command_key(real_rustc, args, places)?;
    let dir = places.store.join(&key);
    if let Some(hit) = find_hit(&dir, places) {
        restore(&dir.join(&hit), &outputs, places)?;
        return Ok(0);
    }
    let code = exec(real_rustc, args, &places.cwd)?;
    if code == 0 {
        // A failure to store is not the build's failure: it only costs a
        // later hit.
        let _ = store(&dir, &outputs, places);
    }
    Ok(code)
}

fn exec(real_rustc: &Path, args: &[OsString], dir: &Path) -> Result<i32> {
    let status = std::process::Command::new(real_rustc)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {}", real_rustc.display()))?;
    Ok(status.code().unwrap_or(1))
}

/// Where the store is and which paths are this build's.
struct Places {
    store: PathBuf,
    tree: String,
    out: String,
    cwd: PathBuf,
}

impl Places {
    fn from_env() -> Option<Places> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let trim = |p: String| p.trim_end_matches('/').to_string();
        Some(Places {
            store: PathBuf::from(var(CACHE_ENV)?),
            tree: trim(var(TREE_ENV)?),
            out: trim(var(OUT_ENV)?),
            cwd: std::env::current_dir().ok()?,
        })
    }

    /// This build's paths as placeholders (longest first: the build
    /// directory may sit beside the tree, never inside it, but be safe).
    fn normalize(&self, text: &str) -> String {
        let mut pairs = [(&self.tree, "@TREE@"), (&self.out, "@OUT@")];
        pairs.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        pairs.iter().fold(text.to_string(), |t, (path, mark)| {
            t.replace(path.as_str(), mark)
        })
    }

    fn localize(&self, text: &str) -> String {
        text.replace("@TREE@", &self.tree)
            .replace("@OUT@", &self.out)
    }

    fn absolute(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cwd.join(path)
        }
    }
}

/// `--emit=KIND=PATH` outputs, by kind; None when rustc would also write
/// files the cache cannot name (`-o`, `--emit` without a path).
fn named_outputs(args: &[OsString]) -> Option<Vec<(String, String)>> {
    let mut outputs = Vec::new();
    for arg in args {
        let arg = arg.to_str()?;
        if arg.starts_with("-o") {
            return None;
        }
        if let Some(emit) = arg.strip_prefix("--emit=") {
            for part in emit.split(',') {
                let (kind, path) = part.split_once('=')?;
                outputs.push((kind.to_string(), path.to_string()));
            }
        }
    }
    (!outputs.is_empty()).then_some(outputs)
}

/// The command's key: rustc, the normalized arguments, the files they name,
/// the crates rustc may load, and the environment it reads.
fn command_key(real_rustc: &Path, args: &[OsString], places: &Places) -> Result<String> {
    let mut key = Key::new("rustc-cache-v1");
    key.add(crate::support::provision::version_output(real_rustc));
    let mut previous = String::new();
    for arg in args {
        let arg = arg.to_string_lossy();
        if previous == "-L" {
            add_crates(&mut key, &places.absolute(&arg))?;
        }
        previous = arg.to_string();
        key.add(places.normalize(&arg));
        // The file an argument names (`@rustc_cfg`, `--target=x.json`, the
        // source): its content, not only its name. Not the outputs
        // (`--emit=obj=x.o`): an earlier build's would change the key.
        let named = arg.strip_prefix('@').unwrap_or(&arg);
        let named = named.rsplit_once('=').map_or(named, |(_, v)| v);
        let path = places.absolute(named);
        if !arg.starts_with("--emit=") && path.is_file() {
            key.add(std::fs::read(&path).unwrap_or_default());
        }
        match arg.strip_prefix("-L") {
            Some(dir) if !dir.is_empty() => {
                add_crates(&mut key, &places.absolute(dir.trim_start_matches('=')))?
            }
            _ => {}
        }
    }
    for name in ["OBJTREE", "RUST_MODFILE"] {
        let value = std::env::var(name).unwrap_or_default();
        key.add(name).add(places.normalize(&value));
    }
    Ok(key.hex())
}

/// The crates a `-L` directory offers (`lib*.rmeta`, `.rlib`, `.so`).
fn add_crates(key: &mut Key, dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut crates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("lib") && [".rmeta", ".rlib", ".so"].iter().any(|x| name.ends_with(x))
        })
        .collect();
    crates.sort();
    for path in crates {
        key.add_file(&path)?;
    }
    Ok(())
}

/// One earlier compile of the same command: its source files and hashes,
/// the environment variables its code read (`env!`) and their values, and
/// where its outputs are.
#[derive(Serialize, Deserialize)]
struct Entry {
    deps: Vec<(String, String)>,
    #[serde(default)]
    env: Vec<(String, String)>,
    result: String,
}

/// A variable's value as the manifest keeps it (this build's paths as
/// placeholders).
fn env_value(name: &str, places: &Places) -> String {
    places.normalize(&std::env::var(name).unwrap_or_default())
}

fn manifest(dir: &Path) -> Vec<Entry> {
    std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The first earlier compile whose sources all hash as they do now.
fn find_hit(dir: &Path, places: &Places) -> Option<String> {
    for entry in manifest(dir) {
        let same = entry.deps.iter().all(|(path, hash)| {
            std::fs::read(places.localize(path)).is_ok_and(|bytes| sha256_hex(&bytes) == *hash)
        }) && entry
            .env
            .iter()
            .all(|(name, value)| env_value(name, places) == *value);
        if same && dir.join(&entry.result).is_dir() {
            return Some(entry.result);
        }
    }
    None
}

/// Copies the stored outputs into place (the dep-info with this build's paths).
fn restore(stored: &Path, outputs: &[(String, String)], places: &Places) -> Result<()> {
    for (kind, path) in outputs {
        let from = stored.join(kind);
        let to = places.absolute(path);
        if kind == "dep-info" {
            let text = std::fs::read_to_string(&from)?;
            std::fs::write(&to, places.localize(&text))?;
        } else {
            let tmp = to.with_extension("rustc-cache-tmp");
            std::fs::copy(&from, &tmp)?;
            std::fs::rename(&tmp, &to)?;
        }
    }
    Ok(())
}

/// The environment variables a dep-info file says the code read
/// (`# env-dep:NAME=VALUE` or `# env-dep:NAME`).
pub fn dep_info_env(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# env-dep:"))
        .map(|dep| {
            dep.split_once('=')
                .map_or(dep, |(name, _)| name)
                .to_string()
        })
        .collect()
}

/// The source files a dep-info file names (`target: dep dep …` lines).
pub fn dep_info_sources(text: &str) -> Vec<String> {
    let mut deps = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        for dep in rest.split_whitespace() {
            if !deps.iter().any(|d| d == dep) {
                deps.push(dep.to_string());
            }
        }
    }
    deps
}

/// Adds this compile's outputs and sources to the store.
fn store(dir: &Path, outputs: &[(String, String)], places: &Places) -> Result<()> {
    let dep_info = outputs
        .iter()
        .find(|(kind, _)| kind == "dep-info")
        .context("no dep-info: the sources are unknown")?;
    let dep_text = std::fs::read_to_string(places.absolute(&dep_info.1))?;
    let mut deps = Vec::new();
    for dep in dep_info_sources(&dep_text) {
        let path = places.absolute(&dep);
        let bytes = std::fs::read(&path)?;
        deps.push((
            places.normalize(&path.to_string_lossy()),
            sha256_hex(&bytes),
        ));
    }
    let env: Vec<(String, String)> = dep_info_env(&dep_text)
        .into_iter()
        .map(|name| {
            let value = env_value(&name, places);
            (name, value)
        })
        .collect();
    let mut result = Key::new("rustc-result");
    for (path, hash) in deps.iter().chain(&env) {
        result.add(path).add(hash);
    }
    let result = result.hex();
    let staged = crate::support::cache::Staged::new(&dir.join(&result))?;
    for (kind, path) in outputs {
        let from = places.absolute(path);
        if kind == "dep-info" {
            std::fs::write(staged.path().join(kind), places.normalize(&dep_text))?;
        } else {
            std::fs::copy(&from, staged.path().join(kind))?;
        }
    }
    staged.publish(&dir.join(&result))?;
    let _lock = crate::support::cache::lock_entry(&dir.join("manifest.json"))?;
    let mut entries = manifest(dir);
    entries.retain(|e| e.result != result);
    entries.push(Entry { deps, env, result });
    crate::support::cache::write_atomic(
        &dir.join("manifest.json"),
        serde_json::to_string(&entries)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_names_every_source_once() {
        let text = "/o/rust/kernel.o: /t/rust/kernel/lib.rs /t/rust/kernel/a.rs\n\n/t/rust/kernel/lib.rs:\n# env-dep:OBJTREE=/o\n/o/rust/libkernel.rmeta: /t/rust/kernel/lib.rs /o/rust/bindings_generated.rs\n";
        assert_eq!(
            dep_info_sources(text),
            [
                "/t/rust/kernel/lib.rs",
                "/t/rust/kernel/a.rs",
                "/o/rust/bindings_generated.rs"
            ]
        );
    }

    #[test]
    fn dep_info_names_the_environment_the_code_read() {
        let text = "a.o: a.rs\n# env-dep:OBJTREE=/o\n# env-dep:RUST_MODFILE\n";
        assert_eq!(dep_info_env(text), ["OBJTREE", "RUST_MODFILE"]);
    }

    #[test]
    fn only_compiles_with_every_output_named_are_cached() {
        let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
        assert_eq!(named_outputs(&args(&["--version"])), None);
        assert_eq!(
            named_outputs(&args(&["--emit=dep-info=a.d", "--emit=obj=a.o", "a.rs"])),
            Some(vec![
                ("dep-info".into(), "a.d".into()),
                ("obj".into(), "a.o".into())
            ])
        );
        assert_eq!(named_outputs(&args(&["--emit=obj", "a.rs"])), None);
        assert_eq!(named_outputs(&args(&["--emit=obj=a.o", "-o", "b"])), None);
    }

    /// A stand-in rustc: counts its runs, writes an object made of its
    /// source and a dep-info naming that source and an env-dep.
    fn fake_rustc(dir: &Path) -> PathBuf {
        let script = dir.join("rustc");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = --version ] && { echo rustc 0.0.0-fake; exit 0; }\necho run >> \"$(dirname \"$0\")/runs\"\nfor a; do case $a in --emit=obj=*) o=${a#--emit=obj=};; --emit=dep-info=*) d=${a#--emit=dep-info=};; *.rs) s=$a;; esac; done\ncat \"$s\" > \"$o\"\nprintf '%s: %s\\n# env-dep:OBJTREE\\n' \"$o\" \"$PWD/$s\" > \"$d\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn a_compile_of_the_same_sources_is_served_from_the_store() {
        let tmp = crate::support::cache::scratch("rustc-cache");
        let dir = tmp.path();
        let rustc = fake_rustc(dir);
        let runs = || std::fs::read_to_string(dir.join("runs")).map_or(0, |t| t.lines().count());
        let build = |name: &str, source: &str| -> (i32, String, String) {
            let out = dir.join(name);
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join("a.rs"), source).unwrap();
            let places = Places {
                store: dir.join("store"),
                tree: dir.join("tree").display().to_string(),
                out: out.display().to_string(),
                cwd: out.clone(),
            };
            let args: Vec<OsString> = ["--emit=dep-info=a.d", "--emit=obj=a.o", "a.rs"]
                .iter()
                .map(OsString::from)
                .collect();
            let code = run_in(&places, &rustc, &args).unwrap();
            let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
            (code, read("a.o"), read("a.d"))
        };
        assert_eq!(
            build("one", "fn a() {}"),
            (0, "fn a() {}".into(), build_dep(dir, "one"))
        );
        assert_eq!(runs(), 1);
        // Another build directory, the same source: served, the dep-info
        // naming this build's paths.
        assert_eq!(
            build("two", "fn a() {}"),
            (0, "fn a() {}".into(), build_dep(dir, "two"))
        );
        assert_eq!(runs(), 1, "the second compile ran rustc");
        // A changed source compiles again.
        assert_eq!(build("three", "fn b() {}").1, "fn b() {}");
        assert_eq!(runs(), 2);
    }

    fn build_dep(dir: &Path, name: &str) -> String {
        let out = dir.join(name);
        format!("{0}: {1}/a.rs\n# env-dep:OBJTREE\n", "a.o", out.display())
    }

    #[test]
    fn paths_of_this_build_become_placeholders_and_back() {
        let places = Places {
            store: PathBuf::from("/c"),
            tree: "/c/variants/k1/src".into(),
            out: "/c/variants/k1/build-b1".into(),
            cwd: PathBuf::from("/c/variants/k1/build-b1"),
        };
        let text = "--remap-path-prefix=/c/variants/k1/src/= /c/variants/k1/build-b1/rust/x.rs";
        let normal = places.normalize(text);
        assert_eq!(normal, "--remap-path-prefix=@TREE@/= @OUT@/rust/x.rs");
        assert_eq!(places.localize(&normal), text);
        assert_eq!(
            places.absolute("rust/a.o"),
            Path::new("/c/variants/k1/build-b1/rust/a.o")
        );
    }
}
