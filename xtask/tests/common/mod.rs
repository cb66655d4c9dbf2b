//! What the end-to-end scenarios share: running the harness, the default
//! verify as a fixture (built once through the harness's own cache, so each
//! scenario after the first only boots), helpers.

#![allow(dead_code)] // each scenario uses a part

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xtask::record::{Record, Verdict};
use xtask::stages::qemu::Env;
use xtask::support::failure::Kind;
pub use xtask::support::proc::Command;

/// The harness binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xtask"))
}

/// The cache the scenarios share (`cargo xtask test` passes its own).
pub fn cache_root() -> PathBuf {
    xtask::support::cache::default_root()
}

/// A fresh output directory for one scenario. What earlier runs of it left
/// (the directories of processes no longer running) is removed first: a
/// scenario's outputs stay for the tests that read them, and for whoever
/// looks into a failure, until the scenario runs again.
pub fn scenario_dir(name: &str) -> Result<PathBuf> {
    let prefix = format!("patverify-e2e-{name}-");
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit('-').next());
        let gone = pid.is_some_and(|p| !Path::new("/proc").join(p).exists());
        if gone && pid.is_some_and(|p| p.parse::<u32>().is_ok()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let out = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

/// The default verify (the upstream fix as candidate, both environments),
/// with its JSON and JUnit in `out`.
pub struct Verified {
    pub code: Option<i32>,
    /// What verify printed (progress, tables, verdict).
    pub text: String,
    /// Its KCIDB document.
    pub kcidb: PathBuf,
    pub record: Record,
    pub junit: String,
}

pub fn verified(out: &Path) -> Result<Verified> {
    let json = out.join("verify.json");
    let junit = out.join("verify.xml");
    let kcidb = out.join("verify.kcidb.json");
    println!(
        "==> end-to-end: cargo xtask verify (real kernel builds and boots; results in {})",
        out.display()
    );
    let args = strings(&[
        "verify",
        "--json",
        &json.display().to_string(),
        "--junit",
        &junit.display().to_string(),
        "--kcidb",
        &kcidb.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let (code, text) = harness(&cache_root(), &args)?;
    let record =
        Record::read(&json).with_context(|| format!("verify wrote no {}", json.display()))?;
    Ok(Verified {
        code,
        text,
        record,
        junit: std::fs::read_to_string(&junit).unwrap_or_default(),
        kcidb,
    })
}

/// A virtual environment under the cache with the PyPI tools the scenarios
/// check the harness's output with: kcidb-io (KernelCI's validator) and b4.
pub fn tools_venv() -> Result<PathBuf> {
    let venv = cache_root().join("venv-tools");
    let python = venv.join("bin/python");
    if !python.exists() {
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .run()?;
    }
    let (ready, _) = Command::new(&python)
        .args(["-c", "import kcidb_io, b4"])
        .output_quiet()?;
    if !ready {
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "kcidb-io", "b4"])
            .run()?;
    }
    Ok(venv)
}

/// Checks a KCIDB document with kcidb-io's own validator; returns whether
/// it passed and what it said.
pub fn kcidb_validate(document: &Path) -> Result<(bool, String)> {
    let python = tools_venv()?.join("bin/python");
    let check = "import json, sys, kcidb_io\n\
                 kcidb_io.schema.LATEST.validate(json.load(open(sys.argv[1])))\n\
                 print('valid KCIDB', kcidb_io.schema.LATEST.major, kcidb_io.schema.LATEST.minor)";
    Command::new(python)
        .args(["-c", check])
        .arg(document)
        .output_quiet()
}

/// The pristine kernel source a verify used (its variant trees carry the
/// hooked module).
pub fn source_tree(json: &Record) -> Result<&Path> {
    let kernel = json
        .kernel
        .as_ref()
        .context("verify JSON names no kernel tree")?;
    Ok(Path::new(&kernel.tree))
}

/// A scenario's start: its output directory and (when it needs the
/// kernels and paths of a default verify) that verify's record.
pub fn start(name: &str, with_verify: bool) -> Result<(PathBuf, Option<Record>)> {
    let out = scenario_dir(name)?;
    let record = if with_verify {
        Some(verified(&out)?.record)
    } else {
        None
    };
    Ok((out, record))
}

/// A scenario's one verify, shared by its named tests (each test reads it
/// through a `OnceLock`): where it kept its outputs, and its record.
pub struct Fixture {
    pub out: PathBuf,
    pub record: Record,
}

impl Fixture {
    /// Runs the scenario's verify (its kernels come from the shared cache).
    pub fn new(name: &str) -> Fixture {
        let (out, record) = start(name, true).expect("the scenario's verify");
        let record = record.expect("the scenario's verify record");
        Fixture { out, record }
    }
}

/// A patch whose hunk matches nothing in a kernel tree (applies neither way).
pub fn stale_patch(out: &Path) -> Result<PathBuf> {
    let path = out.join("stale.patch");
    std::fs::write(&path, "--- a/Makefile\n+++ b/Makefile\n@@ -1,2 +1,2 @@\n-no such line\n+another line\n context that is not there\n")?;
    Ok(path)
}

/// The exit code of a failure kind.
pub fn exit(kind: Kind) -> Option<i32> {
    Some(kind.exit_code())
}

/// Whether a verify passed.
pub fn passed(code: Option<i32>, record: &Record) -> bool {
    code == Some(0) && record.verdict == Verdict::Pass
}

/// The environment named `name`.
pub fn env(name: &str) -> Env {
    name.parse().expect("native or xen")
}

/// The observed mode for (variant, env, path, requested) in verify's record.
pub fn observed(
    json: &Record,
    variant: &str,
    env: &str,
    path: &str,
    requested: &str,
) -> Option<&'static str> {
    let env: Env = env.parse().ok()?;
    json.rows(variant, env)
        .find(|r| r.path.name() == path && r.requested.name() == requested)
        .map(|r| r.observed().map_or("skip", |m| m.name()))
}

