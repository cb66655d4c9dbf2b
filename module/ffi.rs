// SPDX-License-Identifier: GPL-2.0

//! The module's whole unsafe surface: safe wrappers around the C functions
//! it calls and the C callbacks (file and VMA operations) it provides.
//! Neither 6.1's nor 6.12's `kernel` crate has abstractions for VMAs, page
//! tables or debugfs, so they are built here on `kernel::bindings` (and
//! helpers.c, for what differs between the two); the rest of the module is
//! safe.

use crate::compat::{
    c_char, c_int, c_ulong, c_void, from_err_ptr, to_result, Result, EINVAL, ENODEV, ENOENT, ENOMEM,
};
use core::ptr;
use kernel::bindings;

const PAGE_SIZE: usize = 1 << bindings::PAGE_SHIFT;
const PAGE_MASK: usize = !(PAGE_SIZE - 1);

/// Raw x86 page protection bits (`pgprotval_t`).
pub(crate) type ProtVal = usize;

/// The physical-address bits of an x86-64 PTE (PTE_PFN_MASK for 52-bit
/// physical addresses); everything else is a flag.
const PTE_PFN_MASK: ProtVal = 0x000f_ffff_ffff_f000;

/// x86 page cache modes, numbered as the kernel's `enum page_cache_mode`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheMode {
    Wb = 0,
    Wc = 1,
    UcMinus = 2,
    Uc = 3,
    Wt = 4,
    Wp = 5,
}

impl CacheMode {
    pub(crate) const ALL: [CacheMode; 6] = [
        CacheMode::Wb,
        CacheMode::Wc,
        CacheMode::UcMinus,
        CacheMode::Uc,
        CacheMode::Wt,
        CacheMode::Wp,
    ];

    /// The name the harness and the report use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CacheMode::Wb => "WB",
            CacheMode::Wc => "WC",
            CacheMode::UcMinus => "UC-",
            CacheMode::Uc => "UC",
            CacheMode::Wt => "WT",
            CacheMode::Wp => "WP",
        }
    }

    pub(crate) fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    fn from_raw(raw: bindings::page_cache_mode) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|mode| *mode as bindings::page_cache_mode == raw)
    }
}

/// The protection bits the kernel uses to request `mode` (its own
/// `__cachemode2pte_tbl`, which follows the PAT layout it runs with).
pub(crate) fn cachemode_to_protval(mode: CacheMode) -> ProtVal {
    // SAFETY: `cachemode2protval` only indexes a static table, and `mode` is a
    // valid `enum page_cache_mode` value.
    unsafe { bindings::cachemode2protval(mode as bindings::page_cache_mode) as ProtVal }
}

/// The cache mode the kernel decodes from protection bits, `None` if the
/// kernel returned a value outside `enum page_cache_mode`.
pub(crate) fn protval_to_cachemode(prot: ProtVal) -> Option<CacheMode> {
    // SAFETY: `pgprot2cachemode` only reads a static table.
    let raw = unsafe { bindings::pgprot2cachemode(pgprot(prot)) };
    CacheMode::from_raw(raw)
}

/// The base protection of a mapping with these `vm_flags`.
pub(crate) fn page_prot_for_flags(vm_flags: usize) -> ProtVal {
    // SAFETY: `vm_get_page_prot` only reads a static table.
    protval(unsafe { bindings::vm_get_page_prot(vm_flags as _) })
}

/// `pgprot_t` from bits: `pgprotval_t` (`unsigned long`) is `u64` in 6.1's
/// bindings and `usize` in 6.12's, hence the casts here and in `protval`.
fn pgprot(prot: ProtVal) -> bindings::pgprot_t {
    bindings::pgprot_t { pgprot: prot as _ }
}

fn protval(prot: bindings::pgprot_t) -> ProtVal {
    prot.pgprot as ProtVal
}

/// Runs `vma_set_page_prot()` on a fresh, unmapped VMA with `vm_flags` and
/// `vm_page_prot = prot`, as `mmap_region()` does after a driver's `.mmap`,
/// and returns the VMA's resulting `vm_page_prot`.
pub(crate) fn vma_set_page_prot_on_fresh_vma(vm_flags: usize, prot: ProtVal) -> ProtVal {
    // SAFETY: `vm_area_struct` is a plain C struct for which all-zero bytes are
    // valid: null pointers (no mm, no file, no vm_ops) and zero integers.
    let mut vma: bindings::vm_area_struct = unsafe { core::mem::zeroed() };
    // SAFETY: `vma` is ours alone and not yet visible to anyone.
    unsafe { bindings::patverify_vm_flags_init(&mut vma, vm_flags as c_ulong) };
    vma.vm_page_prot = pgprot(prot);
    // SAFETY: `vma` is a valid, exclusively owned VMA. With no file, no
    // vm_ops and no mm, `vma_set_page_prot()` only reads its flags and
    // protection and writes `vm_page_prot`; it does not keep the pointer.
    unsafe { bindings::vma_set_page_prot(&mut vma) };
    protval(vma.vm_page_prot)
}

