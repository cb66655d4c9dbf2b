// SPDX-License-Identifier: GPL-2.0

//! patverify: checks that every x86 page cache mode survives the paths that
//! re-apply a mapping's protection bits.
//!
//! For each mode (WB, WC, UC-, UC, WT, WP) it measures these paths:
//!
//! - `vma_set_page_prot`: a shared read/write VMA whose `vm_page_prot`
//!   requests the mode, put through `vma_set_page_prot()` directly
//!   (`pgprot_modify()` and `_PAGE_CHG_MASK`), at boot.
//! - `mmap_fault`: the guest's /init maps `/sys/kernel/debug/patverify/mmap`
//!   at page offset N (mode N). Its `.mmap` sets `vm_page_prot` for the mode
//!   as a DRM driver does, `mmap_region()` then applies the VMA's flags, and
//!   a touch faults in an ordinary page (`vmf->page`, like a shmem-backed GEM
//!   object — no PFN-map memtype tracking involved). /init then writes
//!   `mmap_fault MODE ADDR` to `probe`, and the module reads the *installed*
//!   PTE by walking the page table.
//! - `mprotect`: /init clears the mapping's accessed bit
//!   (`/proc/self/clear_refs`), writes `before mprotect MODE ADDR` (the
//!   module reads the entry the step starts from), makes the mapping
//!   read-only and writable again (`change_protection()` → `pte_modify()`),
//!   writes `mprotect MODE ADDR`, and the module reads the installed PTE
//!   again. Every bit `_PAGE_CHG_MASK` keeps must come through unchanged:
//!   with the accessed bit clear beforehand, a mask that lets it go takes it
//!   from the new protection, which always has it.
//! - `mremap`: /init writes `before mremap MODE ADDR`, moves the mapping to
//!   a new address with `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`
//!   (`move_ptes()`; the VMA is copied, and `.open` takes the copy's
//!   reference to the page before `.close` drops the old VMA's), writes
//!   `mremap MODE NEWADDR`, and the module reads the moved PTE: every bit
//!   but soft-dirty, which the move sets on purpose, must come through.
//! - `devmem_fault`: device memory mapped as a GPU driver maps VRAM. At boot
//!   the module reserves the memtype of one 2 MiB chunk of the VGA BAR per
//!   mode (`memtype_reserve_io()`, what `arch_io_reserve_memtype_wc()` does
//!   for WC); /init maps `/sys/kernel/debug/patverify/devmem` at page offset
//!   N (mode N), whose `.mmap` sets `VM_PFNMAP | VM_IO` and leaves the VMA's
//!   protection alone, and touches it: the fault inserts the page with
//!   `vmf_insert_pfn_prot()` and the mode's protection, as TTM does, and
//!   `track_pfn_insert()` takes the cache bits from the reserved memtype.
//!   The module reads the installed PTE. A mode the kernel cannot give
//!   device memory is a `# SKIP` with the reason; so is a WT or WP mapping
//!   under Xen PV whose installed PTE is UC, as Xen's rule for a PV guest's
//!   MMIO predicts, with that PTE in the reason (any other entry is judged).
//! - `devmem_mprotect`: /init mprotect()s that mapping read-only and back
//!   (the entry read just before, as for `mprotect`); `change_protection()`
//!   runs `pte_modify()` with the VMA's plain protection; installed PTE
//!   again.
//! - `ram_fault`: RAM mapped as TTM maps a buffer in system memory. At boot
//!   the module allocates a page per mode and gives it the mode's memtype
//!   as `ttm_set_pages_caching()` does (`set_pages_array_wc()` for WC,
//!   `set_pages_array_uc()` for UC-; WB is RAM's own); /init maps
//!   `/sys/kernel/debug/patverify/ram` at page offset N and touches it, and
//!   the fault inserts the page with `vmf_insert_pfn_prot()` (the cache bits
//!   from `track_pfn_insert()`, from the page's memtype). A mode no
//!   `set_pages_array_*()` gives RAM (UC, WT, WP) is a `# SKIP`.
//! - `ram_mprotect`: /init mprotect()s that mapping read-only and back.
//! - `huge_pfn_fault`: the same device memory, 2 MiB at a time. /init maps
//!   `/sys/kernel/debug/patverify/huge_pfn` at offset N × 2 MiB (mode N),
//!   2 MiB-aligned; `.mmap` sets `VM_PFNMAP | VM_IO | VM_HUGEPAGE`, and the
//!   touch reaches `.huge_fault`, which inserts the whole chunk with
//!   `vmf_insert_pfn_pmd()` (the cache bits again from `track_pfn_insert()`,
//!   in the 4 KiB encoding, and the entry `pmd_mkhuge(pfn_t_pmd(pfn, prot))`).
//!   The module reads the installed PMD and decodes its cache bits in the
//!   2 MiB encoding (PAT at bit 12). `# SKIP` where the kernel has no 2 MiB
//!   PFN mappings (Xen PV, before 6.12).
//! - `huge_pfn_mprotect`: /init mprotect()s the 2 MiB mapping read-only and
//!   back (`change_huge_pmd()` → `pmd_modify()`); installed PMD again.
//! - `pte_modify_direct` (synthetic: no page table, no syscall): an entry
//!   built with `mk_pte()` at boot carrying its own cache mode, put through
//!   `pte_modify()` called directly with the protection a plain WB VMA gets
//!   back from `vma_set_page_prot()` — the computation `mprotect()` would do
//!   on a PTE that `vmf_insert_pfn_prot()` installed for a TTM buffer.
//! - `pat_index`: one row per PAT entry 0..7 rather than per mode: a shared
//!   read/write VMA whose `vm_page_prot` selects entry N (the PWT/PCD/PAT
//!   bits of N), put through `vma_set_page_prot()` directly, at boot; kept
//!   when the entry after is still N. This is every entry, including those
//!   the kernel itself never uses (under Xen UC sits at 3, 6 and 7; the
//!   kernel encodes UC as 3).
//!
//! Before each step /init drives (a fault, an `mprotect`, the `mremap`),
//! it writes `before PATH MODE ADDR` and the module reads the entry the
//! step starts from: a fault's is the empty slot (`pte_before=none`), and
//! the protection the fault asked for is a field of its own
//! (`prot_requested=`).
//!
//! The report is KTAP v1 in /sys/kernel/debug/patverify/results.
//!
//! One source for Linux 6.1 and 6.12: what differs between their `kernel`
//! crates is in `compat` (and in C, in helpers.c).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::bindings;
use kernel::prelude::*;

