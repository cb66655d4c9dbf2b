//! Patch handling: reading a `--patch` argument (a plain diff, or a series
//! from a mailbox or `git format-patch` output), which way it goes for a tree
//! (the tree lacks it, or already has it), and applying it to a variant
//! tree. Uses GNU patch with no fuzz: a hunk that only fits somewhere else is
//! a failure, not a guess. A series applies like `git am`: in order, each on
//! the result of the previous one.

pub use crate::model::Direction;
use crate::stages::kbuild::Kbuild;
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// GNU patch for `tree`, reading the patch on its standard input (the
/// sandbox need not see where the patch file lies).
fn patch_cmd(tree: &Path, patch: Vec<u8>, direction: Direction) -> Command {
    let mut cmd = Command::new("patch")
        .args([
            "-p1",
            "--force",
            "--fuzz=0",
            "--no-backup-if-mismatch",
            "--reject-file=-",
            "-d",
        ])
        .arg(tree)
        .stdin(patch);
    if direction == Direction::Reverse {
        cmd = cmd.arg("--reverse");
    }
    cmd
}

/// The absolute path of a `--patch` argument (GNU patch runs in the tree, so
/// a relative path would be read from there).
pub fn resolve(file: &Path) -> Result<std::path::PathBuf> {
    file.canonicalize()
        .map_err(|e| fail(Kind::Setup, format!("patch {}: {e}", file.display())))
}

/// Checks that `text` looks like a unified diff at all.
pub fn check_is_patch(name: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(fail(Kind::PatchDoesNotApply, format!("{name} is empty")));
    }
    let has_headers =
        text.lines().any(|l| l.starts_with("--- ")) && text.lines().any(|l| l.starts_with("+++ "));
    let has_hunk = text.lines().any(|l| l.starts_with("@@ "));
    if !has_headers || !has_hunk {
        return Err(fail(
            Kind::PatchDoesNotApply,
            format!("{name} is not a unified diff (no ---/+++ headers and @@ hunks)"),
        ));
    }
    if let Some(path) = outside_paths(text).first() {
        return Err(fail(
            Kind::PatchDoesNotApply,
            format!("{name} names a file outside the tree: {path:?} (absolute, or with a `..` component); refused"),
        ));
    }
    Ok(())
}

/// The file names in a patch's headers (---/+++, and git's rename and copy
/// lines) that would reach outside the tree: absolute, or with `..`.
pub fn outside_paths(text: &str) -> Vec<String> {
    const HEADERS: [&str; 6] = [
        "--- ",
        "+++ ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
    ];
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(rest) = HEADERS.iter().find_map(|h| line.strip_prefix(h)) else {
            continue;
        };
        let path = rest
            .split('\t')
            .next()
            .unwrap_or(rest)
            .trim()
            .trim_matches('"');
        if path == "/dev/null" {
            continue;
        }
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            found.push(path.to_string());
        }
    }
    found
}

