//! `cargo xtask mutants`: how strong the probes are, measured as mutation
//! testing measures a test suite. From the tree's own
//! arch/x86/include/asm/pgtable_types.h, one mutant per bit term of
//! `_COMMON_PAGE_CHG_MASK`, `_PAGE_CHG_MASK` and `_HPAGE_CHG_MASK`, each a
//! patch on the tree as is (the reference). Every mutant is built; one
//! whose bzImage is byte-identical to the reference's is equivalent (shown
//! by the build, no boot); every other one is booted and probed like any
//! candidate: killed by the rows it lost that the reference kept (or by
//! its boot failing: an oops, a panic), else survived. The score is
//! killed / (all − equivalent); exit 0 when every non-equivalent mutant
//! is killed, 1 when one survived.

use crate::flags::Mutants;
use crate::model::bits::KeptBit;
use crate::output::{self, result};
use crate::pipeline::{self, Boot, Ctx, Ending, Job, Outputs, Planned, Tally};
use crate::record::{mutation_score, MutantOutcome, MutantRecord, Record, Step, Verdict};
use crate::stages::compare::{self, Run};
use crate::stages::mask::{self, Mutant};
use crate::stages::patch::Direction;
use crate::stages::variant::{self, Spec, Variant};
use crate::stages::{build::Built, source};
use crate::support::cache::{sha256_hex, Cache};
use crate::support::failure::{exit_code_of, fail, Kind};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

impl Mutants {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        if self.list {
            return self.list(cache_root);
        }
        pipeline::run(&self.common, cache_root, &self).write_and_end(&Outputs::of(&self.common))
    }

    fn list(&self, cache_root: &Path) -> Result<()> {
        let cache = Cache::open(cache_root)?;
        let kernel = self.common.kernel.as_deref();
        let tree = source::get(&cache, kernel, self.common.rev.as_deref())?;
        let mutants = self.chosen(&tree.root)?;
        // `describe` names the version already.
        result(&format!("{}: {} mutants", tree.describe, mutants.len()));
        for m in &mutants {
            result(&format!("  {:<24} drops {}", m.mask, m.term));
        }
        if let Some(dir) = &self.patches {
            write_patches(&mutants, dir)?;
            result(&format!("patches in {}", dir.display()));
        }
        Ok(())
    }

    /// The tree's mutants, or those `--mutant` names (an unknown name is a
    /// setup error that lists the known ones).
    fn chosen(&self, tree: &Path) -> Result<Vec<Mutant>> {
        let header_path = tree.join(mask::HEADER);
        let header = std::fs::read_to_string(&header_path)
            .with_context(|| format!("cannot read {}", header_path.display()))?;
        let all = mask::mutants(&header).map_err(|why| fail(Kind::Setup, why))?;
        if self.mutants.is_empty() {
            return Ok(all);
        }
        let names: Vec<String> = all.iter().map(Mutant::name).collect();
        if let Some(unknown) = self.mutants.iter().find(|n| !names.contains(n)) {
            let why = format!(
                "no mutant {unknown} in this tree; its mutants: {}",
                names.join(", ")
            );
            return Err(fail(Kind::Setup, why));
        }
        Ok(all
            .into_iter()
            .filter(|m| self.mutants.contains(&m.name()))
            .collect())
    }
}

/// The reference (index 0), then one variant per mutant.
pub struct MutantPlan {
    mutants: Vec<Mutant>,
    variants: Vec<Variant>,
}

impl Planned for MutantPlan {
    fn variants(&self) -> &[Variant] {
        &self.variants
    }
}

impl Job for Mutants {
    type Plan = MutantPlan;

    fn plan(&self, ctx: &Ctx, _: &mut Record) -> Result<MutantPlan> {
        let mutants = self.chosen(&ctx.source.root)?;
        let dir = self
            .patches
            .clone()
            .unwrap_or_else(|| ctx.out_dir.join("mutants"));
        let files = write_patches(&mutants, &dir)?;
        let mut variants = vec![make(ctx, "reference".into(), None)?];
        for (m, file) in mutants.iter().zip(&files) {
            variants.push(make(ctx, m.name(), Some(file))?);
        }
        Ok(MutantPlan { mutants, variants })
    }

    /// The reference and every mutant whose bzImage differs from it; each
    /// mutant's record starts here, as its build left it.
    fn to_boot(
        &self,
        plan: &MutantPlan,
        built: &[Built],
        so_far: &mut Tally,
    ) -> Result<Vec<usize>> {
        let reference_image = image_sha(&built[0])?;
        let mut to_boot = vec![0];
        for (i, m) in plan.mutants.iter().enumerate() {
            let equivalent = image_sha(&built[i + 1])? == reference_image;
            if !equivalent {
                to_boot.push(i + 1);
            }
            let timings = &so_far.timings;
            let build_seconds = timings.seconds(&Step::Config { variant: m.name() })
                + timings.seconds(&Step::Build { variant: m.name() });
            let shown = equivalent.then_some(reference_image.as_str());
            so_far
                .record
                .mutants
                .push(built_record(m, shown, build_seconds));
        }
        Ok(to_boot)
    }

