//! The toolchain a kernel tree is built with, chosen from the tree's own
//! scripts/min-tool-version.sh among those the harness provisions from
//! Debian 12's packages: rustc-web (1.96, with bindgen-cli and clang 19) for
//! trees that take a current rustc (6.11+), and Debian's `rustc` 1.63 (with
//! its bindgen 0.60 and clang 14) unpacked into the cache for trees pinned to
//! an old one (Linux 6.1 pins 1.62; its scripts/rust_is_available.sh only
//! warns about a newer rustc, but its vendored `alloc` follows the pinned
//! compiler, so the nearest one is the one that builds).

use crate::support::failure::{fail, Kind};
use crate::support::provision;
use anyhow::Result;
use std::path::{Path, PathBuf};

type Version = (u32, u32, u32);

/// A Rust toolchain (rustc, bindgen and the clang whose libclang bindgen
/// uses, which must also compile the C: the kernel's flags and bindgen's
/// libclang must agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// Debian 12's `rustc` 1.63, `bindgen` 0.60 and clang 14, unpacked
    /// into the cache (`rustc` conflicts with the installed `rustc-web`).
    DebianRustc163,
    /// Debian 12's `rustc-web`, bindgen-cli 0.69.5 and clang 19.
    RustcWeb,
}

impl Toolchain {
    /// Oldest first: a tree gets the oldest one that meets its minimums.
    pub const ALL: [Toolchain; 2] = [Toolchain::DebianRustc163, Toolchain::RustcWeb];

    pub fn name(self) -> &'static str {
        match self {
            Toolchain::DebianRustc163 => "debian-rustc-1.63",
            Toolchain::RustcWeb => "rustc-web",
        }
    }

    /// rustc and bindgen versions, as provisioned.
    fn versions(self) -> (Version, Version) {
        match self {
            Toolchain::DebianRustc163 => ((1, 63, 0), (0, 60, 1)),
            Toolchain::RustcWeb => {
                let rustc = provision::version_output(Path::new(provision::RUSTC));
                (version_triple(&rustc).unwrap_or((1, 96, 0)), (0, 69, 5))
            }
        }
    }

    /// `LLVM=` for make: clang, lld and the LLVM tools of this version.
    pub fn llvm_suffix(self) -> &'static str {
        match self {
            Toolchain::DebianRustc163 => "-14",
            Toolchain::RustcWeb => provision::LLVM_SUFFIX,
        }
    }

    pub fn rustc(self, cache_root: &Path) -> PathBuf {
        match self {
            Toolchain::DebianRustc163 => provision::legacy_rust_dir(cache_root).join("bin/rustc"),
            Toolchain::RustcWeb => PathBuf::from(provision::RUSTC),
        }
    }

    pub fn bindgen(self, cache_root: &Path) -> PathBuf {
        match self {
            Toolchain::DebianRustc163 => provision::legacy_rust_dir(cache_root).join("bin/bindgen"),
            Toolchain::RustcWeb => provision::bindgen_path(),
        }
    }

    /// The libclang bindgen loads (`LIBCLANG_PATH`).
    pub fn libclang_dir(self, cache_root: &Path) -> PathBuf {
        match self {
            Toolchain::DebianRustc163 => {
                provision::legacy_rust_dir(cache_root).join("root/usr/lib/llvm-14/lib")
            }
            Toolchain::RustcWeb => PathBuf::from(provision::LIBCLANG_DIR),
        }
    }

    /// What a build with it depends on: the tools' own `--version` lines.
    pub fn id(self, cache_root: &Path) -> String {
        let v = |p: &Path| provision::version_output(p);
        format!(
            "{}|{}|{}|{}",
            self.name(),
            v(&self.rustc(cache_root)),
            v(Path::new(&format!("clang{}", self.llvm_suffix()))),
            v(&self.bindgen(cache_root))
        )
    }

    fn describe(self) -> String {
        let ((a, b, c), (x, y, z)) = self.versions();
        format!("{} (rustc {a}.{b}.{c}, bindgen {x}.{y}.{z})", self.name())
    }
}

/// The minimum version scripts/min-tool-version.sh gives for `tool`.
pub fn min_tool_version(script: &str, tool: &str) -> Option<String> {
    let mut lines = script.lines().map(str::trim);
    lines.find(|l| *l == format!("{tool})"))?;
    lines
        .next()?
        .strip_prefix("echo ")
        .map(|v| v.trim().to_string())
}

