//! `cargo xtask test`: the unit tests (seconds), then the end-to-end test,
//! which runs the real `verify` (builds, boots) and checks what the booted
//! kernels reported against what is known about the bug.

use crate::failure::{fail, Kind};
use crate::proc::Command;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct Test {
    /// Only the unit tests.
    #[arg(long)]
    pub unit: bool,
}

impl Test {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let repo = crate::variant::repo_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let unit = Command::new(cargo).args(["test", "--workspace", "--quiet"]).dir(&repo);
        crate::proc::echo(&unit);
        let status = duct::cmd(&unit.program, &unit.args).dir(&repo).stdin_null().unchecked().run()?.status;
        if !status.success() {
            return Err(fail(Kind::Build, "unit tests failed"));
        }
        if self.unit {
            return Ok(());
        }
        end_to_end(cache_root)
    }
}

struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
            println!("e2e ok     {name}");
        } else {
            let d = detail();
            println!("e2e FAILED {name}: {d}");
            self.failed.push(format!("{name}: {d}"));
        }
    }
}

/// The observed mode for (variant, env, path, requested) in verify's JSON.
fn observed<'a>(json: &'a Value, variant: &str, env: &str, path: &str, requested: &str) -> Option<&'a str> {
    json["results"].as_array()?.iter().find_map(|r| {
        (r["variant"] == variant && r["env"] == env && r["path"] == path && r["requested"] == requested)
            .then(|| r["observed"].as_str())
            .flatten()
    })
}

fn end_to_end(cache_root: &Path) -> Result<()> {
    let out = std::env::temp_dir().join(format!("patverify-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let json_path = out.join("verify.json");
    let me = std::env::current_exe()?;
    println!("\n==> end-to-end: cargo xtask verify (real kernel builds and boots; results in {})", out.display());
    let status = duct::cmd(
        &me,
        ["--cache-dir".as_ref(), cache_root.as_os_str(), "verify".as_ref(), "--json".as_ref(), json_path.as_os_str(), "--out".as_ref(), out.as_os_str()],
    )
    .stdin_null()
    .unchecked()
    .run()?
    .status;
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(&json_path).with_context(|| format!("verify wrote no {}", json_path.display()))?,
    )?;
    let mut checks = Checks { passed: 0, failed: Vec::new() };
    checks.check("verify exits 0 with verdict pass", status.code() == Some(0) && json["verdict"] == "pass", || {
        format!("exit {:?}, verdict {}, {}", status.code(), json["verdict"], json["message"])
    });
    // What is known about the bug on bare metal (DESIGN.md, upstream commit
    // 548cb932051f): without the fix, the PAT-bit modes fall back to the entry
    // of the same index without it.
    let path = "vma_set_page_prot";
    let native_baseline = [("WB", "WB"), ("WC", "WC"), ("UC-", "UC-"), ("UC", "UC"), ("WT", "UC"), ("WP", "WC")];
    for (requested, want) in native_baseline {
        let got = observed(&json, "baseline", "native", path, requested);
        checks.check(&format!("native baseline {requested} → {want}"), got == Some(want), || format!("observed {got:?}"));
        let got = observed(&json, "candidate", "native", path, requested);
        checks.check(&format!("native candidate keeps {requested}"), got == Some(requested), || format!("observed {got:?}"));
    }
    let native_layout = json["environments"].as_array().and_then(|e| e.iter().find(|e| e["env"] == "native")).map(|e| e["pat_layout"].clone());
    checks.check("native PAT layout is Linux's own", native_layout == Some(serde_json::json!(["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"])), || format!("{native_layout:?}"));
    for ktap in ["baseline-native.ktap", "candidate-native.ktap", "baseline-native.console.log"] {
        checks.check(&format!("kept {ktap}"), out.join(ktap).exists(), || "missing".into());
    }
    println!("e2e: {} passed, {} failed", checks.passed, checks.failed.len());
    if checks.failed.is_empty() {
        Ok(())
    } else {
        Err(fail(Kind::CandidateLost, format!("end-to-end checks failed: {}", checks.failed.join("; "))))
    }
}
