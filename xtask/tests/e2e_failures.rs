//! End-to-end: failures provoked on purpose — bad input, a broken build, boots that
//! hang, panic, oops or garble their report, QEMU or Xen failing, a full disk, a
//! tree the toolchain cannot build — each with its exit code and its evidence.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::Path;
use xtask::record::Record;
use xtask::support::failure::Kind;

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn every_failure_is_named_with_its_exit_code() -> Result<()> {
    let (out, mut checks, json) = start("failures", true)?;
    let json = json.context("the scenario's verify")?;
    let cache_root = cache_root();
    failure_injection(&cache_root, &json, &out, &mut checks)?;
    full_cache_directory(&out, &mut checks)?;
    tree_the_toolchain_cannot_build(&cache_root, &out, &mut checks)?;
    checks.finish()
}

/// Failures provoked on purpose, reusing the kernels built above: each must
/// end with its exit code and a message that names it, and keep its evidence.
fn failure_injection(
    cache_root: &Path,
    json: &Record,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    let me = exe();
    let tree = source_tree(json)?;
    let build_failure = out.join("build-failure.patch");
    std::fs::write(&build_failure, breaking_patch(tree, out)?)?;
    // Half a kernel image: Xen cannot load it as dom0.
    let bzimage = std::fs::read(
        &json
            .builds
            .first()
            .context("verify JSON names no bzImage")?
            .bzimage,
    )?;
    let half_kernel = out.join("half-bzImage");
    std::fs::write(&half_kernel, &bzimage[..bzimage.len() / 2])?;
    let not_a_patch = out.join("not-a-patch.patch");
    std::fs::write(&not_a_patch, "this is not a diff\n")?;
    let empty_patch = out.join("empty.patch");
    std::fs::write(&empty_patch, "")?;
    let unknown_option = out.join("unknown-option.config");
    std::fs::write(&unknown_option, "CONFIG_PATVERIFY_NO_SUCH_OPTION=y\n")?;
    let stale_patch = stale_patch(out)?;
    // A patch that would write beside the tree, and a fragment of garbage.
    let escape = out.join("escape.patch");
    let escaped = out.join("escaped");
    std::fs::write(
        &escape,
        format!(
            "--- /dev/null\n+++ b/../../../../../../../..{}\n@@ -0,0 +1 @@\n+x\n",
            escaped.display()
        ),
    )?;
    let garbage = out.join("garbage.config");
    std::fs::write(&garbage, "CONFIG_RUST=y\nCONFIG_\n=zz\n")?;
    let cases: Vec<(&str, Vec<String>, i32, &str)> = vec![
        (
            "not a kernel tree",
            vec!["--kernel".into(), "/usr/share".into()],
            Kind::Setup.exit_code(),
            "is not a Linux kernel tree",
        ),
        (
            "kernel path does not exist",
            vec!["--kernel".into(), "/nonexistent/linux".into()],
            Kind::Setup.exit_code(),
            "/nonexistent/linux is not a Linux kernel tree (no such directory)",
        ),
        (
            "not a patch",
            vec!["--patch".into(), not_a_patch.display().to_string()],
            Kind::PatchDoesNotApply.exit_code(),
            "not a unified diff",
        ),
        (
            "empty patch",
            vec!["--patch".into(), empty_patch.display().to_string()],
            Kind::PatchDoesNotApply.exit_code(),
            "is empty",
        ),
        (
            "--rev without --kernel",
            vec!["--rev".into(), "HEAD".into()],
            Kind::Setup.exit_code(),
            "--kernel",
        ),
        (
            "unknown config option",
            vec![
                "--env".into(),
                "native".into(),
                "--config".into(),
                unknown_option.display().to_string(),
            ],
            Kind::Config.exit_code(),
            "CONFIG_PATVERIFY_NO_SUCH_OPTION=y (got unset)",
        ),
        (
            "patch names a file outside the tree",
            vec!["--patch".into(), escape.display().to_string()],
            Kind::PatchDoesNotApply.exit_code(),
            "names a file outside the tree",
        ),
        (
            "garbage config fragment",
            vec!["--config".into(), garbage.display().to_string()],
            Kind::Config.exit_code(),
            "garbage.config:2: neither CONFIG_NAME=value",
        ),
        (
            "patch applies neither way",
            vec!["--patch".into(), stale_patch.display().to_string()],
            Kind::PatchDoesNotApply.exit_code(),
            "hunk #1 FAILED",
        ),
        (
            "kernel panic",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "rdinit=/nonexistent".into(),
            ],
            Kind::Boot.exit_code(),
            "kernel panic",
        ),
        (
            "hang",
            vec![
                "--env".into(),
                "native".into(),
                "--timeout".into(),
                "20".into(),
                "--extra-cmdline".into(),
                "patverify_fault=hang".into(),
            ],
            Kind::Boot.exit_code(),
            "timeout (hang)",
        ),
        (
            "truncated report",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "patverify_fault=truncate".into(),
            ],
            Kind::Boot.exit_code(),
            "truncated or garbled report",
        ),
        (
            "garbled report",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "patverify_fault=garble".into(),
            ],
            Kind::Boot.exit_code(),
            "garbled KTAP report: unexpected line \"ko ",
        ),
        (
            "a report that lacks a row",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "patverify_fault=drop-row".into(),
            ],
            Kind::Boot.exit_code(),
            "incomplete report: row vma_set_page_prot.WB is missing",
        ),
        (
            "a report with an undeclared skip",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "patverify_fault=undeclared-skip".into(),
            ],
            Kind::Boot.exit_code(),
            "incomplete report: undeclared skip: vma_set_page_prot.WT",
        ),
        (
            "kernel oops",
            vec![
                "--env".into(),
                "native".into(),
                "--extra-cmdline".into(),
                "patverify_fault=oops".into(),
            ],
            Kind::Boot.exit_code(),
            "kernel oops: BUG: kernel NULL pointer dereference",
        ),
        (
            "QEMU missing",
            vec![
                "--env".into(),
                "native".into(),
                "--qemu".into(),
                "/nonexistent/qemu-system-x86_64".into(),
            ],
            Kind::Setup.exit_code(),
            "QEMU program /nonexistent/qemu-system-x86_64 not found",
        ),
        (
            "QEMU dies",
            vec![
                "--env".into(),
                "native".into(),
                "--qemu".into(),
                "/bin/false".into(),
            ],
            Kind::Boot.exit_code(),
            "QEMU died (exit status: 1)",
        ),
        (
            "Xen refuses the kernel",
            vec![
                "--env".into(),
                "xen".into(),
                "--dom0-kernel".into(),
                half_kernel.display().to_string(),
            ],
            Kind::Boot.exit_code(),
            "Xen did not start dom0",
        ),
        (
            "output device full",
            vec![
                "--env".into(),
                "native".into(),
                "--json".into(),
                "/dev/full".into(),
            ],
            Kind::Setup.exit_code(),
            "the disk is full",
        ),
        (
            "build failure",
            vec![
                "--env".into(),
                "native".into(),
                "--patch".into(),
                build_failure.display().to_string(),
            ],
            Kind::Build.exit_code(),
            "patverify: injected build failure",
        ),
    ];
    let (code, text) = harness(Path::new("/proc/patverify-cache"), &["verify".to_string()])?;
    checks.check(
        "unwritable cache directory: exit 2",
        code == exit(Kind::Setup) && text.contains("cannot create cache directory"),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 2)
            )
        },
    );
    for (name, args, want_code, want_message) in cases {
        let case_out = out.join(name.replace(' ', "-"));
        let mut argv: Vec<String> = vec![
            "--cache-dir".into(),
            cache_root.display().to_string(),
            "verify".into(),
            "--out".into(),
            case_out.display().to_string(),
        ];
        argv.extend(args);
        println!("==> e2e failure case: {name}");
        let output = duct::cmd(&me, &argv)
            .stdin_null()
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let last = text
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or("")
            .to_string();
        let code = output.status.code();
        checks.check(
            &format!("{name}: exit {want_code}, says {want_message:?}"),
            code == Some(want_code) && text.contains(want_message),
            || format!("exit {code:?}, {last}"),
        );
        if want_code == Kind::Boot.exit_code() {
            let env = if args_mention(&argv, "xen") {
                "xen"
            } else {
                "native"
            };
            let log = case_out.join(format!("baseline-{env}.console.log"));
            checks.check(&format!("{name}: console log kept"), log.exists(), || {
                format!("no {}", log.display())
            });
        }
        if want_code == Kind::Build.exit_code() {
            let log = text
                .split("full log: ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .map(std::path::PathBuf::from);
            checks.check(
                &format!("{name}: names the build log, which is kept"),
                log.as_ref().is_some_and(|l| l.is_file()),
                || format!("{log:?}"),
            );
            checks.check(
                &format!("{name}: shows the log's last lines"),
                text.contains("last lines:"),
                || xtask::support::proc::tail_lines(&text, 3),
            );
        }
    }
    checks.check(
        "the patch naming a file outside the tree wrote nothing there",
        !escaped.exists(),
        || format!("{} exists", escaped.display()),
    );
    Ok(())
}

