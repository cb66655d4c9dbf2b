//! `cargo xtask bisect`: `git bisect run` of `probe` in a clone of the
//! user's repository (the user's checkout and refs are never touched), one
//! line per step, ending with the first bad commit.

use crate::flags::Bisect;
use crate::stages::source::resolve_rev;
use crate::support::cache::{lock_entry, EntryLock, Key};
use crate::support::failure::BISECT_GOOD as GOOD;
use crate::support::failure::{fail, Kind, BISECT_SKIP};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The "<sha> is the first bad commit" line of `git bisect run`'s output.
pub fn first_bad_commit(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.strip_suffix(" is the first bad commit")
            .map(|sha| sha.trim().to_string())
    })
}

impl Bisect {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let repo = self.kernel.canonicalize().map_err(|_| {
            fail(
                Kind::Setup,
                format!("{} does not exist", self.kernel.display()),
            )
        })?;
        let good = resolve_rev(&repo, &self.good)?;
        let bad = resolve_rev(&repo, &self.bad)?;
        let work = clone_for_bisect(cache_root, &repo)?;
        let clone = work.path.clone();
        let git = |args: &[&str]| git_in(&clone, args);
        git(&["bisect", "start", &bad, &good]).run()?;
        let out_dir = self
            .out
            .clone()
            .unwrap_or_else(|| clone.with_extension("logs"));
        std::fs::create_dir_all(&out_dir)?;
        let log_path = out_dir.join("bisect.log");
        let run = git(&["bisect", "run"]).args(self.probe_command(cache_root, &clone)?);
        crate::output::result(&format!(
            "bisecting {} between good {good:.12} and bad {bad:.12} (log: {})",
            repo.display(),
            log_path.display()
        ));
        let all = run_steps(&run, &log_path)?;
        let bisect_log = git(&["bisect", "log"]).output_quiet()?.1;
        std::fs::write(out_dir.join("git-bisect.log"), &bisect_log)?;
        let result = match first_bad_commit(&all) {
            Some(sha) => {
                crate::output::result(&format!("\nfirst bad commit: {sha}"));
                let show = git(&["show", "--stat", "--format=medium", &sha]);
                crate::output::result(&show.output_quiet()?.1);
                if !self.no_confirm {
                    let _ = git(&["bisect", "reset", "--quiet"]).output_quiet();
                    let confirmed = self.confirm(cache_root, &clone, &sha, &out_dir)?;
                    crate::output::result(&confirmed.to_string());
                }
                crate::output::result(&format!("steps: {}", log_path.display()));
                Ok(())
            }
            None => {
                let tail = crate::support::proc::tail_lines(&all, 8);
                Err(fail(
                    Kind::Setup,
                    format!(
                        "the bisect found no single first bad commit (log: {}):\n{tail}",
                        log_path.display()
                    ),
                ))
            }
        };
        let _ = git(&["bisect", "reset", "--quiet"]).output_quiet();
        result
    }

    /// KernelCI's check of a culprit: the culprit with itself reverted must
    /// keep every mode again ("revert: PASS"), and so must its parent
    /// ("verify: PASS"). A culprit that does not revert cleanly, or a check
    /// that cannot be tested, leaves it unconfirmed — not an error.
    fn confirm(&self, cache_root: &Path, clone: &Path, sha: &str, out: &Path) -> Result<String> {
        let git = |args: &[&str]| git_in(clone, args);
        let (_, revert) = git(&["diff", sha, &format!("{sha}^")]).output_quiet()?;
        let revert_path = out.join("revert-culprit.patch");
        std::fs::write(&revert_path, revert)?;
        let log = out.join("confirm.log");
        let probe = |extra: &[&str]| -> Result<Option<i32>> {
            let mut args = self.probe_command(cache_root, clone)?;
            args.extend(extra.iter().map(|a| a.to_string()));
            let (program, rest) = args.split_first().context("a probe command")?;
            let cmd = Command::new(program).args(rest.iter().map(String::as_str));
            crate::support::proc::echo(&cmd);
            let reader = cmd.expression().stderr_to_stdout().unchecked().reader()?;
            let _guards = crate::support::proc::guard_children(&reader);
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &reader, &mut text)?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?
                .write_all(text.as_bytes())?;
            Ok(reader.try_wait()?.and_then(|o| o.status.code()))
        };
        let revert_arg = revert_path.display().to_string();
        crate::output::result(&format!(
            "confirming {sha:.12}: the culprit reverted, then its parent (log: {})",
            log.display()
        ));
        let reverted = probe(&["--rev", sha, "--patch", &revert_arg])?;
        let parent = probe(&["--rev", &format!("{sha}^")])?;
        Ok(match (reverted, parent) {
            (Some(GOOD), Some(GOOD)) => "confirmed: with the culprit reverted every mode is kept (revert: PASS), and in its parent too (verify: PASS)".to_string(),
            (Some(BISECT_SKIP), _) => "unconfirmed: the culprit does not revert cleanly (or the reverted tree cannot be tested)".to_string(),
            (reverted, parent) => format!(
                "unconfirmed: the reverted culprit gave {}, its parent {} (0 = every mode kept)",
                code_name(reverted),
                code_name(parent)
            ),
        })
    }

    /// The `probe` command line each bisect step runs in `clone`.
    fn probe_command(&self, cache_root: &Path, clone: &Path) -> Result<Vec<String>> {
        let me = std::env::current_exe()?;
        let mut probe: Vec<String> = vec![
            me.display().to_string(),
            "--cache-dir".into(),
            cache_root.display().to_string(),
            "probe".into(),
            "--kernel".into(),
            clone.display().to_string(),
            "--env".into(),
            format!("{:?}", self.env).to_lowercase(),
            "--timeout".into(),
            self.timeout.to_string(),
        ];
        for p in &self.patch {
            let path = p
                .canonicalize()
                .with_context(|| format!("patch {} not found", p.display()))?;
            probe.extend(["--patch".into(), path.display().to_string()]);
        }
        Ok(probe)
    }
}

