//! End-to-end: two runs at once wait for each other; ten runs in a row agree.

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn runs_agree_and_wait_for_each_other() -> Result<()> {
    let (out, mut checks, _) = start("repeatability", false)?;
    let cache_root = cache_root();
    concurrent_runs_wait_for_each_other(&cache_root, &out, &mut checks)?;
    repeated_runs_agree(&cache_root, &out, &mut checks)?;
    checks.finish()
}

/// Two runs on one cache: the second waits for the first's lock, then both
/// finish with the same table.
fn concurrent_runs_wait_for_each_other(
    cache_root: &Path,
    out: &Path,
    checks: &mut Checks,
) -> Result<()> {
    println!("==> e2e: two runs on the same cache at once");
    let run = |name: &str| -> Result<duct::Handle> {
        let args: Vec<String> = vec![
            "--cache-dir".into(),
            cache_root.display().to_string(),
            "verify".into(),
            "--env".into(),
            "native".into(),
            "--out".into(),
            out.join(name).display().to_string(),
        ];
        Ok(duct::cmd(exe(), &args)
            .stdin_null()
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .start()?)
    };
    let first = run("concurrent-1")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = run("concurrent-2")?;
    let (first, second) = (first.wait()?.clone(), second.wait()?.clone());
    let (text1, text2) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&second.stdout).into_owned(),
    );
    let waited = text1.contains("waiting for another patverify run")
        || text2.contains("waiting for another patverify run");
    checks.check(
        "concurrent runs: one waited for the other's lock",
        waited,
        || xtask::support::proc::tail_lines(&text2, 3),
    );
    checks.check(
        "concurrent runs: both pass with the same table",
        first.status.code() == Some(0)
            && second.status.code() == Some(0)
            && result_table(&text1) == result_table(&text2),
        || {
            format!(
                "exit {:?} / {:?}",
                first.status.code(),
                second.status.code()
            )
        },
    );
    Ok(())
}

/// The same verify ten times in a row: the same verdict and the same table.
fn repeated_runs_agree(cache_root: &Path, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: the same verify ten times");
    let mut outcomes: Vec<(Option<i32>, Vec<String>)> = Vec::new();
    for i in 0..10 {
        let args: Vec<String> = vec![
            "verify".into(),
            "--out".into(),
            out.join(format!("repeat-{i}")).display().to_string(),
        ];
        let (code, text) = harness(cache_root, &args)?;
        outcomes.push((code, result_table(&text)));
    }
    let first = &outcomes[0];
    let same = outcomes.iter().all(|o| o == first);
    checks.check(
        "ten runs: same verdict (exit 0) and same table each time",
        same && first.0 == Some(0) && first.1.len() == 84,
        || {
            format!(
                "exit codes {:?}, table sizes {:?}",
                outcomes.iter().map(|o| o.0).collect::<Vec<_>>(),
                outcomes.iter().map(|o| o.1.len()).collect::<Vec<_>>()
            )
        },
    );
    Ok(())
}
