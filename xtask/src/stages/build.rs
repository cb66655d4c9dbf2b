//! Building a variant: configure (config.rs) and `make bzImage` out of tree,
//! with the full log kept and one progress line. A build is skipped when its
//! key (variant content, config fragments, toolchain) matches the last
//! successful build in the same directory.
//!
//! The kernel's C goes through ccache (xtask/ccache-cc), which can share its
//! results with other machines (ccache remote storage, `--cache-remote`) and
//! hand its misses to distcc workers (`--distcc`). Builds are reproducible
//! (fixed metadata, no absolute paths in Rust panic locations), so a kernel
//! built elsewhere, or through distcc, is byte-for-byte the local one.

use crate::stages::variant::Variant;
use crate::support::cache::{write_atomic, Key};
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use crate::support::provision::{bindgen_path, LIBCLANG_DIR, LLVM_SUFFIX, RUSTC};
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
        .arg(format!("CC={}", compiler()))
        .arg(format!("RUSTC={RUSTC}"))
        .arg(format!("HOSTRUSTC={RUSTC}"))
        .arg(format!("BINDGEN={}", bindgen_path().display()))
        .env("LIBCLANG_PATH", LIBCLANG_DIR)
        // Fixed build metadata: identical sources give identical objects, so
        // ccache hits across variants and runs.
        .env("KBUILD_BUILD_TIMESTAMP", "2023-05-01")
        .env("KBUILD_BUILD_USER", "patverify")
        .env("KBUILD_BUILD_HOST", "patverify")
        // A rebuild in the same directory would otherwise count up (#2, #3…).
        .env("KBUILD_BUILD_VERSION", "1")
        // Rust panic locations embed source paths: make them relative, so
        // the image does not depend on where the cache lives.
        .env("KRUSTFLAGS", remap_flags(tree, out))
}

fn remap_flags(tree: &Path, out: &Path) -> String {
    let mut flags = std::env::var("KRUSTFLAGS").unwrap_or_default();
    for dir in [tree, out] {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        flags.push_str(&format!(" --remap-path-prefix={}/=", dir.display()));
    }
    flags.trim().to_string()
}

/// How this machine's compiles are shared beyond it.
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// ccache remote storage (`redis://HOST:PORT`, `http://…`): every
    /// machine pointed at it reuses what any of them compiled.
    pub cache_remote: Option<String>,
    /// distcc hosts (DISTCC_HOSTS syntax): ccache's misses compile there.
    pub distcc: Option<String>,
}

