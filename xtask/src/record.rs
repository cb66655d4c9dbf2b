//! The run record: what `verify --json` and `probe --json` write, and what
//! `report diff|merge`, JUnit, matrix, bench and the tests read back — one set
//! of types for both directions. `schema_version` changes whenever a field
//! does; a record of another version is refused with a clear error.

use crate::model::bits::{BitRow, KeptBits};
use crate::model::rows::ModeResult;
use crate::model::Env;
pub use crate::model::{CcacheStats, Step};
use crate::support::failure::{fail, Kind};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Version 2: typed results (`status` measured/skipped), typed timings,
/// `not-reproduced` verdicts. Version 1 was the untyped record of the
/// harness before d8dce10 (2026-11-27). Version 3 added `entry`, `entry_after`, `toolchain.name`
/// and the `pat_index` path; version 4 the `huge_pfn_*` paths, and dropped
/// the synthetic `pmd_modify_ioremap_encoding` (it could not tell a fixed
/// kernel from a broken one). Version 5 judges each step by what it was
/// given (`lost_earlier_at`), writes each row's `judgment` and `path_kind`,
/// and a candidate's `only_synthetic`; older records are judged again when
/// read. Version 6 adds the kept-bit rows (`bits`) and each boot's
/// `kept_bits`. Version 7: a fault's `pte_before` is what the page table
/// held before it (`null`: an empty slot) and what it asked for is
/// `prot_requested`; the `ram_fault` and `ram_mprotect` paths. Older
/// records' fault rows read with the protection asked for as `pte_before`.
pub const SCHEMA_VERSION: u32 = 7;

/// The oldest version this patverify still reads: versions 2 and 3 read as
/// version 4 records without the fields and paths added since, and without
/// the rows of the paths dropped since ([`RETIRED_PATHS`]).
pub const OLDEST_READABLE_VERSION: u32 = 2;

/// Paths older records hold that this patverify no longer measures.
const RETIRED_PATHS: &[&str] = &["pmd_modify_ioremap_encoding"];

/// The machine-readable record of one run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    pub schema_version: u32,
    pub verdict: Verdict,
    pub exit_code: i32,
    /// The error that ended the run, empty when it ended with a verdict.
    pub message: String,
    pub kernel: Option<KernelRecord>,
    /// The versions a result depends on besides the tree and the patches.
    pub toolchain: Option<ToolchainRecord>,
    pub patches: Vec<PatchRecord>,
    pub variants: Vec<VariantRecord>,
    /// verify: each candidate's verdict against the baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateRecord>,
    pub builds: Vec<BuildRecord>,
    pub environments: Vec<EnvRecord>,
    pub results: Vec<ResultRecord>,
    /// What confined the builds' make (version 6): "bubblewrap, as
    /// patverify-build", or "unavailable: why" where bubblewrap could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The later steps' `PATH.bits.NAME` rows (version 6).
    #[serde(default)]
    pub bits: Vec<BitRecord>,
    /// mutants: what each mutant of the masks came to (version 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutants: Vec<MutantRecord>,
    pub timings: Vec<Timing>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            schema_version: SCHEMA_VERSION,
            verdict: Verdict::Error,
            exit_code: 0,
            message: String::new(),
            kernel: None,
            toolchain: None,
            patches: Vec::new(),
            variants: Vec::new(),
            candidates: Vec::new(),
            builds: Vec::new(),
            environments: Vec::new(),
            results: Vec::new(),
            sandbox: None,
            bits: Vec::new(),
            mutants: Vec::new(),
            timings: Vec::new(),
        }
    }
}

/// How a run ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// verify: every candidate keeps every row the baseline lost;
    /// mutants: every non-equivalent mutant was killed.
    Pass,
    /// verify: a candidate loses a row; mutants: a mutant survived.
    Fail,
    /// verify: the baseline lost nothing, so no candidate can prove anything.
    NotReproduced,
    /// probe: the tree is good (`--expect`).
    Good,
    /// probe: the tree is bad.
    Bad,
    /// probe: the tree cannot be tested (bisect skips it).
    Untestable,
    /// probe: the setup is broken (bisect aborts).
    Abort,
    /// The run ended in an error before a verdict.
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotReproduced => "not-reproduced",
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Untestable => "untestable",
            Verdict::Abort => "abort",
            Verdict::Error => "error",
        })
    }
}

