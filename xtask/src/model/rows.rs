//! The rows a booted kernel reports and the rules they are judged by:
//! what each row's step did (kept, lost, lost earlier, moved, a known
//! defect), which skips a kernel and environment may declare, and the PAT
//! layout an MSR programs. Below the stages: the KTAP parser produces these
//! types, the record serialises them, the comparison and every output read
//! them.

use crate::model::Env;
use serde::{Deserialize, Serialize};

pub use patverify_protocol::{CacheMode, PathKind, ProbePath};

/// A PTE's (or PMD's) flag bits, written as `0x` and 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pte(pub u64);

impl std::fmt::Display for Pte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

impl std::str::FromStr for Pte {
    type Err = String;
    fn from_str(text: &str) -> Result<Pte, String> {
        text.strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(Pte)
            .ok_or_else(|| format!("{text:?} is not a hex PTE value"))
    }
}

impl Serialize for Pte {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pte {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One row of a report: a mode requested along a path, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeResult {
    pub path: ProbePath,
    /// The mode requested; for `pat_index` rows, the mode of `entry` in the
    /// layout the kernel decodes.
    pub requested: CacheMode,
    /// `pat_index` rows: the PAT entry (0..7) requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u8>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Which row of its path a result is: a cache mode, or (`pat_index`) a
/// PAT entry. Shown after the path: `mprotect.WT`, `pat_index.6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    Mode(CacheMode),
    Entry(u8),
}

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowKey::Mode(mode) => f.pad(mode.name()),
            RowKey::Entry(entry) => f.pad(&entry.to_string()),
        }
    }
}

/// The rows a path has: one per mode, or one per PAT entry.
pub fn row_keys(path: ProbePath) -> Vec<RowKey> {
    if path.rows_by_pat_entry() {
        (0..8).map(RowKey::Entry).collect()
    } else {
        CacheMode::ALL.iter().map(|&m| RowKey::Mode(m)).collect()
    }
}

/// What the module found for one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The entry's flags before and after the path, and the mode the kernel
    /// decodes from them after.
    Measured {
        observed: CacheMode,
        /// What the page table held just before the step, read back; `None`
        /// (`null`): the slot was empty, as before a fault. For the paths
        /// measured at boot, the value handed to the kernel function.
        pte_before: Option<Pte>,
        pte_after: Pte,
        /// A fault's: the protection it asked the kernel for (what `.mmap`
        /// set, or what the fault passed to `vmf_insert_pfn_prot()`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prot_requested: Option<Pte>,
        /// `pat_index` rows: the PAT entry the bits select after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry_after: Option<u8>,
        /// A loss the mechanism of a known kernel defect outside the masks
        /// under test predicts exactly ([`known_defect`]): still LOST, but
        /// no patch to `_PAGE_CHG_MASK`/`pgprot_modify()` is judged by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known_defect: Option<String>,
        /// A later step (an `mprotect()`) that started from an entry the
        /// step before it had already installed wrong, and kept that entry:
        /// the step the mode was lost at. Not a loss of this step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost_earlier_at: Option<ProbePath>,
    },
    /// KTAP `# SKIP`: the path cannot run here (neither kept nor lost).
    Skipped { reason: String },
}

impl ModeResult {
    /// The mode the kernel decodes after the path, if the row was measured.
    pub fn observed(&self) -> Option<CacheMode> {
        match self.outcome {
            Outcome::Measured { observed, .. } => Some(observed),
            Outcome::Skipped { .. } => None,
        }
    }

    /// Which row of its path this is.
    pub fn key(&self) -> RowKey {
        self.entry
            .map_or(RowKey::Mode(self.requested), RowKey::Entry)
    }

    /// For people: "WT", or "6 UC" (a PAT entry and its mode).
    pub fn label(&self) -> String {
        match self.entry {
            Some(entry) => format!("{entry} {}", self.requested),
            None => self.requested.to_string(),
        }
    }

