//! Keeping the cache within its size limit (`--cache-max-size`,
//! `$PATVERIFY_CACHE_MAX_SIZE`): after a run, the least recently used
//! kernel builds (variant trees with their builds), bisect clones and run
//! outputs go until the cache fits, as ccache's cleanup does for its own
//! objects. Only when no other run uses the cache (a run holds it shared
//! from start to end), and never an entry whose lock someone holds. The
//! unpacked sources, ccache, the Rust compile cache, Xen and the 6.1
//! toolchain stay: they are what makes the next build cheap.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The kinds of entry eviction may remove, each a directory of entries.
pub const EVICTABLE: [&str; 7] = [
    "runs",
    "variants",
    "bisect",
    "series",
    "configs",
    "scratch",
    "bench-cold",
];

/// How often a run measures the cache (a measurement walks every file).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// The default limit: room for every kernel `cargo xtask test` builds (its
/// working set is in docs/benchmarks.md) on a CI runner's disk.
pub const DEFAULT_MAX: &str = "40G";

/// "40G", "500M", "2T", "123" (bytes); "0" means no limit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 40G, 500M, 0 for no limit)"))?;
    let shift = match unit
        .trim_end_matches(['i', 'B'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// For people: 41.2 GiB.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Bytes on disk under `path`, each inode once (hard links between variant
/// trees and the unpacked source count once).
pub fn disk_usage(path: &Path) -> u64 {
    usage_once(path, &mut std::collections::HashSet::new())
}

/// Bytes under `path` of inodes not in `seen` (which it extends).
fn usage_once(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let mut total = 0;
    walk(path, &mut |meta| {
        if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
    });
    total
}

/// Bytes that removing `path` gives back: files linked nowhere else.
fn freed_by_removing(path: &Path) -> u64 {
    let mut total = 0;
    walk(path, &mut |meta| {
        if meta.nlink() <= 1 || meta.is_dir() {
            total += meta.blocks() * 512;
        }
    });
    total
}

fn walk(path: &Path, each: &mut dyn FnMut(&fs::Metadata)) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    each(&meta);
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            walk(&entry.path(), each);
        }
    }
}

/// One entry eviction may remove.
struct Entry {
    path: PathBuf,
    used: SystemTime,
}

/// The evictable entries, least recently used first (a used entry is
/// touched: its directory's mtime). Hidden names are locks and entries
/// being made.
fn entries(root: &Path) -> Vec<Entry> {
    let mut found: Vec<Entry> = EVICTABLE
        .iter()
        .flat_map(|kind| {
            fs::read_dir(root.join(kind))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| Entry {
            used: e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            path: e.path(),
        })
        .collect();
    found.sort_by_key(|e| e.used);
    found
}

/// What an eviction pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// The cache's size before, and the limit.
    pub before: u64,
    pub limit: u64,
    /// Another run held the cache: nothing was looked at.
    pub deferred: bool,
    pub removed: Vec<PathBuf>,
    pub freed: u64,
    /// Over the limit still, after every entry that could go went.
    pub still_over: bool,
}

impl Evicted {
    /// The line a run prints, when it did something worth a line.
    pub fn describe(&self) -> Option<String> {
        if self.deferred || (self.removed.is_empty() && !self.still_over) {
            return None;
        }
        let mut line = format!(
            "cache {} over its {} limit: evicted {} least recently used entries ({} freed)",
            human(self.before),
            human(self.limit),
            self.removed.len(),
            human(self.freed)
        );
        if self.still_over {
            line += "; still over the limit: what is left is in use or kept (sources, compile caches, toolchains)";
        }
        Some(line)
    }
}

/// Evicts least recently used entries until the cache at `root` fits in
/// `limit` bytes (0: no limit). Call it with no cache lock of the caller's
/// own held: it takes the cache exclusively, without waiting, and does
/// nothing when another run holds it.
pub fn enforce(root: &Path, limit: u64) -> Result<Evicted> {
    let mut done = Evicted {
        limit,
        ..Evicted::default()
    };
    if limit == 0 || !root.join("lock").exists() {
        return Ok(done);
    }
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("lock"))
        .context("cannot open the cache lock")?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            done.deferred = true;
            return Ok(done);
        }
        Err(fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    // Measuring walks every file of the cache (seconds for a full one):
    // once per CHECK_EVERY, not after every warm run.
    let stamp = root.join(".size-checked");
    let fresh = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < CHECK_EVERY));
    if fresh {
        return Ok(done);
    }
    fs::write(&stamp, "").with_context(|| format!("cannot write {}", stamp.display()))?;
    done.before = disk_usage(root);
    let mut size = done.before;
    for entry in entries(root) {
        if size <= limit {
            break;
        }
        let Some(_entry_lock) = try_lock_entry(&entry.path)? else {
            continue;
        };
        let freed = freed_by_removing(&entry.path);
        let removed = if entry.path.is_dir() {
            fs::remove_dir_all(&entry.path)
        } else {
            fs::remove_file(&entry.path)
        };
        removed.with_context(|| format!("cannot remove {}", entry.path.display()))?;
        size = size.saturating_sub(freed);
        done.freed += freed;
        done.removed.push(entry.path);
    }
    done.still_over = size > limit;
    Ok(done)
}

