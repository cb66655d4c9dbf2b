//! Every bit a protection change must keep beside the cache mode: the rows
//! `PATH.bits.NAME` of each later step (an `mprotect()` of a real mapping),
//! judged from the entries the kernel held just before and after the step.
//! `_COMMON_PAGE_CHG_MASK`, `_PAGE_CHG_MASK` and `_HPAGE_CHG_MASK` say which
//! bits `pte_modify()`/`pmd_modify()` carry over; a mask that drops one makes
//! the step lose it (or take it from the new protection), and these rows
//! show that where the cache-mode rows cannot.

use crate::model::rows::{CacheMode, ModeResult, Outcome, ProbePath};
use serde::{Deserialize, Serialize};

/// A bit the masks keep, other than the PFN and the cache bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptBit {
    Accessed,
    Dirty,
    SavedDirty,
    Special,
    UffdWp,
    SoftDirty,
    Devmap,
    /// The 2 MiB entry's page-size bit (`_HPAGE_CHG_MASK` only).
    Pse,
}

impl KeptBit {
    pub const ALL: [KeptBit; 8] = [
        KeptBit::Accessed,
        KeptBit::Dirty,
        KeptBit::SavedDirty,
        KeptBit::Special,
        KeptBit::UffdWp,
        KeptBit::SoftDirty,
        KeptBit::Devmap,
        KeptBit::Pse,
    ];

    /// The name in the report, the row names and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            KeptBit::Accessed => "accessed",
            KeptBit::Dirty => "dirty",
            KeptBit::SavedDirty => "saved_dirty",
            KeptBit::Special => "special",
            KeptBit::UffdWp => "uffd_wp",
            KeptBit::SoftDirty => "soft_dirty",
            KeptBit::Devmap => "devmap",
            KeptBit::Pse => "pse",
        }
    }

    pub fn from_name(name: &str) -> Option<KeptBit> {
        KeptBit::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The terms of the masks (in 6.1 or 6.12) whose loss this bit's rows
    /// can show.
    pub fn mask_terms(self) -> &'static [&'static str] {
        match self {
            KeptBit::Accessed => &["_PAGE_ACCESSED"],
            KeptBit::Dirty => &["_PAGE_DIRTY", "_PAGE_DIRTY_BITS"],
            KeptBit::SavedDirty => &["_PAGE_DIRTY_BITS"],
            KeptBit::Special => &["_PAGE_SPECIAL"],
            KeptBit::UffdWp => &["_PAGE_UFFD_WP"],
            KeptBit::SoftDirty => &["_PAGE_SOFT_DIRTY"],
            KeptBit::Devmap => &["_PAGE_DEVMAP"],
            KeptBit::Pse => &["_PAGE_PSE"],
        }
    }

    /// The state the bit must be in before a step for a mask that drops it
    /// to show: set, except the accessed bit, which every new protection
    /// `mprotect()` computes carries (x86's protection map sets it), so a
    /// dropped accessed bit shows only where it was clear.
    pub fn shows_loss_when_set(self) -> bool {
        self != KeptBit::Accessed
    }

    /// Whether a step on `path` sets the bit on purpose, so that only a
    /// set bit cleared is a loss: `mremap()`'s `move_ptes()` marks a moved
    /// entry soft-dirty (`move_soft_dirty_pte()`).
    pub fn set_by(self, path: ProbePath) -> bool {
        self == KeptBit::SoftDirty && path == ProbePath::Mremap
    }

    /// Whether a step on `path` must keep the bit (PSE only in a 2 MiB
    /// entry, where `_HPAGE_CHG_MASK` keeps it; in a PTE bit 7 is PAT, a
    /// cache bit).
    pub fn applies_to(self, path: ProbePath) -> bool {
        self != KeptBit::Pse || path.is_2mib()
    }

    pub fn state(self) -> &'static str {
        if self.shows_loss_when_set() {
            "set"
        } else {
            "clear"
        }
    }
}

impl std::fmt::Display for KeptBit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Each kept bit's flag in the kernel that ran (0: the kernel has no such
/// bit, e.g. soft-dirty without `CONFIG_MEM_SOFT_DIRTY`), as its report's
/// `kept_bits=accessed:0x20 dirty:0x40 …` line gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBits(pub Vec<(KeptBit, u64)>);

