//! Reading what a guest printed: the report between the init's markers on the
//! console, the boot failures around it, and the module's KTAP v1.

use crate::model::bits::{bit_rows, KeptBits};
use crate::model::pagemap::{PagemapOutcome, PagemapRow};
use crate::model::rows::{
    declared_skip, judge_steps, pat_layout_of_msr, row_keys, skip_observed, CacheMode, ModeResult,
    Outcome, ProbePath, Pte, Report,
};
use crate::model::Env;

pub use patverify_protocol::{GUEST_ERROR, REPORT_BEGIN as BEGIN, REPORT_END as END};

/// Why a boot produced no usable report.
#[derive(Debug, PartialEq, Eq)]
pub enum BootProblem {
    Panic(String),
    Oops(String),
    GuestError(String),
    NoReport,
    Truncated(String),
}

impl std::fmt::Display for BootProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootProblem::Panic(line) => write!(f, "kernel panic: {line}"),
            BootProblem::Oops(line) => write!(f, "kernel oops: {line}"),
            BootProblem::GuestError(msg) => write!(f, "guest /init failed: {msg}"),
            BootProblem::NoReport => write!(f, "the guest printed no report"),
            BootProblem::Truncated(why) => write!(f, "truncated or garbled report: {why}"),
        }
    }
}

const PANIC_MARKERS: &[&str] = &["Kernel panic - not syncing", "(XEN) Panic on CPU"];
const OOPS_MARKERS: &[&str] = &[
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "Unable to handle kernel",
];

/// Extracts the report from a console log (CRs and ANSI noise tolerated).
pub fn extract(console: &str) -> Result<String, BootProblem> {
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let find = |markers: &[&str]| {
        lines
            .iter()
            .find(|l| markers.iter().any(|m| l.contains(m)))
            .map(|l| l.trim().to_string())
    };
    // The first sign of trouble names it: an oops that the kernel then
    // turns into a panic (the boots run with oops=panic) is an oops.
    if let Some(line) = find(&[PANIC_MARKERS, OOPS_MARKERS].concat()) {
        return Err(if PANIC_MARKERS.iter().any(|m| line.contains(m)) {
            BootProblem::Panic(line)
        } else {
            BootProblem::Oops(line)
        });
    }
    if let Some(line) = lines.iter().find(|l| l.contains(GUEST_ERROR)) {
        let msg = line
            .split_once(GUEST_ERROR)
            .map(|x| x.1)
            .unwrap_or_default();
        return Err(BootProblem::GuestError(
            msg.trim().trim_end_matches("====").trim().to_string(),
        ));
    }
    let Some(begin) = lines.iter().position(|l| l.contains(BEGIN)) else {
        return Err(BootProblem::NoReport);
    };
    let Some(end_offset) = lines[begin + 1..].iter().position(|l| l.contains(END)) else {
        return Err(BootProblem::Truncated("no end marker".into()));
    };
    let body = &lines[begin + 1..begin + 1 + end_offset];
    let end_line = lines[begin + 1 + end_offset];
    let expected: Option<usize> = end_line
        .split_once("lines=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    match expected {
        Some(n) if n == body.len() => Ok(body.iter().map(|l| format!("{l}\n")).collect()),
        Some(n) => Err(BootProblem::Truncated(format!(
            "the guest sent {n} lines, {} arrived",
            body.len()
        ))),
        None => Err(BootProblem::Truncated(
            "end marker without a line count".into(),
        )),
    }
}

fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace().filter_map(|kv| kv.split_once('='))
}

