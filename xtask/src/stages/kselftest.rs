//! The kernel's own selftests beside the module's rows (`--kselftest mm`):
//! a named subset of the tree's tools/testing/selftests/mm, built statically
//! from the same tree (its uapi headers from `make headers`), in the build
//! sandbox, carried in the initramfs and run by `/init` after the report;
//! their TAP output read back from the console, one row per program.
//!
//! Built once per content: the key covers the selftests' sources and every
//! header they can include, so the variants of a tree (its mutants, a patch
//! to the masks) share one build.

use crate::model::kselftest::{KselftestOutcome, KselftestResult, Suite};
use crate::stages::kbuild::Kbuild;
use crate::stages::ktap::tap_result;
use crate::support::cache::{lock_entry, Cache, Key, Staged};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use patverify_protocol::{KSELFTEST_BEGIN, KSELFTEST_END};
use std::path::{Path, PathBuf};

/// What of the tree the selftests are made from (the key's inputs).
const INPUTS: [&str; 6] = [
    "tools/testing/selftests/mm",
    "tools/testing/selftests/vm",
    "tools/include/uapi",
    "include/uapi",
    "arch/x86/include/uapi",
    "arch/x86/entry/syscalls",
];

/// A suite's programs, built for one tree content.
pub struct Built {
    /// The static programs, by name.
    pub programs: Vec<(String, PathBuf)>,
    /// The suite's programs that are not here, with why (older trees lack
    /// some; one that does not compile says so).
    pub missing: Vec<(String, String)>,
}

/// Builds the suite's programs for `tree` (configured as `config`),
/// reusing an earlier build of the same content.
pub fn build(
    kbuild: &Kbuild,
    cache: &Cache,
    suite: Suite,
    tree: &Path,
    config: &Path,
) -> Result<Built> {
    let key = key(kbuild, suite, tree)?;
    let dest = cache.dir("kselftests")?.join(&key);
    let _lock = lock_entry(&dest)?;
    if !dest.join("missing").exists() {
        crate::output::progress(&format!("building the kernel's {} selftests", suite.name()));
        let staged = Staged::new(&dest)?;
        build_into(kbuild, suite, tree, config, staged.path())?;
        staged.publish(&dest)?;
    }
    read_built(&dest)
}

fn key(kbuild: &Kbuild, suite: Suite, tree: &Path) -> Result<String> {
    let mut key = Key::new("kselftest-v1");
    key.add(suite.name()).add(kbuild.toolchain().name());
    for dir in INPUTS {
        if !tree.join(dir).is_dir() {
            continue;
        }
        let mut files = Vec::new();
        crate::stages::source::walk(tree, Path::new(dir), &mut |rel, _| {
            files.push(rel.to_path_buf())
        })?;
        files.sort();
        for file in files {
            key.add(file.to_string_lossy().as_bytes());
            key.add_file(&tree.join(&file))?;
        }
    }
    for header in ["kselftest.h", "kselftest_harness.h"] {
        let path = tree.join("tools/testing/selftests").join(header);
        if path.is_file() {
            key.add_file(&path)?;
        }
    }
    Ok(key.hex())
}

/// `make headers` into `out/headers`, then each program into `out/bin`;
/// `out/missing` lists what is not there and why.
fn build_into(kbuild: &Kbuild, suite: Suite, tree: &Path, config: &Path, out: &Path) -> Result<()> {
    let headers = out.join("headers");
    std::fs::create_dir_all(&headers)?;
    std::fs::copy(config, headers.join(".config"))?;
    let log = out.join("build.log");
    let made = kbuild
        .make(tree, &headers)?
        .arg("headers")
        .run_logged("make headers", &log)?;
    anyhow::ensure!(made.ok, "make headers failed: {}", made.tail.join("\n"));
    let dir = ["mm", "vm"]
        .map(|d| tree.join("tools/testing/selftests").join(d))
        .into_iter()
        .find(|d| d.is_dir());
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin)?;
    let mut missing = String::new();
    for program in suite.programs() {
        let why = match &dir {
            None => Some("this tree has no tools/testing/selftests/mm".to_string()),
            Some(dir) if !dir.join(format!("{program}.c")).is_file() => {
                Some(format!("this tree has no {program}.c"))
            }
            Some(dir) => compile(kbuild, tree, dir, &headers, &bin, program, &log)?,
        };
        if let Some(why) = why {
            missing += &format!("{program}\t{why}\n");
        }
    }
    std::fs::write(out.join("missing"), missing)?;
    Ok(())
}