/// The raw IA32_PAT MSR as this kernel reads it (through paravirt under Xen).
pub(crate) fn read_pat_msr() -> Result<u64> {
    let mut value: u64 = 0;
    // SAFETY: `value` is a valid, writable u64 for the duration of the call.
    to_result(unsafe { bindings::patverify_read_pat_msr(&mut value) })?;
    Ok(value)
}

/// The bits the protection-change masks keep beside the PFN and the cache
/// bits, by the names the report gives them (the order helpers.c fills).
pub(crate) const KEPT_BITS: [&str; 8] = [
    "accessed",
    "dirty",
    "saved_dirty",
    "special",
    "uffd_wp",
    "soft_dirty",
    "devmap",
    "pse",
];

/// Each of [`KEPT_BITS`]' flag in this kernel (0: no such bit here).
pub(crate) fn kept_bit_flags() -> [u64; KEPT_BITS.len()] {
    let mut flags = [0u64; KEPT_BITS.len()];
    // SAFETY: `flags` is a writable array of as many u64 as the helper fills.
    unsafe { bindings::patverify_kept_bits(flags.as_mut_ptr()) };
    flags
}

/// Oopses the calling task on purpose (the harness's oops test); does not
/// return to it.
pub(crate) fn inject_oops() {
    // SAFETY: the helper touches no memory of ours: its NULL store faults,
    // and the oops kills the calling task, which holds no lock at this point.
    unsafe { bindings::patverify_inject_oops() };
}

/// What mprotect() does to a PTE installed with cache protection `prot`
/// under a VMA whose protection becomes `newprot`: `pte_modify()` (see
/// helpers.c). Returns the entry's flags before and after.
pub(crate) fn pte_modify(prot: ProtVal, newprot: ProtVal) -> Result<(ProtVal, ProtVal)> {
    let (mut before, mut after): (ProtVal, ProtVal) = (0, 0);
    // SAFETY: both out-pointers are valid and writable for the duration of
    // the call; the helper frees the page it allocates before returning.
    to_result(unsafe {
        bindings::patverify_pte_modify(
            prot as c_ulong,
            newprot as c_ulong,
            ptr::addr_of_mut!(before).cast(),
            ptr::addr_of_mut!(after).cast(),
        )
    })?;
    Ok((before, after))
}

/// Why a kernel has no 2 MiB PFN mappings to measure.
#[derive(Clone, Copy)]
pub(crate) enum NoHugePfn {
    XenPv = 1,
    NoPse = 2,
    /// Before 6.12 the fault path calls `.huge_fault` only for DAX and
    /// anonymous memory, never for a driver's PFN map.
    NoHugePfnmap = 3,
    NoThp = 4,
}

impl NoHugePfn {
    pub(crate) fn from_index(index: usize) -> Option<Self> {
        [Self::XenPv, Self::NoPse, Self::NoHugePfnmap, Self::NoThp]
            .into_iter()
            .find(|why| *why as usize == index)
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::XenPv => "Xen PV has no 2 MiB pages",
            Self::NoPse => "the CPU has no PSE (2 MiB pages)",
            Self::NoHugePfnmap => {
                "before 6.12 the fault path calls .huge_fault only for DAX and anonymous memory (no 2 MiB PFN maps)"
            }
            Self::NoThp => "the kernel is built without CONFIG_TRANSPARENT_HUGEPAGE",
        }
    }
}

/// Why this kernel cannot map device memory 2 MiB at a time, if it cannot.
pub(crate) fn no_huge_pfn() -> Option<NoHugePfn> {
    // SAFETY: the helper only reads boot-time flags.
    NoHugePfn::from_index(unsafe { bindings::patverify_no_huge_pfn() } as usize)
}

/// 2 MiB-entry protection bits (PAT at bit 12) in the 4 KiB encoding (PAT
/// at bit 7, where a PMD has PSE), as `pgprot2cachemode()` reads them.
pub(crate) fn protval_large_to_4k(prot: ProtVal) -> ProtVal {
    // SAFETY: pure bit arithmetic.
    unsafe { bindings::patverify_protval_large_2_4k(prot as c_ulong) as ProtVal }
}