/// Checks that a report has every declared row exactly once, and skips only
/// where a skip is declared for `env` and the kernel `series` (e.g. (6, 1)):
/// a report cannot pass by omission.
pub fn check_rows(report: &Report, env: Env, series: Option<(u32, u32)>) -> Result<(), String> {
    if report.kept_bits.is_none() {
        return Err("no kept_bits line: the bits the masks keep cannot be checked".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &report.results {
        let name = format!("{}.{}", r.path, r.key());
        if !seen.insert((r.path, r.key())) {
            return Err(format!("row {name} appears twice"));
        }
        if let Some(reason) = r.skip_reason() {
            let layout = &report.pat_layout;
            let Some(declared) = declared_skip(r.path, r.requested, env, layout, series) else {
                return Err(format!(
                    "undeclared skip: {name} ({reason:?}) may not be skipped under {env}"
                ));
            };
            skip_observed(declared, reason, layout)
                .map_err(|e| format!("skip of {name} not shown by what it observed: {e}"))?;
        }
    }
    for &path in ProbePath::ALL {
        for key in row_keys(path) {
            if !seen.contains(&(path, key)) {
                return Err(format!("row {path}.{key} is missing"));
            }
        }
    }
    Ok(())
}

/// What the parser has read so far.
#[derive(Default)]
struct Reading {
    plan: Option<usize>,
    pat_layout: Vec<CacheMode>,
    pat_msr: Option<String>,
    kept_bits: Option<KeptBits>,
    /// `# PATH.MODE: key=value …` lines, by test name.
    diagnostics: Vec<(String, Vec<(String, String)>)>,
    results: Vec<ModeResult>,
}

/// Parses the module's KTAP v1 and checks it is complete and consistent.
/// `/init`'s pagemap rows, between their markers on the console: each
/// `ok` a kept bit, `not ok` a lost one (`# ERROR`: not measured), `# SKIP`
/// with its reason; the diagnostic line before each gives the entries. A
/// console without them (an `/init` that reported) is an error: no row may
/// pass by omission.
pub fn pagemap_rows(console: &str) -> Result<Vec<PagemapRow>, String> {
    use patverify_protocol::{PAGEMAP_BEGIN, PAGEMAP_END};
    let start = console.find(PAGEMAP_BEGIN).ok_or("no pagemap rows")? + PAGEMAP_BEGIN.len();
    let end = console[start..]
        .find(PAGEMAP_END)
        .ok_or("pagemap rows cut short")?;
    let mut rows = Vec::new();
    let mut plan = None;
    let mut entries: Option<(String, String)> = None;
    for line in console[start..start + end].lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("1..") {
            plan = n.parse::<usize>().ok();
        } else if let Some((_, kvs)) = line.strip_prefix("# ").and_then(|r| r.split_once(": ")) {
            let found: Vec<(&str, &str)> = key_values(kvs).collect();
            let get = |k: &str| {
                found
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            };
            entries = get("before").zip(get("after"));
        } else if let Some(result) = tap_result(line) {
            let TapLine {
                ok,
                name,
                directive,
                ..
            } = result?;
            let outcome = match (ok, directive) {
                (true, Some(d)) if d.starts_with("SKIP") => PagemapOutcome::Skipped {
                    reason: d[4..].trim().to_string(),
                },
                (true, _) => PagemapOutcome::Kept,
                (false, Some(d)) if d.starts_with("ERROR") => PagemapOutcome::Error {
                    reason: d[5..].trim().to_string(),
                },
                (false, _) => PagemapOutcome::Lost,
            };
            let (before, after) = entries.take().unzip();
            rows.push(PagemapRow {
                row: name.to_string(),
                outcome,
                before,
                after,
            });
        }
    }
    if plan != Some(rows.len()) {
        return Err(format!(
            "pagemap plan says {plan:?} rows, {} reported",
            rows.len()
        ));
    }
    Ok(rows)
}

/// One (K)TAP result line.
#[derive(Debug, PartialEq, Eq)]
pub struct TapLine<'a> {
    pub ok: bool,
    pub number: usize,
    /// The test's name (empty when the line has only a directive).
    pub name: &'a str,
    /// What follows ` # `: `SKIP reason`, `TODO …`.
    pub directive: Option<&'a str>,
}

/// `ok N NAME [# DIRECTIVE]` / `not ok N NAME [# DIRECTIVE]`: None when the
/// line is no result line, an error when it is one in bad form. The
/// module's report and the kernel's selftests are read with it.
pub fn tap_result(line: &str) -> Option<Result<TapLine<'_>, String>> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else {
        return None;
    };
    let (number, name) = rest.split_once(' ').unwrap_or((rest, ""));
    let Ok(number) = number.parse::<usize>() else {
        return Some(Err(format!("bad test number in {line:?}")));
    };
    let (name, directive) = match (name.strip_prefix("# "), name.split_once(" # ")) {
        (Some(directive), _) => ("", Some(directive.trim())),
        (None, Some((name, directive))) => (name.trim(), Some(directive.trim())),
        (None, None) => (name.trim(), None),
    };
    Some(Ok(TapLine {
        ok,
        number,
        name,
        directive,
    }))
}

pub fn parse_ktap(text: &str) -> Result<Report, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("KTAP version 1") {
        return Err("does not start with \"KTAP version 1\"".into());
    }
    let mut reading = Reading::default();
    for line in lines {
        reading.line(line)?;
    }
    let plan = reading.plan.ok_or("no test plan line")?;
    if plan != reading.results.len() {
        return Err(format!(
            "plan says {plan} tests, {} reported",
            reading.results.len()
        ));
    }
    if reading.pat_layout.len() != 8 {
        return Err(format!(
            "PAT layout has {} entries, not 8",
            reading.pat_layout.len()
        ));
    }
    if let Some(msr) = reading
        .pat_msr
        .as_deref()
        .and_then(|m| m.parse::<Pte>().ok())
    {
        let decoded = pat_layout_of_msr(msr.0)?;
        if decoded[..] != reading.pat_layout[..] {
            let names =
                |layout: &[CacheMode]| -> Vec<&str> { layout.iter().map(|m| m.name()).collect() };
            return Err(format!(
                "the PAT MSR {msr} decodes to {} but the kernel reports the layout {}",
                names(&decoded).join(" "),
                names(&reading.pat_layout).join(" ")
            ));
        }
    }
    let mut results = reading.results;
    judge_steps(&mut results, &reading.pat_layout);
    let bits = reading
        .kept_bits
        .as_ref()
        .map_or_else(Vec::new, |kept| bit_rows(&results, kept));
    Ok(Report {
        pat_layout: reading.pat_layout,
        pat_msr: reading.pat_msr,
        results,
        kept_bits: reading.kept_bits,
        bits,
    })
}