/// The entry's lock (`.NAME.lock` beside it, as `lock_entry` takes it), if
/// nobody holds it.
fn try_lock_entry(entry: &Path) -> Result<Option<File>> {
    let name = entry.file_name().context("cache entry without a name")?;
    let path = entry.with_file_name(format!(".{}.lock", name.to_string_lossy()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Sizes per kind of entry, for `doctor`: the kept kinds first, so a file
/// a variant tree shares with the unpacked source counts with the source
/// (the sizes add up to the cache's).
pub fn sizes_by_kind(root: &Path) -> Vec<(String, u64)> {
    let mut kinds: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kinds.sort_by_key(|k| (EVICTABLE.contains(&k.as_str()), k.clone()));
    let mut seen = std::collections::HashSet::new();
    kinds
        .into_iter()
        .map(|kind| {
            let bytes = usage_once(&root.join(&kind), &mut seen);
            (kind, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of `kind` holding `kib` KiB, last used `age` seconds ago.
    fn entry(root: &Path, kind: &str, name: &str, kib: usize, age: u64) -> PathBuf {
        let dir = root.join(kind).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("data"), vec![7u8; kib * 1024]).unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(age);
        File::open(&dir).unwrap().set_modified(when).unwrap();
        dir
    }

    /// `enforce`, as if the cache had not been measured lately.
    fn enforce_now(root: &Path, limit: u64) -> Evicted {
        let _ = fs::remove_file(root.join(".size-checked"));
        enforce(root, limit).unwrap()
    }

    fn cache_with_three_builds() -> (tempfile::TempDir, [PathBuf; 3]) {
        let tmp = crate::support::cache::scratch("evict");
        let root = tmp.path();
        fs::write(root.join("lock"), "").unwrap();
        let old = entry(root, "variants", "old", 512, 300);
        let mid = entry(root, "variants", "mid", 512, 200);
        let new = entry(root, "runs", "new", 512, 100);
        // Kept whatever the limit: the unpacked source.
        entry(root, "src", "linux", 512, 1000);
        (tmp, [old, mid, new])
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("40G"), Ok(40 << 30));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("123"), Ok(123));
        for bad in ["", "G", "12X", "-1", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human(40 << 30), "40.0 GiB");
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_cache_fits() {
        let (tmp, [old, mid, new]) = cache_with_three_builds();
        let total = disk_usage(tmp.path());
        // Room for all but one entry's worth.
        let done = enforce_now(tmp.path(), total - 400 * 1024);
        assert_eq!(done.removed, std::slice::from_ref(&old));
        assert!(!old.exists() && mid.exists() && new.exists());
        assert!(!done.still_over && done.describe().is_some());
        // Under the limit: nothing goes.
        let again = enforce_now(tmp.path(), total);
        assert!(again.removed.is_empty() && again.describe().is_none());
        // No limit at all.
        assert!(enforce_now(tmp.path(), 0).removed.is_empty());
    }

    #[test]
    fn an_entry_someone_holds_stays_and_another_run_defers_eviction() {
        let (tmp, [old, mid, _]) = cache_with_three_builds();
        let held = crate::support::cache::lock_entry(&old).unwrap();
        let done = enforce_now(tmp.path(), 1);
        assert!(old.exists(), "a locked entry was evicted");
        assert!(!mid.exists() && done.still_over);
        assert!(
            tmp.path().join("src/linux").exists(),
            "the source was evicted"
        );
        drop(held);
        // A run in progress holds the cache shared: nothing is looked at.
        let run = crate::support::cache::Cache::open(tmp.path()).unwrap();
        let deferred = enforce_now(tmp.path(), 1);
        assert!(deferred.deferred && old.exists());
        drop(run);
        assert!(!enforce_now(tmp.path(), 1).deferred);
        // Measured a moment ago: the next run does not walk the cache again.
        assert_eq!(enforce(tmp.path(), 1).unwrap().before, 0);
    }

    #[test]
    fn hard_links_count_once() {
        let tmp = crate::support::cache::scratch("evict-links");
        let a = tmp.path().join("a");
        fs::write(&a, vec![1u8; 256 * 1024]).unwrap();
        fs::hard_link(&a, tmp.path().join("b")).unwrap();
        let usage = disk_usage(tmp.path());
        assert!(usage < 400 * 1024, "{usage}");
        assert_eq!(freed_by_removing(&a), 0);
    }
}
