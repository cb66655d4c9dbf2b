//! Report checking: boots one kernel in one environment and reads back what
//! the guest reported — the module's KTAP (complete, in the environment it
//! was meant for, under the PAT it must run with), /init's pagemap rows
//! and the selftests' results — or why there is no usable report.

use crate::flags::Common;
use crate::output::{self, Event};
use crate::stages::build::Built;
use crate::stages::compare::Run;
use crate::stages::initramfs::Initramfs;
use crate::stages::ktap;
use crate::stages::qemu::{self, Env};
use crate::stages::variant::Variant;
use crate::support::failure::{fail, Kind};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What every boot of a run shares: QEMU and its settings, the run's
/// output directory, Xen, and the kernel version (its firmware, its rows).
pub struct Settings<'a> {
    pub common: &'a Common,
    pub out_dir: &'a Path,
    pub xen_image: PathBuf,
    pub version: crate::model::KernelVersion,
}

/// Boots `b` (variant `v`) in `env` and checks its report: the run, how
/// long the boot took and its phases; a boot that left no complete report
/// is a boot failure naming its console log.
pub fn boot_and_check(
    settings: &Settings,
    v: &Variant,
    b: &Built,
    env: Env,
    initramfs: &Initramfs,
) -> Result<(Run, Duration, qemu::Phases)> {
    let common = settings.common;
    let label = format!("{}-{env}", v.name);
    let vmlinux = b.build_dir.join("vmlinux");
    let boot = qemu::Boot {
        qemu: &common.qemu,
        env,
        dom0: match (&common.dom0_kernel, env) {
            (Some(fake), Env::Xen) => fake,
            _ => &vmlinux,
        },
        vmlinux: &vmlinux,
        firmware: qemu::native_firmware(settings.version),
        initramfs: &initramfs.path,
        xen: (env == Env::Xen).then_some(settings.xen_image.as_path()),
        timeout: Duration::from_secs(common.timeout + initramfs.kselftest_seconds()),
        kvm: common.kvm,
        console_log: settings.out_dir.join(format!("{label}.console.log")),
        extra_cmdline: &common.extra_cmdline,
        stop_after: patverify_protocol::GUEST_DONE,
    };
    let console = qemu::run(&boot)?;
    let log = boot.console_log.display();
    let named = |what: String| fail(Kind::Boot, format!("{label}: {what} (console log: {log})"));
    let ktap = report_of(env, &console, common.timeout).map_err(&named)?;
    std::fs::write(settings.out_dir.join(format!("{label}.ktap")), &ktap)?;
    let parsed = ktap::parse_ktap(&ktap).map_err(|e| named(format!("garbled KTAP report: {e}")))?;
    let series = Some(settings.version.series());
    ktap::check_rows(&parsed, env, series).map_err(|e| named(format!("incomplete report: {e}")))?;
    ran_with_its_pat(env, &parsed).map_err(&named)?;
    output::emit(Event::ReportReceived {
        label: &label,
        took: console.elapsed,
    });
    let pagemap = ktap::pagemap_rows(&console.text)
        .map_err(|e| named(format!("garbled pagemap rows: {e}")))?;
    let run = Run {
        variant: v.name.clone(),
        env,
        report: parsed,
        kselftests: initramfs.kselftest_results(&console.text),
        pagemap,
    };
    Ok((run, console.elapsed, console.phases))
}

/// Under Xen, the guest must report Xen's PAT layout, not Linux's own.
fn ran_with_its_pat(env: Env, report: &crate::model::rows::Report) -> Result<(), String> {
    if env == Env::Xen && report.pat_layout == qemu::LINUX_PAT_LAYOUT {
        return Err(
            "the guest reports Linux's native PAT layout, not Xen's: it did not run with Xen's PAT"
                .into(),
        );
    }
    Ok(())
}

/// The module's report from a boot's console, in the environment it was
/// meant to run in; else why not (an environment that never came up
/// explains a missing report best).
fn report_of(env: Env, console: &qemu::Console, timeout: u64) -> Result<String, String> {
    let ktap = ktap::extract(&console.text);
    qemu::check_env(env, &console.text)?;
    ktap.map_err(|problem| no_report(&problem, console, timeout))
}

/// Why a boot left no usable report: a hang, QEMU dying, or what the
/// console showed.
fn no_report(problem: &ktap::BootProblem, console: &qemu::Console, timeout: u64) -> String {
    match problem {
        ktap::BootProblem::NoReport if console.timed_out => {
            format!("no report within the {timeout} s timeout (hang)")
        }
        ktap::BootProblem::NoReport if console.failed_status.is_some() => {
            let lines = console.text.lines().rev();
            let last = lines.map(str::trim).find(|l| !l.is_empty());
            let status = console.failed_status.map(|s| s.to_string());
            format!(
                "QEMU died ({}) before the guest reported; last line: {:?}",
                status.unwrap_or_default(),
                last.unwrap_or("(no output)")
            )
        }
        problem => problem.to_string(),
    }
}