/// Compiles one program statically as the selftests' Makefile does (its
/// helper sources beside it); None when it built, else the first error.
fn compile(
    kbuild: &Kbuild,
    tree: &Path,
    dir: &Path,
    headers: &Path,
    bin: &Path,
    program: &str,
    log: &Path,
) -> Result<Option<String>> {
    let mut sources = vec![format!("{program}.c")];
    for helper in ["vm_util.c", "thp_settings.c"] {
        if dir.join(helper).is_file() {
            sources.push(helper.to_string());
        }
    }
    if program.starts_with("uffd-") && dir.join("uffd-common.c").is_file() {
        sources.push("uffd-common.c".into());
    }
    let clang = format!("clang{}", kbuild.toolchain().llvm_suffix());
    let cmd = Command::new(clang)
        .args([
            "-Wall",
            "-O2",
            "-U_FORTIFY_SOURCE",
            "-static",
            "-D_GNU_SOURCE",
        ])
        .arg("-I")
        .arg(tree)
        .arg("-isystem")
        .arg(headers.join("usr/include"))
        .arg("-isystem")
        .arg(tree.join("tools/include/uapi"))
        .args(&sources)
        .args(["-lrt", "-lpthread", "-lm", "-o"])
        .arg(bin.join(program))
        .dir(dir);
    let done = kbuild
        .sandboxed(cmd, bin)?
        .run_logged(&format!("cc {program}"), log)?;
    if done.ok {
        return Ok(None);
    }
    let error = done
        .tail
        .iter()
        .find(|l| l.contains("error"))
        .or(done.tail.last());
    Ok(Some(format!(
        "does not build here: {}",
        error.map_or("", |l| l.trim())
    )))
}

fn read_built(dest: &Path) -> Result<Built> {
    let missing_text = std::fs::read_to_string(dest.join("missing"))
        .with_context(|| format!("cannot read {}", dest.join("missing").display()))?;
    let missing: Vec<(String, String)> = missing_text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, why)| (p.to_string(), why.to_string()))
        .collect();
    let mut programs: Vec<(String, PathBuf)> = std::fs::read_dir(dest.join("bin"))?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    programs.sort();
    Ok(Built { programs, missing })
}

