//! Kernel configuration: `tinyconfig`, then the `configs/` fragments merged
//! with the tree's own merge_config.sh, then `olddefconfig`, then a check
//! that every requested option survived.

use crate::stages::kbuild::Kbuild;
use crate::support::cache::{lock_entry, Key, Staged};
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

/// Checks a fragment line by line: blank, a comment, `CONFIG_NAME=value`
/// (y, m, n, a number or a quoted string) or `# CONFIG_NAME is not set`.
/// Anything else is refused, naming the file and line: kconfig would skip
/// it with a warning, and the run would test another kernel than asked.
pub fn check_fragment(file: &Path, text: &str) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        if let Some(why) = fragment_line_problem(line.trim()) {
            return Err(fail(
                Kind::Config,
                format!("{}:{}: {why}: {line:?}", file.display(), n + 1),
            ));
        }
    }
    Ok(())
}

fn fragment_line_problem(line: &str) -> Option<&'static str> {
    if line.is_empty() {
        return None;
    }
    if let Some(comment) = line.strip_prefix('#') {
        return match comment.trim_start().strip_suffix(" is not set") {
            Some(name) if !is_option_name(name) => Some("not an option name"),
            _ => None,
        };
    }
    let Some((name, value)) = line.split_once('=') else {
        return Some("neither CONFIG_NAME=value nor \"# CONFIG_NAME is not set\"");
    };
    if !is_option_name(name) {
        return Some("not an option name (CONFIG_ then letters, digits, _)");
    }
    if !is_option_value(value) {
        return Some("not a value (y, m, n, a number or a quoted string)");
    }
    None
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn is_option_value(value: &str) -> bool {
    let number = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    let hex = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit());
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    matches!(value, "y" | "m" | "n")
        || number(value.strip_prefix('-').unwrap_or(value))
        || value.strip_prefix("0x").is_some_and(hex)
        || quoted
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
        let (_, why) = kbuild
            .make(tree, build_dir)?
            .arg("rustavailable")
            .output()?;
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

/// Whether a tree file shapes the `.config` (beside the fragments and the
/// toolchain): the Kconfig files, the kconfig tool, the configs the targets
/// read (tiny.config), the scripts that probe the toolchain, the top
/// Makefile (the version).
fn shapes_config(rel: &Path) -> bool {
    let name = rel.file_name().unwrap_or_default().to_string_lossy();
    let top_script = rel.starts_with("scripts") && rel.components().count() == 2;
    name.starts_with("Kconfig")
        || rel.starts_with("scripts/kconfig")
        || (top_script && name.ends_with(".sh"))
        || rel == Path::new("Makefile")
        || (name.ends_with(".config") && rel.components().any(|c| c.as_os_str() == "configs"))
}

/// What a configuration is made from: the files of `tree` that shape it,
/// the fragments and the toolchain. Variants that differ in C code only
/// (every candidate of this bug) share one.
pub fn config_key(tree: &Path, fragments: &[PathBuf], toolchain: &str) -> Result<String> {
    let mut files = Vec::new();
    crate::stages::source::walk(tree, Path::new(""), &mut |rel, _| {
        if shapes_config(rel) {
            files.push(rel.to_path_buf());
        }
    })?;
    files.sort();
    let mut key = Key::new("config-v1");
    key.add(toolchain);
    for fragment in fragments {
        key.add_file(fragment)?;
    }
    for rel in files {
        key.add(rel.as_os_str().as_encoded_bytes());
        key.add(std::fs::read(tree.join(&rel)).unwrap_or_default());
    }
    Ok(key.hex())
}

