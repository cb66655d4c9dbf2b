//! `cargo xtask report`: reading earlier runs' JSON records.
//! - `diff OLD.json NEW.json`: what changed (last week's tree and today's,
//!   two probes). A result is matched by variant, environment, path and
//!   mode; exit 1 when a mode the old run kept is lost in the new one.
//! - `merge A.json B.json …`: one table of kernel × environment × path ×
//!   variant (a matrix's jobs); a run that could not test its kernel shows
//!   as untestable with its reason.

use crate::flags::Report;
use crate::record::Record;
use crate::runs::{describe, diff_runs, merge};
use crate::support::failure::{fail, Kind};
use anyhow::Result;
use std::path::Path;

impl Report {
    pub fn run(self) -> Result<()> {
        match self {
            Report::Diff { old, new } => diff(&old, &new),
            Report::Merge { files } => {
                let runs = files
                    .iter()
                    .map(|f| Record::read(f).map(|r| (f.clone(), r)))
                    .collect::<Result<Vec<_>>>()?;
                crate::output::result(merge(&runs).trim_end_matches('\n'));
                Ok(())
            }
            Report::Mail(mail) => {
                let record = Record::read(&mail.record)?;
                let reply = crate::mail::reply(&record, &mail)?;
                crate::output::result(reply.trim_end_matches('\n'));
                Ok(())
            }
        }
    }
}

fn diff(old: &Path, new: &Path) -> Result<()> {
    let (old_record, new_record) = (Record::read(old)?, Record::read(new)?);
    let changes = diff_runs(&old_record, &new_record);
    crate::output::result(&format!(
        "old  {} ({})",
        old.display(),
        describe(&old_record)
    ));
    crate::output::result(&format!(
        "new  {} ({})",
        new.display(),
        describe(&new_record)
    ));
    for change in &changes.lines {
        crate::output::result(change);
    }
    crate::output::result(&format!(
        "{} results compared, {} changed, {} newly lost",
        changes.compared,
        changes.lines.len(),
        changes.regressions
    ));
    if changes.regressions > 0 {
        return Err(fail(
            Kind::CandidateLost,
            format!(
                "{} mode(s) kept in {} are lost in {}",
                changes.regressions,
                old.display(),
                new.display()
            ),
        ));
    }
    Ok(())
}
