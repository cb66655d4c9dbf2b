//! End-to-end: one verify per kernel source, merged into one table.

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn matrix_merges_two_kernels() -> Result<()> {
    let (out, mut checks, _) = start("matrix", false)?;
    matrix_of_two_kernels(&cache_root(), &out, &mut checks)?;
    checks.finish()
}

/// Two kernels, run here and merged: Debian's 6.12 (testable) and the
/// linux-source-6.1 package, which today's rustc cannot build (untestable).
fn matrix_of_two_kernels(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: matrix of two kernels, merged");
    let dir = out.join("matrix");
    let args: Vec<String> = strings(&[
        "matrix",
        "--source",
        "default",
        "--source",
        "/usr/src/linux-source-6.1.tar.xz",
        "--env",
        "native",
        "--out",
        &dir.display().to_string(),
        "--kcidb",
        &dir.join("matrix.kcidb.json").display().to_string(),
    ]);
    let (code, text) = harness(cache_root, &args)?;
    println!("{}", xtask::support::proc::tail_lines(&text, 12));
    let merged = std::fs::read_to_string(dir.join("merged.txt")).unwrap_or_default();
    checks.check(
        "matrix: exit 0, one job passes, the other is untestable",
        code == Some(0) && text.contains("[1/2]") && text.contains("exit 9"),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    let row = |kernel: &str, path: &str| {
        merged.lines().any(|l| {
            l.contains(kernel) && l.contains(path) && l.contains("kept 6") && l.contains("LOST")
        })
    };
    checks.check(
        "matrix: the merged table has the 6.12 rows (baseline loses, candidate keeps)",
        row("linux-source-6.12", "mprotect"),
        || merged.clone(),
    );
    checks.check(
        "matrix: linux-source-6.1 shows as untestable, naming the rustc it wants",
        merged.lines().any(|l| {
            l.contains("linux-source-6.1")
                && l.contains("untestable (exit 9)")
                && l.contains("1.62")
        }),
        || merged.clone(),
    );
    let (valid, said) = kcidb_validate(&dir.join("matrix.kcidb.json"))?;
    checks.check(
        "matrix --kcidb: one valid KCIDB document of both jobs",
        valid,
        || said.clone(),
    );
    Ok(())
}
