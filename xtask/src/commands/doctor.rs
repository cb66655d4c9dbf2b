//! `cargo xtask doctor`: every requirement with its version, or the
//! feature it belongs to and the command that installs it; the cache's own
//! entries, KVM, and the cache's size. Exit 2 when something every run
//! needs is missing.

use crate::support::evict;
use crate::support::failure::{fail, Kind};
use crate::support::provision::{self, Feature};
use anyhow::Result;
use std::path::Path;

pub fn run(cache_root: &Path, limit: u64) -> Result<()> {
    let mut all_ok = true;
    for req in provision::found() {
        let what = req.what;
        match (&req.version, req.feature) {
            (Some(v), _) => crate::output::result(&format!("  ok       {what:<45} {v}")),
            (None, Feature::Pipeline) => {
                all_ok = false;
                crate::output::result(&format!("  MISSING  {what:<45} ({})", req.install));
            }
            (None, feature) => crate::output::result(&format!(
                "  absent   {what:<45} (only for {}; {})",
                feature.describe(),
                req.install
            )),
        }
    }
    for (label, version, required, how) in provision::cache_entries(cache_root) {
        match version {
            Some(v) => crate::output::result(&format!("  ok       {label:<45} {v}")),
            None if required => {
                all_ok = false;
                crate::output::result(&format!("  MISSING  {label:<45} ({how})"));
            }
            None => crate::output::result(&format!("  absent   {label:<45} ({how})")),
        }
    }
    let kvm = if Path::new("/dev/kvm").exists() {
        "/dev/kvm present (unused by default: guests die with emulation failures here; --kvm to try)"
    } else {
        "absent (TCG)"
    };
    crate::output::result(&format!("  kvm      {kvm}"));
    print_cache(cache_root, limit);
    if all_ok {
        crate::output::result("everything is present");
        Ok(())
    } else {
        Err(fail(
            Kind::Setup,
            "some requirements are missing: run `cargo xtask setup` as root",
        ))
    }
}

/// The cache's size, its limit and each kind's share.
fn print_cache(cache_root: &Path, limit: u64) {
    let limit_text = match limit {
        0 => "no limit".to_string(),
        n => format!("limit {}", evict::human(n)),
    };
    crate::output::result(&format!(
        "  cache    {} ({}, {limit_text}; --cache-max-size)",
        cache_root.display(),
        evict::human(evict::disk_usage(cache_root))
    ));
    for (kind, bytes) in evict::sizes_by_kind(cache_root) {
        let evictable = if evict::EVICTABLE.contains(&kind.as_str()) {
            "evicted least recently used first"
        } else {
            "kept"
        };
        crate::output::result(&format!(
            "           {kind:<22} {:>10}  ({evictable})",
            evict::human(bytes)
        ));
    }
}
