//! The guest protocol: what the kernel module, the guest's `/init` and the
//! host agree on. The module (kernel Rust, built inside the kernel tree)
//! cannot depend on this crate; `tests::the_module_names_the_same_modes_and_paths`
//! checks that module/*.rs and module/helpers.c say the same.

use std::fmt;
use std::str::FromStr;

/// Printed by `/init` before the module's KTAP report.
pub const REPORT_BEGIN: &str = "==== PATVERIFY REPORT BEGIN ====";
/// Starts the line after the report: `==== PATVERIFY REPORT END lines=N ====`.
pub const REPORT_END: &str = "==== PATVERIFY REPORT END";
/// Starts the line `/init` prints instead of a report when it fails.
pub const GUEST_ERROR: &str = "==== PATVERIFY ERROR:";

/// Before and after `/init`'s own rows (KTAP), read from
/// /proc/self/pagemap on anonymous memory: `pagemap.soft_dirty`,
/// `pagemap.uffd_wp`.
pub const PAGEMAP_BEGIN: &str = "==== PATVERIFY PAGEMAP BEGIN ====";
pub const PAGEMAP_END: &str = "==== PATVERIFY PAGEMAP END ====";

/// Where the initramfs carries the kernel's own selftests (`--kselftest`):
/// `/init` runs every program in it, in name order, after the report.
pub const KSELFTEST_DIR: &str = "/kselftest";
/// Starts the line before a selftest's output: `… BEGIN NAME ====`.
pub const KSELFTEST_BEGIN: &str = "==== PATVERIFY KSELFTEST BEGIN";
/// Starts the line after it: `… END NAME exit=N ====`, or `… END NAME
/// timeout ====` when `/init` killed it at [`KSELFTEST_SECONDS`].
pub const KSELFTEST_END: &str = "==== PATVERIFY KSELFTEST END";
/// The last line `/init` prints: the boot has nothing more to say.
pub const GUEST_DONE: &str = "==== PATVERIFY DONE ====";
/// How long one selftest may run (under TCG) before `/init` kills it.
pub const KSELFTEST_SECONDS: u64 = 60;

/// The module's debugfs files, as `/init` mounts debugfs (at /debug).
pub mod files {
    /// The KTAP report.
    pub const RESULTS: &str = "/debug/patverify/results";
    /// The driver-style mapping; the page offset picks the mode.
    pub const MMAP: &str = "/debug/patverify/mmap";
    /// Device memory mapped as a GPU driver maps VRAM; the page offset
    /// picks the mode.
    pub const DEVMEM: &str = "/debug/patverify/devmem";
    /// A page of RAM per mode, its memtype set as TTM sets a buffer's
    /// (`set_pages_array_wc()` and friends), mapped like `DEVMEM`; the page
    /// offset picks the mode.
    pub const RAM: &str = "/debug/patverify/ram";
    /// The same device memory, 2 MiB per mode: the offset `mode × 2 MiB`
    /// picks the mode, and a 2 MiB-aligned mapping faults in one PMD.
    pub const HUGE_PFN: &str = "/debug/patverify/huge_pfn";
    /// Commands from `/init`: `PATH MODE ADDR` (see [`super::ProbePath::is_guest_driven`]) or `oops`.
    pub const PROBE: &str = "/debug/patverify/probe";
}

/// Starts the `probe` command `before PATH MODE ADDR`: `/init` is about to
/// run the step PATH on its mapping of MODE at ADDR, and the module reads
/// the entry the step starts from: for a later step (see
/// [`ProbePath::previous_step`]) the entry the step before installed, for
/// a fault the empty slot (`pte_before=none` in the report) or whatever
/// the page table already held there.
pub const BEFORE_COMMAND: &str = "before";

/// The `probe` command that oopses the writing task (failure injection).
pub const OOPS_COMMAND: &str = "oops";

/// The kernel command-line parameter (passed to `/init`'s environment) that
/// injects a failure for the harness's own tests.
pub const FAULT_PARAMETER: &str = "patverify_fault";

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in report order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name used in the KTAP report, the tables and the JSON.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<Self, UnknownName> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.name() == text)
                    .ok_or_else(|| UnknownName { kind: stringify!($name), name: text.to_string() })
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named_enum! {
    /// x86 page cache modes, in the order of the kernel's
    /// `enum page_cache_mode` (the `mmap` file's page offset is the index).
    CacheMode {
        /// Write-back.
        Wb = "WB",
        /// Write-combining.
        Wc = "WC",
        /// Uncached, overridable by MTRRs.
        UcMinus = "UC-",
        /// Uncached.
        Uc = "UC",
        /// Write-through.
        Wt = "WT",
        /// Write-protected.
        Wp = "WP",
    }
}

