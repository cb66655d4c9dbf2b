//! `cargo xtask mutants --list`: the mutants of a tree's protection masks,
//! read from its own arch/x86/include/asm/pgtable_types.h — one per bit
//! term of `_COMMON_PAGE_CHG_MASK`, `_PAGE_CHG_MASK` and `_HPAGE_CHG_MASK`,
//! each a patch on the tree as is (`--patches DIR` writes them). Building
//! and probing each mutant is not done yet.

use crate::flags::Mutants;
use crate::output::result;
use crate::stages::{mask, source};
use crate::support::cache::Cache;
use crate::support::failure::{fail, Kind};
use anyhow::{Context, Result};
use std::path::Path;

impl Mutants {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let cache = Cache::open(cache_root)?;
        let tree = source::get(&cache, self.kernel.as_deref(), self.rev.as_deref())?;
        let header_path = tree.root.join(mask::HEADER);
        let header = std::fs::read_to_string(&header_path)
            .with_context(|| format!("cannot read {}", header_path.display()))?;
        let mutants = mask::mutants(&header).map_err(|why| fail(Kind::Setup, why))?;
        result(&format!(
            "{} (Linux {}): {} mutants",
            tree.describe,
            tree.version,
            mutants.len()
        ));
        for m in &mutants {
            result(&format!("  {:<24} drops {}", m.mask, m.term));
        }
        if let Some(dir) = &self.patches {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for m in &mutants {
                let file = dir.join(format!("{}.patch", m.name()));
                std::fs::write(&file, &m.patch)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            result(&format!("patches in {}", dir.display()));
        }
        Ok(())
    }
}