impl Sharing {
    /// Checks the flags before anything runs.
    pub fn check(&self) -> Result<()> {
        if let Some(url) = &self.cache_remote {
            const SCHEMES: [&str; 5] = ["redis://", "redis+unix:", "http://", "https://", "file:"];
            if !SCHEMES.iter().any(|s| url.starts_with(s)) {
                return Err(fail(
                    Kind::Setup,
                    format!("--cache-remote {url:?}: not a ccache remote storage URL (redis://HOST:PORT, redis+unix:PATH, http://HOST/PATH or file:DIR)"),
                ));
            }
        }
        if let Some(hosts) = &self.distcc {
            if distcc_slots(hosts) == 0 {
                return Err(fail(
                    Kind::Setup,
                    format!(
                        "--distcc {hosts:?}: no hosts (DISTCC_HOSTS syntax: HOST[:PORT][/LIMIT] …)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parallel make jobs: one per core here, or with distcc, one per slot
    /// of all its hosts (what `-j` distcc's manual recommends), whichever is more.
    pub fn jobs(&self) -> usize {
        let local = local_jobs();
        self.distcc
            .as_deref()
            .map_or(local, |hosts| local.max(distcc_slots(hosts)))
    }
}

/// make's -j on this machine alone: one per core, and one more.
pub fn local_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// How many compile jobs a DISTCC_HOSTS list takes at once: `HOST/N` is N,
/// a host without a limit 4 (distcc's default), `localhost` 2; options
/// after a comma (`,lzo`, `,cpp`) and `--randomize` do not count.
pub fn distcc_slots(hosts: &str) -> usize {
    hosts
        .split_whitespace()
        .filter(|h| !h.starts_with("--"))
        .map(|host| {
            let host = host.split(',').next().unwrap_or(host);
            match host.split_once('/') {
                Some((_, limit)) => limit.parse().unwrap_or(4),
                None if host == "localhost" => 2,
                None => 4,
            }
        })
        .sum()
}

/// The wrapper script (xtask/ccache-cc) installed in the cache by
/// `use_ccache_in`; without it, builds run clang directly.
static CCACHE_WRAPPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn compiler() -> String {
    match CCACHE_WRAPPER.get() {
        Some(wrapper) => format!("{} clang{LLVM_SUFFIX}", wrapper.display()),
        None => format!("clang{LLVM_SUFFIX}"),
    }
}

/// The lines of a failed build log that say what failed (compiler errors,
/// make's "Error" lines), at most `max`.
pub fn error_lines(log: &str, max: usize) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error:")
                || lower.contains("error[")
                || lower.contains("*** ")
                || lower.contains("undefined reference")
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
    /// What ccache did during this build (None when reused).
    pub ccache: Option<CcacheStats>,
}

/// ccache's counters (`ccache --print-stats`); a build's own are the
/// difference of two readings around it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CcacheStats {
    /// Compiles answered from a cache (local or remote).
    pub hits: u64,
    /// Of those, answered by the remote storage.
    pub remote_hits: u64,
    pub misses: u64,
    /// Remote storage errors and timeouts (an unreachable server).
    pub remote_errors: u64,
}

impl CcacheStats {
    /// The counters of the ccache the builds use now.
    pub fn read() -> CcacheStats {
        let (_, text) = Command::new("ccache")
            .arg("--print-stats")
            .output_quiet()
            .unwrap_or_default();
        CcacheStats::parse(&text)
    }

    fn parse(text: &str) -> CcacheStats {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once('\t')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok())?
                })
                .unwrap_or(0)
        };
        CcacheStats {
            hits: get("direct_cache_hit") + get("preprocessed_cache_hit"),
            remote_hits: get("remote_storage_hit"),
            misses: get("cache_miss"),
            remote_errors: get("remote_storage_error") + get("remote_storage_timeout"),
        }
    }

    pub fn since(self, before: CcacheStats) -> CcacheStats {
        CcacheStats {
            hits: self.hits.saturating_sub(before.hits),
            remote_hits: self.remote_hits.saturating_sub(before.remote_hits),
            misses: self.misses.saturating_sub(before.misses),
            remote_errors: self.remote_errors.saturating_sub(before.remote_errors),
        }
    }

    pub fn hit_rate(self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / total as f64
        }
    }
}

impl std::fmt::Display for CcacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ccache {} hits ({} remote) / {} misses = {:.0} %",
            self.hits,
            self.remote_hits,
            self.misses,
            self.hit_rate()
        )?;
        if self.remote_errors > 0 {
            write!(
                f,
                ", {} remote storage errors (is the server reachable?)",
                self.remote_errors
            )?;
        }
        Ok(())
    }
}

/// The versions a kernel build depends on besides its sources.
pub fn toolchain_id() -> String {
    let v = |p: &str| crate::support::provision::version_output(Path::new(p));
    format!(
        "{}|{}|{}",
        v(RUSTC),
        v(&format!("clang{LLVM_SUFFIX}")),
        crate::support::provision::version_output(&bindgen_path())
    )
}