named_enum! {
    /// The paths along which the module measures each mode, in report order.
    ProbePath {
        /// `vma_set_page_prot()` on a fresh VMA, at boot.
        VmaSetPageProt = "vma_set_page_prot",
        /// `/init` maps the `mmap` file and touches it; installed PTE.
        MmapFault = "mmap_fault",
        /// `/init` mprotect()s that mapping read-only and back; installed PTE.
        Mprotect = "mprotect",
        /// `/init` then moves that mapping elsewhere with `mremap()`
        /// (`MREMAP_MAYMOVE | MREMAP_FIXED`: `move_ptes()`); the moved PTE.
        Mremap = "mremap",
        /// `/init` maps device memory (a PCI BAR whose memtype the module
        /// reserved for the mode) and touches it; the fault inserts the page
        /// with `vmf_insert_pfn_prot()`; installed PTE.
        DevmemFault = "devmem_fault",
        /// `/init` mprotect()s that device mapping read-only and back.
        DevmemMprotect = "devmem_mprotect",
        /// `/init` maps a page of RAM the module allocated and gave the
        /// mode's memtype as TTM does (`set_pages_array_wc()` and friends),
        /// and touches it: the fault inserts it with `vmf_insert_pfn_prot()`;
        /// installed PTE.
        RamFault = "ram_fault",
        /// `/init` mprotect()s that RAM mapping read-only and back.
        RamMprotect = "ram_mprotect",
        /// `/init` maps a 2 MiB chunk of that device memory, 2 MiB-aligned,
        /// and touches it: `.huge_fault` inserts it with
        /// `vmf_insert_pfn_pmd()`; installed PMD.
        HugePfnFault = "huge_pfn_fault",
        /// `/init` mprotect()s that 2 MiB mapping read-only and back
        /// (`change_huge_pmd()` → `pmd_modify()`); installed PMD.
        HugePfnMprotect = "huge_pfn_mprotect",
        /// Synthetic: `pte_modify()` called directly on an entry built at boot.
        PteModifyDirect = "pte_modify_direct",
        /// A row per PAT entry 0..7 (not per mode): `vma_set_page_prot()` on
        /// a fresh VMA whose protection selects the entry, at boot.
        PatIndex = "pat_index",
    }
}

impl ProbePath {
    /// The widest name, for tables.
    pub const WIDTH: usize = 17;

    /// Whether `/init` drives the path (a `probe` command `PATH MODE ADDR`
    /// after it touched or mprotect()ed its mapping); the others run at boot.
    pub const fn is_guest_driven(self) -> bool {
        matches!(
            self,
            ProbePath::MmapFault
                | ProbePath::Mprotect
                | ProbePath::Mremap
                | ProbePath::DevmemFault
                | ProbePath::DevmemMprotect
                | ProbePath::RamFault
                | ProbePath::RamMprotect
                | ProbePath::HugePfnFault
                | ProbePath::HugePfnMprotect
        )
    }

    /// Whether the path's rows are PAT entries 0..7 rather than cache modes.
    pub const fn rows_by_pat_entry(self) -> bool {
        matches!(self, ProbePath::PatIndex)
    }

    /// Whether the path reads a 2 MiB entry (a PMD) rather than a PTE.
    pub const fn is_2mib(self) -> bool {
        matches!(self, ProbePath::HugePfnFault | ProbePath::HugePfnMprotect)
    }

    /// What the path's rows stand on (said in every output).
    pub const fn kind(self) -> PathKind {
        match self {
            ProbePath::VmaSetPageProt | ProbePath::PatIndex => PathKind::MadeVma,
            ProbePath::PteModifyDirect => PathKind::DirectCall,
            _ => PathKind::RealMapping,
        }
    }

    /// Whether the path's rows do not come from a real mapping of a real
    /// process: a real kernel function on a VMA the module made, or a
    /// direct call (marked in the tables, the JSON, JUnit and KCIDB).
    pub const fn is_synthetic(self) -> bool {
        !matches!(self.kind(), PathKind::RealMapping)
    }

