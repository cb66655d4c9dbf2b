//! Provisioning: what the pipeline needs on the host, how to tell whether it
//! is there, and how to install it (Debian packages, `cargo install`, and the
//! Xen hypervisor unpacked into the cache). `setup` installs, `doctor` reports.

use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Debian's rustc-web: the rustc that has matching library sources here.
pub const RUSTC: &str = "/usr/bin/rustc";
pub const LLVM_SUFFIX: &str = "-19";
pub const LIBCLANG_DIR: &str = "/usr/lib/llvm-19/lib";
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The second kernel the end-to-end matrix runs (Debian 12's own kernel).
pub const LEGACY_KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
pub const BINDGEN_VERSION: &str = "0.69.5";
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// QEMU's qboot firmware (qemu-system-data, with qemu-system-x86).
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// What a requirement is needed for: every run, or one feature only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Building and booting kernels: every verify, probe and bisect.
    Pipeline,
    /// `--distcc`: ccache hands its misses to distccd workers.
    Distcc,
    /// Trees pinned to an old rustc (Linux 6.1): clang/lld 14 from Debian
    /// (beside 19), the rustc 1.63 toolchain unpacked into the cache.
    LegacyRust,
    /// What only the end-to-end test uses: its own servers (redis-server,
    /// distccd) on the loopback, to test `--cache-remote` and `--distcc`,
    /// Python's venv for kcidb-io's validator and b4, and the second
    /// kernel source its matrix runs (Debian's linux-source-6.1).
    Test,
}

impl Feature {
    /// Every feature (`setup --all`, `cargo xtask test`).
    pub const ALL: [Feature; 4] = [
        Feature::Pipeline,
        Feature::Distcc,
        Feature::LegacyRust,
        Feature::Test,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Feature::Pipeline => "every run",
            Feature::Distcc => "--distcc",
            Feature::LegacyRust => "Linux 6.1 trees",
            Feature::Test => "cargo xtask test",
        }
    }
}

/// One thing the pipeline needs.
struct Requirement {
    what: &'static str,
    /// What needs it.
    feature: Feature,
    /// The programs (by name) and absolute paths it puts on the machine:
    /// what a scenario or a README example may use once it is installed
    /// (checked by a test, so none depends on a package installed by hand).
    provides: &'static [&'static str],
    /// Its version (or "present") when it is there.
    probe: fn() -> Option<String>,
    install: Install,
}

