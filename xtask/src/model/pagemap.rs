//! `/init`'s own rows, read from /proc/self/pagemap on an anonymous page
//! before and after `mprotect()` (no module involved): whether the step
//! kept the entry's soft-dirty and uffd-wp bits.

use serde::{Deserialize, Serialize};

/// What a pagemap row saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum PagemapOutcome {
    /// The bit was set before the step and still is.
    Kept,
    /// The bit was set before the step and is not after it.
    Lost,
    /// Not measurable here, with why (no userfaultfd in this kernel; the
    /// bit was never set before the step).
    Skipped { reason: String },
    /// `/init` could not do the steps (an ioctl or mprotect failed).
    Error { reason: String },
}

/// One pagemap row of one boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagemapRow {
    /// `pagemap.soft_dirty`, `pagemap.uffd_wp`.
    pub row: String,
    #[serde(flatten)]
    pub outcome: PagemapOutcome,
    /// The pagemap entries before and after the step, as `/init` read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl PagemapRow {
    /// One cell of a table.
    pub fn summary(&self) -> String {
        // The flag bits (55–63) only: the frame number differs by boot.
        let flags = |entry: &str| {
            let value = u64::from_str_radix(entry.trim_start_matches("0x"), 16).ok()?;
            Some(format!("{:#x}", value & !((1u64 << 55) - 1)))
        };
        let entries = match (
            self.before.as_deref().and_then(flags),
            self.after.as_deref().and_then(flags),
        ) {
            (Some(b), Some(a)) => format!(" (pagemap flags {b} → {a})"),
            _ => String::new(),
        };
        match &self.outcome {
            PagemapOutcome::Kept => format!("kept{entries}"),
            PagemapOutcome::Lost => format!("LOST{entries}"),
            PagemapOutcome::Skipped { reason } => format!("skip: {reason}"),
            PagemapOutcome::Error { reason } => format!("ERROR: {reason}"),
        }
    }

    /// Lost, or not measured because of an error: what fails a candidate.
    pub fn failed(&self) -> bool {
        matches!(
            self.outcome,
            PagemapOutcome::Lost | PagemapOutcome::Error { .. }
        )
    }
}