impl KeptBits {
    /// Parses `accessed:0x20 dirty:0x40 …`; every bit named once.
    pub fn parse(text: &str) -> Result<KeptBits, String> {
        let mut bits = Vec::new();
        for item in text.split_whitespace() {
            let (name, flag) = item
                .split_once(':')
                .ok_or_else(|| format!("kept bit {item:?} is not NAME:0xFLAG"))?;
            let bit =
                KeptBit::from_name(name).ok_or_else(|| format!("unknown kept bit {name:?}"))?;
            let flag = flag
                .strip_prefix("0x")
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("kept bit {name}: {flag:?} is not a hex flag"))?;
            if flag.count_ones() > 1 {
                return Err(format!("kept bit {name}: {flag:#x} is more than one bit"));
            }
            if bits.iter().any(|(b, _)| *b == bit) {
                return Err(format!("kept bit {name} named twice"));
            }
            bits.push((bit, flag));
        }
        if let Some(missing) = KeptBit::ALL
            .into_iter()
            .find(|b| !bits.iter().any(|(have, _)| have == b))
        {
            return Err(format!("kept bits: {missing} missing"));
        }
        Ok(KeptBits(bits))
    }

    fn flag(&self, bit: KeptBit) -> u64 {
        self.0
            .iter()
            .find(|(b, _)| *b == bit)
            .map_or(0, |(_, flag)| *flag)
    }
}

/// One mode whose entry changed a kept bit across the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitChange {
    pub mode: CacheMode,
    /// Whether the bit was set before the step (it was then cleared; else set).
    pub was_set: bool,
}

/// What a step did with one kept bit, over the modes it measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BitOutcome {
    /// Unchanged in every mode; `shown_in`: the modes whose entry before
    /// had the bit in the state where a loss shows.
    Kept { shown_in: Vec<CacheMode> },
    /// The step changed the bit in these modes.
    Changed { modes: Vec<BitChange> },
    /// No mode could show a loss here; the reason says what was observed.
    Skipped { why: BitSkip, reason: String },
}

/// Why no mode of a step could show a bit's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BitSkip {
    /// The kernel has no such bit (its flag is 0 in this configuration).
    NoSuchBit,
    /// The step measured no mode (all its rows skipped).
    NotMeasured,
    /// No entry before the step had the bit in the state that shows a loss.
    NeverShown,
}

impl BitSkip {
    /// For a table's summary line.
    pub fn short(self, bit: KeptBit) -> String {
        match self {
            BitSkip::NoSuchBit => "no such bit in this kernel".into(),
            BitSkip::NotMeasured => "no mode measured".into(),
            BitSkip::NeverShown => format!("never {} before the step", bit.state()),
        }
    }
}

/// The row `PATH.bits.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRow {
    pub path: ProbePath,
    pub bit: KeptBit,
    #[serde(flatten)]
    pub outcome: BitOutcome,
}

impl BitRow {
    /// `bits.soft_dirty`: the row's name after its path.
    pub fn label(&self) -> String {
        format!("bits.{}", self.bit)
    }

    /// Measured, and the step changed the bit.
    pub fn lost(&self) -> bool {
        matches!(self.outcome, BitOutcome::Changed { .. })
    }

    pub fn skipped(&self) -> bool {
        matches!(self.outcome, BitOutcome::Skipped { .. })
    }

    /// The word in tables: "kept", "LOST", "skip".
    pub fn word(&self) -> &'static str {
        match self.outcome {
            BitOutcome::Kept { .. } => "kept",
            BitOutcome::Changed { .. } => "LOST",
            BitOutcome::Skipped { .. } => "skip",
        }
    }

    /// The name in JSON, JUnit and KCIDB (as for the mode rows).
    pub fn judgment_name(&self) -> &'static str {
        match self.outcome {
            BitOutcome::Kept { .. } => "kept",
            BitOutcome::Changed { .. } => "lost",
            BitOutcome::Skipped { .. } => "skipped",
        }
    }

    /// For people: "set in 6 modes, kept", "cleared in WB WC",
    /// "skipped: …".
    pub fn describe(&self) -> String {
        match &self.outcome {
            BitOutcome::Kept { shown_in } => {
                format!(
                    "{} before in {} mode(s), kept",
                    self.bit.state(),
                    shown_in.len()
                )
            }
            BitOutcome::Changed { modes } => {
                let list = |set: bool| -> Vec<&str> {
                    let picked = modes.iter().filter(|c| c.was_set == set);
                    picked.map(|c| c.mode.name()).collect()
                };
                let (cleared, set) = (list(true), list(false));
                let mut parts = Vec::new();
                if !cleared.is_empty() {
                    parts.push(format!("cleared in {}", cleared.join(" ")));
                }
                if !set.is_empty() {
                    parts.push(format!("set in {}", set.join(" ")));
                }
                parts.join(", ")
            }
            BitOutcome::Skipped { reason, .. } => format!("skipped: {reason}"),
        }
    }
}