/// The kernel source a run tested.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KernelRecord {
    /// For people: "linux-source-6.12 (Debian)", "linux @ abc123", a path.
    pub source: String,
    pub tree: String,
    pub version: String,
    pub git_rev: Option<String>,
}

/// First lines of the tools' `--version` and the Xen package's version.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ToolchainRecord {
    /// Which of the harness's toolchains the tree got (`rustc-web`,
    /// `debian-rustc-1.63`), chosen from its scripts/min-tool-version.sh.
    #[serde(default)]
    pub name: String,
    pub rustc: String,
    pub clang: String,
    pub bindgen: String,
    pub qemu: String,
    pub xen: String,
}

/// A candidate patch file as the run read it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PatchRecord {
    pub file: String,
    pub sha256: String,
    pub direction: crate::model::Direction,
    /// The mails' subjects, for a series.
    pub series: Vec<String>,
    /// The files applied, in order (the mails of a series, split).
    #[serde(default)]
    pub parts: Vec<String>,
    /// The sha256 of each part, in order.
    #[serde(default)]
    pub part_sha256: Vec<String>,
    /// The Message-Id of the mail it came in (a series: its first mail).
    #[serde(default)]
    pub message_id: Option<String>,
    /// That mail's Subject as sent.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A kernel the run made (baseline, candidate-N, probe).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VariantRecord {
    pub name: String,
    pub describe: String,
    pub key: String,
    pub tree: String,
}

/// A candidate's verdict against the baseline.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CandidateRecord {
    pub name: String,
    pub patch: String,
    pub verdict: CandidateVerdict,
    /// "env path mode→observed" for every row the candidate lost.
    pub lost: Vec<String>,
    /// Every lost row is a synthetic path's (no real mapping lost a mode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_synthetic: bool,
}

/// One candidate's verdict.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateVerdict {
    Pass,
    Fail,
    NotReproduced,
}

/// One kernel build (or its reuse).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BuildRecord {
    pub variant: String,
    pub build_dir: String,
    pub bzimage: String,
    pub reused: bool,
    pub config_sha256: String,
    pub bzimage_sha256: String,
    /// What ccache did during the build (absent when reused).
    pub ccache: Option<CcacheStats>,
    pub cache_remote: Option<String>,
    pub distcc: Option<String>,
    /// Built from a patch from outside the repository: its compile caches
    /// were a namespace of their own, the shared ones read-only (version 6).
    #[serde(default)]
    pub untrusted: bool,
}

/// One boot: the PAT layout the kernel ran with and how long it took.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EnvRecord {
    pub variant: String,
    pub env: Env,
    /// PAT entries 0..7 as the kernel decodes them.
    pub pat_layout: Vec<String>,
    pub pat_msr: Option<String>,
    pub boot_seconds: f64,
    /// When the console showed each phase (seconds from QEMU's start).
    #[serde(default)]
    pub phases: crate::model::Phases,
    /// Each kept bit's flag in the kernel that ran (version 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_bits: Option<KeptBits>,
    /// The kernel's own selftests run in this boot (`--kselftest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kselftests: Vec<crate::model::kselftest::KselftestResult>,
    /// `/init`'s pagemap rows (soft-dirty and uffd-wp of an anonymous page).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pagemap: Vec<crate::model::pagemap::PagemapRow>,
}

/// One row of one boot's report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResultRecord {
    pub variant: String,
    pub env: Env,
    /// What the row's path stands on (`real-mapping`, `made-vma`,
    /// `direct-call`): derived from the path, written for other tools.
    #[serde(default)]
    pub path_kind: String,
    /// What the row's step did (`kept`, `moved-same-type`, `lost`,
    /// `known-defect`, `lost-earlier`, `skipped`): derived from the result,
    /// written for other tools.
    #[serde(default)]
    pub judgment: String,
    #[serde(flatten)]
    pub result: ModeResult,
}

impl ResultRecord {
    pub fn new(variant: &str, env: Env, result: ModeResult) -> ResultRecord {
        ResultRecord {
            variant: variant.to_string(),
            env,
            path_kind: result.path.kind().name().to_string(),
            judgment: result.judgment().name().to_string(),
            result,
        }
    }
}

