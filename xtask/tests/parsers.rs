//! Property tests for every parser of outside input: the guest's console and
//! KTAP report, patches and mailboxes, kernel versions and
//! min-tool-version.sh, JSON records. Random and mutated inputs never panic;
//! what is refused is refused with a message that says why.

use proptest::prelude::*;
use xtask::model::rows::{self, CacheMode, ProbePath};
use xtask::record::Record;
use xtask::stages::ktap;
use xtask::stages::{config, patch, source, toolchain};

/// A report in the module's format: every path × mode and every PAT entry
/// of `pat_index`, each kept or lost as `lost` says (a lost entry becomes
/// entry 0, WB), PAT layout and MSR consistent.
fn module_report(lost: &[bool]) -> String {
    const LAYOUT: [&str; 8] = ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"];
    let mut out = String::from("KTAP version 1\n");
    out += &format!("# patverify: pat_layout={}\n", LAYOUT.join(" "));
    out += "# patverify: pat_msr=0x0407050600070106\n";
    out += &format!("1..{ROWS}\n");
    let mut n = 0;
    for path in ProbePath::ALL {
        for key in rows::row_keys(*path) {
            let gone = lost.get(n).copied().unwrap_or(false);
            n += 1;
            let (name, diag, gone) = match key {
                rows::RowKey::Mode(mode) => {
                    let gone = gone && mode != CacheMode::Wb;
                    let observed = if gone { CacheMode::Wb } else { mode };
                    let diag = format!("requested={mode} observed={observed}");
                    (format!("{path}.{mode}"), diag, gone)
                }
                rows::RowKey::Entry(entry) => {
                    let gone = gone && entry != 0;
                    let after = if gone { 0 } else { entry };
                    let (requested, observed) = (LAYOUT[entry as usize], LAYOUT[after as usize]);
                    let diag = format!(
                        "entry={entry} requested={requested} entry_after={after} observed={observed}"
                    );
                    (format!("{path}.{entry}"), diag, gone)
                }
            };
            // A fault starts from an empty slot and says what it asked for.
            let before = if path.is_fault() {
                format!("prot_requested=0x{n:016x} pte_before=none")
            } else {
                format!("pte_before=0x{n:016x}")
            };
            out += &format!("# {name}: {diag} {before} pte_after=0x{n:016x}\n");
            let status = if gone { "not ok" } else { "ok" };
            out += &format!("{status} {n} {name}\n");
        }
    }
    assert_eq!(n, ROWS);
    out
}

/// One of a few ways a line can go wrong on a serial console.
fn mutate(text: &str, op: u8, at: usize, byte: u8) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = at % lines.len().max(1);
    let mut lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match op % 5 {
        0 => {
            lines.remove(i);
        }
        1 => {
            let j = (i + 1) % lines.len();
            lines.swap(i, j)
        }
        2 => {
            let line = lines[i].clone();
            lines.insert(i, line);
        }
        3 => {
            let mut bytes = lines[i].clone().into_bytes();
            if !bytes.is_empty() {
                let j = at % bytes.len();
                bytes[j] = byte;
            }
            lines[i] = String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => {
            let keep = at % (lines[i].len() + 1);
            lines[i].truncate(keep)
        }
    }
    lines.join("\n") + "\n"
}

/// Rows in a full report: every path × every mode, and the 8 PAT entries.
const ROWS: usize = 11 * 6 + 8;

