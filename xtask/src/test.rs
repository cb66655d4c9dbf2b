//! `cargo xtask test`: the unit tests (seconds), then the end-to-end test,
//! which runs the real `verify` (builds, boots) and checks what the booted
//! kernels reported against what is known about the bug.

use crate::failure::{fail, Kind};
use crate::proc::Command;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversing_a_diff_swaps_sides_and_hunk_ranges() {
        let diff = "--- a/f\n+++ b/f\n@@ -1,3 +1,4 @@ ctx\n one\n-two\n+TWO\n+2\n";
        assert_eq!(reversed(diff), "--- a/f\n+++ b/f\n@@ -1,4 +1,3 @@ ctx\n one\n+two\n-TWO\n-2\n");
    }
}

#[derive(clap::Args, Debug)]
pub struct Test {
    /// Only the unit tests.
    #[arg(long)]
    pub unit: bool,
}

impl Test {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        // The unit tests drive GNU patch and friends too: provision first, so
        // this one command works on a bare machine.
        crate::provision::ensure(&cache_root.join("xen"))?;
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
    let native_baseline = [("WB", "WB"), ("WC", "WC"), ("UC-", "UC-"), ("UC", "UC"), ("WT", "UC"), ("WP", "WC")];
    // Under Xen PV, Linux uses Xen's PAT layout, where WC needs the PAT bit:
    // without the fix WC→WB and WP→WT (measured, DESIGN.md). UC stays UC: the
    // kernel encodes it as entry 3, without the PAT bit, whatever the thread says.
    let xen_baseline = [("WB", "WB"), ("WC", "WB"), ("UC-", "UC-"), ("UC", "UC"), ("WT", "WT"), ("WP", "WT")];
    let path = "vma_set_page_prot";
    for (env, baseline) in [("native", native_baseline), ("xen", xen_baseline)] {
        for (requested, want) in baseline {
            let got = observed(&json, "baseline", env, path, requested);
            checks.check(&format!("{env} {path} baseline {requested} → {want}"), got == Some(want), || format!("observed {got:?}"));
            let got = observed(&json, "candidate", env, path, requested);
            checks.check(&format!("{env} {path} candidate keeps {requested}"), got == Some(requested), || format!("observed {got:?}"));
        }
    }
    for (env, layout) in [("native", ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"]), ("xen", ["WB", "WT", "UC-", "UC", "WC", "WP", "UC", "UC"])] {
        let reported: Vec<Value> = json["environments"].as_array().into_iter().flatten().filter(|e| e["env"] == env).map(|e| e["pat_layout"].clone()).collect();
        let want = serde_json::json!(layout);
        checks.check(&format!("{env} PAT layout is {}", layout.join(" ")), reported.len() == 2 && reported.iter().all(|l| *l == want), || format!("{reported:?}"));
    }
    for file in ["baseline-native.ktap", "candidate-native.ktap", "baseline-xen.ktap", "candidate-xen.ktap", "baseline-native.console.log", "candidate-xen.console.log"] {
        checks.check(&format!("kept {file}"), out.join(file).exists(), || "missing".into());
    }
    kunit_parser_agrees(&json, &out, &mut checks)?;
    failure_injection(cache_root, &out, &mut checks)?;
    probe_exit_codes(cache_root, &out, &mut checks)?;
    baseline_that_keeps_everything_is_not_a_pass(cache_root, &json, &out, &mut checks)?;
    tree_the_toolchain_cannot_build(cache_root, &out, &mut checks)?;
    bisect_finds_the_commit(cache_root, &json, &out, &mut checks)?;
    println!("e2e: {} passed, {} failed", checks.passed, checks.failed.len());
    if checks.failed.is_empty() {
        Ok(())
    } else {
        Err(fail(Kind::CandidateLost, format!("end-to-end checks failed: {}", checks.failed.join("; "))))
    }
}

/// Failures provoked on purpose, reusing the kernels built above: each must
/// end with its exit code and a message that names it, and keep its evidence.
fn failure_injection(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    let me = std::env::current_exe()?;
    let not_a_patch = out.join("not-a-patch.patch");
    std::fs::write(&not_a_patch, "this is not a diff\n")?;
    let empty_patch = out.join("empty.patch");
    std::fs::write(&empty_patch, "")?;
    let unknown_option = out.join("unknown-option.config");
    std::fs::write(&unknown_option, "CONFIG_PATVERIFY_NO_SUCH_OPTION=y\n")?;
    let stale_patch = out.join("stale.patch");
    std::fs::write(&stale_patch, "--- a/Makefile\n+++ b/Makefile\n@@ -1,2 +1,2 @@\n-no such line\n+another line\n context that is not there\n")?;
    let cases: Vec<(&str, Vec<String>, i32, &str)> = vec![
        ("not a kernel tree", vec!["--kernel".into(), "/usr/share".into()], 2, "is not a Linux kernel tree"),
        ("not a patch", vec!["--patch".into(), not_a_patch.display().to_string()], 4, "not a unified diff"),
        ("empty patch", vec!["--patch".into(), empty_patch.display().to_string()], 4, "is empty"),
        ("--rev without --kernel", vec!["--rev".into(), "HEAD".into()], 2, "--kernel"),
        ("unknown config option", vec!["--env".into(), "native".into(), "--config".into(), unknown_option.display().to_string()], 5, "CONFIG_PATVERIFY_NO_SUCH_OPTION=y (got unset)"),
        ("patch applies neither way", vec!["--patch".into(), stale_patch.display().to_string()], 4, "hunk #1 FAILED"),
        ("kernel panic", vec!["--env".into(), "native".into(), "--extra-cmdline".into(), "rdinit=/nonexistent".into()], 7, "kernel panic"),
        ("hang", vec!["--env".into(), "native".into(), "--timeout".into(), "20".into(), "--extra-cmdline".into(), "patverify_fault=hang".into()], 7, "timeout (hang)"),
        ("truncated report", vec!["--env".into(), "native".into(), "--extra-cmdline".into(), "patverify_fault=truncate".into()], 7, "truncated or garbled report"),
    ];
    interrupted_run_leaves_no_qemu(cache_root, out, checks)?;
    let (code, text) = harness(Path::new("/proc/patverify-cache"), &["verify".to_string()])?;
    checks.check("unwritable cache directory: exit 2", code == Some(2) && text.contains("cannot create cache directory"), || {
        format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 2))
    });
    for (name, args, want_code, want_message) in cases {
        let case_out = out.join(name.replace(' ', "-"));
        let mut argv: Vec<String> = vec!["--cache-dir".into(), cache_root.display().to_string(), "verify".into(), "--out".into(), case_out.display().to_string()];
        argv.extend(args);
        println!("==> e2e failure case: {name}");
        let output = duct::cmd(&me, &argv).stdin_null().stderr_to_stdout().stdout_capture().unchecked().run()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let last = text.lines().filter(|l| l.starts_with("error:")).last().unwrap_or("").to_string();
        let code = output.status.code();
        checks.check(&format!("{name}: exit {want_code}, says {want_message:?}"), code == Some(want_code) && text.contains(want_message), || {
            format!("exit {code:?}, {last}")
        });
        if want_code == 7 {
            let log = case_out.join("baseline-native.console.log");
            checks.check(&format!("{name}: console log kept"), log.exists(), || format!("no {}", log.display()));
        }
    }
    Ok(())
}

