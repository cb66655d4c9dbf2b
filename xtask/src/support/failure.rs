//! Named failures and the exit codes they map to. Every error that reaches
//! `main` either carries a `Failure` (a documented exit code) or is an
//! unexpected infrastructure error (exit 10).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The candidate lost a cache mode (verify's "fail" verdict).
    CandidateLost,
    /// Bad flags, missing tools, a tree that is not a kernel, a bad revision,
    /// a toolchain that cannot build the tree.
    Setup,
    /// The baseline kept every mode: the harness did not reproduce the bug.
    BaselineNotReproduced,
    /// The patch applies neither forward nor in reverse.
    PatchDoesNotApply,
    /// A requested kernel option did not survive `olddefconfig`.
    Config,
    /// The kernel (or the module in it) did not compile.
    Build,
    /// This toolchain cannot build the tree's Rust (`make rustavailable` fails).
    Toolchain,
    /// A boot hung, panicked, oopsed, or printed no complete report.
    Boot,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::CandidateLost => 1,
            Kind::Setup => 2,
            Kind::BaselineNotReproduced => 3,
            Kind::PatchDoesNotApply => 4,
            Kind::Config => 5,
            Kind::Build => 6,
            Kind::Boot => 7,
            Kind::Toolchain => 9,
        }
    }

    pub const ALL: [Kind; 8] = [
        Kind::CandidateLost,
        Kind::Setup,
        Kind::BaselineNotReproduced,
        Kind::PatchDoesNotApply,
        Kind::Config,
        Kind::Build,
        Kind::Boot,
        Kind::Toolchain,
    ];

    /// The kind an exit code stands for (a child run's, read back).
    pub fn from_exit_code(code: i32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.exit_code() == code)
    }
}

/// The exit code `git bisect run` needs: 125 = this revision cannot be
/// tested (skip it), 128 = the setup is broken (abort the bisect).
pub fn bisect_exit_code(err: &anyhow::Error) -> i32 {
    if disk_full(err) {
        return BISECT_ABORT;
    }
    match kind_of(err) {
        Some(
            Kind::PatchDoesNotApply | Kind::Config | Kind::Build | Kind::Boot | Kind::Toolchain,
        ) => BISECT_SKIP,
        _ => BISECT_ABORT,
    }
}

/// `git bisect run`'s codes: good, bad, skip this revision, abort.
pub const BISECT_GOOD: i32 = 0;
pub const BISECT_BAD: i32 = 1;
pub const BISECT_SKIP: i32 = 125;
pub const BISECT_ABORT: i32 = 128;

/// Exit code for errors that carry no `Failure`: a bug or an unexpected
/// environment problem (disk full, a killed process).
pub const INTERNAL_EXIT: i32 = 10;

#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// `Err(fail(Kind::Build, "…"))?`
pub fn fail(kind: Kind, message: impl Into<String>) -> anyhow::Error {
    Failure {
        kind,
        message: message.into(),
    }
    .into()
}

fn kind_of(err: &anyhow::Error) -> Option<Kind> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map(|f| f.kind)
}

/// The exit code an error should end the process with. A full disk is a
/// setup problem (exit 2; `probe` aborts a bisect on it), not a harness bug
/// and not a build or boot failure of the kernel under test.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    if disk_full(err) {
        return Kind::Setup.exit_code();
    }
    kind_of(err).map_or(INTERNAL_EXIT, Kind::exit_code)
}

/// The directory whose filesystem holds the cache; `disk_full` looks at it.
static WATCHED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Below this, a failure that is not a verdict is put down to the full disk.
const NEARLY_FULL_BYTES: u64 = 64 << 20;

/// Names `dir`'s filesystem as the one to blame when a step fails on a
/// full disk in a child process (tar, make, apt), whose ENOSPC reaches us
/// only as text.
pub fn watch_disk(dir: &std::path::Path) {
    let _ = WATCHED.set(dir.to_path_buf());
}

