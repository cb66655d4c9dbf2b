//! Folding and comparing run records: `merge` (one table of kernel ×
//! environment × path × variant, for `matrix` and `report merge`) and
//! `diff_runs` (what changed between two runs, for `report diff`). Below
//! the commands that print them.

use crate::model::rows::{Judgment, ModeResult, ProbePath};
use crate::model::Env;
use crate::record::{Record, ResultRecord, Verdict};
use std::path::{Path, PathBuf};

fn kernel_of(file: &Path, record: &Record) -> String {
    record
        .kernel
        .as_ref()
        .map(|k| k.source.clone())
        .unwrap_or_else(|| file.display().to_string())
}

/// The merged table: a row per kernel, environment and path; a column per
/// variant name; each cell "kept 6", "kept 3, 3 skip", "LOST WT→UC WP→WC"
/// or "skip".
pub fn merge(runs: &[(PathBuf, Record)]) -> String {
    let mut variants: Vec<&str> = Vec::new();
    for r in runs.iter().flat_map(|(_, record)| &record.results) {
        if !variants.contains(&r.variant.as_str()) {
            variants.push(&r.variant);
        }
    }
    let kernel_width = runs
        .iter()
        .map(|(f, r)| kernel_of(f, r).chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 60);
    let pw = ProbePath::WIDTH;
    let mut out = format!("{:<kernel_width$}  {:<6}  {:<pw$}", "kernel", "env", "path");
    for v in &variants {
        out += &format!("  {v:<24}");
    }
    out += "\n";
    let (mut untestable, mut failing) = (0, 0);
    for (file, record) in runs {
        let kernel = kernel_of(file, record);
        if record.results.is_empty() {
            untestable += 1;
            let why = record.message.lines().next().unwrap_or("no results");
            out += &format!(
                "{kernel:<kernel_width$}  untestable (exit {}): {why}\n",
                record.exit_code
            );
            continue;
        }
        failing += usize::from(record.verdict == Verdict::Fail);
        let mut rows: Vec<(Env, ProbePath)> = Vec::new();
        for r in &record.results {
            if !rows.contains(&(r.env, r.result.path)) {
                rows.push((r.env, r.result.path));
            }
        }
        for (env, path) in rows {
            out += &format!("{kernel:<kernel_width$}  {env:<6}  {path:<pw$}");
            for v in &variants {
                let cell: Vec<&ModeResult> =
                    record.rows(v, env).filter(|r| r.path == path).collect();
                out += &format!("  {:<24}", summarize(&cell));
            }
            out += "\n";
        }
    }
    out += &format!("{} runs: {} testable, {untestable} untestable, {failing} with a candidate that loses modes\n", runs.len(), runs.len() - untestable);
    out
}

fn summarize(results: &[&ModeResult]) -> String {
    if results.is_empty() {
        return "-".into();
    }
    if results.iter().all(|r| r.observed().is_none()) {
        return "skip".into();
    }
    let lost: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let after = r.after().filter(|_| r.lost())?;
            // `*`: lost to the known defect outside the masks under test.
            let known = if r.lost_in_scope() { "" } else { "*" };
            Some(format!("{}→{after}{known}", r.label()))
        })
        .collect();
    let count =
        |which: fn(&Judgment) -> bool| results.iter().filter(|r| which(&r.judgment())).count();
    let kept = count(|j| *j == Judgment::Kept);
    let mut extras = String::new();
    for (n, what) in [
        (count(|j| *j == Judgment::MovedSameType), "moved"),
        (count(|j| matches!(j, Judgment::LostEarlier(_))), "earlier"),
        (count(|j| *j == Judgment::Skipped), "skip"),
    ] {
        if n > 0 {
            extras += &format!(", {n} {what}");
        }
    }
    if lost.is_empty() {
        format!("kept {kept}{extras}")
    } else {
        format!("LOST {}{extras}", lost.join(" "))
    }
}

pub fn describe(record: &Record) -> String {
    let kernel = record.kernel.as_ref().map_or("?", |k| k.source.as_str());
    format!("{kernel}; verdict {}", record.verdict)
}

pub struct Changes {
    pub lines: Vec<String>,
    pub compared: usize,
    pub regressions: usize,
}

fn status(r: &ModeResult) -> String {
    match (r.observed(), r.judgment()) {
        (None, _) => "skipped".into(),
        (Some(observed), Judgment::Kept) => format!("kept {observed}"),
        (Some(observed), Judgment::Lost | Judgment::KnownDefect) => format!("LOST →{observed}"),
        (observed, judgment) => judgment.describe(observed),
    }
}

/// A row of a run: variant, environment, path and the row of the path.
type RunRow<'a> = (&'a str, Env, ProbePath, crate::model::rows::RowKey);

fn key(r: &ResultRecord) -> RunRow<'_> {
    (&r.variant, r.env, r.result.path, r.result.key())
}

fn label((variant, env, path, row): RunRow<'_>) -> String {
    format!("{variant} {env} {path} {row}")
}

