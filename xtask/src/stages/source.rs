//! Kernel source: the Debian linux-source-6.12 tarball unpacked once into the
//! cache, a user's tree (read, never written), or a git revision of it
//! exported into the cache with `git archive`.

use crate::model::KernelVersion;
use crate::support::cache::{lock_entry, Cache, Key, Staged};
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Source {
    /// A tree to copy variants from; never written to.
    pub root: PathBuf,
    /// Content identity: equal ids mean equal trees.
    pub id: String,
    /// For people: where it came from and its kernel version.
    pub describe: String,
    pub version: KernelVersion,
    pub git_rev: Option<String>,
}

pub fn get(cache: &Cache, kernel: Option<&Path>, rev: Option<&str>) -> Result<Source> {
    match (kernel, rev) {
        (None, None) => debian_tarball(cache, Path::new(crate::support::provision::KERNEL_TARBALL)),
        (None, Some(_)) => Err(fail(Kind::Setup, "--rev needs --kernel PATH (a git tree)")),
        // A source package's tarball (/usr/src/linux-source-X.tar.xz).
        (Some(tarball), None) if tarball.to_string_lossy().ends_with(".tar.xz") => {
            debian_tarball(cache, tarball)
        }
        (Some(tree), None) => user_tree(tree),
        (Some(tree), Some(rev)) => git_revision(cache, tree, rev),
    }
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` from a top-level Makefile, if it is a kernel's.
pub fn kernel_version(makefile: &str) -> Option<KernelVersion> {
    let field = |name: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let (v, p) = (field("VERSION")?, field("PATCHLEVEL")?);
    let s = field("SUBLEVEL").unwrap_or_default();
    let text = if s.is_empty() {
        format!("{v}.{p}")
    } else {
        format!("{v}.{p}.{s}")
    };
    text.parse().ok()
}

fn check_kernel_tree(tree: &Path) -> Result<KernelVersion> {
    let not_kernel = |why: &str| {
        fail(
            Kind::Setup,
            format!("{} is not a Linux kernel tree ({why})", tree.display()),
        )
    };
    if !tree.is_dir() {
        return Err(not_kernel("no such directory"));
    }
    let makefile = std::fs::read_to_string(tree.join("Makefile"))
        .map_err(|_| not_kernel("no top-level Makefile"))?;
    let version = kernel_version(&makefile)
        .ok_or_else(|| not_kernel("its Makefile has no VERSION/PATCHLEVEL"))?;
    if !tree.join("arch/x86/include/asm/pgtable_types.h").exists() || !tree.join("Kconfig").exists()
    {
        return Err(not_kernel("no arch/x86/include/asm/pgtable_types.h"));
    }
    Ok(version)
}

fn debian_tarball(cache: &Cache, tarball: &Path) -> Result<Source> {
    crate::support::provision::ensure_source_package(tarball)?;
    let meta = std::fs::metadata(tarball).map_err(|_| {
        let hint = match crate::support::provision::source_package(tarball) {
            Some(package) => format!("install Debian's {package}: apt-get install {package}"),
            None => "not a Debian source package's tarball (/usr/src/linux-source-X.tar.xz): check the path".into(),
        };
        fail(
            Kind::Setup,
            format!("{} not found: {hint}", tarball.display()),
        )
    })?;
    let key = Key::new("tarball")
        .add(tarball.as_os_str().as_encoded_bytes())
        .add(meta.len().to_le_bytes())
        .add(meta.mtime().to_le_bytes())
        .hex();
    let stem = tarball
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .replace(".tar.xz", "");
    let dest = cache.dir("src")?.join(format!("{stem}-{key}"));
    let _lock = lock_entry(&dest)?;
    if !dest.exists() {
        let staged = Staged::new(&dest)?;
        let tmp = staged.path();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(tmp)
            .run_logged("unpack", &tmp.join("unpack.log"))
            .with_context(|| {
                format!("cannot unpack {} into {}", tarball.display(), tmp.display())
            })?;
        anyhow::ensure!(
            out.ok,
            "cannot unpack {}:\n{}",
            tarball.display(),
            out.tail.join("\n")
        );
        staged.publish(&dest)?;
    }
    let root = dest.join(&stem);
    let version = check_kernel_tree(&root)?;
    Ok(Source {
        describe: format!("{} (Linux {version})", tarball.display()),
        root,
        id: format!("tarball:{key}"),
        version,
        git_rev: None,
    })
}

fn user_tree(tree: &Path) -> Result<Source> {
    let tree = tree.canonicalize().map_err(|_| {
        fail(
            Kind::Setup,
            format!(
                "{} is not a Linux kernel tree (no such directory)",
                tree.display()
            ),
        )
    })?;
    let version = check_kernel_tree(&tree)?;
    let git_rev = git_head(&tree);
    Ok(Source {
        describe: format!(
            "{} (Linux {version}{})",
            tree.display(),
            git_rev
                .as_deref()
                .map(|r| format!(", HEAD {r}"))
                .unwrap_or_default()
        ),
        id: match clean_git_content(&tree) {
            Some(content) => format!("git-tree:{content}"),
            None => format!("tree:{}", fingerprint(&tree)?),
        },
        root: tree,
        version,
        git_rev,
    })
}

/// The tree object of commit `sha`: what the commit contains.
fn git_tree_of(tree: &Path, sha: &str) -> Result<String> {
    git_output(tree, &["rev-parse", &format!("{sha}^{{tree}}")])
        .with_context(|| format!("git cannot read the tree of {sha} in {}", tree.display()))
}

/// `git -C tree ARGS`'s output, trimmed, when it succeeds.
fn git_output(tree: &Path, args: &[&str]) -> Option<String> {
    let (ok, out) = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(args.iter().copied())
        .output_quiet()
        .ok()?;
    ok.then(|| out.trim().to_string())
}

/// A work tree's content as git's tree object of HEAD, when it is a git
/// checkout with nothing modified or untracked (`git bisect run` steps):
/// the same identity a `--rev` of that content gets.
fn clean_git_content(tree: &Path) -> Option<String> {
    // The tree must be the repository's top: inside another repository,
    // HEAD's tree would be that repository's.
    let top = git_output(tree, &["rev-parse", "--show-toplevel"])?;
    let status = git_output(tree, &["status", "--porcelain", "--untracked-files=normal"])?;
    if Path::new(&top) != tree || !status.is_empty() {
        return None;
    }
    git_tree_of(tree, "HEAD").ok()
}

pub fn git_head(tree: &Path) -> Option<String> {
    git_output(tree, &["rev-parse", "HEAD"])
}

/// Identity of a working tree from every file's path, size and mtime
/// (`.git` excluded): cheap, and changes whenever an editor or a checkout
/// touches a file.
pub fn fingerprint(tree: &Path) -> Result<String> {
    let mut entries = Vec::new();
    walk(tree, Path::new(""), &mut |rel, meta| {
        entries.push((
            rel.to_path_buf(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.mode(),
        ));
    })?;
    entries.sort();
    let mut key = Key::new("tree");
    for (rel, len, s, ns, mode) in entries {
        key.add(rel.as_os_str().as_encoded_bytes())
            .add(len.to_le_bytes())
            .add(s.to_le_bytes())
            .add(ns.to_le_bytes())
            .add(mode.to_le_bytes());
    }
    Ok(key.hex())
}

/// Visits every non-directory entry below `root` (skipping `.git`).
pub fn walk(
    root: &Path,
    rel: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata),
) -> Result<()> {
    let dir = root.join(rel);
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let rel_child = rel.join(&name);
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &rel_child, visit)?;
        } else {
            visit(&rel_child, &meta);
        }
    }
    Ok(())
}

/// A revision of the git tree at `tree` as a full commit SHA, or a setup
/// error saying it does not exist.
pub fn resolve_rev(tree: &Path, rev: &str) -> Result<String> {
    let (ok, out) = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{rev}^{{commit}}"))
        .output_quiet()?;
    if !ok {
        return Err(fail(
            Kind::Setup,
            format!("revision {rev:?} not found in git tree {}", tree.display()),
        ));
    }
    Ok(out.trim().to_string())
}

fn git_revision(cache: &Cache, tree: &Path, rev: &str) -> Result<Source> {
    if !tree.is_dir() {
        return Err(fail(
            Kind::Setup,
            format!(
                "{} is not a Linux kernel tree (no such directory)",
                tree.display()
            ),
        ));
    }
    let sha = resolve_rev(tree, rev)?;
    // Keyed by the content (the commit's tree), not the commit: a commit
    // whose content was built before (a bisect step, a revert that restores
    // the parent) reuses that kernel without a make.
    let content = git_tree_of(tree, &sha)?;
    let dest = cache.dir("src")?.join(format!("git-tree-{content}"));
    let _lock = lock_entry(&dest)?;
    if !dest.exists() {
        let staged = Staged::new(&dest)?;
        let tmp = staged.path();
        let archive =
            Command::new("git")
                .arg("-C")
                .arg(tree)
                .args(["archive", "--format=tar", &sha]);
        crate::support::proc::echo(&archive);
        duct::cmd(&archive.program, &archive.args)
            .pipe(duct::cmd!("tar", "-x", "-C", tmp))
            .stdin_null()
            .run()
            .with_context(|| format!("git archive {sha} from {} failed", tree.display()))?;
        staged.publish(&dest)?;
    }
    let version = check_kernel_tree(&dest)?;
    Ok(Source {
        describe: format!("{} at {rev} ({sha:.12}, Linux {version})", tree.display()),
        root: dest,
        id: format!("git-tree:{content}"),
        version,
        git_rev: Some(sha),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_of_the_same_content_share_an_identity() {
        let dir = std::env::temp_dir().join(format!("patverify-content-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "--quiet"]);
        std::fs::write(dir.join("f"), "one").unwrap();
        git(&["add", "f"]);
        git(&["commit", "--quiet", "-m", "one"]);
        let first = git(&["rev-parse", "HEAD"]);
        std::fs::write(dir.join("f"), "two").unwrap();
        git(&["commit", "--quiet", "-am", "two"]);
        git(&["revert", "--no-edit", "HEAD"]);
        let reverted = git(&["rev-parse", "HEAD"]);
        assert_ne!(first, reverted);
        let content = git_tree_of(&dir, &first).unwrap();
        assert_eq!(content, git_tree_of(&dir, &reverted).unwrap());
        // A clean checkout is its commit's content; a modified one is not.
        assert_eq!(clean_git_content(&dir), Some(content));
        std::fs::write(dir.join("f"), "edited").unwrap();
        assert_eq!(clean_git_content(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_revision_that_does_not_exist_is_named() {
        let dir = std::env::temp_dir().join(format!("patverify-rev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
        };
        git(&["init", "--quiet"]);
        std::fs::write(dir.join("f"), "x").unwrap();
        git(&["add", "f"]);
        git(&["commit", "--quiet", "-m", "one"]);
        assert_eq!(resolve_rev(&dir, "HEAD").unwrap().len(), 40);
        let err = resolve_rev(&dir, "v9.99-no-such-tag").unwrap_err();
        assert_eq!(crate::support::failure::exit_code_of(&err), 2);
        assert!(
            err.to_string()
                .contains("revision \"v9.99-no-such-tag\" not found in git tree"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_kernel_version() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n";
        assert_eq!(
            kernel_version(mk).map(|v| v.to_string()).as_deref(),
            Some("6.12.117")
        );
        assert_eq!(kernel_version("all:\n\techo hi\n"), None);
    }

    #[test]
    fn rejects_a_directory_that_is_not_a_kernel() {
        let err = check_kernel_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert_eq!(crate::support::failure::exit_code_of(&err), 2);
        assert!(
            err.to_string().contains("is not a Linux kernel tree"),
            "{err}"
        );
        let err = check_kernel_tree(Path::new("/nonexistent/patverify")).unwrap_err();
        assert!(err.to_string().contains("no such directory"), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_content_size() {
        let dir = std::env::temp_dir().join(format!("patverify-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), "one").unwrap();
        let before = fingerprint(&dir).unwrap();
        assert_eq!(before, fingerprint(&dir).unwrap());
        std::fs::write(dir.join("sub/a"), "three").unwrap();
        assert_ne!(before, fingerprint(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
