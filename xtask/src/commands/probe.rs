//! `cargo xtask probe`: build and boot one tree (optionally with patches on
//! top) and judge it alone — does it keep every cache mode? Exit codes are
//! `git bisect run`'s: 0 good, 1 bad, 125 untestable, 128 abort.

use crate::flags::{Expect, Probe};
use crate::pipeline::{self, Boot, Ctx, Ending, Job, Outputs, Planned, Tally};
use crate::record::{Record, Verdict};
use crate::stages::compare::{self, Run};
use crate::stages::patch::Direction;
use crate::stages::variant::{self, Spec, Variant};
use crate::support::failure::{bisect_exit_code, BISECT_SKIP};
use anyhow::Result;
use std::path::Path;

use crate::support::failure::{BISECT_BAD as BAD, BISECT_GOOD as GOOD};

/// good/bad from whether every mode was kept.
pub fn judge(all_kept: bool, expect: Expect) -> i32 {
    match (all_kept, expect) {
        (true, Expect::Kept) | (false, Expect::Lost) => GOOD,
        _ => BAD,
    }
}

impl Probe {
    /// Returns the process exit code; errors are printed here, mapped to
    /// 125 (skip this revision) or 128 (abort).
    pub fn run(self, cache_root: &Path) -> i32 {
        let started = std::time::Instant::now();
        let outcome = pipeline::run(&self.common, cache_root, &self);
        let code = outcome.code;
        let what = match outcome.verdict {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Untestable => "untestable (skip)",
            _ => "setup broken (abort)",
        };
        if let Err(err) = outcome.write_and_end(&Outputs::of(&self.common)) {
            crate::support::failure::print_error(&err);
        }
        let rev = self.common.rev.clone().or_else(|| {
            self.common
                .kernel
                .as_deref()
                .and_then(crate::stages::source::git_head)
                .map(|r| r[..12.min(r.len())].to_string())
        });
        crate::output::result(&format!(
            "probe: {} {what} in {:.0} s (exit {code})",
            rev.as_deref().unwrap_or("tree"),
            started.elapsed().as_secs_f64()
        ));
        code
    }
}

/// probe's one variant: the tree with `--patch`es on top.
pub struct ProbePlan(Vec<Variant>);

impl Planned for ProbePlan {
    fn variants(&self) -> &[Variant] {
        &self.0
    }
}

impl Job for Probe {
    type Plan = ProbePlan;

    fn plan(&self, ctx: &Ctx, record: &mut Record) -> Result<ProbePlan> {
        let series_dir = ctx.cache.dir("series")?;
        let sets = self
            .patch
            .iter()
            .map(|p| crate::stages::patch::load(p, &series_dir))
            .collect::<Result<Vec<_>>>()?;
        for set in &sets {
            pipeline::note_patch(record, set, Direction::Forward)?;
        }
        let patches = sets
            .iter()
            .flat_map(|set| set.applied(Direction::Forward))
            .collect();
        let spec = Spec {
            name: "probe".into(),
            patches,
            harness_made: false,
        };
        let variant = variant::make(&ctx.cache, &ctx.kbuild, &ctx.source, spec)?;
        Ok(ProbePlan(vec![variant]))
    }

    fn judge(
        &self,
        ctx: &Ctx,
        plan: &ProbePlan,
        boots: Vec<Boot>,
        _: &mut Tally,
    ) -> Result<Ending> {
        let runs: Vec<Run> = pipeline::reported(boots)?;
        crate::output::result(&format!(
            "\nkernel  {}\nvariant {}\n",
            ctx.source.describe, plan.0[0].describe
        ));
        for run in &runs {
            crate::output::result(&compare::single_table(run));
        }
        let modes_kept = runs
            .iter()
            .all(|r| !r.report.results.iter().any(|m| m.lost_in_scope()));
        let bits_kept = runs.iter().all(|r| {
            !r.report.bits.iter().any(|b| b.lost()) && !r.pagemap.iter().any(|p| p.failed())
        });
        // `--expect lost` looks for the kernels that lose a cache mode: a
        // lost bit cannot make one good.
        let all_kept = modes_kept && (bits_kept || matches!(self.expect, Expect::Lost));
        Ok(match judge(all_kept, self.expect) {
            GOOD => Ending::plain(Verdict::Good, GOOD),
            _ => Ending::plain(Verdict::Bad, BAD),
        })
    }

    /// `git bisect run`'s codes: 125 skips a revision that cannot be
    /// tested, 128 aborts on a broken setup.
    fn stopped(&self, err: &anyhow::Error) -> (Verdict, i32) {
        match bisect_exit_code(err) {
            BISECT_SKIP => (Verdict::Untestable, BISECT_SKIP),
            code => (Verdict::Abort, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_inverts_good_and_bad() {
        assert_eq!(judge(true, Expect::Kept), GOOD);
        assert_eq!(judge(false, Expect::Kept), BAD);
        assert_eq!(judge(false, Expect::Lost), GOOD);
        assert_eq!(judge(true, Expect::Lost), BAD);
    }
}
