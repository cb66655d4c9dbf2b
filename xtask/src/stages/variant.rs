//! Variant trees: a copy of the source (hard links; every write replaces the
//! file, so the source is never written through) with the patch applied in
//! the variant's direction and the test module hooked in as
//! drivers/patverify. Each variant is keyed by its content and made once.

use crate::stages::kbuild::Kbuild;
use crate::stages::patch::{self, Direction, PatchSet};
use crate::stages::source::{walk, Source};
use crate::support::cache::{lock_entry, replace_file, temp_sibling, Cache, Key, Staged};
use crate::support::failure::{fail, Kind};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The upstream fix in its 6.12 form (patches/): verify's default candidate.
pub const DEFAULT_PATCH: &str =
    "0001-x86-mm-fix-PAT-bit-missing-from-page-protection-modify-mask.patch";

/// The mailing-list thread's v2 proposal (patches/).
pub const PROPOSAL_PATCH: &str = "0002-v2-proposal-widen-the-mask-in-pgprot_modify-only.patch";

use crate::support::repo_dir;

/// The module sources copied into drivers/patverify (Kconfig, Makefile, *.rs)
/// and the C helper copied beside the kernel crate's helpers.
fn module_files() -> Result<Vec<PathBuf>> {
    let dir = repo_dir().join("module");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// What a variant is: the source plus patches, each in a direction, in order.
pub struct Spec<'a> {
    pub name: String,
    pub patches: Vec<(&'a Path, Direction)>,
    /// The patches are the harness's own, written from the tree itself (a
    /// mutant's one-term edit of a mask): trusted as the tree is, so their
    /// builds share the compile caches with the tree's.
    pub harness_made: bool,
}

#[derive(Clone)]
pub struct Variant {
    pub name: String,
    pub tree: PathBuf,
    pub key: String,
    /// "tree as is", "tree + patch", "tree − patch".
    pub describe: String,
    /// Made only from the tree, the repository's own patches (patches/) and
    /// the harness's own edits of the tree (the mutants): its builds may
    /// write the shared compile caches. A patch from anywhere else (a mail,
    /// a file of the user's) makes its builds use a compile-cache namespace
    /// of their own.
    pub trusted: bool,
}

/// The variant's content key: the source, the *result* of the patches on
/// the files they touch (so a reverse patch and an equivalent forward revert
/// give the same key), and the module sources.
pub fn key(cache: &Cache, kbuild: &Kbuild, source: &Source, spec: &Spec) -> Result<String> {
    let mut key = Key::new("variant-v2");
    key.add(&source.id);
    for (path, content) in patched_files(cache, kbuild, &source.root, &spec.patches)? {
        key.add(path)
            .add(content.unwrap_or_else(|| b"<deleted>".to_vec()));
    }
    for file in module_files()? {
        key.add_file(&file)?;
    }
    Ok(key.hex())
}

/// Applies the patches to scratch copies of just the files they touch and
/// returns each touched file's resulting content (None: deleted).
fn patched_files(
    cache: &Cache,
    kbuild: &Kbuild,
    root: &Path,
    patches: &[(&Path, Direction)],
) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    if patches.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = temp_sibling(
        &cache
            .dir("scratch")?
            .join(format!("patch-{}", std::process::id())),
    )?;
    let touched = patch::apply_on_copy(kbuild, root, &scratch, patches);
    let result = touched.map(|touched| {
        touched
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(scratch.join(&f)).ok()))
            .collect()
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

pub fn make(cache: &Cache, kbuild: &Kbuild, source: &Source, spec: Spec) -> Result<Variant> {
    let key = key(cache, kbuild, source, &spec)?;
    let describe = describe(&spec.patches);
    let trusted = spec.harness_made
        || spec
            .patches
            .iter()
            .all(|(patch, _)| is_repository_patch(patch));
    // Named by content only: the same tree under another role (a probe of
    // what verify built as its candidate) reuses the tree and its build.
    let dest = cache.dir("variants")?.join(&key);
    let tree = dest.join("src");
    let _lock = lock_entry(&dest)?;
    if !tree.join(READY).exists() {
        crate::output::emit(crate::output::Event::MakingTree {
            variant: &spec.name,
            describe: &describe,
        });
        let staged = Staged::new(&dest)?;
        let tmp_tree = staged.path().join("src");
        link_copy(&source.root, &tmp_tree)?;
        for &(patch, direction) in &spec.patches {
            patch::apply(kbuild, &tmp_tree, patch, direction)?;
        }
        hook_module(&tmp_tree)?;
        std::fs::write(tmp_tree.join(READY), &key)?;
        staged.publish(&dest)?;
    }
    // Mark it used, for `clean --older-than`.
    let _ = std::fs::File::open(&dest).and_then(|d| d.set_modified(std::time::SystemTime::now()));
    Ok(Variant {
        name: spec.name,
        tree,
        key,
        describe,
        trusted,
    })
}

/// Whether `patch` is one of the repository's own (under patches/).
fn is_repository_patch(patch: &Path) -> bool {
    let ours = repo_dir().join("patches");
    let canonical = |p: &Path| p.canonicalize().ok();
    matches!((canonical(patch), canonical(&ours)), (Some(p), Some(ours)) if p.starts_with(&ours))
}

const READY: &str = ".patverify-variant";

/// "tree as is", "tree + a.patch + b.patch", "tree − a.patch".
fn describe(patches: &[(&Path, Direction)]) -> String {
    if patches.is_empty() {
        return "tree as is".to_string();
    }
    let mut text = "tree".to_string();
    for (p, direction) in patches {
        let sign = if *direction == Direction::Forward {
            '+'
        } else {
            '−'
        };
        text += &format!(
            " {sign} {}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    text
}

/// Copies `from` to `to` as hard links (plain copies across filesystems),
/// leaving out `.git`.
fn link_copy(from: &Path, to: &Path) -> Result<()> {
    let mut result = Ok(());
    let mut cross_device = false;
    walk(from, Path::new(""), &mut |rel, meta| {
        if result.is_err() {
            return;
        }
        let (src, dst) = (from.join(rel), to.join(rel));
        result = (|| -> Result<()> {
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else if cross_device || std::fs::hard_link(&src, &dst).is_err() {
                cross_device = true;
                std::fs::copy(&src, &dst)
                    .with_context(|| format!("cannot copy {}", src.display()))?;
            }
            Ok(())
        })();
    })?;
    result
}

/// How a tree's Rust support takes C helpers: the two generations the
/// module builds against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RustLayout {
    /// Linux 6.12: rust/helpers/*.c, included from rust/helpers/helpers.c.
    HelpersDir,
    /// Linux 6.1: one rust/helpers.c, and a bindings crate whose helper
    /// bindings do not yet see the generated types.
    HelpersFile,
}

impl RustLayout {
    /// The layout of the tree at `tree` (version `version`), or exit 9: the
    /// module's compat layer knows 6.1's and 6.12's `kernel` crates.
    pub fn of(tree: &Path, version: Option<(u32, u32)>) -> Result<Self> {
        let layout = match version {
            Some((6, 1)) if tree.join("rust/helpers.c").is_file() => Some(RustLayout::HelpersFile),
            Some(v) if v >= (6, 12) && tree.join("rust/helpers").is_dir() => {
                Some(RustLayout::HelpersDir)
            }
            _ => None,
        };
        let shown = version.map_or("unknown".into(), |(a, b)| format!("{a}.{b}"));
        layout.ok_or_else(|| {
            fail(
                Kind::Toolchain,
                format!("this tree (Linux {shown}) cannot take the Rust test module: it builds against the kernel crate of Linux 6.1 and of 6.12 or later"),
            )
        })
    }
}

/// The series of the tree whose top Makefile is `makefile`: (6, 1).
fn major_minor(makefile: &str) -> Option<(u32, u32)> {
    crate::stages::source::kernel_version(makefile).map(|v| v.series())
}

/// Adds drivers/patverify and the bindings/helpers the module needs.
fn hook_module(tree: &Path) -> Result<()> {
    let makefile = std::fs::read_to_string(tree.join("Makefile")).unwrap_or_default();
    let layout = RustLayout::of(tree, major_minor(&makefile))?;
    let driver = tree.join("drivers/patverify");
    std::fs::create_dir_all(&driver)?;
    for file in module_files()? {
        let name = file.file_name().unwrap_or_default();
        let dest = match (name == "helpers.c", layout) {
            (true, RustLayout::HelpersDir) => tree.join("rust/helpers/patverify.c"),
            (true, RustLayout::HelpersFile) => tree.join("rust/patverify_helpers.c"),
            (false, _) => driver.join(name),
        };
        replace_file(&dest, std::fs::read(&file)?)?;
    }
    edit(tree, "drivers/Kconfig", |text| {
        insert_before_last(text, "endmenu", "source \"drivers/patverify/Kconfig\"\n\n")
    })?;
    edit(tree, "drivers/Makefile", |text| {
        Some(format!("{text}obj-$(CONFIG_PATVERIFY)\t+= patverify/\n"))
    })?;
    edit(tree, "rust/bindings/bindings_helper.h", |text| {
        insert_after_last(
            text,
            "#include <",
            "#include <linux/debugfs.h>\n#include <linux/mm.h>\n#include <asm/memtype.h>\n",
        )
    })?;
    match layout {
        RustLayout::HelpersDir => edit(tree, "rust/helpers/helpers.c", |text| {
            insert_after_last(text, "#include \"", "#include \"patverify.c\"\n")
        }),
        RustLayout::HelpersFile => {
            edit(tree, "rust/helpers.c", |text| {
                Some(format!("{text}\n#include \"patverify_helpers.c\"\n"))
            })?;
            // 6.1's helper bindings use no kernel types; ours do (6.12 has
            // this very import).
            edit(tree, "rust/bindings/lib.rs", |text| {
                let marker = "    // Import the generated bindings for types.\n";
                text.contains(marker).then(|| {
                    text.replacen(
                        marker,
                        &format!("{marker}    use super::bindings_raw::*; // patverify\n"),
                        1,
                    )
                })
            })
        }
    }
}

/// Changes one file of the tree, once: a tree that already has the hook
/// (say, one whose history carries the module) is left as it is.
fn edit(tree: &Path, rel: &str, change: impl FnOnce(&str) -> Option<String>) -> Result<()> {
    let path = tree.join(rel);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        fail(
            Kind::Toolchain,
            format!("this tree has no {rel}: it cannot take the Rust test module"),
        )
    })?;
    if text.contains("patverify") {
        return Ok(());
    }
    let new = change(&text).ok_or_else(|| {
        fail(
            Kind::Toolchain,
            format!("cannot find where to hook the Rust test module into {rel}"),
        )
    })?;
    replace_file(&path, new)
}

