//! Building a variant: configure (config.rs) and `make bzImage` out of tree,
//! with the full log kept and one progress line. A build is skipped when its
//! key (variant content, config fragments, toolchain) matches the last
//! successful build in the same directory.

use crate::cache::{write_atomic, Key};
use crate::failure::{fail, Kind};
use crate::proc::Command;
use crate::provision::{bindgen_path, LIBCLANG_DIR, LLVM_SUFFIX, RUSTC};
use crate::variant::Variant;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `make` for `tree` with output in `out`, using the verified toolchain:
/// clang/lld 19 (LLVM=-19), Debian's rustc and bindgen-cli 0.69.5, ccache.
pub fn make(tree: &Path, out: &Path) -> Command {
    Command::new("make")
        .arg("-C")
        .arg(tree)
        .arg(format!("O={}", out.display()))
        .arg(format!("LLVM={LLVM_SUFFIX}"))
        // ccache for the kernel's C only: HOSTCC doubles as the host Rust
        // linker, which cannot take a wrapper command.
        .arg(format!("CC=ccache clang{LLVM_SUFFIX}"))
        .arg(format!("RUSTC={RUSTC}"))
        .arg(format!("HOSTRUSTC={RUSTC}"))
        .arg(format!("BINDGEN={}", bindgen_path().display()))
        .env("LIBCLANG_PATH", LIBCLANG_DIR)
        // Fixed build metadata: identical sources give identical objects, so
        // ccache hits across variants and runs.
        .env("KBUILD_BUILD_TIMESTAMP", "2023-05-01")
        .env("KBUILD_BUILD_USER", "patverify")
        .env("KBUILD_BUILD_HOST", "patverify")
}

/// The lines of a failed build log that say what failed (compiler errors,
/// make's "Error" lines), at most `max`.
pub fn error_lines(log: &str, max: usize) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error:") || lower.contains("error[") || lower.contains("*** ") || lower.contains("undefined reference")
        })
        .take(max)
        .map(str::to_string)
        .collect()
}

pub struct Built {
    pub bzimage: PathBuf,
    pub build_dir: PathBuf,
    pub reused: bool,
    pub config_time: Duration,
    pub build_time: Duration,
}

/// The versions a kernel build depends on besides its sources.
pub fn toolchain_id() -> String {
    let v = |p: &str| crate::provision::version_output(Path::new(p));
    format!("{}|{}|{}", v(RUSTC), v(&format!("clang{LLVM_SUFFIX}")), crate::provision::version_output(&bindgen_path()))
}

pub fn build(variant: &Variant, fragments: &[PathBuf], toolchain: &str, jobs: usize) -> Result<Built> {
    let mut key = Key::new("build-v1");
    key.add(&variant.key).add(toolchain);
    for fragment in fragments {
        key.add_file(fragment)?;
    }
    let key = key.hex();
    // Beside the variant's src/, one per configuration: every build sees its
    // sources as ../src, so ccache (CCACHE_BASEDIR at the cache root) shares
    // objects between variants and bisect steps, and another configuration
    // never clobbers a finished build.
    let build_dir = variant.tree.with_file_name(format!("build-{key}"));
    std::fs::create_dir_all(&build_dir)?;
    let stamp = build_dir.join("patverify-build-key");
    let bzimage = build_dir.join("arch/x86/boot/bzImage");
    if bzimage.exists() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        eprintln!("{}: kernel already built ({}), reusing it", variant.name, bzimage.display());
        return Ok(Built { bzimage, build_dir, reused: true, config_time: Duration::ZERO, build_time: Duration::ZERO });
    }
    let _ = std::fs::remove_file(&stamp);
    let config_log = build_dir.join("config.log");
    let _ = std::fs::remove_file(&config_log);
    let started = std::time::Instant::now();
    crate::config::configure(&variant.tree, &build_dir, fragments, &config_log).map_err(|e| {
        if e.to_string().contains("is not clean") {
            fail(Kind::Setup, format!("{}: the kernel tree has in-tree build output; run `make mrproper` in it (or use --rev) — log {}", variant.name, config_log.display()))
        } else {
            e
        }
    })?;
    let config_time = started.elapsed();

    let log = build_dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    let out = make(&variant.tree, &build_dir)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .run_logged(&format!("build {}", variant.name), &log)?;
    if !out.ok {
        let errors = error_lines(&std::fs::read_to_string(&log).unwrap_or_default(), 15);
        return Err(fail(
            Kind::Build,
            format!(
                "{} kernel failed to build (full log: {}).\nerrors:\n{}\nlast lines:\n{}",
                variant.name,
                log.display(),
                errors.join("\n"),
                out.tail.join("\n")
            ),
        ));
    }
    if !bzimage.exists() {
        return Err(fail(Kind::Build, format!("make succeeded but left no {}", bzimage.display())));
    }
    write_atomic(&stamp, &key)?;
    Ok(Built { bzimage, build_dir, reused: false, config_time, build_time: out.elapsed })
}

/// Points ccache at the harness's cache for every later `make`. Paths are
/// hashed relative to the cache root so variant trees share entries.
/// Called once at start-up, before any thread is spawned.
pub fn use_ccache_in(cache: &crate::cache::Cache) {
    std::env::set_var("CCACHE_DIR", cache.root.join("ccache"));
    std::env::set_var("CCACHE_BASEDIR", &cache.root);
    std::env::set_var("CCACHE_NOHASHDIR", "true");
    std::env::set_var("CCACHE_SLOPPINESS", "time_macros,include_file_mtime,include_file_ctime");
    // Depend mode: on a miss, no extra preprocessor run (the kernel's
    // -Wp,-MMD output names the headers), which keeps cold builds cheap.
    std::env::set_var("CCACHE_DEPEND", "true");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_lines_that_say_what_failed() {
        let log = "  CC      mm/mmap.o\nmm/mmap.c:12:1: error: expected ';'\n  CC      mm/x.o\nmake[3]: *** [scripts/Makefile.build:229: mm/mmap.o] Error 1\n  LD vmlinux\n";
        assert_eq!(
            error_lines(log, 10),
            ["mm/mmap.c:12:1: error: expected ';'", "make[3]: *** [scripts/Makefile.build:229: mm/mmap.o] Error 1"]
        );
        assert_eq!(error_lines(log, 1).len(), 1);
    }
}