/// The kernel's own KTAP parser (tools/testing/kunit/kunit.py parse) must
/// count the saved reports as the harness does.
fn kunit_parser_agrees(json: &Value, out: &Path, checks: &mut Checks) -> Result<()> {
    let tree = json["variants"][0]["tree"].as_str().context("verify JSON names no variant tree")?;
    let kunit = Path::new(tree).join("tools/testing/kunit/kunit.py");
    for variant in ["baseline", "candidate"] {
        for env in ["native", "xen"] {
            let ktap = out.join(format!("{variant}-{env}.ktap"));
            let (_, text) = Command::new("python3").arg(&kunit).arg("parse").arg(&ktap).output_quiet()?;
            let results: Vec<&Value> = json["results"].as_array().into_iter().flatten().filter(|r| r["variant"] == variant && r["env"] == env).collect();
            let kept = results.iter().filter(|r| r["kept"] == true).count();
            let lost = results.len() - kept;
            let want = if lost == 0 { format!("Ran {} tests: passed: {kept}", results.len()) } else { format!("Ran {} tests: passed: {kept}, failed: {lost}", results.len()) };
            checks.check(&format!("kunit.py parse {variant}-{env}.ktap says {want:?}"), text.contains(&want), || crate::proc::tail_lines(&text, 2));
        }
    }
    Ok(())
}