fn insert_before_last(text: &str, marker: &str, insert: &str) -> Option<String> {
    let at = text.rfind(&format!("\n{marker}"))? + 1;
    Some(format!("{}{insert}{}", &text[..at], &text[at..]))
}

fn insert_after_last(text: &str, line_prefix: &str, insert: &str) -> Option<String> {
    let start = text.rfind(&format!("\n{line_prefix}"))? + 1;
    let end = start + text[start..].find('\n')? + 1;
    Some(format!("{}{insert}{}", &text[..end], &text[end..]))
}

/// A candidate patch (or series) and the variant made of it.
pub struct Candidate {
    pub patch: PatchSet,
    /// How the patch relates to the tree: Forward (new), Reverse (contained).
    pub direction: Direction,
    pub variant: Variant,
}

/// verify's variants: the baseline, then one per candidate.
pub struct CandidatePlan {
    pub baseline: Variant,
    pub candidates: Vec<Candidate>,
    /// The same, in build order.
    pub variants: Vec<Variant>,
}

/// Each candidate file read (a series split into its mails) and how it
/// relates to the tree: new (forward) or already contained (reverse).
fn load_candidates(
    cache: &Cache,
    kbuild: &Kbuild,
    source: &Source,
    patch_files: &[PathBuf],
) -> Result<Vec<(PatchSet, Direction)>> {
    let series_dir = cache.dir("series")?;
    let scratch = cache
        .dir("scratch")?
        .join(format!("detect-{}", std::process::id()));
    let mut sets = Vec::new();
    for file in patch_files {
        let set = patch::load(file, &series_dir)?;
        let direction = patch::detect(kbuild, &source.root, &set, &scratch)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        crate::output::emit(crate::output::Event::Candidate {
            file: &name,
            parts: set.parts.len(),
            direction,
        });
        sets.push((set, direction));
    }
    Ok(sets)
}

