//! Comparing the reports: the baseline-vs-candidate table per environment and
//! the verdict. Everything here works on reports parsed from booted kernels.

use crate::model::bits::{BitOutcome, BitRow};
use crate::model::pagemap::PagemapOutcome;
use crate::model::rows::{row_keys, Judgment, ModeResult, Outcome, ProbePath, Report, RowKey};
use crate::stages::qemu::Env;
use patverify_protocol::PathKind;
use serde::Serialize;

/// One boot's parsed report.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub variant: String,
    pub env: Env,
    pub report: Report,
    /// The kernel's own selftests run in the same boot (`--kselftest`).
    pub kselftests: Vec<crate::model::kselftest::KselftestResult>,
    /// `/init`'s pagemap rows of the same boot.
    pub pagemap: Vec<crate::model::pagemap::PagemapRow>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The candidate measured and kept every row the baseline lost, and
    /// lost none.
    Pass,
    /// The candidate loses these rows, or did not measure a row the baseline
    /// lost; `only_synthetic` when none of them is a real mapping's.
    /// `others`: the rows beyond the module's it fails — `/init`'s pagemap
    /// rows it lost or did not measure, and (`--kselftest`) the kernel's
    /// selftests that newly fail on it ("kselftest.mm.x in xen: …").
    CandidateLost {
        rows: Vec<LostRow>,
        only_synthetic: bool,
        others: Vec<String>,
    },
    /// The baseline lost nothing in these environments: the bug was not reproduced.
    BaselineNotReproduced(Vec<Env>),
}

/// A row a run lost: where, which row, and what it ended as (None: the
/// candidate did not measure a row the baseline lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRow {
    pub env: Env,
    pub path: ProbePath,
    /// "WT", or for `pat_index` "6 UC".
    pub label: String,
    pub after: Option<String>,
}

impl LostRow {
    fn of(env: Env, r: &ModeResult, after: Option<String>) -> LostRow {
        LostRow {
            env,
            path: r.path,
            label: r.label(),
            after,
        }
    }

    /// A kept-bit row: what the step did to the bit, or None when it was
    /// not shown.
    fn of_bit(env: Env, b: &BitRow, after: Option<String>) -> LostRow {
        LostRow {
            env,
            path: b.path,
            label: b.label(),
            after,
        }
    }
}

/// "env path mode→observed", "env path mode: not measured".
impl std::fmt::Display for LostRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = format!("{} {} {}", self.env, self.path, self.label);
        match &self.after {
            Some(after) => write!(f, "{row}→{after}"),
            None => write!(f, "{row}: not measured"),
        }
    }
}

/// The path as a table shows it: its name, and a mark for a synthetic
/// path's kind (the footnote says what it means).
pub fn path_label(path: ProbePath) -> String {
    format!("{path}{}", kind_mark(path.kind()))
}

fn kind_mark(kind: PathKind) -> &'static str {
    match kind {
        PathKind::RealMapping => "",
        PathKind::MadeVma => "†",
        PathKind::DirectCall => "‡",
    }
}

/// The table's path column: the widest name and its mark.
const PATH_WIDTH: usize = ProbePath::WIDTH + 1;

/// Every mode a run lost (but not to a known defect outside the masks
/// under test).
pub fn lost_modes(runs: &[Run]) -> Vec<LostRow> {
    losses(runs, ModeResult::lost_in_scope)
}

/// Every row lost to a known defect outside the masks under test (shown,
/// not judged).
pub fn known_defect_losses(runs: &[Run]) -> Vec<LostRow> {
    losses(runs, |r| r.known_defect().is_some())
}

fn losses(runs: &[Run], which: fn(&ModeResult) -> bool) -> Vec<LostRow> {
    runs.iter()
        .flat_map(|run| {
            run.report.results.iter().filter_map(move |r| {
                let after = r.after().filter(|_| which(r))?;
                Some(LostRow::of(run.env, r, Some(after)))
            })
        })
        .collect()
}

