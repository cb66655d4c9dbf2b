//! Every flag of every command, in one place. The commands implement `run`
//! on these types in their own modules (the `commands` folder); a flag's value
//! reaches the stages through the `pipeline` (verify, probe, mutants) or the
//! command's own code.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Kernel to test: a tree (a directory or git work tree; never modified)
    /// or a source package tarball (/usr/src/linux-source-X.tar.xz).
    /// Default: Debian's linux-source-6.12 tarball, unpacked into the cache.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Git revision of --kernel to build (exported with `git archive`).
    #[arg(long, value_name = "REV", requires = "kernel")]
    pub rev: Option<String>,
    /// Environments to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub env: EnvChoice,
    /// Seconds each boot may take before it counts as hung.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Write the machine-readable verdict and results here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the results as JUnit XML here (for CI systems).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the run as a KCIDB v5 document here (KernelCI's common database).
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// Keep this run's JSON, console logs and KTAP here (default: under the cache).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Parallel make jobs (default: cores + 1; with --distcc, the hosts' slots).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Share compiled objects through ccache's remote storage
    /// (redis://HOST:PORT, http://HOST/PATH): every machine pointed at it
    /// reuses what any of them compiled.
    #[arg(long, env = "PATVERIFY_CACHE_REMOTE", value_name = "URL")]
    pub cache_remote: Option<String>,
    /// Hand compile jobs to distccd workers (DISTCC_HOSTS syntax, e.g.
    /// "10.0.0.5/8 10.0.0.6/8"); make's -j is sized for their slots.
    #[arg(long, env = "PATVERIFY_DISTCC", value_name = "HOSTS")]
    pub distcc: Option<String>,
    /// Use KVM instead of TCG (guests die with emulation failures on some hosts).
    #[arg(long)]
    pub kvm: bool,
    /// How many boots run at once (default: one per core; at most 64).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=crate::support::proc::MAX_PARALLEL_BOOTS as i64))]
    pub parallel_boots: Option<u16>,
    /// Build where the sandbox cannot run (a container that may not make
    /// namespaces): code from the tree and its patches then runs as this
    /// user, with the network. Without it such a machine is refused.
    #[arg(long, env = "PATVERIFY_UNCONFINED")]
    pub unconfined: bool,
    /// Also build the kernel's own selftests of this suite from the tree
    /// (tools/testing/selftests/mm: mkdirty, pagemap_ioctl, soft-dirty,
    /// uffd-unit-tests) and run them in the same boots, after the report:
    /// rows `kselftest.mm.NAME`.
    #[arg(long, value_enum, value_name = "SUITE")]
    pub kselftest: Option<crate::model::kselftest::Suite>,
    /// Extra config fragment merged after configs/*.config (repeatable).
    #[arg(long = "config", value_name = "FILE")]
    pub extra_configs: Vec<PathBuf>,
    /// QEMU program to boot with.
    #[arg(long, value_name = "PROGRAM", default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Extra kernel command line for every boot (failure-injection tests).
    #[arg(long, hide = true, default_value = "")]
    pub extra_cmdline: String,
    /// Boot this file as Xen's dom0 instead of the built kernel (tests: a
    /// kernel Xen refuses).
    #[arg(long, hide = true, value_name = "FILE")]
    pub dom0_kernel: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvChoice {
    Native,
    Xen,
    All,
}

impl EnvChoice {
    pub fn envs(self) -> Vec<crate::model::Env> {
        use crate::model::Env;
        match self {
            EnvChoice::Native => vec![Env::Native],
            EnvChoice::Xen => vec![Env::Xen],
            EnvChoice::All => vec![Env::Native, Env::Xen],
        }
    }
}