/// The bisect's clone of the user's repository, removed when the bisect
/// ends: its kernels stay in the cache (keyed by content) and its logs
/// beside it, and a work tree per bisected repository (1.7 GB) would pile
/// up under the cache.
struct BisectClone {
    path: PathBuf,
    _lock: EntryLock,
}

impl Drop for BisectClone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh clone of `repo` under the cache, so the user's checkout and refs
/// are never touched. `--shared` borrows the user's objects read-only;
/// `--no-checkout` leaves the work tree to `git bisect start`.
fn clone_for_bisect(cache_root: &Path, repo: &Path) -> Result<BisectClone> {
    let key = Key::new("bisect")
        .add(repo.as_os_str().as_encoded_bytes())
        .hex();
    let clone = cache_root.join("bisect").join(key);
    // A second bisect of the same tree waits: the clone is this one's.
    let lock = lock_entry(&clone)?;
    if clone.exists() {
        std::fs::remove_dir_all(&clone)
            .with_context(|| format!("cannot remove old clone {}", clone.display()))?;
    }
    std::fs::create_dir_all(clone.parent().context("clone has a parent")?)?;
    Command::new("git")
        .args(["clone", "--quiet", "--shared", "--no-checkout"])
        .arg(repo)
        .arg(&clone)
        .run()?;
    Ok(BisectClone {
        path: clone,
        _lock: lock,
    })
}

/// `git -C clone ARGS`: the bisect's own clone, never the user's tree.
fn git_in(clone: &Path, args: &[&str]) -> Command {
    Command::new("git")
        .arg("-C")
        .arg(clone)
        .args(args.iter().copied())
}

fn code_name(code: Option<i32>) -> String {
    code.map_or("no exit code (killed)".to_string(), |c| format!("exit {c}"))
}

/// Runs `git bisect run`, its output into `log_path`, one terminal line per
/// step (probe's own summary); returns the whole output.
fn run_steps(run: &Command, log_path: &Path) -> Result<String> {
    crate::support::proc::echo(run);
    let mut log = std::fs::File::create(log_path)?;
    let reader = run.expression().stderr_to_stdout().unchecked().reader()?;
    let _guards = crate::support::proc::guard_children(&reader);
    let mut all = String::new();
    for line in BufReader::new(&reader).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        if line.starts_with("probe: ") && line.contains("(exit ") {
            crate::output::result(&format!("  {}", line.trim_start_matches("probe: ")));
        }
        all.push_str(&line);
        all.push('\n');
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_bad_commit_line() {
        let out = "running probe\n0123abcd is the first bad commit\ncommit 0123abcd\n";
        assert_eq!(first_bad_commit(out).as_deref(), Some("0123abcd"));
        assert_eq!(
            first_bad_commit("There are only 'skip'ped commits left to test.\n"),
            None
        );
    }
}