/// Every kept bit a run's later steps changed (`PATH.bits.NAME`).
pub fn lost_bits(runs: &[Run]) -> Vec<LostRow> {
    runs.iter()
        .flat_map(|run| {
            run.report
                .bits
                .iter()
                .filter(|b| b.lost())
                .map(|b| LostRow::of_bit(run.env, b, Some(b.describe())))
        })
        .collect()
}

/// Bit rows the baseline could show that the candidate skipped or did not
/// report: a candidate cannot keep a bit by not showing it.
fn unmeasured_bits(baseline: &[Run], candidate: &[Run]) -> Vec<LostRow> {
    let measured = |env: Env, row: &BitRow| {
        candidate.iter().filter(|c| c.env == env).any(|c| {
            c.report
                .bits
                .iter()
                .any(|b| b.path == row.path && b.bit == row.bit && !b.skipped())
        })
    };
    baseline
        .iter()
        .flat_map(|run| {
            run.report
                .bits
                .iter()
                .filter(|b| !b.skipped() && !measured(run.env, b))
                .map(|b| LostRow::of_bit(run.env, b, None))
        })
        .collect()
}

/// Rows the baseline lost that the candidate did not measure (skipped or
/// missing): a candidate cannot pass by leaving them out.
fn unmeasured(baseline: &[Run], candidate: &[Run]) -> Vec<LostRow> {
    let measured = |env: Env, lost: &ModeResult| {
        candidate.iter().filter(|c| c.env == env).any(|c| {
            c.report
                .results
                .iter()
                .any(|r| r.path == lost.path && r.key() == lost.key() && r.observed().is_some())
        })
    };
    baseline
        .iter()
        .flat_map(|run| {
            run.report
                .results
                .iter()
                .filter(|r| r.lost_in_scope() && !measured(run.env, r))
                .map(|r| LostRow::of(run.env, r, None))
        })
        .collect()
}

/// What tells a mutant from the reference (the tree as is): each row the
/// mutant lost (a cache mode, in scope) or bit it changed where the
/// reference, in the same environment, kept it. A row both lost is no
/// evidence against the mutant.
pub fn killing_rows(reference: &[Run], mutant: &[Run]) -> Vec<LostRow> {
    let kept_mode = |env: Env, lost: &ModeResult| {
        reference.iter().filter(|r| r.env == env).any(|r| {
            let mut rows = r.report.results.iter();
            rows.any(|k| {
                k.path == lost.path
                    && k.key() == lost.key()
                    && k.observed().is_some()
                    && !k.lost_in_scope()
            })
        })
    };
    let kept_bit = |env: Env, lost: &BitRow| {
        reference.iter().filter(|r| r.env == env).any(|r| {
            let mut bits = r.report.bits.iter();
            bits.any(|k| k.path == lost.path && k.bit == lost.bit && !k.skipped() && !k.lost())
        })
    };
    let modes = mutant.iter().flat_map(|run| {
        run.report.results.iter().filter_map(move |r| {
            let after = r
                .after()
                .filter(|_| r.lost_in_scope() && kept_mode(run.env, r))?;
            Some(LostRow::of(run.env, r, Some(after)))
        })
    });
    let bits = mutant.iter().flat_map(|run| {
        run.report
            .bits
            .iter()
            .filter(|b| b.lost() && kept_bit(run.env, b))
            .map(|b| LostRow::of_bit(run.env, b, Some(b.describe())))
    });
    modes.chain(bits).collect()
}

/// `/init`'s pagemap rows a candidate fails: lost or not measured (an
/// error), or skipped where the baseline measured it — no pass by omission.
fn pagemap_losses(baseline: &[Run], candidate: &[Run]) -> Vec<String> {
    let mut losses = Vec::new();
    for run in candidate {
        for row in &run.pagemap {
            let measured_there = baseline.iter().filter(|b| b.env == run.env).any(|b| {
                b.pagemap.iter().any(|r| {
                    r.row == row.row && !matches!(r.outcome, PagemapOutcome::Skipped { .. })
                })
            });
            let unmeasured =
                matches!(row.outcome, PagemapOutcome::Skipped { .. }) && measured_there;
            if row.failed() || unmeasured {
                losses.push(format!("{} in {}: {}", row.row, run.env, row.summary()));
            }
        }
    }
    losses
}