/// The flag bits of the 2 MiB entry (PMD) installed in the current
/// process's page table for `addr` (the PFN masked out); ENOENT when
/// nothing is mapped there, EXDEV when it is not a 2 MiB entry.
pub(crate) fn installed_pmd_flags(addr: usize) -> Result<ProtVal> {
    // SAFETY: `current` is always valid in process context.
    let mm = unsafe { bindings::patverify_current_mm() };
    if mm.is_null() {
        return Err(EINVAL);
    }
    let mut flags: c_ulong = 0;
    // SAFETY: `mm` is the live mm of the current task; the helper walks its
    // page table under the mmap lock; `flags` is a valid out-pointer.
    to_result(unsafe { bindings::patverify_installed_pmd(mm, addr as c_ulong, &mut flags) })?;
    Ok(flags as ProtVal)
}

struct PteSlot {
    value: ProtVal,
    found: bool,
}

/// `pte_fn_t` for `installed_pte_flags`: copies the one PTE it is called for.
///
/// # Safety
///
/// `pte` must point to a mapped PTE kept stable by the caller's locks, and
/// `data` to a `PteSlot` that nothing else accesses during the call, as
/// `apply_to_existing_page_range()` guarantees for `installed_pte_flags`.
unsafe extern "C" fn read_one_pte(
    pte: *mut bindings::pte_t,
    _addr: c_ulong,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `apply_to_existing_page_range()` passes a mapped, locked PTE and
    // the `PteSlot` that `installed_pte_flags` gave it.
    let (entry, slot) = unsafe { (ptr::read_volatile(pte), &mut *data.cast::<PteSlot>()) };
    slot.value = entry.pte as ProtVal;
    slot.found = true;
    0
}

/// The flag bits of the PTE installed in the current process's page table
/// for `addr` (the PFN masked out), read by walking the page table.
pub(crate) fn installed_pte_flags(addr: usize) -> Result<ProtVal> {
    // SAFETY: `current` is always valid in process context.
    let mm = unsafe { bindings::patverify_current_mm() };
    if mm.is_null() {
        return Err(EINVAL);
    }
    let mut slot = PteSlot {
        value: 0,
        found: false,
    };
    // SAFETY: `mm` is the live mm of the current task; the page table is
    // walked under its mmap lock, and `slot` outlives the walk.
    let ret = unsafe {
        bindings::patverify_mmap_read_lock(mm);
        let ret = bindings::apply_to_existing_page_range(
            mm,
            (addr & PAGE_MASK) as c_ulong,
            PAGE_SIZE as c_ulong,
            Some(read_one_pte),
            ptr::addr_of_mut!(slot).cast(),
        );
        bindings::patverify_mmap_read_unlock(mm);
        ret
    };
    to_result(ret)?;
    if !slot.found {
        return Err(ENOENT);
    }
    Ok(slot.value & !PTE_PFN_MASK)
}

/// Static `file_operations`, shareable between threads.
pub(crate) struct FileOps(bindings::file_operations);
// SAFETY: the table is immutable and only holds function pointers.
unsafe impl Sync for FileOps {}

struct VmOps(bindings::vm_operations_struct);
// SAFETY: the table is immutable and only holds function pointers.
unsafe impl Sync for VmOps {}

// All-zero tables (`mem::zeroed` is not `const` in rustc 1.63, 6.1's).
// SAFETY: all-zero bytes are a valid table: every callback is `None`, every
// other field zero.
const NO_FILE_OPS: bindings::file_operations =
    unsafe { core::mem::transmute([0u8; core::mem::size_of::<bindings::file_operations>()]) };
// SAFETY: as above.
const NO_VM_OPS: bindings::vm_operations_struct =
    unsafe { core::mem::transmute([0u8; core::mem::size_of::<bindings::vm_operations_struct>()]) };

