//! Kernel configuration: `tinyconfig`, then the `configs/` fragments merged
//! with the tree's own merge_config.sh, then `olddefconfig`, then a check
//! that every requested option survived.

use crate::stages::kbuild::Kbuild;
use crate::support::failure::{fail, Kind};
use crate::support::proc::{tail_lines, Command};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `CONFIG_NAME` → value (`y`, `m`, `n`, a number or a quoted string).
pub type Options = BTreeMap<String, String>;

/// Parses `.config` or fragment syntax; `# CONFIG_X is not set` means `n`.
pub fn parse(text: &str) -> Options {
    let mut options = Options::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    options.insert(name.to_string(), "n".to_string());
                }
            }
        } else if let Some((name, value)) = line.split_once('=') {
            if name.starts_with("CONFIG_") {
                options.insert(name.to_string(), value.to_string());
            }
        }
    }
    options
}

#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub wanted: String,
    pub got: Option<String>,
}

/// The requested options whose final value differs (an unset option and
/// `n` are the same thing).
pub fn dropped(requested: &Options, actual: &Options) -> Vec<Dropped> {
    requested
        .iter()
        .filter_map(|(name, wanted)| {
            let got = actual.get(name).cloned();
            let got_or_n = got.as_deref().unwrap_or("n");
            (got_or_n != wanted).then(|| Dropped {
                name: name.clone(),
                wanted: wanted.clone(),
                got,
            })
        })
        .collect()
}