/// What tells a mutant from the reference among `/init`'s pagemap rows: a
/// bit the reference kept and the mutant lost (or could not measure).
pub fn killing_pagemap_rows(reference: &[Run], mutant: &[Run]) -> Vec<String> {
    let kept = |env: Env, row: &str| {
        let mut rows = reference
            .iter()
            .filter(|r| r.env == env)
            .flat_map(|r| r.pagemap.iter());
        rows.any(|r| r.row == row && r.outcome == PagemapOutcome::Kept)
    };
    mutant
        .iter()
        .flat_map(|run| {
            let lost = run
                .pagemap
                .iter()
                .filter(move |r| r.failed() && kept(run.env, &r.row));
            lost.map(move |r| format!("{} {}: {}", run.env, r.row, r.summary()))
        })
        .collect()
}

/// The kernel's selftests that fail or break in `other` where they did
/// not in `reference` (same environment), with the new failures:
/// "kselftest.mm.x in native: Test y".
pub fn regressed_selftests(reference: &[Run], other: &[Run]) -> Vec<String> {
    let mut regressed = Vec::new();
    for run in other {
        for mine in &run.kselftests {
            let theirs = reference
                .iter()
                .filter(|r| r.env == run.env)
                .flat_map(|r| r.kselftests.iter())
                .find(|k| k.row == mine.row);
            let new = theirs.map_or_else(Vec::new, |t| mine.new_failures(t));
            if !new.is_empty() {
                regressed.push(format!("{} in {}: {}", mine.row, run.env, new.join("; ")));
            }
        }
    }
    regressed
}

/// One candidate against the baseline.
pub fn verdict(baseline: &[Run], candidate: &[Run]) -> Verdict {
    let mut candidate_lost = lost_modes(candidate);
    candidate_lost.extend(unmeasured(baseline, candidate));
    candidate_lost.extend(lost_bits(candidate));
    candidate_lost.extend(unmeasured_bits(baseline, candidate));
    let mut others = pagemap_losses(baseline, candidate);
    others.extend(regressed_selftests(baseline, candidate));
    if !candidate_lost.is_empty() || !others.is_empty() {
        return Verdict::CandidateLost {
            only_synthetic: others.is_empty()
                && candidate_lost.iter().all(|row| row.path.is_synthetic()),
            rows: candidate_lost,
            others,
        };
    }
    let not_reproduced: Vec<Env> = baseline
        .iter()
        .filter(|run| !run.report.results.iter().any(ModeResult::lost_in_scope))
        .map(|run| run.env)
        .collect();
    if !not_reproduced.is_empty() {
        return Verdict::BaselineNotReproduced(not_reproduced);
    }
    Verdict::Pass
}

/// "WT  kept", "UC  LOST"; a PAT entry's row leads with the entry after
/// ("2 UC- LOST": entry 6 became entry 2).
fn cell(result: Option<&ModeResult>) -> String {
    let Some(r) = result else {
        return "(not run)".to_string();
    };
    let Some(observed) = r.observed() else {
        return "skip".to_string();
    };
    let status = r.judgment().word();
    match &r.outcome {
        Outcome::Measured {
            entry_after: Some(entry),
            ..
        } => format!("{entry} {observed:<3} {status}"),
        _ => format!("{observed:<3} {status}"),
    }
}

fn layout(run: &Run) -> String {
    let modes: Vec<&str> = run.report.pat_layout.iter().map(|m| m.name()).collect();
    modes.join(" ")
}

fn row(run: &Run, path: ProbePath, key: RowKey) -> Option<&ModeResult> {
    let mut rows = run.report.results.iter();
    rows.find(|r| r.path == path && r.key() == key)
}

