//! patverify's guest `/init`: mounts debugfs, prints the module's KTAP report
//! between markers on the console, and powers the machine off.
//!
//! It runs as PID 1 in an initramfs with nothing else in it, so it must never
//! return or hang: every path ends in `power_off()`.

use std::ffi::CString;
use std::io::Write;

use patverify_protocol::files::{DEVMEM, HUGE_PFN, MMAP, PROBE, RAM, RESULTS as REPORT};
use patverify_protocol::{
    CacheMode, Fault, ProbePath, BEFORE_COMMAND, FAULT_PARAMETER, GUEST_DONE, GUEST_ERROR as ERROR,
    KSELFTEST_BEGIN, KSELFTEST_DIR, KSELFTEST_END, KSELFTEST_SECONDS, OOPS_COMMAND, PAGEMAP_BEGIN,
    PAGEMAP_END, REPORT_BEGIN as BEGIN, REPORT_END as END,
};

mod pagemap;

const PAGE: usize = 4096;
/// A PMD's worth: what one `huge_pfn` mapping covers.
const HUGE: usize = 2 << 20;

/// Failure injection for the harness's own tests: the kernel passes
/// `patverify_fault=…` from its command line to init's environment.
fn injected_fault() -> Option<Fault> {
    std::env::var(FAULT_PARAMETER).ok()?.parse().ok()
}