mod compat;
mod ffi;

use compat::{Bytes, Result, EINVAL, ENOENT};
use ffi::{CacheMode, ProtVal};

// 6.1's `module!` takes byte strings, 6.12's strings.
#[cfg(patverify_kernel_6_1)]
module! {
    type: PatVerify,
    name: b"patverify",
    author: b"patverify developers",
    description: b"Checks that x86 cache modes survive vma_set_page_prot(), faults and mprotect()",
    license: b"GPL",
}

#[cfg(not(patverify_kernel_6_1))]
module! {
    type: PatVerify,
    name: "patverify",
    author: "patverify developers",
    description: "Checks that x86 cache modes survive vma_set_page_prot(), faults and mprotect()",
    license: "GPL",
}

struct PatVerify {
    _dir: ffi::DebugfsDir,
}

impl kernel::Module for PatVerify {
    fn init(_module: &'static ThisModule) -> kernel::error::Result<Self> {
        set_up().map_err(compat::init_error)
    }
}

/// Measures the boot-time paths, reserves the device memory and publishes
/// the debugfs files.
fn set_up() -> Result<PatVerify> {
    let base = ffi::page_prot_for_flags(SHARED_RW);
    for mode in CacheMode::ALL {
        let before = base | ffi::cachemode_to_protval(mode);
        let after = ffi::vma_set_page_prot_on_fresh_vma(SHARED_RW, before);
        record(Path::VmaSetPageProt, mode, before, after);
        // mprotect() of a PTE that carries its own cache mode under a WB
        // VMA (TTM's vmf_insert_pfn_prot()): the VMA's recomputed
        // protection holds no cache bits, the entry's must survive.
        let (pte_before, pte_after) =
            ffi::pte_modify(before, ffi::vma_set_page_prot_on_fresh_vma(SHARED_RW, base))?;
        record(Path::PteModifyDirect, mode, pte_before, pte_after);
    }
    if let Some(why) = ffi::no_huge_pfn() {
        STATE.huge_pfn_skip.store(why as usize, Ordering::Release);
    }
    for (entry, slot) in STATE.pat_entries.iter().enumerate() {
        let before = base | pat_index_protval(entry);
        let after = ffi::vma_set_page_prot_on_fresh_vma(SHARED_RW, before);
        slot.before.store(before, Ordering::Relaxed);
        slot.after.store(after, Ordering::Relaxed);
        slot.measured.store(true, Ordering::Release);
    }
    reserve_device_memory();
    allocate_ram();
    let dir = ffi::DebugfsDir::create(b"patverify\0")?;
    dir.add_file(b"results\0", 0o444, &ffi::RESULTS_OPS)?;
    dir.add_file(b"probe\0", 0o200, &ffi::PROBE_OPS)?;
    dir.add_file(b"mmap\0", 0o600, &ffi::MMAP_OPS)?;
    dir.add_file(b"devmem\0", 0o600, &ffi::DEVMEM_OPS)?;
    dir.add_file(b"ram\0", 0o600, &ffi::RAM_OPS)?;
    dir.add_file(b"huge_pfn\0", 0o600, &ffi::HUGE_PFN_OPS)?;
    pr_info!("report in /sys/kernel/debug/patverify/results\n");
    Ok(PatVerify { _dir: dir })
}