/// Configures `build_dir` once per configuration input: a `.config` made
/// from the same inputs (`config_key`) is copied instead. Returns whether
/// it was.
pub fn configure_once(
    kbuild: &Kbuild,
    tree: &Path,
    build_dir: &Path,
    fragments: &[PathBuf],
    toolchain: &str,
    log: &Path,
) -> Result<bool> {
    let key = config_key(tree, fragments, toolchain)?;
    let dest = kbuild.cache_root().join("configs").join(&key);
    let _lock = lock_entry(&dest)?;
    let saved = dest.join("config");
    if saved.is_file() {
        check_clean_tree(tree)?;
        std::fs::copy(&saved, build_dir.join(".config"))
            .with_context(|| format!("cannot copy {}", saved.display()))?;
        return Ok(true);
    }
    configure(kbuild, tree, build_dir, fragments, log)?;
    let staged = Staged::new(&dest)?;
    std::fs::copy(build_dir.join(".config"), staged.path().join("config"))?;
    staged.publish(&dest)?;
    Ok(false)
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
    let kbuild = &kbuild.reading(fragments);
    run(
        kbuild.make(tree, build_dir)?.arg("tinyconfig"),
        "tinyconfig",
    )?;
    let config = build_dir.join(".config");
    let merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"))
        .args(["-m", "-O"])
        .arg(build_dir)
        .arg(&config)
        .args(fragments)
        // It makes its temporary files in the current directory: the build
        // directory, the only one the sandbox lets it write (with -m it
        // runs no make, so the tree need not be the current directory).
        .dir(build_dir);
    // The tree's own script: code from the tree, sandboxed like its make.
    run(kbuild.sandboxed(merge, build_dir)?, "merge_config")?;
    run(
        kbuild.make(tree, build_dir)?.arg("olddefconfig"),
        "olddefconfig",
    )?;

    check_survived(kbuild, tree, build_dir, fragments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_that_differ_in_c_only_share_a_configuration() {
        let tmp = crate::support::cache::scratch("config-key");
        let dir = tmp.path();
        let tree = |name: &str, kconfig: &str, c: &str| {
            let root = dir.join(name);
            std::fs::create_dir_all(root.join("mm")).unwrap();
            std::fs::create_dir_all(root.join("scripts/kconfig")).unwrap();
            std::fs::write(root.join("Makefile"), "VERSION = 6\n").unwrap();
            std::fs::write(root.join("mm/Kconfig"), kconfig).unwrap();
            std::fs::write(root.join("mm/memory.c"), c).unwrap();
            std::fs::write(root.join("scripts/kconfig/conf.c"), "conf").unwrap();
            root
        };
        let fragment = dir.join("f.config");
        std::fs::write(&fragment, "CONFIG_RUST=y\n").unwrap();
        let frags = [fragment.clone()];
        let key = |root: &Path, toolchain: &str| config_key(root, &frags, toolchain).unwrap();
        let base = tree("a", "config MMU\n", "int a;");
        let c_edit = tree("b", "config MMU\n", "int b;");
        let kconfig_edit = tree("c", "config MMU\n\tdef_bool y\n", "int a;");
        assert_eq!(key(&base, "t"), key(&c_edit, "t"));
        assert_ne!(key(&base, "t"), key(&kconfig_edit, "t"));
        assert_ne!(key(&base, "t"), key(&base, "another toolchain"));
        let before = key(&base, "t");
        std::fs::write(&fragment, "CONFIG_RUST=n\n").unwrap();
        assert_ne!(before, key(&base, "t"));
    }

    #[test]
    fn a_fragment_line_that_is_no_option_is_refused_with_its_place() {
        let good = "# a comment\n\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_N=-3\nCONFIG_H=0x1f\nCONFIG_S=\"x y\"\n# CONFIG_C is not set\n";
        check_fragment(Path::new("good.config"), good).unwrap();
        for (bad, line) in [
            ("CONFIG_\n", 1),
            ("CONFIG_A=y\n=zz\n", 2),
            ("CONFIG_A=yes please\n", 1),
            ("CONFIG_A=\n", 1),
            ("# CONFIG_ is not set\n", 1),
            ("\nFOO=y\n", 2),
            ("CONFIG_A y\n", 1),
        ] {
            let err = check_fragment(Path::new("x.config"), bad).unwrap_err();
            assert_eq!(crate::support::failure::exit_code_of(&err), 5, "{bad:?}");
            assert!(
                err.to_string().starts_with(&format!("x.config:{line}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_shipped_fragments_are_well_formed() {
        let dir = crate::support::repo_dir().join("configs");
        let suite = dir.join(crate::model::kselftest::Suite::Mm.config_fragment());
        for file in fragments(&dir).unwrap().into_iter().chain([suite]) {
            check_fragment(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
        }
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
