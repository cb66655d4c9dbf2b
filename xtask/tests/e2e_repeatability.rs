//! End-to-end: two runs at once proceed side by side, a run waits for an
//! entry another is making; ten runs in a row agree. Each scenario runs
//! once; each check is its own test on what its runs left.

mod common;

use anyhow::Result;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xtask::record::{Record, Verdict};
use xtask::support::proc::tail_lines;

/// One verify: its exit code, what it printed, its record.
struct Run {
    code: Option<i32>,
    text: String,
    record: Record,
}

impl Run {
    /// What it judged: the verdict and each row's judgment (not the
    /// entries' frame numbers, which may differ from boot to boot).
    fn outcome(&self) -> (Verdict, Vec<String>) {
        let r = &self.record;
        let rows = r.results.iter().map(|x| {
            let row = &x.result;
            format!(
                "{} {} {} {}",
                x.variant,
                x.env,
                row.label(),
                row.judgment().name()
            )
        });
        let bits = r.bits.iter().map(|b| {
            let row = &b.row;
            format!(
                "{} {} {} {}",
                b.variant,
                b.env,
                row.label(),
                row.judgment_name()
            )
        });
        (r.verdict, rows.chain(bits).collect())
    }

    fn tail(&self, lines: usize) -> String {
        format!("exit {:?}: {}", self.code, tail_lines(&self.text, lines))
    }
}

/// `verify --env native` on the shared cache, started (not waited for).
fn start_verify(out: &Path, name: &str) -> Result<(duct::Handle, PathBuf)> {
    let json = out.join(format!("{name}.json"));
    let args = strings(&[
        "--cache-dir",
        &cache_root().display().to_string(),
        "verify",
        "--env",
        "native",
        "--out",
        &out.join(name).display().to_string(),
        "--json",
        &json.display().to_string(),
    ]);
    let handle = duct::cmd(exe(), &args)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .start()?;
    Ok((handle, json))
}

fn finish(started: (duct::Handle, PathBuf)) -> Result<Run> {
    let done = started.0.wait()?;
    Ok(Run {
        code: done.status.code(),
        text: String::from_utf8_lossy(&done.stdout).into_owned(),
        record: Record::read(&started.1).unwrap_or_default(),
    })
}

/// Two runs at once, then a run that needs the kernel "another run is
/// making" (this test holds that entry's lock for 8 s, as a run building
/// it would); and the build directory it waited for.
struct Concurrent {
    first: Run,
    second: Run,
    waiting: Run,
    held: PathBuf,
}

fn concurrent() -> &'static Concurrent {
    static RAN: OnceLock<Concurrent> = OnceLock::new();
    RAN.get_or_init(|| run_concurrent().expect("the concurrent runs"))
}

fn run_concurrent() -> Result<Concurrent> {
    println!("==> e2e: two runs on the same cache at once");
    let out = scenario_dir("repeatability-concurrent")?;
    let (a, b) = (
        start_verify(&out, "concurrent-1")?,
        start_verify(&out, "concurrent-2")?,
    );
    let (first, second) = (finish(a)?, finish(b)?);
    let build = first.record.builds.first();
    let held = PathBuf::from(build.map(|b| b.build_dir.as_str()).unwrap_or_default());
    let lock = xtask::support::cache::lock_entry(&held)?;
    let waiting = start_verify(&out, "concurrent-3")?;
    std::thread::sleep(std::time::Duration::from_secs(8));
    drop(lock);
    let waiting = finish(waiting)?;
    Ok(Concurrent {
        first,
        second,
        waiting,
        held,
    })
}

/// The same default verify ten times in a row.
fn repeated() -> &'static Vec<Run> {
    static RAN: OnceLock<Vec<Run>> = OnceLock::new();
    RAN.get_or_init(|| {
        println!("==> e2e: the same verify ten times");
        let out = scenario_dir("repeatability-ten").expect("a scenario directory");
        let run = |i: usize| -> Result<Run> {
            let json = out.join(format!("repeat-{i}.json"));
            let dir = out.join(format!("repeat-{i}")).display().to_string();
            let args = strings(&[
                "verify",
                "--out",
                &dir,
                "--json",
                &json.display().to_string(),
            ]);
            let (code, text) = harness(&cache_root(), &args)?;
            let record = Record::read(&json).unwrap_or_default();
            Ok(Run { code, text, record })
        };
        (0..10)
            .map(run)
            .collect::<Result<_>>()
            .expect("ten verify runs")
    })
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn two_runs_at_once_both_pass_with_the_same_rows() {
    // Side by side: they may meet on an entry's lock for the moment it
    // takes to see that the entry is made, never for a whole run.
    let c = concurrent();
    assert_eq!(c.first.code, Some(0), "{}", c.first.tail(4));
    assert_eq!(c.second.code, Some(0), "{}", c.second.tail(4));
    assert_eq!(c.first.outcome(), c.second.outcome());
    assert_eq!(result_table(&c.first.text), result_table(&c.second.text));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_run_needing_a_kernel_another_run_is_making_waits_then_reuses_it() {
    let c = concurrent();
    let w = &c.waiting;
    assert_eq!(w.code, Some(0), "{}", w.tail(6));
    assert!(
        w.text.contains("waiting for another patverify run"),
        "{}",
        w.tail(6)
    );
    assert!(
        w.text.contains(&c.held.display().to_string()),
        "{}",
        w.tail(6)
    );
    assert!(
        w.record.builds.iter().all(|b| b.reused),
        "{:?}",
        w.record.builds
    );
    assert_eq!(w.outcome(), c.first.outcome());
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn ten_runs_give_the_same_verdict_and_rows_each_time() {
    let runs = repeated();
    let first = &runs[0];
    assert_eq!(first.code, Some(0), "{}", first.tail(4));
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.code, first.code, "run {i}: {}", run.tail(4));
        assert_eq!(run.outcome(), first.outcome(), "run {i}");
        assert_eq!(
            result_table(&run.text),
            result_table(&first.text),
            "run {i}"
        );
    }
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn a_run_shows_every_row_it_declares() {
    // 2 environments × (11 paths × 6 modes + 8 PAT entries) rows, the
    // kept-bit rows some entry could show (14 native, 10 under Xen), and
    // /init's two pagemap rows in each environment.
    let first = &repeated()[0];
    assert_eq!(result_table(&first.text).len(), 176, "{}", first.tail(4));
    assert_eq!(first.record.verdict, Verdict::Pass);
}