/// A shared, read/write mapping: what a DRM buffer mmap looks like.
const SHARED_RW: usize = (bindings::VM_READ
    | bindings::VM_WRITE
    | bindings::VM_SHARED
    | bindings::VM_MAYREAD
    | bindings::VM_MAYWRITE
    | bindings::VM_MAYSHARE) as usize;

/// The paths through which a mode can be lost, in report order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    VmaSetPageProt = 0,
    MmapFault = 1,
    Mprotect = 2,
    Mremap = 3,
    DevmemFault = 4,
    DevmemMprotect = 5,
    RamFault = 6,
    RamMprotect = 7,
    HugePfnFault = 8,
    HugePfnMprotect = 9,
    PteModifyDirect = 10,
    /// Rows by PAT entry, not by mode (the last path).
    PatIndex = 11,
}

impl Path {
    const ALL: [Path; 12] = [
        Path::VmaSetPageProt,
        Path::MmapFault,
        Path::Mprotect,
        Path::Mremap,
        Path::DevmemFault,
        Path::DevmemMprotect,
        Path::RamFault,
        Path::RamMprotect,
        Path::HugePfnFault,
        Path::HugePfnMprotect,
        Path::PteModifyDirect,
        Path::PatIndex,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::VmaSetPageProt => "vma_set_page_prot",
            Path::MmapFault => "mmap_fault",
            Path::Mprotect => "mprotect",
            Path::Mremap => "mremap",
            Path::DevmemFault => "devmem_fault",
            Path::DevmemMprotect => "devmem_mprotect",
            Path::RamFault => "ram_fault",
            Path::RamMprotect => "ram_mprotect",
            Path::HugePfnFault => "huge_pfn_fault",
            Path::HugePfnMprotect => "huge_pfn_mprotect",
            Path::PteModifyDirect => "pte_modify_direct",
            Path::PatIndex => "pat_index",
        }
    }

    /// Where a step /init drives keeps the entry read just before it in
    /// `State::entry_before` (and a fault, what it asked for in
    /// `State::fault_requested`).
    fn guest_step_index(self) -> Option<usize> {
        match self {
            Path::MmapFault => Some(0),
            Path::DevmemFault => Some(1),
            Path::RamFault => Some(2),
            Path::HugePfnFault => Some(3),
            Path::Mprotect => Some(4),
            Path::DevmemMprotect => Some(5),
            Path::RamMprotect => Some(6),
            Path::HugePfnMprotect => Some(7),
            Path::Mremap => Some(8),
            _ => None,
        }
    }

    /// Whether the step installs the entry (a fault), rather than changing
    /// or moving one installed before.
    fn is_fault(self) -> bool {
        matches!(
            self,
            Path::MmapFault | Path::DevmemFault | Path::RamFault | Path::HugePfnFault
        )
    }

    /// Whether the step reads a 2 MiB entry (a PMD).
    fn is_2mib(self) -> bool {
        matches!(self, Path::HugePfnFault | Path::HugePfnMprotect)
    }

    fn from_name(name: &[u8]) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name().as_bytes() == name)
    }
}

/// One measurement: protection bits before and after the path.
///
/// For a step /init drives, `before` is the entry the page table held just
/// before it (`NO_ENTRY`: none) and `requested` the protection a fault
/// asked the kernel for (0: not a fault); for a path measured at boot,
/// `before` is the value handed to the kernel function.
struct Slot {
    before: AtomicUsize,
    requested: AtomicUsize,
    after: AtomicUsize,
    /// `after` in the encoding `protval_to_cachemode` reads (the 4 KiB
    /// one; differs from `after` only for 2 MiB entries).
    decoded: AtomicUsize,
    measured: AtomicBool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        before: AtomicUsize::new(0),
        requested: AtomicUsize::new(0),
        after: AtomicUsize::new(0),
        decoded: AtomicUsize::new(0),
        measured: AtomicBool::new(false),
    };
}

