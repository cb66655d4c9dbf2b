//! `cargo xtask matrix`: one verify per kernel source, with the same
//! candidate patches and environments, run here one after another (each
//! one's output in its own log) and folded into one table (`report merge`)
//! — or, with `--emit`, written as a CI matrix (GitHub Actions or GitLab CI)
//! whose jobs are those verifies.

use crate::flags::{Common, Emit, EnvChoice, Matrix, Verify};
use crate::pipeline::Outputs;
use crate::record::{KernelRecord, Record};
use crate::support::failure::{fail, Kind};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One job: a name for people and the kernel source it verifies.
#[derive(Debug, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    /// `--kernel` (none: Debian's linux-source-6.12).
    pub kernel: Option<PathBuf>,
    /// `--rev` of that tree.
    pub rev: Option<String>,
}

impl Job {
    /// The `verify` flags that select the job's source (for a CI file).
    fn source_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(kernel) = &self.kernel {
            args.extend(["--kernel".into(), kernel.display().to_string()]);
        }
        if let Some(rev) = &self.rev {
            args.extend(["--rev".into(), rev.clone()]);
        }
        args
    }
}

pub fn job(spec: &str) -> Job {
    let name = |s: &str| {
        let base = Path::new(s)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.to_string());
        base.trim_end_matches(".tar.xz").to_string()
    };
    if spec == "default" {
        return Job {
            name: "linux-source-6.12".into(),
            kernel: None,
            rev: None,
        };
    }
    // PATH@REV: a revision of a git tree (a path may itself contain '@').
    if let Some((path, rev)) = spec.rsplit_once('@') {
        if Path::new(path).is_dir() && !rev.is_empty() {
            return Job {
                name: format!("{}@{rev}", name(path)),
                kernel: Some(path.into()),
                rev: Some(rev.into()),
            };
        }
    }
    Job {
        name: name(spec),
        kernel: Some(spec.into()),
        rev: None,
    }
}

impl Matrix {
    fn verify_args(&self, job: &Job) -> Vec<String> {
        let mut args = job.source_args();
        let env = match self.env {
            EnvChoice::Native => "native",
            EnvChoice::Xen => "xen",
            EnvChoice::All => "all",
        };
        args.extend(["--env".into(), env.into()]);
        for patch in &self.patches {
            args.extend(["--patch".into(), patch.display().to_string()]);
        }
        args
    }

    /// The job's `verify`: every flag at its default but the source, the
    /// environments, the patches and where its record and logs go.
    fn verify_of(&self, job: &Job, dir: &Path) -> Verify {
        let mut common = Common::defaults();
        common.kernel = job.kernel.clone();
        common.rev = job.rev.clone();
        common.env = self.env;
        common.out = Some(dir.to_path_buf());
        Verify {
            common,
            patches: self.patches.clone(),
        }
    }

