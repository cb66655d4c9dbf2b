//! End-to-end: probe's exit codes for `git bisect run`, and a bisect over a real
//! kernel history that lands on the commit that brought the bug back.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::Path;
use std::sync::OnceLock;
use xtask::support::failure::Kind;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new("probe-bisect"))
}

/// A harness run's exit code and what it printed.
struct Ran {
    code: Option<i32>,
    text: String,
}

impl Ran {
    fn new(args: &[String]) -> Ran {
        let (code, text) = harness(&cache_root(), args).expect("the harness ran");
        Ran { code, text }
    }

    fn tail(&self, lines: usize) -> String {
        let tail = xtask::support::proc::tail_lines(&self.text, lines);
        format!("exit {:?}: {tail}", self.code)
    }
}

/// `probe --env native EXTRA…`.
fn probe(extra: &[&str]) -> Ran {
    let mut args = strings(&["probe", "--env", "native"]);
    args.extend(strings(extra));
    Ran::new(&args)
}

/// probe of the tree with the fix (good) and with it reverted (bad), with
/// their records' files. Both kernels are the ones verify built (same
/// content), so only the boots run.
struct GoodAndBad {
    good: Ran,
    bad: Ran,
    good_json: String,
    bad_json: String,
}

fn good_and_bad() -> &'static GoodAndBad {
    static RAN: OnceLock<GoodAndBad> = OnceLock::new();
    RAN.get_or_init(|| {
        let out = &fixture().out;
        let revert = revert_patch(out).expect("the revert patch");
        let good_json = out.join("probe-good.json").display().to_string();
        let bad_json = out.join("probe-bad.json").display().to_string();
        let revert = revert.display().to_string();
        GoodAndBad {
            good: probe(&["--json", &good_json]),
            bad: probe(&["--patch", &revert, "--json", &bad_json]),
            good_json,
            bad_json,
        }
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_of_the_fixed_tree_is_good() {
    let good = &good_and_bad().good;
    assert_eq!(good.code, Some(0), "{}", good.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_with_the_fix_reverted_is_bad() {
    let bad = &good_and_bad().bad;
    assert_eq!(bad.code, Some(1), "{}", bad.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_expect_lost_with_the_fix_reverted_is_good() {
    let revert = revert_patch(&fixture().out).unwrap().display().to_string();
    let ran = probe(&["--patch", &revert, "--expect", "lost"]);
    assert_eq!(ran.code, Some(0), "{}", ran.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_with_a_patch_that_does_not_apply_is_untestable() {
    let stale = stale_patch(&fixture().out).unwrap().display().to_string();
    let ran = probe(&["--patch", &stale]);
    assert_eq!(ran.code, Some(125), "{}", ran.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_of_a_directory_that_is_not_a_kernel_aborts() {
    let ran = probe(&["--kernel", "/usr/share"]);
    assert_eq!(ran.code, Some(128), "{}", ran.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_with_a_bad_flag_aborts() {
    let ran = probe(&["--no-such-flag"]);
    assert_eq!(ran.code, Some(128), "{}", ran.tail(3));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn report_diff_good_to_bad_exits_1_naming_the_newly_lost_modes() {
    // Last week's good tree against today's bad one.
    let gb = good_and_bad();
    let ran = Ran::new(&strings(&["report", "diff", &gb.good_json, &gb.bad_json]));
    assert_eq!(ran.code, exit(Kind::CandidateLost), "{}", ran.tail(4));
    assert!(
        ran.text
            .contains("LOST probe native mmap_fault WT: kept WT → LOST →UC"),
        "{}",
        ran.tail(4)
    );
    let later = "probe native mprotect WT: kept WT → kept UC, lost earlier at mmap_fault";
    assert!(ran.text.contains(later), "{}", ran.tail(4));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn report_diff_bad_to_good_exits_0() {
    let gb = good_and_bad();
    let ran = Ran::new(&strings(&["report", "diff", &gb.bad_json, &gb.good_json]));
    assert_eq!(ran.code, Some(0), "{}", ran.tail(4));
    assert!(ran.text.contains("0 newly lost"), "{}", ran.tail(4));
}

/// What the repository looked like: `git status`, HEAD, and a hash of
/// every file's content.
#[derive(Debug, PartialEq)]
struct RepoState {
    status: String,
    head: String,
    content: String,
}

/// A real kernel history in which one commit reintroduces the bug and a
/// later one cannot be built, and what was done to it: `cargo xtask
/// bisect`, then `probe --rev` of the bug commit, then a probe of the work
/// tree with a patch that does not apply — with the repository's state
/// before and after each.
struct History {
    repo: std::path::PathBuf,
    bad_commit: String,
    before: RepoState,
    bisect: Ran,
    after_bisect: RepoState,
    /// Work trees the bisect left in the cache.
    clones_left: Vec<String>,
    probe_rev: Ran,
    after_probe_rev: RepoState,
    failed_probe: Ran,
    after_all: RepoState,
}

fn history() -> &'static History {
    static RAN: OnceLock<History> = OnceLock::new();
    RAN.get_or_init(|| bisect_a_history().expect("the bisect scenario"))
}

/// git in `repo`, with fixed dates (the same history gets the same commit
/// ids every run, so the kernels built for its revisions stay cached) and
/// no background gc touching the tree while its hash is compared.
fn git(repo: &Path, args: &[&str]) -> Command {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=patverify",
            "-c",
            "user.email=patverify@localhost",
        ])
        .args(["-c", "core.compression=0", "-c", "gc.auto=0"])
        .args(["-c", "maintenance.auto=false"])
        .args(args.iter().copied())
        .env("GIT_AUTHOR_DATE", "2023-05-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2023-05-01T00:00:00Z")
}

fn repo_state(repo: &Path) -> Result<RepoState> {
    // Every file's content, .git included (refs, objects, HEAD) but for
    // the index, whose stat cache `git status` itself may refresh.
    let script = "find . -path ./.git/index -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum";
    let hash = Command::new("sh").arg("-c").arg(script).dir(repo);
    Ok(RepoState {
        status: git(repo, &["status", "--porcelain"]).output_quiet()?.1,
        head: git(repo, &["rev-parse", "HEAD"]).output_quiet()?.1,
        content: hash.output_quiet()?.1,
    })
}

/// good (the fix) → bad (the fix reverted) → untestable (a broken
/// Makefile) → bad (Makefile mended) → bad (harmless change); returns the
/// bad commit's id.
fn make_history(tree: &Path, repo: &Path) -> Result<String> {
    let _ = std::fs::remove_dir_all(repo);
    Command::new("cp").arg("-a").arg(tree).arg(repo).run()?;
    let commit = |message: &str| git(repo, &["commit", "--quiet", "-am", message]).run();
    git(repo, &["init", "--quiet"]).run()?;
    // --force: Debian's kernel source ignores everything at the top level.
    git(repo, &["add", "-A", "--force"]).run()?;
    commit("good: the tree with the fix")?;
    xtask::stages::patch::apply(
        &xtask::stages::kbuild::Kbuild::plain(),
        repo,
        &xtask::stages::variant::default_patch(),
        xtask::stages::patch::Direction::Reverse,
    )?;
    commit("bad: reintroduce the bug")?;
    let makefile = repo.join("Makefile");
    let original = std::fs::read_to_string(&makefile)?;
    let broken = format!("$(error this commit cannot be built)\n{original}");
    std::fs::write(&makefile, broken)?;
    commit("untestable: broken Makefile")?;
    std::fs::write(&makefile, &original)?;
    commit("bad: fix the Makefile")?;
    std::fs::write(repo.join("README"), "harmless\n")?;
    commit("bad: harmless change")?;
    let log = git(repo, &["log", "--format=%H %s"]).output_quiet()?.1;
    let bad = log
        .lines()
        .find(|l| l.ends_with("bad: reintroduce the bug"));
    let id = bad
        .and_then(|l| l.split(' ').next())
        .context("no bug commit")?;
    Ok(id.to_string())
}

fn bisect_a_history() -> Result<History> {
    println!("==> e2e: bisect over a synthetic kernel history");
    let out = &fixture().out;
    let repo = out.join("history");
    // The pristine source verify used (variant trees carry the hooked module).
    let bad_commit = make_history(source_tree(&fixture().record)?, &repo)?;
    let before = repo_state(&repo)?;
    let (kernel, bisect_out) = (repo.display().to_string(), out.join("bisect"));
    let bisect = Ran::new(&strings(&[
        "bisect",
        "--kernel",
        &kernel,
        "--good",
        "HEAD~4",
        "--bad",
        "HEAD",
        "--out",
        &bisect_out.display().to_string(),
    ]));
    let after_bisect = repo_state(&repo)?;
    // The bisect's clone is removed when it ends (its logs stay beside it).
    let clones_left = std::fs::read_dir(cache_root().join("bisect"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".git").exists())
        .map(|p| p.display().to_string())
        .collect();
    // --rev builds a revision of a git tree without checking it out.
    let probe_rev = probe(&["--kernel", &kernel, "--rev", "HEAD~3"]);
    let after_probe_rev = repo_state(&repo)?;
    let stale = stale_patch(out)?.display().to_string();
    let failed_probe = probe(&["--kernel", &kernel, "--patch", &stale]);
    let after_all = repo_state(&repo)?;
    // A whole kernel tree (3.3 GB): its states are what the tests read.
    let _ = std::fs::remove_dir_all(&repo);
    Ok(History {
        after_all,
        repo,
        bad_commit,
        before,
        bisect,
        after_bisect,
        clones_left,
        probe_rev,
        after_probe_rev,
        failed_probe,
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn bisect_lands_on_the_commit_that_reintroduces_the_bug() {
    let h = history();
    let first_bad = format!("first bad commit: {}", h.bad_commit);
    assert_eq!(h.bisect.code, Some(0), "{}", h.bisect.tail(6));
    assert!(h.bisect.text.contains(&first_bad), "{}", h.bisect.tail(6));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn bisect_skips_the_untestable_commit() {
    let bisect = &history().bisect;
    assert!(
        bisect.text.contains("untestable (skip)"),
        "{}",
        bisect.tail(6)
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn bisect_confirms_its_culprit_reverted_and_its_parent_keep_every_mode() {
    let bisect = &history().bisect;
    let confirmed = "confirmed: with the culprit reverted every mode is kept";
    assert!(bisect.text.contains(confirmed), "{}", bisect.tail(4));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn bisect_leaves_the_repository_and_the_cache_as_they_were() {
    let h = history();
    assert_eq!(h.after_bisect.status, h.before.status);
    assert_eq!(h.after_bisect.head, h.before.head);
    assert!(h.clones_left.is_empty(), "left behind: {:?}", h.clones_left);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_rev_of_the_bug_commit_is_bad_and_leaves_head_alone() {
    let h = history();
    let rev = &h.probe_rev;
    assert_eq!(rev.code, exit(Kind::CandidateLost), "{}", rev.tail(4));
    assert_eq!(h.after_probe_rev.head, h.before.head);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn after_bisect_probe_rev_and_a_failed_probe_the_tree_is_byte_for_byte_as_before() {
    let h = history();
    let failed = &h.failed_probe;
    let skip = Some(xtask::support::failure::BISECT_SKIP);
    assert_eq!(failed.code, skip, "{}", failed.tail(3));
    assert_eq!(h.after_all, h.before, "{}", h.repo.display());
}

#[test]
fn reversing_a_diff_swaps_sides_and_hunk_ranges() {
    let diff = "--- a/f\n+++ b/f\n@@ -1,3 +1,4 @@ ctx\n one\n-two\n+TWO\n+2\n";
    assert_eq!(
        reversed(diff),
        "--- a/f\n+++ b/f\n@@ -1,4 +1,3 @@ ctx\n one\n+two\n-TWO\n-2\n"
    );
}