const MODE_COUNT: usize = CacheMode::ALL.len();
/// The paths with a row per mode: all but `pat_index`.
const MODE_PATH_COUNT: usize = Path::ALL.len() - 1;
/// The IA32_PAT entries: `pat_index` has a row for each.
const PAT_ENTRIES: usize = 8;
/// The steps /init drives: the four faults, then the `mprotect`s and the
/// `mremap` (`Path::guest_step_index`).
const GUEST_STEPS: usize = 9;
/// The faults among them (the first `FAULTS` indices).
const FAULTS: usize = 4;
/// `State::entry_before` of a step whose slot the page table left empty:
/// no flag bits can be all ones (the PFN bits are masked out).
const NO_ENTRY: ProtVal = usize::MAX;

/// Everything the module measured. It lives in a static because the debugfs
/// and VMA callbacks receive no pointer of ours to find it through (the
/// files are created without private data, and 6.12's `kernel` crate has
/// no debugfs abstraction to carry one); atomics make it shareable.
struct State {
    slots: [[Slot; MODE_COUNT]; MODE_PATH_COUNT],
    /// The `pat_index` rows, by PAT entry.
    pat_entries: [Slot; PAT_ENTRIES],
    /// Why this kernel has no 2 MiB PFN mappings (`ffi::NoHugePfn`), 0 if
    /// it has.
    huge_pfn_skip: AtomicUsize,
    /// Per fault (`Path::guest_step_index`) and mode: the protection the
    /// fault asked the kernel for. `mmap_fault`: what `.mmap` set, before
    /// the kernel applied the VMA's flags; the PFN faults: what they pass
    /// to `vmf_insert_pfn_prot()` (in the 4 KiB encoding; the 2 MiB fault's
    /// cache bits are the ones `track_pfn_insert()` takes from the memtype
    /// reserved for the chunk).
    fault_requested: [[AtomicUsize; MODE_COUNT]; FAULTS],
    /// Per mode: the device memory (physical address of one 2 MiB chunk of
    /// the VGA BAR) whose memtype was reserved for it, 0 if none.
    devmem: [AtomicU64; MODE_COUNT],
    /// Per mode: why there is no device memory (`NoDevmem` as a number).
    devmem_skip: [AtomicUsize; MODE_COUNT],
    /// Per mode: the page frame of the RAM page the module allocated and
    /// gave the mode's memtype, 0 if none.
    ram: [AtomicUsize; MODE_COUNT],
    /// Per mode: why there is no RAM page (a negative errno), 0 if there is.
    ram_skip: [AtomicUsize; MODE_COUNT],
    /// Per step /init drives (`Path::guest_step_index`) and mode: the entry
    /// read by `before PATH MODE ADDR` just before /init ran the step
    /// (`NO_ENTRY`: the slot was empty), 0 if not read.
    entry_before: [[AtomicUsize; MODE_COUNT]; GUEST_STEPS],
}

impl State {
    const fn new() -> Self {
        const NOTHING: AtomicUsize = AtomicUsize::new(0);
        const NO_MEMORY: AtomicU64 = AtomicU64::new(0);
        const EMPTY_ROW: [Slot; MODE_COUNT] = [Slot::EMPTY; MODE_COUNT];
        const NOT_READ: [AtomicUsize; MODE_COUNT] = [NOTHING; MODE_COUNT];
        State {
            slots: [EMPTY_ROW; MODE_PATH_COUNT],
            pat_entries: [Slot::EMPTY; PAT_ENTRIES],
            huge_pfn_skip: AtomicUsize::new(0),
            fault_requested: [NOT_READ; FAULTS],
            devmem: [NO_MEMORY; MODE_COUNT],
            devmem_skip: [NOTHING; MODE_COUNT],
            ram: [NOTHING; MODE_COUNT],
            ram_skip: [NOTHING; MODE_COUNT],
            entry_before: [NOT_READ; GUEST_STEPS],
        }
    }

    fn slot(&self, path: Path, mode: CacheMode) -> &Slot {
        &self.slots[path as usize][mode as usize]
    }
}

static STATE: State = State::new();

fn record(path: Path, mode: CacheMode, before: ProtVal, after: ProtVal) {
    record_decoded(path, mode, before, after, after)
}

