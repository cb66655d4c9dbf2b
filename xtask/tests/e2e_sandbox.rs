//! End-to-end: a hostile patch, as a mailing list could bring one. Its
//! init/Makefile runs shell commands while the kernel builds: it writes into
//! /root and /var/tmp, copies the first line of /etc/shadow into the build
//! log, plants files in the shared compile caches and overwrites entries
//! they hold, looks at the network and
//! connects to a listener the test starts on 127.0.0.1.
//! Built by `probe --patch`, it must change nothing outside its own build:
//! the build runs sandboxed, as the unprivileged build user, with the
//! system read-only, root's files hidden, no network, and a compile-cache
//! namespace of its own. The patch is new on every run (its markers carry
//! the test's pid), so the sandbox really runs each time. One run; each
//! check is its own test.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xtask::record::Record;

struct Ran {
    code: Option<i32>,
    text: String,
    record: Record,
    /// The fixture verify's record (the trusted kernels before the run).
    before: Record,
    log: String,
    marker: String,
    /// Whether the listener the test started on 127.0.0.1 was reached.
    listener_reached: bool,
    /// Entries the shared compile caches held before the run (the hostile
    /// lines try to overwrite them), with their hashes then.
    entries: Vec<(PathBuf, String)>,
}

fn ran() -> &'static Ran {
    static RAN: OnceLock<Ran> = OnceLock::new();
    RAN.get_or_init(|| run().expect("the hostile probe"))
}

/// Where the hostile lines try to write, for `marker`.
fn targets(marker: &str) -> Vec<PathBuf> {
    let cache = cache_root();
    vec![
        PathBuf::from(format!("/root/{marker}")),
        PathBuf::from(format!("/var/tmp/{marker}")),
        cache.join("ccache").join(marker),
        cache.join("rustc-cache").join(marker),
    ]
}

/// A file each shared compile cache holds already: a ccache result and a
/// Rust compile-cache manifest.
fn existing_entries() -> Result<Vec<PathBuf>> {
    fn first(dir: &Path, wanted: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        entries
            .iter()
            .find(|p| p.is_file() && wanted(p))
            .cloned()
            .or_else(|| {
                entries
                    .iter()
                    .filter(|p| p.is_dir())
                    .find_map(|d| first(d, wanted))
            })
    }
    let cache = cache_root();
    let ends = |suffix: &'static str| move |p: &Path| p.to_string_lossy().ends_with(suffix);
    Ok(vec![
        first(&cache.join("ccache"), &ends("R")).context("no ccache result in the cache")?,
        first(&cache.join("rustc-cache"), &ends("manifest.json"))
            .context("no Rust compile-cache entry in the cache")?,
    ])
}

fn hostile_patch(tree: &Path, out: &Path, marker: &str, port: u16) -> Result<PathBuf> {
    let file = "init/Makefile";
    let original = std::fs::read_to_string(tree.join(file))?;
    let mut hostile = original.clone();
    for target in targets(marker).iter().chain(&existing_entries()?) {
        hostile += &format!("$(shell echo hostile > {})\n", target.display());
    }
    hostile += "HOSTILE_SECRET := $(shell head -1 /etc/shadow)\n";
    hostile += &format!("$(info {marker} secret: [$(HOSTILE_SECRET)])\n");
    hostile += &format!("$(info {marker} uid: $(shell id -u))\n");
    // The interfaces of the build's network namespace (sysfs would show the
    // host's: it is the mounter's view).
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    hostile += &format!("$(info {marker} net: $(shell {interfaces}))\n");
    // A connection to the listener the test started on the host's loopback.
    let connect = format!(
        "bash -c 'echo hostile > /dev/tcp/127.0.0.1/{port}' && echo reached || echo blocked"
    );
    hostile += &format!("$(info {marker} tcp: $(shell {connect}))\n");
    let patch = out.join("hostile.patch");
    std::fs::write(&patch, unified_diff(file, &original, &hostile, out)?)?;
    Ok(patch)
}

