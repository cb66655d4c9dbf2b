//! The guest's initramfs: the static `/init` from init/ (built with the
//! host's cargo, glibc linked statically) and a /dev/console node, written as
//! a newc cpio archive directly (no root needed for the device node).

use crate::model::kselftest::{KselftestResult, Suite};
use crate::stages::build::{Built, Kbuild};
use crate::stages::kselftest;
use crate::stages::variant::Variant;
use crate::support::cache::Cache;
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds init/ as a static binary and returns its path.
pub fn build_init() -> Result<PathBuf> {
    let repo = crate::support::repo_dir();
    let target_dir = repo.join("target/guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // A separate target dir: static RUSTFLAGS must not invalidate the host build.
    Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "patverify-init",
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .dir(&repo)
        .run()
        .context("cannot build the guest /init (init/)")?;
    let init = target_dir.join(GUEST_TARGET).join("release/patverify-init");
    anyhow::ensure!(
        is_static_elf(&std::fs::read(&init)?),
        "{} is not a static executable",
        init.display()
    );
    Ok(init)
}

/// True for an ELF executable without a PT_INTERP program header.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|t| t != PT_INTERP))
}

enum Entry<'a> {
    Dir(&'a str),
    CharDev(&'a str, u32, u32),
    File(&'a str, &'a [u8]),
}

/// A newc ("070701") cpio archive of `entries`.
fn cpio(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match entry {
            Entry::Dir(name) => push(ino, name, 0o040755, (0, 0), &[]),
            Entry::CharDev(name, major, minor) => push(ino, name, 0o020600, (*major, *minor), &[]),
            Entry::File(name, data) => push(ino, name, 0o100755, (0, 0), data),
        }
    }
    push(0, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// Writes the initramfs holding `init` to `dest`.
pub fn write(init: &Path, dest: &Path) -> Result<()> {
    write_with(init, dest, &[])
}

/// The same, with `programs` (name, file) in /kselftest for `/init` to run
/// after the report.
pub fn write_with(init: &Path, dest: &Path, programs: &[(String, PathBuf)]) -> Result<()> {
    let init_bytes = std::fs::read(init)?;
    let dir = patverify_protocol::KSELFTEST_DIR.trim_start_matches('/');
    let mut contents = Vec::new();
    for (name, file) in programs {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        contents.push((format!("{dir}/{name}"), bytes));
    }
    let mut entries = vec![
        Entry::Dir("dev"),
        Entry::CharDev("dev/console", 5, 1),
        Entry::Dir("debug"),
        Entry::File("init", &init_bytes),
    ];
    if !contents.is_empty() {
        entries.push(Entry::Dir(dir));
    }
    entries.extend(
        contents
            .iter()
            .map(|(name, bytes)| Entry::File(name, bytes)),
    );
    crate::support::cache::write_atomic(dest, cpio(&entries))
}

/// What a variant's guest starts from.
#[derive(Clone)]
pub struct Initramfs {
    pub path: PathBuf,
    /// The selftests in it (`--kselftest`), as built.
    kselftests: Option<(Suite, std::sync::Arc<kselftest::Built>)>,
}

impl Initramfs {
    /// What the selftests add to a boot's time limit: each one's own limit.
    pub fn kselftest_seconds(&self) -> u64 {
        self.kselftests.as_ref().map_or(0, |(_, built)| {
            built.programs.len() as u64 * patverify_protocol::KSELFTEST_SECONDS
        })
    }

    /// The selftests' rows from a boot's console.
    pub fn kselftest_results(&self, console: &str) -> Vec<KselftestResult> {
        match &self.kselftests {
            Some((suite, programs)) => kselftest::results(*suite, programs, console),
            None => Vec::new(),
        }
    }
}

/// The initramfs each variant boots with, in `out_dir`: one for all, or
/// with a selftest `suite` one per variant carrying the selftests built
/// from its tree.
pub fn of_each(
    kbuild: &Kbuild,
    cache: &Cache,
    out_dir: &Path,
    suite: Option<Suite>,
    variants: &[Variant],
    built: &[Built],
) -> Result<Vec<Initramfs>> {
    let init = build_init()?;
    let Some(suite) = suite else {
        let path = out_dir.join("initramfs.cpio");
        write(&init, &path)?;
        let shared = Initramfs {
            path,
            kselftests: None,
        };
        return Ok(variants.iter().map(|_| shared.clone()).collect());
    };
    let mut each = Vec::new();
    for (v, b) in variants.iter().zip(built) {
        let kbuild = kbuild.for_variant(v.trusted);
        let config = b.build_dir.join(".config");
        let programs = kselftest::build(&kbuild, cache, suite, &v.tree, &config)?;
        let path = out_dir.join(format!("initramfs-{}.cpio", v.name));
        write_with(&init, &path, &programs.programs)?;
        each.push(Initramfs {
            path,
            kselftests: Some((suite, std::sync::Arc::new(programs))),
        });
    }
    Ok(each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_newc_and_aligned() {
        let archive = cpio(&[Entry::Dir("dev"), Entry::File("init", b"abc")]);
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("TRAILER!!!"));
        // The file header records its size (3) and name length ("init\0" = 5).
        let init_header = text.find("init\0").unwrap() - 110;
        assert_eq!(&text[init_header + 54..init_header + 62], "00000003");
        assert_eq!(&text[init_header + 94..init_header + 102], "00000005");
    }

    #[test]
    fn cpio_is_readable_by_cpio_tool() {
        // cpio(1) is a requirement of `cargo xtask test` (`setup --all`).
        assert!(
            Command::new("cpio").arg("--version").output_quiet().is_ok(),
            "cpio(1) is missing: run `cargo xtask setup --all`"
        );
        let dir = std::env::temp_dir().join(format!("patverify-cpio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.cpio"),
            cpio(&[Entry::Dir("dev"), Entry::File("init", b"hello")]),
        )
        .unwrap();
        let (ok, listing) = Command::new("sh")
            .arg("-c")
            .arg("cpio -it < a.cpio")
            .dir(&dir)
            .output_quiet()
            .unwrap();
        assert!(ok, "{listing}");
        assert!(
            listing.contains("dev") && listing.contains("init"),
            "{listing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn static_elf_check() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
    }
}
