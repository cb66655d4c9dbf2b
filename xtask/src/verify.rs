//! `cargo xtask verify`: baseline and candidate kernels, both environments,
//! the diff and the verdict. The steps themselves live in their modules;
//! session.rs holds what verify shares with probe.

use crate::cache::sha256_hex;
use crate::diff::{self, Verdict};
use crate::failure::{exit_code_of, fail, Kind};
use crate::patch::{self, Direction};
use crate::session::{Common, Ctx, Session};
use crate::variant::{self, Spec, Variant};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct Verify {
    #[command(flatten)]
    pub common: Common,
    /// Candidate patch. Default: patches/0001-…-modify-mask.patch (the upstream fix).
    #[arg(long, value_name = "FILE")]
    pub patch: Option<PathBuf>,
}

pub fn default_patch() -> PathBuf {
    variant::repo_dir().join("patches").join(variant::DEFAULT_PATCH)
}

/// Records a patch file (name, hash, direction) in the run's JSON.
pub fn note_patch(session: &mut Session, file: &Path, direction: Direction) -> Result<()> {
    let bytes = std::fs::read(file).map_err(|e| fail(Kind::Setup, format!("cannot read patch {}: {e}", file.display())))?;
    session.json.patches.push(serde_json::json!({
        "file": file.display().to_string(),
        "sha256": sha256_hex(&bytes),
        "direction": format!("{direction:?}").to_lowercase(),
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
                (if code == Kind::CandidateLost.exit_code() { "fail" } else { "error" }, code)
            }
        })
    }

    fn pipeline(&self, session: &mut Session, cache_root: &Path) -> Result<()> {
        let patch_file = self.patch.clone().unwrap_or_else(default_patch);
        let ctx = session.open(cache_root)?;
        eprintln!("==> variants");
        let variants = session.timings.time("variants", || make_variants(&ctx, &patch_file))?;
        note_patch(session, &patch_file, variants.direction)?;
        let [baseline, candidate] = &variants.list;
        session.note_variants(&variants.list);
        let built = session.build(&variants.list)?;
        let runs = session.boot(&ctx, &variants.list, &built)?;
        let (base_runs, cand_runs): (Vec<_>, Vec<_>) = runs.into_iter().partition(|r| r.variant == baseline.name);

        println!();
        println!("kernel     {}", ctx.source.describe);
        println!("baseline   {}", baseline.describe);
        println!("candidate  {}", candidate.describe);
        println!();
        for env in self.common.env.envs() {
            let b = base_runs.iter().find(|r| r.env == env).context("missing baseline run")?;
            let c = cand_runs.iter().find(|r| r.env == env).context("missing candidate run")?;
            println!("{}", diff::table(env, b, c));
        }
        println!("results: {}", ctx.out_dir.display());
        match diff::verdict(&base_runs, &cand_runs) {
            Verdict::Pass => {
                println!("PASS: the candidate keeps every cache mode; the baseline loses some (bug reproduced)");
                Ok(())
            }
            Verdict::CandidateLost(lost) => Err(fail(Kind::CandidateLost, format!("FAIL: the candidate loses {}", lost.join(", ")))),
            Verdict::BaselineNotReproduced(envs) => {
                let names: Vec<&str> = envs.iter().map(|e| e.name()).collect();
                Err(fail(
                    Kind::BaselineNotReproduced,
                    format!("the baseline kept every mode in {}: the bug was not reproduced, so the candidate proves nothing", names.join(", ")),
                ))
            }
        }
    }
}

struct Variants {
    direction: Direction,
    list: [Variant; 2],
}

/// Baseline and candidate, depending on whether the tree already has the patch.
fn make_variants(ctx: &Ctx, patch_file: &Path) -> Result<Variants> {
    let direction = patch::detect(&ctx.source.root, patch_file)?;
    let name = patch_file.file_name().unwrap_or_default().to_string_lossy();
    let (baseline, candidate) = match direction {
        Direction::Forward => {
            eprintln!("{name} applies forward: baseline = the tree, candidate = tree + patch");
            (Spec { name: "baseline".into(), patches: vec![] }, Spec { name: "candidate".into(), patches: vec![(patch_file, direction)] })
        }
        Direction::Reverse => {
            eprintln!("the tree already contains {name}: baseline = the tree with it reversed, candidate = the tree");
            (Spec { name: "baseline".into(), patches: vec![(patch_file, direction)] }, Spec { name: "candidate".into(), patches: vec![] })
        }
    };
    let list = [variant::make(&ctx.cache, &ctx.source, baseline)?, variant::make(&ctx.cache, &ctx.source, candidate)?];
    Ok(Variants { direction, list })
}
