// SPDX-License-Identifier: GPL-2.0

//! The module's whole unsafe surface: safe wrappers around the C functions
//! it calls. 6.12's `kernel` crate has no abstractions for VMAs, page
//! protections or debugfs, so they are built here on `kernel::bindings`.

use core::ptr;
use kernel::bindings;
use kernel::error::{from_err_ptr, to_result};
use kernel::prelude::*;

/// Raw x86 page protection bits (`pgprotval_t`).
pub(crate) type ProtVal = usize;

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

    fn from_raw(raw: bindings::page_cache_mode) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| *mode as bindings::page_cache_mode == raw)
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
    let raw = unsafe { bindings::pgprot2cachemode(bindings::pgprot_t { pgprot: prot }) };
    CacheMode::from_raw(raw)
}

/// The base protection of a mapping with these `vm_flags`.
pub(crate) fn page_prot_for_flags(vm_flags: usize) -> ProtVal {
    // SAFETY: `vm_get_page_prot` only reads a static table.
    unsafe { bindings::vm_get_page_prot(vm_flags).pgprot }
}

/// Runs `vma_set_page_prot()` on a fresh, unmapped VMA with `vm_flags` and
/// `vm_page_prot = prot`, as `mmap_region()` does after a driver's `.mmap`,
/// and returns the VMA's resulting `vm_page_prot`.
pub(crate) fn vma_set_page_prot_on_fresh_vma(vm_flags: usize, prot: ProtVal) -> ProtVal {
    // SAFETY: `vm_area_struct` is a plain C struct for which all-zero bytes are
    // valid: null pointers (no mm, no file, no vm_ops) and zero integers.
    let mut vma: bindings::vm_area_struct = unsafe { core::mem::zeroed() };
    vma.__bindgen_anon_2.__vm_flags = vm_flags;
    vma.vm_page_prot = bindings::pgprot_t { pgprot: prot };
    // SAFETY: `vma` is a valid, exclusively owned VMA. With no file, no
    // vm_ops and no mm, `vma_set_page_prot()` only reads its flags and
    // protection and writes `vm_page_prot`; it does not keep the pointer.
    unsafe { bindings::vma_set_page_prot(&mut vma) };
    vma.vm_page_prot.pgprot
}

/// The raw IA32_PAT MSR as this kernel reads it (through paravirt under Xen).
pub(crate) fn read_pat_msr() -> Result<u64> {
    let mut value: u64 = 0;
    // SAFETY: `value` is a valid, writable u64 for the duration of the call.
    to_result(unsafe { bindings::patverify_read_pat_msr(&mut value) })?;
    Ok(value)
}

/// A read-only debugfs file `/sys/kernel/debug/<dir>/<file>` holding a
/// fixed buffer; removed again on drop.
pub(crate) struct DebugfsBlob {
    dir: *mut bindings::dentry,
    // Both must outlive the file: debugfs reads through `wrapper.data`.
    _wrapper: KBox<bindings::debugfs_blob_wrapper>,
    _data: KVec<u8>,
}

// SAFETY: after creation the blob is never written; the dentry pointer is only
// used by `drop`, which debugfs allows from any thread.
unsafe impl Send for DebugfsBlob {}
// SAFETY: `DebugfsBlob` has no methods taking `&self` that touch shared state.
unsafe impl Sync for DebugfsBlob {}

impl DebugfsBlob {
    pub(crate) fn create(dir_name: &CStr, file_name: &CStr, data: KVec<u8>) -> Result<Self> {
        let mut wrapper = KBox::new(
            bindings::debugfs_blob_wrapper {
                data: data.as_ptr() as *mut core::ffi::c_void,
                size: data.len() as _,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `dir_name` is NUL-terminated; a null parent is the debugfs root.
        let dir = from_err_ptr(unsafe {
            bindings::debugfs_create_dir(dir_name.as_char_ptr(), ptr::null_mut())
        })?;
        // SAFETY: `dir` is a live debugfs directory, `file_name` is
        // NUL-terminated, and `wrapper` and the buffer it points to stay alive
        // and unchanged until `drop` has removed the file.
        let file = unsafe {
            bindings::debugfs_create_blob(file_name.as_char_ptr(), 0o444, dir, &mut *wrapper)
        };
        if let Err(err) = from_err_ptr(file) {
            // SAFETY: `dir` was created above and nothing else references it.
            unsafe { bindings::debugfs_remove(dir) };
            return Err(err);
        }
        Ok(Self {
            dir,
            _wrapper: wrapper,
            _data: data,
        })
    }
}

impl Drop for DebugfsBlob {
    fn drop(&mut self) {
        // SAFETY: `self.dir` is the directory created in `create`; removing it
        // removes the file before the fields it reads are freed.
        unsafe { bindings::debugfs_remove(self.dir) };
    }
}
