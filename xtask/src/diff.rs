//! Comparing the reports: the baseline-vs-candidate table per environment and
//! the verdict. Everything here works on reports parsed from booted kernels.

use crate::qemu::Env;
use crate::report::{ModeResult, Report, MODES};
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

fn lost(run: &Run) -> Vec<&ModeResult> {
    run.report.results.iter().filter(|r| !r.kept).collect()
}

pub fn verdict(baseline: &[Run], candidate: &[Run]) -> Verdict {
    let candidate_lost: Vec<String> = candidate
        .iter()
        .flat_map(|run| {
            lost(run).into_iter().map(move |r| format!("{} {} {}→{}", run.env.name(), r.path, r.requested, r.observed))
        })
        .collect();
    if !candidate_lost.is_empty() {
        return Verdict::CandidateLost(candidate_lost);
    }
    let not_reproduced: Vec<Env> = baseline.iter().filter(|run| lost(run).is_empty()).map(|run| run.env).collect();
    if !not_reproduced.is_empty() {
        return Verdict::BaselineNotReproduced(not_reproduced);
    }
    Verdict::Pass
}

fn cell(result: Option<&ModeResult>) -> String {
    match result {
        None => "(not run)".to_string(),
        Some(r) => {
            let status = if r.kept { "kept".to_string() } else { format!("LOST {}→{}", r.requested, r.observed) };
            format!("{} → {}  {:<3}  {}", r.pte_before, r.pte_after, r.observed, status)
        }
    }
}

/// The side-by-side table of one environment.
pub fn table(env: Env, baseline: &Run, candidate: &Run) -> String {
    let mut out = String::new();
    out += &format!("{} — PAT layout (entries 0..7):\n", env.name());
    for (name, run) in [("baseline", baseline), (candidate.variant.as_str(), candidate)] {
        out += &format!(
            "  {name:<10} {}{}\n",
            run.report.pat_layout.join(" "),
            run.report.pat_msr.as_deref().map(|m| format!("   (PAT MSR {m})")).unwrap_or_default()
        );
    }
    let width = 60;
    out += &format!("  {:<18} {:<4} {:<width$} {}\n", "path", "mode", "baseline: before → after  mode", format!("{}: before → after  mode", candidate.variant));
    let mut paths: Vec<&str> = baseline.report.results.iter().map(|r| r.path.as_str()).collect();
    paths.dedup();
    for path in paths {
        for mode in MODES {
            let find = |run: &Run| run.report.results.iter().find(|r| r.path == path && r.requested == mode).cloned();
            let (b, c) = (find(baseline), find(candidate));
            let marker = if b.as_ref().is_some_and(|r| !r.kept) || c.as_ref().is_some_and(|r| !r.kept) { "!" } else { " " };
            out += &format!("{marker} {path:<18} {mode:<4} {:<width$} {}\n", cell(b.as_ref()), cell(c.as_ref()));
        }
    }
    out
}

/// One boot's results alone (probe).
pub fn single_table(run: &Run) -> String {
    let mut out = format!("{} — PAT layout: {}\n", run.env.name(), run.report.pat_layout.join(" "));
    for r in &run.report.results {
        let marker = if r.kept { ' ' } else { '!' };
        out += &format!("{marker} {:<18} {:<4} {}\n", r.path, r.requested, cell(Some(r)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{parse_ktap, tests::sample_ktap};

    fn run(variant: &str, env: Env, lost: &[(&str, &str)]) -> Run {
        Run { variant: variant.into(), env, report: parse_ktap(&sample_ktap(lost)).unwrap() }
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
        assert_eq!(verdict(&b, &c), Verdict::CandidateLost(vec!["native vma_set_page_prot WP→WC".into()]));
    }

    #[test]
    fn baseline_that_loses_nothing_is_not_a_pass() {
        let b = [run("baseline", Env::Native, &[("WT", "UC")]), run("baseline", Env::Xen, &[])];
        let c = [run("candidate", Env::Native, &[]), run("candidate", Env::Xen, &[])];
        assert_eq!(verdict(&b, &c), Verdict::BaselineNotReproduced(vec![Env::Xen]));
    }

    #[test]
    fn table_marks_lost_modes() {
        let b = run("baseline", Env::Native, &[("WT", "UC"), ("WP", "WC")]);
        let c = run("candidate", Env::Native, &[]);
        let t = table(Env::Native, &b, &c);
        let wt = t.lines().find(|l| l.contains("vma_set_page_prot  WT ")).unwrap();
        assert!(wt.starts_with('!') && wt.contains("LOST WT→UC"), "{t}");
        let wb = t.lines().find(|l| l.contains("vma_set_page_prot  WB ")).unwrap();
        assert!(wb.starts_with(' ') && !wb.contains("LOST"), "{t}");
        assert!(t.contains("WB WC UC- UC WB WP UC- WT"), "{t}");
    }
}
