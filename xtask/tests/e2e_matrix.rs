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

/// Two kernels, run here and merged, both environments: Debian's 6.12
/// (rustc-web) and its linux-source-6.1 (Debian's rustc 1.63, unpacked into
/// the cache; the fix is contained there, so the baseline has it reversed).
fn matrix_of_two_kernels(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: matrix of two kernels (6.12 and 6.1), both environments, merged");
    let dir = out.join("matrix");
    let args: Vec<String> = strings(&[
        "matrix",
        "--source",
        "default",
        "--source",
        "/usr/src/linux-source-6.1.tar.xz",
        "--out",
        &dir.display().to_string(),
        "--kcidb",
        &dir.join("matrix.kcidb.json").display().to_string(),
    ]);
    let (code, text) = harness(cache_root, &args)?;
    println!("{}", xtask::support::proc::tail_lines(&text, 12));
    let merged = std::fs::read_to_string(dir.join("merged.txt")).unwrap_or_default();
    checks.check(
        "matrix: exit 0, both kernels testable",
        code == Some(0) && merged.contains("2 runs: 2 testable, 0 untestable"),
        || {
            format!(
                "exit {code:?}: {}\n{merged}",
                xtask::support::proc::tail_lines(&text, 4)
            )
        },
    );
    // A row per kernel, environment and path: the baseline loses, the
    // candidate keeps every mode it measured.
    let row = |kernel: &str, env: &str, path: &str| {
        merged.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            l.contains(kernel)
                && cells.contains(&env)
                && cells.contains(&path)
                && l.contains("LOST")
                && l.contains("kept")
        })
    };
    for kernel in ["Linux 6.12.", "Linux 6.1.192"] {
        for env in ["native", "xen"] {
            checks.check(
                &format!("matrix: {kernel} {env}: the baseline loses modes on mmap_fault and devmem_mprotect, the candidate keeps them"),
                row(kernel, env, "mmap_fault") && row(kernel, env, "devmem_mprotect"),
                || merged.clone(),
            );
        }
    }
    let job = xtask::record::Record::parse(
        &std::fs::read_to_string(dir.join("02-linux-source-6.1.json")).unwrap_or_default(),
    );
    // 6.1's fault path never calls .huge_fault for a PFN map: every native
    // 2 MiB row (2 variants × 2 paths × 6 modes) is a declared skip there
    // (6.12 measures them; under Xen neither has 2 MiB pages).
    let huge_skips = job.as_ref().map_or(0, |r| {
        r.results
            .iter()
            .filter(|row| row.result.path.name().starts_with("huge_pfn"))
            .filter(|row| row.result.skip_reason().is_some_and(|s| s.contains("6.12")))
            .count()
    });
    checks.check(
        "matrix: 6.1's 2 MiB PFN rows are declared skips (no .huge_fault for PFN maps before 6.12)",
        huge_skips == 2 * 2 * 6,
        || format!("{huge_skips} skipped for the version"),
    );
    let toolchain = job
        .ok()
        .and_then(|r| r.toolchain)
        .map(|t| (t.name, t.rustc))
        .unwrap_or_default();
    checks.check(
        "matrix: the 6.1 job was built with Debian's rustc 1.63 (recorded)",
        toolchain.0 == "debian-rustc-1.63" && toolchain.1.contains("1.63"),
        || format!("{toolchain:?}"),
    );
    let (valid, said) = kcidb_validate(&dir.join("matrix.kcidb.json"))?;
    checks.check(
        "matrix --kcidb: one valid KCIDB document of both jobs",
        valid,
        || said.clone(),
    );
    Ok(())
}