fn main() {
    let outcome = run();
    let mut console = std::io::stdout().lock();
    match (outcome, injected_fault()) {
        (_, Some(Fault::Hang)) => loop {
            // A guest that never prints: the host's timeout must end it.
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        (Ok(report), Some(Fault::Truncate)) => {
            // A report cut in half, as a stalled serial console would leave it.
            let half: Vec<&str> = report.lines().take(report.lines().count() / 2).collect();
            let _ = writeln!(console, "{BEGIN}\n{}", half.join("\n"));
        }
        (Ok(report), Some(Fault::Garble)) => {
            // Every line arrives, one of them corrupt (a flipped byte on the line).
            print_report(&mut console, &report.replacen("\nok ", "\nko ", 1));
        }
        (Ok(report), Some(Fault::DropRow)) => print_report(&mut console, &drop_row(&report)),
        (Ok(report), Some(Fault::UndeclaredSkip)) => {
            print_report(&mut console, &undeclared_skip(&report))
        }
        (Ok(report), _) => {
            print_report(&mut console, &report);
            let _ = write!(
                console,
                "{PAGEMAP_BEGIN}\n{}{PAGEMAP_END}\n",
                pagemap::report()
            );
            let _ = console.flush();
            run_kselftests();
            let _ = writeln!(console, "{GUEST_DONE}");
        }
        (Err(err), _) => {
            let _ = writeln!(console, "{ERROR} {err} ====");
        }
    }
    let _ = console.flush();
    drop(console);
    power_off();
}

/// The report without its first row (result and diagnostic line), the plan
/// and the later numbers adjusted: complete in form, one row short.
fn drop_row(report: &str) -> String {
    let mut out = String::new();
    let mut number = 0;
    let mut dropped = false;
    for line in report.lines() {
        let result = line
            .strip_prefix("ok ")
            .or_else(|| line.strip_prefix("not ok "));
        if let Some(plan) = line.strip_prefix("1..") {
            let n: usize = plan.trim().parse().unwrap_or(1);
            out += &format!("1..{}\n", n.saturating_sub(1));
        } else if line.starts_with("# vma_set_page_prot.WB:") {
            continue;
        } else if let Some(rest) = result {
            if !dropped {
                dropped = true;
                continue;
            }
            number += 1;
            let status = if line.starts_with("ok ") {
                "ok"
            } else {
                "not ok"
            };
            let name = rest.split_once(' ').map_or("", |(_, name)| name);
            out += &format!("{status} {number} {name}\n");
        } else {
            out += &format!("{line}\n");
        }
    }
    out
}

/// The report with the vma_set_page_prot.WT row turned into a `# SKIP`
/// that no path declares.
fn undeclared_skip(report: &str) -> String {
    let mut out = String::new();
    for line in report.lines() {
        let result = line
            .strip_prefix("ok ")
            .or_else(|| line.strip_prefix("not ok "));
        match result.and_then(|rest| rest.strip_suffix(" vma_set_page_prot.WT")) {
            Some(number) => {
                out += &format!("ok {number} vma_set_page_prot.WT # SKIP injected by a test\n")
            }
            None => out += &format!("{line}\n"),
        }
    }
    out
}

/// The report between markers; the host checks the line count to detect a
/// truncated one.
fn print_report(console: &mut impl Write, report: &str) {
    let lines = report.lines().count();
    let _ = write!(console, "{BEGIN}\n{report}");
    if !report.ends_with('\n') {
        let _ = writeln!(console);
    }
    let _ = writeln!(console, "{END} lines={lines} ====");
}

fn run() -> Result<String, String> {
    std::fs::create_dir_all("/debug").map_err(|e| format!("mkdir /debug: {e}"))?;
    mount("debugfs", "/debug", "debugfs")?;
    std::fs::create_dir_all("/proc").map_err(|e| format!("mkdir /proc: {e}"))?;
    mount("proc", "/proc", "proc")?;
    exercise_mappings()?;
    if injected_fault() == Some(Fault::Oops) {
        // Before quiet_console(): the oops must reach the console.
        oops_in_a_child()?;
    }
    quiet_console();
    std::fs::read_to_string(REPORT).map_err(|e| format!("read {REPORT}: {e}"))
}

/// For each mode: map the module's `mmap` file as a driver's user would,
/// touch it (a write fault installs the PTE), have the module read the PTE,
/// mprotect() it read-only and back, have the module read it again.
fn exercise_mappings() -> Result<(), String> {
    let mmap_steps = [ProbePath::Mprotect, ProbePath::Mremap];
    exercise(MMAP, ProbePath::MmapFault, &mmap_steps)?;
    exercise(DEVMEM, ProbePath::DevmemFault, &[ProbePath::DevmemMprotect])?;
    exercise(RAM, ProbePath::RamFault, &[ProbePath::RamMprotect])?;
    exercise(
        HUGE_PFN,
        ProbePath::HugePfnFault,
        &[ProbePath::HugePfnMprotect],
    )
}

/// For each mode: map one page of `file` as a driver's user would, have the
/// module read the slot the fault will fill (empty, unless the kernel put
/// something there already), touch it (a write fault installs the PTE),
/// have the module read the PTE (`fault`),
/// clear the accessed bits of ordinary pages (so that a mask losing the bit
/// shows: `mprotect()`'s new protection always has it), have the module
/// read the entry again, mprotect() it read-only and back, and have the
/// module read it once more (`mprotect`); then (`mremap`) move it to a new
/// address and have the module read the moved entry. Before each later
/// step the module reads the entry the step starts from. A mode the module
/// has no memory for (ENODEV) is left out: its rows are skipped in the
/// report, with the reason.
fn exercise(file: &str, fault: ProbePath, later: &[ProbePath]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let open = |path: &str, write_only: bool| {
        std::fs::OpenOptions::new()
            .read(!write_only)
            .write(true)
            .open(path)
            .map_err(|e| format!("open {path}: {e}"))
    };
    let mapping = open(file, false)?;
    let mut probe = open(PROBE, true)?;
    let mut tell = |command: &str, path: ProbePath, mode: CacheMode, addr: *mut libc::c_void| {
        let command = format!("{command}{path} {mode} {:x}\n", addr as usize);
        probe
            .write_all(command.as_bytes())
            .map_err(|e| format!("write {:?} to {PROBE}: {e}", command.trim()))
    };
    let size = if file == HUGE_PFN { HUGE } else { PAGE };
    for &mode in CacheMode::ALL {
        let addr = match map_mode(mapping.as_raw_fd(), mode, size) {
            Ok(addr) => addr,
            Err(errno) if errno.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(errno) => return Err(format!("mmap {file} {mode}: {errno}")),
        };
        tell(&format!("{BEFORE_COMMAND} "), fault, mode, addr)?;
        // SAFETY: the page is mapped read/write; a volatile store faults it in.
        unsafe { std::ptr::write_volatile(addr.cast::<u8>(), 0x5a) };
        tell("", fault, mode, addr)?;
        clear_accessed_bits()?;
        let mut addr = addr;
        for &step in later {
            tell(&format!("{BEFORE_COMMAND} "), step, mode, addr)?;
            if step == ProbePath::Mremap {
                addr = move_mapping(addr, size, mode)?;
            } else {
                protect(addr, size, libc::PROT_READ, mode)?;
                protect(addr, size, libc::PROT_READ | libc::PROT_WRITE, mode)?;
            }
            tell("", step, mode, addr)?;
        }
        // SAFETY: unmapping our own mapping, which nothing refers to any more.
        unsafe { libc::munmap(addr, size) };
    }
    Ok(())
}

/// Maps `size` bytes of a module file at the offset that selects `mode`
/// (`mode × size`), shared and read/write, as a driver's user would, at an
/// address aligned to `size`: a 2 MiB mapping must sit on a 2 MiB boundary
/// for the kernel to fault it in as one PMD.
fn map_mode(
    fd: libc::c_int,
    mode: CacheMode,
    size: usize,
) -> Result<*mut libc::c_void, std::io::Error> {
    let last_error = || Err(std::io::Error::last_os_error());
    // Reserve twice the size, then map inside it at the aligned address.
    // SAFETY: a fresh anonymous reservation no Rust reference points into.
    let area = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if area == libc::MAP_FAILED {
        return last_error();
    }
    let aligned = (area as usize).next_multiple_of(size);
    // SAFETY: `aligned..aligned + size` lies inside our reservation, which
    // MAP_FIXED replaces; no Rust reference points into it.
    let addr = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            (mode.index() * size) as libc::off_t,
        )
    };
    let outcome = if addr == libc::MAP_FAILED {
        last_error()
    } else {
        Ok(addr)
    };
    // SAFETY: unmapping what is left of our reservation around the mapping
    // (all of it if the mapping failed).
    unsafe {
        let head = aligned - area as usize;
        let tail = 2 * size - head - if outcome.is_ok() { size } else { 0 };
        let tail_start = if outcome.is_ok() {
            aligned + size
        } else {
            aligned
        };
        libc::munmap(area, head);
        libc::munmap(tail_start as *mut libc::c_void, tail);
    }
    outcome
}