/// The first failing hunk in GNU patch's output, as "hunk #N of FILE (at line L)".
pub fn first_failed_hunk(output: &str) -> Option<String> {
    let mut file = None;
    for line in output.lines() {
        if let Some(f) = line
            .strip_prefix("checking file ")
            .or_else(|| line.strip_prefix("patching file "))
        {
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

/// One `--patch` argument: its file and the patches in it, in order (one
/// for a plain diff or a single mail, several for a mailbox series).
pub struct PatchSet {
    pub file: PathBuf,
    pub parts: Vec<PathBuf>,
    /// The mails' subjects (empty for a plain diff).
    pub subjects: Vec<String>,
    /// The Message-Id of the file's first mail (a series' cover letter),
    /// without angle brackets, when the patch came as mail.
    pub message_id: Option<String>,
    /// That mail's Subject as sent (`[PATCH v2 0/3] …`), for a reply.
    pub subject: Option<String>,
}

impl PatchSet {
    /// The parts with their direction, in the order they must be applied.
    pub fn applied(&self, direction: Direction) -> Vec<(&Path, Direction)> {
        let parts = self.parts.iter().map(|p| (p.as_path(), direction));
        match direction {
            Direction::Forward => parts.collect(),
            Direction::Reverse => parts.rev().collect(),
        }
    }
}

/// Reads a `--patch` file. A mailbox with several patches is split into one
/// file per patch under `series_dir` (named by content, like format-patch's
/// NNNN-subject.patch); a cover letter without a diff is left out.
pub fn load(file: &Path, series_dir: &Path) -> Result<PatchSet> {
    let file = resolve(file)?;
    let text = std::fs::read_to_string(&file).map_err(|e| {
        fail(
            Kind::Setup,
            format!("cannot read patch {}: {e}", file.display()),
        )
    })?;
    check_is_patch(&file.display().to_string(), &text)?;
    let message_id = header_of(&text, "Message-Id");
    let subject = header_of(&text, "Subject");
    let mails = split_mailbox(&text);
    if mails.len() <= 1 {
        let subjects = mails.into_iter().map(|m| m.subject).collect();
        return Ok(PatchSet {
            parts: vec![file.clone()],
            file,
            subjects,
            message_id,
            subject,
        });
    }
    let dir = series_dir.join(crate::support::cache::sha256_hex(text.as_bytes()));
    let _lock = crate::support::cache::lock_entry(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut parts = Vec::new();
    for (index, mail) in mails.iter().enumerate() {
        let part = dir.join(format!("{:04}-{}.patch", index + 1, slug(&mail.subject)));
        if std::fs::read_to_string(&part).ok().as_deref() != Some(mail.text.as_str()) {
            crate::support::cache::write_atomic(&part, &mail.text)?;
        }
        parts.push(part);
    }
    Ok(PatchSet {
        file,
        parts,
        subjects: mails.into_iter().map(|m| m.subject).collect(),
        message_id,
        subject,
    })
}

pub struct Mail {
    pub subject: String,
    pub text: String,
}

/// The mails of a mailbox that carry a diff, in order. A message starts at a
/// "From " line at the start of the file or after an empty line (mbox
/// escapes body lines that start so as ">From ").
pub fn split_mailbox(text: &str) -> Vec<Mail> {
    let mut messages: Vec<String> = Vec::new();
    let mut previous_blank = true;
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") && previous_blank || messages.is_empty() {
            messages.push(String::new());
        }
        messages.last_mut().expect("pushed above").push_str(line);
        previous_blank = line.trim().is_empty();
    }
    messages
        .into_iter()
        .filter(|m| {
            m.lines().any(|l| l.starts_with("+++ ")) && m.lines().any(|l| l.starts_with("@@ "))
        })
        .map(|m| Mail {
            subject: subject_of(&m),
            text: m,
        })
        .collect()
}

/// A mail's subject as its reader sees it: folded header lines joined and
/// RFC 2047 words decoded (format-patch folds long subjects and encodes
/// non-ASCII ones), the `[PATCH …]` prefix dropped. The mbox split above
/// stays by hand: mailparse reads one message, not a mailbox.
fn subject_of(mail: &str) -> String {
    header_of(mail, "Subject")
        .map(|raw| clean_subject(&raw))
        .unwrap_or_default()
}

/// A header of a mail's (or a mailbox's first mail's) header block, decoded;
/// a Message-Id without its angle brackets.
fn header_of(mail: &str, name: &str) -> Option<String> {
    // The mbox "From " separator line is not a header.
    let headers = match mail.split_once('\n') {
        Some((first, rest)) if first.starts_with("From ") => rest,
        _ => mail,
    };
    let (headers, _) = mailparse::parse_headers(headers.as_bytes()).ok()?;
    use mailparse::MailHeaderMap;
    let value = headers.get_first_value(name)?;
    let value = value.trim();
    let value = value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value);
    (!value.is_empty()).then(|| value.to_string())
}

/// "[PATCH v2 2/3] x86/mm: fix" → "x86/mm: fix".
fn clean_subject(raw: &str) -> String {
    let raw = raw.trim();
    match raw.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((_, rest)) => rest.trim().to_string(),
        None => raw.to_string(),
    }
}

fn slug(subject: &str) -> String {
    let slug: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug: Vec<&str> = slug.split('-').filter(|w| !w.is_empty()).collect();
    let slug = slug.join("-");
    if slug.is_empty() {
        "patch".into()
    } else {
        slug.chars().take(52).collect()
    }
}

