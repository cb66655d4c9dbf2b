//! Booting a kernel in QEMU (TCG): natively, or as a Xen PV dom0. The command
//! line is built from small pieces; the child is killed on drop and on
//! timeout; the whole console is kept in a log.

pub use crate::model::{Env, Phases};
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    /// The QEMU program (`--qemu`, default qemu-system-x86_64).
    pub qemu: &'a Path,
    pub env: Env,
    /// The kernel Xen loads as dom0 (Xen PV): the build's ELF `vmlinux`, which
    /// Xen takes as is (a bzImage it would first decompress, under TCG:
    /// 0.6 s of every Xen boot).
    pub dom0: &'a Path,
    /// The same build's uncompressed ELF kernel, booted natively through its
    /// PVH entry: no decompression under TCG.
    pub vmlinux: &'a Path,
    /// Faster firmware for native boots (qboot), when QEMU ships it.
    pub firmware: Option<&'a Path>,
    pub initramfs: &'a Path,
    pub xen: Option<&'a Path>,
    pub timeout: Duration,
    pub kvm: bool,
    pub console_log: PathBuf,
    /// Extra kernel command line (tests use it to inject failures).
    pub extra_cmdline: &'a str,
    /// The line after which the guest has nothing more to say: the
    /// report's end, or the last selftest's (`--kselftest`).
    pub stop_after: &'static str,
}