pub fn diff_runs(old: &Record, new: &Record) -> Changes {
    let mut changes = Changes {
        lines: Vec::new(),
        compared: 0,
        regressions: 0,
    };
    for n in &new.results {
        let label = label(key(n));
        match old.results.iter().find(|o| key(o) == key(n)) {
            None => changes
                .lines
                .push(format!("  new   {label}: {}", status(&n.result))),
            Some(o) => {
                changes.compared += 1;
                let (was, is) = (status(&o.result), status(&n.result));
                if was != is {
                    let regression = o.result.kept() && n.result.lost();
                    changes.regressions += usize::from(regression);
                    let tag = if regression { "LOST " } else { "      " };
                    changes.lines.push(format!("{tag}{label}: {was} → {is}"));
                }
            }
        }
    }
    for o in &old.results {
        if !new.results.iter().any(|n| key(n) == key(o)) {
            let was = status(&o.result);
            changes
                .lines
                .push(format!("  gone  {}: was {was}", label(key(o))));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows::{CacheMode, Outcome, Pte};
    use crate::record::KernelRecord;

    fn run(results: &[(&str, &str, bool)]) -> Record {
        let results = results
            .iter()
            .map(|(path, mode, kept)| {
                let result = ModeResult {
                    path: path.parse().unwrap(),
                    requested: mode.parse().unwrap(),
                    entry: None,
                    outcome: Outcome::Measured {
                        observed: if *kept {
                            mode.parse().unwrap()
                        } else {
                            CacheMode::Uc
                        },
                        pte_before: Some(Pte(0)),
                        pte_after: Pte(0),
                        prot_requested: None,
                        entry_after: None,
                        known_defect: None,
                        lost_earlier_at: None,
                    },
                };
                ResultRecord::new("probe", Env::Native, result)
            })
            .collect();
        Record {
            verdict: Verdict::Pass,
            results,
            ..Record::default()
        }
    }

    fn kernel(source: &str) -> Option<KernelRecord> {
        Some(KernelRecord {
            source: source.into(),
            tree: String::new(),
            version: String::new(),
            git_rev: None,
        })
    }

    #[test]
    fn a_mode_kept_before_and_lost_now_is_a_regression() {
        let old = run(&[
            ("mprotect", "WT", true),
            ("mprotect", "WB", true),
            ("mmap_fault", "WT", false),
        ]);
        let new = run(&[
            ("mprotect", "WT", false),
            ("mprotect", "WB", true),
            ("mmap_fault", "WT", true),
            ("huge_pfn_fault", "WT", true),
        ]);
        let changes = diff_runs(&old, &new);
        assert_eq!(changes.regressions, 1);
        assert_eq!(changes.compared, 3);
        let has = |wanted: &dyn Fn(&str) -> bool| changes.lines.iter().any(|l| wanted(l));
        assert!(
            has(&|l| l.starts_with("LOST probe native mprotect WT: kept WT → LOST →UC")),
            "{:?}",
            changes.lines
        );
        assert!(
            has(&|l| l.contains("mmap_fault WT: LOST →UC → kept WT") && !l.starts_with("LOST")),
            "{:?}",
            changes.lines
        );
        assert!(
            has(&|l| l.contains("new   probe native huge_pfn_fault WT")),
            "{:?}",
            changes.lines
        );
        assert_eq!(diff_runs(&old, &old).lines.len(), 0);
    }

    #[test]
    fn merge_folds_runs_into_one_table_with_untestable_kernels() {
        let mut good = run(&[("mprotect", "WT", true), ("mprotect", "WB", true)]);
        good.kernel = kernel("linux-6.12");
        let mut bad = run(&[("mprotect", "WT", false), ("mprotect", "WB", true)]);
        bad.kernel = kernel("linux-6.3");
        let untestable = Record {
            verdict: Verdict::Error,
            exit_code: 9,
            message: "linux-source-6.1 is pinned to rustc 1.62.0\nmore".into(),
            kernel: kernel("linux-6.1"),
            ..Record::default()
        };
        let table = merge(&[
            ("a.json".into(), good),
            ("b.json".into(), bad),
            ("c.json".into(), untestable),
        ]);
        let line = |kernel: &str| {
            table
                .lines()
                .find(|l| l.starts_with(kernel))
                .unwrap_or("")
                .to_string()
        };
        assert!(line("linux-6.12").contains("kept 2"), "{table}");
        // A skipped row is counted as a skip, not as kept.
        let mut partly = run(&[("mprotect", "WT", true), ("mprotect", "WB", true)]);
        partly.results[1].result.outcome = Outcome::Skipped {
            reason: "not representable".into(),
        };
        let cells = merge(&[("p.json".into(), partly)]);
        assert!(cells.contains("kept 1, 1 skip"), "{cells}");
        assert!(line("linux-6.3").contains("LOST WT→UC"), "{table}");
        assert!(
            line("linux-6.1 ")
                .contains("untestable (exit 9): linux-source-6.1 is pinned to rustc 1.62.0"),
            "{table}"
        );
        assert!(
            table.contains("3 runs: 2 testable, 1 untestable"),
            "{table}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_record_is_a_setup_error() {
        let tmp = crate::support::cache::scratch("report-diff");
        let dir = tmp.path();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"verdict\": \"pass\"}").unwrap();
        let err = Record::read(&bad).unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            crate::support::failure::Kind::Setup.exit_code()
        );
        assert!(
            err.to_string().contains("not a patverify JSON record"),
            "{err}"
        );
    }
}