/// The table of one environment: a row per path and mode, a column per
/// variant (the first is the baseline), then the baseline's PTE bits.
pub fn table(env: Env, runs: &[&Run]) -> String {
    let mut out = format!("{env} — PAT layout (entries 0..7):\n");
    for run in runs {
        let msr = run.report.pat_msr.as_deref();
        let msr = msr.map(|m| format!("   (PAT MSR {m})")).unwrap_or_default();
        out += &format!("  {:<12} {}{msr}\n", run.variant, layout(run));
    }
    let width = runs
        .iter()
        .map(|r| r.variant.len())
        .max()
        .unwrap_or(0)
        .max(11)
        + 2;
    out += &format!("  {:<pw$} {:<5} ", "path", "mode", pw = PATH_WIDTH);
    for run in runs {
        out += &format!("{:<width$}", run.variant);
    }
    let first = runs.first().map_or("", |r| r.variant.as_str());
    out += &format!("{first} PTE before → after\n");
    let mut paths: Vec<ProbePath> = runs
        .iter()
        .flat_map(|run| run.report.results.iter().map(|r| r.path))
        .collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        for key in row_keys(path) {
            let cells: Vec<Option<&ModeResult>> =
                runs.iter().map(|run| row(run, path, key)).collect();
            let marker = marker(cells.iter().flatten().copied());
            // A PAT entry's row also names the entry's mode ("6 UC").
            let label = cells
                .iter()
                .flatten()
                .next()
                .map_or(key.to_string(), |r| r.label());
            let shown = path_label(path);
            out += &format!("{marker} {shown:<pw$} {label:<5} ", pw = PATH_WIDTH);
            for c in &cells {
                out += &format!("{:<width$}", cell(*c));
            }
            if let Some(Some(b)) = cells.first() {
                out += &b.ptes();
            }
            out += "\n";
        }
    }
    out + &bits_table(runs, width) + &pagemap_table(runs) + &kselftest_table(runs) + &footnote(runs)
}

/// `/init`'s pagemap rows: a line per row, each variant's outcome (once,
/// when all agree).
fn pagemap_table(runs: &[&Run]) -> String {
    let Some(first) = runs.iter().find(|r| !r.pagemap.is_empty()) else {
        return String::new();
    };
    let mut out = "  an anonymous page, read from /proc/self/pagemap before and after mprotect() (by /init):\n".to_string();
    for row in &first.pagemap {
        let cells: Vec<(String, String)> = runs
            .iter()
            .map(|run| {
                let mine = run.pagemap.iter().find(|r| r.row == row.row);
                (
                    run.variant.clone(),
                    mine.map_or("not run".into(), |r| r.summary()),
                )
            })
            .collect();
        out += &format!("  {:<30} {}\n", row.row, agreed_or_each(&cells));
    }
    out
}

/// One text when every variant's is the same, else "variant: text · …".
fn agreed_or_each(cells: &[(String, String)]) -> String {
    if cells.iter().all(|(_, s)| *s == cells[0].1) {
        return cells[0].1.clone();
    }
    let each: Vec<String> = cells.iter().map(|(v, s)| format!("{v}: {s}")).collect();
    each.join(" · ")
}

/// The kernel's own selftests of the same boots (`--kselftest`): a line
/// per program, each variant's outcome (once, when all agree).
fn kselftest_table(runs: &[&Run]) -> String {
    let Some(first) = runs.iter().find(|r| !r.kselftests.is_empty()) else {
        return String::new();
    };
    let mut out =
        "  the kernel's own selftests, run in the same boots after the report:\n".to_string();
    for row in &first.kselftests {
        let cells: Vec<(String, String)> = runs
            .iter()
            .map(|run| {
                let mine = run.kselftests.iter().find(|k| k.row == row.row);
                let summary = mine.map_or("not run".to_string(), |k| k.summary());
                (run.variant.clone(), summary)
            })
            .collect();
        out += &format!("  {:<30} {}\n", row.row, agreed_or_each(&cells));
    }
    out
}

