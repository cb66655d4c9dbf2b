//! `cargo xtask clean`: keeps the cache in check. Variant trees and their
//! builds (~0.5 GB each), run outputs and saved configurations go; the
//! unpacked sources, ccache, the Rust compile cache, Xen and the 6.1
//! toolchain stay unless `--all`.

use crate::flags::Clean;
use crate::support::cache::{size_human, Cache};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, SystemTime};

impl Clean {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        if !cache_root.exists() {
            crate::output::result(&format!("no cache at {}", cache_root.display()));
            return Ok(());
        }
        let cache = Cache::open_exclusive(cache_root)?;
        crate::output::result(&format!(
            "cache {} holds {}",
            cache.root.display(),
            size_human(&cache.root)
        ));
        let mut kinds = vec![
            "variants",
            "runs",
            "scratch",
            "bisect",
            "series",
            "bench-cold",
            "configs",
        ];
        if self.all {
            kinds.extend(["src", "ccache", "rustc-cache", "xen", "toolchains"]);
            kinds.extend([
                crate::stages::kbuild::UNTRUSTED_CCACHE,
                crate::stages::kbuild::UNTRUSTED_RUSTC_CACHE,
            ]);
        }
        let cutoff = self
            .older_than
            .map(|days| SystemTime::now() - Duration::from_secs(days * 86_400));
        for kind in kinds {
            let dir = cache.root.join(kind);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let used = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if cutoff.is_some_and(|c| used > c) {
                    continue;
                }
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("cannot remove {}", path.display()))?;
                crate::output::result(&format!("removed {}", path.display()));
            }
        }
        crate::output::result(&format!("cache now holds {}", size_human(&cache.root)));
        Ok(())
    }
}