    /// What the row ended as: "UC", or for `pat_index` "UC- (entry 2)";
    /// None when skipped.
    pub fn after(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Measured {
                observed,
                entry_after: Some(entry),
                ..
            } => Some(format!("{observed} (entry {entry})")),
            Outcome::Measured { observed, .. } => Some(observed.to_string()),
            Outcome::Skipped { .. } => None,
        }
    }

    /// What this row's step did, judged by what the step was given: a
    /// first step against the mode requested, a later step against the
    /// entry the step before it installed.
    pub fn judgment(&self) -> Judgment {
        let Outcome::Measured {
            observed,
            entry_after,
            known_defect,
            lost_earlier_at,
            ..
        } = &self.outcome
        else {
            return Judgment::Skipped;
        };
        match (*observed == self.requested, *entry_after == self.entry) {
            (true, true) => Judgment::Kept,
            // The PAT bit went, the memory type did not (`pat_index`).
            (true, false) => Judgment::MovedSameType,
            (false, _) => match (lost_earlier_at, known_defect) {
                (Some(at), _) => Judgment::LostEarlier(*at),
                (None, Some(_)) => Judgment::KnownDefect,
                (None, None) => Judgment::Lost,
            },
        }
    }

    /// Measured, and the mode (and for `pat_index`, the entry) survived.
    pub fn kept(&self) -> bool {
        self.judgment() == Judgment::Kept
    }

    /// Measured, and this step lost the mode (or, for `pat_index`, moved
    /// it to an entry of another type).
    pub fn lost(&self) -> bool {
        matches!(self.judgment(), Judgment::Lost | Judgment::KnownDefect)
    }

    /// Lost, and not by a declared known defect outside the masks under
    /// test: what verdicts and probes judge a kernel by.
    pub fn lost_in_scope(&self) -> bool {
        self.judgment() == Judgment::Lost
    }

    /// Why the loss is a known defect outside the masks under test, if it is.
    pub fn known_defect(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Measured { known_defect, .. } => known_defect.as_deref(),
            Outcome::Skipped { .. } => None,
        }
    }

    /// Why the row was skipped, if it was.
    pub fn skip_reason(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Skipped { reason } => Some(reason),
            Outcome::Measured { .. } => None,
        }
    }

    /// "before → after" for measured rows ("none → after, asked 0x…" for a
    /// fault), "" for skipped ones.
    pub fn ptes(&self) -> String {
        match &self.outcome {
            Outcome::Measured {
                pte_before,
                pte_after,
                prot_requested,
                ..
            } => {
                let before = pte_before.map_or("none".to_string(), |p| p.to_string());
                let asked = prot_requested.map_or(String::new(), |p| format!(" (asked {p})"));
                format!("{before} → {pte_after}{asked}")
            }
            Outcome::Skipped { .. } => String::new(),
        }
    }
}

/// What a row's step did, for verdicts and every output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgment {
    /// The mode (and the PAT entry) survived the step.
    Kept,
    /// `pat_index`: the PAT bit was dropped but the entry it fell to has the
    /// same memory type (native 4 WB → 0 WB): shown, not a lost mode.
    MovedSameType,
    /// This step lost the mode.
    Lost,
    /// This step lost the mode exactly as a known defect outside the masks
    /// under test predicts: shown, not judged.
    KnownDefect,
    /// This step kept the entry it was given, which the named step before
    /// it had already installed wrong.
    LostEarlier(ProbePath),
    Skipped,
}