/// `results`: reading renders the KTAP report (`crate::render_report`).
pub(crate) static RESULTS_OPS: FileOps = FileOps(bindings::file_operations {
    read: Some(results_read),
    ..NO_FILE_OPS
});
/// `probe`: each write is one command for `crate::probe_command`.
pub(crate) static PROBE_OPS: FileOps = FileOps(bindings::file_operations {
    write: Some(probe_write),
    ..NO_FILE_OPS
});
/// `mmap`: a driver-style mapping; the page offset picks the cache mode.
pub(crate) static MMAP_OPS: FileOps = FileOps(bindings::file_operations {
    mmap: Some(mmap),
    ..NO_FILE_OPS
});
static MAPPING_VM_OPS: VmOps = VmOps(bindings::vm_operations_struct {
    open: Some(open),
    fault: Some(fault),
    close: Some(close),
    ..NO_VM_OPS
});
/// `devmem`: device memory mapped as a GPU driver maps VRAM; the page
/// offset picks the cache mode.
pub(crate) static DEVMEM_OPS: FileOps = FileOps(bindings::file_operations {
    mmap: Some(devmem_mmap),
    ..NO_FILE_OPS
});
static DEVMEM_VM_OPS: VmOps = VmOps(bindings::vm_operations_struct {
    fault: Some(devmem_fault),
    ..NO_VM_OPS
});
/// `ram`: a page of RAM with the mode's memtype, mapped as TTM maps a
/// buffer in system memory; the page offset picks the cache mode.
pub(crate) static RAM_OPS: FileOps = FileOps(bindings::file_operations {
    mmap: Some(ram_mmap),
    ..NO_FILE_OPS
});
static RAM_VM_OPS: VmOps = VmOps(bindings::vm_operations_struct {
    fault: Some(ram_fault),
    ..NO_VM_OPS
});

/// `huge_pfn`: the devmem chunks mapped 2 MiB at a time; the offset
/// `mode × 2 MiB` picks the mode.
pub(crate) static HUGE_PFN_OPS: FileOps = FileOps(bindings::file_operations {
    mmap: Some(huge_pfn_mmap),
    ..NO_FILE_OPS
});
static HUGE_PFN_VM_OPS: VmOps = VmOps(bindings::vm_operations_struct {
    huge_fault: Some(huge_pfn_fault),
    fault: Some(huge_pfn_small_fault),
    ..NO_VM_OPS
});

/// Whether this kernel runs as a Xen PV guest (dom0 here).
pub(crate) fn xen_pv() -> bool {
    // SAFETY: the helper only reads a boot-time flag.
    unsafe { bindings::patverify_xen_pv() != 0 }
}

/// BAR 0 of QEMU's standard VGA: its physical start and length.
pub(crate) fn vga_bar() -> Result<(u64, u64)> {
    let (mut start, mut len) = (0u64, 0u64);
    // SAFETY: both out-pointers are valid and writable for the call.
    to_result(unsafe { bindings::patverify_vga_bar(&mut start, &mut len) })?;
    Ok((start, len))
}

/// Reserves the memory type of `size` bytes of device memory at `start` for
/// `mode`, as a GPU driver reserves its aperture; returns the mode the
/// kernel granted (`None`: a value outside `enum page_cache_mode`).
pub(crate) fn reserve_memtype(start: u64, size: u64, mode: CacheMode) -> Result<Option<CacheMode>> {
    let mut actual: c_int = 0;
    // SAFETY: `actual` is a valid out-pointer; the helper only records a
    // physical range in the kernel's memtype tree.
    to_result(unsafe {
        bindings::patverify_reserve_memtype(start, size, mode as c_int, &mut actual)
    })?;
    Ok(CacheMode::from_raw(actual as bindings::page_cache_mode))
}

/// A page of RAM with the memtype TTM gives a buffer of `mode`
/// (`set_pages_array_wc()` for WC and so on; WB is RAM's own): its page
/// frame. EOPNOTSUPP for a mode no such call gives RAM. The page is never
/// freed (the module is built in).
pub(crate) fn ram_page(mode: CacheMode) -> Result<usize> {
    let mut pfn: c_ulong = 0;
    // SAFETY: `pfn` is a valid out-pointer; the helper allocates a page of
    // its own and changes only that page's memtype.
    to_result(unsafe { bindings::patverify_ram_page(mode as c_int, &mut pfn) })?;
    Ok(pfn as usize)
}

/// `.read` of `results`.
///
/// # Safety
///
/// Called by the VFS only: `buf` is a user buffer of `count` bytes and `ppos`
/// a valid file position, as for any `file_operations::read`.
unsafe extern "C" fn results_read(
    _file: *mut bindings::file,
    buf: *mut c_char,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    let report = match crate::render_report() {
        Ok(report) => report,
        Err(err) => return err.to_errno() as isize,
    };
    let report = report.as_slice();
    // SAFETY: `buf`, `count` and `ppos` come from the VFS read call;
    // `report` is a live buffer of `report.len()` bytes.
    unsafe {
        bindings::simple_read_from_buffer(
            buf.cast(),
            count,
            ppos,
            report.as_ptr().cast(),
            report.len(),
        )
    }
}