pub fn build(
    variant: &Variant,
    fragments: &[PathBuf],
    toolchain: &str,
    jobs: usize,
) -> Result<Built> {
    let mut key = Key::new("build-v4");
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
        eprintln!(
            "{}: kernel already built ({}), reusing it",
            variant.name,
            bzimage.display()
        );
        return Ok(Built {
            bzimage,
            build_dir,
            reused: true,
            config_time: Duration::ZERO,
            build_time: Duration::ZERO,
            ccache: None,
        });
    }
    let _ = std::fs::remove_file(&stamp);
    let config_log = build_dir.join("config.log");
    let _ = std::fs::remove_file(&config_log);
    let started = std::time::Instant::now();
    crate::stages::config::configure(&variant.tree, &build_dir, fragments, &config_log).map_err(|e| {
        if e.to_string().contains("is not clean") {
            fail(Kind::Setup, format!("{}: the kernel tree has in-tree build output; run `make mrproper` in it (or use --rev) — log {}", variant.name, config_log.display()))
        } else {
            e
        }
    })?;
    let config_time = started.elapsed();

    let log = build_dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    let stats_before = CcacheStats::read();
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
        return Err(fail(
            Kind::Build,
            format!("make succeeded but left no {}", bzimage.display()),
        ));
    }
    check_payload(&build_dir).map_err(|e| fail(Kind::Build, format!("{}: {e}", variant.name)))?;
    write_atomic(&stamp, &key)?;
    let ccache = CcacheStats::read().since(stats_before);
    eprintln!(
        "{}: built in {:.0} s, {ccache}",
        variant.name,
        out.elapsed.as_secs_f64()
    );
    Ok(Built {
        bzimage,
        build_dir,
        reused: false,
        config_time,
        build_time: out.elapsed,
        ccache: Some(ccache),
    })
}

/// Points ccache at the harness's cache for every later `make` (and at the
/// remote storage and distcc hosts of `sharing`). Paths are hashed relative
/// to the cache root so variant trees share entries.
/// Called once at start-up, before any thread is spawned.
pub fn use_ccache_in(cache: &crate::support::cache::Cache, sharing: &Sharing) -> Result<()> {
    let bin = cache.root.join("bin");
    let wrapper = install_script(&bin, "ccache-cc", include_str!("../../ccache-cc"))?;
    let distcc_prefix = install_script(&bin, "distcc-cc", include_str!("../../distcc-cc"))?;
    let _ = CCACHE_WRAPPER.set(wrapper);
    std::env::set_var("CCACHE_DIR", cache.root.join("ccache"));
    std::env::set_var("CCACHE_BASEDIR", &cache.root);
    std::env::set_var("CCACHE_NOHASHDIR", "true");
    std::env::set_var(
        "CCACHE_SLOPPINESS",
        "time_macros,include_file_mtime,include_file_ctime",
    );
    // Depend mode: on a miss, no extra preprocessor run (the kernel's
    // -Wp,-MMD output names the headers), which keeps cold builds cheap.
    std::env::set_var("CCACHE_DEPEND", "true");
    // ccache hashes a -fmacro-prefix-map by its replacement only and paths
    // relative to the base dir, so entries made in preprocessor mode (the
    // first harness versions), whose __FILE__ strings say "../src/…", were
    // served to depend-mode builds that would say "…": right code, other
    // bytes. A namespace of our own keeps those entries out, so the same
    // content gives the same image wherever and however it is compiled.
    std::env::set_var("CCACHE_NAMESPACE", "patverify-2");
    match &sharing.cache_remote {
        Some(url) => std::env::set_var("CCACHE_REMOTE_STORAGE", url),
        // Only what the flag (or PATVERIFY_CACHE_REMOTE) says: a remote
        // from the user's ccache.conf must not change a run silently.
        None => std::env::set_var("CCACHE_REMOTE_STORAGE", ""),
    }
    match &sharing.distcc {
        Some(hosts) => {
            std::env::set_var("CCACHE_PREFIX", &distcc_prefix);
            std::env::set_var("DISTCC_HOSTS", hosts);
        }
        None => std::env::remove_var("CCACHE_PREFIX"),
    }
    Ok(())
}