impl Common {
    /// Every flag at its default, as an empty command line gives them.
    pub fn defaults() -> Common {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            common: Common,
        }
        Only::parse_from(["cargo xtask"]).common
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Verify {
    #[command(flatten)]
    pub common: Common,
    /// Candidate patch (repeatable: one kernel per candidate, side by side).
    /// Default: patches/0001-…-modify-mask.patch (the upstream fix).
    #[arg(long = "patch", value_name = "FILE")]
    pub patches: Vec<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Probe {
    #[command(flatten)]
    pub common: Common,
    /// Patch applied on top of the tree (repeatable, applied in order).
    #[arg(long, value_name = "FILE")]
    pub patch: Vec<PathBuf>,
    /// What counts as good: every mode kept (default), or a mode lost (to
    /// hunt the commit that fixed the bug).
    #[arg(long, value_enum, default_value = "kept")]
    pub expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    Kept,
    Lost,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Bisect {
    /// The kernel git repository to bisect (only read).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// A revision known to keep every cache mode.
    #[arg(long, value_name = "REV")]
    pub good: String,
    /// A revision known to lose a mode.
    #[arg(long, value_name = "REV")]
    pub bad: String,
    /// Environments each step boots.
    #[arg(long, value_enum, default_value = "native")]
    pub env: EnvChoice,
    /// Seconds each boot may take.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Patch applied on top of every step (repeatable).
    #[arg(long, value_name = "FILE")]
    pub patch: Vec<PathBuf>,
    /// Keep the steps' log here (default: the clone's directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not confirm the culprit (by testing it reverted, and its parent).
    #[arg(long)]
    pub no_confirm: bool,
}

#[derive(clap::Args, Debug)]
pub struct Matrix {
    /// A kernel source (repeatable): `default` (Debian's linux-source-6.12),
    /// a source tarball (/usr/src/linux-source-X.tar.xz), a tree, or a git
    /// tree at a revision (`PATH@REV`).
    #[arg(long = "source", value_name = "SPEC", required = true)]
    pub sources: Vec<String>,
    /// Candidate patch for every source (repeatable; default: the upstream fix).
    #[arg(long = "patch", value_name = "FILE")]
    pub patches: Vec<PathBuf>,
    /// Environments to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub env: EnvChoice,
    /// Where each job's JSON and logs go.
    #[arg(long, value_name = "DIR", default_value = "matrix-results")]
    pub out: PathBuf,
    /// Do not run: print the jobs as a CI matrix for this system.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Also write every job as one KCIDB v5 document here.
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct Mutants {
    /// Only list the mutants read from the tree's pgtable_types.h (one per
    /// bit term of _COMMON_PAGE_CHG_MASK, _PAGE_CHG_MASK and
    /// _HPAGE_CHG_MASK, each a patch on the tree as is): no build.
    #[arg(long)]
    pub list: bool,
    /// Only this mutant (as --list names it, e.g. _PAGE_CHG_MASK-_PAGE_PAT); repeatable.
    #[arg(long = "mutant", value_name = "NAME")]
    pub mutants: Vec<String>,
    /// Also write each mutant's patch into this directory (NAME.patch).
    #[arg(long, value_name = "DIR")]
    pub patches: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    Github,
    Gitlab,
}

#[derive(clap::Args, Debug)]
pub struct Bench {
    /// Measured runs per scenario.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also the slow scenarios: cold verify vs raw make, edited candidate, bisect
    /// step, the cost of transparent huge pages.
    #[arg(long)]
    pub slow: bool,
    /// Only these scenarios (repeatable): cold, warm, edited, bisect-step, thp-cost,
    /// sandbox-cost, mutants, mutant-cost.
    /// Default: warm, plus the others with --slow.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    pub scenarios: Vec<Scenario>,
    /// Write the figures here as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Cold,
    Warm,
    Edited,
    /// A bisect step: `probe` of a work tree whose content nobody built
    /// (one C file differs), its C all in ccache.
    BisectStep,
    /// What `CONFIG_TRANSPARENT_HUGEPAGE` (for the 2 MiB rows) adds to a
    /// cold build: raw `make`s of the baseline's configuration with it and
    /// without it, one after the other.
    ThpCost,
    /// What the build sandbox adds to a cold build: raw `make`s of the
    /// baseline's configuration unconfined and sandboxed, one after the other.
    SandboxCost,
    /// A full `mutants` run of the default tree, natively.
    Mutants,
    /// One mutant's build (after the reference's, in a fresh cache) against
    /// a raw `make` of the mutant's tree and configuration.
    MutantCost,
}

#[derive(clap::Subcommand, Debug)]
pub enum Report {
    /// Print what changed from OLD to NEW; exit 1 if a kept mode is now lost.
    Diff { old: PathBuf, new: PathBuf },
    /// One table of kernel × environment × path × variant from many runs.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a plain-text reply to the patch's thread (for `git send-email
    /// --in-reply-to` or a mail client), with a Tested-by when it passed.
    Mail(Mail),
}

#[derive(clap::Args, Debug)]
pub struct Mail {
    /// The run's JSON record (`verify --json`).
    pub record: PathBuf,
    /// The candidate to report on (default: the first that came as a mail).
    #[arg(long, value_name = "NAME")]
    pub candidate: Option<String>,
    /// Tested-by name (default: git config user.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Tested-by address (default: git config user.email).
    #[arg(long)]
    pub email: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct Clean {
    /// Remove everything, including the unpacked source, ccache and Xen.
    #[arg(long)]
    pub all: bool,
    /// Only remove entries not used for this many days.
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct Setup {
    /// Also what only some features need (distcc for --distcc; the test's
    /// redis-server, distccd, Python venv, cpio and linux-source-6.1).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct Test {
    /// Only the unit tests.
    #[arg(long)]
    pub unit: bool,
}

/// Proves or disproves an x86 page-table patch on real booted kernels.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Cli {
    /// Cache directory (default: $PATVERIFY_CACHE, else ~/.cache/patverify).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// After a run, evict the least recently used kernel builds, bisect
    /// clones and run outputs until the cache fits (40G, 500M; 0: no limit).
    #[arg(long, global = true, env = "PATVERIFY_CACHE_MAX_SIZE", value_name = "SIZE",
          default_value = crate::support::evict::DEFAULT_MAX,
          value_parser = crate::support::evict::parse_size)]
    pub cache_max_size: u64,
    /// Also print every command line (make, patch, QEMU…) on the terminal;
    /// they are always in the run's commands.log and the step logs.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build baseline and candidate kernels, boot them, diff the cache modes.
    Verify(Verify),
    /// Build and boot one tree; exit 0 good, 1 bad, 125 untestable, 128 abort (for `git bisect run`).
    Probe(Probe),
    /// Bisect a kernel git history with `probe` in a clone of its own.
    Bisect(Bisect),
    /// Install what the pipeline needs (Debian packages, bindgen-cli, Xen).
    Setup(Setup),
    /// Report which requirements are present, with versions, and the cache size.
    Doctor,
    /// Measure warm re-runs and boots (--slow: cold verify vs raw make, edited candidate).
    Bench(Bench),
    /// One verify per kernel source, merged into one table (or --emit a CI matrix).
    Matrix(Matrix),
    /// Build and probe one kernel per bit term of the tree's protection masks: killed, survived or equivalent (--list: only list them).
    Mutants(Mutants),
    /// Read earlier runs' JSON records (`report diff OLD NEW`, `report merge FILES…`).
    #[command(subcommand)]
    Report(Report),
    /// Remove variant trees, builds and run outputs from the cache (--all: everything).
    Clean(Clean),
    /// Run the unit tests, then the end-to-end test (real builds and boots).
    Test(Test),
}

impl Command {
    /// Whether the command builds kernels (the cache is bounded after it).
    pub fn builds_kernels(&self) -> bool {
        matches!(
            self,
            Command::Verify(_)
                | Command::Probe(_)
                | Command::Bisect(_)
                | Command::Matrix(_)
                | Command::Mutants(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn common_defaults_are_the_command_lines() {
        let common = Common::defaults();
        assert_eq!(common.timeout, 120);
        assert_eq!(common.env, EnvChoice::All);
        assert_eq!(common.qemu, PathBuf::from("qemu-system-x86_64"));
        assert!(common.kernel.is_none() && common.json.is_none());
    }

    #[test]
    fn parallel_boots_stay_within_what_a_signal_can_end() {
        let parse = |n: &str| Cli::try_parse_from(["cargo xtask", "verify", "--parallel-boots", n]);
        assert!(parse("64").is_ok());
        for refused in ["0", "65", "100000"] {
            assert!(parse(refused).is_err(), "--parallel-boots {refused}");
        }
    }

    #[test]
    fn usage_names_the_command_people_type() {
        let usage = Cli::command().render_usage().to_string();
        assert!(usage.starts_with("Usage: cargo xtask "), "{usage}");
    }
}