/// The later steps' kept-bit rows under the mode rows: a column per
/// variant, then what the baseline's entries showed. A bit no variant
/// could show on a step is not a row here but a word on the step's
/// summary line, with why (the JSON has the full reason).
fn bits_table(runs: &[&Run], width: usize) -> String {
    let Some(first) = runs.iter().find(|r| !r.report.bits.is_empty()) else {
        return String::new();
    };
    let cells_of = |row: &BitRow| -> Vec<Option<&BitRow>> {
        runs.iter()
            .map(|run| {
                let mut bits = run.report.bits.iter();
                bits.find(|b| b.path == row.path && b.bit == row.bit)
            })
            .collect()
    };
    let mut out = "  kept bits: each bit the masks keep, in the entry just before and after each later step (over its modes)\n".to_string();
    let mut unshown: Vec<(ProbePath, String)> = Vec::new();
    for row in &first.report.bits {
        let cells = cells_of(row);
        if let Some(why) = unshown_everywhere(&cells) {
            unshown.push((row.path, format!("{} ({why})", row.bit)));
            continue;
        }
        let marker = if cells.iter().flatten().any(|b| b.lost()) {
            '!'
        } else {
            ' '
        };
        let (shown, label) = (path_label(row.path), row.label());
        out += &format!("{marker} {shown:<pw$} {label:<17} ", pw = PATH_WIDTH);
        for c in &cells {
            let word = c.map_or("(not run)", |b| b.word());
            out += &format!("{word:<width$}");
        }
        let baseline = cells.first().copied().flatten();
        out += &baseline.map(BitRow::describe).unwrap_or_default();
        out += "\n";
    }
    let mut paths: Vec<ProbePath> = unshown.iter().map(|(p, _)| *p).collect();
    paths.dedup();
    for path in paths {
        let bits: Vec<&str> = unshown
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, b)| b.as_str())
            .collect();
        out += &format!(
            "  {:<pw$} no loss could show: {}\n",
            path_label(path),
            bits.join(", "),
            pw = PATH_WIDTH
        );
    }
    out
}

