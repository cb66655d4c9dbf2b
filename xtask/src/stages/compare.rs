//! Comparing the reports: the baseline-vs-candidate table per environment and
//! the verdict. Everything here works on reports parsed from booted kernels.

use crate::stages::ktap::{ModeResult, Report, MODES};
use crate::stages::qemu::Env;
use serde::Serialize;

/// One boot's parsed report.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub variant: String,
    pub env: Env,
    pub report: Report,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The candidate keeps every mode everywhere; the baseline loses some.
    Pass,
    /// The candidate loses these ("env path mode→observed").
    CandidateLost(Vec<String>),
    /// The baseline lost nothing in these environments: the bug was not reproduced.
    BaselineNotReproduced(Vec<Env>),
}

/// "env path mode→observed" for every mode a run lost.
pub fn lost_modes(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .flat_map(|run| {
            run.report
                .results
                .iter()
                .filter(|r| r.lost())
                .map(move |r| {
                    format!(
                        "{} {} {}→{}",
                        run.env.name(),
                        r.path,
                        r.requested,
                        r.observed
                    )
                })
        })
        .collect()
}

/// One candidate against the baseline.
pub fn verdict(baseline: &[Run], candidate: &[Run]) -> Verdict {
    let candidate_lost = lost_modes(candidate);
    if !candidate_lost.is_empty() {
        return Verdict::CandidateLost(candidate_lost);
    }
    let not_reproduced: Vec<Env> = baseline
        .iter()
        .filter(|run| !run.report.results.iter().any(|r| r.lost()))
        .map(|run| run.env)
        .collect();
    if !not_reproduced.is_empty() {
        return Verdict::BaselineNotReproduced(not_reproduced);
    }
    Verdict::Pass
}

fn cell(result: Option<&ModeResult>) -> String {
    match result {
        None => "(not run)".to_string(),
        Some(r) if r.skipped.is_some() => "skip".to_string(),
        Some(r) if r.kept => format!("{:<3} kept", r.observed),
        Some(r) => format!("{:<3} LOST", r.observed),
    }
}

/// The table of one environment: a row per path and mode, a column per
/// variant (the first is the baseline), then the baseline's PTE bits.
pub fn table(env: Env, runs: &[&Run]) -> String {
    let mut out = format!("{} — PAT layout (entries 0..7):\n", env.name());
    for run in runs {
        out += &format!(
            "  {:<12} {}{}\n",
            run.variant,
            run.report.pat_layout.join(" "),
            run.report
                .pat_msr
                .as_deref()
                .map(|m| format!("   (PAT MSR {m})"))
                .unwrap_or_default()
        );
    }
    let width = runs
        .iter()
        .map(|r| r.variant.len())
        .max()
        .unwrap_or(0)
        .max(9)
        + 2;
    out += &format!("  {:<27} {:<4} ", "path", "mode");
    for run in runs {
        out += &format!("{:<width$}", run.variant);
    }
    out += &format!(
        "{} PTE before → after\n",
        runs.first().map_or("", |r| r.variant.as_str())
    );
    let mut paths: Vec<&str> = runs
        .iter()
        .flat_map(|run| run.report.results.iter().map(|r| r.path.as_str()))
        .collect();
    paths.dedup();
    let mut seen = Vec::new();
    paths.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(*p);
            true
        }
    });
    for path in paths {
        for mode in MODES {
            let find = |run: &Run| {
                run.report
                    .results
                    .iter()
                    .find(|r| r.path == path && r.requested == mode)
                    .cloned()
            };
            let cells: Vec<Option<ModeResult>> = runs.iter().map(|run| find(run)).collect();
            let marker = if cells.iter().flatten().any(ModeResult::lost) {
                "!"
            } else {
                " "
            };
            out += &format!("{marker} {path:<27} {mode:<4} ");
            for c in &cells {
                out += &format!("{:<width$}", cell(c.as_ref()));
            }
            if let Some(Some(b)) = cells
                .first()
                .filter(|b| b.as_ref().is_some_and(|b| b.skipped.is_none()))
            {
                out += &format!("{} → {}", b.pte_before, b.pte_after);
            }
            out += "\n";
        }
    }
    out
}

/// One boot's results alone (probe).
pub fn single_table(run: &Run) -> String {
    let mut out = format!(
        "{} — PAT layout: {}\n",
        run.env.name(),
        run.report.pat_layout.join(" ")
    );
    for r in &run.report.results {
        let marker = if r.lost() { '!' } else { ' ' };
        let ptes = if r.skipped.is_some() {
            String::new()
        } else {
            format!("{} → {}", r.pte_before, r.pte_after)
        };
        out += &format!(
            "{marker} {:<27} {:<4} {:<10} {ptes}\n",
            r.path,
            r.requested,
            cell(Some(r))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::ktap::{parse_ktap, tests::sample_ktap};

    fn run(variant: &str, env: Env, lost: &[(&str, &str)]) -> Run {
        Run {
            variant: variant.into(),
            env,
            report: parse_ktap(&sample_ktap(lost)).unwrap(),
        }
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
        assert_eq!(
            verdict(&b, &c),
            Verdict::CandidateLost(vec!["native vma_set_page_prot WP→WC".into()])
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
            .find(|l| l.contains(&format!("{:<27} WT ", "vma_set_page_prot")))
            .unwrap();
        assert!(
            wt.starts_with('!') && wt.contains("UC  LOST") && wt.contains("WT  kept"),
            "{t}"
        );
        let wp = t
            .lines()
            .find(|l| l.contains(&format!("{:<27} WP ", "vma_set_page_prot")))
            .unwrap();
        assert_eq!(wp.matches("LOST").count(), 2, "{t}");
        let wb = t
            .lines()
            .find(|l| l.contains(&format!("{:<27} WB ", "vma_set_page_prot")))
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