fn machine_args(kvm: bool, memory: &str) -> Vec<String> {
    // Under Xen, `-cpu max` and Skylake models crash dom0; qemu64 works for both.
    let accel = if kvm { "kvm" } else { "tcg" };
    ["-accel", accel, "-cpu", "qemu64", "-m", memory, "-smp", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn console_args() -> Vec<String> {
    [
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What the guest — a kernel built from an untrusted patch — and QEMU itself
/// may reach: no network device (QEMU adds a user-mode NIC by default);
/// QEMU's seccomp sandbox with obsolete syscalls, spawning and resource
/// control denied; and, started as root, QEMU drops to `nobody` once it has
/// opened the kernel, the initramfs and the console (an irreversible
/// setuid: with it, `elevateprivileges=deny` would refuse QEMU's own drop).
fn confinement_args(as_root: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "-nic",
        "none",
        "-sandbox",
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if as_root {
        args.extend(["-runas".to_string(), "nobody".to_string()]);
    }
    args
}

fn native_args(boot: &Boot) -> Vec<String> {
    let cmdline = format!("console=ttyS0 panic=-1 oops=panic {}", boot.extra_cmdline);
    let firmware = boot
        .firmware
        .into_iter()
        .flat_map(|rom| ["-bios".into(), rom.display().to_string()]);
    firmware
        .chain([
            "-kernel".into(),
            boot.vmlinux.display().to_string(),
            "-initrd".into(),
            boot.initramfs.display().to_string(),
            "-append".into(),
            cmdline.trim().to_string(),
        ])
        .collect()
}

/// qboot: 20 ms of firmware where SeaBIOS takes ~165 ms; it loads a Linux
/// kernel but not Xen's multiboot image, so native boots only.
pub use crate::support::provision::QBOOT;

/// The firmware for a native boot of Linux `version`: qboot when QEMU ships
/// it, except for kernels before 6.2, which program the PAT only when the
/// firmware enabled the MTRRs (6.1's mtrr_bp_init(): "MTRRs disabled,
/// skipping PAT initialization too") — qboot leaves them off, SeaBIOS (QEMU's
/// default, `None`) sets them up as a PC's firmware does.
pub fn native_firmware(version: crate::model::KernelVersion) -> Option<&'static Path> {
    let needs_mtrrs = version.series() < (6, 2);
    Some(Path::new(QBOOT)).filter(|rom| !needs_mtrrs && rom.exists())
}

fn xen_args(boot: &Boot, xen: &Path) -> Vec<String> {
    // QEMU's multiboot loader takes dom0's kernel and initrd as modules, each
    // "path cmdline", separated by commas.
    let dom0_cmdline = format!("console=hvc0 panic=-1 oops=panic {}", boot.extra_cmdline);
    vec![
        "-kernel".into(),
        xen.display().to_string(),
        "-append".into(),
        "console=com1 com1=115200,8n1 dom0_mem=256M".into(),
        "-initrd".into(),
        format!(
            "{} {},{}",
            boot.dom0.display(),
            dom0_cmdline.trim(),
            boot.initramfs.display()
        ),
    ]
}

pub fn command(boot: &Boot) -> Result<Command> {
    // A native guest needs little: the kernel, the initramfs, the module.
    let memory = match boot.env {
        Env::Native => "128M",
        Env::Xen => "1G",
    };
    let env_args = match boot.env {
        Env::Native => native_args(boot),
        Env::Xen => xen_args(boot, boot.xen.context("Xen boot without a Xen image")?),
    };
    Ok(Command::new(boot.qemu)
        .args(machine_args(boot.kvm, memory))
        .args(console_args())
        .args(confinement_args(crate::support::provision::is_root()))
        .args(env_args))
}

pub struct Console {
    pub text: String,
    pub elapsed: Duration,
    /// When the console showed each phase's start.
    pub phases: Phases,
    pub timed_out: bool,
    /// QEMU's exit status when it failed (not when killed at the timeout).
    pub failed_status: Option<std::process::ExitStatus>,
}

/// Boots and returns the console output. QEMU exits by itself when the guest
/// panics (`panic=-1`, `-no-reboot`); once the report's end marker has
/// arrived it is stopped (all the guest would still do is power off: 0.3 s
/// natively, 0.8 s under Xen, whose S5 entry takes that long); a hang is
/// killed at the timeout. The console is always written to `boot.console_log`.
pub fn run(boot: &Boot) -> Result<Console> {
    let cmd = command(boot)?;
    crate::support::proc::echo(&cmd);
    let started = Instant::now();
    let mut log = std::fs::File::create(&boot.console_log)
        .with_context(|| format!("cannot create {}", boot.console_log.display()))?;
    writeln!(log, "$ {}", cmd.display())?;
    let reader = cmd
        .expression()
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .map_err(|e| {
            fail(
                Kind::Setup,
                format!(
                    "cannot start {}: {e} (run `cargo xtask setup`, or pass --qemu)",
                    boot.qemu.display()
                ),
            )
        })?;
    let _guards = crate::support::proc::guard_children(&reader);
    let reader = Arc::new(reader);
    let (rx, pump) = pump_lines(Arc::clone(&reader));
    let mut phases = Phases::default();
    let window = (started, boot.timeout);
    let (text, end) = collect(&rx, window, boot.stop_after, &mut log, &reader, &mut phases)?;
    let timed_out = end == End::TimedOut;
    if end == End::StoppedWhenGuestDone {
        writeln!(log, "\n[patverify: the guest is done, QEMU stopped]")?;
    }
    if timed_out {
        writeln!(
            log,
            "\n[patverify: killed after the {} s timeout]",
            boot.timeout.as_secs()
        )?;
    }
    // The pump ends once QEMU's output closes (it exited or was killed).
    let _ = pump.join();
    let elapsed = started.elapsed();
    phases.exit = Some(elapsed.as_secs_f64());
    let status = match end {
        End::Exited => reader.try_wait().ok().flatten().map(|o| o.status),
        End::TimedOut | End::StoppedWhenGuestDone => None,
    };
    let failed_status = status.filter(|s| !s.success());
    if let Some(status) = failed_status {
        writeln!(log, "\n[patverify: qemu exited with {status}]")?;
    }
    Ok(Console {
        text: String::from_utf8_lossy(&text).into_owned(),
        elapsed,
        phases,
        timed_out,
        failed_status,
    })
}

/// Reads the child's output line by line on a thread of its own, so the
/// caller can wait with a deadline.
fn pump_lines(reader: Arc<duct::ReaderHandle>) -> (Receiver<Vec<u8>>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let pump = std::thread::spawn(move || {
        let mut lines = BufReader::new(&*reader);
        loop {
            let mut buf = Vec::new();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(buf).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (rx, pump)
}

/// How a boot's output ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// QEMU exited (power-off, panic, or a failure).
    Exited,
    /// /init's last line (`stop_after`, GUEST_DONE) arrived; QEMU was stopped.
    StoppedWhenGuestDone,
    /// The timeout passed; QEMU was killed.
    TimedOut,
}

/// The output until QEMU exits, the report's end marker arrives or the
/// timeout passes (in the last two, the child is killed); everything is
/// copied to `log`, and each phase's first line noted.
fn collect(
    rx: &Receiver<Vec<u8>>,
    (started, timeout): (Instant, Duration),
    stop_after: &str,
    log: &mut std::fs::File,
    reader: &duct::ReaderHandle,
    phases: &mut Phases,
) -> Result<(Vec<u8>, End)> {
    let mut text = Vec::new();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                log.write_all(&chunk)?;
                phases.saw(&String::from_utf8_lossy(&chunk), started.elapsed());
                text.extend_from_slice(&chunk);
                if String::from_utf8_lossy(&chunk).contains(stop_after) {
                    reader.kill().ok();
                    return Ok((text, End::StoppedWhenGuestDone));
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok((text, End::Exited)),
            Err(RecvTimeoutError::Timeout) => {
                reader.kill().ok();
                return Ok((text, End::TimedOut));
            }
        }
    }
}

impl Phases {
    fn saw(&mut self, line: &str, at: Duration) {
        let at = Some(at.as_secs_f64());
        if self.kernel_start.is_none() && line.contains("Linux version") {
            self.kernel_start = at;
        }
        if self.report_begin.is_none() && line.contains(patverify_protocol::REPORT_BEGIN) {
            self.report_begin = at;
        }
        if self.report_end.is_none() && line.contains(patverify_protocol::REPORT_END) {
            self.report_end = at;
        }
    }
}

/// The layout a boot's report is checked against lives with the rows.
pub use crate::model::rows::LINUX_PAT_LAYOUT;

/// Checks from the console that the boot ran in the environment it was
/// meant to: under Xen, that the hypervisor started and ran Linux as a PV dom0.
pub fn check_env(env: Env, console: &str) -> Result<(), String> {
    if env != Env::Xen {
        return Ok(());
    }
    if !console.contains("(XEN) Xen version") {
        return Err("the Xen hypervisor did not start (QEMU could not load it?)".into());
    }
    if !console.contains("Linux version") {
        let last_xen = console
            .lines()
            .rfind(|l| l.starts_with("(XEN)"))
            .unwrap_or("")
            .trim();
        return Err(format!(
            "Xen did not start dom0 (last hypervisor line: {last_xen:?})"
        ));
    }
    if !console.contains("Hypervisor detected: Xen PV") {
        return Err("dom0 did not run as a Xen PV guest".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_6_2_boot_with_firmware_that_enables_the_mtrrs() {
        assert_eq!(native_firmware("6.1.192".parse().unwrap()), None);
        assert_eq!(native_firmware("5.15".parse().unwrap()), None);
        let qboot = Path::new(QBOOT).exists().then_some(Path::new(QBOOT));
        assert_eq!(native_firmware("6.12.117".parse().unwrap()), qboot);
        assert_eq!(native_firmware("6.2".parse().unwrap()), qboot);
    }

    #[test]
    fn xen_environment_checks() {
        let good = "(XEN) Xen version 4.17\nLinux version 6.12\nHypervisor detected: Xen PV\n";
        assert_eq!(check_env(Env::Xen, good), Ok(()));
        assert!(check_env(Env::Xen, "SeaBIOS\n")
            .unwrap_err()
            .contains("did not start"));
        let refused = "(XEN) Xen version 4.17\n(XEN) Could not set up DOM0 guest OS\n";
        assert!(check_env(Env::Xen, refused)
            .unwrap_err()
            .contains("Could not set up DOM0"));
        assert_eq!(check_env(Env::Native, ""), Ok(()));
    }

    /// The command line QEMU would get for a boot in `env`.
    fn command_line(env: Env, xen: Option<&Path>) -> String {
        let boot = Boot {
            env,
            dom0: Path::new("/k/vmlinux"),
            vmlinux: Path::new("/k/vmlinux"),
            firmware: Some(Path::new("/q/qboot.rom")),
            initramfs: Path::new("/k/initrd"),
            xen,
            timeout: Duration::from_secs(1),
            kvm: false,
            console_log: PathBuf::from("/dev/null"),
            extra_cmdline: "",
            stop_after: patverify_protocol::REPORT_END,
            qemu: Path::new("qemu-system-x86_64"),
        };
        command(&boot).unwrap().display()
    }

    #[test]
    fn native_command_line() {
        let line = command_line(Env::Native, None);
        assert!(
            line.starts_with("qemu-system-x86_64 -accel tcg -cpu qemu64 -m 128M"),
            "{line}"
        );
        assert!(
            line.contains("-no-reboot")
                && line.contains("-bios /q/qboot.rom -kernel /k/vmlinux -initrd /k/initrd"),
            "{line}"
        );
        assert!(
            line.contains("'console=ttyS0 panic=-1 oops=panic'"),
            "{line}"
        );
    }

    #[test]
    fn qemu_is_confined_and_drops_root() {
        let as_root = confinement_args(true).join(" ");
        assert_eq!(
            as_root,
            "-nic none -sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny -runas nobody"
        );
        assert!(!confinement_args(false).join(" ").contains("-runas"));
        for env in Env::ALL {
            let line = command_line(env, Some(Path::new("/c/xen")));
            assert!(line.contains(" -nic none -sandbox on,"), "{line}");
        }
    }

    #[test]
    fn xen_command_line_passes_dom0_as_modules() {
        let line = command_line(Env::Xen, Some(Path::new("/c/xen")));
        assert!(line.contains("-kernel /c/xen"), "{line}");
        assert!(
            line.contains("'/k/vmlinux console=hvc0 panic=-1 oops=panic,/k/initrd'"),
            "{line}"
        );
        assert!(line.contains("-m 1G"), "{line}");
    }
}
