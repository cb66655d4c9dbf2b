//! `cargo xtask report`: reading earlier runs' JSON records.
//! - `diff OLD.json NEW.json`: what changed (last week's tree and today's,
//!   two probes). A result is matched by variant, environment, path and
//!   mode; exit 1 when a mode the old run kept is lost in the new one.
//! - `merge A.json B.json …`: one table of kernel × environment × path ×
//!   variant (a matrix's jobs); a run that could not test its kernel shows
//!   as untestable with its reason.

use crate::flags::Report;
use crate::support::failure::{fail, Kind};
use anyhow::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

impl Report {
    pub fn run(self) -> Result<()> {
        match self {
            Report::Diff { old, new } => {
                let (old_json, new_json) = (load(&old)?, load(&new)?);
                let changes = diff_runs(&old_json, &new_json);
                println!("old  {} ({})", old.display(), describe(&old_json));
                println!("new  {} ({})", new.display(), describe(&new_json));
                for change in &changes.lines {
                    println!("{change}");
                }
                println!(
                    "{} results compared, {} changed, {} newly lost",
                    changes.compared,
                    changes.lines.len(),
                    changes.regressions
                );
                if changes.regressions > 0 {
                    return Err(fail(
                        Kind::CandidateLost,
                        format!(
                            "{} mode(s) kept in {} are lost in {}",
                            changes.regressions,
                            old.display(),
                            new.display()
                        ),
                    ));
                }
                Ok(())
            }
            Report::Merge { files } => {
                let runs = files
                    .iter()
                    .map(|f| load_any(f).map(|j| (f.clone(), j)))
                    .collect::<Result<Vec<_>>>()?;
                print!("{}", merge(&runs));
                Ok(())
            }
        }
    }
}

/// A record that may hold no results (a run that failed before booting).
fn load_any(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(Kind::Setup, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        fail(
            Kind::Setup,
            format!("{} is not a patverify JSON record: {e}", path.display()),
        )
    })
}

