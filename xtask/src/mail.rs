//! `cargo xtask report mail RUN.json`: a plain-text reply to the patch's
//! mailing-list thread — `Re:` its subject, threaded on its Message-Id when
//! the patch came as a mail, the verdict, the rows a variant lost, how it
//! was run, and a `Tested-by:` trailer when the candidate passed (b4 and
//! patchwork pick that trailer up). Lines stay within 72 columns.

use crate::flags::Mail;
use crate::record::{CandidateRecord, CandidateVerdict, PatchRecord, Record};
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::Result;

const WIDTH: usize = 72;

/// The reply for `mail.candidate` (or the first candidate that came as a
/// mail, else the first) of `record`.
pub fn reply(record: &Record, mail: &Mail) -> Result<String> {
    let (candidate, patch) = pick(record, mail.candidate.as_deref())?;
    let mut out = headers(patch);
    out += "\n";
    out += &verdict(record, candidate);
    out += &lost_rows(record);
    out += &how_it_ran(record, &mail.record.display().to_string());
    if candidate.verdict == CandidateVerdict::Pass {
        let name = mail.name.clone().or_else(|| git_config("user.name"));
        let email = mail.email.clone().or_else(|| git_config("user.email"));
        let (Some(name), Some(email)) = (name, email) else {
            return Err(fail(
                Kind::Setup,
                "no name or address for the Tested-by: set git config user.name/user.email or pass --name/--email",
            ));
        };
        out += &format!("\nTested-by: {name} <{email}>\n");
    }
    Ok(out)
}

/// The candidate to report on and its patch.
fn pick<'a>(
    record: &'a Record,
    wanted: Option<&str>,
) -> Result<(&'a CandidateRecord, &'a PatchRecord)> {
    let patch_of = |c: &CandidateRecord| record.patches.iter().find(|p| p.file == c.patch);
    let mut pairs = record
        .candidates
        .iter()
        .filter_map(|c| Some((c, patch_of(c)?)));
    let found = match wanted {
        Some(name) => pairs.find(|(c, _)| c.name == name),
        None => {
            let all: Vec<_> = pairs.collect();
            let mailed = all.iter().find(|(_, p)| p.message_id.is_some());
            mailed.or(all.first()).copied()
        }
    };
    found.ok_or_else(|| {
        let why = match wanted {
            Some(name) => format!("the record has no candidate {name:?}"),
            None => "the record has no candidate (is it a verify's record?)".to_string(),
        };
        fail(Kind::Setup, why)
    })
}

fn headers(patch: &PatchRecord) -> String {
    let subject = patch
        .subject
        .clone()
        .or_else(|| patch.series.first().cloned())
        .unwrap_or_else(|| patch.file.rsplit('/').next().unwrap_or("").to_string());
    let mut out = format!("Subject: Re: {subject}\n");
    if let Some(id) = &patch.message_id {
        out += &format!("In-Reply-To: <{id}>\nReferences: <{id}>\n");
    }
    out
}

fn verdict(record: &Record, candidate: &CandidateRecord) -> String {
    let kernel = record
        .kernel
        .as_ref()
        .map_or("the kernel", |k| k.version.as_str());
    let text = match candidate.verdict {
        CandidateVerdict::Pass => format!(
            "patverify built {kernel} without and with this patch and booted both, natively and as a Xen PV dom0. With the patch every cache mode the kernel without it loses survives, and none is lost; without it some are lost (below), so the test reproduces the bug and the patch fixes it."
        ),
        CandidateVerdict::Fail => format!(
            "patverify built {kernel} without and with this patch and booted both, natively and as a Xen PV dom0. With the patch these cache modes are still lost: {}.",
            candidate.lost.join("; ")
        ),
        CandidateVerdict::NotReproduced => format!(
            "patverify built {kernel} without and with this patch and booted both, but the kernel without it lost no cache mode either, so this run proves nothing about the patch."
        ),
    };
    wrap(&text) + "\n"
}

/// The modes the baseline lost, grouped for a list reader: per
/// environment, each lost mode with the paths that lost it (the full table
/// stays in the record).
fn lost_rows(record: &Record) -> String {
    // (env, "WT -> UC") → the paths, in report order.
    let mut groups: Vec<((String, String), Vec<String>)> = Vec::new();
    for r in record.results.iter() {
        if r.variant != "baseline" || !r.result.lost_in_scope() {
            continue;
        }
        let Some(after) = r.result.after() else {
            continue;
        };
        let key = (
            r.env.to_string(),
            format!("{} -> {after}", r.result.label()),
        );
        let path = crate::stages::compare::path_label(r.result.path);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, paths)) => paths.push(path),
            None => groups.push((key, vec![path])),
        }
    }
    let lines: Vec<String> = groups
        .iter()
        .map(|((env, mode), paths)| {
            let text = format!("{env}: {mode} on {}", paths.join(", "));
            // Two columns of indent, four on continuation lines.
            wrap_to(&text, WIDTH - 4).replace('\n', "\n    ")
        })
        .map(|l| format!("  {l}"))
        .collect();
    let mut out = String::new();
    if !lines.is_empty() {
        out += &format!("\nLost without the patch:\n{}\n", lines.join("\n"));
        for (mark, what) in [
            ('†', "a kernel function on a VMA the harness made"),
            ('‡', "a kernel function called directly"),
        ] {
            if lines.iter().any(|l| l.contains(mark)) {
                out += &format!("{mark} synthetic: {what}.\n");
            }
        }
    }
    let defects: std::collections::BTreeSet<&str> = record
        .results
        .iter()
        .filter_map(|r| r.result.known_defect())
        .collect();
    for why in defects {
        let text = format!("Not counted, lost with and without the patch (a known defect outside the masks under test): {why}.");
        out += &format!("\n{}\n", wrap(&text));
    }
    out
}