#[derive(Clone, Copy)]
enum Install {
    Apt(&'static str),
    CargoBindgen,
    /// distccd runs only the compilers linked in /usr/lib/distcc; clang-19
    /// gets its link when distcc is configured after it, so make sure.
    DistccLinks,
}

impl Install {
    /// The command that installs it, for people.
    fn describe(self) -> String {
        match self {
            Install::Apt(pkg) => format!("apt-get install {pkg}"),
            Install::CargoBindgen => {
                format!("cargo install bindgen-cli --version {BINDGEN_VERSION} --locked")
            }
            Install::DistccLinks => "update-distcc-symlinks".into(),
        }
    }
}

/// The whole output of `program --version` ("" when it cannot run).
pub fn version_output(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output_quiet()
        .map(|(_, out)| out)
        .unwrap_or_default()
}

fn version_of(program: &str, arg: &str) -> Option<String> {
    let (ok, out) = Command::new(program).arg(arg).output_quiet().ok()?;
    ok.then(|| {
        out.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("present")
            .trim()
            .to_string()
    })
}

fn file_present(path: &str) -> Option<String> {
    Path::new(path).exists().then(|| path.to_string())
}

pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

pub fn bindgen_path() -> PathBuf {
    cargo_bin_dir().join("bindgen")
}

fn bindgen_version() -> Option<String> {
    let v = version_of(bindgen_path().to_str()?, "--version")?;
    v.contains(BINDGEN_VERSION).then_some(v)
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        feature: Feature::Pipeline,
        what: "rustc (Debian rustc-web)",
        provides: &["/usr/bin/rustc"],
        probe: || version_of(RUSTC, "--version"),
        install: Install::Apt("rustc-web"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "Rust library sources",
        provides: &["/usr/lib/rustlib/src/rust/library"],
        probe: || file_present("/usr/lib/rustlib/src/rust/library/core/src/lib.rs"),
        install: Install::Apt("rust-web-src"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "clang-19",
        provides: &["clang-19"],
        probe: || version_of("clang-19", "--version"),
        install: Install::Apt("clang-19"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "libclang 19",
        provides: &[LIBCLANG_DIR, "/usr/lib/llvm-19/lib/libclang.so"],
        probe: || file_present("/usr/lib/llvm-19/lib/libclang.so"),
        install: Install::Apt("libclang-19-dev"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "ld.lld-19",
        provides: &["ld.lld-19"],
        probe: || version_of("ld.lld-19", "--version"),
        install: Install::Apt("lld-19"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "llvm-19 tools",
        provides: &["llvm-ar-19", "llvm-nm-19", "llvm-objcopy-19"],
        probe: || version_of("llvm-ar-19", "--version"),
        install: Install::Apt("llvm-19"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "bindgen-cli 0.69.5",
        provides: &["bindgen"],
        probe: bindgen_version,
        install: Install::CargoBindgen,
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "make",
        provides: &["make"],
        probe: || version_of("make", "--version"),
        install: Install::Apt("make"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "flex",
        provides: &["flex"],
        probe: || version_of("flex", "--version"),
        install: Install::Apt("flex"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "bison",
        provides: &["bison"],
        probe: || version_of("bison", "--version"),
        install: Install::Apt("bison"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "bc",
        provides: &["bc"],
        probe: || version_of("bc", "--version"),
        install: Install::Apt("bc"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "libelf headers",
        provides: &["/usr/include/libelf.h"],
        probe: || file_present("/usr/include/libelf.h"),
        install: Install::Apt("libelf-dev"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "OpenSSL headers",
        provides: &["/usr/include/openssl/ssl.h"],
        probe: || file_present("/usr/include/openssl/ssl.h"),
        install: Install::Apt("libssl-dev"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "static glibc (guest /init)",
        provides: &["/usr/lib/x86_64-linux-gnu/libc.a"],
        probe: || file_present("/usr/lib/x86_64-linux-gnu/libc.a"),
        install: Install::Apt("libc6-dev"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "ccache",
        provides: &["ccache"],
        probe: || version_of("ccache", "--version"),
        install: Install::Apt("ccache"),
    },
    Requirement {
        feature: Feature::Distcc,
        what: "distcc (--distcc, and its test's distccd)",
        provides: &[
            "distcc",
            "distccd",
            "update-distcc-symlinks",
            "/usr/lib/distcc",
        ],
        probe: || version_of("distcc", "--version"),
        install: Install::Apt("distcc"),
    },
    Requirement {
        feature: Feature::Distcc,
        what: "distccd may run clang-19",
        provides: &["/usr/lib/distcc/clang-19"],
        probe: || file_present("/usr/lib/distcc/clang-19"),
        install: Install::DistccLinks,
    },
    Requirement {
        feature: Feature::LegacyRust,
        what: "clang-14 (Linux 6.1: bindgen 0.60's libclang)",
        provides: &["clang-14"],
        probe: || version_of("clang-14", "--version"),
        install: Install::Apt("clang-14"),
    },
    Requirement {
        feature: Feature::LegacyRust,
        what: "ld.lld-14",
        provides: &["ld.lld-14"],
        probe: || version_of("ld.lld-14", "--version"),
        install: Install::Apt("lld-14"),
    },
    Requirement {
        feature: Feature::LegacyRust,
        what: "llvm-14 tools",
        provides: &["llvm-ar-14"],
        probe: || version_of("llvm-ar-14", "--version"),
        install: Install::Apt("llvm-14"),
    },
    Requirement {
        feature: Feature::Test,
        what: "redis-server (the remote ccache test)",
        provides: &["redis-server"],
        probe: || version_of("redis-server", "--version"),
        install: Install::Apt("redis-server"),
    },
    Requirement {
        feature: Feature::Test,
        what: "cpio (reads back the guest's initramfs)",
        provides: &["cpio"],
        probe: || version_of("cpio", "--version"),
        install: Install::Apt("cpio"),
    },
    Requirement {
        feature: Feature::Test,
        what: "python3 venv (the test's KCIDB validator)",
        provides: &["python3"],
        probe: || {
            let help = Command::new("python3").args(["-m", "venv", "--help"]);
            help.output_quiet()
                .ok()
                .filter(|(ok, _)| *ok)
                .map(|_| "present".into())
        },
        install: Install::Apt("python3-venv"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "patch",
        provides: &["patch"],
        probe: || version_of("patch", "--version"),
        install: Install::Apt("patch"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "xz",
        provides: &["xz"],
        probe: || version_of("xz", "--version"),
        install: Install::Apt("xz-utils"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "git",
        provides: &["git"],
        probe: || version_of("git", "--version"),
        install: Install::Apt("git"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "bubblewrap (the build sandbox)",
        provides: &["bwrap"],
        probe: || version_of("bwrap", "--version"),
        install: Install::Apt("bubblewrap"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "qemu-system-x86_64",
        provides: &["qemu-system-x86_64", QBOOT],
        probe: || version_of("qemu-system-x86_64", "--version"),
        install: Install::Apt("qemu-system-x86"),
    },
    Requirement {
        feature: Feature::Pipeline,
        what: "Linux 6.12 source (Debian linux-source-6.12)",
        provides: &[KERNEL_TARBALL],
        probe: || file_present(KERNEL_TARBALL),
        install: Install::Apt("linux-source-6.12"),
    },
    Requirement {
        feature: Feature::Test,
        what: "Linux 6.1 source (Debian linux-source-6.1)",
        provides: &[LEGACY_KERNEL_TARBALL],
        probe: || file_present(LEGACY_KERNEL_TARBALL),
        install: Install::Apt("linux-source-6.1"),
    },
];

/// Every requirement as (feature, what, what it provides): what the drift
/// test checks the scenarios against.
pub fn requirements() -> impl Iterator<Item = (Feature, &'static str, &'static [&'static str])> {
    REQUIREMENTS.iter().map(|r| (r.feature, r.what, r.provides))
}

/// Whether a requirement (by its `what`) is present on this machine.
pub fn is_present(what: &str) -> bool {
    REQUIREMENTS
        .iter()
        .any(|r| r.what == what && (r.probe)().is_some())
}

pub struct Missing {
    apt: Vec<String>,
    bindgen: bool,
    distcc_links: bool,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.apt.is_empty() && !self.bindgen && !self.distcc_links
    }

    fn describe(&self) -> String {
        let mut what: Vec<&str> = self.apt.iter().map(String::as_str).collect();
        if self.bindgen {
            what.push("bindgen-cli");
        }
        if self.distcc_links {
            what.push("distcc's clang-19 link");
        }
        what.join(" ")
    }

    fn commands(&self) -> Vec<Command> {
        let mut cmds = Vec::new();
        if !self.apt.is_empty() {
            cmds.push(Command::new("apt-get").arg("update"));
            cmds.push(
                Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(self.apt.iter())
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            );
        }
        if self.bindgen {
            cmds.push(Command::new("cargo").args([
                "install",
                "bindgen-cli",
                "--version",
                BINDGEN_VERSION,
                "--locked",
                "--force",
            ]));
        }
        if self.distcc_links {
            cmds.push(Command::new("update-distcc-symlinks"));
        }
        cmds
    }
}

/// The requirements of the pipeline and of `features`.
fn wanted(features: &[Feature]) -> impl Iterator<Item = &'static Requirement> + '_ {
    REQUIREMENTS
        .iter()
        .filter(move |r| r.feature == Feature::Pipeline || features.contains(&r.feature))
}

fn missing(features: &[Feature]) -> Missing {
    let mut m = Missing {
        apt: Vec::new(),
        bindgen: false,
        distcc_links: false,
    };
    for req in wanted(features) {
        if (req.probe)().is_none() {
            match req.install {
                Install::Apt(pkg) => m.apt.push(pkg.to_string()),
                Install::CargoBindgen => m.bindgen = true,
                Install::DistccLinks => m.distcc_links = true,
            }
        }
    }
    m
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure the host requirements of the pipeline and of `features`, and
/// the Xen hypervisor, are present: installs them as root, otherwise prints
/// the commands and fails (exit 2).
pub fn ensure(cache_root: &Path, features: &[Feature]) -> Result<()> {
    install_missing(features)?;
    ensure_xen(&cache_root.join("xen"))?;
    if features.contains(&Feature::LegacyRust) {
        unpack_legacy_rust(cache_root)?;
    }
    Ok(())
}

/// Installs the missing Debian packages (and bindgen-cli) of `features`.
fn install_missing(features: &[Feature]) -> Result<()> {
    install(missing(features), || self::missing(features))
}

/// The Debian package that provides a kernel source tarball
/// (`/usr/src/linux-source-6.1.tar.xz` → `linux-source-6.1`), if it is one.
pub fn source_package(tarball: &Path) -> Option<String> {
    let name = tarball.strip_prefix("/usr/src").ok()?.to_str()?;
    let version = name
        .strip_prefix("linux-source-")?
        .strip_suffix(".tar.xz")?;
    let valid = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    valid.then(|| format!("linux-source-{version}"))
}

/// Makes sure a Debian kernel source tarball that `--kernel` names is
/// there: installs its package as root, otherwise prints the command and
/// fails (exit 2). Other paths are left to the caller.
pub fn ensure_source_package(tarball: &Path) -> Result<()> {
    let Some(package) = source_package(tarball) else {
        return Ok(());
    };
    if tarball.exists() {
        return Ok(());
    }
    let wanted = |present: bool| Missing {
        apt: if present {
            Vec::new()
        } else {
            vec![package.clone()]
        },
        bindgen: false,
        distcc_links: false,
    };
    install(wanted(false), || wanted(tarball.exists()))
}

/// Runs `missing`'s commands as root (otherwise prints them and fails),
/// then checks with `still_missing` that they took.
fn install(missing: Missing, still_missing: impl Fn() -> Missing) -> Result<()> {
    if !missing.is_empty() {
        let cmds = missing.commands();
        if !is_root() {
            let lines: Vec<String> = cmds
                .iter()
                .map(|c| format!("  sudo {}", c.display()))
                .collect();
            return Err(fail(
                Kind::Setup,
                format!(
                    "missing host tools; install them with:\n{}",
                    lines.join("\n")
                ),
            ));
        }
        crate::output::progress(&format!("installing: {}", missing.describe()));
        for cmd in cmds {
            cmd.run()
                .map_err(|e| fail(Kind::Setup, format!("provisioning failed: {e:#}")))?;
        }
        let still = still_missing();
        if !still.is_empty() {
            return Err(fail(
                Kind::Setup,
                format!("still missing after installing: {}", still.describe()),
            ));
        }
    }
    Ok(())
}

/// Debian 12's rustc 1.63 toolchain for trees pinned to an old rustc:
/// these packages, unpacked (not installed: `rustc` conflicts with
/// `rustc-web`), with wrappers in `bin/` that put their libraries on the
/// loader path. rustc finds its sysroot (and the library sources) beside
/// itself.
const LEGACY_RUST_PACKAGES: [&str; 7] = [
    "rustc",
    "libstd-rust-1.63",
    "libstd-rust-dev",
    "rust-src",
    "bindgen",
    "libclang1-14",
    "libllvm14",
];

/// Where the rustc 1.63 toolchain is unpacked.
pub fn legacy_rust_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("toolchains/debian-rustc-1.63")
}

/// Makes sure the rustc 1.63 toolchain (and clang 14) is there.
pub fn ensure_legacy_rust(cache_root: &Path) -> Result<()> {
    install_missing(&[Feature::LegacyRust])?;
    unpack_legacy_rust(cache_root)
}

/// Unpacks Debian's rustc 1.63 packages into the cache, once.
fn unpack_legacy_rust(cache_root: &Path) -> Result<()> {
    let dir = legacy_rust_dir(cache_root);
    let _lock = crate::support::cache::lock_entry(&dir)?;
    if dir.join("bin/rustc").exists() {
        return Ok(());
    }
    crate::output::progress("unpacking Debian's rustc 1.63 toolchain into the cache");
    let staged = crate::support::cache::Staged::new(&dir)?;
    let tmp = staged.path();
    let download = Command::new("apt-get")
        .arg("download")
        .args(LEGACY_RUST_PACKAGES)
        .dir(tmp);
    if let Err(err) = download.run() {
        return Err(fail(
            Kind::Setup,
            format!(
                "cannot download {} (run `apt-get update` first?): {err:#}",
                LEGACY_RUST_PACKAGES.join(" ")
            ),
        ));
    }
    for entry in std::fs::read_dir(tmp)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            Command::new("dpkg")
                .arg("-x")
                .arg(&deb)
                .arg(tmp.join("root"))
                .run()?;
            std::fs::remove_file(&deb)?;
        }
    }
    let root = dir.join("root/usr");
    let libs = format!("{}/lib/x86_64-linux-gnu", root.display());
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin)?;
    for tool in ["rustc", "bindgen"] {
        let path = bin.join(tool);
        let script = format!(
            "#!/bin/sh\n# Debian's {tool}, unpacked by patverify (not installed).\nLD_LIBRARY_PATH={libs} exec {}/bin/{tool} \"$@\"\n",
            root.display()
        );
        std::fs::write(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    staged.publish(&dir)
}

/// Path of the Xen hypervisor image (ELF, booted by QEMU's `-kernel`).
pub fn xen_image(xen_dir: &Path) -> PathBuf {
    xen_dir.join("xen")
}

/// Fetches Debian's Xen hypervisor package into the cache without
/// installing it: `apt-get download` + `dpkg -x` + gunzip.
fn ensure_xen(xen_dir: &Path) -> Result<()> {
    let image = xen_image(xen_dir);
    let _lock = crate::support::cache::lock_entry(xen_dir)?;
    if image.exists() {
        return Ok(());
    }
    let staged = crate::support::cache::Staged::new(xen_dir)?;
    let tmp = staged.path();
    let download = Command::new("apt-get")
        .args(["download", XEN_PACKAGE])
        .dir(tmp);
    if let Err(err) = download.run() {
        return Err(fail(
            Kind::Setup,
            format!("cannot download {XEN_PACKAGE} (run `apt-get update` first?): {err:#}"),
        ));
    }
    let deb = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(tmp.join("root"))
        .run()?;
    let gz = std::fs::read_dir(tmp.join("root/boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("xen-") && n.to_string_lossy().ends_with(".gz")
            })
        })
        .context("no boot/xen-*.gz in the Xen package")?;
    let (ok, why) = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat '{}' > '{}'",
            gz.display(),
            tmp.join("xen").display()
        ))
        .output()?;
    anyhow::ensure!(ok, "cannot unpack {}: {}", gz.display(), why.trim());
    std::fs::write(
        tmp.join("version"),
        deb.file_name().unwrap_or_default().as_encoded_bytes(),
    )?;
    staged.publish(xen_dir)
}

/// One requirement as found on this machine: what `doctor` prints.
pub struct Found {
    pub what: &'static str,
    pub feature: Feature,
    /// Its version (or path), when present.
    pub version: Option<String>,
    /// The command that installs it, for people.
    pub install: String,
}

/// Every requirement of the table, probed now.
pub fn found() -> Vec<Found> {
    REQUIREMENTS
        .iter()
        .map(|r| Found {
            what: r.what,
            feature: r.feature,
            version: (r.probe)(),
            install: r.install.describe(),
        })
        .collect()
}

/// The cache's own entries (Xen, the 6.1 toolchain): (label, version if
/// present, whether every run needs it, how it gets there).
pub fn cache_entries(cache_root: &Path) -> Vec<(&'static str, Option<String>, bool, &'static str)> {
    let xen_dir = cache_root.join("xen");
    let xen = std::fs::read_to_string(xen_dir.join("version"))
        .ok()
        .filter(|_| xen_image(&xen_dir).exists())
        .map(|v| v.trim().to_string());
    let legacy = legacy_rust_dir(cache_root).join("bin/rustc");
    let rustc = version_of(legacy.to_str().unwrap_or_default(), "--version");
    vec![
        ("Xen hypervisor (in cache)", xen, true, "cargo xtask setup"),
        (
            "Debian rustc 1.63 toolchain (in cache)",
            rustc,
            false,
            "only for Linux 6.1 trees; unpacked on first use",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packages(features: &[Feature]) -> Vec<&'static str> {
        wanted(features)
            .filter_map(|r| match r.install {
                Install::Apt(pkg) => Some(pkg),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_debian_source_tarball_names_its_package() {
        let package = |p: &str| source_package(Path::new(p));
        assert_eq!(
            package("/usr/src/linux-source-6.1.tar.xz").as_deref(),
            Some("linux-source-6.1")
        );
        assert_eq!(
            package(KERNEL_TARBALL).as_deref(),
            Some("linux-source-6.12")
        );
        for other in [
            "/home/me/linux-source-6.1.tar.xz",
            "/usr/src/linux-6.1.tar.xz",
            "/usr/src/linux-source-.tar.xz",
            "/usr/src/linux-source-6.1;rm.tar.xz",
            "/usr/src/sub/linux-source-6.1.tar.xz",
        ] {
            assert_eq!(package(other), None, "{other}");
        }
    }

    #[test]
    fn the_test_installs_the_second_kernel_source_its_matrix_runs() {
        assert!(packages(&Feature::ALL).contains(&"linux-source-6.1"));
        assert!(!packages(&[Feature::Pipeline]).contains(&"linux-source-6.1"));
    }

    #[test]
    fn a_plain_run_installs_only_what_building_and_booting_need() {
        let plain = packages(&[Feature::Pipeline]);
        for extra in ["distcc", "redis-server", "python3-venv"] {
            assert!(!plain.contains(&extra), "{extra} in {plain:?}");
        }
        for needed in [
            "rustc-web",
            "clang-19",
            "qemu-system-x86",
            "linux-source-6.12",
        ] {
            assert!(plain.contains(&needed), "{needed} missing from {plain:?}");
        }
        let distcc = packages(&[Feature::Pipeline, Feature::Distcc]);
        assert!(distcc.contains(&"distcc") && !distcc.contains(&"redis-server"));
        let all = packages(&Feature::ALL);
        assert!(all.contains(&"redis-server") && all.contains(&"python3-venv"));
    }
}