/// Clears the accessed bit of every ordinary page /init maps
/// (`/proc/self/clear_refs` 1; PFN maps keep theirs).
fn clear_accessed_bits() -> Result<(), String> {
    const CLEAR_REFS: &str = "/proc/self/clear_refs";
    std::fs::write(CLEAR_REFS, "1\n").map_err(|e| {
        format!("write 1 to {CLEAR_REFS}: {e} (a kernel without CONFIG_PROC_PAGE_MONITOR)")
    })
}

/// Moves the `size`-byte mapping of `mode` at `addr` to a fresh address
/// with `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`; returns the new address.
fn move_mapping(
    addr: *mut libc::c_void,
    size: usize,
    mode: CacheMode,
) -> Result<*mut libc::c_void, String> {
    let failed = |what: &str| format!("{what} {mode}: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh anonymous reservation no Rust reference points into.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if target == libc::MAP_FAILED {
        return Err(failed("mmap (the mremap target)"));
    }
    // SAFETY: `addr` is our own mapping of `size` bytes; MREMAP_FIXED
    // replaces our reservation at `target`, which nothing refers to.
    let moved = unsafe {
        libc::mremap(
            addr,
            size,
            size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    if moved == libc::MAP_FAILED {
        // SAFETY: the reservation is ours and unused.
        unsafe { libc::munmap(target, size) };
        return Err(failed("mremap"));
    }
    Ok(moved)
}

/// `mprotect()` of the `size` bytes at `addr` (the mapping of `mode`).
fn protect(
    addr: *mut libc::c_void,
    size: usize,
    prot: libc::c_int,
    mode: CacheMode,
) -> Result<(), String> {
    // SAFETY: `addr` is our own mapping of `size` bytes.
    if unsafe { libc::mprotect(addr, size, prot) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("mprotect {mode}: {err}"));
    }
    Ok(())
}

/// Has the module oops a child process (init itself must survive it: an
/// oops in PID 1 is a panic). The report is printed as usual afterwards;
/// the host must refuse it because the kernel oopsed.
fn oops_in_a_child() -> Result<(), String> {
    // SAFETY: init is single-threaded; the child only writes and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let wrote = std::fs::OpenOptions::new()
            .write(true)
            .open(PROBE)
            .and_then(|mut f| f.write_all(format!("{OOPS_COMMAND}\n").as_bytes()));
        // SAFETY: _exit ends the child without running anything of the parent's.
        unsafe { libc::_exit(if wrote.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFSIGNALED(status) {
        Ok(())
    } else {
        Err(format!(
            "the injected oops did not happen (the child exited with {})",
            libc::WEXITSTATUS(status)
        ))
    }
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (source_c, target_c, fstype_c) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs every program in [`KSELFTEST_DIR`] (the kernel's own selftests,
/// when the harness put them there), in name order, each between markers
/// with its exit code, killed after [`KSELFTEST_SECONDS`]. Nothing to do
/// without the directory.
fn run_kselftests() {
    let Ok(entries) = std::fs::read_dir(KSELFTEST_DIR) else {
        return;
    };
    let mut programs: Vec<std::path::PathBuf> = entries.flatten().map(|e| e.path()).collect();
    programs.sort();
    // What the selftests read: /sys/kernel/mm (THP sizes), a writable /tmp.
    let _ = std::fs::create_dir_all("/sys").map(|()| mount("sysfs", "/sys", "sysfs"));
    let _ = std::fs::create_dir_all("/tmp");
    for program in programs {
        let name = program
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        println!("{KSELFTEST_BEGIN} {name} ====");
        let ended = run_with_limit(&program);
        println!("{KSELFTEST_END} {name} {ended} ====");
    }
}

/// Runs `program` (its output on the console) from /tmp; "exit=N", or
/// "timeout" when it was killed at the limit, or "signal=N".
fn run_with_limit(program: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return "exit=127 error=bad-path".into();
    };
    // SAFETY: init is single-threaded; the child only calls chdir, execv
    // and _exit, which are async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("exit=127 error=fork-{}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: both strings are NUL-terminated and argv ends with NULL.
        unsafe {
            libc::chdir(c"/tmp".as_ptr());
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(KSELFTEST_SECONDS);
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if waited == pid {
            return if libc::WIFEXITED(status) {
                format!("exit={}", libc::WEXITSTATUS(status))
            } else {
                format!("signal={}", libc::WTERMSIG(status))
            };
        }
        if waited < 0 || std::time::Instant::now() >= deadline {
            // SAFETY: `pid` is our child; killing and reaping it is safe.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return "timeout".into();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Keeps ordinary kernel messages off the console while the report is
/// printed, so they cannot interleave with it; emergencies (panics) still show.
fn quiet_console() {
    const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;
    // SAFETY: this klogctl action takes no buffer.
    unsafe { libc::klogctl(SYSLOG_ACTION_CONSOLE_LEVEL, std::ptr::null_mut(), 1) };
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot() only returns on failure: say so, and let the host's timeout end the boot.
    println!(
        "{ERROR} reboot(RB_POWER_OFF) failed: {} ====",
        std::io::Error::last_os_error()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
