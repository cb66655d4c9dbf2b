//! `cargo xtask verify`: a baseline kernel and one kernel per candidate
//! patch, both environments, the side-by-side table and the verdict. A
//! `Job` of the pipeline: the variants come from the variant stage's
//! candidate plan; this module judges the candidates and prints the end.

use crate::flags::Verify;
use crate::model::rows::ModeResult;
use crate::output;
use crate::pipeline::{self, Boot, Ctx, Ending, Job, Outcome, Outputs, Planned, Tally};
use crate::record::{CandidateRecord, CandidateVerdict, Record, Verdict};
use crate::stages::compare::{self, Run};
use crate::stages::variant::{self, CandidatePlan, Variant};
use crate::support::failure::Kind;
use crate::ui;
use anyhow::Result;
use std::path::Path;

impl Verify {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        self.outcome(cache_root)
            .write_and_end(&Outputs::of(&self.common))
    }

    /// The run's outcome, its record in memory, `--json` and the other
    /// outputs not yet written (a matrix job writes its own).
    pub fn outcome(&self, cache_root: &Path) -> Outcome {
        pipeline::run(&self.common, cache_root, self)
    }
}

impl Planned for CandidatePlan {
    fn variants(&self) -> &[Variant] {
        &self.variants
    }
}

impl Job for Verify {
    type Plan = CandidatePlan;

    fn plan(&self, ctx: &Ctx, record: &mut Record) -> Result<CandidatePlan> {
        let patch_files = if self.patches.is_empty() {
            vec![variant::default_patch_for(ctx.source.version)]
        } else {
            self.patches.clone()
        };
        let plan = variant::plan_candidates(&ctx.cache, &ctx.kbuild, &ctx.source, &patch_files)?;
        for candidate in &plan.candidates {
            pipeline::note_patch(record, &candidate.patch, candidate.direction)?;
        }
        Ok(plan)
    }

    fn judge(
        &self,
        ctx: &Ctx,
        plan: &CandidatePlan,
        boots: Vec<Boot>,
        so_far: &mut Tally,
    ) -> Result<Ending> {
        let runs = pipeline::reported(boots)?;
        let envs = self.common.env.envs();
        let tables = ui::verify_tables(&ctx.source.describe, &plan.variants, &envs, &runs)?;
        output::result(tables.trim_end_matches('\n'));
        output::result(&format!("results: {}", ctx.out_dir.display()));
        let judged = judge(plan, &runs);
        let lines: Vec<(&str, &str, &compare::Verdict)> = judged
            .iter()
            .map(|j| (j.record.name.as_str(), j.file.as_str(), &j.verdict))
            .collect();
        for line in ui::candidate_lines(&lines) {
            output::result(&line);
        }
        so_far.record.candidates = judged.iter().map(|j| j.record.clone()).collect();
        let (skips, counted) = skipped_rows(&runs);
        if !skips.is_empty() {
            output::result(&skips);
        }
        Ok(conclude(&judged, plan.candidates.len(), &counted))
    }
}

/// A candidate judged against the baseline.
struct Judged {
    pub record: CandidateRecord,
    /// The patch's file name, for people.
    pub file: String,
    pub verdict: compare::Verdict,
}

/// Each candidate's verdict against the baseline's runs.
fn judge(plan: &CandidatePlan, runs: &[Run]) -> Vec<Judged> {
    let runs_of =
        |name: &str| -> Vec<Run> { runs.iter().filter(|r| r.variant == name).cloned().collect() };
    let base_runs = runs_of(&plan.baseline.name);
    plan.candidates
        .iter()
        .map(|candidate| {
            let name = candidate.variant.name.clone();
            let verdict = compare::verdict(&base_runs, &runs_of(&name));
            let (lost, only_synthetic, kind) = match &verdict {
                compare::Verdict::CandidateLost {
                    rows,
                    only_synthetic,
                    others,
                } => {
                    let rows = rows.iter().map(|row| row.to_string());
                    let lost = rows.chain(others.iter().cloned()).collect();
                    (lost, *only_synthetic, CandidateVerdict::Fail)
                }
                compare::Verdict::BaselineNotReproduced(_) => {
                    (Vec::new(), false, CandidateVerdict::NotReproduced)
                }
                compare::Verdict::Pass => (Vec::new(), false, CandidateVerdict::Pass),
            };
            let path = &candidate.patch.file;
            Judged {
                record: CandidateRecord {
                    name,
                    patch: path.display().to_string(),
                    verdict: kind,
                    lost,
                    only_synthetic,
                },
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into(),
                verdict,
            }
        })
        .collect()
}