/// `.write` of `probe`.
///
/// # Safety
///
/// Called by the VFS only: `buf` is a user buffer of `count` bytes (read
/// with `copy_from_user()`, which checks the access).
unsafe extern "C" fn probe_write(
    _file: *mut bindings::file,
    buf: *const c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    let mut command = [0u8; 128];
    let len = count.min(command.len());
    // SAFETY: `command` has room for `len` bytes; `copy_from_user()` checks
    // that the user range is readable.
    let missed = unsafe {
        bindings::patverify_copy_from_user(command.as_mut_ptr().cast(), buf.cast(), len as c_ulong)
    };
    if missed != 0 {
        return -(bindings::EFAULT as isize);
    }
    match crate::probe_command(&command[..len]) {
        Ok(()) => count as isize,
        Err(err) => err.to_errno() as isize,
    }
}

/// `.mmap` of `mmap`: sets up a driver-style mapping of one page.
///
/// # Safety
///
/// Called by `mmap_region()` only, with `vma` the VMA being set up, which
/// the caller holds exclusively (mmap write lock) until this returns.
unsafe extern "C" fn mmap(_file: *mut bindings::file, vma: *mut bindings::vm_area_struct) -> c_int {
    // SAFETY: the VFS passes the VMA being set up, which is ours until `.mmap` returns.
    let vma = unsafe { &mut *vma };
    let mode = match CacheMode::from_index(vma.vm_pgoff as usize) {
        Some(mode) => mode,
        None => return EINVAL.to_errno(),
    };
    // SAFETY: `vma` is live (see above).
    let vm_flags = unsafe { bindings::patverify_vma_flags(vma) } as usize;
    // SAFETY: allocating one zeroed page has no preconditions.
    let page = unsafe { bindings::patverify_alloc_zeroed_page() };
    if page.is_null() {
        return ENOMEM.to_errno();
    }
    vma.vm_page_prot = pgprot(crate::mmap_page_prot(mode, vm_flags));
    // No copy on fork, no growth by mremap. A VMA that mremap() moves or a
    // split makes is a copy sharing `vm_private_data`: `open` takes a
    // reference for each copy, `close` drops one per VMA.
    // SAFETY: `vma` is being set up under the mmap write lock, which
    // `vm_flags_set()` requires.
    unsafe {
        bindings::patverify_vm_flags_set(
            vma,
            (bindings::VM_DONTCOPY | bindings::VM_DONTEXPAND) as c_ulong,
        )
    };
    vma.vm_private_data = page.cast();
    vma.vm_ops = &MAPPING_VM_OPS.0;
    0
}

/// `.fault` of the mapping made by `mmap`.
///
/// # Safety
///
/// Called by the fault handler only, with `vmf` valid for a VMA whose
/// `vm_ops` is `MAPPING_VM_OPS` (so `vm_private_data` is the page `mmap`
/// allocated), under the mmap or VMA read lock.
unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: the fault handler gets a valid `vm_fault` for one of our VMAs.
    let vmf = unsafe { &mut *vmf };
    // SAFETY: as above; the VMA is live during the fault, and `mmap` stored
    // our page in it.
    let (page, first, pgoff) = unsafe {
        let vma = bindings::patverify_vmf_vma(vmf);
        (
            (*vma).vm_private_data.cast::<bindings::page>(),
            (*vma).vm_pgoff,
            bindings::patverify_vmf_pgoff(vmf),
        )
    };
    if pgoff != first {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS;
    }
    // SAFETY: `page` is the page allocated in `mmap`, alive until `close`;
    // the reference taken here belongs to the PTE the fault installs, which
    // the kernel builds from `vma->vm_page_prot`.
    unsafe { bindings::patverify_get_page(page) };
    vmf.page = page;
    0
}

/// `.open` of the mapping made by `mmap`: a copy of one of our VMAs (moved
/// by `mremap()`, or split off) shares its page; take a reference for it.
///
/// # Safety
///
/// Called by the kernel only, for a new VMA whose `vm_ops` is
/// `MAPPING_VM_OPS` and whose `vm_private_data` is the page of the VMA it
/// was copied from, which holds a reference to that page.
unsafe extern "C" fn open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the VMA copied from holds a reference, so the page is alive;
    // the reference taken here is dropped by this VMA's `close`.
    unsafe {
        let page = (*vma).vm_private_data.cast::<bindings::page>();
        if !page.is_null() {
            bindings::patverify_get_page(page);
        }
    }
}