/// The merged table: a row per kernel, environment and path; a column per
/// variant name; each cell "kept 6", "LOST WT→UC WP→WC" or "skip".
pub fn merge(runs: &[(PathBuf, Value)]) -> String {
    let mut variants: Vec<String> = Vec::new();
    for (_, json) in runs {
        for r in json["results"].as_array().into_iter().flatten() {
            let name = r["variant"].as_str().unwrap_or("?").to_string();
            if !variants.contains(&name) {
                variants.push(name);
            }
        }
    }
    let kernel_of = |file: &Path, json: &Value| {
        json["kernel"]["source"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| file.display().to_string())
    };
    let kernel_width = runs
        .iter()
        .map(|(f, j)| kernel_of(f, j).chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 60);
    let mut out = format!("{:<kernel_width$}  {:<6}  {:<27}", "kernel", "env", "path");
    for v in &variants {
        out += &format!("  {v:<24}");
    }
    out += "\n";
    let (mut untestable, mut failing) = (0, 0);
    for (file, json) in runs {
        let kernel = kernel_of(file, json);
        let results: Vec<&Value> = json["results"].as_array().into_iter().flatten().collect();
        if results.is_empty() {
            untestable += 1;
            let why = json["message"]
                .as_str()
                .unwrap_or("no results")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            out += &format!(
                "{kernel:<kernel_width$}  untestable (exit {}): {why}\n",
                json["exit_code"]
            );
            continue;
        }
        failing += usize::from(json["verdict"] == "fail");
        let mut rows: Vec<(String, String)> = Vec::new();
        for r in &results {
            let row = (
                r["env"].as_str().unwrap_or("?").to_string(),
                r["path"].as_str().unwrap_or("?").to_string(),
            );
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
        for (env, path) in rows {
            out += &format!("{kernel:<kernel_width$}  {env:<6}  {path:<27}");
            for v in &variants {
                let cell: Vec<&&Value> = results
                    .iter()
                    .filter(|r| {
                        r["variant"] == v.as_str()
                            && r["env"] == env.as_str()
                            && r["path"] == path.as_str()
                    })
                    .collect();
                out += &format!("  {:<24}", summarize(&cell));
            }
            out += "\n";
        }
    }
    out += &format!("{} runs: {} testable, {untestable} untestable, {failing} with a candidate that loses modes\n", runs.len(), runs.len() - untestable);
    out
}

fn summarize(results: &[&&Value]) -> String {
    if results.is_empty() {
        return "-".into();
    }
    if results.iter().all(|r| r["skipped"].is_string()) {
        return "skip".into();
    }
    let lost: Vec<String> = results
        .iter()
        .filter(|r| r["kept"] != true && r["skipped"].is_null())
        .map(|r| {
            format!(
                "{}→{}",
                r["requested"].as_str().unwrap_or("?"),
                r["observed"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if lost.is_empty() {
        format!("kept {}", results.len())
    } else {
        format!("LOST {}", lost.join(" "))
    }
}

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(Kind::Setup, format!("cannot read {}: {e}", path.display())))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        fail(
            Kind::Setup,
            format!("{} is not a patverify JSON record: {e}", path.display()),
        )
    })?;
    if !json["results"].is_array() {
        return Err(fail(
            Kind::Setup,
            format!("{} has no results (not written by --json?)", path.display()),
        ));
    }
    Ok(json)
}

fn describe(json: &Value) -> String {
    let kernel = json["kernel"]["source"].as_str().unwrap_or("?");
    format!(
        "{kernel}; verdict {}",
        json["verdict"].as_str().unwrap_or("?")
    )
}

pub struct Changes {
    pub lines: Vec<String>,
    pub compared: usize,
    pub regressions: usize,
}

fn status(r: &Value) -> String {
    if r["skipped"].is_string() {
        "skipped".into()
    } else if r["kept"] == true {
        format!("kept {}", r["observed"].as_str().unwrap_or("?"))
    } else {
        format!("LOST →{}", r["observed"].as_str().unwrap_or("?"))
    }
}

pub fn diff_runs(old: &Value, new: &Value) -> Changes {
    let key = |r: &Value| {
        ["variant", "env", "path", "requested"].map(|k| r[k].as_str().unwrap_or("").to_string())
    };
    let results = |j: &Value| j["results"].as_array().cloned().unwrap_or_default();
    let (old_results, new_results) = (results(old), results(new));
    let mut changes = Changes {
        lines: Vec::new(),
        compared: 0,
        regressions: 0,
    };
    for n in &new_results {
        let k = key(n);
        let label = format!("{} {} {} {}", k[0], k[1], k[2], k[3]);
        match old_results.iter().find(|o| key(o) == k) {
            None => changes
                .lines
                .push(format!("  new   {label}: {}", status(n))),
            Some(o) => {
                changes.compared += 1;
                let (was, is) = (status(o), status(n));
                if was != is {
                    let regression =
                        o["kept"] == true && n["kept"] != true && n["skipped"].is_null();
                    changes.regressions += usize::from(regression);
                    let tag = if regression { "LOST " } else { "      " };
                    changes.lines.push(format!("{tag}{label}: {was} → {is}"));
                }
            }
        }
    }
    for o in &old_results {
        if !new_results.iter().any(|n| key(n) == key(o)) {
            let k = key(o);
            changes.lines.push(format!(
                "  gone  {} {} {} {}: was {}",
                k[0],
                k[1],
                k[2],
                k[3],
                status(o)
            ));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(results: &[(&str, &str, bool)]) -> Value {
        let results: Vec<Value> = results
            .iter()
            .map(|(path, mode, kept)| json!({"variant": "probe", "env": "native", "path": path, "requested": mode, "observed": if *kept { *mode } else { "UC" }, "kept": kept}))
            .collect();
        json!({"verdict": "pass", "results": results})
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
            ("pmd_modify_ioremap_encoding", "WT", true),
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
            has(&|l| l.contains("new   probe native pmd_modify_ioremap_encoding WT")),
            "{:?}",
            changes.lines
        );
        assert_eq!(diff_runs(&old, &old).lines.len(), 0);
    }

    #[test]
    fn merge_folds_runs_into_one_table_with_untestable_kernels() {
        let mut good = run(&[("mprotect", "WT", true), ("mprotect", "WB", true)]);
        good["kernel"] = json!({"source": "linux-6.12"});
        let mut bad = run(&[("mprotect", "WT", false), ("mprotect", "WB", true)]);
        bad["kernel"] = json!({"source": "linux-6.3"});
        let untestable = json!({"verdict": "error", "exit_code": 9, "message": "linux-source-6.1 is pinned to rustc 1.62.0\nmore", "kernel": {"source": "linux-6.1"}, "results": []});
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
        let dir = crate::support::cache::scratch("report-diff");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"verdict\": \"pass\"}").unwrap();
        let err = load(&bad).unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            Kind::Setup.exit_code()
        );
        assert!(err.to_string().contains("has no results"), "{err}");
    }
}
