//! End-to-end: one verify per kernel source, merged into one table. Two
//! kernels, run here and merged, both environments: Debian's 6.12
//! (rustc-web) and its linux-source-6.1 (Debian's rustc 1.63, unpacked into
//! the cache; the fix is contained there, so the baseline has it reversed).
//! The matrix runs once; each check is its own test on what it wrote.

mod common;

use anyhow::Result;
use common::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use xtask::record::Record;
use xtask::stages::qemu::Env;

struct Matrix {
    code: Option<i32>,
    text: String,
    /// The merged table (`merged.txt`).
    merged: String,
    /// Each job's record: 6.12, then 6.1.
    jobs: Vec<Record>,
    kcidb: PathBuf,
}

fn matrix() -> &'static Matrix {
    static RAN: OnceLock<Matrix> = OnceLock::new();
    RAN.get_or_init(|| run().expect("the matrix run"))
}

fn run() -> Result<Matrix> {
    println!("==> e2e: matrix of two kernels (6.12 and 6.1), both environments, merged");
    let dir = scenario_dir("matrix")?.join("matrix");
    let kcidb = dir.join("matrix.kcidb.json");
    let args = strings(&[
        "matrix",
        "--source",
        "default",
        "--source",
        "/usr/src/linux-source-6.1.tar.xz",
        "--out",
        &dir.display().to_string(),
        "--kcidb",
        &kcidb.display().to_string(),
    ]);
    let (code, text) = harness(&cache_root(), &args)?;
    println!("{}", xtask::support::proc::tail_lines(&text, 12));
    // Each job's record is NN-NAME.json, in the order of the sources.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_encoded_bytes()[0].is_ascii_digit())
        })
        .collect();
    files.sort();
    Ok(Matrix {
        code,
        merged: std::fs::read_to_string(dir.join("merged.txt")).unwrap_or_default(),
        jobs: files
            .iter()
            .map(|f| Record::read(f).unwrap_or_default())
            .collect(),
        text,
        kcidb,
    })
}

impl Matrix {
    fn tail(&self) -> String {
        let tail = xtask::support::proc::tail_lines(&self.text, 4);
        format!("exit {:?}: {tail}\n{}", self.code, self.merged)
    }
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn both_kernels_are_testable_and_the_matrix_exits_0() {
    let m = matrix();
    assert_eq!(m.code, Some(0), "{}", m.tail());
    assert!(
        m.merged.contains("2 runs: 2 testable, 0 untestable"),
        "{}",
        m.tail()
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn each_job_baseline_loses_where_its_candidate_keeps() {
    let m = matrix();
    assert_eq!(m.jobs.len(), 2);
    for job in &m.jobs {
        for env in [env("native"), env("xen")] {
            for path in ["mmap_fault", "devmem_mprotect"] {
                let on = |variant| {
                    job.rows(variant, env)
                        .filter(move |r| r.path.name() == path)
                };
                let version = job.kernel.as_ref().map(|k| k.version.clone());
                assert!(on("baseline").any(|r| r.lost()), "{version:?} {env} {path}");
                assert!(
                    on("candidate").all(|r| !r.lost()),
                    "{version:?} {env} {path}"
                );
                assert!(
                    on("candidate").any(|r| r.kept()),
                    "{version:?} {env} {path}"
                );
            }
        }
    }
}

/// Every row of the RAM paths (a page with the memtype TTM gives it,
/// mapped as TTM maps it) that was not kept, as "VERSION ENV VARIANT
/// PATH.MODE JUDGMENT", on both kernels: what `rows` yields for each.
fn ram_rows_not_kept(rows: impl Fn(&Record, &str, Env) -> Vec<(String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    for job in &matrix().jobs {
        let version = job
            .kernel
            .as_ref()
            .map_or("?".into(), |k| k.version.clone());
        for env in [env("native"), env("xen")] {
            for variant in ["baseline", "candidate"] {
                for (row, judgment) in rows(job, variant, env) {
                    out.push(format!("{version} {env} {variant} {row} {judgment}"));
                }
            }
        }
    }
    out
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_ram_rows_are_measured_on_both_kernels_in_both_environments() {
    use xtask::model::rows::CacheMode;
    let measured = ram_rows_not_kept(|job, variant, env| {
        let ram = job
            .rows(variant, env)
            .filter(|r| r.path.name().starts_with("ram_"));
        ram.filter(|r| !r.kept())
            .map(|r| {
                (
                    format!("{}.{}", r.path, r.label()),
                    r.judgment().name().to_string(),
                )
            })
            .collect()
    });
    // No set_pages_array_*() gives RAM UC, WT or WP; under Xen PV WC needs
    // the PAT bit, which the baseline's mprotect() drops.
    let expected = ram_rows_not_kept(|_, variant, env| {
        let mut rows = Vec::new();
        for path in ["ram_fault", "ram_mprotect"] {
            for mode in CacheMode::ALL {
                let lost = (path, *mode, variant) == ("ram_mprotect", CacheMode::Wc, "baseline")
                    && env == Env::Xen;
                let skipped = matches!(mode, CacheMode::Uc | CacheMode::Wt | CacheMode::Wp);
                match (lost, skipped) {
                    (true, _) => rows.push((format!("{path}.{mode}"), "lost".into())),
                    (_, true) => rows.push((format!("{path}.{mode}"), "skipped".into())),
                    _ => {}
                }
            }
        }
        rows
    });
    assert_eq!(measured, expected);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_merged_table_has_a_row_per_kernel_environment_and_path() {
    let m = matrix();
    // A row per kernel, environment and path: the baseline loses, the
    // candidate keeps every mode it measured.
    let row = |kernel: &str, env: &str, path: &str| {
        m.merged.lines().any(|l| {
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
            for path in ["mmap_fault", "devmem_mprotect"] {
                assert!(
                    row(kernel, env, path),
                    "{kernel} {env} {path}: {}",
                    m.merged
                );
            }
        }
    }
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn six_one_declares_its_2mib_pfn_rows_skipped() {
    // 6.1's fault path never calls .huge_fault for a PFN map: every native
    // 2 MiB row (2 variants × 2 paths × 6 modes) is a declared skip there
    // (6.12 measures them; under Xen neither has 2 MiB pages).
    let job = &matrix().jobs[1];
    let huge_skips = job
        .results
        .iter()
        .filter(|row| row.result.path.name().starts_with("huge_pfn"))
        .filter(|row| row.result.skip_reason().is_some_and(|s| s.contains("6.12")))
        .count();
    assert_eq!(huge_skips, 2 * 2 * 6);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn six_one_was_built_with_debians_rustc_1_63() {
    let toolchain = matrix().jobs[1].toolchain.clone().unwrap_or_default();
    assert_eq!(toolchain.name, "debian-rustc-1.63", "{toolchain:?}");
    assert!(toolchain.rustc.contains("1.63"), "{toolchain:?}");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_matrix_kcidb_is_one_valid_document_of_both_jobs() {
    let (valid, said) = kcidb_validate(&matrix().kcidb).expect("kcidb-io ran");
    assert!(valid, "{said}");
}