/// Runs the harness itself with `args`; returns its exit code and output.
fn harness(cache_root: &Path, args: &[String]) -> Result<(Option<i32>, String)> {
    let mut argv = vec!["--cache-dir".to_string(), cache_root.display().to_string()];
    argv.extend(args.iter().cloned());
    let output = duct::cmd(std::env::current_exe()?, &argv).stdin_null().stderr_to_stdout().stdout_capture().unchecked().run()?;
    Ok((output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// A diff with its sides swapped: applied forward, it undoes the original.
fn reversed(diff: &str) -> String {
    let swap_hunk = |header: &str| {
        // "@@ -a,b +c,d @@ ctx" → "@@ -c,d +a,b @@ ctx"
        let mut parts = header.splitn(3, ' ');
        let (old, new, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("@@ -{} +{} {rest}", new.trim_start_matches('+'), old.trim_start_matches('-'))
    };
    diff.lines()
        .map(|l| {
            let swapped = if l.starts_with("--- ") || l.starts_with("+++ ") {
                l.to_string()
            } else if let Some(header) = l.strip_prefix("@@ ") {
                swap_hunk(header)
            } else if let Some(r) = l.strip_prefix('-') {
                format!("+{r}")
            } else if let Some(r) = l.strip_prefix('+') {
                format!("-{r}")
            } else {
                l.to_string()
            };
            swapped + "\n"
        })
        .collect()
}

/// A patch that reverts the shipped fix (its diff, reversed).
fn revert_patch(out: &Path) -> Result<std::path::PathBuf> {
    let fix = std::fs::read_to_string(crate::verify::default_patch())?;
    let diff = &fix[fix.find("--- a/").context("the fix has no diff")?..];
    let path = out.join("revert-fix.patch");
    std::fs::write(&path, reversed(diff))?;
    Ok(path)
}

/// probe judges one kernel: the tree with the fix is good (0), the tree with
/// the fix reverted is bad (1), and --expect lost swaps them. Both kernels are
/// the ones verify built (same content), so only the boots run.
fn probe_exit_codes(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    let revert = revert_patch(out)?;
    let native = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["probe", "--env", "native"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let revert_arg = revert.display().to_string();
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        ("probe of the fixed tree is good", native(&[]), 0),
        ("probe with the fix reverted is bad", native(&["--patch", &revert_arg]), 1),
        ("probe --expect lost with the fix reverted is good", native(&["--patch", &revert_arg, "--expect", "lost"]), 0),
        ("probe with a patch that does not apply is untestable", native(&["--patch", &out.join("stale.patch").display().to_string()]), 125),
        ("probe of a directory that is not a kernel aborts", native(&["--kernel", "/usr/share"]), 128),
        ("probe with a bad flag aborts", native(&["--no-such-flag"]), 128),
    ];
    for (name, args, want) in cases {
        println!("==> e2e: {name}");
        let (code, text) = harness(cache_root, &args)?;
        checks.check(name, code == Some(want), || format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 3)));
    }
    Ok(())
}

/// A real kernel history in which one commit reintroduces the bug and a
/// later one cannot be built: `cargo xtask bisect` must land on the first,
/// skipping the second, without touching the repository it was given.
fn bisect_finds_the_commit(cache_root: &Path, json: &Value, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: bisect over a synthetic kernel history");
    // The pristine source verify used (variant trees carry the hooked module).
    let tree = Path::new(json["kernel"]["tree"].as_str().context("verify JSON names no source tree")?);
    let repo = out.join("history");
    let _ = std::fs::remove_dir_all(&repo);
    let cp = Command::new("cp").arg("-a").arg(tree).arg(&repo);
    cp.run()?;
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=patverify", "-c", "user.email=patverify@localhost", "-c", "core.compression=0"])
            .args(args.iter().copied())
    };
    git(&["init", "--quiet"]).run()?;
    // --force: Debian's kernel source ignores everything at the top level.
    git(&["add", "-A", "--force"]).run()?;
    git(&["commit", "--quiet", "-m", "good: the tree with the fix"]).run()?;
    crate::patch::apply(&repo, &crate::verify::default_patch(), crate::patch::Direction::Reverse)?;
    git(&["commit", "--quiet", "-am", "bad: reintroduce the bug"]).run()?;
    let makefile = repo.join("Makefile");
    let original = std::fs::read_to_string(&makefile)?;
    std::fs::write(&makefile, format!("$(error this commit cannot be built)\n{original}"))?;
    git(&["commit", "--quiet", "-am", "untestable: broken Makefile"]).run()?;
    std::fs::write(&makefile, &original)?;
    git(&["commit", "--quiet", "-am", "bad: fix the Makefile"]).run()?;
    std::fs::write(repo.join("README"), "harmless\n")?;
    git(&["commit", "--quiet", "-am", "bad: harmless change"]).run()?;
    let log = git(&["log", "--format=%H %s"]).output_quiet()?.1;
    let bad_commit = log.lines().find(|l| l.ends_with("bad: reintroduce the bug")).and_then(|l| l.split(' ').next()).context("no bug commit")?.to_string();
    let status_before = git(&["status", "--porcelain"]).output_quiet()?.1;
    let head_before = git(&["rev-parse", "HEAD"]).output_quiet()?.1;

    let args: Vec<String> = ["bisect", "--kernel", &repo.display().to_string(), "--good", "HEAD~4", "--bad", "HEAD", "--out", &out.join("bisect").display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, text) = harness(cache_root, &args)?;
    println!("{}", text.lines().filter(|l| l.starts_with("  ") || l.starts_with("first bad")).collect::<Vec<_>>().join("\n"));
    checks.check("bisect lands on the commit that reintroduces the bug", code == Some(0) && text.contains(&format!("first bad commit: {bad_commit}")), || {
        format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 6))
    });
    checks.check("bisect skipped the untestable commit", text.contains("untestable (skip)"), || "no step was skipped".into());
    let status_after = git(&["status", "--porcelain"]).output_quiet()?.1;
    let head_after = git(&["rev-parse", "HEAD"]).output_quiet()?.1;
    checks.check("bisect left the repository as it was", status_before == status_after && head_before == head_after, || {
        format!("status {status_before:?} → {status_after:?}, HEAD {head_before} → {head_after}")
    });

    // --rev builds a revision of a git tree without checking it out.
    let args: Vec<String> = ["probe", "--env", "native", "--kernel", &repo.display().to_string(), "--rev", "HEAD~3"].iter().map(|s| s.to_string()).collect();
    let (code, text) = harness(cache_root, &args)?;
    checks.check("probe --rev of the bug commit is bad", code == Some(1), || format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 4)));
    let head_after_rev = git(&["rev-parse", "HEAD"]).output_quiet()?.1;
    checks.check("probe --rev left HEAD alone", head_after_rev == head_before, || format!("HEAD {head_before} → {head_after_rev}"));
    Ok(())
}

