//! The one cache directory: unpacked sources, variant trees, build outputs,
//! downloads and per-run results. Each entry is made under its own lock
//! (`lock_entry`), so runs that need different entries proceed side by side
//! and two that need the same one make it once; the whole cache is locked
//! only by `clean` (runs hold it shared). Entries are written under a
//! temporary name and renamed into place, so an interrupted run never leaves
//! an entry a later run would trust.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Cache {
    pub root: PathBuf,
    _lock: File,
}

/// `$PATVERIFY_CACHE`, else `$XDG_CACHE_HOME/patverify`, else `~/.cache/patverify`.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATVERIFY_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    base.join("patverify")
}

impl Cache {
    /// Opens (creating) the cache for a run: shared with other runs (each
    /// entry has its own lock), waiting only while `clean` holds it.
    pub fn open(root: &Path) -> Result<Cache> {
        Self::open_locked(root, false)
    }

    /// Opens the cache alone (`clean`): waits until no run uses it.
    pub fn open_exclusive(root: &Path) -> Result<Cache> {
        Self::open_locked(root, true)
    }

    fn open_locked(root: &Path, exclusive: bool) -> Result<Cache> {
        fs::create_dir_all(root).map_err(|e| {
            crate::support::failure::fail(
                crate::support::failure::Kind::Setup,
                format!(
                    "cannot create cache directory {}: {e} (set --cache-dir or PATVERIFY_CACHE)",
                    root.display()
                ),
            )
        })?;
        let lock_path = root.join("lock");
        let mut lock = open_lock_file(&lock_path).map_err(|e| {
            crate::support::failure::fail(
                crate::support::failure::Kind::Setup,
                format!("cannot write to cache directory {}: {e}", root.display()),
            )
        })?;
        let waiting = || {
            if exclusive {
                format!("waiting for the patverify runs using {}", root.display())
            } else {
                let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                waiting_for_clean(holder.trim(), &lock_path)
            }
        };
        lock_waiting(&lock, exclusive, waiting).context("cannot lock the cache")?;
        if exclusive {
            note_holder(&mut lock)?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self, rel: &str) -> Result<PathBuf> {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }
}

/// The lock of one cache entry, held while a run checks whether the entry
/// is there and makes it: a second run that needs the same entry waits,
/// then finds it made. Released on drop (or when the process dies).
pub struct EntryLock {
    _file: File,
}

/// Locks the entry `dest` (through `.NAME.lock` beside it), waiting, with a
/// progress line, while another run makes it.
pub fn lock_entry(dest: &Path) -> Result<EntryLock> {
    let path = hidden_sibling(dest, "lock")?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file =
        open_lock_file(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let waiting = || {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        format!(
            "waiting for another patverify run (pid {}) making {}",
            holder.trim(),
            dest.display()
        )
    };
    lock_waiting(&file, true, waiting)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    note_holder(&mut file)?;
    Ok(EntryLock { _file: file })
}

/// A lock file, created if missing (never truncated: another process may
/// hold it).
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Writes this process's pid into the lock file it holds exclusively, for
/// the "waiting for … (pid N)" line of whoever waits.
/// What a run says while a `clean` holds the cache: the pid the holder
/// noted, if it has noted one yet.
fn waiting_for_clean(holder: &str, lock: &Path) -> String {
    let pid = if holder.is_empty() {
        String::new()
    } else {
        format!("pid {holder}, ")
    };
    format!(
        "waiting for another patverify run ({pid}`clean`) that holds {}",
        lock.display()
    )
}

fn note_holder(file: &mut File) -> Result<()> {
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(())
}

/// Locks `file` (exclusive or shared); when another process holds it for
/// longer than a glance (another run checking that an entry exists holds
/// it for milliseconds), says so with `waiting()`'s line, then waits.
fn lock_waiting(file: &File, exclusive: bool, waiting: impl FnOnce() -> String) -> Result<()> {
    let try_once = || {
        if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        }
    };
    let mut tried = try_once();
    for _ in 0..15 {
        if !matches!(tried, Err(std::fs::TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        tried = try_once();
    }
    match tried {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            crate::output::progress(&waiting());
            let locked = if exclusive {
                file.lock()
            } else {
                file.lock_shared()
            };
            Ok(locked?)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Content keys: a SHA-256 over labelled parts, shown as 16 hex digits.
#[derive(Clone, Default)]
pub struct Key(Sha256);

impl Key {
    pub fn new(kind: &str) -> Self {
        let mut key = Key(Sha256::new());
        key.add(kind.as_bytes());
        key
    }
    pub fn add(&mut self, part: impl AsRef<[u8]>) -> &mut Self {
        let part = part.as_ref();
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part);
        self
    }
    pub fn add_file(&mut self, path: &Path) -> Result<&mut Self> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.add(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        Ok(self.add(bytes))
    }
    pub fn hex(&self) -> String {
        self.0
            .clone()
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Moves a finished temporary directory into place, replacing any stale one.
fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest)
            .with_context(|| format!("cannot remove stale {}", dest.display()))?;
    }
    fs::rename(tmp, dest)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))
}

/// `.NAME.SUFFIX` beside `dest` (NAME its file name).
fn hidden_sibling(dest: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .context("cache path has no name")?
        .to_string_lossy();
    Ok(dest.with_file_name(format!(".{name}.{suffix}")))
}

/// A fresh temporary sibling of `dest`, removing leftovers of an interrupted run.
pub fn temp_sibling(dest: &Path) -> Result<PathBuf> {
    let tmp = hidden_sibling(dest, "tmp")?;
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    Ok(tmp)
}

/// A cache entry being made under a temporary name beside `dest`:
/// `publish` renames it into place. Dropped unpublished (an error on the
/// way), it is removed, so a failed step gives its space back (a full disk
/// especially) and leaves nothing a later run could take for finished.
///
/// Written by hand rather than with `tempfile`: the name is fixed
/// (`.NAME.tmp`), so the next run removes what a killed run left behind
/// (SIGKILL, or the signal handler's `_exit`, runs no destructor) — with a
/// random name those leftovers (GBs for a kernel source) would pile up.
pub struct Staged {
    path: PathBuf,
}

impl Staged {
    pub fn new(dest: &Path) -> Result<Staged> {
        let path = temp_sibling(dest)?;
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Staged { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn publish(self, dest: &Path) -> Result<()> {
        publish_dir(&self.path, dest)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After publish, nothing is left here to remove.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Writes a file by replacing it (unlink, then create), so a hard-linked
/// copy of someone else's file is never written through.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a small file atomically (temp + rename).
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot move into {}", path.display()))
}

/// `du -sh`-style size of a directory (0 if it does not exist).
pub fn size_human(path: &Path) -> String {
    let (ok, out) = crate::support::proc::Command::new("du")
        .arg("-sh")
        .arg(path)
        .output_quiet()
        .unwrap_or_default();
    if ok {
        out.split_whitespace().next().unwrap_or("?").to_string()
    } else {
        "empty".to_string()
    }
}

/// A fresh, empty directory for one unit test, removed when it is dropped.
#[cfg(test)]
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("patverify-test-{name}-"))
        .tempdir()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_entry_is_published_whole_or_removed() {
        let tmp = scratch("staged");
        let dir = tmp.path();
        let dest = dir.join("entry");
        let failed = Staged::new(&dest).unwrap();
        fs::write(failed.path().join("half"), "written before the error").unwrap();
        let failed_path = failed.path().to_path_buf();
        drop(failed);
        assert!(!failed_path.exists(), "an unpublished entry is removed");
        assert!(!dest.exists());
        let staged = Staged::new(&dest).unwrap();
        fs::write(staged.path().join("whole"), "done").unwrap();
        staged.publish(&dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("whole")).unwrap(), "done");
        assert_eq!(
            fs::read_dir(dir).unwrap().count(),
            1,
            "only the entry is left"
        );
    }

