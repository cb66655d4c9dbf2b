//! patverify's guest `/init`: mounts debugfs, prints the module's KTAP report
//! between markers on the console, and powers the machine off.
//!
//! It runs as PID 1 in an initramfs with nothing else in it, so it must never
//! return or hang: every path ends in `power_off()`.

use std::ffi::CString;
use std::io::Write;

const REPORT: &str = "/debug/patverify/results";
const BEGIN: &str = "==== PATVERIFY REPORT BEGIN ====";
const END: &str = "==== PATVERIFY REPORT END";
const ERROR: &str = "==== PATVERIFY ERROR:";

/// Failure injection for the harness's own tests: the kernel passes
/// `patverify_fault=…` from its command line to init's environment.
fn injected_fault() -> Option<String> {
    std::env::var("patverify_fault").ok()
}

fn main() {
    let outcome = run();
    let mut console = std::io::stdout().lock();
    match (outcome, injected_fault().as_deref()) {
        (_, Some("hang")) => loop {
            // A guest that never prints: the host's timeout must end it.
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        (Ok(report), Some("truncate")) => {
            // A report cut in half, as a stalled serial console would leave it.
            let half: Vec<&str> = report.lines().take(report.lines().count() / 2).collect();
            let _ = writeln!(console, "{BEGIN}\n{}", half.join("\n"));
        }
        (Ok(report), _) => {
            // The host checks the line count to detect a truncated report.
            let lines = report.lines().count();
            let _ = write!(console, "{BEGIN}\n{report}");
            if !report.ends_with('\n') {
                let _ = writeln!(console);
            }
            let _ = writeln!(console, "{END} lines={lines} ====");
        }
        (Err(err), _) => {
            let _ = writeln!(console, "{ERROR} {err} ====");
        }
    }
    let _ = console.flush();
    drop(console);
    power_off();
}

fn run() -> Result<String, String> {
    std::fs::create_dir_all("/debug").map_err(|e| format!("mkdir /debug: {e}"))?;
    mount("debugfs", "/debug", "debugfs")?;
    quiet_console();
    std::fs::read_to_string(REPORT).map_err(|e| format!("read {REPORT}: {e}"))
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (source_c, target_c, fstype_c) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(source_c.as_ptr(), target_c.as_ptr(), fstype_c.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        return Err(format!("mount {fstype} on {target}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
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
    println!("{ERROR} reboot(RB_POWER_OFF) failed: {} ====", std::io::Error::last_os_error());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