impl Reading {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if let Some(rest) = line.strip_prefix("# patverify: ") {
            if let Some(layout) = rest.strip_prefix("pat_layout=") {
                self.pat_layout = layout
                    .split_whitespace()
                    .map(|m| m.parse().map_err(|e| format!("PAT layout: {e}")))
                    .collect::<Result<_, String>>()?;
            } else if let Some(msr) = rest.strip_prefix("pat_msr=") {
                self.pat_msr = Some(msr.to_string());
            } else if let Some(bits) = rest.strip_prefix("kept_bits=") {
                self.kept_bits = Some(KeptBits::parse(bits)?);
            }
        } else if let Some(rest) = line.strip_prefix("# ") {
            if let Some((name, kvs)) = rest.split_once(": ") {
                let kvs = key_values(kvs)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                self.diagnostics.push((name.to_string(), kvs));
            }
        } else if let Some(n) = line.strip_prefix("1..") {
            let n = n.parse().map_err(|_| format!("bad plan line {line:?}"))?;
            self.plan = Some(n);
        } else {
            let result = self.result_line(line)?;
            self.results.push(result);
        }
        Ok(())
    }

    /// `ok N PATH.MODE [# SKIP reason]` / `not ok N PATH.MODE`, with its
    /// diagnostic line read earlier.
    fn result_line(&self, line: &str) -> Result<ModeResult, String> {
        let TapLine {
            ok,
            number,
            name,
            directive,
        } = tap_result(line).unwrap_or_else(|| Err(format!("unexpected line {line:?}")))?;
        if number != self.results.len() + 1 {
            return Err(format!("test {number} out of order"));
        }
        let (path, row) = name
            .rsplit_once('.')
            .ok_or_else(|| format!("test name {name:?} is not PATH.MODE"))?;
        let path: ProbePath = path.parse().map_err(|e| format!("{name}: {e}"))?;
        let (requested, entry) = self.row_of(name, path, row)?;
        if let Some(reason) = directive.and_then(|d| d.strip_prefix("SKIP")) {
            if !ok {
                return Err(format!("bad SKIP line {line:?}"));
            }
            let reason = reason.trim().to_string();
            return Ok(ModeResult {
                path,
                requested,
                entry,
                outcome: Outcome::Skipped { reason },
            });
        }
        let outcome = self.measured(name, path, requested, entry)?;
        let result = ModeResult {
            path,
            requested,
            entry,
            outcome,
        };
        if result.kept() != ok {
            return Err(format!(
                "{name}: result {} contradicts observed={}",
                if ok { "ok" } else { "not ok" },
                result.observed().map_or("?", CacheMode::name)
            ));
        }
        Ok(result)
    }

    /// The mode a row requests and, for `pat_index`, its entry: the name's
    /// tail is the mode, or the entry (whose mode the diagnostic line says).
    fn row_of(
        &self,
        name: &str,
        path: ProbePath,
        row: &str,
    ) -> Result<(CacheMode, Option<u8>), String> {
        if !path.rows_by_pat_entry() {
            let mode = row.parse().map_err(|e| format!("{name}: {e}"))?;
            return Ok((mode, None));
        }
        let entry = row
            .parse::<u8>()
            .ok()
            .filter(|e| *e < 8)
            .ok_or_else(|| format!("{name}: {row:?} is not a PAT entry 0..7"))?;
        let mode = self
            .diagnostic(name, "requested")?
            .parse()
            .map_err(|e| format!("{name}: requested: {e}"))?;
        Ok((mode, Some(entry)))
    }

    /// The value of `key` in the diagnostic line of test `name`.
    fn diagnostic(&self, name: &str, key: &str) -> Result<&str, String> {
        let kvs = self
            .diagnostics
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, kvs)| kvs)
            .ok_or_else(|| format!("no diagnostic line for {name}"))?;
        kvs.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("{name}: no {key}="))
    }

    /// The measurement a diagnostic line gives for test `name`.
    /// A fault /init drives starts from an empty slot (`pte_before=none`)
    /// and names what it asked for (`prot_requested=`); every other step
    /// starts from an entry.
    fn measured(
        &self,
        name: &str,
        path: ProbePath,
        requested: CacheMode,
        entry: Option<u8>,
    ) -> Result<Outcome, String> {
        let get = |key: &str| self.diagnostic(name, key);
        if get("observed")? == "none" {
            return Err(format!(
                "{name} was not measured (the guest's /init did not exercise that path)"
            ));
        }
        if get("requested")? != requested.name() {
            return Err(format!(
                "{name}: requested mode {} does not match",
                get("requested")?
            ));
        }
        let field = |key: &str| -> Result<Pte, String> {
            get(key)?.parse().map_err(|e| format!("{name}: {key}: {e}"))
        };
        let fault = path.is_fault();
        let entry_after = match entry {
            Some(_) => Some(
                get("entry_after")?
                    .parse::<u8>()
                    .ok()
                    .filter(|e| *e < 8)
                    .ok_or_else(|| format!("{name}: entry_after is not a PAT entry"))?,
            ),
            None => None,
        };
        Ok(Outcome::Measured {
            observed: get("observed")?
                .parse()
                .map_err(|e| format!("{name}: observed: {e}"))?,
            pte_before: match get("pte_before")? {
                "none" if fault => None,
                "none" => {
                    return Err(format!(
                        "{name}: pte_before=none: only a fault starts from an empty slot"
                    ))
                }
                _ => Some(field("pte_before")?),
            },
            pte_after: field("pte_after")?,
            prot_requested: if fault {
                Some(field("prot_requested")?)
            } else {
                None
            },
            entry_after,
            known_defect: None,
            lost_earlier_at: None,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::model::rows::*;

    /// The `kept_bits=` of a 6.12 kernel with soft-dirty and no userfaultfd.
    pub const SAMPLE_KEPT_BITS: &str = "accessed:0x20 dirty:0x40 saved_dirty:0x400000000000000 special:0x200 uffd_wp:0x0 soft_dirty:0x800 devmap:0x200000000000000 pse:0x80";

    /// A KTAP report in the module's format (what the native baseline prints).
    pub fn sample_ktap(lost: &[(&str, &str)]) -> String {
        sample_ktap_on("vma_set_page_prot", lost)
    }

    /// `sample_ktap` with the six rows on `path`.
    pub fn sample_ktap_on(path: &str, lost: &[(&str, &str)]) -> String {
        let mut s = format!("KTAP version 1\n# patverify: pat_layout=WB WC UC- UC WB WP UC- WT\n# patverify: pat_msr=0x0407050600070106\n# patverify: kept_bits={SAMPLE_KEPT_BITS}\n1..6\n");
        for (i, mode) in CacheMode::ALL.iter().map(|m| m.name()).enumerate() {
            let observed = lost
                .iter()
                .find(|(m, _)| *m == mode)
                .map_or(mode, |(_, o)| *o);
            // A fault starts from an empty slot and says what it asked for.
            let fault = path.parse::<ProbePath>().is_ok_and(|p| p.is_fault());
            let before = if fault {
                format!("prot_requested=0x80000000000000{i:02x} pte_before=none")
            } else {
                format!("pte_before=0x80000000000000{i:02x}")
            };
            s += &format!(
                "# {path}.{mode}: requested={mode} {before} pte_after=0x80000000000000{i:02x} observed={observed}\n"
            );
            let status = if observed == mode { "ok" } else { "not ok" };
            s += &format!("{status} {} {path}.{mode}\n", i + 1);
        }
        s
    }

    pub fn console_with(report: &str) -> String {
        let lines = report.lines().count();
        format!("SeaBIOS\r\n[    0.000000] Linux version 6.12\r\n{BEGIN}\r\n{}{END} lines={lines} ====\r\n[    1.2] reboot: Power down\r\n", report.replace('\n', "\r\n"))
    }

    /// The pagemap section as `/init` prints it (entries in the diagnostics).
    pub fn pagemap_section(soft_dirty: &str, uffd_wp: &str) -> String {
        use patverify_protocol::{PAGEMAP_BEGIN, PAGEMAP_END};
        format!("{PAGEMAP_BEGIN}\r\nKTAP version 1\r\n1..2\r\n# pagemap.soft_dirty: before=0x8180000000001234 after=0x8180000000001234\r\n{soft_dirty} 1 pagemap.soft_dirty\r\n{uffd_wp}\r\n{PAGEMAP_END}\r\n")
    }

    #[test]
    fn the_pagemap_rows_are_read_with_their_entries_and_reasons() {
        let skip = "ok 2 pagemap.uffd_wp # SKIP userfaultfd(): Function not implemented";
        let rows = pagemap_rows(&pagemap_section("ok", skip)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].outcome, PagemapOutcome::Kept);
        assert_eq!(rows[0].before.as_deref(), Some("0x8180000000001234"));
        assert_eq!(
            rows[1].outcome,
            PagemapOutcome::Skipped {
                reason: "userfaultfd(): Function not implemented".into()
            }
        );
        assert_eq!(rows[1].before, None);
        let lost = pagemap_rows(&pagemap_section(
            "not ok",
            "not ok 2 pagemap.uffd_wp # ERROR UFFDIO_API: EINVAL",
        ))
        .unwrap();
        assert_eq!(lost[0].outcome, PagemapOutcome::Lost);
        assert!(lost[0].failed() && lost[1].failed());
        assert!(
            matches!(&lost[1].outcome, PagemapOutcome::Error { reason } if reason == "UFFDIO_API: EINVAL")
        );
        // No pass by omission: a missing section, or a row short of the plan.
        assert!(pagemap_rows("no rows here").is_err());
        assert!(pagemap_rows(&pagemap_section("ok", "")).is_err());
    }

    #[test]
    fn only_the_predicted_2mib_losses_are_a_known_defect() {
        let lost = [("WT", "UC"), ("WP", "WC")];
        let huge = parse_ktap(&sample_ktap_on("huge_pfn_fault", &lost)).unwrap();
        let (wt, wp) = (&huge.results[4], &huge.results[5]);
        assert_eq!(wt.known_defect(), Some(PMD_PAT_BIT_DEFECT));
        assert_eq!(wp.known_defect(), Some(PMD_PAT_BIT_DEFECT));
        assert!(wt.lost() && !wt.lost_in_scope());
        // The same losses on a 4 KiB path are the bug under test.
        let small = parse_ktap(&sample_ktap_on("vma_set_page_prot", &lost)).unwrap();
        assert!(small.results.iter().all(|r| r.known_defect().is_none()));
        assert!(small.results[4].lost_in_scope());
        // Another outcome on the 2 MiB path is judged as usual.
        let other = parse_ktap(&sample_ktap_on(
            "huge_pfn_fault",
            &[("WT", "WB"), ("WC", "UC-")],
        ));
        let other = other.unwrap();
        assert!(other.results.iter().all(|r| r.known_defect().is_none()));
        assert!(other.results[4].lost_in_scope() && other.results[1].lost_in_scope());
    }

    /// One native report of several paths, each with its own lost modes.
    pub fn sample_ktap_paths(paths: &[(&str, &[(&str, &str)])]) -> String {
        let mut out = format!("KTAP version 1\n# patverify: pat_layout=WB WC UC- UC WB WP UC- WT\n# patverify: pat_msr=0x0407050600070106\n# patverify: kept_bits={SAMPLE_KEPT_BITS}\n");
        out += &format!("1..{}\n", 6 * paths.len());
        for (n, (path, lost)) in paths.iter().enumerate() {
            let rows = sample_ktap_on(path, lost);
            for line in rows.lines().skip(5) {
                match line.split_once(' ') {
                    Some(("ok", rest)) => {
                        let (num, tail) = rest.split_once(' ').unwrap();
                        let num: usize = num.parse().unwrap();
                        out += &format!("ok {} {tail}\n", num + 6 * n);
                    }
                    Some(("not", rest)) => {
                        let rest = rest.strip_prefix("ok ").unwrap();
                        let (num, tail) = rest.split_once(' ').unwrap();
                        let num: usize = num.parse().unwrap();
                        out += &format!("not ok {} {tail}\n", num + 6 * n);
                    }
                    _ => out += &format!("{line}\n"),
                }
            }
        }
        out
    }

    fn judged(report: &Report, path: &str, mode: &str) -> Judgment {
        let row = report
            .results
            .iter()
            .find(|r| r.path.name() == path && r.requested.name() == mode);
        row.unwrap().judgment()
    }

    /// One report of a mapping's two steps, each with its lost modes.
    fn steps(
        first: &str,
        first_lost: &[(&str, &str)],
        then: &str,
        then_lost: &[(&str, &str)],
    ) -> Report {
        parse_ktap(&sample_ktap_paths(&[
            (first, first_lost),
            (then, then_lost),
        ]))
        .unwrap()
    }

    #[test]
    fn a_step_after_a_step_after_a_lost_fault_names_the_fault() {
        let lost = [("WT", "UC")];
        let r = parse_ktap(&sample_ktap_paths(&[
            ("mmap_fault", &lost),
            ("mprotect", &lost),
            ("mremap", &lost),
        ]))
        .unwrap();
        let at_fault = Judgment::LostEarlier(ProbePath::MmapFault);
        assert_eq!(judged(&r, "mremap", "WT"), at_fault);
        // Lost by mprotect() and moved as it was: lost at mprotect.
        let r = parse_ktap(&sample_ktap_paths(&[
            ("mprotect", &lost),
            ("mremap", &lost),
        ]))
        .unwrap();
        let at_mprotect = Judgment::LostEarlier(ProbePath::Mprotect);
        assert_eq!(judged(&r, "mremap", "WT"), at_mprotect);
    }

    #[test]
    fn a_later_step_is_judged_by_the_entry_it_was_given() {
        let lost = [("WT", "UC"), ("WP", "WC")];
        // The fault installed UC for WT; mprotect() kept UC: lost at the fault.
        let r = steps("mmap_fault", &lost, "mprotect", &lost);
        assert_eq!(judged(&r, "mmap_fault", "WT"), Judgment::Lost);
        assert_eq!(
            judged(&r, "mprotect", "WT"),
            Judgment::LostEarlier(ProbePath::MmapFault)
        );
        assert_eq!(
            Judgment::LostEarlier(ProbePath::MmapFault).describe(Some(CacheMode::Uc)),
            "kept UC, lost earlier at mmap_fault"
        );
        let wt = r
            .results
            .iter()
            .find(|x| x.path == ProbePath::Mprotect && x.requested == CacheMode::Wt);
        assert!(!wt.unwrap().lost() && !wt.unwrap().kept());
        // mprotect() changed the wrong entry again: a loss of its own.
        let worse = [("WT", "WB"), ("WP", "WC")];
        let r = steps("mmap_fault", &lost, "mprotect", &worse);
        assert_eq!(judged(&r, "mprotect", "WT"), Judgment::Lost);
        // The fault kept WT, mprotect() lost it: mprotect()'s loss.
        let r = steps("mmap_fault", &[], "mprotect", &lost);
        assert_eq!(judged(&r, "mprotect", "WT"), Judgment::Lost);
        assert_eq!(judged(&r, "mmap_fault", "WT"), Judgment::Kept);
    }

    #[test]
    fn the_known_pmd_defect_is_marked_only_where_the_entry_was_installed() {
        let predicted = [("WT", "UC"), ("WP", "WC")];
        // The fault installed the predicted entry; mprotect() kept it.
        let r = steps(
            "huge_pfn_fault",
            &predicted,
            "huge_pfn_mprotect",
            &predicted,
        );
        assert_eq!(judged(&r, "huge_pfn_fault", "WT"), Judgment::KnownDefect);
        assert_eq!(
            judged(&r, "huge_pfn_mprotect", "WT"),
            Judgment::LostEarlier(ProbePath::HugePfnFault)
        );
        assert!(r.results.iter().all(|x| !x.lost_in_scope()));
        // A kernel whose PMD insert is fixed (the fault keeps every mode)
        // and whose pmd_modify() drops bit 12: mprotect() lands on the very
        // entry the defect predicts, and that is judged, not excused.
        let r = steps("huge_pfn_fault", &[], "huge_pfn_mprotect", &predicted);
        assert_eq!(judged(&r, "huge_pfn_mprotect", "WT"), Judgment::Lost);
        assert_eq!(judged(&r, "huge_pfn_mprotect", "WP"), Judgment::Lost);
        assert!(r.results.iter().all(|x| x.known_defect().is_none()));
    }

    #[test]
    fn a_pat_entry_moved_to_the_same_type_is_not_a_lost_mode() {
        let row = |n: usize, entry: u8, requested: &str, after: u8, observed: &str| {
            let ok = if entry == after { "ok" } else { "not ok" };
            format!("# pat_index.{entry}: requested={requested} entry_after={after} pte_before=0x80000000000000a7 pte_after=0x8000000000000027 observed={observed}\n{ok} {n} pat_index.{entry}\n")
        };
        // Native layout: entry 4 is WB like entry 0; entry 5 is WP, entry 1 WC.
        let ktap = String::from(
            "KTAP version 1\n# patverify: pat_layout=WB WC UC- UC WB WP UC- WT\n1..3\n",
        ) + &row(1, 0, "WB", 0, "WB")
            + &row(2, 4, "WB", 0, "WB")
            + &row(3, 5, "WP", 1, "WC");
        let r = parse_ktap(&ktap).unwrap();
        let j: Vec<Judgment> = r.results.iter().map(ModeResult::judgment).collect();
        assert_eq!(j, [Judgment::Kept, Judgment::MovedSameType, Judgment::Lost]);
        assert!(!r.results[1].lost() && !r.results[1].kept());
        assert!(r.results[2].lost_in_scope());
    }

    #[test]
    fn parses_a_report_with_lost_modes() {
        let report = parse_ktap(&sample_ktap(&[("WT", "UC"), ("WP", "WC")])).unwrap();
        assert_eq!(report.pat_layout, crate::stages::qemu::LINUX_PAT_LAYOUT);
        assert_eq!(report.results.len(), 6);
        let wt = &report.results[4];
        assert_eq!(
            (wt.requested, wt.observed(), wt.kept(), wt.lost()),
            (CacheMode::Wt, Some(CacheMode::Uc), false, true)
        );
        assert_eq!(wt.path, ProbePath::VmaSetPageProt);
        assert!(report.results[0].kept());
    }

    #[test]
    fn a_skipped_path_is_neither_kept_nor_lost() {
        let ktap = sample_ktap(&[]).replace("1..6", "1..7")
            + "ok 7 huge_pfn_fault.WB # SKIP Xen PV has no 2 MiB pages\n";
        let report = parse_ktap(&ktap).unwrap();
        let skipped = &report.results[6];
        assert_eq!(
            (skipped.path, skipped.requested, skipped.skip_reason()),
            (
                ProbePath::HugePfnFault,
                CacheMode::Wb,
                Some("Xen PV has no 2 MiB pages")
            )
        );
        assert!(!skipped.kept() && !skipped.lost());
        assert!(report.results[..6].iter().all(|r| r.kept() && !r.lost()));
        let failed_skip = ktap.replace("ok 7 huge_pfn_fault", "not ok 7 huge_pfn_fault");
        assert!(parse_ktap(&failed_skip)
            .unwrap_err()
            .contains("bad SKIP line"));
    }

    /// A 4 KiB entry selecting PAT entry 3 (PWT | PCD): UC in either layout.
    const UC_PTE: u64 = 0x8000_0000_0000_0018 | 0x67;

    /// The module's Xen MMIO skip, naming the entry the fault installed.
    fn xen_mmio_skip(installed: u64) -> String {
        format!("{XEN_UNCACHED_MMIO}: the WT MMIO PTE was installed as UC (devmem_fault pte_after=0x{installed:016x}; not representable)")
    }

    #[test]
    fn a_xen_mmio_skip_must_show_the_uc_entry_it_observed() {
        let xen_mmio =
            |r: &ModeResult| r.path == ProbePath::DevmemFault && r.requested == CacheMode::Wt;
        let with_reason = |reason: String| {
            let mut report = full_report(Env::Xen);
            let row = report.results.iter_mut().find(|r| xen_mmio(r)).unwrap();
            row.outcome = Outcome::Skipped { reason };
            check_rows(&report, Env::Xen, Some((6, 12)))
        };
        assert_eq!(with_reason(xen_mmio_skip(UC_PTE)), Ok(()));
        // Entry 1 (PWT alone) is not UC: a skip that saw it is refused.
        let wc = with_reason(xen_mmio_skip(0x8000_0000_0000_0008 | 0x67)).unwrap_err();
        assert!(wc.contains("selects PAT entry 1 (WC), not UC"), "{wc}");
        let unobserved = with_reason(XEN_UNCACHED_MMIO.to_string()).unwrap_err();
        assert!(
            unobserved.contains("names no installed entry"),
            "{unobserved}"
        );
        // Measured instead (Xen kept WT): judged like any row.
        let mut measured = full_report(Env::Xen);
        let row = measured.results.iter_mut().find(|r| xen_mmio(r)).unwrap();
        row.outcome = Outcome::Measured {
            observed: CacheMode::Wt,
            pte_before: Some(Pte(0)),
            pte_after: Pte(0),
            prot_requested: None,
            entry_after: None,
            known_defect: None,
            lost_earlier_at: None,
        };
        assert_eq!(check_rows(&measured, Env::Xen, Some((6, 12))), Ok(()));
        assert!(measured
            .results
            .iter()
            .find(|r| xen_mmio(r))
            .unwrap()
            .kept());
    }

    /// A report with every declared row: all kept, skips where declared.
    fn full_report(env: Env) -> Report {
        full_report_of(env, Some((6, 12)))
    }

    /// `full_report` of a kernel of `series`.
    fn full_report_of(env: Env, series: Option<(u32, u32)>) -> Report {
        let mut results = Vec::new();
        let layout = crate::stages::qemu::LINUX_PAT_LAYOUT;
        for &path in ProbePath::ALL {
            for key in row_keys(path) {
                let (requested, entry) = match key {
                    RowKey::Mode(mode) => (mode, None),
                    RowKey::Entry(e) => (layout[e as usize], Some(e)),
                };
                let outcome = match declared_skip(path, requested, env, &layout, series) {
                    Some(why) if why == XEN_UNCACHED_MMIO => Outcome::Skipped {
                        reason: xen_mmio_skip(UC_PTE),
                    },
                    Some(why) => Outcome::Skipped { reason: why.into() },
                    None => Outcome::Measured {
                        observed: requested,
                        pte_before: Some(Pte(0)),
                        pte_after: Pte(0),
                        prot_requested: None,
                        entry_after: entry,
                        known_defect: None,
                        lost_earlier_at: None,
                    },
                };
                results.push(ModeResult {
                    path,
                    requested,
                    entry,
                    outcome,
                });
            }
        }
        let kept_bits = Some(KeptBits::parse(SAMPLE_KEPT_BITS).unwrap());
        Report {
            pat_layout: crate::stages::qemu::LINUX_PAT_LAYOUT.to_vec(),
            pat_msr: None,
            results,
            kept_bits,
            bits: Vec::new(),
        }
    }

    #[test]
    fn a_report_must_have_every_row_once_and_only_declared_skips() {
        for env in Env::ALL {
            assert_eq!(check_rows(&full_report(env), env, Some((6, 12))), Ok(()));
        }
        let mut missing = full_report(Env::Native);
        missing.results.remove(3);
        let why = check_rows(&missing, Env::Native, Some((6, 12))).unwrap_err();
        assert!(why.contains("row vma_set_page_prot.UC is missing"), "{why}");
        let mut twice = full_report(Env::Native);
        twice.results.push(twice.results[0].clone());
        let why = check_rows(&twice, Env::Native, Some((6, 12))).unwrap_err();
        assert!(why.contains("appears twice"), "{why}");
        let mut undeclared = full_report(Env::Native);
        undeclared.results[4].outcome = Outcome::Skipped {
            reason: "no reason".into(),
        };
        let why = check_rows(&undeclared, Env::Native, Some((6, 12))).unwrap_err();
        assert!(
            why.contains("undeclared skip: vma_set_page_prot.WT"),
            "{why}"
        );
        // What Xen may skip, native may not.
        let why = check_rows(&full_report(Env::Xen), Env::Native, Some((6, 12))).unwrap_err();
        assert!(why.contains("undeclared skip"), "{why}");
        // What 6.1 may skip (no 2 MiB PFN maps), 6.12 may not; a tree whose
        // version is unknown gets no version's allowance.
        let old = full_report_of(Env::Native, Some((6, 1)));
        assert_eq!(check_rows(&old, Env::Native, Some((6, 1))), Ok(()));
        let why = check_rows(&old, Env::Native, Some((6, 12))).unwrap_err();
        assert!(why.contains("undeclared skip: huge_pfn_fault.WC"), "{why}");
        assert!(check_rows(&old, Env::Native, None).is_err());
        // A mode no PAT entry holds (the power-on layout: no WC, no WP) is
        // not representable: its rows may skip, the others may not.
        let mut power_on = full_report(Env::Native);
        power_on.pat_layout = pat_layout_of_msr(0x0007040600070406).unwrap().to_vec();
        for r in power_on.results.iter_mut() {
            if matches!(r.requested, CacheMode::Wc | CacheMode::Wp) && r.entry.is_none() {
                r.outcome = Outcome::Skipped {
                    reason: "not representable".into(),
                };
            }
        }
        assert_eq!(check_rows(&power_on, Env::Native, Some((6, 12))), Ok(()));
        power_on.results[4].outcome = Outcome::Skipped {
            reason: "WT is in the layout".into(),
        };
        assert!(check_rows(&power_on, Env::Native, Some((6, 12))).is_err());
    }

    #[test]
    fn a_fault_starts_from_an_empty_slot_and_says_what_it_asked_for() {
        let fault = parse_ktap(&sample_ktap_on("ram_fault", &[])).unwrap();
        let Outcome::Measured {
            pte_before,
            prot_requested,
            ..
        } = &fault.results[1].outcome
        else {
            panic!("measured")
        };
        assert_eq!(*pte_before, None);
        assert_eq!(*prot_requested, Some(Pte(0x8000000000000001)));
        assert_eq!(
            fault.results[1].ptes(),
            "none → 0x8000000000000001 (asked 0x8000000000000001)"
        );
        // A fault row that does not say what it asked for is refused.
        let unasked = sample_ktap_on("ram_fault", &[]).replace("prot_requested=", "asked=");
        let err = parse_ktap(&unasked).unwrap_err();
        assert!(err.contains("no prot_requested="), "{err}");
        // Only a fault may start from an empty slot.
        let later = sample_ktap_on("ram_mprotect", &[])
            .replace("pte_before=0x8000000000000002", "pte_before=none");
        let err = parse_ktap(&later).unwrap_err();
        assert!(
            err.contains("only a fault starts from an empty slot"),
            "{err}"
        );
        // A later step reads the entry it starts from, and asks for nothing.
        let later = parse_ktap(&sample_ktap_on("ram_mprotect", &[])).unwrap();
        assert_eq!(
            later.results[2].ptes(),
            "0x8000000000000002 → 0x8000000000000002"
        );
    }

    #[test]
    fn extracts_report_from_console() {
        let ktap = sample_ktap(&[]);
        assert_eq!(extract(&console_with(&ktap)).unwrap(), ktap);
    }

    #[test]
    fn names_boot_problems() {
        let ktap = sample_ktap(&[]);
        let panic = format!(
            "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n{}",
            console_with(&ktap)
        );
        assert!(
            matches!(extract(&panic), Err(BootProblem::Panic(l)) if l.contains("Unable to mount root"))
        );
        let oops = format!(
            "[ 1.0] BUG: kernel NULL pointer dereference, address: 0\n{}",
            console_with(&ktap)
        );
        assert!(matches!(extract(&oops), Err(BootProblem::Oops(_))));
        let oops_then_panic = "[ 1.0] BUG: kernel NULL pointer dereference, address: 0\n[ 1.1] Oops: 0002 [#1]\n[ 1.2] Kernel panic - not syncing: Fatal exception\n";
        assert!(
            matches!(extract(oops_then_panic), Err(BootProblem::Oops(l)) if l.contains("NULL pointer")),
            "an oops that oops=panic turns into a panic is named as the oops"
        );
        assert_eq!(extract("[ 0.1] booting\n"), Err(BootProblem::NoReport));
        let cut = console_with(&ktap);
        let cut = &cut[..cut.find("ok 3").unwrap()];
        assert!(matches!(extract(cut), Err(BootProblem::Truncated(_))));
        let dropped_line = console_with(&ktap).replacen("ok 2 vma_set_page_prot.WC\r\n", "", 1);
        assert!(
            matches!(extract(&dropped_line), Err(BootProblem::Truncated(w)) if w.contains("17 lines, 16 arrived"))
        );
        let guest = format!("{GUEST_ERROR} read /debug/patverify/results: No such file ====\n");
        assert!(
            matches!(extract(&guest), Err(BootProblem::GuestError(m)) if m.ends_with("No such file"))
        );
    }

    #[test]
    fn rejects_incomplete_or_inconsistent_ktap() {
        let ktap = sample_ktap(&[]);
        assert!(parse_ktap(&ktap.replace("KTAP version 1", "TAP version 13")).is_err());
        assert!(parse_ktap(&ktap.replace("1..6", "1..7"))
            .unwrap_err()
            .contains("plan says 7"));
        let contradiction = ktap.replace("observed=WT", "observed=UC");
        assert!(parse_ktap(&contradiction)
            .unwrap_err()
            .contains("contradicts"));
        let no_diag: String = ktap
            .lines()
            .filter(|l| !l.starts_with("# vma_set_page_prot.WP"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_ktap(&no_diag)
            .unwrap_err()
            .contains("no diagnostic line"));
        let unmeasured = ktap
            .replace(
                "pte_after=0x8000000000000005 observed=WP",
                "pte_after=none observed=none",
            )
            .replace(
                "ok 6 vma_set_page_prot.WP",
                "not ok 6 vma_set_page_prot.WP # not measured",
            );
        assert!(parse_ktap(&unmeasured)
            .unwrap_err()
            .contains("was not measured"));
        let no_layout = ktap.replace("# patverify: pat_layout=WB WC UC- UC WB WP UC- WT\n", "");
        assert!(parse_ktap(&no_layout).unwrap_err().contains("PAT layout"));
    }
}
