// SPDX-License-Identifier: GPL-2.0

//! patverify: checks that every x86 page cache mode survives
//! `vma_set_page_prot()`.
//!
//! For each mode (WB, WC, UC-, UC, WT, WP) it builds a shared read/write VMA
//! whose `vm_page_prot` requests that mode, as a driver's `.mmap` would, lets
//! `vma_set_page_prot()` apply the VMA's flags (which goes through
//! `pgprot_modify()` and `_PAGE_CHG_MASK`), and decodes the mode the result
//! selects. The report is KTAP v1 in /sys/kernel/debug/patverify/results.

use core::fmt::{self, Write};
use kernel::bindings;
use kernel::c_str;
use kernel::prelude::*;

mod ffi;

use ffi::{CacheMode, ProtVal};

module! {
    type: PatVerify,
    name: "patverify",
    author: "patverify developers",
    description: "Checks that x86 cache modes survive vma_set_page_prot()",
    license: "GPL",
}

struct PatVerify {
    _results: ffi::DebugfsBlob,
}

impl kernel::Module for PatVerify {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mut report = Ktap(KVec::new());
        write_report(&mut report).map_err(|_| ENOMEM)?;
        let results =
            ffi::DebugfsBlob::create(c_str!("patverify"), c_str!("results"), report.0)?;
        pr_info!("report in /sys/kernel/debug/patverify/results\n");
        Ok(PatVerify { _results: results })
    }
}

/// A shared, read/write mapping: what a DRM buffer mmap looks like.
const SHARED_RW: usize = (bindings::VM_READ
    | bindings::VM_WRITE
    | bindings::VM_SHARED
    | bindings::VM_MAYREAD
    | bindings::VM_MAYWRITE
    | bindings::VM_MAYSHARE) as usize;

/// The PTE bits that select the PAT entry of a 4 KiB page.
const PAT_INDEX_BITS: [ProtVal; 3] = [
    1 << bindings::_PAGE_BIT_PWT,
    1 << bindings::_PAGE_BIT_PCD,
    1 << bindings::_PAGE_BIT_PAT,
];

struct Ktap(KVec<u8>);

impl Write for Ktap {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| fmt::Error)
    }
}

fn mode_name(mode: Option<CacheMode>) -> &'static str {
    mode.map_or("?", CacheMode::name)
}

/// The protection bits selecting PAT entry `index` (0..8).
fn pat_index_protval(index: usize) -> ProtVal {
    PAT_INDEX_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| index & (1 << bit) != 0)
        .fold(0, |acc, (_, bits)| acc | bits)
}

fn write_report(out: &mut Ktap) -> fmt::Result {
    writeln!(out, "KTAP version 1")?;
    // The layout as the kernel decodes it: PAT entry i is what
    // pgprot2cachemode() says the index bits of entry i select.
    write!(out, "# patverify: pat_layout=")?;
    for index in 0..8 {
        let sep = if index == 0 { "" } else { " " };
        write!(out, "{sep}{}", mode_name(ffi::protval_to_cachemode(pat_index_protval(index))))?;
    }
    writeln!(out)?;
    match ffi::read_pat_msr() {
        Ok(msr) => writeln!(out, "# patverify: pat_msr=0x{msr:016x}")?,
        Err(err) => writeln!(out, "# patverify: pat_msr=unreadable ({err:?})")?,
    }
    writeln!(out, "1..{}", CacheMode::ALL.len())?;
    let base = ffi::page_prot_for_flags(SHARED_RW);
    for (number, mode) in CacheMode::ALL.into_iter().enumerate() {
        let before = base | ffi::cachemode_to_protval(mode);
        let after = ffi::vma_set_page_prot_on_fresh_vma(SHARED_RW, before);
        let observed = ffi::protval_to_cachemode(after);
        writeln!(
            out,
            "# vma_set_page_prot.{}: requested={} pte_before=0x{before:016x} pte_after=0x{after:016x} observed={}",
            mode.name(),
            mode.name(),
            mode_name(observed),
        )?;
        let status = if observed == Some(mode) { "ok" } else { "not ok" };
        writeln!(out, "{status} {} vma_set_page_prot.{}", number + 1, mode.name())?;
    }
    Ok(())
}