/// A cache directory on a filesystem that fills up (a 48 MiB tmpfs: Xen
/// fits, the kernel source does not): exit 2 naming the full disk, and no
/// half-unpacked source left that a later run would trust.
fn full_cache_directory(out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e failure case: full cache directory");
    let small = out.join("full-cache");
    std::fs::create_dir_all(&small)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "patverify-full"])
        .arg(&small)
        .output_quiet();
    if !matches!(mounted, Ok((true, _))) {
        // Not root, or a container without CAP_SYS_ADMIN: say so loudly.
        println!("e2e: SKIPPED full cache directory: cannot mount a tmpfs here ({mounted:?})");
        return Ok(());
    }
    let outcome = harness(&small, &strings(&["verify", "--env", "native"]));
    // The entry's lock file may stay (it is never trusted as content).
    let leftovers: Vec<String> = std::fs::read_dir(small.join("src"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&small).output_quiet();
    let (code, text) = outcome?;
    checks.check(
        "full cache directory: exit 2, names the full disk",
        code == exit(Kind::Setup)
            && text.contains(&format!(
                "the disk is full (the cache {} has",
                small.display()
            )),
        || {
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(&text, 3)
            )
        },
    );
    checks.check(
        "full cache directory: no half-unpacked source left",
        leftovers.is_empty(),
        || format!("left in src/: {leftovers:?}"),
    );
    Ok(())
}