    /// Whether /init's step installs the entry (a fault): it starts from an
    /// empty slot and says what it asked the kernel for.
    pub const fn is_fault(self) -> bool {
        self.is_guest_driven() && self.previous_step().is_none()
    }

    /// The step before this one on the same mapping, whose installed entry
    /// this step starts from: a later step is judged against that entry,
    /// not against the mode first requested.
    pub const fn previous_step(self) -> Option<ProbePath> {
        match self {
            ProbePath::Mprotect => Some(ProbePath::MmapFault),
            ProbePath::Mremap => Some(ProbePath::Mprotect),
            ProbePath::DevmemMprotect => Some(ProbePath::DevmemFault),
            ProbePath::RamMprotect => Some(ProbePath::RamFault),
            ProbePath::HugePfnMprotect => Some(ProbePath::HugePfnFault),
            _ => None,
        }
    }
}

/// What a path's rows stand on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A real mapping of `/init`'s, faulted and `mprotect()`ed by syscalls;
    /// the installed entry read back from its page table.
    RealMapping,
    /// A real kernel function (`vma_set_page_prot()`) on a VMA the module
    /// made, with no mm and no file behind it.
    MadeVma,
    /// A kernel function called directly on an entry the module built: no
    /// page table, no syscall.
    DirectCall,
}

impl PathKind {
    /// A short word for tables, JSON, JUnit and KCIDB.
    pub const fn name(self) -> &'static str {
        match self {
            PathKind::RealMapping => "real-mapping",
            PathKind::MadeVma => "made-vma",
            PathKind::DirectCall => "direct-call",
        }
    }

    /// For footnotes and the README.
    pub const fn describe(self) -> &'static str {
        match self {
            PathKind::RealMapping => "a real mapping, faulted and mprotect()ed by a process",
            PathKind::MadeVma => "a real kernel function on a VMA the module made (no mm, no file)",
            PathKind::DirectCall => "a kernel function called directly (no page table, no syscall)",
        }
    }
}

named_enum! {
    /// Failures `/init` injects for the harness's tests (`patverify_fault=`).
    Fault {
        /// Never print, never power off: the host's timeout must end it.
        Hang = "hang",
        /// Print half the report, as a stalled console would.
        Truncate = "truncate",
        /// Corrupt one line of the report.
        Garble = "garble",
        /// Have a child write `oops` to the probe file.
        Oops = "oops",
        /// Leave one row out of the report, plan adjusted: a well-formed
        /// report that lacks a row.
        DropRow = "drop-row",
        /// Turn one measured row into a `# SKIP` no path declares.
        UndeclaredSkip = "undeclared-skip",
    }
}

/// A name that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    kind: &'static str,
    name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {}", self.name, self.kind)
    }
}