    #[test]
    fn keys_depend_on_every_part_and_its_boundaries() {
        let a = Key::new("k").add("ab").add("c").hex();
        let b = Key::new("k").add("a").add("bc").hex();
        assert_ne!(a, b);
        assert_eq!(a, Key::new("k").add("ab").add("c").hex());
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn replace_file_breaks_hard_links() {
        let tmp = scratch("replace");
        let dir = tmp.path();
        let original = dir.join("original");
        let link = dir.join("link");
        fs::write(&original, "user data").unwrap();
        fs::hard_link(&original, &link).unwrap();
        replace_file(&link, "variant").unwrap();
        assert_eq!(fs::read_to_string(&original).unwrap(), "user data");
        assert_eq!(fs::read_to_string(&link).unwrap(), "variant");
    }

    #[test]
    fn runs_share_the_cache_and_make_an_entry_once() {
        let tmp = scratch("entry-lock");
        let dir = tmp.path();
        let _a = Cache::open(dir).unwrap();
        let _b = Cache::open(dir).unwrap();
        let dest = dir.join("entry");
        let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (dest, made) = (dest.clone(), made.clone());
                std::thread::spawn(move || {
                    let _lock = lock_entry(&dest).unwrap();
                    if !dest.exists() {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        let staged = Staged::new(&dest).unwrap();
                        staged.publish(&dest).unwrap();
                        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another entry is not held up by this one's lock.
        let _held = lock_entry(&dest).unwrap();
        let other = dir.join("other");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _lock = lock_entry(&other).unwrap();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("an unrelated entry waited");
    }

    #[test]
    fn clean_waits_for_the_runs() {
        let tmp = scratch("lock");
        let dir = tmp.path();
        let first = Cache::open(dir).unwrap();
        let root = dir.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = Cache::open_exclusive(&root).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "lock not held"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("second run never got the lock");
        waiter.join().unwrap();
    }

    #[test]
    fn a_clean_that_has_not_noted_its_pid_is_named_without_one() {
        let lock = Path::new("/cache/lock");
        assert_eq!(
            waiting_for_clean("", lock),
            "waiting for another patverify run (`clean`) that holds /cache/lock"
        );
        assert_eq!(
            waiting_for_clean("42", lock),
            "waiting for another patverify run (pid 42, `clean`) that holds /cache/lock"
        );
    }
}
