//! End-to-end: failures provoked on purpose — bad input, a broken build, boots that
//! hang, panic, oops or garble their report, QEMU or Xen failing, a full disk, a
//! tree the toolchain cannot build — each with its exit code and its evidence.
//! One verify builds the kernels every case reuses; each case is its own test.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xtask::support::failure::Kind;

/// The kernels every case reuses (one verify) and the scenario's directory.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::new("failures"))
}

/// A file of the scenario's, written with `text`.
fn input(name: &str, text: &str) -> String {
    let path = fixture().out.join(name);
    std::fs::write(&path, text).expect("an input file");
    path.display().to_string()
}

/// How a run ended.
struct Ended {
    code: Option<i32>,
    text: String,
    /// The run's --out directory (for the full cache, its cache).
    out: PathBuf,
}

/// `verify ARGS` with its outputs in a directory of its own.
fn verify(name: &str, args: &[&str]) -> Ended {
    let out = fixture().out.join(name);
    let mut argv = strings(&["verify", "--out", &out.display().to_string()]);
    argv.extend(strings(args));
    println!("==> e2e failure case: {name}");
    let (code, text) = harness(&cache_root(), &argv).expect("the harness runs");
    Ended { code, text, out }
}

/// The run exited with `kind`'s code and said `says`.
fn ends(ended: &Ended, kind: Kind, says: &str) {
    let last = ended.text.lines().rfind(|l| l.starts_with("error:"));
    assert!(
        ended.code == Some(kind.exit_code()) && ended.text.contains(says),
        "wanted exit {} saying {says:?}; got exit {:?}, {last:?}",
        kind.exit_code(),
        ended.code
    );
}

/// A boot failure in `env`: its exit code, message and kept console log.
fn boot_fails(name: &str, env: &str, args: &[&str], says: &str) {
    let ended = verify(name, &[&["--env", env], args].concat());
    ends(&ended, Kind::Boot, says);
    let log = ended.out.join(format!("baseline-{env}.console.log"));
    assert!(log.exists(), "console log not kept: no {}", log.display());
}