/// `.close` of the mapping made by `mmap`: drops this VMA's reference to
/// the page (`mmap`'s, or the one `open` took for a copy).
///
/// # Safety
///
/// Called by the kernel only, once per VMA whose `vm_ops` is
/// `MAPPING_VM_OPS`. Each such VMA holds one reference (taken by `mmap` or
/// by `open`), dropped here exactly once.
unsafe extern "C" fn close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: `close` runs once for our VMA; it drops the reference it holds.
    unsafe {
        let page = (*vma).vm_private_data.cast::<bindings::page>();
        if !page.is_null() {
            bindings::patverify_put_page(page);
        }
    }
}

/// `.mmap` of `devmem`: one page of device memory, as a DRM/TTM driver maps
/// VRAM — `VM_PFNMAP | VM_IO`, the VMA's default protection left alone; the
/// fault inserts the page.
///
/// # Safety
///
/// Called by `mmap_region()` only, with `vma` the VMA being set up, which
/// the caller holds exclusively (mmap write lock) until this returns.
unsafe extern "C" fn devmem_mmap(
    _file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: the VFS passes the VMA being set up, which is ours until `.mmap` returns.
    let vma = unsafe { &mut *vma };
    let mode = CacheMode::from_index(vma.vm_pgoff as usize);
    let available = mode.and_then(crate::devmem_page).is_some();
    // SAFETY: as above.
    unsafe { device_mapping(vma, mode, available, PAGE_SIZE, 0, &DEVMEM_VM_OPS) }
}

/// `.mmap` of `ram`: the mode's RAM page, mapped as TTM maps a buffer in
/// system memory (`VM_PFNMAP | VM_IO`, the fault inserts the page).
///
/// # Safety
///
/// Called by `mmap_region()` only, with `vma` the VMA being set up, which
/// the caller holds exclusively (mmap write lock) until this returns.
unsafe extern "C" fn ram_mmap(
    _file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: the VFS passes the VMA being set up, which is ours until `.mmap` returns.
    let vma = unsafe { &mut *vma };
    let mode = CacheMode::from_index(vma.vm_pgoff as usize);
    let available = mode
        .and_then(|mode| crate::pfn_of(crate::Path::RamFault, mode))
        .is_some();
    // SAFETY: as above.
    unsafe { device_mapping(vma, mode, available, PAGE_SIZE, 0, &RAM_VM_OPS) }
}

/// Sets up `vma` as a mapping of device memory the way a DRM/TTM driver
/// does: `VM_PFNMAP | VM_IO` (plus `extra_flags`), the VMA's default
/// protection left alone, `ops` to fault it in. Refuses (EINVAL) a `mode`
/// that is no mode, a private mapping (a COW mapping, on which the
/// `vmf_insert_pfn*()` functions BUG()) and any size but `size`; ENODEV
/// when nothing of this kind is `available` (the report says why: a SKIP).
///
/// # Safety
///
/// `vma` is the VMA `mmap_region()` is setting up, held exclusively (mmap
/// write lock) by the caller.
unsafe fn device_mapping(
    vma: &mut bindings::vm_area_struct,
    mode: Option<CacheMode>,
    available: bool,
    size: usize,
    extra_flags: u64,
    ops: &'static VmOps,
) -> c_int {
    if mode.is_none() {
        return EINVAL.to_errno();
    }
    if !available {
        return ENODEV.to_errno();
    }
    // SAFETY: `vma` is live (the caller's contract).
    let (vm_flags, vma_size) = unsafe {
        (
            bindings::patverify_vma_flags(vma),
            bindings::patverify_vma_size(vma),
        )
    };
    let shared = vm_flags & bindings::VM_SHARED as c_ulong != 0;
    if !shared || vma_size != size as c_ulong {
        return EINVAL.to_errno();
    }
    let flags = bindings::VM_PFNMAP as u64
        | bindings::VM_IO as u64
        | bindings::VM_DONTEXPAND as u64
        | bindings::VM_DONTDUMP as u64
        | bindings::VM_DONTCOPY as u64
        | extra_flags;
    // SAFETY: `vma` is being set up under the mmap write lock, which
    // `vm_flags_set()` requires.
    unsafe { bindings::patverify_vm_flags_set(vma, flags as c_ulong) };
    vma.vm_ops = &ops.0;
    0
}

/// `.fault` of the `devmem` mapping: inserts the device page with the
/// mode's protection through `vmf_insert_pfn_prot()`, as TTM's
/// `ttm_bo_vm_fault_reserved()` does; `track_pfn_insert()` then takes the
/// cache bits from the memtype reserved for that memory.
///
/// # Safety
///
/// Called by the fault handler only, with `vmf` valid for a VMA whose
/// `vm_ops` is `DEVMEM_VM_OPS`, under the mmap or VMA read lock.
unsafe extern "C" fn devmem_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: the caller's contract is `pfn_fault`'s.
    unsafe { pfn_fault(vmf, crate::Path::DevmemFault) }
}