impl Judgment {
    /// The word in tables and reports.
    pub fn word(self) -> &'static str {
        match self {
            Judgment::Kept => "kept",
            Judgment::MovedSameType => "moved",
            Judgment::Lost => "LOST",
            Judgment::KnownDefect => "LOST*",
            Judgment::LostEarlier(_) => "earlier",
            Judgment::Skipped => "skip",
        }
    }

    /// The name in JSON, JUnit and KCIDB.
    pub fn name(self) -> &'static str {
        match self {
            Judgment::Kept => "kept",
            Judgment::MovedSameType => "moved-same-type",
            Judgment::Lost => "lost",
            Judgment::KnownDefect => "known-defect",
            Judgment::LostEarlier(_) => "lost-earlier",
            Judgment::Skipped => "skipped",
        }
    }

    /// For people: "kept UC, lost earlier at mmap_fault".
    pub fn describe(self, observed: Option<CacheMode>) -> String {
        let seen = observed.map(|m| m.name()).unwrap_or("-");
        match self {
            Judgment::LostEarlier(at) => format!("kept {seen}, lost earlier at {at}"),
            Judgment::MovedSameType => format!("moved to another entry of the same type ({seen})"),
            other => other.word().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// PAT entries 0..7 as the kernel decodes them.
    pub pat_layout: Vec<CacheMode>,
    pub pat_msr: Option<String>,
    pub results: Vec<ModeResult>,
    /// Each kept bit's flag in this kernel (`kept_bits=`), if reported.
    pub kept_bits: Option<crate::model::bits::KeptBits>,
    /// The later steps' `bits.*` rows (empty without `kept_bits`).
    pub bits: Vec<crate::model::bits::BitRow>,
}

/// The cache modes of PAT entries 0..7 as the IA32_PAT MSR programs them
/// (entry i in bits 8i..8i+2: 0 UC, 1 WC, 4 WT, 5 WP, 6 WB, 7 UC-).
pub fn pat_layout_of_msr(msr: u64) -> Result<[CacheMode; 8], String> {
    let mut layout = [CacheMode::Wb; 8];
    for (index, entry) in layout.iter_mut().enumerate() {
        *entry = match (msr >> (8 * index)) & 0x7 {
            0 => CacheMode::Uc,
            1 => CacheMode::Wc,
            4 => CacheMode::Wt,
            5 => CacheMode::Wp,
            6 => CacheMode::Wb,
            7 => CacheMode::UcMinus,
            reserved => {
                return Err(format!(
                    "PAT MSR 0x{msr:016x}: entry {index} has the reserved type {reserved}"
                ))
            }
        };
    }
    Ok(layout)
}

/// Linux's own PAT programming (arch/x86/mm/pat/memtype.c, pat_bp_init):
/// a guest reporting it under Xen did not really run with Xen's layout.
pub const LINUX_PAT_LAYOUT: [CacheMode; 8] = {
    use CacheMode::*;
    [Wb, Wc, UcMinus, Uc, Wb, Wp, UcMinus, Wt]
};

/// Whether a row may be a `# SKIP` in `env` under the PAT `layout` the
/// kernel reports, and why: the rows whose request the kernel (or Xen)
/// cannot represent there — a mode no PAT entry holds (the PAT left at its
/// power-on value), device memory of a type the platform refuses, 2 MiB PFN
/// mappings where the kernel (`series`, e.g. (6, 1)) or Xen PV has none,
/// RAM of a memtype no `set_pages_array_*()` gives it.
/// Any other skip is a report that leaves out what it should measure.
pub fn declared_skip(
    path: ProbePath,
    mode: CacheMode,
    env: Env,
    layout: &[CacheMode],
    series: Option<(u32, u32)>,
) -> Option<&'static str> {
    use ProbePath::{DevmemFault, DevmemMprotect, HugePfnFault, HugePfnMprotect};
    use ProbePath::{RamFault, RamMprotect};
    if !path.rows_by_pat_entry() && !layout.contains(&mode) {
        return Some("no PAT entry of this kernel's layout holds the mode");
    }
    let huge = path.is_2mib();
    match (path, mode, env) {
        _ if huge && env == Env::Xen => Some("Xen PV has no 2 MiB pages"),
        _ if huge && series.is_some_and(|s| s < (6, 12)) => {
            Some("before 6.12 the fault path calls .huge_fault only for DAX and anonymous memory")
        }
        (DevmemFault | DevmemMprotect | HugePfnFault | HugePfnMprotect, CacheMode::Wb, _) => {
            Some("the kernel reserves MMIO asked for as WB as UC- (MTRR)")
        }
        (DevmemFault | DevmemMprotect, CacheMode::Wt | CacheMode::Wp, Env::Xen) => {
            Some(XEN_UNCACHED_MMIO)
        }
        (RamFault | RamMprotect, CacheMode::Uc | CacheMode::Wt | CacheMode::Wp, _) => {
            Some("no set_pages_array_*() gives RAM the memtype")
        }
        _ => None,
    }
}

/// Xen's rule for a PV guest's MMIO (since XSA-154: a WT or WP PTE on
/// device memory is made UC as it is installed). Declared only as observed:
/// the skip names the PTE the fault installed, which must be UC.
pub const XEN_UNCACHED_MMIO: &str = "Xen PV maps device memory uncached";