impl std::error::Error for UnknownName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in CacheMode::ALL {
            assert_eq!(mode.name().parse::<CacheMode>(), Ok(*mode));
        }
        for path in ProbePath::ALL {
            assert_eq!(path.name().parse::<ProbePath>(), Ok(*path));
            assert!(path.name().len() <= ProbePath::WIDTH);
        }
        assert_eq!(CacheMode::ALL[4], CacheMode::Wt);
        assert_eq!(CacheMode::Wp.index(), 5);
        assert!("UC+"
            .parse::<CacheMode>()
            .unwrap_err()
            .to_string()
            .contains("CacheMode"));
        assert_eq!(format!("{:<4}|", CacheMode::Uc), "UC  |");
    }

    fn module_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../module")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The quoted names in the match arms of the `fn name(self)` that follows `marker`.
    fn names_after(text: &str, marker: &str) -> Vec<String> {
        let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
        let body = &text[start..];
        let body = &body[..body.find("\n    }\n").expect("end of fn")];
        body.split("=> \"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').expect("closing quote")].to_string())
            .collect()
    }

    /// `text` without its C (or Rust) comments: the checks read code only.
    fn code_only(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("/*") {
            out.push_str(&rest[..start]);
            rest = rest[start..]
                .find("*/")
                .map_or("", |end| &rest[start + end + 2..]);
        }
        out.push_str(rest);
        out.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The body of the function whose signature contains `signature`.
    fn body_of<'a>(code: &'a str, signature: &str) -> &'a str {
        let start = code
            .find(signature)
            .unwrap_or_else(|| panic!("no {signature}"));
        let body = &code[start..];
        &body[..body.find("\n}").expect("end of the function")]
    }

    /// What the protocol calls synthetic is what the module's code does:
    /// the paths measured in `set_up` (at boot, before any user mapping)
    /// are exactly the non-real ones the module records itself, each made
    /// on a fresh VMA (`vma_set_page_prot_on_fresh_vma`) or, for the
    /// direct call, on an entry built by `mk_pte()` and handed to
    /// `pte_modify()` without a page table.
    fn assert_synthetic_paths_are_measured_without_a_mapping(module: &str, helpers: &str) {
        let set_up = code_only(body_of(module, "fn set_up()"));
        let at_boot: Vec<&str> = set_up
            .split("record(Path::")
            .skip(1)
            .map(|rest| &rest[..rest.find(',').expect("record(Path::X, …)")])
            .collect();
        let synthetic: Vec<String> = ProbePath::ALL
            .iter()
            .filter(|p| p.kind() != PathKind::RealMapping && **p != ProbePath::PatIndex)
            .map(|p| format!("{p:?}"))
            .collect();
        assert_eq!(at_boot, synthetic, "module/patverify.rs set_up()");
        assert!(set_up.contains("vma_set_page_prot_on_fresh_vma"));
        // pat_index's entries are measured there too, on a fresh VMA.
        assert!(set_up.contains("pat_entries") && ProbePath::PatIndex.kind() == PathKind::MadeVma);
        let direct = code_only(body_of(helpers, "rust_helper_patverify_pte_modify("));
        assert!(direct.contains("mk_pte(") && direct.contains("pte_modify("));
        assert!(
            !direct.contains("pte_offset"),
            "the direct call walks no page table"
        );
    }

    /// The module takes a probe command for exactly the paths /init drives
    /// (`guest_step_index`), and starts a fault from an empty slot for
    /// exactly the first step of each mapping (`is_fault`).
    fn assert_guest_steps_are_probe_commands(module: &str) {
        let probe = &module[module.find("fn probe_command").expect("fn probe_command")..];
        let probe = &probe[..probe.find("\n}\n").expect("end of fn")];
        let arms = |signature: &str| -> Vec<String> {
            let code = code_only(module);
            let body = &code[code
                .find(signature)
                .unwrap_or_else(|| panic!("no {signature}"))..];
            let body = &body[..body.find("\n    }\n").expect("end of fn")];
            body.split("Path::")
                .skip(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_alphanumeric)
                        .collect()
                })
                .collect()
        };
        let guest: Vec<String> = ProbePath::ALL
            .iter()
            .filter(|p| p.is_guest_driven())
            .map(|p| format!("{p:?}"))
            .collect();
        let mut taken = arms("fn guest_step_index(self)");
        taken.sort();
        let mut expected = guest.clone();
        expected.sort();
        assert_eq!(taken, expected, "module/patverify.rs guest_step_index");
        assert!(probe.contains("guest_step_index()"));
        let faults: Vec<String> = ProbePath::ALL
            .iter()
            .filter(|p| p.is_fault())
            .map(|p| format!("{p:?}"))
            .collect();
        assert_eq!(
            arms("fn is_fault(self)"),
            faults,
            "module/patverify.rs is_fault"
        );
    }

    #[test]
    fn the_module_names_the_same_modes_and_paths() {
        let ffi = module_file("ffi.rs");
        let module = module_file("patverify.rs");
        let helpers = module_file("helpers.c");
        let modes: Vec<&str> = CacheMode::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names_after(&ffi, "impl CacheMode {"),
            modes,
            "module/ffi.rs"
        );
        let paths: Vec<&str> = ProbePath::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names_after(&module, "impl Path {"),
            paths,
            "module/patverify.rs"
        );
        assert_guest_steps_are_probe_commands(&module);
        let probe = &module[module.find("fn probe_command").expect("fn probe_command")..];
        assert!(
            probe.contains(&format!("b\"{BEFORE_COMMAND}\"")),
            "module/patverify.rs does not take `{BEFORE_COMMAND} PATH MODE ADDR`"
        );
        assert_synthetic_paths_are_measured_without_a_mapping(&module, &helpers);
        assert!(module.contains(&format!("b\"{OOPS_COMMAND}\"")));
    }
}
