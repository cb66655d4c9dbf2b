//! Patch handling: which way a patch goes for a tree (the tree lacks it, or
//! already has it), and applying it to a variant tree. Uses GNU patch with no
//! fuzz: a hunk that only fits somewhere else is a failure, not a guess.

use crate::failure::{fail, Kind};
use crate::proc::Command;
use anyhow::Result;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The tree lacks the patch: baseline = tree, candidate = tree + patch.
    Forward,
    /// The tree already has it: baseline = tree − patch, candidate = tree.
    Reverse,
}

fn patch_cmd(tree: &Path, patch: &Path, direction: Direction, dry_run: bool) -> Command {
    let mut cmd = Command::new("patch")
        .args(["-p1", "--force", "--fuzz=0", "--no-backup-if-mismatch", "--reject-file=-", "-d"])
        .arg(tree)
        .arg("-i")
        .arg(patch);
    if direction == Direction::Reverse {
        cmd = cmd.arg("--reverse");
    }
    if dry_run {
        cmd = cmd.arg("--dry-run");
    }
    cmd
}

/// Checks that `text` looks like a unified diff at all.
pub fn check_is_patch(name: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(fail(Kind::PatchDoesNotApply, format!("{name} is empty")));
    }
    let has_headers = text.lines().any(|l| l.starts_with("--- ")) && text.lines().any(|l| l.starts_with("+++ "));
    let has_hunk = text.lines().any(|l| l.starts_with("@@ "));
    if !has_headers || !has_hunk {
        return Err(fail(Kind::PatchDoesNotApply, format!("{name} is not a unified diff (no ---/+++ headers and @@ hunks)")));
    }
    Ok(())
}

/// The first failing hunk in GNU patch's output, as "hunk #N of FILE (at line L)".
pub fn first_failed_hunk(output: &str) -> Option<String> {
    let mut file = None;
    for line in output.lines() {
        if let Some(f) = line.strip_prefix("checking file ").or_else(|| line.strip_prefix("patching file ")) {
            file = Some(f.trim().trim_matches('\'').to_string());
        } else if line.contains("FAILED") && line.starts_with("Hunk #") {
            let what = line.trim_end_matches('.').replacen("Hunk", "hunk", 1);
            return Some(match &file {
                Some(f) => format!("{what} in {f}"),
                None => what,
            });
        } else if line.starts_with("can't find file to patch") {
            return Some("a file it patches does not exist in the tree".to_string());
        }
    }
    None
}

/// Decides the direction: forward if it applies cleanly, reverse if the
/// tree already contains it; otherwise names the first failing hunk.
pub fn detect(tree: &Path, patch: &Path) -> Result<Direction> {
    let text = std::fs::read_to_string(patch)
        .map_err(|e| fail(Kind::Setup, format!("cannot read patch {}: {e}", patch.display())))?;
    check_is_patch(&patch.display().to_string(), &text)?;
    let (forward_ok, forward_out) = patch_cmd(tree, patch, Direction::Forward, true).output()?;
    if forward_ok {
        return Ok(Direction::Forward);
    }
    let (reverse_ok, _) = patch_cmd(tree, patch, Direction::Reverse, true).output()?;
    if reverse_ok {
        return Ok(Direction::Reverse);
    }
    let hunk = first_failed_hunk(&forward_out).unwrap_or_else(|| crate::proc::tail_lines(&forward_out, 5));
    Err(fail(
        Kind::PatchDoesNotApply,
        format!("{} applies to this tree neither forward nor in reverse: {hunk}", patch.display()),
    ))
}

/// Applies the patch to a variant tree (which `detect` has checked).
pub fn apply(tree: &Path, patch: &Path, direction: Direction) -> Result<()> {
    let (ok, out) = patch_cmd(tree, patch, direction, false).output()?;
    if !ok {
        return Err(fail(
            Kind::PatchDoesNotApply,
            format!("{} failed to apply to {}: {}", patch.display(), tree.display(), crate::proc::tail_lines(&out, 5)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("patverify-patch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t")).unwrap();
        std::fs::write(dir.join("t/f.h"), content).unwrap();
        dir
    }

    const PATCH: &str = "--- a/f.h\n+++ b/f.h\n@@ -1,3 +1,3 @@\n one\n-#define MASK (A)\n+#define MASK (A | PAT)\n three\n";

    #[test]
    fn detects_forward_reverse_and_neither() {
        for (content, want) in [
            ("one\n#define MASK (A)\nthree\n", Some(Direction::Forward)),
            ("one\n#define MASK (A | PAT)\nthree\n", Some(Direction::Reverse)),
            ("one\n#define MASK (B)\nthree\n", None),
        ] {
            let dir = tree_with("detect", content);
            std::fs::write(dir.join("p.patch"), PATCH).unwrap();
            let got = detect(&dir.join("t"), &dir.join("p.patch"));
            match want {
                Some(d) => assert_eq!(got.unwrap(), d),
                None => {
                    let err = got.unwrap_err();
                    assert_eq!(crate::failure::exit_code_of(&err), 4);
                    assert!(err.to_string().contains("hunk #1 FAILED at 1 in f.h"), "{err}");
                }
            }
            // Detection never changes the tree.
            assert_eq!(std::fs::read_to_string(dir.join("t/f.h")).unwrap(), content);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn applies_in_both_directions() {
        let dir = tree_with("apply", "one\n#define MASK (A | PAT)\nthree\n");
        std::fs::write(dir.join("p.patch"), PATCH).unwrap();
        apply(&dir.join("t"), &dir.join("p.patch"), Direction::Reverse).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("t/f.h")).unwrap(), "one\n#define MASK (A)\nthree\n");
        apply(&dir.join("t"), &dir.join("p.patch"), Direction::Forward).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("t/f.h")).unwrap(), "one\n#define MASK (A | PAT)\nthree\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert_eq!(crate::failure::exit_code_of(&check_is_patch("x", "  \n").unwrap_err()), 4);
        let err = check_is_patch("x", "hello world\n").unwrap_err();
        assert!(err.to_string().contains("not a unified diff"));
        check_is_patch("x", PATCH).unwrap();
    }

    #[test]
    fn the_shipped_patch_is_a_patch_to_the_masks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches");
        let text = std::fs::read_to_string(dir.join(crate::variant::DEFAULT_PATCH)).unwrap();
        check_is_patch("default", &text).unwrap();
        assert!(text.contains("+#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)"));
    }
}