    pub fn run(self, cache_root: &Path) -> Result<()> {
        let jobs: Vec<Job> = self.sources.iter().map(|s| job(s)).collect();
        if let Some(system) = self.emit {
            let named: Vec<(String, Vec<String>)> = jobs
                .iter()
                .map(|j| (j.name.clone(), self.verify_args(j)))
                .collect();
            crate::output::result(emit(system, &named).trim_end_matches('\n'));
            return Ok(());
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let mut records = Vec::new();
        let mut ends = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            crate::output::progress(&format!(
                "==> matrix job {}/{}: {}",
                index + 1,
                jobs.len(),
                job.name
            ));
            let started = Instant::now();
            let (code, json, record) = self.run_job(cache_root, index, job)?;
            let end = Ended {
                job: job.name.clone(),
                code,
                why: record.message.lines().next().unwrap_or("").to_string(),
            };
            crate::output::result(&format!(
                "[{}/{}] {:<32} exit {code:<3} {:>6.0} s  {}",
                index + 1,
                jobs.len(),
                job.name,
                started.elapsed().as_secs_f64(),
                end.describe()
            ));
            ends.push(end);
            records.push((json, record));
        }
        if let Some(path) = &self.kcidb {
            let runs: Vec<(String, &Record)> = records
                .iter()
                .map(|(json, record)| {
                    let stem = json.file_stem().unwrap_or_default().to_string_lossy();
                    (format!("matrix-{}-{stem}", std::process::id()), record)
                })
                .collect();
            std::fs::write(path, crate::kcidb::documents(&runs))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let table = crate::runs::merge(&records);
        std::fs::write(self.out.join("merged.txt"), &table)?;
        crate::output::result(&format!("\n{table}"));
        verdict(&ends)
    }

    /// One job: `verify` called in this process, its whole output captured
    /// in the job's log; returns its exit code, the path of its record, and
    /// the record.
    fn run_job(
        &self,
        cache_root: &Path,
        index: usize,
        job: &Job,
    ) -> Result<(i32, PathBuf, Record)> {
        let slug: String = job
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let stem = format!("{:02}-{slug}", index + 1);
        let dir = self.out.join(&stem);
        let json = self.out.join(format!("{stem}.json"));
        let verify = self.verify_of(job, &dir);
        let log = self.out.join(format!("{stem}.log"));
        std::fs::create_dir_all(&dir)?;
        let mut outcome = {
            let _capture = crate::output::Capture::to(&log)?;
            verify.outcome(cache_root)
        };
        let code = outcome.code;
        if outcome.record.kernel.is_none() {
            // A run that failed before it knew its kernel still gets a row
            // in the table, under the job's name.
            outcome.record.kernel = Some(KernelRecord {
                source: job.name.clone(),
                tree: String::new(),
                version: String::new(),
                git_rev: None,
            });
        }
        // The job's record is the matrix's to write: the job chose no outputs.
        let outputs = Outputs {
            json: Some(&json),
            ..Outputs::default()
        };
        outcome.write(&outputs)?;
        Ok((code, json, outcome.record))
    }
}

/// How one job ended, for the matrix's own verdict.
#[derive(Debug, PartialEq, Eq)]
enum JobEnd {
    Pass,
    /// A candidate lost a mode: the matrix fails with exit 1.
    Lost,
    /// The kernel cannot take the module by design (exit 9): a row that
    /// says so, not a failure of the matrix.
    Untestable,
    /// Setup, build, boot or anything else stopped it before a verdict.
    NeverRan,
}

impl JobEnd {
    fn of(code: i32) -> JobEnd {
        match Kind::from_exit_code(code) {
            _ if code == 0 => JobEnd::Pass,
            Some(Kind::CandidateLost) => JobEnd::Lost,
            Some(Kind::Toolchain) => JobEnd::Untestable,
            _ => JobEnd::NeverRan,
        }
    }
}

/// A job's exit code and the first line of what it said.
struct Ended {
    job: String,
    code: i32,
    why: String,
}

impl Ended {
    fn describe(&self) -> String {
        match JobEnd::of(self.code) {
            JobEnd::Pass => "pass".to_string(),
            JobEnd::Lost => "a candidate loses modes".to_string(),
            JobEnd::Untestable => format!("untestable: {}", self.why),
            JobEnd::NeverRan => format!("FAILED, never tested: {}", self.why),
        }
    }
}

/// The matrix's verdict: a job that never reached its own verdict leaves
/// the matrix incomplete, which must read neither as green nor as a mere
/// loss (its code wins); then exit 1 when a candidate lost a mode.
fn verdict(ends: &[Ended]) -> Result<()> {
    let never_ran: Vec<&Ended> = ends
        .iter()
        .filter(|e| JobEnd::of(e.code) == JobEnd::NeverRan)
        .collect();
    let any_lost = ends.iter().any(|e| JobEnd::of(e.code) == JobEnd::Lost);
    if let Some(first) = never_ran.first() {
        let named: Vec<String> = never_ran
            .iter()
            .map(|e| format!("{} (exit {}: {})", e.job, e.code, e.why))
            .collect();
        let also = if any_lost {
            " (and a candidate loses cache modes on another kernel)"
        } else {
            ""
        };
        return Err(fail(
            Kind::from_exit_code(first.code).unwrap_or(Kind::Setup),
            format!(
                "{} of {} matrix jobs never tested their kernel: {}{also}",
                never_ran.len(),
                ends.len(),
                named.join("; ")
            ),
        ));
    }
    if any_lost {
        return Err(fail(
            Kind::CandidateLost,
            "a candidate loses cache modes on at least one kernel (see the table)",
        ));
    }
    Ok(())
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| crate::support::proc::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CI file: a job per source running `cargo xtask verify --json`, and a
/// final job merging their records.
pub fn emit(system: Emit, jobs: &[(String, Vec<String>)]) -> String {
    match system {
        Emit::Github => github_workflow(jobs),
        Emit::Gitlab => gitlab_pipeline(jobs),
    }
}

fn github_workflow(jobs: &[(String, Vec<String>)]) -> String {
    let mut include = String::new();
    for (name, args) in jobs {
        include += &format!(
            "          - name: \"{name}\"\n            args: \"{}\"\n",
            shell_words(args).replace('"', "\\\"")
        );
    }
    format!(
        r#"# Generated by `cargo xtask matrix --emit github`: one patverify verify per
# kernel source, then one merged table. Needs a Debian 12 machine that can
# run QEMU (TCG is fine); each job is one `cargo xtask verify --json`.
name: patverify matrix
on: [workflow_dispatch, push]
jobs:
  verify:
    runs-on: ubuntu-latest
    container: debian:12
    strategy:
      fail-fast: false
      matrix:
        include:
{include}    steps:
      - run: apt-get update && apt-get install -y --no-install-recommends ca-certificates git cargo
      - uses: actions/checkout@v4
      - run: cargo xtask setup
      - run: cargo xtask verify --json "result-${{{{ strategy.job-index }}}}.json" ${{{{ matrix.args }}}}
      - if: always()
        uses: actions/upload-artifact@v4
        with:
          name: result-${{{{ strategy.job-index }}}}
          path: result-*.json
  merge:
    needs: verify
    if: always()
    runs-on: ubuntu-latest
    container: debian:12
    steps:
      - run: apt-get update && apt-get install -y --no-install-recommends ca-certificates git cargo
      - uses: actions/checkout@v4
      - uses: actions/download-artifact@v4
        with:
          path: results
      - run: cargo xtask report merge results/*/*.json
"#
    )
}

fn gitlab_pipeline(jobs: &[(String, Vec<String>)]) -> String {
    let mut matrix = String::new();
    for (name, args) in jobs {
        matrix += &format!(
            "      - NAME: \"{name}\"\n        ARGS: \"{}\"\n",
            shell_words(args).replace('"', "\\\"")
        );
    }
    format!(
        r#"# Generated by `cargo xtask matrix --emit gitlab`: one patverify verify per
# kernel source, then one merged table. Each job is one
# `cargo xtask verify --json`.
image: debian:12
stages: [verify, merge]
verify:
  stage: verify
  parallel:
    matrix:
{matrix}  before_script:
    - apt-get update && apt-get install -y --no-install-recommends ca-certificates git cargo
    - cargo xtask setup
  script:
    - cargo xtask verify --json "result-$CI_NODE_INDEX.json" $ARGS
  artifacts:
    when: always
    paths: [result-*.json]
merge:
  stage: merge
  when: always
  before_script:
    - apt-get update && apt-get install -y --no-install-recommends ca-certificates git cargo
  script:
    - cargo xtask report merge result-*.json
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_become_verify_flags() {
        assert_eq!(
            job("default"),
            Job {
                name: "linux-source-6.12".into(),
                kernel: None,
                rev: None,
            }
        );
        assert_eq!(
            job("/usr/src/linux-source-6.1.tar.xz").source_args(),
            ["--kernel", "/usr/src/linux-source-6.1.tar.xz"]
        );
        assert_eq!(
            job("/usr/src/linux-source-6.1.tar.xz").name,
            "linux-source-6.1"
        );
        let rev = job("/tmp@v6.3");
        assert_eq!(
            (rev.name.as_str(), rev.source_args()),
            (
                "tmp@v6.3",
                vec![
                    "--kernel".to_string(),
                    "/tmp".into(),
                    "--rev".into(),
                    "v6.3".into()
                ]
            )
        );
    }

    #[test]
    fn only_a_verdict_or_a_kernel_untestable_by_design_ends_a_job_cleanly() {
        assert_eq!(JobEnd::of(0), JobEnd::Pass);
        assert_eq!(JobEnd::of(1), JobEnd::Lost);
        assert_eq!(JobEnd::of(9), JobEnd::Untestable);
        for never in [2, 3, 4, 5, 6, 7, 10, 125, -1] {
            assert_eq!(JobEnd::of(never), JobEnd::NeverRan, "exit {never}");
        }
    }

    #[test]
    fn a_matrix_with_a_job_that_never_ran_is_not_green() {
        let end = |job: &str, code: i32| Ended {
            job: job.into(),
            code,
            why: format!("said {code}"),
        };
        let code = |ends: &[Ended]| {
            verdict(ends)
                .err()
                .map_or(0, |e| crate::support::failure::exit_code_of(&e))
        };
        assert_eq!(code(&[end("a", 0), end("b", 0)]), 0);
        assert_eq!(code(&[end("a", 0), end("b", 9)]), 0, "untestable by design");
        assert_eq!(code(&[end("a", 1), end("b", 0)]), 1);
        assert_eq!(code(&[end("a", 0), end("linux-source-6.1", 2)]), 2);
        assert_eq!(code(&[end("a", 1), end("b", 7), end("c", 6)]), 7);
        let err = verdict(&[end("a", 0), end("linux-source-6.1", 2)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 of 2 matrix jobs never tested their kernel: linux-source-6.1 (exit 2: said 2)"
        );
    }

    #[test]
    fn emitted_ci_files_run_one_verify_per_source() {
        let jobs = vec![
            (
                "linux-source-6.12".to_string(),
                vec!["--env".to_string(), "all".into()],
            ),
            (
                "linux-source-6.1".to_string(),
                vec!["--kernel".into(), "/usr/src/linux-source-6.1.tar.xz".into()],
            ),
        ];
        let github = emit(Emit::Github, &jobs);
        assert!(github.contains("          - name: \"linux-source-6.1\"\n            args: \"--kernel /usr/src/linux-source-6.1.tar.xz\""), "{github}");
        assert!(github.contains("cargo xtask verify --json \"result-${{ strategy.job-index }}.json\" ${{ matrix.args }}"), "{github}");
        assert!(
            github.contains("cargo xtask report merge results/*/*.json"),
            "{github}"
        );
        let gitlab = emit(Emit::Gitlab, &jobs);
        assert!(
            gitlab.contains("      - NAME: \"linux-source-6.12\"\n        ARGS: \"--env all\""),
            "{gitlab}"
        );
        assert!(
            gitlab.contains("cargo xtask report merge result-*.json"),
            "{gitlab}"
        );
    }
}