proptest! {
    // No regression files: the cases that matter are the named tests below.
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_module_report_parses_back_row_for_row(lost in prop::collection::vec(any::<bool>(), ROWS)) {
        let report = ktap::parse_ktap(&module_report(&lost)).unwrap();
        prop_assert_eq!(report.results.len(), ROWS);
        for (i, row) in report.results.iter().enumerate() {
            // A later step that keeps the wrong entry the step before it
            // installed lost nothing itself; PAT entry 4 (WB) falling to
            // entry 0 (WB) moved without changing the type.
            let lost_before = row.path.previous_step().is_some_and(|before| {
                report.results.iter().zip(&lost)
                    .any(|(r, gone)| r.path == before && r.key() == row.key() && *gone)
            });
            let want_lost = lost[i]
                && row.key() != rows::RowKey::Mode(CacheMode::Wb)
                && row.entry != Some(0)
                && row.entry != Some(4)
                && !lost_before;
            prop_assert_eq!(row.lost(), want_lost);
        }
    }

    #[test]
    fn a_mutated_report_is_parsed_or_refused_with_a_reason(
        lost in prop::collection::vec(any::<bool>(), ROWS),
        op in any::<u8>(), at in any::<usize>(), byte in any::<u8>(),
    ) {
        let text = mutate(&module_report(&lost), op, at, byte);
        if let Err(why) = ktap::parse_ktap(&text) {
            prop_assert!(!why.is_empty());
        }
    }

    #[test]
    fn random_text_never_panics_the_report_parsers(text in ".{0,400}") {
        if let Err(why) = ktap::parse_ktap(&text) {
            prop_assert!(!why.is_empty());
        }
        let _ = ktap::extract(&text);
        let _ = ktap::extract(&format!("{}\n{text}\n{} lines=3 ====\n", ktap::BEGIN, ktap::END));
    }

    #[test]
    fn random_text_never_panics_the_patch_readers(text in "(From |Subject: |--- a/|\\+\\+\\+ b/|@@ |[a-z +-]{0,20}\n){0,30}") {
        let mails = patch::split_mailbox(&text);
        prop_assert!(mails.len() <= text.matches("@@ ").count());
        let _ = patch::touched_files(&text);
        let _ = patch::first_failed_hunk(&text);
        if let Err(why) = patch::check_is_patch("p", &text) {
            prop_assert!(!why.to_string().is_empty());
        }
    }

    #[test]
    fn random_text_never_panics_the_version_readers(text in "[A-Za-z0-9_=.\\-\n ]{0,200}", tool in "(rustc|bindgen|llvm|[a-z]{1,6})") {
        let _ = source::kernel_version(&text);
        let _ = config::parse(&text);
        let _ = toolchain::min_tool_version(&text, &tool);
        if let Some((major, minor, _)) = toolchain::version_triple(&text) {
            prop_assert!(text.contains(&major.to_string()) && text.contains(&minor.to_string()));
        }
        let _ = toolchain::choose_for(Some(&text));
    }

    #[test]
    fn random_json_is_refused_with_a_reason(text in "\\{(\"[a-z_]{1,12}\": ?(\"[a-z]{0,5}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}), ?){0,6}\\}") {
        match Record::parse(&text) {
            Ok(record) => prop_assert!((xtask::record::OLDEST_READABLE_VERSION..=xtask::record::SCHEMA_VERSION).contains(&record.schema_version)),
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }
}

#[test]
fn a_record_with_one_field_broken_names_the_field() {
    let good = r#"{"schema_version": 2, "verdict": "pass", "exit_code": 0, "message": "",
        "kernel": null, "toolchain": null, "patches": [], "variants": [], "builds": [],
        "environments": [], "results": [{"variant": "baseline", "env": "native",
        "path": "mprotect", "requested": "WT", "status": "measured", "observed": "UC",
        "pte_before": "0x00000000000000bf", "pte_after": "0x000000000000003f"}], "timings": []}"#;
    // A version 2 record (before pat_index) still reads; version 1 does not.
    let record = Record::parse(good).unwrap();
    assert!(record.results[0].result.lost());
    let v1 = good.replace("\"schema_version\": 2", "\"schema_version\": 1");
    assert!(Record::parse(&v1).unwrap_err().contains("versions 2 to 7"));
    for (from, to, says) in [
        ("\"WT\"", "\"WX\"", "not a CacheMode"),
        ("\"mprotect\"", "\"mmap\"", "not a ProbePath"),
        ("\"native\"", "\"kvm\"", "unknown variant"),
        ("0x000000000000003f", "0xZZ", "not a hex PTE value"),
        ("\"measured\"", "\"maybe\"", "unknown variant"),
    ] {
        let broken = good.replacen(from, to, 1);
        let why = Record::parse(&broken).unwrap_err();
        assert!(why.contains(says), "{from} → {to}: {why}");
    }
}