fn record_decoded(path: Path, mode: CacheMode, before: ProtVal, after: ProtVal, decoded: ProtVal) {
    let slot = STATE.slot(path, mode);
    let requested = match path.guest_step_index() {
        Some(step) if path.is_fault() => {
            STATE.fault_requested[step][mode as usize].load(Ordering::Relaxed)
        }
        _ => 0,
    };
    slot.requested.store(requested, Ordering::Relaxed);
    slot.before.store(before, Ordering::Relaxed);
    slot.after.store(after, Ordering::Relaxed);
    slot.decoded.store(decoded, Ordering::Relaxed);
    slot.measured.store(true, Ordering::Release);
}

/// Each mode's device memory: a 2 MiB chunk of the VGA BAR per mode, its
/// memtype reserved for the mode as a GPU driver reserves its aperture.
const DEVMEM_CHUNK: u64 = 2 << 20;

/// Why a mode has no device memory to map.
#[derive(Clone, Copy)]
enum NoDevmem {
    /// No VGA BAR (or one too small for a chunk per mode).
    NoBar = 1,
    /// The kernel refused the reservation.
    Refused = 2,
    /// The kernel granted another mode: `Granted + mode index`.
    Granted = 10,
}

/// Finds the VGA BAR and reserves one chunk per mode (at boot).
fn reserve_device_memory() {
    let skip = |mode: CacheMode, why: usize| {
        STATE.devmem_skip[mode as usize].store(why, Ordering::Release);
    };
    let (start, len) = match ffi::vga_bar() {
        Ok(bar) => bar,
        Err(_) => {
            CacheMode::ALL
                .into_iter()
                .for_each(|m| skip(m, NoDevmem::NoBar as usize));
            return;
        }
    };
    for mode in CacheMode::ALL {
        let chunk = start + mode as u64 * DEVMEM_CHUNK;
        if chunk + DEVMEM_CHUNK > start + len {
            skip(mode, NoDevmem::NoBar as usize);
            continue;
        }
        match ffi::reserve_memtype(chunk, DEVMEM_CHUNK, mode) {
            Ok(Some(granted)) if granted == mode => {
                STATE.devmem[mode as usize].store(chunk, Ordering::Release);
            }
            Ok(Some(granted)) => skip(mode, NoDevmem::Granted as usize + granted as usize),
            Ok(None) | Err(_) => skip(mode, NoDevmem::Refused as usize),
        }
    }
}

/// The device page reserved for `mode`, if any.
fn devmem_page(mode: CacheMode) -> Option<u64> {
    let page = STATE.devmem[mode as usize].load(Ordering::Acquire);
    (page != 0).then_some(page)
}

/// The protection a PFN fault (`path`) of `mode` inserts its page with:
/// the VMA's, plus the mode's cache bits (TTM's `ttm_io_prot()`); noted as
/// what the fault asked for. For the 2 MiB fault it is what
/// `vmf_insert_pfn_pmd()` gets: the VMA's, the cache bits put in by
/// `track_pfn_insert()` from the memtype reserved for the chunk, `mode`.
fn pfn_fault_prot(path: Path, mode: CacheMode, vm_page_prot: ProtVal) -> ProtVal {
    let prot = vm_page_prot | ffi::cachemode_to_protval(mode);
    note_requested(path, mode, prot);
    prot
}

/// Notes `prot` as what the fault `path` of `mode` asked the kernel for.
fn note_requested(path: Path, mode: CacheMode, prot: ProtVal) {
    if let Some(step) = path.guest_step_index().filter(|_| path.is_fault()) {
        STATE.fault_requested[step][mode as usize].store(prot, Ordering::Relaxed);
    }
}

/// The page frame of the memory a PFN fault (`path`) of `mode` inserts: the
/// device memory reserved for it, or its RAM page.
fn pfn_of(path: Path, mode: CacheMode) -> Option<usize> {
    match path {
        Path::DevmemFault | Path::HugePfnFault => {
            devmem_page(mode).map(|phys| (phys >> bindings::PAGE_SHIFT) as usize)
        }
        Path::RamFault => {
            let pfn = STATE.ram[mode as usize].load(Ordering::Acquire);
            (pfn != 0).then_some(pfn)
        }
        _ => None,
    }
}

/// Gives each mode a page of RAM with the mode's memtype, as TTM gives a
/// buffer's pages theirs (at boot); a mode no `set_pages_array_*()` gives
/// RAM, or a refusal, is noted with its errno.
fn allocate_ram() {
    for mode in CacheMode::ALL {
        match ffi::ram_page(mode) {
            Ok(pfn) => STATE.ram[mode as usize].store(pfn, Ordering::Release),
            Err(err) => {
                let errno = err.to_errno().unsigned_abs() as usize;
                STATE.ram_skip[mode as usize].store(errno, Ordering::Release);
            }
        }
    }
}

