//! Reading what a guest printed: the report between the init's markers on the
//! console, the boot failures around it, and the module's KTAP v1.

use serde::Serialize;

pub const BEGIN: &str = "==== PATVERIFY REPORT BEGIN ====";
pub const END: &str = "==== PATVERIFY REPORT END";
pub const GUEST_ERROR: &str = "==== PATVERIFY ERROR:";

pub const MODES: [&str; 6] = ["WB", "WC", "UC-", "UC", "WT", "WP"];

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeResult {
    pub path: String,
    pub requested: String,
    pub observed: String,
    pub pte_before: String,
    pub pte_after: String,
    pub kept: bool,
    /// KTAP `# SKIP` reason: the path cannot run in this environment
    /// (neither kept nor lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl ModeResult {
    pub fn lost(&self) -> bool {
        !self.kept && self.skipped.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// PAT entries 0..7 as the kernel decodes them.
    pub pat_layout: Vec<String>,
    pub pat_msr: Option<String>,
    pub results: Vec<ModeResult>,
}

fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace().filter_map(|kv| kv.split_once('='))
}

/// Parses the module's KTAP v1 and checks it is complete and consistent.
pub fn parse_ktap(text: &str) -> Result<Report, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("KTAP version 1") {
        return Err("does not start with \"KTAP version 1\"".into());
    }
    let mut plan = None;
    let mut pat_layout = Vec::new();
    let mut pat_msr = None;
    let mut diagnostics: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut results = Vec::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix("# patverify: ") {
            if let Some(layout) = rest.strip_prefix("pat_layout=") {
                pat_layout = layout.split_whitespace().map(String::from).collect();
            } else if let Some(msr) = rest.strip_prefix("pat_msr=") {
                pat_msr = Some(msr.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("# ") {
            if let Some((name, kvs)) = rest.split_once(": ") {
                let kvs = key_values(kvs)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                diagnostics.push((name.to_string(), kvs));
            }
        } else if let Some(n) = line.strip_prefix("1..") {
            plan = Some(
                n.parse::<usize>()
                    .map_err(|_| format!("bad plan line {line:?}"))?,
            );
        } else {
            let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
                (true, r)
            } else if let Some(r) = line.strip_prefix("not ok ") {
                (false, r)
            } else {
                return Err(format!("unexpected line {line:?}"));
            };
            let (number, name) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad result line {line:?}"))?;
            let number: usize = number
                .parse()
                .map_err(|_| format!("bad test number in {line:?}"))?;
            if number != results.len() + 1 {
                return Err(format!("test {number} out of order"));
            }
            let (name, directive) = match name.split_once(" # ") {
                Some((name, directive)) => (name.trim(), Some(directive.trim())),
                None => (name.trim(), None),
            };
            let (path, mode) = name
                .rsplit_once('.')
                .ok_or_else(|| format!("test name {name:?} is not PATH.MODE"))?;
            if let Some(reason) = directive.and_then(|d| d.strip_prefix("SKIP")) {
                if !ok || !MODES.contains(&mode) {
                    return Err(format!("bad SKIP line {line:?}"));
                }
                let none = String::from("-");
                results.push(ModeResult {
                    path: path.to_string(),
                    requested: mode.to_string(),
                    observed: "skip".into(),
                    pte_before: none.clone(),
                    pte_after: none,
                    kept: false,
                    skipped: Some(reason.trim().to_string()),
                });
                continue;
            }
            let kvs = diagnostics
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, kvs)| kvs)
                .ok_or_else(|| format!("no diagnostic line for {name}"))?;
            let get = |key: &str| {
                kvs.iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("{name}: no {key}="))
            };
            let result = ModeResult {
                path: path.to_string(),
                requested: get("requested")?,
                observed: get("observed")?,
                pte_before: get("pte_before")?,
                pte_after: get("pte_after")?,
                kept: ok,
                skipped: None,
            };
            if result.observed == "none" {
                return Err(format!(
                    "{name} was not measured (the guest's /init did not exercise that path)"
                ));
            }
            if result.requested != mode || !MODES.contains(&mode) {
                return Err(format!(
                    "{name}: requested mode {} does not match",
                    result.requested
                ));
            }
            if (result.observed == result.requested) != ok {
                return Err(format!(
                    "{name}: result {} contradicts observed={}",
                    if ok { "ok" } else { "not ok" },
                    result.observed
                ));
            }
            results.push(result);
        }
    }
    let plan = plan.ok_or("no test plan line")?;
    if plan != results.len() {
        return Err(format!(
            "plan says {plan} tests, {} reported",
            results.len()
        ));
    }
    if pat_layout.len() != 8 {
        return Err(format!(
            "PAT layout has {} entries, not 8",
            pat_layout.len()
        ));
    }
    Ok(Report {
        pat_layout,
        pat_msr,
        results,
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A KTAP report in the module's format (what the native baseline prints).
    pub fn sample_ktap(lost: &[(&str, &str)]) -> String {
        let mut s = String::from("KTAP version 1\n# patverify: pat_layout=WB WC UC- UC WB WP UC- WT\n# patverify: pat_msr=0x0007010600070106\n1..6\n");
        for (i, mode) in MODES.iter().enumerate() {
            let observed = lost
                .iter()
                .find(|(m, _)| m == mode)
                .map_or(*mode, |(_, o)| *o);
            s += &format!(
                "# vma_set_page_prot.{mode}: requested={mode} pte_before=0x80000000000000{i:02x} pte_after=0x80000000000000{i:02x} observed={observed}\n"
            );
            let status = if observed == *mode { "ok" } else { "not ok" };
            s += &format!("{status} {} vma_set_page_prot.{mode}\n", i + 1);
        }
        s
    }

    pub fn console_with(report: &str) -> String {
        let lines = report.lines().count();
        format!("SeaBIOS\r\n[    0.000000] Linux version 6.12\r\n{BEGIN}\r\n{}{END} lines={lines} ====\r\n[    1.2] reboot: Power down\r\n", report.replace('\n', "\r\n"))
    }

    #[test]
    fn parses_a_report_with_lost_modes() {
        let report = parse_ktap(&sample_ktap(&[("WT", "UC"), ("WP", "WC")])).unwrap();
        assert_eq!(
            report.pat_layout,
            ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"]
        );
        assert_eq!(report.results.len(), 6);
        let wt = &report.results[4];
        assert_eq!(
            (wt.requested.as_str(), wt.observed.as_str(), wt.kept),
            ("WT", "UC", false)
        );
        assert_eq!(wt.path, "vma_set_page_prot");
        assert!(report.results[0].kept);
    }

    #[test]
    fn a_skipped_path_is_neither_kept_nor_lost() {
        let ktap = sample_ktap(&[]).replace("1..6", "1..7")
            + "ok 7 pmd_modify_ioremap_encoding.WB # SKIP Xen PV has no 2 MiB pages\n";
        let report = parse_ktap(&ktap).unwrap();
        let skipped = &report.results[6];
        assert_eq!(
            (
                skipped.path.as_str(),
                skipped.requested.as_str(),
                skipped.skipped.as_deref()
            ),
            (
                "pmd_modify_ioremap_encoding",
                "WB",
                Some("Xen PV has no 2 MiB pages")
            )
        );
        assert!(!skipped.kept && !skipped.lost());
        assert!(report.results[..6].iter().all(|r| r.kept && !r.lost()));
        let failed_skip = ktap.replace(
            "ok 7 pmd_modify_ioremap_encoding",
            "not ok 7 pmd_modify_ioremap_encoding",
        );
        assert!(parse_ktap(&failed_skip)
            .unwrap_err()
            .contains("bad SKIP line"));
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
            matches!(extract(&dropped_line), Err(BootProblem::Truncated(w)) if w.contains("16 lines, 15 arrived"))
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
