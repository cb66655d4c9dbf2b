//! End-to-end: two runs at once proceed side by side, a run waits for an
//! entry another is making; ten runs in a row agree.

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;
use xtask::support::proc::tail_lines;

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn runs_agree_and_wait_for_each_other() -> Result<()> {
    let (out, mut checks, _) = start("repeatability", false)?;
    let cache_root = cache_root();
    concurrent_runs_wait_for_each_other(&cache_root, &out, &mut checks)?;
    repeated_runs_agree(&cache_root, &out, &mut checks)?;
    checks.finish()
}

/// Two runs on one cache at once proceed side by side (each entry has its
/// own lock) and agree; a run that needs an entry another run is making
/// waits for it, then uses it.
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
            "--json".into(),
            out.join(format!("{name}.json")).display().to_string(),
        ];
        Ok(duct::cmd(exe(), &args)
            .stdin_null()
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .start()?)
    };
    let output = |handle: &duct::Handle| -> Result<(Option<i32>, String)> {
        let done = handle.wait()?;
        Ok((
            done.status.code(),
            String::from_utf8_lossy(&done.stdout).into_owned(),
        ))
    };
    let (first, second) = (run("concurrent-1")?, run("concurrent-2")?);
    let ((code1, text1), (code2, text2)) = (output(&first)?, output(&second)?);
    // Side by side: they may meet on an entry's lock for the moment it
    // takes to see that the entry is made, never for a whole run.
    let table = result_table(&text1);
    checks.check(
        "concurrent runs: both pass side by side with the same table",
        code1 == Some(0) && code2 == Some(0) && table == result_table(&text2),
        || format!("exit {code1:?} / {code2:?}: {}", tail_lines(&text2, 4)),
    );
    // Another run is "making" the baseline's kernel: this test holds that
    // entry's lock for a while, as a run building it would.
    let record = std::fs::read_to_string(out.join("concurrent-1.json"))?;
    let record = xtask::record::Record::parse(&record).map_err(anyhow::Error::msg)?;
    let build_dir = std::path::PathBuf::from(&record.builds[0].build_dir);
    let held = xtask::support::cache::lock_entry(&build_dir)?;
    let waiting = run("concurrent-3")?;
    std::thread::sleep(std::time::Duration::from_secs(8));
    drop(held);
    let (code, text) = output(&waiting)?;
    checks.check(
        "concurrent runs: a run needing a kernel another run is making waits for it, then reuses it",
        code == Some(0)
            && text.contains("waiting for another patverify run")
            && text.contains(&build_dir.display().to_string())
            && result_table(&text) == table,
        || tail_lines(&text, 6),
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
        // 2 environments × (8 paths × 6 modes + 8 PAT entries) rows, the
        // kept-bit rows some entry could show (9 native, 5 under Xen), and
        // /init's two pagemap rows in each environment.
        "ten runs: same verdict (exit 0) and same table each time",
        same && first.0 == Some(0) && first.1.len() == 130,
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