/// Why `mode` has no RAM page: the KTAP `# SKIP` reason.
fn write_ram_skip(out: &mut Ktap, mode: CacheMode, errno: usize) -> fmt::Result {
    if errno == bindings::EOPNOTSUPP as usize {
        return write!(
            out,
            "no set_pages_array_*() gives RAM the memtype {} (x86 has _wc, _uc for UC- and _wb; not representable)",
            mode.name()
        );
    }
    write!(
        out,
        "the kernel refused to give a RAM page the memtype {} (errno {errno})",
        mode.name()
    )
}

/// Whether this kernel maps device memory 2 MiB at a time (`huge_pfn`).
fn huge_pfn_supported() -> bool {
    STATE.huge_pfn_skip.load(Ordering::Acquire) == 0
}

/// Whether `mode` has no device memory (its devmem rows are skipped).
fn devmem_skipped(mode: CacheMode) -> bool {
    STATE.devmem_skip[mode as usize].load(Ordering::Acquire) != 0
}

/// Why `mode` has no device memory: the KTAP `# SKIP` reason.
fn write_devmem_skip(out: &mut Ktap, mode: CacheMode) -> fmt::Result {
    let why = STATE.devmem_skip[mode as usize].load(Ordering::Acquire);
    match why {
        1 => write!(
            out,
            "no VGA memory BAR to map (QEMU -vga std, PCI 1234:1111)"
        ),
        2 => write!(
            out,
            "the kernel refused to reserve {} for the BAR",
            mode.name()
        ),
        _ => {
            let granted = CacheMode::from_index(why.saturating_sub(NoDevmem::Granted as usize));
            write!(
                out,
                "the kernel reserves this device memory as {}, not {} (not representable)",
                mode_name(granted),
                mode.name()
            )
        }
    }
}

/// Under Xen PV, the entry the devmem fault of `mode` installed, when it is
/// what Xen's rule for a PV guest's MMIO predicts (since XSA-154 Xen turns a
/// WT or WP MMIO PTE UC as it is installed, whatever the kernel asked): the
/// mode is not representable there, observed. Any other entry is judged.
fn xen_uncached_mmio(mode: CacheMode) -> Option<ProtVal> {
    if !ffi::xen_pv() || !matches!(mode, CacheMode::Wt | CacheMode::Wp) {
        return None;
    }
    let fault = STATE.slot(Path::DevmemFault, mode);
    if !fault.measured.load(Ordering::Acquire) {
        return None;
    }
    let installed = fault.after.load(Ordering::Relaxed);
    (ffi::protval_to_cachemode(installed) == Some(CacheMode::Uc)).then_some(installed)
}

/// What the `mmap` file's `.mmap` sets: the base protection of the VMA's
/// flags plus the mode's cache bits, as `pgprot_writecombine()` and friends do.
fn mmap_page_prot(mode: CacheMode, vm_flags: usize) -> ProtVal {
    let prot = ffi::page_prot_for_flags(vm_flags) | ffi::cachemode_to_protval(mode);
    note_requested(Path::MmapFault, mode, prot);
    prot
}

/// Parses "ADDR" in hex (with or without 0x).
fn parse_hex(text: &[u8]) -> Option<usize> {
    let text = text.strip_prefix(b"0x").unwrap_or(text);
    let text = core::str::from_utf8(text).ok()?;
    usize::from_str_radix(text, 16).ok()
}