/// A boot of the baseline natively with `fault` injected by the module.
fn fault(name: &str, fault: &str, says: &str) {
    let cmdline = format!("patverify_fault={fault}");
    boot_fails(name, "native", &["--extra-cmdline", &cmdline], says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn not_a_kernel_tree() {
    let ended = verify("not-a-kernel-tree", &["--kernel", "/usr/share"]);
    ends(&ended, Kind::Setup, "is not a Linux kernel tree");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn kernel_path_does_not_exist() {
    let ended = verify("no-kernel", &["--kernel", "/nonexistent/linux"]);
    let says = "/nonexistent/linux is not a Linux kernel tree (no such directory)";
    ends(&ended, Kind::Setup, says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn rev_without_kernel() {
    ends(
        &verify("rev-alone", &["--rev", "HEAD"]),
        Kind::Setup,
        "--kernel",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn not_a_patch() {
    let patch = input("not-a-patch.patch", "this is not a diff\n");
    let ended = verify("not-a-patch", &["--patch", &patch]);
    ends(&ended, Kind::PatchDoesNotApply, "not a unified diff");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn empty_patch() {
    let patch = input("empty.patch", "");
    ends(
        &verify("empty-patch", &["--patch", &patch]),
        Kind::PatchDoesNotApply,
        "is empty",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn patch_applies_neither_way() {
    let patch = stale_patch(&fixture().out).unwrap().display().to_string();
    let ended = verify("stale-patch", &["--patch", &patch]);
    ends(&ended, Kind::PatchDoesNotApply, "hunk #1 FAILED");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_patch_naming_a_file_outside_the_tree_is_refused_and_writes_nothing() {
    let escaped = fixture().out.join("escaped");
    let up = "../".repeat(12);
    let text = format!(
        "--- /dev/null\n+++ b/{up}{}\n@@ -0,0 +1 @@\n+x\n",
        escaped.display()
    );
    let patch = input("escape.patch", &text);
    let ended = verify("escape", &["--patch", &patch]);
    ends(
        &ended,
        Kind::PatchDoesNotApply,
        "names a file outside the tree",
    );
    assert!(!escaped.exists(), "{} was written", escaped.display());
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn unknown_config_option() {
    let fragment = input(
        "unknown-option.config",
        "CONFIG_PATVERIFY_NO_SUCH_OPTION=y\n",
    );
    let ended = verify(
        "unknown-option",
        &["--env", "native", "--config", &fragment],
    );
    ends(
        &ended,
        Kind::Config,
        "CONFIG_PATVERIFY_NO_SUCH_OPTION=y (got unset)",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_config_fragment_of_garbage_is_refused_naming_its_line() {
    let fragment = input("garbage.config", "CONFIG_RUST=y\nCONFIG_\n=zz\n");
    let ended = verify("garbage-config", &["--config", &fragment]);
    ends(
        &ended,
        Kind::Config,
        "garbage.config:2: neither CONFIG_NAME=value",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn kernel_panic() {
    let args = ["--extra-cmdline", "rdinit=/nonexistent"];
    boot_fails("kernel-panic", "native", &args, "kernel panic");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn hang() {
    let args = ["--timeout", "20", "--extra-cmdline", "patverify_fault=hang"];
    boot_fails("hang", "native", &args, "timeout (hang)");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn truncated_report() {
    fault(
        "truncated-report",
        "truncate",
        "truncated or garbled report",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn garbled_report() {
    fault(
        "garbled-report",
        "garble",
        "garbled KTAP report: unexpected line \"ko ",
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_report_that_lacks_a_row() {
    let says = "incomplete report: row vma_set_page_prot.WB is missing";
    fault("missing-row", "drop-row", says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_report_with_an_undeclared_skip() {
    let says = "incomplete report: undeclared skip: vma_set_page_prot.WT";
    fault("undeclared-skip", "undeclared-skip", says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn kernel_oops() {
    let says = "kernel oops: BUG: kernel NULL pointer dereference";
    fault("kernel-oops", "oops", says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn qemu_missing() {
    let qemu = "/nonexistent/qemu-system-x86_64";
    let ended = verify("qemu-missing", &["--env", "native", "--qemu", qemu]);
    ends(
        &ended,
        Kind::Setup,
        &format!("QEMU program {qemu} not found"),
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn qemu_dies() {
    let args = ["--qemu", "/bin/false"];
    boot_fails("qemu-dies", "native", &args, "QEMU died (exit status: 1)");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn xen_refuses_the_kernel() {
    // Half a kernel image: Xen cannot load it as dom0.
    let build = fixture().record.builds.first().expect("a build");
    let bzimage = std::fs::read(&build.bzimage).unwrap();
    let half = fixture().out.join("half-bzImage");
    std::fs::write(&half, &bzimage[..bzimage.len() / 2]).unwrap();
    let args = ["--dom0-kernel", &half.display().to_string()];
    boot_fails("xen-refuses", "xen", &args, "Xen did not start dom0");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn output_device_full() {
    let ended = verify("output-full", &["--env", "native", "--json", "/dev/full"]);
    ends(&ended, Kind::Setup, "the disk is full");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn unwritable_cache_directory() {
    let (code, text) = harness(Path::new("/proc/patverify-cache"), &strings(&["verify"])).unwrap();
    let ended = Ended {
        code,
        text,
        out: PathBuf::new(),
    };
    ends(&ended, Kind::Setup, "cannot create cache directory");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn build_failure_names_and_keeps_its_log() {
    let tree = source_tree(&fixture().record).unwrap();
    let patch = input(
        "build-failure.patch",
        &breaking_patch(tree, &fixture().out).unwrap(),
    );
    let ended = verify("build-failure", &["--env", "native", "--patch", &patch]);
    ends(&ended, Kind::Build, "patverify: injected build failure");
    let log = ended
        .text
        .split("full log: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(PathBuf::from);
    assert!(
        log.as_ref().is_some_and(|l| l.is_file()),
        "build log not kept: {log:?}"
    );
    assert!(ended.text.contains("last lines:"), "no last lines shown");
}

/// A verify whose cache directory is on a filesystem that fills up (a 48
/// MiB tmpfs: Xen fits, the kernel source does not), and what it left in
/// the cache's src/ (None: no tmpfs can be mounted here).
struct FullCache {
    ended: Ended,
    left_in_src: Vec<String>,
}

fn full_cache() -> Option<&'static FullCache> {
    static RAN: OnceLock<Option<FullCache>> = OnceLock::new();
    RAN.get_or_init(|| {
        println!("==> e2e failure case: full cache directory");
        let small = fixture().out.join("full-cache");
        std::fs::create_dir_all(&small).expect("the tmpfs mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m", "patverify-full"])
            .arg(&small)
            .output_quiet();
        if !matches!(mounted, Ok((true, _))) {
            // Not root, or a container without CAP_SYS_ADMIN: say so loudly.
            println!("e2e: SKIPPED full cache directory: cannot mount a tmpfs here ({mounted:?})");
            return None;
        }
        let ended = harness(&small, &strings(&["verify", "--env", "native"]));
        // The entry's lock file may stay (it is never trusted as content).
        let left_in_src: Vec<String> = std::fs::read_dir(small.join("src"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".lock"))
            .collect();
        let _ = Command::new("umount").arg(&small).output_quiet();
        let (code, text) = ended.expect("the harness runs");
        let ended = Ended {
            code,
            text,
            out: small,
        };
        Some(FullCache { ended, left_in_src })
    })
    .as_ref()
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn full_cache_directory_exits_2_naming_the_full_disk() {
    let Some(run) = full_cache() else { return };
    let says = format!(
        "the disk is full (the cache {} has",
        run.ended.out.display()
    );
    ends(&run.ended, Kind::Setup, &says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn full_cache_directory_leaves_no_half_unpacked_source() {
    let Some(run) = full_cache() else { return };
    assert!(
        run.left_in_src.is_empty(),
        "left in src/: {:?}",
        run.left_in_src
    );
}

/// Trees no toolchain here can build, copies of the 6.12 source: one whose
/// scripts/min-tool-version.sh asks for rustc 9.0, one that says it is
/// Linux 6.6, whose `kernel` crate the module does not know.
struct Unbuildable {
    future_rustc: String,
    linux_6_6: String,
}

fn unbuildable() -> &'static Unbuildable {
    static TREES: OnceLock<Unbuildable> = OnceLock::new();
    TREES.get_or_init(|| {
        println!("==> e2e: trees no provisioned toolchain or module can build");
        let out = &fixture().out;
        let future_rustc = edited_copy(
            &out.join("future-rustc"),
            "scripts/min-tool-version.sh",
            ("echo 1.78.0", "echo 9.0.0"),
        );
        let linux_6_6 = edited_copy(
            &out.join("linux-6.6"),
            "Makefile",
            ("PATCHLEVEL = 12", "PATCHLEVEL = 6"),
        );
        Unbuildable {
            future_rustc: future_rustc.expect("a tree wanting rustc 9.0"),
            linux_6_6: linux_6_6.expect("a tree saying Linux 6.6"),
        }
    })
}

/// `args` (with `--env native --kernel TREE`) exits `want`, saying `says`.
fn refused(args: &[&str], tree: &str, want: Option<i32>, says: &[&str]) {
    let mut argv = strings(args);
    argv.extend(strings(&["--env", "native", "--kernel", tree]));
    let (code, text) = harness(&cache_root(), &argv).expect("the harness runs");
    let unsaid: Vec<&&str> = says.iter().filter(|s| !text.contains(**s)).collect();
    assert!(
        code == want && unsaid.is_empty(),
        "wanted exit {want:?} saying {unsaid:?}; got exit {code:?}: {}",
        xtask::support::proc::tail_lines(&text, 3)
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_tree_wanting_rustc_9_exits_9_naming_what_would_fit() {
    let says = ["needs rustc ≥ 9.0.0", "a newer Debian rustc-web would fit"];
    let tree = &unbuildable().future_rustc;
    refused(&["verify"], tree, exit(Kind::Toolchain), &says);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn probe_calls_a_tree_wanting_rustc_9_untestable() {
    let skip = Some(xtask::support::failure::BISECT_SKIP);
    refused(&["probe"], &unbuildable().future_rustc, skip, &[]);
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_linux_6_6_tree_exits_9_the_module_knows_6_1_and_6_12() {
    let says = ["Linux 6.6", "6.1 and of 6.12"];
    let tree = &unbuildable().linux_6_6;
    refused(&["verify"], tree, exit(Kind::Toolchain), &says);
}

/// A copy of the 6.12 source at `dest` with `file`'s first `from` made `to`
/// (the copy's files are hard links: the edit replaces the file).
fn edited_copy(dest: &Path, file: &str, (from, to): (&str, &str)) -> Result<String> {
    let tree = copy_of_source(&cache_root(), dest)?;
    let path = tree.join(file);
    let text = std::fs::read_to_string(&path)?.replacen(from, to, 1);
    std::fs::remove_file(&path)?;
    std::fs::write(&path, text)?;
    Ok(tree.display().to_string())
}

/// A hard-link copy of the unpacked 6.12 source in the cache (an earlier
/// scenario unpacked it), at `dest`.
fn copy_of_source(cache_root: &Path, dest: &Path) -> Result<std::path::PathBuf> {
    let unpacked = std::fs::read_dir(cache_root.join("src"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("linux-source-6.12-") && !name.ends_with(".lock")
        })
        .context("no unpacked linux-source-6.12 in the cache")?;
    let _ = std::fs::remove_dir_all(dest);
    Command::new("cp")
        .arg("-al")
        .arg(unpacked.join("linux-source-6.12"))
        .arg(dest)
        .run()?;
    Ok(dest.to_path_buf())
}