/// The baseline is the tree without every candidate it already contains;
/// each candidate is the baseline plus that one patch (or series).
pub fn plan_candidates(
    cache: &Cache,
    kbuild: &Kbuild,
    source: &Source,
    patch_files: &[PathBuf],
) -> Result<CandidatePlan> {
    let sets = load_candidates(cache, kbuild, source, patch_files)?;
    // Later candidates' parts come off first, as `git revert` of a range would.
    let contained = |except: Option<usize>| -> Vec<(&Path, Direction)> {
        sets.iter()
            .enumerate()
            .rev()
            .filter(|(i, (_, d))| *d == Direction::Reverse && Some(*i) != except)
            .flat_map(|(_, (set, _))| set.applied(Direction::Reverse))
            .collect()
    };
    let baseline = make(
        cache,
        kbuild,
        source,
        Spec {
            name: "baseline".into(),
            patches: contained(None),
            harness_made: false,
        },
    )?;
    let mut variants = Vec::new();
    for (index, (set, direction)) in sets.iter().enumerate() {
        let name = if sets.len() == 1 {
            "candidate".to_string()
        } else {
            format!("candidate-{}", index + 1)
        };
        let patches = match direction {
            // The tree minus the other contained candidates.
            Direction::Reverse => contained(Some(index)),
            Direction::Forward => contained(None)
                .into_iter()
                .chain(set.applied(Direction::Forward))
                .collect(),
        };
        let spec = Spec {
            name,
            patches,
            harness_made: false,
        };
        let variant = make(cache, kbuild, source, spec)?;
        variants.push(variant);
    }
    let candidates: Vec<Candidate> = sets
        .into_iter()
        .zip(variants)
        .map(|((patch, direction), variant)| Candidate {
            patch,
            direction,
            variant,
        })
        .collect();
    Ok(CandidatePlan::new(baseline, candidates))
}

