//! `/init`'s own rows: bits the masks keep, on the commonest user memory —
//! an anonymous page — read back from /proc/self/pagemap before and after
//! `mprotect()` read-only and back. No module is involved: the kernel's
//! pagemap reports the entry's soft-dirty (bit 55) and uffd-wp (bit 57).
//!
//! - `pagemap.soft_dirty`: a written page whose soft-dirty state was
//!   cleared and written again (x86's `pte_mkdirty()` sets soft-dirty with
//!   dirty), then `mprotect()`.
//! - `pagemap.uffd_wp`: a written page registered with userfaultfd in
//!   write-protect mode and write-protected (`UFFDIO_WRITEPROTECT`), then
//!   `mprotect()`. Skipped, with the reason, on a kernel without
//!   userfaultfd.

use std::io::{Read, Seek, SeekFrom};

const PAGE: usize = 4096;
const SOFT_DIRTY: u64 = 1 << 55;
const UFFD_WP: u64 = 1 << 57;

// linux/userfaultfd.h: the ioctls (_IOWR(0xAA, nr, struct)) and their
// structures, as the uapi defines them.
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// What one row saw: the pagemap entry before and after, or why it could
/// not be measured.
enum Seen {
    Entries(u64, u64),
    Skip(String),
}

/// The rows as KTAP, for the console between the pagemap markers.
pub fn report() -> String {
    let rows = [
        ("pagemap.soft_dirty", SOFT_DIRTY, soft_dirty()),
        ("pagemap.uffd_wp", UFFD_WP, uffd_wp()),
    ];
    let mut out = format!("KTAP version 1\n1..{}\n", rows.len());
    for (n, (name, bit, seen)) in rows.into_iter().enumerate() {
        let n = n + 1;
        match seen {
            Ok(Seen::Entries(before, after)) => {
                out += &format!("# {name}: before={before:#x} after={after:#x}\n");
                if before & bit == 0 {
                    out += &format!("ok {n} {name} # SKIP the bit was not set before mprotect() (entry {before:#x})\n");
                } else {
                    let kept = if after & bit != 0 { "ok" } else { "not ok" };
                    out += &format!("{kept} {n} {name}\n");
                }
            }
            Ok(Seen::Skip(why)) => out += &format!("ok {n} {name} # SKIP {why}\n"),
            Err(err) => out += &format!("# {name}: {err}\nnot ok {n} {name} # ERROR {err}\n"),
        }
    }
    out
}

/// A written anonymous page's entry before and after `mprotect()`. A new
/// mapping is soft-dirty as a whole (VM_SOFTDIRTY), which pagemap reports
/// for each of its pages whatever the entry holds: clearing the soft-dirty
/// state first (`clear_refs` 4) and writing again leaves the bit set in the
/// entry alone, where `mprotect()` can lose it.
fn soft_dirty() -> Result<Seen, String> {
    const CLEAR_REFS: &str = "/proc/self/clear_refs";
    let page = Page::new()?;
    page.write();
    if let Err(e) = std::fs::write(CLEAR_REFS, "4\n") {
        return Ok(Seen::Skip(format!(
            "write 4 to {CLEAR_REFS}: {e} (no soft-dirty tracking)"
        )));
    }
    page.write();
    let before = entry(page.addr)?;
    page.protect_and_back()?;
    Ok(Seen::Entries(before, entry(page.addr)?))
}

/// The same with the page write-protected through userfaultfd.
fn uffd_wp() -> Result<Seen, String> {
    let page = Page::new()?;
    page.write();
    // SAFETY: userfaultfd takes only flags.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Ok(Seen::Skip(format!(
            "userfaultfd(): {err} (a kernel without CONFIG_USERFAULTFD)"
        )));
    }
    let fd = fd as libc::c_int;
    let range = UffdioRange {
        start: page.addr as u64,
        len: PAGE as u64,
    };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    let mut register = UffdioRegister {
        range,
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    let mut protect = UffdioWriteprotect {
        range,
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    let steps = ioctl(fd, UFFDIO_API, &mut api, "UFFDIO_API")
        .and_then(|()| {
            ioctl(
                fd,
                UFFDIO_REGISTER,
                &mut register,
                "UFFDIO_REGISTER (write-protect mode)",
            )
        })
        .and_then(|()| ioctl(fd, UFFDIO_WRITEPROTECT, &mut protect, "UFFDIO_WRITEPROTECT"));
    let seen = steps.and_then(|()| {
        let before = entry(page.addr)?;
        page.protect_and_back()?;
        Ok(Seen::Entries(before, entry(page.addr)?))
    });
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    seen
}

fn ioctl<T>(
    fd: libc::c_int,
    request: libc::c_ulong,
    arg: &mut T,
    name: &str,
) -> Result<(), String> {
    // SAFETY: `arg` is the structure this request reads and writes.
    if unsafe { libc::ioctl(fd, request, arg as *mut T) } != 0 {
        return Err(format!("{name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The pagemap entry of the page at `addr`.
fn entry(addr: *mut libc::c_void) -> Result<u64, String> {
    const PAGEMAP: &str = "/proc/self/pagemap";
    let mut file = std::fs::File::open(PAGEMAP).map_err(|e| format!("open {PAGEMAP}: {e}"))?;
    let mut bytes = [0u8; 8];
    file.seek(SeekFrom::Start((addr as usize / PAGE * 8) as u64))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("read {PAGEMAP}: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// One private anonymous page, unmapped on drop.
///
/// # Invariants
///
/// `addr` is the start of a read/write mapping of `PAGE` bytes that only
/// this value refers to.
struct Page {
    addr: *mut libc::c_void,
}

impl Page {
    fn new() -> Result<Page, String> {
        // SAFETY: a fresh anonymous mapping no Rust reference points into.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Page { addr })
    }

    /// A write fault: the page is allocated, dirty (and soft-dirty).
    fn write(&self) {
        // SAFETY: by the type's invariant the page is mapped read/write.
        unsafe { std::ptr::write_volatile(self.addr.cast::<u8>(), 0x5a) };
    }

    /// `mprotect()` read-only, then read/write again.
    fn protect_and_back(&self) -> Result<(), String> {
        for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
            // SAFETY: by the type's invariant, our own mapping of PAGE bytes.
            if unsafe { libc::mprotect(self.addr, PAGE, prot) } != 0 {
                return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: by the type's invariant, our own mapping, unmapped once.
        unsafe { libc::munmap(self.addr, PAGE) };
    }
}