fn run() -> Result<Ran> {
    let (out, before) = start("sandbox", true)?;
    let before = before.context("the fixture verify")?;
    let marker = format!("patverify-hostile-{}", std::process::id());
    for target in targets(&marker) {
        let _ = std::fs::remove_file(target);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let hash = |p: &Path| std::fs::read(p).map(|b| xtask::support::cache::sha256_hex(&b));
    let entries = existing_entries()?
        .into_iter()
        .map(|p| hash(&p).map(|h| (p, h)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let patch = hostile_patch(source_tree(&before)?, &out, &marker, port)?;
    let json = out.join("hostile.json");
    let mut args = strings(&["probe", "--env", "native", "--patch"]);
    args.push(patch.display().to_string());
    args.extend(["--json".into(), json.display().to_string()]);
    println!("==> e2e: probe --patch a hostile patch (its Makefile runs shell commands)");
    let (code, text) = harness(&cache_root(), &args)?;
    let record = Record::read(&json).with_context(|| text.clone())?;
    let build = record.builds.first().context("no build recorded")?;
    let log = std::fs::read_to_string(Path::new(&build.build_dir).join("build.log"))?;
    let listener_reached = listener.accept().is_ok();
    Ok(Ran {
        code,
        text,
        record,
        before,
        log,
        marker,
        listener_reached,
        entries,
    })
}

/// Whether the build ran in the sandbox; where bubblewrap cannot run (a
/// container that may not make namespaces, with `--unconfined`), the
/// checks of confinement are skipped, saying so, and the run must have
/// warned.
fn confined() -> bool {
    let ran = ran();
    let sandbox = ran.record.sandbox.as_deref().unwrap_or("none recorded");
    if sandbox.starts_with("bubblewrap") {
        return true;
    }
    println!("skipped: the sandbox was {sandbox}");
    false
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_sandbox_is_recorded_and_its_absence_is_said() {
    let ran = ran();
    let sandbox = ran.record.sandbox.as_deref().unwrap_or_default();
    if let Some(why) = sandbox.strip_prefix("unavailable: ") {
        assert!(
            ran.text.contains(&format!(
                "WARNING: the build sandbox cannot run here ({why})"
            )),
            "{}",
            ran.text
        );
    } else {
        assert!(sandbox.starts_with("bubblewrap"), "{sandbox:?}");
    }
}

/// The value a hostile line printed into the build log ("… uid: 999").
fn printed(what: &str) -> String {
    let ran = ran();
    let prefix = format!("{} {what}: ", ran.marker);
    let line = ran.log.lines().find_map(|l| l.strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("no {prefix:?} line in the build log"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_hostile_kernel_builds_and_is_judged_as_any_other() {
    let ran = ran();
    assert_eq!(ran.code, Some(0), "{}", ran.text);
    assert!(ran.record.builds.iter().all(|b| b.untrusted && !b.reused));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn nothing_outside_the_build_is_written() {
    if !confined() {
        return;
    }
    let ran = ran();
    for target in targets(&ran.marker) {
        assert!(!target.exists(), "{} was written", target.display());
    }
    for (entry, before) in &ran.entries {
        let now = xtask::support::cache::sha256_hex(&std::fs::read(entry).unwrap());
        assert_eq!(&now, before, "{} was overwritten", entry.display());
    }
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn no_host_secret_reaches_the_log() {
    if !confined() {
        return;
    }
    assert_eq!(printed("secret"), "[]");
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let first = shadow.lines().next().unwrap_or("no /etc/shadow");
    assert!(
        !ran().log.contains(first),
        "the build log holds /etc/shadow's first line"
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_build_runs_unprivileged_without_network() {
    if !confined() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let uid = printed("uid");
    if as_root {
        assert_ne!(uid, "0", "the build ran as root");
    }
    assert_eq!(printed("net"), "lo", "the build saw a network device");
    assert_eq!(printed("tcp"), "blocked");
    assert!(
        !ran().listener_reached,
        "the build reached the test's listener"
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_log_shows_each_blocked_attempt() {
    if !confined() {
        return;
    }
    let ran = ran();
    let entries = ran.entries.iter().map(|(p, _)| p.clone());
    for target in targets(&ran.marker).into_iter().chain(entries) {
        let target = target.display().to_string();
        let said = ran.log.lines().any(|l| {
            l.contains(&target)
                && (l.contains("Read-only file system") || l.contains("Permission denied"))
        });
        assert!(said, "the log does not show the blocked write to {target}");
    }
    let shadow = "cannot open '/etc/shadow' for reading: Permission denied";
    assert!(
        ran.log.contains(shadow),
        "the log does not show the blocked read"
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_trusted_kernels_are_what_they_were() {
    // A later trusted run builds (or finds) the same kernels, byte for byte.
    let after = verified(&scenario_dir("sandbox-after").unwrap())
        .unwrap()
        .record;
    let images = |r: &Record| -> Vec<(String, String)> {
        r.builds
            .iter()
            .map(|b| (b.variant.clone(), b.bzimage_sha256.clone()))
            .collect()
    };
    assert_eq!(images(&after), images(&ran().before));
    assert!(after.builds.iter().all(|b| !b.untrusted));
}