/// Whether a skip's `reason` shows the observation its `declared` rule
/// needs, under the PAT `layout`: the Xen MMIO skip must name the entry the
/// fault installed (`pte_after=0x…`), and that entry must be UC. Other
/// declared skips name no observation.
pub fn skip_observed(declared: &str, reason: &str, layout: &[CacheMode]) -> Result<(), String> {
    if declared != XEN_UNCACHED_MMIO {
        return Ok(());
    }
    let pte = reason
        .split_once("pte_after=0x")
        .and_then(|(_, rest)| {
            let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
            u64::from_str_radix(&hex, 16).ok()
        })
        .ok_or_else(|| format!("{reason:?} names no installed entry (pte_after=0x…)"))?;
    // The 4 KiB entry's PAT index: PWT (bit 3), PCD (bit 4), PAT (bit 7).
    let index = (pte >> 3 & 1) | (pte >> 4 & 1) << 1 | (pte >> 7 & 1) << 2;
    match layout.get(index as usize) {
        Some(CacheMode::Uc) => Ok(()),
        other => Err(format!(
            "{reason:?}: the installed entry 0x{pte:016x} selects PAT entry {index} ({}), not UC",
            other.map_or("?", |m| m.name())
        )),
    }
}

/// The known defect outside the masks under test: a 2 MiB PFN entry is
/// built by `insert_pfn_pmd()` as `pmd_mkhuge(pfn_t_pmd(pfn, prot))` from a
/// protection in the 4 KiB encoding (`track_pfn_insert()` →
/// `cachemode2protval()`), and `pfn_pmd()` does not convert it: the PAT bit,
/// bit 7 in a PTE, is PSE in a PMD, so a mode whose entry needs it lands on
/// the entry 4 below (the 2 MiB PAT bit, bit 12, stays clear).
pub const PMD_PAT_BIT_DEFECT: &str = "insert_pfn_pmd() builds the 2 MiB entry from a 4 KiB-encoded protection: its PAT bit (bit 7) is PSE in a PMD";

/// Marks what each step did beyond kept and lost: a loss the known defect
/// predicts exactly, at the step that installed that entry; a later step
/// that kept an entry the step before it had installed wrong.
pub fn judge_steps(results: &mut [ModeResult], layout: &[CacheMode]) {
    for r in results.iter_mut() {
        // Set or cleared: a record judged before holds its own marks.
        let why = known_defect(r, layout).map(str::to_string);
        if let Outcome::Measured { known_defect, .. } = &mut r.outcome {
            *known_defect = why;
        }
    }
    let observed_at = |path: ProbePath, r: &ModeResult| {
        let step = results
            .iter()
            .find(|p| p.path == path && p.key() == r.key())?;
        step.observed()
    };
    let earlier: Vec<Option<ProbePath>> = results
        .iter()
        .map(|r| {
            let before = r.path.previous_step()?;
            let given = observed_at(before, r)?;
            let started_wrong = given != r.requested;
            if !(started_wrong && r.observed() == Some(given)) {
                return None;
            }
            // Where it went wrong: the first step of the chain that did not
            // keep the mode requested (mremap after a lost mmap_fault).
            let mut at = before;
            while let Some(prev) = at.previous_step() {
                match observed_at(prev, r) {
                    Some(mode) if mode != r.requested => at = prev,
                    _ => break,
                }
            }
            Some(at)
        })
        .collect();
    for (r, at) in results.iter_mut().zip(earlier) {
        if let Outcome::Measured {
            lost_earlier_at, ..
        } = &mut r.outcome
        {
            *lost_earlier_at = at;
        }
    }
}