/// Why no variant could show a loss of the bit (the same reason in every
/// variant), or None when one could.
fn unshown_everywhere(cells: &[Option<&BitRow>]) -> Option<String> {
    let whys: Vec<String> = cells
        .iter()
        .map(|c| match c.map(|b| (&b.outcome, b.bit)) {
            Some((BitOutcome::Skipped { why, .. }, bit)) => Some(why.short(bit)),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()?;
    let first = whys.first()?;
    whys.iter().all(|w| w == first).then(|| first.clone())
}

/// '!' when a row is lost, '*' when only to a known defect, ' ' when kept.
fn marker<'a>(mut rows: impl Iterator<Item = &'a ModeResult> + Clone) -> char {
    if rows.clone().any(ModeResult::lost_in_scope) {
        '!'
    } else if rows.any(ModeResult::lost) {
        '*'
    } else {
        ' '
    }
}

/// What `LOST*`, `earlier`, `moved` and the path marks mean, for those a
/// table shows.
fn footnote(runs: &[&Run]) -> String {
    let results = || runs.iter().flat_map(|run| &run.report.results);
    let defects: std::collections::BTreeSet<&str> =
        results().filter_map(ModeResult::known_defect).collect();
    let mut out: String = defects
        .into_iter()
        .map(|why| {
            format!("  LOST* known defect outside the masks under test (not judged): {why}\n")
        })
        .collect();
    let earlier: std::collections::BTreeSet<String> = results()
        .filter_map(|r| match r.judgment() {
            Judgment::LostEarlier(at) => Some(format!("{} after {at}", r.path)),
            _ => None,
        })
        .collect();
    if !earlier.is_empty() {
        let steps: Vec<String> = earlier.into_iter().collect();
        out += &format!("  earlier: the step kept the entry it was given, which the step before had installed wrong (lost there, not here): {}\n", steps.join(", "));
    }
    if results().any(|r| r.judgment() == Judgment::MovedSameType) {
        out += "  moved: the PAT bit was dropped, but the entry it fell to has the same memory type (not a lost mode)\n";
    }
    let mut kinds: Vec<PathKind> = results()
        .map(|r| r.path.kind())
        .filter(|k| *k != PathKind::RealMapping)
        .collect();
    kinds.sort_by_key(|k| kind_mark(*k));
    kinds.dedup();
    for kind in kinds {
        out += &format!("  {} synthetic: {}\n", kind_mark(kind), kind.describe());
    }
    out
}

/// One boot's results alone (probe).
pub fn single_table(run: &Run) -> String {
    let mut out = format!("{} — PAT layout: {}\n", run.env, layout(run));
    for r in &run.report.results {
        let marker = marker(std::iter::once(r));
        out += &format!(
            "{marker} {:<pw$} {:<5} {:<12} {}\n",
            path_label(r.path),
            r.label(),
            cell(Some(r)),
            r.ptes(),
            pw = PATH_WIDTH
        );
    }
    out + &bits_table(&[run], 13)
        + &pagemap_table(&[run])
        + &kselftest_table(&[run])
        + &footnote(&[run])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::ktap::{parse_ktap, tests::sample_ktap, tests::sample_ktap_on};

    /// A failing verdict's rows as they are printed, and `only_synthetic`.
    fn lost_rows(verdict: Verdict) -> (Vec<String>, bool) {
        match verdict {
            Verdict::CandidateLost {
                rows,
                only_synthetic,
                ..
            } => (rows.iter().map(|r| r.to_string()).collect(), only_synthetic),
            other => panic!("not a fail: {other:?}"),
        }
    }

    fn run(variant: &str, env: Env, lost: &[(&str, &str)]) -> Run {
        Run {
            variant: variant.into(),
            env,
            report: parse_ktap(&sample_ktap(lost)).unwrap(),
            kselftests: Vec::new(),
            pagemap: Vec::new(),
        }
    }

    fn with_pagemap(mut run: Run, soft_dirty: &str, uffd_wp: &str) -> Run {
        use crate::stages::ktap::{pagemap_rows, tests::pagemap_section};
        run.pagemap = pagemap_rows(&pagemap_section(soft_dirty, uffd_wp)).unwrap();
        run
    }

    #[test]
    fn a_lost_or_unmeasured_pagemap_row_fails_the_candidate_and_kills_a_mutant() {
        let skip = "ok 2 pagemap.uffd_wp # SKIP no userfaultfd";
        let kept = "ok 2 pagemap.uffd_wp";
        let lost = [("WT", "UC")];
        let baseline = [with_pagemap(
            run("baseline", Env::Native, &lost),
            "ok",
            kept,
        )];
        let good = [with_pagemap(run("candidate", Env::Native, &[]), "ok", kept)];
        assert_eq!(verdict(&baseline, &good), Verdict::Pass);
        let dropped = [with_pagemap(
            run("candidate", Env::Native, &[]),
            "not ok",
            kept,
        )];
        let Verdict::CandidateLost {
            rows,
            others,
            only_synthetic,
        } = verdict(&baseline, &dropped)
        else {
            panic!("a lost soft-dirty bit passed");
        };
        assert!(rows.is_empty() && !only_synthetic);
        assert!(
            others[0].starts_with("pagemap.soft_dirty in native: LOST"),
            "{others:?}"
        );
        let unmeasured = [with_pagemap(run("candidate", Env::Native, &[]), "ok", skip)];
        assert!(matches!(
            verdict(&baseline, &unmeasured),
            Verdict::CandidateLost { .. }
        ));
        // A mutant is killed by a bit the reference kept, not by one it lost too.
        let killed = killing_pagemap_rows(&baseline, &dropped);
        assert_eq!(killed.len(), 1, "{killed:?}");
        assert!(killing_pagemap_rows(&dropped, &dropped).is_empty());
        let t = table(Env::Native, &[&baseline[0], &dropped[0]]);
        assert!(t.contains("baseline: kept (pagemap flags 0x8180000000000000 → 0x8180000000000000) · candidate: LOST"), "{t}");
    }

    #[test]
    fn a_mutant_is_killed_only_by_what_the_reference_kept() {
        let reference = [run("reference", Env::Native, &[("WT", "UC")])];
        // Both lose WT: no evidence; the mutant also loses WC: killed by it.
        let mutant = [run("mutant", Env::Native, &[("WT", "UC"), ("WC", "UC-")])];
        let rows: Vec<String> = killing_rows(&reference, &mutant)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(rows, ["native vma_set_page_prot WC→UC-"]);
        assert!(killing_rows(&reference, &reference).is_empty());
        // A row of another environment is no evidence either.
        let xen = [run("mutant", Env::Xen, &[("WC", "UC-")])];
        assert!(killing_rows(&reference, &xen).is_empty());
    }

    #[test]
    fn a_changed_bit_kills_a_mutant_when_the_reference_kept_it() {
        let later = |variant: &str, dirty_after: &str| {
            let ktap = sample_ktap_on("mprotect", &[]).replace(
                "pte_after=0x8000000000000000",
                &format!("pte_after=0x80000000000000{dirty_after}"),
            );
            let ktap = ktap.replace(
                "pte_before=0x8000000000000000",
                "pte_before=0x8000000000000040",
            );
            Run {
                variant: variant.into(),
                env: Env::Native,
                report: parse_ktap(&ktap).unwrap(),
                kselftests: Vec::new(),
                pagemap: Vec::new(),
            }
        };
        let (reference, mutant) = ([later("reference", "40")], [later("mutant", "00")]);
        let rows: Vec<String> = killing_rows(&reference, &mutant)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(rows, ["native mprotect bits.dirty→cleared in WB"]);
        assert!(matches!(
            verdict(&reference, &mutant),
            Verdict::CandidateLost { .. }
        ));
    }

    #[test]
    fn known_defects_are_shown_not_judged() {
        // One boot's run: `small` lost on vma_set_page_prot, `huge` on
        // huge_pfn_fault.
        let boot = |variant: &str, small: &[(&str, &str)], huge: &[(&str, &str)]| {
            let mut r = run(variant, Env::Native, small);
            let huge = parse_ktap(&sample_ktap_on("huge_pfn_fault", huge)).unwrap();
            r.report.results.extend(huge.results);
            [r]
        };
        let known = [("WT", "UC"), ("WP", "WC")];
        let b = boot("baseline", &[("WT", "UC")], &known);
        let c = boot("candidate", &[], &known);
        assert_eq!(verdict(&b, &c), Verdict::Pass);
        assert_eq!(known_defect_losses(&c).len(), 2);
        let t = table(Env::Native, &[&b[0], &c[0]]);
        assert!(t.contains("* huge_pfn_fault     WT    UC  LOST*"), "{t}");
        assert!(t.contains("LOST* known defect"), "{t}");
        // Lost another way, the row is judged.
        let worse = boot("candidate", &[], &[("WT", "WB")]);
        assert_eq!(
            lost_rows(verdict(&b, &worse)),
            (vec!["native huge_pfn_fault WT→WB".to_string()], false)
        );
        // A baseline that loses only to the known defect reproduces nothing.
        let only_known = boot("baseline", &[], &known);
        assert_eq!(
            verdict(&only_known, &c),
            Verdict::BaselineNotReproduced(vec![Env::Native])
        );
    }

    #[test]
    fn pass_when_candidate_keeps_all_and_baseline_loses() {
        let b = [run("baseline", Env::Native, &[("WT", "UC")])];
        let c = [run("candidate", Env::Native, &[])];
        assert_eq!(verdict(&b, &c), Verdict::Pass);
    }

    #[test]
    fn fail_when_candidate_loses() {
        let b = [run("baseline", Env::Native, &[("WT", "UC")])];
        let c = [run("candidate", Env::Native, &[("WP", "WC")])];
        // vma_set_page_prot runs on a VMA the module made: synthetic.
        assert_eq!(
            lost_rows(verdict(&b, &c)),
            (vec!["native vma_set_page_prot WP→WC".to_string()], true)
        );
    }

    #[test]
    fn a_candidate_that_fails_only_on_synthetic_rows_says_so() {
        let steps = |variant: &str, real: &[(&str, &str)], synthetic: &[(&str, &str)]| {
            let ktap = crate::stages::ktap::tests::sample_ktap_paths(&[
                ("mmap_fault", real),
                ("pte_modify_direct", synthetic),
            ]);
            [Run {
                variant: variant.into(),
                env: Env::Native,
                report: parse_ktap(&ktap).unwrap(),
                kselftests: Vec::new(),
                pagemap: Vec::new(),
            }]
        };
        let lost = [("WT", "UC")];
        let b = steps("baseline", &lost, &lost);
        let only_direct = verdict(&b, &steps("candidate", &[], &lost));
        assert!(matches!(
            only_direct,
            Verdict::CandidateLost {
                only_synthetic: true,
                ..
            }
        ));
        let line = crate::ui::candidate_lines(&[("candidate", "x.patch", &only_direct)]);
        assert!(line[0].contains("only on synthetic rows"), "{line:?}");
        let real = verdict(&b, &steps("candidate", &lost, &lost));
        assert!(matches!(
            real,
            Verdict::CandidateLost {
                only_synthetic: false,
                ..
            }
        ));
        let t = table(Env::Native, &[&b[0]]);
        assert!(t.contains("pte_modify_direct‡"), "{t}");
        assert!(
            t.contains("‡ synthetic: a kernel function called directly"),
            "{t}"
        );
    }

    #[test]
    fn baseline_that_loses_nothing_is_not_a_pass() {
        let b = [
            run("baseline", Env::Native, &[("WT", "UC")]),
            run("baseline", Env::Xen, &[]),
        ];
        let c = [
            run("candidate", Env::Native, &[]),
            run("candidate", Env::Xen, &[]),
        ];
        assert_eq!(
            verdict(&b, &c),
            Verdict::BaselineNotReproduced(vec![Env::Xen])
        );
    }

    #[test]
    fn table_marks_lost_modes() {
        let b = run("baseline", Env::Native, &[("WT", "UC"), ("WP", "WC")]);
        let c = run("candidate", Env::Native, &[]);
        let c2 = run("candidate-2", Env::Native, &[("WP", "WC")]);
        let t = table(Env::Native, &[&b, &c, &c2]);
        let wt = t
            .lines()
            .find(|l| l.contains(&format!("{:<18} WT ", "vma_set_page_prot†")))
            .unwrap();
        assert!(
            wt.starts_with('!') && wt.contains("UC  LOST") && wt.contains("WT  kept"),
            "{t}"
        );
        let wp = t
            .lines()
            .find(|l| l.contains(&format!("{:<18} WP ", "vma_set_page_prot†")))
            .unwrap();
        assert_eq!(wp.matches("LOST").count(), 2, "{t}");
        let wb = t
            .lines()
            .find(|l| l.contains(&format!("{:<18} WB ", "vma_set_page_prot†")))
            .unwrap();
        assert!(
            wb.starts_with(' ')
                && !wb.contains("LOST")
                && wb.contains("0x8000000000000000 → 0x8000000000000000"),
            "{t}"
        );
        assert!(t.contains("WB WC UC- UC WB WP UC- WT"), "{t}");
        assert!(
            t.lines().any(|l| l.contains("baseline")
                && l.contains("candidate  ")
                && l.contains("candidate-2")),
            "{t}"
        );
    }
}
