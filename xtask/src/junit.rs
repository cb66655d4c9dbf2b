//! `--junit FILE`: the run's record as JUnit XML for CI systems. A suite per
//! variant and environment, a test case per path and mode. A mode a
//! candidate (or probed tree) loses is a failure; the baseline's losses are
//! the bug being reproduced, so its suite instead has one case per
//! environment that fails when the baseline lost nothing. A case per
//! kept-bit row (`mprotect.bits.dirty`) fails when the step changed the
//! bit, in every suite. A run that ended
//! in an error (build, boot, setup) is one case with an <error>.

use crate::model::bits::{BitOutcome, BitRow};
use crate::model::kselftest::{KselftestOutcome, KselftestResult};
use crate::model::pagemap::{PagemapOutcome, PagemapRow};
use crate::model::rows::{ModeResult, Outcome};
use crate::record::{Record, Verdict};
use crate::stages::qemu::Env;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

/// The JUnit XML of a record.
pub fn render(record: &Record) -> String {
    let mut report = Report::new("patverify");
    let mut suites: Vec<(&str, Env)> = Vec::new();
    for r in &record.results {
        if !suites.contains(&(r.variant.as_str(), r.env)) {
            suites.push((r.variant.as_str(), r.env));
        }
    }
    for (variant, env) in suites {
        report.add_test_suite(suite(record, variant, env));
    }
    if record.verdict == Verdict::Error {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(record.message.as_str());
        let mut case = TestCase::new("run", status);
        case.set_classname("patverify.run");
        let mut suite = TestSuite::new("patverify.run");
        suite.add_test_case(case);
        report.add_test_suite(suite);
    }
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- cannot render JUnit XML: {e} -->\n"))
}

fn suite(record: &Record, variant: &str, env: Env) -> TestSuite {
    let class = format!("patverify.{variant}.{env}");
    let mut suite = TestSuite::new(class.as_str());
    let baseline = variant == "baseline";
    for r in record.rows(variant, env) {
        let mut case = TestCase::new(format!("{}.{}", r.path, r.key()), status(r, baseline));
        case.set_classname(class.as_str());
        case.add_property(("path_kind", r.path.kind().name()));
        case.add_property(("judgment", r.judgment().name()));
        if let Outcome::Measured { observed, .. } = r.outcome {
            case.set_system_out(format!("observed {observed} (PTE {})", r.ptes()));
        }
        suite.add_test_case(case);
    }
    for b in record.bit_rows(variant, env) {
        let mut case = TestCase::new(format!("{}.{}", b.path, b.label()), bit_status(b));
        case.set_classname(class.as_str());
        case.add_property(("path_kind", b.path.kind().name()));
        case.add_property(("judgment", b.judgment_name()));
        case.set_system_out(b.describe());
        suite.add_test_case(case);
    }
    for p in record.pagemap(variant, env) {
        let mut case = TestCase::new(p.row.as_str(), pagemap_status(p));
        case.set_classname(class.as_str());
        case.set_system_out(p.summary());
        suite.add_test_case(case);
    }
    for k in record.kselftests(variant, env) {
        let mut case = TestCase::new(k.row.as_str(), kselftest_status(k));
        case.set_classname(class.as_str());
        case.set_system_out(k.summary());
        suite.add_test_case(case);
    }
    if baseline {
        let reproduced = record.rows(variant, env).any(ModeResult::lost_in_scope);
        let status = if reproduced {
            TestCaseStatus::success()
        } else {
            let mut failed = TestCaseStatus::non_success(NonSuccessKind::Failure);
            failed.set_message("the baseline kept every mode: bug not reproduced");
            failed
        };
        let mut case = TestCase::new("baseline reproduces the bug", status);
        case.set_classname(class.as_str());
        suite.add_test_case(case);
    }
    suite
}

/// A pagemap row's status: a lost bit fails in every suite (no variant's
/// bug under test is a lost bit), an error is an error, a skip says why.
fn pagemap_status(p: &PagemapRow) -> TestCaseStatus {
    let mut status = match &p.outcome {
        PagemapOutcome::Kept => return TestCaseStatus::success(),
        PagemapOutcome::Skipped { .. } => TestCaseStatus::skipped(),
        PagemapOutcome::Lost => TestCaseStatus::non_success(NonSuccessKind::Failure),
        PagemapOutcome::Error { .. } => TestCaseStatus::non_success(NonSuccessKind::Error),
    };
    status.set_message(p.summary());
    status
}