/// Each requested mode and what it should become (`skip`: a declared skip).
pub type Modes = [(&'static str, &'static str); 6];

/// Asserts, in one comparison, what each requested mode of `path` became
/// in each (variant, env) of `want`.
pub fn assert_modes(json: &Record, path: &str, want: &[(&str, &str, &Modes)]) {
    let table = |observe: &dyn Fn(&str, &str, &str, &str) -> String| -> Vec<String> {
        let lines = want.iter().map(|(variant, env, modes)| {
            let cells = modes.iter().map(|(requested, expected)| {
                format!("{requested}→{}", observe(variant, env, requested, expected))
            });
            format!(
                "{env} {path} {variant}: {}",
                cells.collect::<Vec<_>>().join(" ")
            )
        });
        lines.collect()
    };
    let measured = table(&|variant, env, requested, _| {
        observed(json, variant, env, path, requested)
            .unwrap_or("absent")
            .to_string()
    });
    let expected = table(&|_, _, _, expected| expected.to_string());
    assert_eq!(measured, expected, "measured (left), expected (right)");
}

/// Owned command-line words.
pub fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

pub fn args_mention(args: &[String], word: &str) -> bool {
    args.iter().any(|a| a == word)
}

/// Runs the harness itself with `args`; returns its exit code and output.
pub fn harness(cache_root: &Path, args: &[String]) -> Result<(Option<i32>, String)> {
    let mut argv = vec!["--cache-dir".to_string(), cache_root.display().to_string()];
    argv.extend(args.iter().cloned());
    let output = duct::cmd(exe(), &argv)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// `verify --patch P…` with its JSON and outputs in `dir`: the exit code,
/// the output, and the JSON record (`Null` if it wrote none).
pub fn verify_with_patches(
    cache_root: &Path,
    dir: &Path,
    patches: &[&Path],
) -> Result<(Option<i32>, String, Option<Record>)> {
    let json_path = dir.join("verify.json");
    let mut args = strings(&[
        "verify",
        "--json",
        &json_path.display().to_string(),
        "--out",
        &dir.display().to_string(),
    ]);
    for patch in patches {
        args.extend(strings(&["--patch", &patch.display().to_string()]));
    }
    let (code, text) = harness(cache_root, &args)?;
    Ok((code, text, Record::read(&json_path).ok()))
}

/// `diff -u` of two versions of `file` (a path in the tree), as a patch
/// for `patch -p1`; `scratch` holds the two versions meanwhile.
pub fn unified_diff(file: &str, from: &str, to: &str, scratch: &Path) -> Result<String> {
    let (from_path, to_path) = (scratch.join("diff-from"), scratch.join("diff-to"));
    std::fs::write(&from_path, from)?;
    std::fs::write(&to_path, to)?;
    let labels = [format!("a/{file}"), format!("b/{file}")];
    let (_, diff) = Command::new("diff")
        .args(["-u", "--label", &labels[0], "--label", &labels[1]])
        .arg(&from_path)
        .arg(&to_path)
        .output_quiet()?;
    Ok(diff)
}

/// A patch that makes init/main.c fail to compile.
pub fn breaking_patch(tree: &Path, out: &Path) -> Result<String> {
    let file = "init/main.c";
    let original = std::fs::read_to_string(tree.join(file))?;
    let broken = format!("#error \"patverify: injected build failure\"\n{original}");
    unified_diff(file, &original, &broken, out)
}

/// A diff with its sides swapped: applied forward, it undoes the original.
pub fn reversed(diff: &str) -> String {
    let swap_hunk = |header: &str| {
        // "@@ -a,b +c,d @@ ctx" → "@@ -c,d +a,b @@ ctx"
        let mut parts = header.splitn(3, ' ');
        let (old, new, rest) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        format!(
            "@@ -{} +{} {rest}",
            new.trim_start_matches('+'),
            old.trim_start_matches('-')
        )
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

pub fn revert_patch(out: &Path) -> Result<std::path::PathBuf> {
    let fix = std::fs::read_to_string(xtask::stages::variant::default_patch())?;
    let diff = &fix[fix.find("--- a/").context("the fix has no diff")?..];
    let path = out.join("revert-fix.patch");
    std::fs::write(&path, reversed(diff))?;
    Ok(path)
}

/// Whether any process's command line contains `needle` (a /proc scan).
pub fn process_mentioning(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

/// A patch adding a comment to kernel/panic.c of `tree`: applies, builds,
/// and has nothing to do with the bug.
pub fn unrelated_patch(tree: &Path, dest: &Path) -> Result<std::path::PathBuf> {
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

/// The rows of verify's tables (path, mode and what each variant kept).
pub fn result_table(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            ["  ", "! ", "* "]
                .iter()
                .any(|marker| l.starts_with(marker))
                && ["kept", "LOST", "skip", "earlier", "moved"]
                    .iter()
                    .any(|word| l.contains(word))
                && !l.trim_start().starts_with("earlier:")
                && !l.trim_start().starts_with("moved:")
                && !l.trim_start().starts_with("kept bits:")
                && !l.contains("known defect outside")
        })
        .map(str::to_string)
        .collect()
}

/// A server the test starts (redis-server, distccd), in a process group of
/// its own that a signal to the harness ends too; killed when dropped.
pub struct Server {
    child: std::process::Child,
    _guard: xtask::support::proc::ChildGuard,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    pub fn start(program: &str, args: &[String], port: u16) -> Result<Server> {
        use std::os::unix::process::CommandExt;
        println!("$ {program} {}", args.join(" "));
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let server = Server {
            _guard: xtask::support::proc::ChildGuard::new(child.id()),
            child,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{program} did not listen on 127.0.0.1:{port} within 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signals the process group of a child we started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
