//! `cargo xtask test`: the unit, property and tidy tests (seconds to a
//! minute), then the end-to-end scenarios in xtask/tests/e2e_*.rs, which
//! build and boot real kernels through the harness's own cache and check
//! what the booted kernels reported. It is the command CI runs.

use crate::flags::Test;
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::Result;
use std::path::Path;

impl Test {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        // The unit tests drive GNU patch and friends too: provision first, so
        // this one command works on a bare machine. Every feature: the test
        // runs --distcc and --cache-remote against its own servers.
        let all = crate::support::provision::Feature::ALL;
        crate::support::provision::ensure(cache_root, &all)?;
        let unit = ["--workspace", "--quiet"];
        cargo_test(cache_root, &unit, "unit, property and tidy tests")?;
        if self.unit {
            return Ok(());
        }
        // One scenario at a time: each boots kernels on every core. Its
        // named tests print as they end (a scenario takes minutes).
        let e2e = ["-p", "xtask", "--test", "e2e_*", "--no-fail-fast"];
        let run = ["--", "--ignored", "--test-threads=1", "--nocapture"];
        let args = [&e2e[..], &run[..]].concat();
        cargo_test(cache_root, &args, "end-to-end scenarios")
    }
}

/// `cargo test ARGS` in the repository, its output on the terminal, the
/// scenarios pointed at `cache_root`.
fn cargo_test(cache_root: &Path, args: &[&str], what: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(cargo)
        .arg("test")
        .args(args.iter().copied())
        .dir(crate::support::repo_dir());
    crate::output::result(&format!("==> {what}"));
    crate::support::proc::echo(&test);
    let status = duct::cmd(&test.program, &test.args)
        .dir(test.dir.as_deref().unwrap_or(Path::new(".")))
        .env("PATVERIFY_CACHE", cache_root)
        .stdin_null()
        .unchecked()
        .run()?
        .status;
    if !status.success() {
        return Err(fail(Kind::Build, format!("{what} failed")));
    }
    Ok(())
}