/// "1.62.0" → (1, 62, 0).
pub fn version_triple(text: &str) -> Option<(u32, u32, u32)> {
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The toolchain for a tree whose scripts/min-tool-version.sh is `script`
/// (`None`: the tree does not say, so the current one), or why none fits.
pub fn choose_for(script: Option<&str>) -> std::result::Result<Toolchain, String> {
    let Some(script) = script else {
        return Ok(Toolchain::RustcWeb);
    };
    let want = |tool| min_tool_version(script, tool).and_then(|v| version_triple(&v));
    let (Some(rustc), bindgen) = (want("rustc"), want("bindgen")) else {
        return Ok(Toolchain::RustcWeb);
    };
    let bindgen = bindgen.unwrap_or((0, 0, 0));
    if let Some(found) = Toolchain::ALL.into_iter().find(|t| {
        let (have_rustc, have_bindgen) = t.versions();
        have_rustc >= rustc && have_bindgen >= bindgen
    }) {
        return Ok(found);
    }
    let offered: Vec<String> = Toolchain::ALL.iter().map(|t| t.describe()).collect();
    let fmt = |(a, b, c): Version| format!("{a}.{b}.{c}");
    Err(format!(
        "this tree needs rustc ≥ {} and bindgen ≥ {} (scripts/min-tool-version.sh); the harness provisions {}: a newer Debian rustc-web would fit",
        fmt(rustc),
        fmt(bindgen),
        offered.join(" and ")
    ))
}

/// The toolchain for the tree at `tree` (exit 9 when none fits).
pub fn choose(tree: &Path) -> Result<Toolchain> {
    let script = std::fs::read_to_string(tree.join("scripts/min-tool-version.sh")).ok();
    choose_for(script.as_deref()).map_err(|why| fail(Kind::Toolchain, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_TOOLS_6_1: &str =
        "case \"$1\" in\nrustc)\n\techo 1.62.0\n\t;;\nbindgen)\n\techo 0.56.0\n\t;;\nesac\n";
    const MIN_TOOLS_6_12: &str = "rustc)\n\techo 1.78.0\n\t;;\nbindgen)\n\techo 0.65.1\n\t;;\n";

    #[test]
    fn reads_min_tool_versions() {
        assert_eq!(
            min_tool_version(MIN_TOOLS_6_1, "rustc").as_deref(),
            Some("1.62.0")
        );
        assert_eq!(
            min_tool_version(MIN_TOOLS_6_12, "bindgen").as_deref(),
            Some("0.65.1")
        );
        assert_eq!(
            version_triple("rustc 1.96.0 (ac68faa20 2026-05-25)"),
            Some((1, 96, 0))
        );
        assert_eq!(version_triple("bindgen 0.69.5"), Some((0, 69, 5)));
    }

    fn script(rustc: &str, bindgen: &str) -> String {
        format!("case \"$1\" in\nrustc)\n\techo {rustc}\n\t;;\nbindgen)\n\techo {bindgen}\n\t;;\nesac\n")
    }

    #[test]
    fn each_tree_gets_the_oldest_toolchain_that_meets_its_minimums() {
        // Linux 6.1 pins rustc 1.62.0 and bindgen 0.56.0.
        let linux_6_1 = script("1.62.0", "0.56.0");
        assert_eq!(choose_for(Some(&linux_6_1)), Ok(Toolchain::DebianRustc163));
        // Linux 6.12 wants rustc ≥ 1.78.0, bindgen ≥ 0.65.1.
        let linux_6_12 = script("1.78.0", "0.65.1");
        assert_eq!(choose_for(Some(&linux_6_12)), Ok(Toolchain::RustcWeb));
        // A tree without the script (or without Rust minimums): the current one.
        assert_eq!(choose_for(None), Ok(Toolchain::RustcWeb));
        assert_eq!(choose_for(Some("")), Ok(Toolchain::RustcWeb));
    }

    #[test]
    fn a_tree_no_toolchain_fits_names_what_would() {
        let why = choose_for(Some(&script("9.0.0", "0.70.0"))).unwrap_err();
        assert!(why.contains("rustc ≥ 9.0.0"), "{why}");
        assert!(
            why.contains("debian-rustc-1.63") && why.contains("rustc-web"),
            "{why}"
        );
        // bindgen alone can rule a toolchain out.
        let why = choose_for(Some(&script("1.62.0", "0.99.0"))).unwrap_err();
        assert!(why.contains("bindgen ≥ 0.99.0"), "{why}");
    }
}