/// The fragments in `configs/`, in name order.
pub fn fragments(configs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir)
        .with_context(|| format!("cannot read {}", configs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "config"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no *.config fragments in {}",
        configs_dir.display()
    );
    Ok(files)
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

/// Before Linux 6.11 (minimum rustc 1.78) the kernel's Rust support was
/// pinned to one rustc; since then it takes that version or newer.
const FIRST_UNPINNED_RUSTC: (u32, u32, u32) = (1, 78, 0);

/// Whether the installed rustc and bindgen can build this tree's Rust, from
/// the tree's own scripts/min-tool-version.sh. `None` when they can.
pub fn toolchain_mismatch(script: &str, rustc: &str, bindgen: &str) -> Option<String> {
    let have_rustc = version_triple(rustc)?;
    let have_bindgen = version_triple(bindgen)?;
    let want_rustc = min_tool_version(script, "rustc").and_then(|v| version_triple(&v))?;
    let fmt = |(a, b, c): (u32, u32, u32)| format!("{a}.{b}.{c}");
    if want_rustc < FIRST_UNPINNED_RUSTC && have_rustc != want_rustc {
        return Some(format!(
            "this tree's Rust support is pinned to rustc {} exactly (scripts/min-tool-version.sh); this machine has rustc {}",
            fmt(want_rustc),
            fmt(have_rustc)
        ));
    }
    if have_rustc < want_rustc {
        return Some(format!(
            "this tree needs rustc ≥ {}; this machine has {}",
            fmt(want_rustc),
            fmt(have_rustc)
        ));
    }
    let want_bindgen = min_tool_version(script, "bindgen").and_then(|v| version_triple(&v))?;
    if have_bindgen < want_bindgen {
        return Some(format!(
            "this tree needs bindgen ≥ {}; this machine has {}",
            fmt(want_bindgen),
            fmt(have_bindgen)
        ));
    }
    None
}

/// Fails (exit 9, or 125 for probe) when this machine's rustc/bindgen
/// cannot build the Rust of the kernel tree at `tree`.
pub fn check_toolchain(tree: &Path) -> Result<()> {
    let Ok(script) = std::fs::read_to_string(tree.join("scripts/min-tool-version.sh")) else {
        return Ok(());
    };
    let rustc =
        crate::support::provision::version_output(Path::new(crate::support::provision::RUSTC));
    let bindgen =
        crate::support::provision::version_output(&crate::support::provision::bindgen_path());
    match toolchain_mismatch(&script, &rustc, &bindgen) {
        Some(why) => Err(fail(
            Kind::Toolchain,
            format!("{why}: it cannot build this tree's Rust test module"),
        )),
        None => Ok(()),
    }
}

/// Checks that every option the fragments ask for is in the final
/// `.config`; a dropped CONFIG_RUST is the toolchain's fault and says why.
fn check_survived(
    kbuild: &Kbuild,
    tree: &Path,
    build_dir: &Path,
    fragments: &[PathBuf],
) -> Result<()> {
    let config = build_dir.join(".config");
    let mut requested = Options::new();
    for fragment in fragments {
        let text = std::fs::read_to_string(fragment)
            .with_context(|| format!("cannot read {}", fragment.display()))?;
        requested.extend(parse(&text));
    }
    let actual = parse(&std::fs::read_to_string(&config)?);
    let lost = dropped(&requested, &actual);
    if lost.is_empty() {
        return Ok(());
    }
    if lost.iter().any(|d| d.name == "CONFIG_RUST") {
        let (_, why) = kbuild.make(tree, build_dir).arg("rustavailable").output()?;
        return Err(fail(
            Kind::Toolchain,
            format!(
                "this toolchain cannot build Rust for this tree (CONFIG_RUST was dropped); `make rustavailable` says:\n{}",
                tail_lines(&why, 15)
            ),
        ));
    }
    let list: Vec<String> = lost
        .iter()
        .map(|d| {
            format!(
                "{}={} (got {})",
                d.name,
                d.wanted,
                d.got.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    Err(fail(
        Kind::Config,
        format!(
            "kernel options did not survive olddefconfig: {} (unknown to this tree, or missing dependencies; see {})",
            list.join(", "),
            config.display()
        ),
    ))
}

/// An out-of-tree build refuses a source tree that was configured in place
/// (Kbuild's "is not clean" check: a `.config` or `include/config/`).
fn check_clean_tree(tree: &Path) -> Result<()> {
    if tree.join(".config").exists() || tree.join("include/config").is_dir() {
        return Err(fail(
            Kind::Setup,
            format!(
                "{}: the kernel tree has in-tree build output; run `make mrproper` in it (or use --rev)",
                tree.display()
            ),
        ));
    }
    Ok(())
}

/// Configures `build_dir` for `tree` and checks the result.
pub fn configure(
    kbuild: &Kbuild,
    tree: &Path,
    build_dir: &Path,
    fragments: &[PathBuf],
    log: &Path,
) -> Result<()> {
    check_clean_tree(tree)?;
    let run = |cmd: Command, what: &str| -> Result<()> {
        let out = cmd.run_logged(what, log)?;
        if !out.ok {
            return Err(fail(
                Kind::Config,
                format!(
                    "{what} failed (log: {}):\n{}",
                    log.display(),
                    out.tail.join("\n")
                ),
            ));
        }
        Ok(())
    };
    run(kbuild.make(tree, build_dir).arg("tinyconfig"), "tinyconfig")?;
    let config = build_dir.join(".config");
    let merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"))
        .args(["-m", "-O"])
        .arg(build_dir)
        .arg(&config)
        .args(fragments)
        .dir(tree);
    run(merge, "merge_config")?;
    run(
        kbuild.make(tree, build_dir).arg("olddefconfig"),
        "olddefconfig",
    )?;

    check_survived(kbuild, tree, build_dir, fragments)
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

    #[test]
    fn pinned_and_too_old_toolchains_are_named() {
        let why = toolchain_mismatch(MIN_TOOLS_6_1, "rustc 1.96.0 (x)", "bindgen 0.69.5").unwrap();
        assert!(
            why.contains("pinned to rustc 1.62.0") && why.contains("has rustc 1.96.0"),
            "{why}"
        );
        assert_eq!(
            toolchain_mismatch(MIN_TOOLS_6_1, "rustc 1.62.0", "bindgen 0.56.0"),
            None
        );
        assert_eq!(
            toolchain_mismatch(MIN_TOOLS_6_12, "rustc 1.96.0", "bindgen 0.69.5"),
            None
        );
        assert!(
            toolchain_mismatch(MIN_TOOLS_6_12, "rustc 1.70.0", "bindgen 0.69.5")
                .unwrap()
                .contains("needs rustc ≥ 1.78.0")
        );
        assert!(
            toolchain_mismatch(MIN_TOOLS_6_12, "rustc 1.96.0", "bindgen 0.60.0")
                .unwrap()
                .contains("bindgen ≥ 0.65.1")
        );
    }

    #[test]
    fn parses_values_and_not_set() {
        let opts =
            parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\nOTHER=1\n");
        assert_eq!(opts.get("CONFIG_A").unwrap(), "y");
        assert_eq!(opts.get("CONFIG_B").unwrap(), "n");
        assert_eq!(opts.get("CONFIG_C").unwrap(), "\"x y\"");
        assert_eq!(opts.len(), 3);
    }

    #[test]
    fn finds_dropped_options() {
        let requested =
            parse("CONFIG_RUST=y\nCONFIG_PCI=y\n# CONFIG_SMP is not set\nCONFIG_NR=4\n");
        let actual = parse("CONFIG_PCI=y\nCONFIG_NR=8\n");
        let lost = dropped(&requested, &actual);
        assert_eq!(
            lost,
            vec![
                Dropped {
                    name: "CONFIG_NR".into(),
                    wanted: "4".into(),
                    got: Some("8".into())
                },
                Dropped {
                    name: "CONFIG_RUST".into(),
                    wanted: "y".into(),
                    got: None
                },
            ]
        );
    }

    #[test]
    fn the_shipped_fragment_enables_the_module_and_rust() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut all = Options::new();
        for f in fragments(&dir).unwrap() {
            all.extend(parse(&std::fs::read_to_string(f).unwrap()));
        }
        for name in [
            "CONFIG_RUST",
            "CONFIG_PATVERIFY",
            "CONFIG_DEBUG_FS",
            "CONFIG_X86_PAT",
            "CONFIG_XEN_PV",
        ] {
            assert_eq!(all.get(name).map(String::as_str), Some("y"), "{name}");
        }
    }
}