/// `probe` command from /init: "PATH MODE ADDR", after it touched (or
/// mprotect()ed, or moved) its mapping of mode MODE at ADDR; "before PATH
/// MODE ADDR" just before it runs the step PATH on it (a fault's slot is
/// read as well: empty, as a rule).
/// "oops" oopses the writing task instead (failure injection for the
/// harness's tests).
fn probe_command(command: &[u8]) -> Result {
    let mut words = command
        .split(|b| b.is_ascii_whitespace() || *b == 0)
        .filter(|w| !w.is_empty());
    let first = words.next().ok_or(EINVAL)?;
    if first == b"oops" && words.clone().next().is_none() {
        ffi::inject_oops();
        return Ok(());
    }
    let before = first == b"before";
    let path = if before { words.next() } else { Some(first) };
    let (path, mode, addr) = match (path, words.next(), words.next()) {
        (Some(path), Some(mode), Some(addr)) => (path, mode, addr),
        _ => return Err(EINVAL),
    };
    let path = Path::from_name(path).ok_or(EINVAL)?;
    let mode = CacheMode::ALL
        .into_iter()
        .find(|m| m.name().as_bytes() == mode)
        .ok_or(EINVAL)?;
    let addr = parse_hex(addr).ok_or(EINVAL)?;
    // A 2 MiB mapping is read at its PMD, whose cache bits are in the
    // large-page encoding; `decoded` is the entry in the 4 KiB encoding.
    let step = path.guest_step_index().ok_or(EINVAL)?;
    let read = if path.is_2mib() {
        ffi::installed_pmd_flags(addr)
    } else {
        ffi::installed_pte_flags(addr)
    };
    if before {
        // Only a fault may start from an empty slot.
        let entry = match read {
            Err(err) if path.is_fault() && err == ENOENT => NO_ENTRY,
            other => other?,
        };
        STATE.entry_before[step][mode as usize].store(entry, Ordering::Relaxed);
        return Ok(());
    }
    let installed = read?;
    // A 2 MiB entry's cache bits are in the large-page encoding; `decoded`
    // is the entry in the 4 KiB one.
    let decoded = if path.is_2mib() {
        ffi::protval_large_to_4k(installed)
    } else {
        installed
    };
    // A step whose entry before was not read is refused.
    let before = STATE.entry_before[step][mode as usize].load(Ordering::Relaxed);
    if before == 0 {
        return Err(EINVAL);
    }
    record_decoded(path, mode, before, installed, decoded);
    Ok(())
}

/// The PTE bits that select the PAT entry of a 4 KiB page.
const PAT_INDEX_BITS: [ProtVal; 3] = [
    1 << bindings::_PAGE_BIT_PWT,
    1 << bindings::_PAGE_BIT_PCD,
    1 << bindings::_PAGE_BIT_PAT,
];

/// The protection bits selecting PAT entry `index` (0..8).
fn pat_index_protval(index: usize) -> ProtVal {
    PAT_INDEX_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| index & (1 << bit) != 0)
        .fold(0, |acc, (_, bits)| acc | bits)
}

/// The PAT entry (0..8) that 4 KiB protection bits select.
fn pat_entry_of(prot: ProtVal) -> usize {
    PAT_INDEX_BITS
        .iter()
        .enumerate()
        .filter(|(_, bits)| prot & **bits != 0)
        .fold(0, |acc, (bit, _)| acc | (1 << bit))
}

struct Ktap(Bytes);

impl Write for Ktap {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

fn mode_name(mode: Option<CacheMode>) -> &'static str {
    mode.map_or("?", CacheMode::name)
}

/// The KTAP v1 report of every path and mode (unmeasured ones say so).
fn render_report() -> Result<Bytes> {
    let mut out = Ktap(Bytes::new());
    write_report(&mut out).map_err(|_| compat::ENOMEM)?;
    Ok(out.0)
}

fn write_report(out: &mut Ktap) -> fmt::Result {
    writeln!(out, "KTAP version 1")?;
    // The layout as the kernel decodes it: PAT entry i is what
    // pgprot2cachemode() says the index bits of entry i select.
    write!(out, "# patverify: pat_layout=")?;
    for index in 0..8 {
        let sep = if index == 0 { "" } else { " " };
        write!(
            out,
            "{sep}{}",
            mode_name(ffi::protval_to_cachemode(pat_index_protval(index)))
        )?;
    }
    writeln!(out)?;
    match ffi::read_pat_msr() {
        Ok(msr) => writeln!(out, "# patverify: pat_msr=0x{msr:016x}")?,
        Err(err) => writeln!(out, "# patverify: pat_msr=unreadable ({err:?})")?,
    }
    // The flag of each bit the masks must keep, by name, so that the host
    // can check every one of them between a step's entry before and after.
    write!(out, "# patverify: kept_bits=")?;
    for (index, (name, flag)) in ffi::KEPT_BITS.iter().zip(ffi::kept_bit_flags()).enumerate() {
        let sep = if index == 0 { "" } else { " " };
        write!(out, "{sep}{name}:0x{flag:x}")?;
    }
    writeln!(out)?;
    writeln!(out, "1..{}", MODE_PATH_COUNT * MODE_COUNT + PAT_ENTRIES)?;
    let mut number = 0;
    for path in Path::ALL {
        if path == Path::PatIndex {
            write_pat_index_rows(out, &mut number)?;
            continue;
        }
        for mode in CacheMode::ALL {
            number += 1;
            write_mode_row(out, number, path, mode)?;
        }
    }
    Ok(())
}