impl CandidatePlan {
    fn new(baseline: Variant, candidates: Vec<Candidate>) -> CandidatePlan {
        let variants = std::iter::once(baseline.clone())
            .chain(candidates.iter().map(|c| c.variant.clone()))
            .collect();
        CandidatePlan {
            baseline,
            candidates,
            variants,
        }
    }
}

/// The upstream fix shipped in patches/ (the default candidate).
pub fn default_patch() -> PathBuf {
    crate::support::repo_dir()
        .join("patches")
        .join(DEFAULT_PATCH)
}

/// The upstream fix in the form for a tree of `version`: patches/ holds the
/// 6.12 form, patches/6.1/ the 6.1 stable one (same change, other context).
pub fn default_patch_for(version: crate::model::KernelVersion) -> PathBuf {
    let own = Some(version.series()).map(|(major, minor)| {
        let dir = crate::support::repo_dir()
            .join("patches")
            .join(format!("{major}.{minor}"));
        dir.join(DEFAULT_PATCH)
    });
    own.filter(|p| p.is_file()).unwrap_or_else(default_patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_candidate_is_the_fix_in_the_form_for_the_tree() {
        let for_6_1 = default_patch_for("6.1.192".parse().unwrap());
        assert!(for_6_1.ends_with(format!("patches/6.1/{}", DEFAULT_PATCH)));
        assert!(for_6_1.is_file());
        assert_eq!(
            default_patch_for("6.12.117".parse().unwrap()),
            default_patch()
        );
        assert_eq!(default_patch_for("6.10".parse().unwrap()), default_patch());
    }

    #[test]
    fn touched_files_strip_one_component() {
        use crate::stages::patch::touched_files;
        let text = "--- a/arch/x86/x.h\t2023\n+++ b/arch/x86/x.h\n@@ -1 +1 @@\n--- /dev/null\n+++ b/new.c\n";
        assert_eq!(touched_files(text), ["arch/x86/x.h", "new.c"]);
    }

    #[test]
    fn hooks_insert_at_the_right_place() {
        let kconfig = "menu \"Device Drivers\"\nsource \"drivers/a/Kconfig\"\n\nendmenu\n";
        assert_eq!(
            insert_before_last(kconfig, "endmenu", "source \"x\"\n\n").unwrap(),
            "menu \"Device Drivers\"\nsource \"drivers/a/Kconfig\"\n\nsource \"x\"\n\nendmenu\n"
        );
        let helpers = "/* c */\n#include \"a.c\"\n#include \"b.c\"\n";
        assert_eq!(
            insert_after_last(helpers, "#include \"", "#include \"p.c\"\n").unwrap(),
            "/* c */\n#include \"a.c\"\n#include \"b.c\"\n#include \"p.c\"\n"
        );
        assert_eq!(insert_before_last("no marker", "endmenu", "x"), None);
    }

    #[test]
    fn the_module_takes_6_1_and_6_12_layouts_and_names_other_trees() {
        let dir = std::env::temp_dir().join(format!("patverify-layout-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rust/helpers")).unwrap();
        std::fs::write(dir.join("rust/helpers.c"), "").unwrap();
        assert_eq!(
            RustLayout::of(&dir, Some((6, 1))).unwrap(),
            RustLayout::HelpersFile
        );
        assert_eq!(
            RustLayout::of(&dir, Some((6, 12))).unwrap(),
            RustLayout::HelpersDir
        );
        let err = RustLayout::of(&dir, Some((6, 6))).unwrap_err();
        assert_eq!(crate::support::failure::exit_code_of(&err), 9);
        assert!(err.to_string().contains("Linux 6.6"), "{err}");
        assert_eq!(
            major_minor("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n"),
            Some((6, 1))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tree_without_rust_helpers_cannot_take_the_module() {
        let dir = std::env::temp_dir().join(format!("patverify-hook-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rust")).unwrap();
        std::fs::write(dir.join("rust/helpers.c"), "").unwrap();
        let err = hook_module(&dir).unwrap_err();
        assert_eq!(crate::support::failure::exit_code_of(&err), 9);
        assert_eq!(crate::support::failure::bisect_exit_code(&err), 125);
        assert!(
            err.to_string().contains("cannot take the Rust test module"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn link_copy_leaves_the_source_alone_when_the_copy_is_edited() {
        let dir = std::env::temp_dir().join(format!("patverify-variant-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/drivers")).unwrap();
        std::fs::create_dir_all(dir.join("src/.git")).unwrap();
        std::fs::write(dir.join("src/drivers/Makefile"), "obj-y += a/\n").unwrap();
        std::fs::write(dir.join("src/.git/HEAD"), "ref").unwrap();
        link_copy(&dir.join("src"), &dir.join("copy")).unwrap();
        assert!(!dir.join("copy/.git").exists());
        edit(&dir.join("copy"), "drivers/Makefile", |t| {
            Some(format!("{t}obj-y += patverify/\n"))
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("src/drivers/Makefile")).unwrap(),
            "obj-y += a/\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