/// Trees no toolchain here can build: a copy of the 6.12 source whose
/// scripts/min-tool-version.sh asks for rustc 9.0 (exit 9 naming what would
/// fit; probe 125), and one that says it is Linux 6.6, whose `kernel` crate
/// the module does not know (exit 9).
fn tree_the_toolchain_cannot_build(
    cache_root: &Path,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e: trees no provisioned toolchain or module can build");
    // The copies' files are hard links: an edit replaces the file.
    let edited = |name: &str, file: &str, from: &str, to: &str| -> Result<String> {
        let tree = copy_of_source(cache_root, &out.join(name))?;
        let path = tree.join(file);
        let text = std::fs::read_to_string(&path)?.replacen(from, to, 1);
        std::fs::remove_file(&path)?;
        std::fs::write(&path, text)?;
        Ok(tree.display().to_string())
    };
    let mut expect =
        |name: &str, command: &str, kernel: &str, want: Option<i32>, says: &[&str]| -> Result<()> {
            let args = strings(&[command, "--env", "native", "--kernel", kernel]);
            let (code, text) = harness(cache_root, &args)?;
            checks.check(
                name,
                code == want && says.iter().all(|s| text.contains(s)),
                || {
                    format!(
                        "exit {code:?}: {}",
                        xtask::support::proc::tail_lines(&text, 3)
                    )
                },
            );
            Ok(())
        };
    let future = edited(
        "future-rustc",
        "scripts/min-tool-version.sh",
        "echo 1.78.0",
        "echo 9.0.0",
    )?;
    expect(
        "a tree wanting rustc 9.0: verify exits 9 naming what it needs and what would fit",
        "verify",
        &future,
        exit(Kind::Toolchain),
        &["needs rustc ≥ 9.0.0", "a newer Debian rustc-web would fit"],
    )?;
    expect(
        "a tree wanting rustc 9.0: probe exits 125 (untestable)",
        "probe",
        &future,
        Some(xtask::support::failure::BISECT_SKIP),
        &[],
    )?;
    let older = edited("linux-6.6", "Makefile", "PATCHLEVEL = 12", "PATCHLEVEL = 6")?;
    expect(
        "a Linux 6.6 tree: verify exits 9 (the module knows 6.1's and 6.12's kernel crates)",
        "verify",
        &older,
        exit(Kind::Toolchain),
        &["Linux 6.6", "6.1 and of 6.12"],
    )?;
    Ok(())
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
