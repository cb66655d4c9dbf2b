//! End-to-end: probe's exit codes for `git bisect run`, and a bisect over a real
//! kernel history that lands on the commit that brought the bug back.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::Path;
use std::sync::OnceLock;
use xtask::record::Record;
use xtask::support::failure::Kind;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new("probe-bisect"))
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_exits_by_what_the_kernel_kept() -> Result<()> {
    let mut checks = fixture().checks("probe");
    probe_exit_codes(&cache_root(), &fixture().out, &mut checks)?;
    checks.finish()
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn bisect_finds_the_bad_commit() -> Result<()> {
    let mut checks = fixture().checks("bisect");
    let f = fixture();
    bisect_finds_the_commit(&cache_root(), &f.record, &f.out, &mut checks)?;
    checks.finish()
}

/// probe judges one kernel: the tree with the fix is good (0), the tree with
/// the fix reverted is bad (1), and --expect lost swaps them. Both kernels are
/// the ones verify built (same content), so only the boots run.
fn probe_exit_codes(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    let revert = revert_patch(out)?;
    let stale = stale_patch(out)?;
    let native = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = strings(&["probe", "--env", "native"]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let revert_arg = revert.display().to_string();
    let (good_json, bad_json) = (out.join("probe-good.json"), out.join("probe-bad.json"));
    let (good_arg, bad_arg) = (
        good_json.display().to_string(),
        bad_json.display().to_string(),
    );
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        (
            "probe of the fixed tree is good",
            native(&["--json", &good_arg]),
            0,
        ),
        (
            "probe with the fix reverted is bad",
            native(&["--patch", &revert_arg, "--json", &bad_arg]),
            1,
        ),
        (
            "probe --expect lost with the fix reverted is good",
            native(&["--patch", &revert_arg, "--expect", "lost"]),
            0,
        ),
        (
            "probe with a patch that does not apply is untestable",
            native(&["--patch", &stale.display().to_string()]),
            125,
        ),
        (
            "probe of a directory that is not a kernel aborts",
            native(&["--kernel", "/usr/share"]),
            128,
        ),
        (
            "probe with a bad flag aborts",
            native(&["--no-such-flag"]),
            128,
        ),
    ];
    for (name, args, want) in cases {
        println!("==> e2e: {name}");
        let (code, text) = harness(cache_root, &args)?;
        checks.check(name, code == Some(want), || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 3)
            )
        });
    }
    // Last week's good tree against today's bad one, and back.
    let (code, text) = harness(
        cache_root,
        &[
            "report".into(),
            "diff".into(),
            good_arg.clone(),
            bad_arg.clone(),
        ],
    )?;
    checks.check(
        "report diff good → bad: exit 1, names the newly lost modes",
        code == exit(Kind::CandidateLost)
            && text.contains("LOST probe native mmap_fault WT: kept WT → LOST →UC")
            && text.contains(
                "probe native mprotect WT: kept WT → kept UC, lost earlier at mmap_fault",
            ),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    let (code, text) = harness(
        cache_root,
        &["report".into(), "diff".into(), bad_arg, good_arg],
    )?;
    checks.check(
        "report diff bad → good: exit 0",
        code == Some(0) && text.contains("0 newly lost"),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    Ok(())
}

/// A real kernel history in which one commit reintroduces the bug and a
/// later one cannot be built: `cargo xtask bisect` must land on the first,
/// skipping the second, without touching the repository it was given.
fn bisect_finds_the_commit(
    cache_root: &Path,
    json: &Record,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e: bisect over a synthetic kernel history");
    // The pristine source verify used (variant trees carry the hooked module).
    let tree = source_tree(json)?;
    let repo = out.join("history");
    let _ = std::fs::remove_dir_all(&repo);
    let cp = Command::new("cp").arg("-a").arg(tree).arg(&repo);
    cp.run()?;
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=patverify",
                "-c",
                "user.email=patverify@localhost",
                "-c",
                "core.compression=0",
                // No background gc/maintenance touching the tree while its hash is compared.
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
            ])
            .args(args.iter().copied())
            // Fixed dates: the same history gets the same commit ids every
            // run, so the kernels built for its revisions stay cached.
            .env("GIT_AUTHOR_DATE", "2023-05-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2023-05-01T00:00:00Z")
    };
    git(&["init", "--quiet"]).run()?;
    // --force: Debian's kernel source ignores everything at the top level.
    git(&["add", "-A", "--force"]).run()?;
    git(&["commit", "--quiet", "-m", "good: the tree with the fix"]).run()?;
    xtask::stages::patch::apply(
        &xtask::stages::kbuild::Kbuild::plain(),
        &repo,
        &xtask::commands::verify::default_patch(),
        xtask::stages::patch::Direction::Reverse,
    )?;
    git(&["commit", "--quiet", "-am", "bad: reintroduce the bug"]).run()?;
    let makefile = repo.join("Makefile");
    let original = std::fs::read_to_string(&makefile)?;
    std::fs::write(
        &makefile,
        format!("$(error this commit cannot be built)\n{original}"),
    )?;
    git(&["commit", "--quiet", "-am", "untestable: broken Makefile"]).run()?;
    std::fs::write(&makefile, &original)?;
    git(&["commit", "--quiet", "-am", "bad: fix the Makefile"]).run()?;
    std::fs::write(repo.join("README"), "harmless\n")?;
    git(&["commit", "--quiet", "-am", "bad: harmless change"]).run()?;
    let log = git(&["log", "--format=%H %s"]).output_quiet()?.1;
    let bad_commit = log
        .lines()
        .find(|l| l.ends_with("bad: reintroduce the bug"))
        .and_then(|l| l.split(' ').next())
        .context("no bug commit")?
        .to_string();
    let status_before = git(&["status", "--porcelain"]).output_quiet()?.1;
    let head_before = git(&["rev-parse", "HEAD"]).output_quiet()?.1;
    let tree_hash = || -> Result<String> {
        // Every file's content, .git included (refs, objects, HEAD) but for
        // the index, whose stat cache `git status` itself may refresh.
        let script = "find . -path ./.git/index -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum";
        Ok(Command::new("sh")
            .arg("-c")
            .arg(script)
            .dir(&repo)
            .output_quiet()?
            .1)
    };
    let hash_before = tree_hash()?;

    let args: Vec<String> = strings(&[
        "bisect",
        "--kernel",
        &repo.display().to_string(),
        "--good",
        "HEAD~4",
        "--bad",
        "HEAD",
        "--out",
        &out.join("bisect").display().to_string(),
    ]);
    let (code, text) = harness(cache_root, &args)?;
    println!(
        "{}",
        text.lines()
            .filter(|l| {
                l.starts_with("  ") || l.starts_with("first bad") || l.contains("confirmed")
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    checks.check(
        "bisect lands on the commit that reintroduces the bug",
        code == Some(0) && text.contains(&format!("first bad commit: {bad_commit}")),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 6)
            )
        },
    );
    checks.check(
        "bisect skipped the untestable commit",
        text.contains("untestable (skip)"),
        || "no step was skipped".into(),
    );
    checks.check(
        "bisect confirms its culprit: reverted it keeps every mode, and its parent too",
        text.contains("confirmed: with the culprit reverted every mode is kept"),
        || xtask::support::proc::tail_lines(&text, 4),
    );
    let status_after = git(&["status", "--porcelain"]).output_quiet()?.1;
    let head_after = git(&["rev-parse", "HEAD"]).output_quiet()?.1;
    checks.check(
        "bisect left the repository as it was",
        status_before == status_after && head_before == head_after,
        || {
            format!(
                "status {status_before:?} → {status_after:?}, HEAD {head_before} → {head_after}"
            )
        },
    );

    // The bisect's clone is removed when it ends (its logs stay beside it).
    let clones: Vec<String> = std::fs::read_dir(cache_root.join("bisect"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".git").exists())
        .map(|p| p.display().to_string())
        .collect();
    checks.check(
        "bisect leaves no work tree in the cache",
        clones.is_empty(),
        || format!("left behind: {}", clones.join(", ")),
    );

    // --rev builds a revision of a git tree without checking it out.
    let args: Vec<String> = strings(&[
        "probe",
        "--env",
        "native",
        "--kernel",
        &repo.display().to_string(),
        "--rev",
        "HEAD~3",
    ]);
    let (code, text) = harness(cache_root, &args)?;
    checks.check(
        "probe --rev of the bug commit is bad",
        code == exit(Kind::CandidateLost),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    let head_after_rev = git(&["rev-parse", "HEAD"]).output_quiet()?.1;
    checks.check(
        "probe --rev left HEAD alone",
        head_after_rev == head_before,
        || format!("HEAD {head_before} → {head_after_rev}"),
    );
    // A failed run too: a patch that does not apply (exit 125).
    let args: Vec<String> = strings(&[
        "probe",
        "--env",
        "native",
        "--kernel",
        &repo.display().to_string(),
        "--patch",
        &stale_patch(out)?.display().to_string(),
    ]);
    let (code, _) = harness(cache_root, &args)?;
    let hash_after = tree_hash()?;
    checks.check(
        "after bisect, probe --rev and a failed probe the tree is byte-for-byte as before",
        code == Some(xtask::support::failure::BISECT_SKIP) && hash_after == hash_before,
        || format!("exit {code:?}, tree hash {hash_before:?} → {hash_after:?}"),
    );
    Ok(())
}

#[test]
fn reversing_a_diff_swaps_sides_and_hunk_ranges() {
    let diff = "--- a/f\n+++ b/f\n@@ -1,3 +1,4 @@ ctx\n one\n-two\n+TWO\n+2\n";
    assert_eq!(
        reversed(diff),
        "--- a/f\n+++ b/f\n@@ -1,4 +1,3 @@ ctx\n one\n+two\n-TWO\n-2\n"
    );
}