/// One mutant of the masks (`mutants`): the term it drops and what came of it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MutantRecord {
    /// "_PAGE_CHG_MASK-_PAGE_PAT".
    pub name: String,
    pub mask: String,
    pub term: String,
    pub outcome: MutantOutcome,
    /// What building it took (0 when reused), and its boots (0 when not
    /// booted: equivalent), in seconds.
    #[serde(default)]
    pub build_seconds: f64,
    #[serde(default)]
    pub boot_seconds: f64,
    /// Killed: the rows that told it from the reference (or the failed
    /// boot); equivalent: the identical build; survived: what the
    /// reference showed of the term's bit.
    pub by: Vec<String>,
    /// With `--kselftest`: the kernel's own selftests that passed on the
    /// reference and fail on this mutant (empty: none does, the selftests
    /// let it survive); None when they did not run on it (not booted, or
    /// its boot failed before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kselftests_kill: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MutantOutcome {
    Killed,
    Survived,
    /// Its build is byte-identical to the reference's.
    Equivalent,
}

impl MutantOutcome {
    pub fn name(self) -> &'static str {
        match self {
            MutantOutcome::Killed => "killed",
            MutantOutcome::Survived => "survived",
            MutantOutcome::Equivalent => "equivalent",
        }
    }
}

/// One `PATH.bits.NAME` row of one boot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BitRecord {
    pub variant: String,
    pub env: Env,
    /// `kept`, `lost` or `skipped`: derived from the row, written for other
    /// tools.
    pub judgment: String,
    #[serde(flatten)]
    pub row: BitRow,
}

impl BitRecord {
    pub fn new(variant: &str, env: Env, row: BitRow) -> BitRecord {
        BitRecord {
            variant: variant.to_string(),
            env,
            judgment: row.judgment_name().to_string(),
            row,
        }
    }
}

/// How long a step took.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Timing {
    #[serde(flatten)]
    pub step: Step,
    pub seconds: f64,
}

impl Record {
    /// Seconds `step` took, if the run got that far.
    pub fn seconds(&self, step: &Step) -> Option<f64> {
        self.timings
            .iter()
            .find(|t| &t.step == step)
            .map(|t| t.seconds)
    }

    /// The rows a variant measured in an environment, in report order.
    pub fn rows<'a>(
        &'a self,
        variant: &'a str,
        env: Env,
    ) -> impl Iterator<Item = &'a ModeResult> + 'a {
        self.results
            .iter()
            .filter(move |r| r.variant == variant && r.env == env)
            .map(|r| &r.result)
    }

    /// The kept-bit rows of a variant in an environment, in report order.
    pub fn bit_rows<'a>(
        &'a self,
        variant: &'a str,
        env: Env,
    ) -> impl Iterator<Item = &'a BitRow> + 'a {
        self.bits
            .iter()
            .filter(move |b| b.variant == variant && b.env == env)
            .map(|b| &b.row)
    }

    /// `/init`'s pagemap rows of one boot.
    pub fn pagemap<'a>(
        &'a self,
        variant: &'a str,
        env: Env,
    ) -> impl Iterator<Item = &'a crate::model::pagemap::PagemapRow> + 'a {
        self.boots(variant, env).flat_map(|e| e.pagemap.iter())
    }

    /// The kernel's selftests of one boot (`--kselftest`).
    pub fn kselftests<'a>(
        &'a self,
        variant: &'a str,
        env: Env,
    ) -> impl Iterator<Item = &'a crate::model::kselftest::KselftestResult> + 'a {
        self.boots(variant, env).flat_map(|e| e.kselftests.iter())
    }

    /// The boot of `variant` in `env` (none if it did not report).
    fn boots<'a>(&'a self, variant: &'a str, env: Env) -> impl Iterator<Item = &'a EnvRecord> + 'a {
        let mut boots = self.environments.iter();
        std::iter::from_fn(move || boots.find(|e| e.variant == variant && e.env == env))
    }

    /// Writes the record as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text)
            .map_err(|e| anyhow::Error::from(e).context(format!("cannot write {}", path.display())))
    }

    /// Reads a record; a file that is not one (or of another schema
    /// version) is a setup error naming the file.
    pub fn read(path: &Path) -> Result<Record> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(Kind::Setup, format!("cannot read {}: {e}", path.display())))?;
        Record::parse(&text).map_err(|why| fail(Kind::Setup, format!("{}: {why}", path.display())))
    }

    /// Parses a record from JSON text, checking its schema version first.
    pub fn parse(text: &str) -> std::result::Result<Record, String> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a patverify JSON record: {e}"))?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if (u64::from(OLDEST_READABLE_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&v) => {}
            Some(v) => {
                return Err(format!(
                    "record of schema version {v}; this patverify reads versions {OLDEST_READABLE_VERSION} to {SCHEMA_VERSION} (re-run the command that wrote it)"
                ))
            }
            None => {
                return Err(format!(
                    "not a patverify JSON record (no schema_version; records before version {OLDEST_READABLE_VERSION} cannot be read)"
                ))
            }
        }
        if let Some(results) = value.get_mut("results").and_then(|r| r.as_array_mut()) {
            results.retain(|row| {
                let path = row.get("path").and_then(|p| p.as_str());
                !path.is_some_and(|p| RETIRED_PATHS.contains(&p))
            });
        }
        let mut record: Record = serde_json::from_value(value)
            .map_err(|e| format!("not a patverify JSON record: {e}"))?;
        if record.schema_version < 5 {
            record.judge_steps_again();
        }
        Ok(record)
    }

    /// Records before version 5 judged a later step against the mode first
    /// requested: judge each boot's steps as this version does.
    fn judge_steps_again(&mut self) {
        let boots: Vec<(String, Env, Vec<crate::model::rows::CacheMode>)> = self
            .environments
            .iter()
            .map(|e| {
                let layout = e.pat_layout.iter().filter_map(|m| m.parse().ok()).collect();
                (e.variant.clone(), e.env, layout)
            })
            .collect();
        for (variant, env, layout) in boots {
            let mine = |r: &ResultRecord| r.variant == variant && r.env == env;
            let mut rows: Vec<ModeResult> = self
                .results
                .iter()
                .filter(|r| mine(r))
                .map(|r| r.result.clone())
                .collect();
            crate::model::rows::judge_steps(&mut rows, &layout);
            let mut judged = rows.into_iter();
            for r in self.results.iter_mut().filter(|r| mine(r)) {
                if let Some(result) = judged.next() {
                    *r = ResultRecord::new(&variant, env, result);
                }
            }
        }
    }
}

