//! End-to-end: several candidates side by side, a mailbox series, and a
//! patch that does not touch the bug (not a pass).

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;
use std::sync::OnceLock;
use xtask::record::{CandidateVerdict, Record, Verdict};
use xtask::support::failure::Kind;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new("candidates"))
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_mailbox_series_is_the_whole_fix_already_contained() -> Result<()> {
    let mut checks = fixture().checks("series");
    series_from_a_mailbox(
        &cache_root(),
        &fixture().record,
        &fixture().out,
        &mut checks,
    )?;
    checks.finish()
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn two_candidates_are_judged_side_by_side() -> Result<()> {
    let mut checks = fixture().checks("side-by-side");
    two_candidates_side_by_side(&cache_root(), &fixture().out, &mut checks)?;
    checks.finish()
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_baseline_that_keeps_everything_is_not_a_pass() -> Result<()> {
    let mut checks = fixture().checks("not-reproduced");
    let f = fixture();
    baseline_that_keeps_everything_is_not_a_pass(&cache_root(), &f.record, &f.out, &mut checks)?;
    checks.finish()
}

/// A patch that reverts the shipped fix (its diff, reversed).
/// The upstream fix as a two-mail `git format-patch` series (one mask per
/// mail, the second on top of the first, with a cover letter), made from the
/// tree itself: verify must treat it as the whole fix, already contained.
fn series_from_a_mailbox(
    cache_root: &Path,
    json: &Record,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    let dir = out.join("series");
    std::fs::create_dir_all(&dir)?;
    let mbox_path = series_mbox(source_tree(json)?, &dir)?;
    println!("==> e2e: verify --patch a two-mail series");
    let (code, text, series_json) = verify_with_patches(cache_root, &dir, &[&mbox_path])?;
    let series_json = series_json.unwrap_or_default();
    checks.check(
        "a mailbox series is verified as one candidate: exit 0",
        code == Some(0) && series_json.verdict == Verdict::Pass,
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 3)
            )
        },
    );
    checks.check(
        "the series is recognised as already in the tree (2 mails)",
        series_json.patches.first().is_some_and(|p| {
            p.direction == xtask::stages::patch::Direction::Reverse && p.series.len() == 2
        }),
        || format!("{:?}", series_json.patches),
    );
    let builds_reused =
        !series_json.builds.is_empty() && series_json.builds.iter().all(|b| b.reused);
    checks.check(
        "the series' kernels are the single patch's (same content, no rebuild)",
        builds_reused,
        || format!("{:?}", series_json.builds),
    );
    a_reply_carries_tested_by_to_b4(&dir, &mbox_path, checks)
}

/// The two-mail series, made from `tree`'s header (the first mail keeps
/// `_PAGE_PAT`, the second `_PAGE_PAT_LARGE`), as `DIR/fix-series.mbox`.
fn series_mbox(tree: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let file = "arch/x86/include/asm/pgtable_types.h";
    let fixed = std::fs::read_to_string(tree.join(file))?;
    let (page_fixed, page_old) = (
        "#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)",
        "#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK)",
    );
    let (huge_fixed, huge_old) = (
        "#define _HPAGE_CHG_MASK (_COMMON_PAGE_CHG_MASK | _PAGE_PSE | _PAGE_PAT_LARGE)",
        "#define _HPAGE_CHG_MASK (_COMMON_PAGE_CHG_MASK | _PAGE_PSE)",
    );
    let half = fixed.replace(huge_fixed, huge_old);
    let reverted = half.replace(page_fixed, page_old);
    let udiff = |from: &str, to: &str| unified_diff(file, from, to, dir);
    // As git format-patch --thread --cover-letter and git send-email make
    // them: the parts answer the cover letter.
    let mail = |n: usize, subject: &str, diff: String| {
        format!("From {n:040} Mon Sep 17 00:00:00 2001\nFrom: Test <test@example.org>\nDate: Mon, 1 Jan 2024 00:00:0{n} +0000\nSubject: [PATCH {n}/2] {subject}\nMessage-Id: <part{n}.{COVER_ID}>\nIn-Reply-To: <{COVER_ID}>\nReferences: <{COVER_ID}>\n\nPart {n} of the fix.\n\nSigned-off-by: Test <test@example.org>\n---\n{diff}-- \n2.39.5\n\n")
    };
    let mbox = format!(
        "From {:040} Mon Sep 17 00:00:00 2001\nFrom: Test <test@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH 0/2] the PAT masks\nMessage-Id: <{COVER_ID}>\n\nCover letter.\n\n{}{}",
        0,
        mail(1, "x86/mm: keep _PAGE_PAT in _PAGE_CHG_MASK", udiff(&reverted, &half)?),
        mail(2, "x86/mm: keep _PAGE_PAT_LARGE in _HPAGE_CHG_MASK", udiff(&half, &fixed)?)
    );
    let path = dir.join("fix-series.mbox");
    std::fs::write(&path, mbox)?;
    Ok(path)
}

/// The series' cover letter's Message-Id.
const COVER_ID: &str = "cover.20240101.patverify-test@example.org";

