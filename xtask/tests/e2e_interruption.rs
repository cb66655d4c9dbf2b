//! End-to-end: SIGTERM during a kernel build and during a boot: nothing is left
//! running and nothing half-made is taken for finished. Each interruption
//! happens once; each check is its own test on what it left.

mod common;

use anyhow::Result;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a SIGTERM to the harness left.
struct Interrupted {
    /// What it interrupted was running when the signal came.
    was_running: bool,
    code: Option<i32>,
    /// A process of what it interrupted was still there afterwards.
    left_running: bool,
    /// What to show when a check fails.
    detail: String,
}

/// SIGTERM while `make` builds the candidate: what it left, and the build
/// directory (None when the build never started).
struct InterruptedBuild {
    run: Interrupted,
    build_dir: Option<PathBuf>,
}

fn interrupted_build() -> &'static InterruptedBuild {
    static RAN: OnceLock<InterruptedBuild> = OnceLock::new();
    RAN.get_or_init(|| interrupt_a_build().expect("the interrupted build"))
}

fn interrupted_boot() -> &'static Interrupted {
    static RAN: OnceLock<Interrupted> = OnceLock::new();
    RAN.get_or_init(|| interrupt_a_boot().expect("the interrupted boot"))
}

/// Starts the harness with `args` and its output in `log`.
fn start_harness(args: &[String], log: &Path) -> Result<duct::Handle> {
    let mut full = strings(&["--cache-dir", &cache_root().display().to_string()]);
    full.extend(args.iter().cloned());
    Ok(duct::cmd(exe(), &full)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_path(log)
        .unchecked()
        .start()?)
}

/// Waits until `ready` (at most `limit`), then lets it run for `grace`.
fn wait_for(ready: impl Fn() -> bool, limit: Duration, grace: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(grace);
    ready()
}

/// SIGTERM to the harness; its exit code once it has gone.
fn terminate(handle: duct::Handle) -> Result<Option<i32>> {
    for pid in handle.pids() {
        // SAFETY: sends a signal to a child we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let code = handle.wait()?.status.code();
    std::thread::sleep(Duration::from_millis(1000));
    Ok(code)
}

/// A candidate with a comment in a header every file includes: a long build.
fn long_build_patch(out: &Path) -> Result<PathBuf> {
    let fixture = Fixture::new("interruption");
    let tree = source_tree(&fixture.record)?;
    let file = "include/linux/types.h";
    let original = std::fs::read_to_string(tree.join(file))?;
    let marked = format!("{original}/* patverify: interrupted build */\n");
    let patch = out.join("long-build.patch");
    std::fs::write(&patch, unified_diff(file, &original, &marked, out)?)?;
    Ok(patch)
}

fn interrupt_a_build() -> Result<InterruptedBuild> {
    println!("==> e2e failure case: SIGTERM during a kernel build");
    let out = scenario_dir("interruption-build")?;
    let patch = long_build_patch(&out)?;
    let log = out.join("sigterm-build.log");
    let args = strings(&["--verbose", "verify", "--env", "native", "--patch"]);
    let out_dir = out.join("sigterm-build").display().to_string();
    let args = [
        args,
        strings(&[&patch.display().to_string(), "--out", &out_dir]),
    ]
    .concat();
    let handle = start_harness(&args, &log)?;
    // The candidate's make line names its build directory.
    let build_dir = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let dir = text
            .lines()
            .filter(|l| l.contains("make -C") && l.contains("bzImage"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("O=")))
            .map(PathBuf::from);
        dir.filter(|_| text.contains("[build candidate]"))
    };
    let compiling = || build_dir().is_some_and(|d| process_mentioning(&d.display().to_string()));
    // Let the compilers get going.
    let was_running = wait_for(compiling, Duration::from_secs(300), Duration::from_secs(10));
    let code = terminate(handle)?;
    let build_dir = build_dir();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let run = Interrupted {
        was_running,
        code,
        left_running: build_dir
            .as_ref()
            .is_some_and(|d| process_mentioning(&d.display().to_string())),
        detail: format!(
            "build dir {build_dir:?}; {}",
            xtask::support::proc::tail_lines(&text, 3)
        ),
    };
    Ok(InterruptedBuild { run, build_dir })
}

fn interrupt_a_boot() -> Result<Interrupted> {
    println!("==> e2e failure case: SIGTERM during a boot");
    let out = scenario_dir("interruption-boot")?;
    let initramfs = out.join("sigterm/initramfs.cpio");
    let out_dir = out.join("sigterm").display().to_string();
    let args = strings(&["verify", "--env", "native", "--out", &out_dir]);
    let hang = strings(&["--extra-cmdline", "patverify_fault=hang"]);
    let log = out.join("sigterm-boot.log");
    let handle = start_harness(&[args, hang].concat(), &log)?;
    let qemu_running = || process_mentioning(&initramfs.display().to_string());
    let was_running = wait_for(qemu_running, Duration::from_secs(120), Duration::ZERO);
    let code = terminate(handle)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Ok(Interrupted {
        was_running,
        code,
        left_running: qemu_running(),
        detail: xtask::support::proc::tail_lines(&text, 3),
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn sigterm_came_while_make_was_compiling() {
    let build = &interrupted_build().run;
    assert!(build.was_running, "{}", build.detail);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn sigterm_during_make_exits_143_and_leaves_no_make_or_compiler() {
    let build = &interrupted_build().run;
    assert_eq!(build.code, Some(143), "{}", build.detail);
    assert!(!build.left_running, "{}", build.detail);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn sigterm_during_make_leaves_the_half_built_kernel_unmarked() {
    let build = interrupted_build();
    let dir = build
        .build_dir
        .as_ref()
        .expect("the candidate's build started");
    let stamp = dir.join("patverify-build-key");
    let marked = stamp.exists();
    // The next run would resume this build; start the next test run afresh.
    let _ = std::fs::remove_dir_all(dir);
    assert!(!marked, "{} exists", stamp.display());
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn sigterm_came_while_qemu_was_booting() {
    let boot = interrupted_boot();
    assert!(boot.was_running, "QEMU never started: {}", boot.detail);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn sigterm_during_a_boot_exits_143_and_leaves_no_qemu() {
    let boot = interrupted_boot();
    assert_eq!(boot.code, Some(143), "{}", boot.detail);
    assert!(!boot.left_running, "QEMU still running: {}", boot.detail);
}
