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

use crate::output::{self, Event};
pub use crate::stages::kbuild::{local_jobs, CcacheStats, Kbuild, Sharing};
use crate::stages::variant::Variant;
use crate::support::cache::{write_atomic, Key};
use crate::support::failure::{fail, Kind};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

#[derive(Clone)]
pub struct Built {
    pub bzimage: PathBuf,
    pub build_dir: PathBuf,
    pub reused: bool,
    pub config_time: Duration,
    pub build_time: Duration,
    /// What ccache did during this build (None when reused).
    pub ccache: Option<CcacheStats>,
}

impl Built {
    fn reused(bzimage: PathBuf, build_dir: PathBuf) -> Self {
        Built {
            bzimage,
            build_dir,
            reused: true,
            config_time: Duration::ZERO,
            build_time: Duration::ZERO,
            ccache: None,
        }
    }
}

pub fn build(
    kbuild: &Kbuild,
    variant: &Variant,
    fragments: &[PathBuf],
    toolchain: &str,
    jobs: usize,
) -> Result<Built> {
    let key = build_key(variant, fragments, toolchain)?;
    // Beside the variant's src/, one per configuration: every build sees its
    // sources as ../src, so ccache (CCACHE_BASEDIR at the cache root) shares
    // objects between variants and bisect steps, and another configuration
    // never clobbers a finished build.
    let build_dir = variant.tree.with_file_name(format!("build-{key}"));
    // Held until the build is made or found: a second run needing the same
    // kernel waits here, then reuses it.
    let _lock = crate::support::cache::lock_entry(&build_dir)?;
    std::fs::create_dir_all(&build_dir)?;
    let stamp = build_dir.join("patverify-build-key");
    let bzimage = build_dir.join("arch/x86/boot/bzImage");
    if bzimage.exists() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        output::emit(Event::BuildReused {
            variant: &variant.name,
        });
        return Ok(Built::reused(bzimage, build_dir));
    }
    let _ = std::fs::remove_file(&stamp);
    let kbuild = &kbuild.for_variant(variant.trusted);
    let config_time = configure(kbuild, variant, &build_dir, fragments, toolchain)?;
    let stats_before = kbuild.ccache_stats();
    let build_time = make_bzimage(kbuild, variant, &build_dir, jobs)?;
    write_atomic(&stamp, &key)?;
    let ccache = kbuild.ccache_stats().since(stats_before);
    output::emit(Event::Built {
        variant: &variant.name,
        took: build_time,
        ccache,
    });
    Ok(Built {
        bzimage,
        build_dir,
        reused: false,
        config_time,
        build_time,
        ccache: Some(ccache),
    })
}

/// Configures `build_dir` (or copies the `.config` made from the same
/// inputs); returns how long it took.
fn configure(
    kbuild: &Kbuild,
    variant: &Variant,
    build_dir: &Path,
    fragments: &[PathBuf],
    toolchain: &str,
) -> Result<Duration> {
    let config_log = build_dir.join("config.log");
    let _ = std::fs::remove_file(&config_log);
    let started = std::time::Instant::now();
    let reused = crate::stages::config::configure_once(
        kbuild,
        &variant.tree,
        build_dir,
        fragments,
        toolchain,
        &config_log,
    )?;
    if reused {
        output::emit(Event::ConfigReused {
            variant: &variant.name,
        });
    }
    Ok(started.elapsed())
}

/// What a build depends on: the variant's content, the toolchain, the
/// config fragments.
fn build_key(variant: &Variant, fragments: &[PathBuf], toolchain: &str) -> Result<String> {
    let mut key = Key::new("build-v4");
    key.add(&variant.key).add(toolchain);
    for fragment in fragments {
        key.add_file(fragment)?;
    }
    Ok(key.hex())
}

/// `make bzImage` in a configured `build_dir`, the log kept, the image
/// checked; returns how long make took.
fn make_bzimage(
    kbuild: &Kbuild,
    variant: &Variant,
    build_dir: &Path,
    jobs: usize,
) -> Result<Duration> {
    let log = build_dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    let out = kbuild
        .make(&variant.tree, build_dir)?
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
    let bzimage = build_dir.join("arch/x86/boot/bzImage");
    if !bzimage.exists() {
        return Err(fail(
            Kind::Build,
            format!("make succeeded but left no {}", bzimage.display()),
        ));
    }
    check_payload(build_dir).map_err(|e| fail(Kind::Build, format!("{}: {e}", variant.name)))?;
    Ok(out.elapsed)
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
        let tmp = crate::support::cache::scratch("payload");
        let dir = tmp.path();
        let compressed = dir.join("arch/x86/boot/compressed");
        std::fs::create_dir_all(&compressed).unwrap();
        std::fs::write(compressed.join("vmlinux.bin.xz"), b"this build").unwrap();
        std::fs::write(
            dir.join("arch/x86/boot/bzImage"),
            fake_bzimage(b"this build", 0x20f),
        )
        .unwrap();
        check_payload(dir).unwrap();
        std::fs::write(
            dir.join("arch/x86/boot/bzImage"),
            fake_bzimage(b"other build", 0x20f),
        )
        .unwrap();
        let err = check_payload(dir).unwrap_err();
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
}