/// `report mail` on the series' record gives a reply that the real `b4 am`
/// (PyPI, offline) threads under the cover letter and whose Tested-by it
/// adds to every patch of the series.
fn a_reply_carries_tested_by_to_b4(dir: &Path, mbox: &Path, checks: &mut Checks) -> Result<()> {
    let args = strings(&[
        "report",
        "mail",
        &dir.join("verify.json").display().to_string(),
        "--name",
        "A Tester",
        "--email",
        "tester@example.org",
    ]);
    let (code, reply) = harness(&cache_root(), &args)?;
    checks.check(
        "report mail: a reply threaded on the cover letter, with a Tested-by",
        code == Some(0)
            && reply.starts_with("Subject: Re: [PATCH 0/2] the PAT masks\n")
            && reply.contains(&format!("In-Reply-To: <{COVER_ID}>"))
            && reply.contains("Tested-by: A Tester <tester@example.org>"),
        || reply.clone(),
    );
    // The thread as an archive would hold it: the series, then the reply.
    let sent = format!("From patverify Mon Sep 17 00:00:00 2001\nFrom: A Tester <tester@example.org>\nDate: Mon, 1 Jan 2024 01:00:00 +0000\nMessage-Id: <reply.{COVER_ID}>\n{reply}");
    let thread = dir.join("thread.mbox");
    std::fs::write(&thread, std::fs::read_to_string(mbox)? + &sent)?;
    let b4 = tools_venv()?.join("bin/b4");
    let am = dir.join("b4-am");
    let (ok, said) = Command::new(b4)
        .args(["--offline-mode", "am", "-m"])
        .arg(&thread)
        .arg("-o")
        .arg(&am)
        .arg(COVER_ID)
        .output_quiet()?;
    let series = std::fs::read_dir(&am)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "mbx"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    checks.check(
        "b4 am picks up the reply's Tested-by for both patches",
        ok && series
            .matches("Tested-by: A Tester <tester@example.org>")
            .count()
            == 2,
        || said.clone(),
    );
    Ok(())
}

/// The upstream fix and the thread's v2 proposal in one run: one baseline,
/// one kernel per candidate. The proposal widens only pgprot_modify()'s mask,
/// so the entry pte_modify() rewrites with a protection that has no cache
/// bits (pte_modify_direct) loses the PAT bit as on the baseline.
fn two_candidates_side_by_side(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    let patches = xtask::support::repo_dir().join("patches");
    let upstream = patches.join(xtask::stages::variant::DEFAULT_PATCH);
    let proposal = patches.join(xtask::stages::variant::PROPOSAL_PATCH);
    let dir = out.join("two-candidates");
    println!("==> e2e: verify --patch upstream --patch proposal");
    let (code, text, json) = verify_with_patches(cache_root, &dir, &[&upstream, &proposal])?;
    println!("{}", xtask::support::proc::tail_lines(&text, 60));
    let Some(json) = json else {
        checks.check("two candidates: verify wrote its JSON", false, || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 3)
            )
        });
        return Ok(());
    };
    let verdict_of = |name: &str| {
        let mut candidates = json.candidates.iter();
        let candidate = candidates.find(|c| c.name == name)?;
        Some((candidate.verdict, candidate.lost.clone()))
    };
    checks.check(
        "two candidates: exit 1 (the proposal loses modes)",
        code == exit(Kind::CandidateLost) && json.verdict == Verdict::Fail,
        || format!("exit {code:?}, verdict {}", json.verdict),
    );
    checks.check(
        "two candidates: candidate-1 (upstream) passes",
        verdict_of("candidate-1").is_some_and(|(v, _)| v == CandidateVerdict::Pass),
        || format!("{:?}", verdict_of("candidate-1")),
    );
    // v2 leaves _PAGE_CHG_MASK, which pte_modify() uses, without the PAT
    // bit: a device mapping's mprotect() loses it as on the baseline.
    let want_lost = strings(&[
        "native devmem_mprotect WT→UC",
        "native devmem_mprotect WP→WC",
        "native pte_modify_direct WT→UC",
        "native pte_modify_direct WP→WC",
        "xen devmem_mprotect WC→UC",
        "xen pte_modify_direct WC→WB",
        "xen pte_modify_direct WP→WT",
    ]);
    checks.check(
        "two candidates: candidate-2 (v2 proposal) loses exactly the PAT-bit modes of devmem_mprotect and pte_modify_direct",
        verdict_of("candidate-2")
            .is_some_and(|(v, lost)| v == CandidateVerdict::Fail && lost == want_lost),
        || format!("{:?}", verdict_of("candidate-2")),
    );
    checks.check(
        "two candidates: the table has a column per candidate",
        text.lines().any(|l| {
            l.contains("baseline") && l.contains("candidate-1") && l.contains("candidate-2")
        }),
        || xtask::support::proc::tail_lines(&text, 5),
    );
    Ok(())
}

/// A "candidate" that changes nothing relevant: the baseline keeps every
/// mode, so verify must refuse to call it a pass (exit 3).
fn baseline_that_keeps_everything_is_not_a_pass(
    cache_root: &Path,
    json: &Record,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e: a patch that does not touch the bug");
    let tree = source_tree(json)?;
    let path = unrelated_patch(tree, &out.join("unrelated.patch"))?;
    let args: Vec<String> = strings(&[
        "verify",
        "--env",
        "native",
        "--patch",
        &path.display().to_string(),
        "--out",
        &out.join("unrelated").display().to_string(),
    ]);
    let (code, text) = harness(cache_root, &args)?;
    checks.check(
        "an unrelated patch: exit 3, the bug was not reproduced",
        code == exit(Kind::BaselineNotReproduced) && text.contains("not reproduced"),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    Ok(())
}