/// A "candidate" that changes nothing relevant: the baseline keeps every
/// mode, so verify must refuse to call it a pass (exit 3).
fn baseline_that_keeps_everything_is_not_a_pass(cache_root: &Path, json: &Value, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: a patch that does not touch the bug");
    let tree = Path::new(json["kernel"]["tree"].as_str().context("verify JSON names no source tree")?);
    let path = unrelated_patch(tree, &out.join("unrelated.patch"))?;
    let args: Vec<String> = ["verify", "--env", "native", "--patch", &path.display().to_string(), "--out", &out.join("unrelated").display().to_string()].iter().map(|s| s.to_string()).collect();
    let (code, text) = harness(cache_root, &args)?;
    checks.check("an unrelated patch: exit 3, the bug was not reproduced", code == Some(3) && text.contains("not reproduced"), || {
        format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 4))
    });
    Ok(())
}

/// SIGTERM during a boot: the harness exits 143 and takes QEMU with it.
fn interrupted_run_leaves_no_qemu(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e failure case: SIGTERM during a boot");
    let case_out = out.join("sigterm");
    let initramfs = case_out.join("initramfs.cpio");
    let args: Vec<String> = vec![
        "--cache-dir".into(), cache_root.display().to_string(), "verify".into(), "--env".into(), "native".into(),
        "--out".into(), case_out.display().to_string(), "--extra-cmdline".into(), "patverify_fault=hang".into(),
    ];
    let handle = duct::cmd(std::env::current_exe()?, &args).stdin_null().stdout_null().stderr_null().unchecked().start()?;
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
    checks.check("SIGTERM: QEMU had started", started, || "QEMU never started".into());
    checks.check("SIGTERM: exit 143, no QEMU left", status.code() == Some(143) && !qemu_running(), || {
        format!("exit {:?}, QEMU still running: {}", status.code(), qemu_running())
    });
    Ok(())
}

