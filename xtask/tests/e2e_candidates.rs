//! End-to-end: several candidates side by side, a mailbox series, and a
//! patch that does not touch the bug (not a pass). Each run once; each
//! check is its own test on what it left.

mod common;

use anyhow::Result;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xtask::record::{CandidateVerdict, Record, Verdict};
use xtask::support::failure::Kind;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new("candidates"))
}

/// A verify with candidates: how it ended and the record it wrote.
struct Candidates {
    code: Option<i32>,
    text: String,
    record: Record,
}

impl Candidates {
    /// `verify --patch P…` with its outputs in the scenario's `dir`.
    fn verify(dir: &str, patches: &[&Path]) -> Candidates {
        let dir = fixture().out.join(dir);
        let (code, text, record) =
            verify_with_patches(&cache_root(), &dir, patches).expect("the harness runs");
        println!("{}", xtask::support::proc::tail_lines(&text, 60));
        let record = record.unwrap_or_else(|| {
            panic!(
                "verify wrote no record: exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 3)
            )
        });
        Candidates { code, text, record }
    }

    /// A candidate's verdict and the rows it lost.
    fn candidate(&self, name: &str) -> Option<(CandidateVerdict, Vec<String>)> {
        let mut candidates = self.record.candidates.iter();
        let candidate = candidates.find(|c| c.name == name)?;
        Some((candidate.verdict, candidate.lost.clone()))
    }
}

/// The upstream fix as a two-mail `git format-patch` series (one mask per
/// mail, the second on top of the first, with a cover letter), made from the
/// tree itself: verify must treat it as the whole fix, already contained.
struct Series {
    mbox: PathBuf,
    run: Candidates,
}

