//! `cargo xtask probe`: build and boot one tree (optionally with patches on
//! top) and judge it alone — does it keep every cache mode? Exit codes are
//! `git bisect run`'s: 0 good, 1 bad, 125 untestable, 128 abort.

use crate::flags::{Expect, Probe};
use crate::record::{Step, Verdict};
use crate::session::Session;
use crate::stages::compare::{self, Run};
use crate::stages::patch::Direction;
use crate::stages::variant::{self, Spec};
use crate::support::failure::{bisect_exit_code, BISECT_SKIP};
use anyhow::Result;
use std::path::Path;

pub const GOOD: i32 = 0;
pub const BAD: i32 = 1;

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
        let mut session = Session::new(self.common.clone());
        let outcome = self.pipeline(&mut session, cache_root);
        let code = match &outcome {
            Ok(code) => *code,
            Err(err) => bisect_exit_code(err),
        };
        let (verdict, what) = match code {
            GOOD => (Verdict::Good, "good"),
            BAD => (Verdict::Bad, "bad"),
            BISECT_SKIP => (Verdict::Untestable, "untestable (skip)"),
            _ => (Verdict::Abort, "setup broken (abort)"),
        };
        let result = session.finish(outcome.map(|_| ()), |_| (verdict, code));
        if let Err(err) = &result {
            crate::support::failure::print_error(err);
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

    fn pipeline(&self, session: &mut Session, cache_root: &Path) -> Result<i32> {
        let ctx = session.open(cache_root)?;
        let series_dir = ctx.cache.dir("series")?;
        let sets = self
            .patch
            .iter()
            .map(|p| crate::stages::patch::load(p, &series_dir))
            .collect::<Result<Vec<_>>>()?;
        for set in &sets {
            session.note_patch(set, Direction::Forward)?;
        }
        let spec = Spec {
            name: "probe".into(),
            patches: sets
                .iter()
                .flat_map(|set| set.applied(Direction::Forward))
                .collect(),
        };
        let variant = session.timings.time(Step::Variants, || {
            variant::make(&ctx.cache, &ctx.kbuild, &ctx.source, spec)
        })?;
        session.note_variants(std::slice::from_ref(&variant));
        let built = session.build(&ctx, std::slice::from_ref(&variant))?;
        let runs: Vec<Run> = session.boot(&ctx, std::slice::from_ref(&variant), &built)?;
        crate::output::result(&format!(
            "\nkernel  {}\nvariant {}\n",
            ctx.source.describe, variant.describe
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
        Ok(judge(all_kept, self.expect))
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