fn how_it_ran(record: &Record, path: &str) -> String {
    let kernel = record.kernel.as_ref();
    let source = kernel.map_or("?", |k| k.source.as_str());
    let toolchain = record.toolchain.clone().unwrap_or_default();
    let text = format!(
        "How: {source}; {}; {}; {}; QEMU TCG: {}; Xen: {}. Full record: {path}",
        toolchain.rustc, toolchain.clang, toolchain.bindgen, toolchain.qemu, toolchain.xen
    );
    format!("\n{}\n", wrap(&text))
}

/// `text` wrapped at word boundaries to `WIDTH` columns.
fn wrap(text: &str) -> String {
    wrap_to(text, WIDTH)
}

fn wrap_to(text: &str, width: usize) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

fn git_config(key: &str) -> Option<String> {
    let (ok, value) = Command::new("git")
        .args(["config", key])
        .output_quiet()
        .ok()?;
    let value = value.trim();
    (ok && !value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Direction;
    use crate::record::tests::record_with;

    fn mailed_record(verdict: CandidateVerdict) -> Record {
        let mut record = record_with("baseline", &[("WT", "UC"), ("WP", "WC")]);
        record.patches.push(PatchRecord {
            file: "/p/fix.mbox".into(),
            sha256: String::new(),
            direction: Direction::Forward,
            series: vec!["x86/mm: fix".into()],
            parts: vec!["/p/fix.mbox".into()],
            part_sha256: vec![String::new()],
            message_id: Some("20260101.fix@example.org".into()),
            subject: Some(
                "[PATCH v3] x86/mm: fix PAT bit missing from page protection modify mask".into(),
            ),
        });
        record.candidates.push(CandidateRecord {
            name: "candidate".into(),
            patch: "/p/fix.mbox".into(),
            verdict,
            lost: vec![],
            only_synthetic: false,
        });
        record
    }

    fn mail() -> Mail {
        Mail {
            record: "/runs/verify.json".into(),
            candidate: None,
            name: Some("A Tester".into()),
            email: Some("tester@example.org".into()),
        }
    }

    #[test]
    fn a_passing_candidate_gets_a_threaded_reply_with_tested_by() {
        let text = reply(&mailed_record(CandidateVerdict::Pass), &mail()).unwrap();
        assert!(text.starts_with("Subject: Re: [PATCH v3] x86/mm: fix PAT bit missing from page protection modify mask\nIn-Reply-To: <20260101.fix@example.org>\nReferences: <20260101.fix@example.org>\n\n"), "{text}");
        assert!(
            text.contains("  native: WT -> UC on vma_set_page_prot†"),
            "{text}"
        );
        assert!(
            text.contains("† synthetic: a kernel function on a VMA"),
            "{text}"
        );
        assert!(
            text.ends_with("\nTested-by: A Tester <tester@example.org>\n"),
            "{text}"
        );
        let body = text.split("\n\n").skip(1).collect::<Vec<_>>().join("\n\n");
        assert!(body.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn lost_modes_are_grouped_with_the_paths_that_lost_them() {
        let lost = [("WT", "UC"), ("WP", "WC")];
        let ktap = crate::stages::ktap::tests::sample_ktap_paths(&[
            ("vma_set_page_prot", &lost),
            ("mmap_fault", &lost),
            ("mprotect", &lost),
            ("devmem_mprotect", &lost),
        ]);
        let report = crate::stages::ktap::parse_ktap(&ktap).unwrap();
        let mut record = Record::default();
        for r in report.results {
            let row = crate::record::ResultRecord::new("baseline", crate::model::Env::Native, r);
            record.results.push(row);
        }
        let text = lost_rows(&record);
        assert!(
            text.contains(
                "  native: WT -> UC on vma_set_page_prot†, mmap_fault, devmem_mprotect\n"
            ),
            "{text}"
        );
        // mprotect kept what mmap_fault installed: not listed again.
        assert!(
            !text.contains("mprotect,") && text.lines().count() <= 5,
            "{text}"
        );
    }

    #[test]
    fn a_failing_candidate_gets_no_tested_by() {
        let text = reply(&mailed_record(CandidateVerdict::Fail), &mail()).unwrap();
        assert!(!text.contains("Tested-by"), "{text}");
        assert!(text.contains("still lost"), "{text}");
    }

    #[test]
    fn a_record_without_candidates_is_a_setup_error() {
        let record = record_with("probe", &[]);
        let err = reply(&record, &mail()).unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            Kind::Setup.exit_code()
        );
    }
}