    fn judge(
        &self,
        ctx: &Ctx,
        plan: &MutantPlan,
        boots: Vec<Boot>,
        so_far: &mut Tally,
    ) -> Result<Ending> {
        let records = &mut so_far.record.mutants;
        judge(&plan.variants, boots, records)?;
        for r in records.iter_mut() {
            let boot = |env| Step::Boot {
                variant: r.name.clone(),
                env,
            };
            let env = crate::model::Env::ALL.iter();
            r.boot_seconds = env.map(|&env| so_far.timings.seconds(&boot(env))).sum();
        }
        output::result(&table(&ctx.source.describe, records));
        output::result(&format!("results: {}", ctx.out_dir.display()));
        let survivors: Vec<String> = records
            .iter()
            .filter(|r| r.outcome == MutantOutcome::Survived)
            .map(|r| r.name.clone())
            .collect();
        if survivors.is_empty() {
            return Ok(Ending::plain(Verdict::Pass, 0));
        }
        let why = format!(
            "{} mutant(s) survived: {}",
            survivors.len(),
            survivors.join(", ")
        );
        Ok(Ending::failed(Verdict::Fail, Kind::CandidateLost, why))
    }
}

/// A mutant as its build left it: equivalent when `identical_to` (the
/// reference image's sha256) is given, else survived until a row kills it.
fn built_record(m: &Mutant, identical_to: Option<&str>, build_seconds: f64) -> MutantRecord {
    let (outcome, by) = match identical_to {
        Some(sha) => {
            let why = format!(
                "bzImage byte-identical to the reference's (sha256 {})",
                &sha[..16]
            );
            (MutantOutcome::Equivalent, vec![why])
        }
        None => (MutantOutcome::Survived, Vec::new()),
    };
    MutantRecord {
        name: m.name(),
        mask: m.mask.clone(),
        term: m.term.clone(),
        outcome,
        build_seconds,
        boot_seconds: 0.0,
        by,
        kselftests_kill: None,
    }
}

fn make(ctx: &Ctx, name: String, patch: Option<&PathBuf>) -> Result<Variant> {
    let patches = patch
        .map(|p| (p.as_path(), Direction::Forward))
        .into_iter()
        .collect();
    // A mutant is the tree with one term of a mask removed by the harness:
    // trusted as the tree is, so it reuses the reference's objects that the
    // header does not reach (and its own are there for a rerun).
    let spec = Spec {
        name,
        patches,
        harness_made: true,
    };
    variant::make(&ctx.cache, &ctx.kbuild, &ctx.source, spec)
}

fn image_sha(built: &Built) -> Result<String> {
    let bytes = std::fs::read(&built.bzimage)
        .with_context(|| format!("cannot read {}", built.bzimage.display()))?;
    Ok(sha256_hex(&bytes))
}

/// Writes each mutant's patch as NAME.patch in `dir`; returns the files.
fn write_patches(mutants: &[Mutant], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    for m in mutants {
        let file = dir.join(format!("{}.patch", m.name()));
        std::fs::write(&file, &m.patch)
            .with_context(|| format!("cannot write {}", file.display()))?;
        files.push(file);
    }
    Ok(files)
}

/// Sets each booted mutant's outcome: killed by the rows it lost that the
/// reference kept, or by a boot that failed; survived otherwise, with what
/// the reference showed of the mutant's bit. A reference that did not boot
/// leaves nothing to compare with: the run's error.
fn judge(
    variants: &[Variant],
    boots: Vec<(usize, crate::model::Env, Result<Run>)>,
    records: &mut [MutantRecord],
) -> Result<()> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    let mut crashes: Vec<Vec<String>> = vec![Vec::new(); variants.len()];
    for (v, env, outcome) in boots {
        match outcome {
            Ok(run) => runs[v].push(run),
            Err(err) if v > 0 && exit_code_of(&err) == Kind::Boot.exit_code() => {
                crashes[v].push(format!("{env} boot failed: {err:#}"))
            }
            Err(err) => return Err(err),
        }
    }
    for (v, variant) in variants.iter().enumerate().skip(1) {
        let record = records
            .iter_mut()
            .find(|r| r.name == variant.name)
            .expect("every mutant has a record");
        if record.outcome == MutantOutcome::Equivalent {
            continue; // shown by its build, never booted
        }
        let ran_selftests = runs[v].iter().any(|r| !r.kselftests.is_empty());
        record.kselftests_kill = (ran_selftests && crashes[v].is_empty())
            .then(|| compare::regressed_selftests(&runs[0], &runs[v]));
        let mut by: Vec<String> = crashes[v].clone();
        by.extend(
            compare::killing_rows(&runs[0], &runs[v])
                .iter()
                .map(|r| r.to_string()),
        );
        by.extend(compare::killing_pagemap_rows(&runs[0], &runs[v]));
        if by.is_empty() {
            record.by = why_unseen(&record.term, &runs[0]);
        } else {
            record.outcome = MutantOutcome::Killed;
            record.by = by;
        }
    }
    Ok(())
}

