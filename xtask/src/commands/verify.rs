//! `cargo xtask verify`: a baseline kernel and one kernel per candidate
//! patch, both environments, the side-by-side table and the verdict. The steps themselves live in their modules;
//! session.rs holds what verify shares with probe.

use crate::flags::Verify;
use crate::session::{Ctx, Session};
use crate::stages::compare::{self, Run, Verdict};
use crate::stages::patch::{self, Direction, PatchSet};
use crate::stages::variant::{self, Spec, Variant};
use crate::support::cache::sha256_hex;
use crate::support::failure::{exit_code_of, fail, Kind};
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn default_patch() -> PathBuf {
    variant::repo_dir()
        .join("patches")
        .join(variant::DEFAULT_PATCH)
}

/// Records a patch file (name, hash, direction, the mails of a series) in
/// the run's JSON.
pub fn note_patch(session: &mut Session, set: &PatchSet, direction: Direction) -> Result<()> {
    let bytes = std::fs::read(&set.file).map_err(|e| {
        fail(
            Kind::Setup,
            format!("cannot read patch {}: {e}", set.file.display()),
        )
    })?;
    session.json.patches.push(serde_json::json!({
        "file": set.file.display().to_string(),
        "sha256": sha256_hex(&bytes),
        "direction": format!("{direction:?}").to_lowercase(),
        "series": set.subjects,
    }));
    Ok(())
}

impl Verify {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let mut session = Session::new(self.common.clone());
        let outcome = self.pipeline(&mut session, cache_root);
        session.finish(outcome, |outcome| match outcome {
            Ok(()) => ("pass", 0),
            Err(err) => {
                let code = exit_code_of(err);
                (
                    if code == Kind::CandidateLost.exit_code() {
                        "fail"
                    } else {
                        "error"
                    },
                    code,
                )
            }
        })
    }

    fn pipeline(&self, session: &mut Session, cache_root: &Path) -> Result<()> {
        let patch_files = if self.patches.is_empty() {
            vec![default_patch()]
        } else {
            self.patches.clone()
        };
        let ctx = session.open(cache_root)?;
        eprintln!("==> variants");
        let plan = session
            .timings
            .time("variants", || make_variants(&ctx, &patch_files))?;
        for candidate in &plan.candidates {
            note_patch(session, &candidate.patch, candidate.direction)?;
        }
        let variants: Vec<Variant> = std::iter::once(plan.baseline)
            .chain(plan.candidates.iter().map(|c| c.variant.clone()))
            .collect();
        session.note_variants(&variants);
        let built = session.build(&variants)?;
        let runs = session.boot(&ctx, &variants, &built)?;
        let runs_of = |name: &str| -> Vec<Run> {
            runs.iter().filter(|r| r.variant == name).cloned().collect()
        };
        let baseline = &variants[0];
        let base_runs = runs_of(&baseline.name);

        println!();
        println!("kernel       {}", ctx.source.describe);
        for v in &variants {
            println!("{:<12} {}", v.name, v.describe);
        }
        println!();
        for env in self.common.env.envs() {
            let in_env: Vec<&Run> = variants
                .iter()
                .filter_map(|v| runs.iter().find(|r| r.env == env && r.variant == v.name))
                .collect();
            if in_env.len() != variants.len() {
                return Err(anyhow::anyhow!("a run is missing for {}", env.name()));
            }
            println!("{}", compare::table(env, &in_env));
        }
        println!("results: {}", ctx.out_dir.display());
        let mut lost_by = Vec::new();
        let mut not_reproduced = None;
        for candidate in &plan.candidates {
            let name = &candidate.variant.name;
            let file = candidate
                .patch
                .file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let verdict = compare::verdict(&base_runs, &runs_of(name));
            let lost = match &verdict {
                Verdict::CandidateLost(lost) => lost.clone(),
                _ => Vec::new(),
            };
            match &verdict {
                Verdict::CandidateLost(lost) => {
                    println!("{name:<12} {file}: LOSES {}", lost.join(", "));
                    lost_by.push(format!("{name} ({file}) loses {}", lost.join(", ")));
                }
                Verdict::BaselineNotReproduced(envs) => not_reproduced = Some(envs.clone()),
                Verdict::Pass => {
                    println!("{name:<12} {file}: keeps every cache mode on every path")
                }
            }
            session.json.candidates.push(serde_json::json!({
                "name": name, "patch": candidate.patch.file.display().to_string(),
                "verdict": if lost.is_empty() { "pass" } else { "fail" }, "lost": lost,
            }));
        }
        if !lost_by.is_empty() {
            return Err(fail(
                Kind::CandidateLost,
                format!("FAIL: {}", lost_by.join("; ")),
            ));
        }
        if let Some(envs) = not_reproduced {
            let names: Vec<&str> = envs.iter().map(|e| e.name()).collect();
            return Err(fail(
                Kind::BaselineNotReproduced,
                format!("the baseline kept every mode in {}: the bug was not reproduced, so the candidate proves nothing", names.join(", ")),
            ));
        }
        let which = if plan.candidates.len() == 1 {
            "the candidate keeps"
        } else {
            "every candidate keeps"
        };
        println!("PASS: {which} every cache mode; the baseline loses some (bug reproduced)");
        Ok(())
    }
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

/// The baseline is the tree without every candidate it already contains;
/// each candidate is the baseline plus that one patch (or series).
fn make_variants(ctx: &Ctx, patch_files: &[PathBuf]) -> Result<Plan> {
    let series_dir = ctx.cache.dir("series")?;
    let scratch = ctx
        .cache
        .dir("scratch")?
        .join(format!("detect-{}", std::process::id()));
    let mut sets = Vec::new();
    for file in patch_files {
        let set = patch::load(file, &series_dir)?;
        let direction = patch::detect(&ctx.source.root, &set, &scratch)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let series = if set.parts.len() > 1 {
            format!(" (a series of {})", set.parts.len())
        } else {
            String::new()
        };
        match direction {
            Direction::Forward => {
                eprintln!("{name}{series} applies forward: a candidate = baseline + it")
            }
            Direction::Reverse => {
                eprintln!("the tree already contains {name}{series}: the baseline has it reversed")
            }
        }
        sets.push((set, direction));
    }
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
        let variant = variant::make(&ctx.cache, &ctx.source, Spec { name, patches })?;
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
