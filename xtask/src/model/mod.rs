//! The plain data the layers share — where a kernel boots, how a patch
//! relates to a tree, the steps a run times, ccache's counters. Nothing here
//! depends on another module of the crate, so stages, support code, the
//! record and the terminal output can all use it without depending on each
//! other.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod bits;
pub mod kselftest;
pub mod pagemap;
pub mod rows;

/// Where a kernel boots: on QEMU's bare (virtual) metal, or as a Xen PV dom0.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Native,
    Xen,
}

impl Env {
    pub const ALL: [Env; 2] = [Env::Native, Env::Xen];

    pub fn name(self) -> &'static str {
        match self {
            Env::Native => "native",
            Env::Xen => "xen",
        }
    }
}

impl std::fmt::Display for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Env {
    type Err = String;
    fn from_str(text: &str) -> Result<Env, String> {
        Env::ALL
            .into_iter()
            .find(|e| e.name() == text)
            .ok_or_else(|| format!("{text:?} is not an environment (native, xen)"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The tree lacks the patch: baseline = tree, candidate = tree + patch.
    Forward,
    /// The tree already has it: baseline = tree − patch, candidate = tree.
    Reverse,
}

/// A step whose time the run records (and prints at the end).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Provision,
    Source,
    /// Making the variant trees (verify: all of them; probe: its one).
    Variants,
    Config {
        variant: String,
    },
    Build {
        variant: String,
    },
    Initramfs,
    /// All boots, wall time (they run concurrently).
    Boots,
    Boot {
        variant: String,
        env: Env,
    },
    Total,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Step::Provision => "provision".to_string(),
            Step::Source => "source".to_string(),
            Step::Variants => "variants".to_string(),
            Step::Config { variant } => format!("config {variant}"),
            Step::Build { variant } => format!("build {variant}"),
            Step::Initramfs => "initramfs".to_string(),
            Step::Boots => "boots (wall)".to_string(),
            Step::Boot { variant, env } => format!("boot {variant}-{env}"),
            Step::Total => "total".to_string(),
        };
        f.pad(&text)
    }
}

/// ccache's counters (`ccache --print-stats`); a build's own are the
/// difference of two readings around it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CcacheStats {
    /// Compiles answered from a cache (local or remote).
    pub hits: u64,
    /// Of those, answered by the remote storage.
    pub remote_hits: u64,
    pub misses: u64,
    /// Remote storage errors and timeouts (an unreachable server).
    pub remote_errors: u64,
}

impl CcacheStats {
    pub fn parse(text: &str) -> CcacheStats {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once('\t')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok())?
                })
                .unwrap_or(0)
        };
        CcacheStats {
            hits: get("direct_cache_hit") + get("preprocessed_cache_hit"),
            remote_hits: get("remote_storage_hit"),
            misses: get("cache_miss"),
            remote_errors: get("remote_storage_error") + get("remote_storage_timeout"),
        }
    }

    pub fn since(self, before: CcacheStats) -> CcacheStats {
        CcacheStats {
            hits: self.hits.saturating_sub(before.hits),
            remote_hits: self.remote_hits.saturating_sub(before.remote_hits),
            misses: self.misses.saturating_sub(before.misses),
            remote_errors: self.remote_errors.saturating_sub(before.remote_errors),
        }
    }

    pub fn hit_rate(self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / total as f64
        }
    }
}

impl std::fmt::Display for CcacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ccache {} hits ({} remote) / {} misses = {:.0} %",
            self.hits,
            self.remote_hits,
            self.misses,
            self.hit_rate()
        )?;
        if self.remote_errors > 0 {
            write!(
                f,
                ", {} remote storage errors (is the server reachable?)",
                self.remote_errors
            )?;
        }
        Ok(())
    }
}

/// Seconds from QEMU's start to the first console line of each phase of a
/// boot, as the host saw them arrive: firmware and loader until Linux's
/// banner, the kernel and the module until the report begins, the report,
/// then power-off until QEMU exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Linux's banner ("Linux version").
    pub kernel_start: Option<f64>,
    /// `/init` begins the report (the module has measured everything).
    pub report_begin: Option<f64>,
    /// The report's end marker.
    pub report_end: Option<f64>,
    /// QEMU exited.
    pub exit: Option<f64>,
}

/// A kernel's version as its top Makefile gives it: 6.12.117 (a tree may
/// have no sublevel: 6.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: Option<u32>,
}

impl KernelVersion {
    /// The series: 6.1.192 → (6, 1).
    pub fn series(self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.sublevel {
            Some(s) => format!("{}.{}.{s}", self.major, self.minor),
            None => format!("{}.{}", self.major, self.minor),
        };
        f.pad(&text)
    }
}

impl std::str::FromStr for KernelVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<KernelVersion, String> {
        let bad = || format!("{text:?} is not a kernel version (MAJOR.MINOR[.SUBLEVEL])");
        let mut parts = text.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let major = parts.next().ok_or_else(bad)??;
        let minor = parts.next().ok_or_else(bad)??;
        let sublevel = parts.next().transpose()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(KernelVersion {
            major,
            minor,
            sublevel,
        })
    }
}

/// The pipeline's stages, in order: each prints its heading as it begins
/// (the steps inside them are timed as [`Step`]s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Provision,
    Source,
    Variants,
    Build,
    Initramfs,
    Boot,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Provision => "provision",
            Stage::Source => "kernel source",
            Stage::Variants => "variants",
            Stage::Build => "build",
            Stage::Initramfs => "initramfs",
            Stage::Boot => "boot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_read_back_as_written() {
        for text in ["6.12.117", "6.1.192", "6.13", "5.15.0"] {
            let v: KernelVersion = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
        }
        let v: KernelVersion = "6.1.192".parse().unwrap();
        assert_eq!(v.series(), (6, 1));
        assert!(v.series() < (6, 2));
        for bad in ["", "6", "6.x", "6.1.2.3", "six.one", "6..1"] {
            assert!(bad.parse::<KernelVersion>().is_err(), "{bad:?}");
        }
    }
}