/// Whether any process's command line contains `needle` (a /proc scan).
fn process_mentioning(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
            .unwrap_or(false)
    })
}

/// A patch adding a comment to kernel/panic.c of `tree`: applies, builds,
/// and has nothing to do with the bug.
fn unrelated_patch(tree: &Path, dest: &Path) -> Result<std::path::PathBuf> {
    let panic_c = std::fs::read_to_string(tree.join("kernel/panic.c"))?;
    let head: Vec<&str> = panic_c.lines().take(3).collect();
    anyhow::ensure!(head.len() == 3, "kernel/panic.c is too short");
    let patch = format!(
        "--- a/kernel/panic.c\n+++ b/kernel/panic.c\n@@ -1,3 +1,4 @@\n {}\n+/* patverify e2e: a change that does not touch the bug */\n {}\n {}\n",
        head[0], head[1], head[2]
    );
    std::fs::write(dest, patch)?;
    Ok(dest.to_path_buf())
}

/// Debian's linux-source-6.1, whose Rust support is pinned to rustc 1.62:
/// verify must call it a toolchain problem (exit 9), probe untestable (125).
fn tree_the_toolchain_cannot_build(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: a tree this toolchain cannot build (linux-source-6.1)");
    let tarball = Path::new("/usr/src/linux-source-6.1.tar.xz");
    if !tarball.exists() {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "linux-source-6.1"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .context("cannot install linux-source-6.1 for the toolchain test (needs root)")?;
    }
    let dir = out.join("linux-6.1");
    std::fs::create_dir_all(&dir)?;
    Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&dir).run()?;
    let tree = dir.join("linux-source-6.1");
    let patch = unrelated_patch(&tree, &out.join("unrelated-6.1.patch"))?;
    let args: Vec<String> = ["verify", "--env", "native", "--kernel", &tree.display().to_string(), "--patch", &patch.display().to_string(), "--out", &out.join("6.1").display().to_string()].iter().map(|s| s.to_string()).collect();
    let (code, text) = harness(cache_root, &args)?;
    checks.check("linux 6.1: verify exits 9 naming rustc 1.62", code == Some(9) && text.contains("pinned to rustc 1.62.0"), || {
        format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 3))
    });
    let args: Vec<String> = ["probe", "--env", "native", "--kernel", &tree.display().to_string()].iter().map(|s| s.to_string()).collect();
    let (code, text) = harness(cache_root, &args)?;
    checks.check("linux 6.1: probe exits 125 (untestable)", code == Some(125), || format!("exit {code:?}: {}", crate::proc::tail_lines(&text, 3)));
    Ok(())
}