/// How many rows the boots measured, how many they skipped, with why (each
/// skip is declared: a request this environment cannot represent), and how
/// many were lost to a known defect outside the masks under test (shown,
/// not judged). Returns the lines that say why, and "N of M rows skipped".
fn skipped_rows(runs: &[Run]) -> (String, String) {
    let rows: Vec<&ModeResult> = runs.iter().flat_map(|r| &r.report.results).collect();
    let reasons = tally(rows.iter().filter_map(|row| row.skip_reason()));
    let skipped: usize = reasons.values().sum();
    let mut why = String::new();
    if skipped > 0 {
        why += "skipped rows (declared: not representable here):";
    }
    for (reason, n) in reasons {
        why += &format!("\n  {n:>3} × {reason}");
    }
    let known: Vec<String> = compare::known_defect_losses(runs)
        .iter()
        .map(|row| row.to_string())
        .collect();
    if !known.is_empty() {
        why += "\nrows lost to a known defect outside the masks under test (shown, not judged):";
    }
    for (row, n) in tally(known.iter().map(String::as_str)) {
        why += &format!("\n  {n:>3} × {row}");
    }
    let mut counted = format!("{skipped} of {} rows skipped", rows.len());
    if !known.is_empty() {
        counted += &format!(", {} lost to a known defect", known.len());
    }
    (why, counted)
}

/// How often each line occurs, in order.
fn tally<'a>(lines: impl Iterator<Item = &'a str>) -> std::collections::BTreeMap<&'a str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in lines {
        *counts.entry(line).or_insert(0) += 1;
    }
    counts
}

/// The run's end: a candidate that loses a row fails the run; a baseline
/// that lost nothing makes it prove nothing; otherwise PASS.
fn conclude(judged: &[Judged], candidates: usize, skipped: &str) -> Ending {
    let lost_by: Vec<String> = judged
        .iter()
        .filter(|j| !j.record.lost.is_empty())
        .map(|j| {
            let only = if j.record.only_synthetic {
                ", only on synthetic rows"
            } else {
                ""
            };
            format!(
                "{} ({}) loses {}{only}",
                j.record.name,
                j.file,
                j.record.lost.join(", ")
            )
        })
        .collect();
    if !lost_by.is_empty() {
        let why = format!("FAIL: {} ({skipped})", lost_by.join("; "));
        return Ending::failed(Verdict::Fail, Kind::CandidateLost, why);
    }
    let not_reproduced = judged.iter().find_map(|j| match &j.verdict {
        compare::Verdict::BaselineNotReproduced(envs) => Some(envs.clone()),
        _ => None,
    });
    if let Some(envs) = not_reproduced {
        let names: Vec<&str> = envs.iter().map(|e| e.name()).collect();
        let why = format!("the baseline lost nothing (beyond known defects) in {}: the bug was not reproduced, so the candidate proves nothing", names.join(", "));
        return Ending::failed(Verdict::NotReproduced, Kind::BaselineNotReproduced, why);
    }
    let which = if candidates == 1 {
        "the candidate keeps"
    } else {
        "every candidate keeps"
    };
    output::result(&format!(
        "PASS: {which} every row the baseline lost (bug reproduced) and loses none; {skipped}"
    ));
    Ending::plain(Verdict::Pass, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_verdict_and_exit_code() {
        let fail = Ending::failed(Verdict::Fail, Kind::CandidateLost, "x".into());
        assert_eq!((fail.verdict, fail.code), (Verdict::Fail, 1));
        assert!(fail.failure.is_some());
        let not = Ending::failed(
            Verdict::NotReproduced,
            Kind::BaselineNotReproduced,
            "x".into(),
        );
        assert_eq!((not.verdict, not.code), (Verdict::NotReproduced, 3));
        let pass = Ending::plain(Verdict::Pass, 0);
        assert!(pass.failure.is_none());
        // A run that stopped before its verdict: an error with its own code,
        // even one that happens to carry code 1.
        let verify = Verify {
            common: crate::flags::Common::defaults(),
            patches: Vec::new(),
        };
        let boot = crate::support::failure::fail(Kind::Boot, "hang");
        assert_eq!(verify.stopped(&boot), (Verdict::Error, 7));
        let other = anyhow::anyhow!("disk");
        assert_eq!(verify.stopped(&other).0, Verdict::Error);
    }
}