/// Whether `r` was lost exactly as a known kernel defect outside the masks
/// under test predicts, under the PAT `layout`: only at the step that
/// installs the 2 MiB entry, only for exactly the predicted entry, never
/// for another outcome (a kernel that keeps the mode, or loses it another
/// way, or a later step that changes what was installed, is judged as usual).
pub fn known_defect(r: &ModeResult, layout: &[CacheMode]) -> Option<&'static str> {
    let installs = r.path.is_2mib() && r.path.previous_step().is_none();
    if !installs || r.observed().is_none_or(|m| m == r.requested) {
        return None;
    }
    // The kernel encodes a mode as the lowest entry that holds it.
    let entry = layout.iter().position(|m| *m == r.requested)?;
    let predicted = layout.get(entry.checked_sub(4)?)?;
    (r.observed() == Some(*predicted)).then_some(PMD_PAT_BIT_DEFECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module's reasons for having no 2 MiB PFN rows
    /// (`NoHugePfn::reason` in module/ffi.rs, read from its code), by name.
    fn module_reasons() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../module/ffi.rs");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("fn reason(self)").expect("NoHugePfn::reason");
        let body = &text[start..start + text[start..].find("\n    }\n").unwrap()];
        body.split("Self::")
            .skip(1)
            .map(|arm| {
                let name = arm[..arm.find(' ').unwrap()].to_string();
                let quoted = arm.split('"').nth(1).expect("a quoted reason");
                (name, quoted.to_string())
            })
            .collect()
    }

    /// The module's Xen MMIO skip (module/patverify.rs, read from its code)
    /// starts with the declared rule and names the entry it observed, in
    /// the form `skip_observed` reads.
    #[test]
    fn the_modules_xen_mmio_skip_is_the_declared_one_and_names_its_entry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../module/patverify.rs");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find("xen_uncached_mmio(mode)) {")
            .expect("the Xen MMIO skip");
        let body = &text[start..start + text[start..].find("\n    }\n").unwrap()];
        assert!(
            body.contains(&format!("\"{XEN_UNCACHED_MMIO}: the {{}} \"")),
            "{body}"
        );
        assert!(body.contains("pte_after=0x{installed:016x}"), "{body}");
    }

    /// The skips the host declares for 2 MiB rows say what the module
    /// says when it skips them: Xen PV, and a kernel before 6.12.
    #[test]
    fn the_declared_2mib_skips_are_the_modules_own_reasons() {
        let layout = LINUX_PAT_LAYOUT;
        let reasons = module_reasons();
        let of = |name: &str| {
            let found = reasons.iter().find(|(n, _)| n == name);
            found
                .map(|(_, r)| r.as_str())
                .unwrap_or_else(|| panic!("no {name}: {reasons:?}"))
        };
        let xen = declared_skip(
            ProbePath::HugePfnFault,
            CacheMode::Wc,
            Env::Xen,
            &layout,
            Some((6, 12)),
        );
        assert_eq!(Some(of("XenPv")), xen);
        let old = declared_skip(
            ProbePath::HugePfnMprotect,
            CacheMode::Uc,
            Env::Native,
            &layout,
            Some((6, 1)),
        );
        assert!(
            of("NoHugePfnmap").starts_with(old.unwrap()),
            "{:?}",
            of("NoHugePfnmap")
        );
        // The other two are no declared skip: a kernel without PSE or THP
        // is refused as an incomplete report, not passed.
        for name in ["NoPse", "NoThp"] {
            assert!(!of(name).is_empty());
        }
        let native = declared_skip(
            ProbePath::HugePfnFault,
            CacheMode::Wc,
            Env::Native,
            &layout,
            Some((6, 12)),
        );
        assert_eq!(native, None);
    }

    /// RAM is skipped exactly for the modes no `set_pages_array_*()` gives
    /// it, in both environments, with the words the module skips them with
    /// (module/patverify.rs, read from its code); WB, WC and UC- are judged.
    #[test]
    fn the_declared_ram_skips_are_the_modes_no_set_pages_array_gives_ram() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../module/patverify.rs");
        let module = std::fs::read_to_string(path).unwrap();
        let layout = LINUX_PAT_LAYOUT;
        for env in [Env::Native, Env::Xen] {
            for path in [ProbePath::RamFault, ProbePath::RamMprotect] {
                let skipped: Vec<CacheMode> = CacheMode::ALL
                    .iter()
                    .copied()
                    .filter(|m| declared_skip(path, *m, env, &layout, Some((6, 1))).is_some())
                    .collect();
                assert_eq!(skipped, [CacheMode::Uc, CacheMode::Wt, CacheMode::Wp]);
            }
        }
        let why = declared_skip(ProbePath::RamFault, CacheMode::Wt, Env::Xen, &layout, None);
        assert!(module.contains(&format!("\"{} {{}} (", why.unwrap())));
    }
}