/// `.fault` of the `ram` mapping: inserts the mode's RAM page as TTM's
/// fault handler inserts a buffer's page in system memory; the cache bits
/// again from `track_pfn_insert()`, from the page's memtype.
///
/// # Safety
///
/// Called by the fault handler only, with `vmf` valid for a VMA whose
/// `vm_ops` is `RAM_VM_OPS`, under the mmap or VMA read lock.
unsafe extern "C" fn ram_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: the caller's contract is `pfn_fault`'s.
    unsafe { pfn_fault(vmf, crate::Path::RamFault) }
}

/// Inserts the page of the fault `path` (device memory or a RAM page, by
/// the VMA's page offset, the mode) with the mode's protection through
/// `vmf_insert_pfn_prot()`.
///
/// # Safety
///
/// `vmf` is a live fault of a shared `VM_PFNMAP` VMA of one page set up by
/// `device_mapping` for `path`'s memory, under the mmap or VMA read lock.
unsafe fn pfn_fault(vmf: *mut bindings::vm_fault, path: crate::Path) -> bindings::vm_fault_t {
    // SAFETY: the fault handler gets a valid `vm_fault` for one of our VMAs,
    // whose VMA is live during the fault.
    let (pgoff, prot) = unsafe {
        let vma = bindings::patverify_vmf_vma(vmf);
        ((*vma).vm_pgoff, protval((*vma).vm_page_prot))
    };
    let page = CacheMode::from_index(pgoff as usize)
        .and_then(|mode| crate::pfn_of(path, mode).map(|pfn| (mode, pfn)));
    let (mode, pfn) = match page {
        Some(page) => page,
        None => return bindings::vm_fault_reason_VM_FAULT_SIGBUS,
    };
    let prot = crate::pfn_fault_prot(path, mode, prot);
    // SAFETY: `vmf` is the live fault of a VM_PFNMAP, shared VMA (the
    // `.mmap`s refuse private ones, on which vmf_insert_pfn_prot() BUG()s);
    // `pfn` is device memory whose memtype this module reserved at boot, or
    // a RAM page it allocated and never frees, inside the VMA's one page.
    unsafe { bindings::patverify_insert_pfn(vmf, pfn as c_ulong, prot as c_ulong) }
}

/// One chunk of device memory mapped at once by `huge_pfn`: a PMD's worth.
pub(crate) const HUGE_SIZE: usize = 2 << 20;

/// `.mmap` of `huge_pfn`: one 2 MiB chunk of device memory, as a driver
/// that maps its aperture with huge PFN entries does — `VM_PFNMAP | VM_IO`,
/// `VM_HUGEPAGE` (THP's "madvise" mode), the VMA's protection left alone.
///
/// # Safety
///
/// Called by `mmap_region()` only, with `vma` the VMA being set up, which
/// the caller holds exclusively (mmap write lock) until this returns.
unsafe extern "C" fn huge_pfn_mmap(
    _file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: the VFS passes the VMA being set up, which is ours until `.mmap` returns.
    let vma = unsafe { &mut *vma };
    let mode = huge_pfn_mode(vma.vm_pgoff);
    let available = crate::huge_pfn_supported() && mode.and_then(crate::devmem_page).is_some();
    let huge = bindings::VM_HUGEPAGE as u64;
    // SAFETY: as above.
    unsafe { device_mapping(vma, mode, available, HUGE_SIZE, huge, &HUGE_PFN_VM_OPS) }
}

/// The mode a `huge_pfn` page offset selects: chunk N is mode N.
fn huge_pfn_mode(pgoff: c_ulong) -> Option<CacheMode> {
    let pages = (HUGE_SIZE / PAGE_SIZE) as c_ulong;
    if pgoff % pages != 0 {
        return None;
    }
    CacheMode::from_index((pgoff / pages) as usize)
}