/// The bit rows of every later step `results` measured, in report order:
/// each kept bit that applies to the step, compared between the entry just
/// before and just after it in every mode measured.
pub fn bit_rows(results: &[ModeResult], kept: &KeptBits) -> Vec<BitRow> {
    let mut paths: Vec<ProbePath> = results
        .iter()
        .map(|r| r.path)
        .filter(|p| p.previous_step().is_some())
        .collect();
    paths.dedup();
    let mut rows = Vec::new();
    for path in paths {
        let measured: Vec<(CacheMode, u64, u64)> = results
            .iter()
            .filter(|r| r.path == path)
            .filter_map(|r| match r.outcome {
                Outcome::Measured {
                    pte_before,
                    pte_after,
                    ..
                } => pte_before.map(|before| (r.requested, before.0, pte_after.0)),
                Outcome::Skipped { .. } => None,
            })
            .collect();
        for bit in KeptBit::ALL.into_iter().filter(|b| b.applies_to(path)) {
            let outcome = judge_bit(path, bit, kept.flag(bit), &measured);
            rows.push(BitRow { path, bit, outcome });
        }
    }
    rows
}

fn judge_bit(
    path: ProbePath,
    bit: KeptBit,
    flag: u64,
    measured: &[(CacheMode, u64, u64)],
) -> BitOutcome {
    if flag == 0 {
        let reason = format!("this kernel has no {bit} bit (its flag is 0 in this configuration)");
        let why = BitSkip::NoSuchBit;
        return BitOutcome::Skipped { why, reason };
    }
    if measured.is_empty() {
        let reason = format!("no mode of {path} was measured");
        let why = BitSkip::NotMeasured;
        return BitOutcome::Skipped { why, reason };
    }
    let changed: Vec<BitChange> = measured
        .iter()
        .filter(|(_, before, after)| (before ^ after) & flag != 0)
        .filter(|(_, before, _)| before & flag != 0 || !bit.set_by(path))
        .map(|&(mode, before, _)| BitChange {
            mode,
            was_set: before & flag != 0,
        })
        .collect();
    if !changed.is_empty() {
        return BitOutcome::Changed { modes: changed };
    }
    let shown_in: Vec<CacheMode> = measured
        .iter()
        .filter(|(_, before, _)| (before & flag != 0) == bit.shows_loss_when_set())
        .map(|(mode, ..)| *mode)
        .collect();
    if shown_in.is_empty() {
        let reason = format!(
            "no entry before {path} had {bit} {} ({} mode(s) read): a mask that drops it cannot show here",
            bit.state(),
            measured.len()
        );
        let why = BitSkip::NeverShown;
        return BitOutcome::Skipped { why, reason };
    }
    BitOutcome::Kept { shown_in }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows::Pte;

    const KEPT_6_12: &str = "accessed:0x20 dirty:0x40 saved_dirty:0x400000000000000 special:0x200 uffd_wp:0x0 soft_dirty:0x800 devmap:0x200000000000000 pse:0x80";

    fn row(path: ProbePath, mode: CacheMode, before: u64, after: u64) -> ModeResult {
        ModeResult {
            path,
            requested: mode,
            entry: None,
            outcome: Outcome::Measured {
                observed: mode,
                pte_before: Some(Pte(before)),
                pte_after: Pte(after),
                prot_requested: None,
                entry_after: None,
                known_defect: None,
                lost_earlier_at: None,
            },
        }
    }

    fn outcome(rows: &[BitRow], path: ProbePath, bit: KeptBit) -> &BitOutcome {
        let found = rows.iter().find(|r| r.path == path && r.bit == bit);
        &found.expect("a row for the bit").outcome
    }

    #[test]
    fn the_kept_bits_line_parses_and_refuses_what_it_cannot_use() {
        let kept = KeptBits::parse(KEPT_6_12).unwrap();
        assert_eq!(kept.flag(KeptBit::SoftDirty), 0x800);
        assert_eq!(kept.flag(KeptBit::UffdWp), 0);
        for bad in [
            "accessed:0x20",
            "accessed=0x20",
            "accessed:0x60 dirty:0x40",
            "sticky:0x1",
            &format!("{KEPT_6_12} dirty:0x40"),
        ] {
            assert!(KeptBits::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_step_that_clears_a_set_bit_or_sets_a_clear_one_loses_it() {
        let kept = KeptBits::parse(KEPT_6_12).unwrap();
        let (wb, wc) = (CacheMode::Wb, CacheMode::Wc);
        // The measurement: dirty dropped by mprotect() (0x67 → 0x27).
        let results = [
            row(
                ProbePath::Mprotect,
                wb,
                0x8000000000000847,
                0x8000000000000807,
            ),
            row(
                ProbePath::Mprotect,
                wc,
                0x80000000000008c7,
                0x80000000000008e7,
            ),
        ];
        let rows = bit_rows(&results, &kept);
        let dirty = BitOutcome::Changed {
            modes: vec![BitChange {
                mode: wb,
                was_set: true,
            }],
        };
        assert_eq!(outcome(&rows, ProbePath::Mprotect, KeptBit::Dirty), &dirty);
        // Accessed was clear before (clear_refs) and came back in WC.
        let accessed = BitOutcome::Changed {
            modes: vec![BitChange {
                mode: wc,
                was_set: false,
            }],
        };
        assert_eq!(
            outcome(&rows, ProbePath::Mprotect, KeptBit::Accessed),
            &accessed
        );
        let soft_dirty = BitOutcome::Kept {
            shown_in: vec![wb, wc],
        };
        assert_eq!(
            outcome(&rows, ProbePath::Mprotect, KeptBit::SoftDirty),
            &soft_dirty
        );
        assert!(
            rows.iter().all(|r| r.bit != KeptBit::Pse),
            "PSE is a 2 MiB bit"
        );
    }

    #[test]
    fn mremap_may_set_soft_dirty_but_no_step_may_clear_it() {
        let kept = KeptBits::parse(KEPT_6_12).unwrap();
        let (clear, set) = (0x8000000000000067, 0x8000000000000867);
        let soft_dirty = |path, before, after| {
            let rows = bit_rows(&[row(path, CacheMode::Wb, before, after)], &kept);
            outcome(&rows, path, KeptBit::SoftDirty).clone()
        };
        // move_soft_dirty_pte() marks the moved entry: not a change.
        let moved = soft_dirty(ProbePath::Mremap, clear, set);
        assert!(matches!(moved, BitOutcome::Skipped { .. }), "{moved:?}");
        let cleared = soft_dirty(ProbePath::Mremap, set, clear);
        assert!(matches!(cleared, BitOutcome::Changed { .. }), "{cleared:?}");
        let by_mprotect = soft_dirty(ProbePath::Mprotect, clear, set);
        assert!(
            matches!(by_mprotect, BitOutcome::Changed { .. }),
            "{by_mprotect:?}"
        );
    }

    #[test]
    fn a_bit_no_mode_could_show_is_skipped_with_what_was_seen() {
        let kept = KeptBits::parse(KEPT_6_12).unwrap();
        let results = [row(ProbePath::DevmemMprotect, CacheMode::Uc, 0x27f, 0x27f)];
        let rows = bit_rows(&results, &kept);
        let special = outcome(&rows, ProbePath::DevmemMprotect, KeptBit::Special);
        assert_eq!(
            special,
            &BitOutcome::Kept {
                shown_in: vec![CacheMode::Uc]
            }
        );
        let BitOutcome::Skipped { reason, .. } =
            outcome(&rows, ProbePath::DevmemMprotect, KeptBit::SoftDirty)
        else {
            panic!("soft-dirty was never set")
        };
        assert!(
            reason.contains("no entry before devmem_mprotect had soft_dirty set"),
            "{reason}"
        );
        let BitOutcome::Skipped { reason, .. } =
            outcome(&rows, ProbePath::DevmemMprotect, KeptBit::UffdWp)
        else {
            panic!("no uffd-wp bit in this kernel")
        };
        assert!(reason.contains("has no uffd_wp bit"), "{reason}");
        // Accessed was set before: a dropped accessed bit cannot show.
        assert!(rows
            .iter()
            .any(|r| r.bit == KeptBit::Accessed && r.skipped()));
    }

    #[test]
    fn only_later_steps_have_bit_rows_and_pse_only_in_2mib_entries() {
        let kept = KeptBits::parse(KEPT_6_12).unwrap();
        let results = [
            row(ProbePath::MmapFault, CacheMode::Wb, 0x27, 0x67),
            row(ProbePath::HugePfnMprotect, CacheMode::Uc, 0x2ff, 0x27f),
        ];
        let rows = bit_rows(&results, &kept);
        assert!(rows.iter().all(|r| r.path == ProbePath::HugePfnMprotect));
        let pse = outcome(&rows, ProbePath::HugePfnMprotect, KeptBit::Pse);
        assert!(matches!(pse, BitOutcome::Changed { .. }), "{pse:?}");
        assert_eq!(rows.len(), KeptBit::ALL.len());
    }
}