/// For a survivor: what the reference's rows showed of the dropped term's
/// bit (each bit row skipped, with why), or that every row kept it.
fn why_unseen(term: &str, reference: &[Run]) -> Vec<String> {
    let bits: Vec<KeptBit> = KeptBit::ALL
        .into_iter()
        .filter(|b| b.mask_terms().contains(&term))
        .collect();
    let mut why: Vec<String> = reference
        .iter()
        .flat_map(|run| {
            run.report
                .bits
                .iter()
                .filter(|b| bits.contains(&b.bit))
                .map(move |b| format!("{} {} {}: {}", run.env, b.path, b.label(), b.describe()))
        })
        .collect();
    // /init's pagemap rows of the same bits.
    for run in reference {
        for row in &run.pagemap {
            if bits
                .iter()
                .any(|b| row.row == format!("pagemap.{}", b.name()))
            {
                why.push(format!("{} {}: {}", run.env, row.row, row.summary()));
            }
        }
    }
    if why.is_empty() {
        why.push("every row kept what the reference kept".into());
    }
    why
}

/// The mutants, their outcomes and why, then the score.
fn table(kernel: &str, records: &[MutantRecord]) -> String {
    let width = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("\nkernel  {kernel} (the reference: the tree as is)\n\n");
    out += &format!(
        "  {:<width$}  {:<10}  {:<10}  {:>5}  {:>5}  by / why\n",
        "mutant", "patverify", "kselftests", "build", "boots"
    );
    for r in records {
        let mut why = r.by.iter().chain(r.kselftests_kill.iter().flatten());
        let first = why.next().map(String::as_str).unwrap_or("");
        let (build, boots) = (seconds(r.build_seconds), seconds(r.boot_seconds));
        let outcome = r.outcome.name();
        let selftests = match &r.kselftests_kill {
            None => "-",
            Some(by) if by.is_empty() => "survived",
            Some(_) => "killed",
        };
        out += &format!(
            "  {:<width$}  {outcome:<10}  {selftests:<10}  {build:>5}  {boots:>5}  {first}\n",
            r.name
        );
        for more in why {
            out += &format!(
                "  {:<width$}  {:<10}  {:<10}  {:>5}  {:>5}  {more}\n",
                "", "", "", "", ""
            );
        }
    }
    out + &mutation_score(records)
}

/// "301 s", or "-" for nothing done.
fn seconds(s: f64) -> String {
    if s > 0.0 {
        format!("{s:.0} s")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, outcome: MutantOutcome) -> MutantRecord {
        MutantRecord {
            name: name.into(),
            mask: "_PAGE_CHG_MASK".into(),
            term: "_PAGE_PAT".into(),
            outcome,
            build_seconds: 301.0,
            boot_seconds: 0.0,
            by: vec!["native mprotect WC→UC-".into()],
            kselftests_kill: None,
        }
    }

    #[test]
    fn the_score_leaves_out_the_equivalent_mutants() {
        let records = [
            record("a", MutantOutcome::Killed),
            record("b", MutantOutcome::Equivalent),
            record("c", MutantOutcome::Survived),
        ];
        assert_eq!(
            mutation_score(&records),
            "mutation score 1/2 (3 mutants, 1 equivalent, 1 survived)"
        );
        let text = table("Linux 6.12.117", &records);
        assert!(
            text.contains(
                "  a       killed      -           301 s      -  native mprotect WC→UC-\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_selftests_column_says_what_they_did_beside_the_rows() {
        let mut records = [
            record("a", MutantOutcome::Killed),
            record("b", MutantOutcome::Killed),
            record("c", MutantOutcome::Equivalent),
        ];
        records[0].kselftests_kill = Some(Vec::new());
        records[1].kselftests_kill =
            Some(vec!["kselftest.mm.soft-dirty in native: FAIL: x".into()]);
        assert!(mutation_score(&records)
            .ends_with("; the kernel's selftests kill 1 of the 2 they ran on"));
        let text = table("Linux 6.12.117", &records);
        assert!(
            text.contains("  a       killed      survived    301 s"),
            "{text}"
        );
        assert!(
            text.contains("  b       killed      killed      301 s"),
            "{text}"
        );
        assert!(
            text.contains("kselftest.mm.soft-dirty in native: FAIL: x"),
            "{text}"
        );
    }

    #[test]
    fn a_survivor_says_what_the_reference_showed_of_its_bit() {
        let ktap = crate::stages::ktap::tests::sample_ktap_on("mprotect", &[]);
        let report = crate::stages::ktap::parse_ktap(&ktap).unwrap();
        let reference = [Run {
            variant: "reference".into(),
            env: crate::model::Env::Native,
            report,
            kselftests: Vec::new(),
            pagemap: Vec::new(),
        }];
        let why = why_unseen("_PAGE_UFFD_WP", &reference);
        assert_eq!(why.len(), 1);
        assert!(
            why[0].starts_with(
                "native mprotect bits.uffd_wp: skipped: this kernel has no uffd_wp bit"
            ),
            "{why:?}"
        );
        assert_eq!(
            why_unseen("_PAGE_PAT", &reference),
            ["every row kept what the reference kept"]
        );
    }
}
