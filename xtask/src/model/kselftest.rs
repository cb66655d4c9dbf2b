//! The kernel's own selftests (tools/testing/selftests/mm), run in the same
//! boots as the module's report with `--kselftest mm`: one row per program,
//! `kselftest.mm.NAME`, beside patverify's own rows.

use serde::{Deserialize, Serialize};

/// Which selftests a run builds and boots with (`--kselftest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// A named subset of tools/testing/selftests/mm: the programs that
    /// exercise what `_PAGE_CHG_MASK` keeps (soft-dirty, dirty, uffd-wp,
    /// the page map's bits).
    Mm,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Mm => "mm",
        }
    }

    /// The configuration fragment (under configs/) the suite's kernels are
    /// built with besides configs/*.config: what its programs need to run.
    pub fn config_fragment(self) -> &'static str {
        match self {
            Suite::Mm => "kselftest/mm.config",
        }
    }

    /// The programs of the suite, as tools/testing/selftests/mm names them.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Suite::Mm => &["mkdirty", "pagemap_ioctl", "soft-dirty", "uffd-unit-tests"],
        }
    }
}

/// How one selftest program ended in one boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum KselftestOutcome {
    /// Exit 0, no `not ok` line.
    Pass,
    /// Exit 1 (or any `not ok` line): the failing cases, by their TAP names.
    Fail { failed: Vec<String> },
    /// Exit 4 (kselftest's KSFT_SKIP), or never run: why.
    Skip { reason: String },
    /// Killed at the time limit, a signal, or no end marker: what was seen.
    Broken { how: String },
}

/// One selftest program's row in one boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KselftestResult {
    /// The row name: `kselftest.mm.soft-dirty`.
    pub row: String,
    #[serde(flatten)]
    pub outcome: KselftestOutcome,
    /// `ok` lines (skipped cases included) and `not ok` lines.
    pub passed: usize,
    pub failed_count: usize,
    /// Cases skipped inside the program (`ok N # SKIP`).
    pub skipped: usize,
}

impl KselftestResult {
    /// The row of `program` in `suite`.
    pub fn row_name(suite: Suite, program: &str) -> String {
        format!("kselftest.{}.{program}", suite.name())
    }

    /// What fails here that did not in `reference` (the same program in
    /// the same environment): its failed cases the reference passed (a
    /// reference that failed some cases already is compared case by case),
    /// or how it broke. Nothing when the reference skipped or broke.
    pub fn new_failures(&self, reference: &KselftestResult) -> Vec<String> {
        let theirs: &[String] = match &reference.outcome {
            KselftestOutcome::Pass => &[],
            KselftestOutcome::Fail { failed } => failed,
            _ => return Vec::new(),
        };
        match &self.outcome {
            KselftestOutcome::Fail { failed } => failed
                .iter()
                .filter(|f| !theirs.contains(f))
                .cloned()
                .collect(),
            KselftestOutcome::Broken { how } => vec![how.clone()],
            _ => Vec::new(),
        }
    }

    /// The same program is worse here than in `reference`.
    pub fn regressed_from(&self, reference: &KselftestResult) -> bool {
        !self.new_failures(reference).is_empty()
    }

    /// One cell of a table: "pass: 12 passed, 2 skipped", "FAIL: 2 of 14
    /// failed: …", "skip: why".
    pub fn summary(&self) -> String {
        let total = self.passed + self.failed_count;
        match &self.outcome {
            KselftestOutcome::Pass => {
                let real = self.passed - self.skipped;
                match self.skipped {
                    0 => format!("pass: {real} passed"),
                    n => format!("pass: {real} passed, {n} skipped"),
                }
            }
            KselftestOutcome::Fail { failed } if self.failed_count == 0 => {
                format!("FAIL: {}", failed.join("; "))
            }
            KselftestOutcome::Fail { failed } => {
                format!(
                    "FAIL: {} of {total} failed: {}",
                    self.failed_count,
                    failed.join("; ")
                )
            }
            KselftestOutcome::Skip { reason } => format!("skip: {reason}"),
            KselftestOutcome::Broken { how } => format!("BROKEN: {how}"),
        }
    }
}