/// Writes one of the compiler wrapper scripts into `bin` (when changed).
fn install_script(bin: &Path, name: &str, script: &str) -> Result<PathBuf> {
    let path = bin.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(script) {
        std::fs::create_dir_all(bin)?;
        write_atomic(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

/// Checks that the bzImage carries this build's compressed vmlinux: its
/// payload (boot protocol 2.08+: `payload_offset`/`payload_length` in the
/// setup header) must be byte-for-byte the vmlinux.bin.* the build made.
/// Guards against any cache serving a stale piggy.o.
pub fn check_payload(build_dir: &Path) -> Result<()> {
    let image = std::fs::read(build_dir.join("arch/x86/boot/bzImage"))?;
    let payload = bzimage_payload(&image).ok_or_else(|| {
        fail(
            Kind::Build,
            "the bzImage has no readable payload (setup header too old or truncated)",
        )
    })?;
    let compressed = build_dir.join("arch/x86/boot/compressed");
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&compressed)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinux.bin."))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    candidates.sort();
    let Some((_, newest)) = candidates.pop() else {
        return Err(fail(
            Kind::Build,
            format!(
                "no compressed kernel (vmlinux.bin.*) in {}",
                compressed.display()
            ),
        ));
    };
    if std::fs::read(&newest)? != payload {
        return Err(fail(
            Kind::Build,
            format!("the bzImage does not carry this build's kernel ({} differs from its payload): a stale object was reused; remove {} and re-run", newest.display(), build_dir.display()),
        ));
    }
    Ok(())
}

/// The compressed kernel inside a bzImage, located by its setup header.
pub fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    if image.get(0x202..0x206)? != b"HdrS"
        || u16::from_le_bytes(image.get(0x206..0x208)?.try_into().ok()?) < 0x208
    {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    image.get(start..start + u32_at(0x24c)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_lines_that_say_what_failed() {
        let log = "  CC      mm/mmap.o\nmm/mmap.c:12:1: error: expected ';'\n  CC      mm/x.o\nmake[3]: *** [scripts/Makefile.build:229: mm/mmap.o] Error 1\n  LD vmlinux\n";
        assert_eq!(
            error_lines(log, 10),
            [
                "mm/mmap.c:12:1: error: expected ';'",
                "make[3]: *** [scripts/Makefile.build:229: mm/mmap.o] Error 1"
            ]
        );
        assert_eq!(error_lines(log, 1).len(), 1);
    }

    fn fake_bzimage(payload: &[u8], version: u16) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512 + 100 + payload.len() + 50];
        image[0x1f1] = 4;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image[5 * 512 + 100..5 * 512 + 100 + payload.len()].copy_from_slice(payload);
        image
    }

    #[test]
    fn finds_the_payload_of_a_bzimage() {
        let image = fake_bzimage(b"\xfd7zXZ payload", 0x20f);
        assert_eq!(bzimage_payload(&image), Some(&b"\xfd7zXZ payload"[..]));
        assert_eq!(
            bzimage_payload(&fake_bzimage(b"x", 0x207)),
            None,
            "boot protocol before 2.08 has no payload fields"
        );
        assert_eq!(bzimage_payload(&image[..5 * 512 + 104]), None, "truncated");
        assert_eq!(bzimage_payload(b"not a kernel"), None);
    }

    #[test]
    fn a_bzimage_carrying_another_kernel_is_refused() {
        let dir = crate::support::cache::scratch("payload");
        let compressed = dir.join("arch/x86/boot/compressed");
        std::fs::create_dir_all(&compressed).unwrap();
        std::fs::write(compressed.join("vmlinux.bin.xz"), b"this build").unwrap();
        std::fs::write(
            dir.join("arch/x86/boot/bzImage"),
            fake_bzimage(b"this build", 0x20f),
        )
        .unwrap();
        check_payload(&dir).unwrap();
        std::fs::write(
            dir.join("arch/x86/boot/bzImage"),
            fake_bzimage(b"other build", 0x20f),
        )
        .unwrap();
        let err = check_payload(&dir).unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            Kind::Build.exit_code()
        );
        assert!(
            err.to_string()
                .contains("does not carry this build's kernel"),
            "{err}"
        );
    }

    #[test]
    fn the_compiler_wrapper_bypasses_ccache_for_incbin_sources() {
        let dir = crate::support::cache::scratch("ccache-cc");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // A fake ccache that says it ran; the "compiler" is `echo`.
        std::fs::write(bin.join("ccache"), "#!/bin/sh\necho ccache \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("ccache"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.join("piggy.S"), ".incbin \"vmlinux.bin.xz\"\n").unwrap();
        std::fs::write(dir.join("plain.c"), "int x;\n").unwrap();
        let wrapper = variant_repo_file("xtask/ccache-cc");
        let run = |source: &str| {
            let out = std::process::Command::new("sh")
                .arg(&wrapper)
                .args(["echo", "-c", source])
                .current_dir(&dir)
                .env(
                    "PATH",
                    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
                )
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run("piggy.S"), "-c piggy.S\n");
        assert_eq!(run("plain.c"), "ccache echo -c plain.c\n");
    }

    #[test]
    fn distcc_host_lists_size_the_jobs() {
        assert_eq!(distcc_slots("127.0.0.1:3632/8"), 8);
        assert_eq!(distcc_slots("a/6 b c,lzo localhost"), 6 + 4 + 4 + 2);
        assert_eq!(distcc_slots("--randomize w1/3,lzo w2/5"), 8);
        assert_eq!(distcc_slots("  "), 0);
        let sharing = Sharing {
            distcc: Some("w1/40".into()),
            ..Sharing::default()
        };
        assert_eq!(sharing.jobs(), 40);
        assert!(sharing.check().is_ok());
    }

    #[test]
    fn sharing_flags_are_checked_before_anything_runs() {
        let bad_url = Sharing {
            cache_remote: Some("127.0.0.1:6379".into()),
            ..Sharing::default()
        };
        let err = bad_url.check().unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            Kind::Setup.exit_code()
        );
        assert!(err.to_string().contains("redis://HOST:PORT"), "{err}");
        let no_hosts = Sharing {
            distcc: Some(" ".into()),
            ..Sharing::default()
        };
        assert!(no_hosts
            .check()
            .unwrap_err()
            .to_string()
            .contains("no hosts"));
        let good = Sharing {
            cache_remote: Some("redis://127.0.0.1:6379".into()),
            distcc: Some("127.0.0.1/4".into()),
        };
        assert!(good.check().is_ok());
    }

    #[test]
    fn ccache_counters_of_one_build() {
        let before =
            CcacheStats::parse("cache_miss\t10\ndirect_cache_hit\t5\nremote_storage_hit\t0\n");
        let after = CcacheStats::parse(
            "cache_miss\t10\ndirect_cache_hit\t95\npreprocessed_cache_hit\t5\nremote_storage_hit\t90\nremote_storage_read_hit\t180\nremote_storage_timeout\t1\n",
        );
        let build = after.since(before);
        assert_eq!(
            build,
            CcacheStats {
                hits: 95,
                remote_hits: 90,
                misses: 0,
                remote_errors: 1
            }
        );
        assert_eq!(build.hit_rate(), 100.0);
        let line = build.to_string();
        assert!(
            line.starts_with("ccache 95 hits (90 remote) / 0 misses = 100 %"),
            "{line}"
        );
        assert!(line.contains("1 remote storage errors"), "{line}");
    }

    #[test]
    fn rust_paths_are_remapped_relative_to_tree_and_build() {
        let flags = remap_flags(
            Path::new("/c/variants/k/src"),
            Path::new("/c/variants/k/build-1"),
        );
        assert!(flags.ends_with("--remap-path-prefix=/c/variants/k/src/= --remap-path-prefix=/c/variants/k/build-1/="), "{flags}");
    }

    fn variant_repo_file(path: &str) -> PathBuf {
        crate::stages::variant::repo_dir().join(path)
    }
}