/// The files a patch touches (paths with the first component stripped, as
/// `patch -p1` does), from its ---/+++ headers.
pub fn touched_files(patch_text: &str) -> Vec<String> {
    let mut files: Vec<String> = patch_text
        .lines()
        .filter_map(|l| l.strip_prefix("--- ").or_else(|| l.strip_prefix("+++ ")))
        .map(|rest| rest.split('\t').next().unwrap_or(rest).trim())
        .filter(|path| *path != "/dev/null")
        .filter_map(|path| path.split_once('/').map(|(_, p)| p.to_string()))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Applies `patches` in order to copies, under `scratch`, of just the files
/// of `root` they touch; returns the touched paths. `root` is only read.
pub fn apply_on_copy(
    kbuild: &Kbuild,
    root: &Path,
    scratch: &Path,
    patches: &[(&Path, Direction)],
) -> Result<Vec<String>> {
    std::fs::create_dir_all(scratch)?;
    let mut touched = Vec::new();
    for &(patch_file, direction) in patches {
        let text = std::fs::read_to_string(patch_file)
            .with_context(|| format!("cannot read {}", patch_file.display()))?;
        check_is_patch(&patch_file.display().to_string(), &text)?;
        for file in touched_files(&text) {
            let (from, to) = (root.join(&file), scratch.join(&file));
            if !to.exists() && from.is_file() {
                std::fs::create_dir_all(to.parent().context("file has a parent")?)?;
                std::fs::copy(&from, &to)?;
            }
            touched.push(file);
        }
        apply(kbuild, scratch, patch_file, direction)?;
    }
    touched.sort();
    touched.dedup();
    Ok(touched)
}

/// Decides the direction of a patch or series: forward if it applies
/// cleanly (each part on the previous), reverse if the tree already contains
/// it; otherwise names the part and the first hunk that fails. Works on
/// copies under `scratch`; the tree is only read.
pub fn detect(kbuild: &Kbuild, tree: &Path, set: &PatchSet, scratch: &Path) -> Result<Direction> {
    let attempt = |direction: Direction| {
        let _ = std::fs::remove_dir_all(scratch);
        let outcome = apply_on_copy(kbuild, tree, scratch, &set.applied(direction));
        let _ = std::fs::remove_dir_all(scratch);
        outcome
    };
    let forward_err = match attempt(Direction::Forward) {
        Ok(_) => return Ok(Direction::Forward),
        Err(err) => err,
    };
    if attempt(Direction::Reverse).is_ok() {
        return Ok(Direction::Reverse);
    }
    if crate::support::failure::exit_code_of(&forward_err) != Kind::PatchDoesNotApply.exit_code() {
        return Err(forward_err);
    }
    Err(fail(
        Kind::PatchDoesNotApply,
        format!(
            "{} applies to this tree neither forward nor in reverse: {forward_err:#}",
            set.file.display()
        ),
    ))
}

/// Applies the patch to a variant tree (which `detect` has checked), in
/// the run's sandbox: GNU patch can write only the tree.
pub fn apply(kbuild: &Kbuild, tree: &Path, patch: &Path, direction: Direction) -> Result<()> {
    let text = std::fs::read(patch).with_context(|| format!("cannot read {}", patch.display()))?;
    check_is_patch(
        &patch.display().to_string(),
        &String::from_utf8_lossy(&text),
    )?;
    let cmd = kbuild.patching(patch_cmd(tree, text, direction), tree)?;
    let (ok, out) = cmd.output()?;
    if !ok {
        let what =
            first_failed_hunk(&out).unwrap_or_else(|| crate::support::proc::tail_lines(&out, 5));
        let name = patch.file_name().unwrap_or_default().to_string_lossy();
        let reversed = if direction == Direction::Reverse {
            " (reversed)"
        } else {
            ""
        };
        return Err(fail(
            Kind::PatchDoesNotApply,
            format!("{name}{reversed}: {what}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(name: &str, content: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("patverify-patch-{name}-{}", std::process::id()));
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
            (
                "one\n#define MASK (A | PAT)\nthree\n",
                Some(Direction::Reverse),
            ),
            ("one\n#define MASK (B)\nthree\n", None),
        ] {
            let dir = tree_with("detect", content);
            std::fs::write(dir.join("p.patch"), PATCH).unwrap();
            let set = load(&dir.join("p.patch"), &dir.join("series")).unwrap();
            let got = detect(&Kbuild::plain(), &dir.join("t"), &set, &dir.join("scratch"));
            match want {
                Some(d) => assert_eq!(got.unwrap(), d),
                None => {
                    let err = got.unwrap_err();
                    assert_eq!(crate::support::failure::exit_code_of(&err), 4);
                    assert!(
                        err.to_string().contains("hunk #1 FAILED at 1 in f.h"),
                        "{err}"
                    );
                }
            }
            // Detection never changes the tree.
            assert_eq!(std::fs::read_to_string(dir.join("t/f.h")).unwrap(), content);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A `git format-patch --stdout` series: a cover letter, then two
    /// patches where the second changes what the first added.
    const SERIES: &str = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH 0/2] masks\n\nCover letter.\n\nFrom 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH 1/2] x86/mm: add PAT\n\nBody.\n---\n f.h | 2 +-\n\n--- a/f.h\n+++ b/f.h\n@@ -1,3 +1,3 @@\n one\n-#define MASK (A)\n+#define MASK (A | PAT)\n three\n-- \n2.39.5\n\nFrom 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH 2/2] x86/mm: add PAT_LARGE\n\n>From the thread.\n---\n--- a/f.h\n+++ b/f.h\n@@ -1,3 +1,3 @@\n one\n-#define MASK (A | PAT)\n+#define MASK (A | PAT | PAT_LARGE)\n three\n-- \n2.39.5\n";

    #[test]
    fn a_mailbox_series_is_split_in_order_without_the_cover_letter() {
        let mails = split_mailbox(SERIES);
        let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["x86/mm: add PAT", "x86/mm: add PAT_LARGE"]);
        assert!(mails[1].text.contains(">From the thread."));
        assert_eq!(split_mailbox(PATCH).len(), 1, "a plain diff is one patch");
        let dir = tree_with("series-load", "");
        std::fs::write(dir.join("s.mbox"), SERIES).unwrap();
        let set = load(&dir.join("s.mbox"), &dir.join("series")).unwrap();
        let names: Vec<String> = set
            .parts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0001-x86-mm-add-pat.patch",
                "0002-x86-mm-add-pat-large.patch"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folded_and_encoded_subjects_read_as_one_line() {
        let mail = "From 1 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH v2 1/2] x86/mm: a subject long enough\n that format-patch folds it\nMessage-Id: <1@b>\n\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n";
        assert_eq!(
            split_mailbox(mail)[0].subject,
            "x86/mm: a subject long enough that format-patch folds it"
        );
        let encoded = mail.replace(
            "[PATCH v2 1/2] x86/mm: a subject long enough\n that format-patch folds it",
            "=?UTF-8?q?x86/mm:_caf=C3=A9?=",
        );
        assert_eq!(split_mailbox(&encoded)[0].subject, "x86/mm: café");
    }

    #[test]
    fn a_series_applies_like_git_am_and_names_the_part_that_fails() {
        for (content, want) in [
            ("one\n#define MASK (A)\nthree\n", Ok(Direction::Forward)),
            (
                "one\n#define MASK (A | PAT | PAT_LARGE)\nthree\n",
                Ok(Direction::Reverse),
            ),
            (
                "one\n#define MASK (A | PAT)\nthree\n",
                Err("0001-x86-mm-add-pat.patch: hunk #1 FAILED at 1 in f.h"),
            ),
        ] {
            let dir = tree_with("series-detect", content);
            std::fs::write(dir.join("s.mbox"), SERIES).unwrap();
            let set = load(&dir.join("s.mbox"), &dir.join("series")).unwrap();
            match (
                detect(&Kbuild::plain(), &dir.join("t"), &set, &dir.join("scratch")),
                want,
            ) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(err), Err(want)) => {
                    assert_eq!(crate::support::failure::exit_code_of(&err), 4);
                    assert!(format!("{err:#}").contains(want), "{err:#}");
                }
                (got, want) => panic!("{content:?}: got {got:?}, want {want:?}"),
            }
            assert_eq!(
                std::fs::read_to_string(dir.join("t/f.h")).unwrap(),
                content,
                "detection never changes the tree"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let dir = tree_with("series-apply", "one\n#define MASK (A)\nthree\n");
        std::fs::write(dir.join("s.mbox"), SERIES).unwrap();
        let set = load(&dir.join("s.mbox"), &dir.join("series")).unwrap();
        apply_on_copy(
            &Kbuild::plain(),
            &dir.join("t"),
            &dir.join("copy"),
            &set.applied(Direction::Forward),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("copy/f.h")).unwrap(),
            "one\n#define MASK (A | PAT | PAT_LARGE)\nthree\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_patch_that_applies_only_partly_is_refused_and_changes_nothing() {
        let dir = tree_with("partial", "one\n#define MASK (A)\nthree\n");
        std::fs::write(dir.join("t/g.h"), "alpha\nbeta\ngamma\n").unwrap();
        // The hunk for f.h fits, the one for g.h does not.
        let partial = format!(
            "{PATCH}--- a/g.h\n+++ b/g.h\n@@ -1,3 +1,3 @@\n alpha\n-BETA\n+beta2\n gamma\n"
        );
        std::fs::write(dir.join("p.patch"), partial).unwrap();
        let set = load(&dir.join("p.patch"), &dir.join("series")).unwrap();
        let err = detect(&Kbuild::plain(), &dir.join("t"), &set, &dir.join("scratch")).unwrap_err();
        assert_eq!(crate::support::failure::exit_code_of(&err), 4);
        assert!(
            format!("{err:#}").contains("hunk #1 FAILED at 1 in g.h"),
            "{err:#}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("t/f.h")).unwrap(),
            "one\n#define MASK (A)\nthree\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn applies_in_both_directions() {
        let dir = tree_with("apply", "one\n#define MASK (A | PAT)\nthree\n");
        std::fs::write(dir.join("p.patch"), PATCH).unwrap();
        apply(
            &Kbuild::plain(),
            &dir.join("t"),
            &dir.join("p.patch"),
            Direction::Reverse,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("t/f.h")).unwrap(),
            "one\n#define MASK (A)\nthree\n"
        );
        apply(
            &Kbuild::plain(),
            &dir.join("t"),
            &dir.join("p.patch"),
            Direction::Forward,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("t/f.h")).unwrap(),
            "one\n#define MASK (A | PAT)\nthree\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert_eq!(
            crate::support::failure::exit_code_of(&check_is_patch("x", "  \n").unwrap_err()),
            4
        );
        let err = check_is_patch("x", "hello world\n").unwrap_err();
        assert!(err.to_string().contains("not a unified diff"));
        check_is_patch("x", PATCH).unwrap();
    }

    #[test]
    fn a_file_name_outside_the_tree_is_refused() {
        let hunk = "@@ -1 +1 @@\n-a\n+b\n";
        for headers in [
            "--- a/../../root/x\n+++ b/../../root/x\n",
            "--- /etc/passwd\n+++ /etc/passwd\n",
            "--- a/f.h\t2023-01-01\n+++ b/sub/../../x\t2023-01-01\n",
            "diff --git a/f.h b/f.h\nrename from f.h\nrename to ../f.h\n--- a/f.h\n+++ b/f.h\n",
        ] {
            let err = check_is_patch("p", &format!("{headers}{hunk}")).unwrap_err();
            assert_eq!(crate::support::failure::exit_code_of(&err), 4, "{headers}");
            assert!(err.to_string().contains("outside the tree"), "{err}");
        }
        // A new file (from /dev/null) and a name that only contains dots.
        check_is_patch("p", &format!("--- /dev/null\n+++ b/a..b/f\n{hunk}")).unwrap();
    }

    #[test]
    fn the_shipped_patch_is_a_patch_to_the_masks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches");
        let text =
            std::fs::read_to_string(dir.join(crate::stages::variant::DEFAULT_PATCH)).unwrap();
        check_is_patch("default", &text).unwrap();
        assert!(text.contains("+#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)"));
    }
}
