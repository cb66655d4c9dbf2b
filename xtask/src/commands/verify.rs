//! `cargo xtask verify`: a baseline kernel and one kernel per candidate
//! patch, both environments, the side-by-side table and the verdict. The steps themselves live in their modules;
//! session.rs holds what verify shares with probe.

use crate::flags::Verify;
use crate::model::rows::ModeResult;
use crate::model::{KernelVersion, Stage};
use crate::output;
use crate::record::{CandidateRecord, CandidateVerdict, Record, Step, Verdict};
use crate::session::{Ctx, Session};
use crate::stages::compare::{self, Run};
use crate::stages::patch::{self, Direction, PatchSet};
use crate::stages::variant::{self, Spec, Variant};
use crate::support::failure::{exit_code_of, fail, Kind};
use crate::ui;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn default_patch() -> PathBuf {
    crate::support::repo_dir()
        .join("patches")
        .join(variant::DEFAULT_PATCH)
}

/// The upstream fix in the form for a tree of `version`: patches/ holds the
/// 6.12 form, patches/6.1/ the 6.1 stable one (same change, other context).
pub fn default_patch_for(version: KernelVersion) -> PathBuf {
    let own = Some(version.series()).map(|(major, minor)| {
        let dir = crate::support::repo_dir()
            .join("patches")
            .join(format!("{major}.{minor}"));
        dir.join(variant::DEFAULT_PATCH)
    });
    own.filter(|p| p.is_file()).unwrap_or_else(default_patch)
}

/// How a verify that reached its verdict ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Pass,
    /// A candidate lost a row: what the error line says.
    Fail(String),
    /// The baseline lost nothing: what the error line says.
    NotReproduced(String),
}

impl Ended {
    /// The record's verdict, the exit code and the run's result.
    fn settle(outcome: Result<Ended>) -> (Verdict, i32, Result<()>) {
        let failed = |kind: Kind, why: String| Err(fail(kind, why));
        match outcome {
            Ok(Ended::Pass) => (Verdict::Pass, 0, Ok(())),
            Ok(Ended::Fail(why)) => {
                let kind = Kind::CandidateLost;
                (Verdict::Fail, kind.exit_code(), failed(kind, why))
            }
            Ok(Ended::NotReproduced(why)) => {
                let kind = Kind::BaselineNotReproduced;
                (Verdict::NotReproduced, kind.exit_code(), failed(kind, why))
            }
            Err(err) => (Verdict::Error, exit_code_of(&err), Err(err)),
        }
    }
}