/// A selftest program's status, as the program itself said it.
fn kselftest_status(k: &KselftestResult) -> TestCaseStatus {
    let mut status = match &k.outcome {
        KselftestOutcome::Pass => return TestCaseStatus::success(),
        KselftestOutcome::Skip { .. } => TestCaseStatus::skipped(),
        KselftestOutcome::Fail { .. } => TestCaseStatus::non_success(NonSuccessKind::Failure),
        KselftestOutcome::Broken { .. } => TestCaseStatus::non_success(NonSuccessKind::Error),
    };
    status.set_message(k.summary());
    status
}

/// A kept-bit row's status: a step that changed the bit fails in every
/// suite (no variant's bug under test is a lost bit), a skip says why.
fn bit_status(b: &BitRow) -> TestCaseStatus {
    match &b.outcome {
        BitOutcome::Skipped { reason, .. } => {
            let mut skipped = TestCaseStatus::skipped();
            skipped.set_message(reason.as_str());
            skipped
        }
        BitOutcome::Changed { .. } => {
            let mut failed = TestCaseStatus::non_success(NonSuccessKind::Failure);
            failed.set_message(format!("{} {} lost: {}", b.path, b.label(), b.describe()));
            failed
        }
        BitOutcome::Kept { .. } => TestCaseStatus::success(),
    }
}

/// A row's status: a skip, a loss (a failure, except on the baseline,
/// whose losses are the bug being reproduced), or a pass.
fn status(r: &ModeResult, baseline: bool) -> TestCaseStatus {
    match &r.outcome {
        Outcome::Skipped { reason } => {
            let mut skipped = TestCaseStatus::skipped();
            skipped.set_message(reason.as_str());
            skipped
        }
        // pytest's convention for an expected failure: a skip that says so.
        Outcome::Measured {
            known_defect: Some(why),
            ..
        } => {
            let mut skipped = TestCaseStatus::skipped();
            skipped.set_message(format!(
                "expected failure, known defect outside the masks under test: {why}"
            ));
            skipped
        }
        Outcome::Measured { observed, .. } if r.lost() && !baseline => {
            let mut failed = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let after = r.after().unwrap_or_default();
            failed.set_message(format!("{} lost: {after}", r.label()));
            failed.set_description(format!("observed {observed} (PTE {})", r.ptes()));
            failed
        }
        Outcome::Measured { .. } => TestCaseStatus::success(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows::{CacheMode, ProbePath};
    use crate::record::tests::record_with;
    use crate::record::ResultRecord;

    #[test]
    fn candidate_losses_fail_baseline_losses_reproduce() {
        let mut record = record_with("baseline", &[("WT", "UC")]);
        let candidate = record_with("candidate", &[("WP", "WC")]);
        record.results.extend(candidate.results);
        let skipped = ModeResult {
            path: ProbePath::HugePfnFault,
            requested: CacheMode::Wb,
            entry: None,
            outcome: Outcome::Skipped {
                reason: "Xen PV has no 2 MiB pages".into(),
            },
        };
        let row = ResultRecord::new("candidate", Env::Xen, skipped);
        record.results.push(row);
        record.verdict = Verdict::Fail;
        let xml = render(&record);
        assert!(xml.starts_with("<?xml version=\"1.0\""), "{xml}");
        assert!(
            xml.contains("tests=\"14\" skipped=\"1\" failures=\"1\" errors=\"0\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"patverify.baseline.native\" tests=\"7\""),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"vma_set_page_prot.WP\" classname=\"patverify.candidate.native\"")
                && xml.contains("<failure message=\"WP lost: WC\""),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"Xen PV has no 2 MiB pages\"/>"),
            "{xml}"
        );
    }

    #[test]
    fn a_baseline_that_keeps_everything_fails_and_errors_are_named() {
        let mut record = record_with("baseline", &[]);
        record.verdict = Verdict::Error;
        record.message = "build failed: <a> & \"b\"".into();
        let xml = render(&record);
        assert!(
            xml.contains("name=\"baseline reproduces the bug\""),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"the baseline kept every mode: bug not reproduced\""),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"build failed: &lt;a&gt; &amp; &quot;b&quot;\""),
            "{xml}"
        );
        assert!(
            xml.contains("tests=\"8\" skipped=\"0\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
    }
}