fn series() -> &'static Series {
    static SERIES: OnceLock<Series> = OnceLock::new();
    SERIES.get_or_init(|| {
        let dir = fixture().out.join("series");
        std::fs::create_dir_all(&dir).expect("the series' directory");
        let tree = source_tree(&fixture().record).expect("the fixture's tree");
        let mbox = series_mbox(tree, &dir).expect("the series' mailbox");
        println!("==> e2e: verify --patch a two-mail series");
        let run = Candidates::verify("series", &[&mbox]);
        Series { mbox, run }
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_mailbox_series_is_verified_as_one_candidate_that_passes() {
    let run = &series().run;
    assert_eq!(
        (run.code, run.record.verdict),
        (Some(0), Verdict::Pass),
        "{}",
        run.text
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_series_is_recognised_as_already_in_the_tree() {
    let patches = &series().run.record.patches;
    let seen = patches.first().map(|p| (p.direction, p.series.len()));
    let reverse = xtask::stages::patch::Direction::Reverse;
    assert_eq!(seen, Some((reverse, 2)), "{patches:?}");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_series_kernels_are_the_single_patchs_no_rebuild() {
    let builds = &series().run.record.builds;
    assert!(
        !builds.is_empty() && builds.iter().all(|b| b.reused),
        "{builds:?}"
    );
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

/// `report mail` on the series' record: its exit code and the reply.
fn reply() -> &'static (Option<i32>, String) {
    static REPLY: OnceLock<(Option<i32>, String)> = OnceLock::new();
    REPLY.get_or_init(|| {
        // The series' verify writes the record replied to.
        let _ = series();
        let args = strings(&[
            "report",
            "mail",
            &fixture()
                .out
                .join("series/verify.json")
                .display()
                .to_string(),
            "--name",
            "A Tester",
            "--email",
            "tester@example.org",
        ]);
        harness(&cache_root(), &args).expect("the harness runs")
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn report_mail_replies_on_the_cover_letter_with_a_tested_by() {
    let (code, reply) = reply();
    assert!(
        *code == Some(0)
            && reply.starts_with("Subject: Re: [PATCH 0/2] the PAT masks\n")
            && reply.contains(&format!("In-Reply-To: <{COVER_ID}>"))
            && reply.contains("Tested-by: A Tester <tester@example.org>"),
        "exit {code:?}: {reply}"
    );
}

/// The real `b4 am` (PyPI, offline) threads the reply under the cover
/// letter and adds its Tested-by to every patch of the series.
#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn b4_am_picks_up_the_replys_tested_by_for_both_patches() -> Result<()> {
    let dir = fixture().out.join("series");
    // The thread as an archive would hold it: the series, then the reply.
    let sent = format!("From patverify Mon Sep 17 00:00:00 2001\nFrom: A Tester <tester@example.org>\nDate: Mon, 1 Jan 2024 01:00:00 +0000\nMessage-Id: <reply.{COVER_ID}>\n{}", reply().1);
    let thread = dir.join("thread.mbox");
    std::fs::write(&thread, std::fs::read_to_string(&series().mbox)? + &sent)?;
    let am = dir.join("b4-am");
    let (ok, said) = Command::new(tools_venv()?.join("bin/b4"))
        .args(["--offline-mode", "am", "-m"])
        .arg(&thread)
        .arg("-o")
        .arg(&am)
        .arg(COVER_ID)
        .output_quiet()?;
    let picked = std::fs::read_dir(&am)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "mbx"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    let tested = picked.matches("Tested-by: A Tester <tester@example.org>");
    assert_eq!((ok, tested.count()), (true, 2), "{said}");
    Ok(())
}

/// The upstream fix and the thread's v2 proposal in one run: one baseline,
/// one kernel per candidate. The proposal widens only pgprot_modify()'s mask,
/// so the entry pte_modify() rewrites with a protection that has no cache
/// bits (pte_modify_direct) loses the PAT bit as on the baseline.
fn side_by_side() -> &'static Candidates {
    static RUN: OnceLock<Candidates> = OnceLock::new();
    RUN.get_or_init(|| {
        let patches = xtask::support::repo_dir().join("patches");
        let upstream = patches.join(xtask::stages::variant::DEFAULT_PATCH);
        let proposal = patches.join(xtask::stages::variant::PROPOSAL_PATCH);
        println!("==> e2e: verify --patch upstream --patch proposal");
        Candidates::verify("two-candidates", &[&upstream, &proposal])
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn two_candidates_exit_1_when_one_loses_modes() {
    let run = side_by_side();
    let ended = (run.code, run.record.verdict);
    assert_eq!(ended, (exit(Kind::CandidateLost), Verdict::Fail));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_upstream_fix_passes_beside_the_proposal() {
    let upstream = side_by_side().candidate("candidate-1");
    assert_eq!(upstream, Some((CandidateVerdict::Pass, vec![])));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_proposal_loses_exactly_the_pat_bit_modes_of_the_pfn_mprotects_and_pte_modify_direct() {
    // v2 leaves _PAGE_CHG_MASK, which pte_modify() uses, without the PAT
    // bit: the mprotect() of a PFN mapping (device memory, or RAM as TTM
    // maps it) loses it as on the baseline.
    let want_lost = strings(&[
        "native devmem_mprotect WT→UC",
        "native devmem_mprotect WP→WC",
        "native pte_modify_direct WT→UC",
        "native pte_modify_direct WP→WC",
        "xen devmem_mprotect WC→UC",
        "xen ram_mprotect WC→WB",
        "xen pte_modify_direct WC→WB",
        "xen pte_modify_direct WP→WT",
    ]);
    let proposal = side_by_side().candidate("candidate-2");
    assert_eq!(proposal, Some((CandidateVerdict::Fail, want_lost)));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_table_has_a_column_per_candidate() {
    let text = &side_by_side().text;
    let header = text
        .lines()
        .find(|l| l.contains("baseline") && l.contains("candidate-1") && l.contains("candidate-2"));
    assert!(
        header.is_some(),
        "{}",
        xtask::support::proc::tail_lines(text, 5)
    );
}

/// A "candidate" that changes nothing relevant: the baseline keeps every
/// mode, so verify must refuse to call it a pass (exit 3).
#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_baseline_that_keeps_everything_is_not_a_pass() -> Result<()> {
    println!("==> e2e: a patch that does not touch the bug");
    let out = &fixture().out;
    let path = unrelated_patch(
        source_tree(&fixture().record)?,
        &out.join("unrelated.patch"),
    )?;
    let args: Vec<String> = strings(&[
        "verify",
        "--env",
        "native",
        "--patch",
        &path.display().to_string(),
        "--out",
        &out.join("unrelated").display().to_string(),
    ]);
    let (code, text) = harness(&cache_root(), &args)?;
    assert!(
        code == exit(Kind::BaselineNotReproduced) && text.contains("not reproduced"),
        "exit {code:?}: {}",
        xtask::support::proc::tail_lines(&text, 4)
    );
    Ok(())
}