/// Bytes available to us on the filesystem holding `dir` (or its nearest
/// existing parent).
pub fn available_bytes(dir: &std::path::Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string, `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether the error comes from a full disk: ENOSPC or EDQUOT in the chain,
/// a child tool's "No space left on device" in the message (tar, make, apt
/// only tell us in text), or a failure that is not a verdict while the
/// cache's disk is (nearly) full.
pub fn disk_full(err: &anyhow::Error) -> bool {
    let io_full = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)));
    let text = format!("{err:#}");
    let said_full =
        text.contains("No space left on device") || text.contains("Disk quota exceeded");
    let verdict = matches!(
        kind_of(err),
        Some(Kind::CandidateLost | Kind::BaselineNotReproduced)
    );
    io_full
        || (!verdict
            && (said_full
                || WATCHED
                    .get()
                    .and_then(|dir| available_bytes(dir))
                    .is_some_and(|free| free < NEARLY_FULL_BYTES)))
}

/// Prints an error that ends a command, with the full-disk hint when that
/// is the cause.
pub fn print_error(err: &anyhow::Error) {
    crate::output::progress(&format!("error: {err:#}"));
    if disk_full(err) {
        crate::output::progress(&format!("error: {}", disk_full_hint()));
    }
}

/// The one line that says so, naming the disk.
fn disk_full_hint() -> String {
    match WATCHED.get() {
        Some(dir) => format!(
            "the disk is full (the cache {} has {} MiB free now): free space (`cargo xtask clean`) or point --cache-dir elsewhere, and run again",
            dir.display(),
            available_bytes(dir).unwrap_or(0) >> 20
        ),
        None => "the disk is full: free space (e.g. `cargo xtask clean`) and run again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<i32> = Kind::ALL.iter().map(|k| k.exit_code()).collect();
        for kind in Kind::ALL {
            assert_eq!(Kind::from_exit_code(kind.exit_code()), Some(kind));
        }
        codes.push(INTERNAL_EXIT);
        let count = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), count, "two kinds share an exit code");
        assert!(!codes.contains(&0));
    }

    #[test]
    fn bisect_codes_skip_untestable_and_abort_on_setup() {
        assert_eq!(bisect_exit_code(&fail(Kind::Build, "x")), 125);
        assert_eq!(bisect_exit_code(&fail(Kind::Toolchain, "x")), 125);
        assert_eq!(bisect_exit_code(&fail(Kind::Boot, "x")), 125);
        assert_eq!(bisect_exit_code(&fail(Kind::Setup, "qemu missing")), 128);
        assert_eq!(bisect_exit_code(&anyhow::anyhow!("disk full")), 128);
    }

    #[test]
    fn failure_survives_context() {
        let err = Err::<(), _>(fail(Kind::Boot, "hang"))
            .context("booting baseline")
            .unwrap_err();
        assert_eq!(exit_code_of(&err), 7);
        assert_eq!(exit_code_of(&anyhow::anyhow!("unexpected")), INTERNAL_EXIT);
    }

    #[test]
    fn a_full_disk_is_a_setup_error_that_aborts_a_bisect() {
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("cannot write /x/out.json");
        assert!(disk_full(&full));
        assert_eq!(exit_code_of(&full), Kind::Setup.exit_code());
        assert_eq!(bisect_exit_code(&full), BISECT_ABORT);
    }

    #[test]
    fn a_tool_that_says_the_disk_is_full_is_a_setup_error() {
        let tar = fail(
            Kind::Build,
            "cannot unpack x.tar.xz:\ntar: linux/mm/mmap.c: Cannot write: No space left on device",
        );
        assert!(disk_full(&tar));
        assert_eq!(exit_code_of(&tar), Kind::Setup.exit_code());
        let verdict = fail(
            Kind::CandidateLost,
            "No space left on device in a patch hunk",
        );
        assert!(!disk_full(&verdict), "a verdict stays a verdict");
        assert!(!disk_full(&fail(
            Kind::Build,
            "mm/mmap.c: error: expected ';'"
        )));
    }

    #[test]
    fn free_space_of_a_path_that_does_not_exist_yet() {
        let free = available_bytes(std::path::Path::new("/tmp/patverify-no-such/dir/below"));
        assert!(free.is_some_and(|b| b > 0));
    }
}