/// `.huge_fault` of `huge_pfn`: inserts the mode's whole 2 MiB chunk with
/// `vmf_insert_pfn_pmd()`, which takes the VMA's protection and the cache
/// bits `track_pfn_insert()` finds in the memtype reserved for the chunk.
/// Anything but a PMD-sized fault falls back to `.fault`.
///
/// # Safety
///
/// Called by the fault handler only, with `vmf` valid for a VMA whose
/// `vm_ops` is `HUGE_PFN_VM_OPS`, under the mmap or VMA read lock.
unsafe extern "C" fn huge_pfn_fault(
    vmf: *mut bindings::vm_fault,
    size: crate::compat::HugeFaultSize,
) -> bindings::vm_fault_t {
    // SAFETY: the helper only compares `size` with the PMD's order.
    if unsafe { bindings::patverify_huge_fault_is_pmd(size as _) } == 0 {
        return bindings::vm_fault_reason_VM_FAULT_FALLBACK;
    }
    // SAFETY: the fault handler gets a valid `vm_fault` for one of our VMAs,
    // whose VMA is live during the fault.
    let (pgoff, prot) = unsafe {
        let vma = bindings::patverify_vmf_vma(vmf);
        ((*vma).vm_pgoff, protval((*vma).vm_page_prot))
    };
    let chunk = huge_pfn_mode(pgoff).and_then(|mode| crate::devmem_page(mode).map(|p| (mode, p)));
    let (mode, phys) = match chunk {
        Some(chunk) => chunk,
        None => return bindings::vm_fault_reason_VM_FAULT_SIGBUS,
    };
    crate::pfn_fault_prot(crate::Path::HugePfnFault, mode, prot);
    // SAFETY: `vmf` is the live fault of a VM_PFNMAP, shared VMA of one
    // chunk (`huge_pfn_mmap` refuses others); `phys` is the start of a
    // 2 MiB-aligned chunk of device memory whose memtype this module
    // reserved at boot. The helper falls back unless the VMA covers the
    // whole aligned 2 MiB around the fault.
    unsafe { bindings::patverify_insert_pfn_pmd(vmf, (phys / PAGE_SIZE as u64) as c_ulong) }
}

/// `.fault` of `huge_pfn`: the kernel asked for a 4 KiB page where the
/// mapping exists to be one 2 MiB entry (an unaligned mapping, or THP
/// off). Nothing is inserted: the touch gets SIGBUS and the log says why.
///
/// # Safety
///
/// Called by the fault handler only (nothing is dereferenced).
unsafe extern "C" fn huge_pfn_small_fault(_vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    kernel::pr_info!(
        "huge_pfn: a 4 KiB fault on a 2 MiB mapping (unaligned, or .huge_fault not called)\n"
    );
    bindings::vm_fault_reason_VM_FAULT_SIGBUS
}

/// A debugfs directory, removed (with its files) on drop.
///
/// # Invariants
///
/// The pointer is a live dentry returned by `debugfs_create_dir()` (never
/// an error pointer or null), owned by this value: nothing else removes it,
/// so `drop` removes it exactly once.
pub(crate) struct DebugfsDir(*mut bindings::dentry);

// SAFETY: the dentry pointer is only used by `add_file` and `drop`, which
// debugfs allows from any thread.
unsafe impl Send for DebugfsDir {}
// SAFETY: as above.
unsafe impl Sync for DebugfsDir {}

impl DebugfsDir {
    /// `name` ends in a NUL byte (`b"patverify\0"`: 6.1's crate has no `c_str!`).
    pub(crate) fn create(name: &'static [u8]) -> Result<Self> {
        let name = c_string(name)?;
        // SAFETY: `name` is NUL-terminated; a null parent is the debugfs root.
        let dir = from_err_ptr(unsafe { bindings::debugfs_create_dir(name, ptr::null_mut()) })?;
        // INVARIANT: `from_err_ptr` turned an error pointer into `Err`; debugfs
        // never returns null here.
        Ok(DebugfsDir(dir))
    }

    /// Adds a file served by `ops`. `_unsafe`: debugfs hands the real
    /// operations to the file on open (the safe proxy does not forward
    /// `.mmap`); our operations are static and never go away.
    pub(crate) fn add_file(&self, name: &'static [u8], mode: u16, ops: &'static FileOps) -> Result {
        let name = c_string(name)?;
        // SAFETY: `self.0` is a live directory, `name` is NUL-terminated and
        // `ops` is a static table.
        let file = unsafe {
            bindings::debugfs_create_file_unsafe(name, mode, self.0, ptr::null_mut(), &ops.0)
        };
        from_err_ptr(file).map(|_| ())
    }
}

impl Drop for DebugfsDir {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `self.0` is the live directory created
        // in `create`, removed nowhere else.
        unsafe { bindings::debugfs_remove(self.0) };
    }
}

/// A NUL-terminated byte string as a C string (EINVAL without the NUL).
fn c_string(name: &'static [u8]) -> Result<*const c_char> {
    match name.split_last() {
        Some((0, rest)) if !rest.contains(&0) => Ok(name.as_ptr().cast()),
        _ => Err(EINVAL),
    }
}