impl Verify {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        self.run_with_record(cache_root).0
    }

    /// The run and its record, in memory (what `--json` writes).
    pub fn run_with_record(self, cache_root: &Path) -> (Result<()>, Record) {
        let mut session = Session::new(self.common.clone());
        let (verdict, code, outcome) = Ended::settle(self.pipeline(&mut session, cache_root));
        session.finish_with_record(outcome, |_| (verdict, code))
    }

    fn pipeline(&self, session: &mut Session, cache_root: &Path) -> Result<Ended> {
        let ctx = session.open(cache_root)?;
        let patch_files = if self.patches.is_empty() {
            vec![default_patch_for(ctx.source.version)]
        } else {
            self.patches.clone()
        };
        output::emit(output::Event::Stage(Stage::Variants));
        let plan = session
            .timings
            .time(Step::Variants, || make_variants(&ctx, &patch_files))?;
        for candidate in &plan.candidates {
            session.note_patch(&candidate.patch, candidate.direction)?;
        }
        let variants: Vec<Variant> = std::iter::once(plan.baseline.clone())
            .chain(plan.candidates.iter().map(|c| c.variant.clone()))
            .collect();
        session.note_variants(&variants);
        let built = session.build(&ctx, &variants)?;
        let runs = session.boot(&ctx, &variants, &built)?;
        let envs = self.common.env.envs();
        let tables = ui::verify_tables(&ctx.source.describe, &variants, &envs, &runs)?;
        output::result(tables.trim_end_matches('\n'));
        output::result(&format!("results: {}", ctx.out_dir.display()));
        let judged = judge(&plan, &runs);
        let lines: Vec<(&str, &str, &compare::Verdict)> = judged
            .iter()
            .map(|j| (j.record.name.as_str(), j.file.as_str(), &j.verdict))
            .collect();
        for line in ui::candidate_lines(&lines) {
            output::result(&line);
        }
        session.record.candidates = judged.iter().map(|j| j.record.clone()).collect();
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
fn judge(plan: &Plan, runs: &[Run]) -> Vec<Judged> {
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
fn conclude(judged: &[Judged], candidates: usize, skipped: &str) -> Ended {
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
        return Ended::Fail(format!("FAIL: {} ({skipped})", lost_by.join("; ")));
    }
    let not_reproduced = judged.iter().find_map(|j| match &j.verdict {
        compare::Verdict::BaselineNotReproduced(envs) => Some(envs.clone()),
        _ => None,
    });
    if let Some(envs) = not_reproduced {
        let names: Vec<&str> = envs.iter().map(|e| e.name()).collect();
        return Ended::NotReproduced(format!("the baseline lost nothing (beyond known defects) in {}: the bug was not reproduced, so the candidate proves nothing", names.join(", ")));
    }
    let which = if candidates == 1 {
        "the candidate keeps"
    } else {
        "every candidate keeps"
    };
    output::result(&format!(
        "PASS: {which} every row the baseline lost (bug reproduced) and loses none; {skipped}"
    ));
    Ended::Pass
}

struct Candidate {
    patch: PatchSet,
    /// How the patch relates to the tree: Forward (new), Reverse (contained).
    direction: Direction,
    variant: Variant,
}

struct Plan {
    baseline: Variant,
    candidates: Vec<Candidate>,
}

/// Each candidate file read (a series split into its mails) and how it
/// relates to the tree: new (forward) or already contained (reverse).
fn load_candidates(ctx: &Ctx, patch_files: &[PathBuf]) -> Result<Vec<(PatchSet, Direction)>> {
    let series_dir = ctx.cache.dir("series")?;
    let scratch = ctx
        .cache
        .dir("scratch")?
        .join(format!("detect-{}", std::process::id()));
    let mut sets = Vec::new();
    for file in patch_files {
        let set = patch::load(file, &series_dir)?;
        let direction = patch::detect(&ctx.kbuild, &ctx.source.root, &set, &scratch)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        output::emit(output::Event::Candidate {
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
fn make_variants(ctx: &Ctx, patch_files: &[PathBuf]) -> Result<Plan> {
    let sets = load_candidates(ctx, patch_files)?;
    // Later candidates' parts come off first, as `git revert` of a range would.
    let contained = |except: Option<usize>| -> Vec<(&Path, Direction)> {
        sets.iter()
            .enumerate()
            .rev()
            .filter(|(i, (_, d))| *d == Direction::Reverse && Some(*i) != except)
            .flat_map(|(_, (set, _))| set.applied(Direction::Reverse))
            .collect()
    };
    let baseline = variant::make(
        &ctx.cache,
        &ctx.kbuild,
        &ctx.source,
        Spec {
            name: "baseline".into(),
            patches: contained(None),
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
        let variant = variant::make(&ctx.cache, &ctx.kbuild, &ctx.source, Spec { name, patches })?;
        variants.push(variant);
    }
    let candidates = sets
        .into_iter()
        .zip(variants)
        .map(|((patch, direction), variant)| Candidate {
            patch,
            direction,
            variant,
        })
        .collect();
    Ok(Plan {
        baseline,
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_verdict_and_exit_code() {
        let settled = |o| {
            let (verdict, code, result) = Ended::settle(o);
            (verdict, code, result.is_ok())
        };
        assert_eq!(settled(Ok(Ended::Pass)), (Verdict::Pass, 0, true));
        assert_eq!(
            settled(Ok(Ended::Fail("x".into()))),
            (Verdict::Fail, 1, false)
        );
        assert_eq!(
            settled(Ok(Ended::NotReproduced("x".into()))),
            (Verdict::NotReproduced, 3, false)
        );
        let boot = Err(fail(Kind::Boot, "hang"));
        assert_eq!(settled(boot), (Verdict::Error, 7, false));
        // An error that happens to carry code 1 is still an error, not a fail.
        let (verdict, _, _) = Ended::settle(Err(anyhow::anyhow!("disk")));
        assert_eq!(verdict, Verdict::Error);
    }

    #[test]
    fn the_default_candidate_is_the_fix_in_the_form_for_the_tree() {
        let for_6_1 = default_patch_for("6.1.192".parse().unwrap());
        assert!(for_6_1.ends_with(format!("patches/6.1/{}", variant::DEFAULT_PATCH)));
        assert!(for_6_1.is_file());
        assert_eq!(
            default_patch_for("6.12.117".parse().unwrap()),
            default_patch()
        );
        assert_eq!(default_patch_for("6.10".parse().unwrap()), default_patch());
    }
}
