//! End-to-end: SIGTERM during a kernel build and during a boot: nothing is left
//! running and nothing half-made is taken for finished.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::Path;
use xtask::record::Record;

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn an_interrupted_run_leaves_nothing_behind() -> Result<()> {
    let (out, mut checks, json) = start("interruption", true)?;
    let json = json.context("the scenario's verify")?;
    let cache_root = cache_root();
    interrupted_build_leaves_nothing(&cache_root, &json, &out, &mut checks)?;
    interrupted_run_leaves_no_qemu(&cache_root, &out, &mut checks)?;
    checks.finish()
}

/// SIGTERM while `make` runs: no make or compiler left behind, and the
/// half-built kernel is not marked as built (a later run finishes it).
fn interrupted_build_leaves_nothing(
    cache_root: &Path,
    json: &Record,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e failure case: SIGTERM during a kernel build");
    let tree = source_tree(json)?;
    // A comment in a header every file includes: a long build.
    let file = "include/linux/types.h";
    let original = std::fs::read_to_string(tree.join(file))?;
    let diff = unified_diff(
        file,
        &original,
        &format!("{original}/* patverify: interrupted build */\n"),
        out,
    )?;
    let patch = out.join("long-build.patch");
    std::fs::write(&patch, diff)?;
    let log = out.join("sigterm-build.log");
    let args: Vec<String> = vec![
        "--cache-dir".into(),
        cache_root.display().to_string(),
        "--verbose".into(),
        "verify".into(),
        "--env".into(),
        "native".into(),
        "--patch".into(),
        patch.display().to_string(),
        "--out".into(),
        out.join("sigterm-build").display().to_string(),
    ];
    let handle = duct::cmd(exe(), &args)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_path(&log)
        .unchecked()
        .start()?;
    // The candidate's make line names its build directory.
    let build_dir = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("make -C") && l.contains("bzImage"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("O="))
                    .map(str::to_string)
            })
            .filter(|_| text.contains("[build candidate]"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while build_dir().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Let the compilers get going.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let dir = build_dir();
    let compiling = dir.as_deref().is_some_and(process_mentioning);
    for pid in handle.pids() {
        // SAFETY: sends a signal to a child we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = handle.wait()?.status;
    std::thread::sleep(std::time::Duration::from_millis(1000));
    checks.check(
        "SIGTERM during make: the build was running",
        compiling,
        || {
            format!(
                "build dir {dir:?}; {}",
                xtask::support::proc::tail_lines(
                    &std::fs::read_to_string(&log).unwrap_or_default(),
                    3
                )
            )
        },
    );
    let Some(dir) = dir else { return Ok(()) };
    let left = process_mentioning(&dir);
    checks.check(
        "SIGTERM during make: exit 143, no make or compiler left",
        status.code() == Some(143) && !left,
        || format!("exit {:?}, processes left: {left}", status.code()),
    );
    let stamp = Path::new(&dir).join("patverify-build-key");
    checks.check(
        "SIGTERM during make: the half-built kernel is not marked built",
        !stamp.exists(),
        || format!("{} exists", stamp.display()),
    );
    // The next run would resume this build; start the next test run afresh.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// SIGTERM during a boot: the harness exits 143 and takes QEMU with it.
fn interrupted_run_leaves_no_qemu(
    cache_root: &Path,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e failure case: SIGTERM during a boot");
    let case_out = out.join("sigterm");
    let initramfs = case_out.join("initramfs.cpio");
    let args: Vec<String> = vec![
        "--cache-dir".into(),
        cache_root.display().to_string(),
        "verify".into(),
        "--env".into(),
        "native".into(),
        "--out".into(),
        case_out.display().to_string(),
        "--extra-cmdline".into(),
        "patverify_fault=hang".into(),
    ];
    let handle = duct::cmd(exe(), &args)
        .stdin_null()
        .stdout_null()
        .stderr_null()
        .unchecked()
        .start()?;
    let qemu_running = || process_mentioning(&initramfs.display().to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !qemu_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let started = qemu_running();
    for pid in handle.pids() {
        // SAFETY: sends a signal to a child we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = handle.wait()?.status;
    std::thread::sleep(std::time::Duration::from_millis(500));
    checks.check("SIGTERM: QEMU had started", started, || {
        "QEMU never started".into()
    });
    checks.check(
        "SIGTERM: exit 143, no QEMU left",
        status.code() == Some(143) && !qemu_running(),
        || {
            format!(
                "exit {:?}, QEMU still running: {}",
                status.code(),
                qemu_running()
            )
        },
    );
    Ok(())
}