/// The row of `path` for `mode` (test number `number`).
fn write_mode_row(out: &mut Ktap, number: usize, path: Path, mode: CacheMode) -> fmt::Result {
    let slot = STATE.slot(path, mode);
    // A mode no PAT entry holds (a kernel that left the PAT at its power-on
    // value has no WC and no WP) cannot be requested: not a loss.
    if ffi::protval_to_cachemode(ffi::cachemode_to_protval(mode)) != Some(mode) {
        let (path, name) = (path.name(), mode.name());
        let why = "no PAT entry of this kernel's layout holds the mode (not representable)";
        return writeln!(out, "ok {number} {path}.{name} # SKIP {why}");
    }
    let huge = path.is_2mib();
    if let (true, Some(why)) = (
        huge,
        ffi::NoHugePfn::from_index(STATE.huge_pfn_skip.load(Ordering::Acquire)),
    ) {
        let (path, name) = (path.name(), mode.name());
        return writeln!(out, "ok {number} {path}.{name} # SKIP {}", why.reason());
    }
    // The 2 MiB rows map the same device memory as the devmem ones.
    let devmem = huge || matches!(path, Path::DevmemFault | Path::DevmemMprotect);
    if devmem && devmem_skipped(mode) {
        write!(out, "ok {number} {}.{} # SKIP ", path.name(), mode.name())?;
        write_devmem_skip(out, mode)?;
        return writeln!(out);
    }
    let ram_skip = STATE.ram_skip[mode as usize].load(Ordering::Acquire);
    if matches!(path, Path::RamFault | Path::RamMprotect) && ram_skip != 0 {
        write!(out, "ok {number} {}.{} # SKIP ", path.name(), mode.name())?;
        write_ram_skip(out, mode, ram_skip)?;
        return writeln!(out);
    }
    if let (true, Some(installed)) = (devmem && !huge, xen_uncached_mmio(mode)) {
        write!(out, "ok {number} {}.{} # SKIP ", path.name(), mode.name())?;
        write!(
            out,
            "Xen PV maps device memory uncached: the {} ",
            mode.name()
        )?;
        return writeln!(
            out,
            "MMIO PTE was installed as UC (devmem_fault pte_after=0x{installed:016x}; not representable)"
        );
    }
    let (path, name) = (path.name(), mode.name());
    if !slot.measured.load(Ordering::Acquire) {
        write!(out, "# {path}.{name}: requested={name} ")?;
        writeln!(out, "pte_before=none pte_after=none observed=none")?;
        return writeln!(out, "not ok {number} {path}.{name} # not measured");
    }
    let (before, after, asked) = (
        slot.before.load(Ordering::Relaxed),
        slot.after.load(Ordering::Relaxed),
        slot.requested.load(Ordering::Relaxed),
    );
    let observed = ffi::protval_to_cachemode(slot.decoded.load(Ordering::Relaxed));
    write!(out, "# {path}.{name}: requested={name} ")?;
    if asked != 0 {
        write!(out, "prot_requested=0x{asked:016x} ")?;
    }
    if before == NO_ENTRY {
        write!(out, "pte_before=none ")?;
    } else {
        write!(out, "pte_before=0x{before:016x} ")?;
    }
    write!(out, "pte_after=0x{after:016x} ")?;
    writeln!(out, "observed={}", mode_name(observed))?;
    let status = if observed == Some(mode) {
        "ok"
    } else {
        "not ok"
    };
    writeln!(out, "{status} {number} {path}.{name}")
}

/// The `pat_index` rows: entry N requested, the entry (and its mode) after.
fn write_pat_index_rows(out: &mut Ktap, number: &mut usize) -> fmt::Result {
    let path = Path::PatIndex.name();
    for (entry, slot) in STATE.pat_entries.iter().enumerate() {
        *number += 1;
        let (before, after) = (
            slot.before.load(Ordering::Relaxed),
            slot.after.load(Ordering::Relaxed),
        );
        let requested = mode_name(ffi::protval_to_cachemode(before));
        let observed = mode_name(ffi::protval_to_cachemode(after));
        let entry_after = pat_entry_of(after);
        write!(
            out,
            "# {path}.{entry}: entry={entry} requested={requested} "
        )?;
        write!(out, "pte_before=0x{before:016x} pte_after=0x{after:016x} ")?;
        writeln!(out, "entry_after={entry_after} observed={observed}")?;
        let status = if entry_after == entry { "ok" } else { "not ok" };
        writeln!(out, "{status} {number} {path}.{entry}")?;
    }
    Ok(())
}