/// The rows of one boot: each program's section of the console (between
/// `/init`'s markers) read as TAP, and each missing program a skip.
pub fn results(suite: Suite, built: &Built, console: &str) -> Vec<KselftestResult> {
    let mut rows: Vec<KselftestResult> = suite
        .programs()
        .iter()
        .map(|program| {
            if let Some((_, why)) = built.missing.iter().find(|(p, _)| p == program) {
                return skipped(suite, program, why);
            }
            match section(console, program) {
                Some((text, ended)) => read_section(suite, program, &text, ended),
                None => broken(suite, program, "its output never started"),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.row.cmp(&b.row));
    rows
}

/// The output of `program` and how `/init` said it ended (None: the
/// console stops inside it).
fn section(console: &str, program: &str) -> Option<(String, Option<String>)> {
    let begin = format!("{KSELFTEST_BEGIN} {program} ====");
    let end = format!("{KSELFTEST_END} {program} ");
    let start = console.find(&begin)? + begin.len();
    let rest = &console[start..];
    match rest.find(&end) {
        Some(at) => {
            let ended = rest[at + end.len()..].lines().next().unwrap_or("");
            // A serial console ends its lines in "\r\n".
            let ended = ended.trim().trim_end_matches("====").trim().to_string();
            Some((rest[..at].to_string(), Some(ended)))
        }
        None => Some((rest.to_string(), None)),
    }
}

fn read_section(suite: Suite, program: &str, text: &str, ended: Option<String>) -> KselftestResult {
    let mut row = skipped(suite, program, "");
    let mut failed = Vec::new();
    let mut skip_reason = None;
    for line in text.lines().map(str::trim) {
        if let Some(reason) = line.strip_prefix("1..0 # SKIP") {
            skip_reason = Some(reason.trim().to_string());
        }
        match case_of(line) {
            Some(Case::Passed) => row.passed += 1,
            Some(Case::Skipped(why)) => {
                row.passed += 1;
                row.skipped += 1;
                if !why.is_empty() {
                    skip_reason.get_or_insert_with(|| why.to_string());
                }
            }
            Some(Case::Failed(name)) => {
                row.failed_count += 1;
                failed.push(name.to_string());
            }
            None => {}
        }
    }
    let said = last_words(text);
    let ran_a_case = row.passed > row.skipped || row.failed_count > 0;
    row.outcome = match ended.as_deref() {
        None => KselftestOutcome::Broken {
            how: "the console stops inside its output (the boot died)".into(),
        },
        Some("timeout") => KselftestOutcome::Broken {
            how: format!("killed after {} s", patverify_protocol::KSELFTEST_SECONDS),
        },
        Some("exit=4") => KselftestOutcome::Skip {
            reason: skip_reason
                .or(said)
                .unwrap_or_else(|| "it skipped itself".into()),
        },
        Some("exit=0") if failed.is_empty() && ran_a_case => KselftestOutcome::Pass,
        Some("exit=0") if failed.is_empty() => KselftestOutcome::Skip {
            reason: match skip_reason {
                Some(reason) => format!("every case skipped ({reason})"),
                None => "it ran no case and exited 0".into(),
            },
        },
        Some(other) if other.starts_with("exit=") => {
            if failed.is_empty() {
                failed.push(said.unwrap_or_else(|| format!("no `not ok` line ({other})")));
            }
            KselftestOutcome::Fail { failed }
        }
        Some(other) => KselftestOutcome::Broken {
            how: broken_how(other, said),
        },
    };
    row
}

/// How one case of a selftest ended.
#[derive(Debug, PartialEq, Eq)]
enum Case<'a> {
    Passed,
    Skipped(&'a str),
    /// Its name (and, for uffd-unit-tests, why).
    Failed(&'a str),
}

/// A case's result line: TAP's `ok`/`not ok`, or uffd-unit-tests' own
/// `Testing NAME... done` / `... skipped [reason: R]` / `... failed
/// [reason: R]` (it prints no TAP lines of its own).
fn case_of(line: &str) -> Option<Case<'_>> {
    if let Some(Ok(result)) = tap_result(line) {
        return Some(match (result.ok, result.directive) {
            (true, Some(d)) if d.starts_with("SKIP") => Case::Skipped(d["SKIP".len()..].trim()),
            (true, _) => Case::Passed,
            (false, _) => Case::Failed(result.name),
        });
    }
    let rest = line.strip_prefix("Testing ")?;
    let (_, end) = rest.split_once("... ")?;
    let reason = end
        .split_once("[reason: ")
        .map(|(_, r)| r.trim_end_matches(']'));
    match end {
        "done" => Some(Case::Passed),
        _ if end.starts_with("skipped") => Some(Case::Skipped(reason.unwrap_or(""))),
        _ if end.starts_with("failed") => Some(Case::Failed(line)),
        _ => None,
    }
}

/// How a program that did not exit ended ("signal=6"), with what it said.
fn broken_how(ended: &str, said: Option<String>) -> String {
    match (ended.strip_prefix("signal="), said) {
        (Some(signal), Some(said)) => format!("killed by signal {signal} after: {said}"),
        (Some(signal), None) => format!("killed by signal {signal}"),
        (None, _) => ended.to_string(),
    }
}

/// The program's last line of its own (a `# ` diagnostic or plain text,
/// not the totals): what it said before it ended.
fn last_words(text: &str) -> Option<String> {
    // TAP's "Bail out!" says why the program stopped, whatever follows it.
    let bail = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Bail out!"));
    if let Some(line) = bail {
        return Some(line.to_string());
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("# Totals:"))
        .rfind(|l| tap_result(l).is_none() && !l.starts_with("1.."))
        .map(|l| l.trim_start_matches("# ").to_string())
}

fn skipped(suite: Suite, program: &str, why: &str) -> KselftestResult {
    KselftestResult {
        row: KselftestResult::row_name(suite, program),
        outcome: KselftestOutcome::Skip {
            reason: why.to_string(),
        },
        passed: 0,
        failed_count: 0,
        skipped: 0,
    }
}

fn broken(suite: Suite, program: &str, how: &str) -> KselftestResult {
    KselftestResult {
        outcome: KselftestOutcome::Broken {
            how: how.to_string(),
        },
        ..skipped(suite, program, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(missing: &[(&str, &str)]) -> Built {
        Built {
            programs: Vec::new(),
            missing: missing
                .iter()
                .map(|(p, w)| (p.to_string(), w.to_string()))
                .collect(),
        }
    }

    fn console(sections: &[(&str, &str, &str)]) -> String {
        let mut text = String::from("==== PATVERIFY REPORT END lines=3 ====\n");
        for (program, output, ended) in sections {
            text += &format!("{KSELFTEST_BEGIN} {program} ====\n{output}");
            if !ended.is_empty() {
                text += &format!("{KSELFTEST_END} {program} {ended} ====\n");
            }
        }
        text
    }

    fn outcome_of<'a>(rows: &'a [KselftestResult], program: &str) -> &'a KselftestResult {
        let name = KselftestResult::row_name(Suite::Mm, program);
        rows.iter().find(|r| r.row == name).unwrap()
    }

    #[test]
    fn each_program_is_read_from_its_section() {
        let text = console(&[
            (
                "mkdirty",
                "TAP version 13\n1..2\nok 1 a\nok 2 # SKIP no THP\n# Totals: pass:1\n",
                "exit=0",
            ),
            (
                "pagemap_ioctl",
                "1..0 # SKIP userfaultfd is not supported\n",
                "exit=4",
            ),
            (
                "soft-dirty",
                "1..3\nok 1 Test x\nnot ok 2 Test test_mprotect-anon\nok 3 y\n",
                "exit=1",
            ),
            ("uffd-unit-tests", "1..1\n", "timeout"),
        ]);
        let rows = results(Suite::Mm, &built(&[]), &text);
        assert_eq!(rows.len(), 4);
        let mkdirty = outcome_of(&rows, "mkdirty");
        assert_eq!(mkdirty.outcome, KselftestOutcome::Pass);
        assert_eq!((mkdirty.passed, mkdirty.skipped), (2, 1));
        assert_eq!(
            outcome_of(&rows, "pagemap_ioctl").outcome,
            KselftestOutcome::Skip {
                reason: "userfaultfd is not supported".into()
            }
        );
        let soft = outcome_of(&rows, "soft-dirty");
        assert_eq!(soft.failed_count, 1);
        assert_eq!(
            soft.outcome,
            KselftestOutcome::Fail {
                failed: vec!["Test test_mprotect-anon".into()]
            }
        );
        assert_eq!(
            soft.summary(),
            "FAIL: 1 of 3 failed: Test test_mprotect-anon"
        );
        assert_eq!(
            outcome_of(&rows, "mkdirty").summary(),
            "pass: 1 passed, 1 skipped"
        );
        assert!(matches!(
            outcome_of(&rows, "uffd-unit-tests").outcome,
            KselftestOutcome::Broken { .. }
        ));
    }

    #[test]
    fn uffd_unit_tests_own_lines_are_its_cases() {
        let cases = "Testing UFFDIO_API (with syscall)... done\n\
                     Testing zeropage on hugetlb... skipped [reason: huge page size is 0, feature missing?]\n\
                     Testing wp-fork on anon... done\n";
        let failing = format!("{cases}Testing minor-wp on shmem... failed [reason: wp bit lost]\nUserfaults unit tests: pass=2, skip=1, fail=1 (total=4)\n");
        let text = console(&[
            ("uffd-unit-tests", cases, "exit=0"),
            ("soft-dirty", &failing, "exit=1"),
        ]);
        let rows = results(Suite::Mm, &built(&[]), &text);
        let passing = outcome_of(&rows, "uffd-unit-tests");
        assert_eq!(passing.outcome, KselftestOutcome::Pass);
        assert_eq!((passing.passed, passing.skipped), (3, 1));
        let failed = outcome_of(&rows, "soft-dirty");
        assert_eq!(
            failed.outcome,
            KselftestOutcome::Fail {
                failed: vec!["Testing minor-wp on shmem... failed [reason: wp bit lost]".into()]
            }
        );
        // A case cut short (the program died inside it) is no result.
        assert_eq!(case_of("Testing move-pmd on anon..."), None);
        assert_eq!(
            case_of("Testing x... skipped [reason: r]"),
            Some(Case::Skipped("r"))
        );
    }

    #[test]
    fn missing_cut_and_absent_programs_say_so() {
        let text = console(&[("soft-dirty", "1..3\nok 1 a\n", "")]);
        let rows = results(
            Suite::Mm,
            &built(&[("pagemap_ioctl", "this tree has no pagemap_ioctl.c")]),
            &text,
        );
        assert_eq!(
            outcome_of(&rows, "pagemap_ioctl").outcome,
            KselftestOutcome::Skip {
                reason: "this tree has no pagemap_ioctl.c".into()
            }
        );
        let cut = outcome_of(&rows, "soft-dirty");
        assert!(
            matches!(&cut.outcome, KselftestOutcome::Broken { how } if how.contains("stops inside"))
        );
        let never = outcome_of(&rows, "mkdirty");
        assert!(
            matches!(&never.outcome, KselftestOutcome::Broken { how } if how.contains("never started"))
        );
    }

    #[test]
    fn a_program_that_ran_no_case_is_a_skip_with_what_it_said() {
        let text = console(&[
            (
                "pagemap_ioctl",
                "TAP version 13\n# Totals: pass:0 fail:0\n",
                "exit=0",
            ),
            (
                "uffd-unit-tests",
                "Testing UFFDIO_API... skipped\nUserfaultfd not supported, skip all tests\n",
                "exit=4",
            ),
            (
                "mkdirty",
                "1..2\nok 1 # SKIP MADV_HUGEPAGE failed\nok 2 # SKIP mbind() failed\n",
                "exit=0",
            ),
            (
                "soft-dirty",
                "1..3\nok 1 a\nok 2 b\n# Planned tests != run tests (3 != 2)\n# Totals: pass:2\n",
                "exit=1",
            ),
        ]);
        let rows = results(Suite::Mm, &built(&[]), &text);
        let reason = |program| match &outcome_of(&rows, program).outcome {
            KselftestOutcome::Skip { reason } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("pagemap_ioctl"), "it ran no case and exited 0");
        assert_eq!(
            reason("uffd-unit-tests"),
            "Userfaultfd not supported, skip all tests"
        );
        assert_eq!(
            reason("mkdirty"),
            "every case skipped (MADV_HUGEPAGE failed)"
        );
        assert_eq!(
            outcome_of(&rows, "soft-dirty").outcome,
            KselftestOutcome::Fail {
                failed: vec!["Planned tests != run tests (3 != 2)".into()]
            }
        );
    }

    #[test]
    fn a_nonzero_exit_without_a_failed_case_still_fails() {
        let rows = results(
            Suite::Mm,
            &built(&[]),
            &console(&[("mkdirty", "1..1\nok 1 a\n", "exit=2")]),
        );
        let row = outcome_of(&rows, "mkdirty");
        assert!(!row.regressed_from(row));
        assert!(
            matches!(&row.outcome, KselftestOutcome::Fail { failed } if failed[0].contains("exit=2"))
        );
        let pass = KselftestResult {
            outcome: KselftestOutcome::Pass,
            ..row.clone()
        };
        assert!(row.regressed_from(&pass) && !pass.regressed_from(row));
    }

    #[test]
    fn a_program_failing_everywhere_is_compared_case_by_case() {
        let fail = |cases: &[&str]| KselftestResult {
            outcome: KselftestOutcome::Fail {
                failed: cases.iter().map(|c| c.to_string()).collect(),
            },
            ..skipped(Suite::Mm, "soft-dirty", "")
        };
        let plan = "Planned tests != run tests (15 != 14)";
        let reference = fail(&[plan]);
        assert!(!fail(&[plan]).regressed_from(&reference));
        let worse = fail(&[plan, "Test test_mprotect-anon"]);
        assert_eq!(worse.new_failures(&reference), ["Test test_mprotect-anon"]);
        let skip = skipped(Suite::Mm, "soft-dirty", "no THP");
        assert!(
            !worse.regressed_from(&skip),
            "nothing to compare with a skip"
        );
    }

    #[test]
    fn a_bail_out_is_the_reason_a_program_stopped() {
        let output = "1..9\nok 1 a\nBail out! uffd-test creation failed 38\n# Planned tests != run tests (9 != 1)\n";
        let rows = results(
            Suite::Mm,
            &built(&[]),
            &console(&[("pagemap_ioctl", output, "exit=1")]),
        );
        assert_eq!(
            outcome_of(&rows, "pagemap_ioctl").outcome,
            KselftestOutcome::Fail {
                failed: vec!["Bail out! uffd-test creation failed 38".into()]
            }
        );
    }

    #[test]
    fn a_program_killed_by_a_signal_says_what_it_said_last() {
        let output =
            "Testing move on anon... The futex facility returned an unexpected error code.\r\n";
        let text = format!(
            "{KSELFTEST_BEGIN} mkdirty ====\r\n{output}{KSELFTEST_END} mkdirty signal=6 ====\r\n"
        );
        let rows = results(Suite::Mm, &built(&[]), &text);
        assert_eq!(
            outcome_of(&rows, "mkdirty").outcome,
            KselftestOutcome::Broken {
                how: "killed by signal 6 after: Testing move on anon... The futex facility returned an unexpected error code.".into()
            }
        );
    }
}