/// "mutation score 9/10 (12 mutants, 2 equivalent)".
pub fn mutation_score(records: &[MutantRecord]) -> String {
    let count = |o: MutantOutcome| records.iter().filter(|r| r.outcome == o).count();
    let killed = count(MutantOutcome::Killed);
    let judged = records.len() - count(MutantOutcome::Equivalent);
    let mut line = format!(
        "mutation score {killed}/{judged} ({} mutants, {} equivalent, {} survived)",
        records.len(),
        count(MutantOutcome::Equivalent),
        count(MutantOutcome::Survived)
    );
    let ran: Vec<&Vec<String>> = records
        .iter()
        .filter_map(|r| r.kselftests_kill.as_ref())
        .collect();
    if !ran.is_empty() {
        let killed = ran.iter().filter(|by| !by.is_empty()).count();
        line += &format!(
            "; the kernel's selftests kill {killed} of the {} they ran on",
            ran.len()
        );
    }
    line
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::stages::ktap::{parse_ktap, tests::sample_ktap};

    /// A record holding one native run of `variant` with these modes lost.
    pub fn record_with(variant: &str, lost: &[(&str, &str)]) -> Record {
        let report = parse_ktap(&sample_ktap(lost)).unwrap();
        Record {
            verdict: Verdict::Pass,
            results: report
                .results
                .into_iter()
                .map(|result| ResultRecord::new(variant, Env::Native, result))
                .collect(),
            timings: vec![Timing {
                step: Step::Build {
                    variant: variant.into(),
                },
                seconds: 1.5,
            }],
            ..Record::default()
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let mut record = record_with("baseline", &[("WT", "UC")]);
        let later = crate::stages::ktap::tests::sample_ktap_on("mprotect", &[]);
        let bits = parse_ktap(&later).unwrap().bits;
        assert!(!bits.is_empty());
        let bits = bits
            .into_iter()
            .map(|b| BitRecord::new("baseline", Env::Xen, b));
        record.bits.extend(bits);
        let text = serde_json::to_string_pretty(&record).unwrap();
        assert_eq!(Record::parse(&text).unwrap(), record);
        assert!(text.contains("\"schema_version\": 7"), "{text}");
        // A fault's empty slot is written as null and read back as such.
        let mut faulted = record_with("baseline", &[]);
        let fault = crate::stages::ktap::tests::sample_ktap_on("mmap_fault", &[]);
        faulted.results = parse_ktap(&fault)
            .unwrap()
            .results
            .into_iter()
            .map(|r| ResultRecord::new("baseline", Env::Native, r))
            .collect();
        let fault_text = serde_json::to_string_pretty(&faulted).unwrap();
        assert!(fault_text.contains("\"pte_before\": null"), "{fault_text}");
        assert!(
            fault_text.contains("\"prot_requested\": \"0x8000000000000000\""),
            "{fault_text}"
        );
        assert_eq!(Record::parse(&fault_text).unwrap(), faulted);
        assert!(text.contains("\"bit\": \"soft_dirty\""), "{text}");
        assert!(text.contains("\"step\": \"build\""), "{text}");
        assert_eq!(
            record.seconds(&Step::Build {
                variant: "baseline".into()
            }),
            Some(1.5)
        );
        assert_eq!(record.rows("baseline", Env::Native).count(), 6);
    }

    #[test]
    fn an_older_record_reads_without_the_rows_of_retired_paths() {
        let record = record_with("baseline", &[]);
        let mut value = serde_json::to_value(&record).unwrap();
        value["schema_version"] = 3.into();
        let mut retired = value["results"][0].clone();
        retired["path"] = "pmd_modify_ioremap_encoding".into();
        value["results"].as_array_mut().unwrap().push(retired);
        let read = Record::parse(&value.to_string()).unwrap();
        assert_eq!(read.results, record.results);
        value["results"][0]["path"] = "no_such_path".into();
        assert!(Record::parse(&value.to_string()).is_err());
    }

    #[test]
    fn an_older_record_is_judged_again_step_by_step() {
        let ktap = crate::stages::ktap::tests::sample_ktap_paths(&[
            ("mmap_fault", &[("WT", "UC")]),
            ("mprotect", &[("WT", "UC")]),
        ]);
        let report = parse_ktap(&ktap).unwrap();
        let mut record = Record {
            schema_version: 4,
            environments: vec![EnvRecord {
                variant: "baseline".into(),
                env: Env::Native,
                pat_layout: report.pat_layout.iter().map(|m| m.to_string()).collect(),
                pat_msr: None,
                boot_seconds: 1.0,
                phases: Default::default(),
                kept_bits: None,
                kselftests: Vec::new(),
                pagemap: Vec::new(),
            }],
            ..Record::default()
        };
        for mut result in report.results {
            // As a version 4 record held it: no step judged by its input.
            if let crate::model::rows::Outcome::Measured {
                lost_earlier_at, ..
            } = &mut result.outcome
            {
                *lost_earlier_at = None;
            }
            record.results.push(ResultRecord {
                variant: "baseline".into(),
                env: Env::Native,
                path_kind: String::new(),
                judgment: String::new(),
                result,
            });
        }
        let read = Record::parse(&serde_json::to_string(&record).unwrap()).unwrap();
        let mprotect_wt = read
            .results
            .iter()
            .find(|r| r.result.path.name() == "mprotect" && r.result.requested.name() == "WT")
            .unwrap();
        assert_eq!(mprotect_wt.judgment, "lost-earlier");
        assert_eq!(mprotect_wt.path_kind, "real-mapping");
        assert!(!mprotect_wt.result.lost());
    }

    #[test]
    fn other_schema_versions_and_other_json_are_refused() {
        let old = r#"{"verdict": "pass", "results": []}"#;
        assert!(Record::parse(old)
            .unwrap_err()
            .contains("no schema_version"));
        let newer = r#"{"schema_version": 8}"#;
        assert!(Record::parse(newer)
            .unwrap_err()
            .contains("schema version 8"));
        assert!(Record::parse("[1, 2")
            .unwrap_err()
            .contains("not a patverify"));
        let missing = r#"{"schema_version": 2, "verdict": "pass"}"#;
        assert!(Record::parse(missing)
            .unwrap_err()
            .contains("missing field"));
    }

    #[test]
    fn verdicts_and_steps_print_as_the_json_says() {
        for verdict in [Verdict::NotReproduced, Verdict::Untestable, Verdict::Pass] {
            let json = serde_json::to_value(verdict).unwrap();
            assert_eq!(json.as_str(), Some(verdict.to_string().as_str()));
        }
        assert_eq!(
            Step::Boot {
                variant: "candidate".into(),
                env: Env::Xen
            }
            .to_string(),
            "boot candidate-xen"
        );
    }
}
