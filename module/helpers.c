// SPDX-License-Identifier: GPL-2.0
/*
 * patverify: C helpers for what bindgen cannot see (inline functions,
 * macros) and for what differs between the kernel generations the module
 * builds against (6.1 and 6.12), so that the Rust side is the same on both.
 * The harness copies this file into the variant tree (rust/helpers/ on
 * 6.12, beside rust/helpers.c on 6.1) and includes it from the helpers.
 */

#include <asm/msr.h>
#include <asm/msr-index.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <asm/cpufeature.h>
#include <asm/pgtable.h>
#include <xen/xen.h>
#include <linux/pci.h>
#include <asm/memtype.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/huge_mm.h>
#include <linux/pfn_t.h>
#include <asm/set_memory.h>

/* rdmsrl_safe() is an inline (paravirt under Xen PV): wrap it. */
int rust_helper_patverify_read_pat_msr(u64 *val)
{
	return rdmsrl_safe(MSR_IA32_CR_PAT, val);
}

/*
 * The flag of each bit the protection-change masks are meant to keep beside
 * the PFN and the cache bits, in the order of ffi::KEPT_BITS; 0 where this
 * kernel has no such bit (a configuration without it, or 6.1's saved-dirty).
 * From the bit definitions, never from the masks: a mask that drops one
 * must not change what is checked.
 */
void rust_helper_patverify_kept_bits(u64 *flags)
{
	flags[0] = _PAGE_ACCESSED;
	flags[1] = _PAGE_DIRTY;
#ifdef _PAGE_BIT_SAVED_DIRTY
	flags[2] = _PAGE_SAVED_DIRTY;
#else
	flags[2] = 0;
#endif
	flags[3] = _PAGE_SPECIAL;
	flags[4] = _PAGE_UFFD_WP;
	flags[5] = _PAGE_SOFT_DIRTY;
	flags[6] = _PAGE_DEVMAP;
	flags[7] = _PAGE_PSE;
}

void rust_helper_patverify_get_page(struct page *page)
{
	get_page(page);
}

void rust_helper_patverify_put_page(struct page *page)
{
	put_page(page);
}

/*
 * vm_flags_set() (6.3+) is an inline that also takes the VMA write lock;
 * before 6.3 vm_flags was a plain field, written under the mmap lock.
 */
void rust_helper_patverify_vm_flags_set(struct vm_area_struct *vma, unsigned long flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

/* The flags of a VMA not yet visible to anyone (no lock to take). */
void rust_helper_patverify_vm_flags_init(struct vm_area_struct *vma, unsigned long flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_init(vma, flags);
#else
	vma->vm_flags = flags;
#endif
}

/*
 * VMA and fault fields that sit in anonymous unions whose layout (and so
 * their bindgen names) changed between 6.1 and 6.12.
 */
unsigned long rust_helper_patverify_vma_flags(const struct vm_area_struct *vma)
{
	return vma->vm_flags;
}

unsigned long rust_helper_patverify_vma_size(const struct vm_area_struct *vma)
{
	return vma->vm_end - vma->vm_start;
}

struct vm_area_struct *rust_helper_patverify_vmf_vma(const struct vm_fault *vmf)
{
	return vmf->vma;
}

unsigned long rust_helper_patverify_vmf_pgoff(const struct vm_fault *vmf)
{
	return vmf->pgoff;
}

/* alloc_page() is a macro (6.12) or an inline (6.1 without NUMA). */
struct page *rust_helper_patverify_alloc_zeroed_page(void)
{
	return alloc_page(GFP_KERNEL | __GFP_ZERO);
}

/* current is a macro. */
struct mm_struct *rust_helper_patverify_current_mm(void)
{
	return current->mm;
}

/* copy_from_user() is an inline; returns the bytes not copied. */
unsigned long rust_helper_patverify_copy_from_user(void *to, const void __user *from,
						   unsigned long n)
{
	return copy_from_user(to, from, n);
}

void rust_helper_patverify_mmap_read_lock(struct mm_struct *mm)
{
	mmap_read_lock(mm);
}

void rust_helper_patverify_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

/*
 * The pte_modify_direct path (synthetic: pte_modify() called directly, no
 * page table, no syscall): a PTE installed with a cache mode of its own under
 * a VMA whose protection says WB — what vmf_insert_pfn_prot() does for TTM
 * buffer objects — then mprotect(): change_pte_range() calls pte_modify()
 * with the VMA's recomputed protection. The entry maps a real page so that
 * Xen PV's pfn/mfn translation sees a valid frame.
 */
int rust_helper_patverify_pte_modify(unsigned long prot, unsigned long newprot,
				     unsigned long *before, unsigned long *after)
{
	struct page *page = alloc_page(GFP_KERNEL);
	pte_t pte;

	if (!page)
		return -ENOMEM;
	pte = mk_pte(page, __pgprot(prot));
	*before = pte_flags(pte);
	pte = pte_modify(pte, __pgprot(newprot));
	*after = pte_flags(pte);
	__free_page(page);
	return 0;
}

/*
 * The device memory of the devmem paths: BAR 0 of QEMU's standard VGA
 * (PCI 1234:1111, the framebuffer), which QEMU gives every boot, native and
 * under Xen. Returns 0 with its start and length, or -ENODEV.
 */
int rust_helper_patverify_vga_bar(u64 *start, u64 *len)
{
	struct pci_dev *pdev = pci_get_device(0x1234, 0x1111, NULL);
	bool is_mem;

	if (!pdev)
		return -ENODEV;
	is_mem = pci_resource_flags(pdev, 0) & IORESOURCE_MEM;

	*start = pci_resource_start(pdev, 0);
	*len = pci_resource_len(pdev, 0);
	pci_dev_put(pdev);
	return is_mem && *start && *len ? 0 : -ENODEV;
}

/*
 * Reserves the memory type of [start, start + size) as a GPU driver reserves
 * its VRAM aperture: arch_io_reserve_memtype_wc() (amdgpu, radeon) is
 * memtype_reserve_io() with WC; the other modes use the same call. *actual
 * is the mode the kernel granted (WB on MMIO becomes UC-, as the MTRRs
 * say), which vmf_insert_pfn_prot() then applies to every PTE it inserts
 * there (track_pfn_insert()).
 */
int rust_helper_patverify_reserve_memtype(u64 start, u64 size, int pcm, int *actual)
{
	enum page_cache_mode type = pcm;
	int ret = memtype_reserve_io(start, start + size, &type);

	*actual = type;
	return ret;
}

/*
 * Why this kernel cannot map device memory 2 MiB at a time (the huge_pfn
 * paths): 0 it can; 1 Xen PV (no PSE for PV guests); 2 the CPU has no
 * PSE; 3 before 6.12 the fault path calls .huge_fault only for DAX and
 * anonymous memory (hugepage_vma_check() refuses VM_PFNMAP, a
 * VM_NO_KHUGEPAGED flag); 4 no THP.
 */
int rust_helper_patverify_no_huge_pfn(void)
{
	if (xen_pv_domain())
		return 1;
	if (!boot_cpu_has(X86_FEATURE_PSE))
		return 2;
	if (LINUX_VERSION_CODE < KERNEL_VERSION(6, 12, 0))
		return 3;
	if (!IS_ENABLED(CONFIG_TRANSPARENT_HUGEPAGE))
		return 4;
	return 0;
}

/* The 2 MiB encoding (PAT at bit 12) in the 4 KiB one (PAT at bit 7). */
unsigned long rust_helper_patverify_protval_large_2_4k(unsigned long prot)
{
	return protval_large_2_4k(prot);
}

/* Whether a .huge_fault call asks for a PMD (6.12: an order; 6.1: an enum). */
int rust_helper_patverify_huge_fault_is_pmd(unsigned int size)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	return size == PMD_ORDER;
#else
	return size == PE_SIZE_PMD;
#endif
}

/*
 * vmf_insert_pfn_pmd() as a driver's .huge_fault calls it, for the 2 MiB
 * around the fault; falls back (to 4 KiB faults) unless the VMA covers
 * all of it, as the huge fault handlers must check themselves.
 */
unsigned int rust_helper_patverify_insert_pfn_pmd(struct vm_fault *vmf, unsigned long pfn)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	unsigned long start = vmf->address & PMD_MASK;

	if (start < vmf->vma->vm_start || start + PMD_SIZE > vmf->vma->vm_end)
		return VM_FAULT_FALLBACK;
	return vmf_insert_pfn_pmd(vmf, __pfn_to_pfn_t(pfn, PFN_DEV),
				  vmf->flags & FAULT_FLAG_WRITE);
#else
	return VM_FAULT_FALLBACK;
#endif
}

/*
 * The flags of the PMD mapping addr in mm (the PFN masked out), read by
 * walking the page table under the mmap lock: -ENOENT when nothing maps
 * addr, -EXDEV when the PMD is not a 2 MiB leaf.
 */
int rust_helper_patverify_installed_pmd(struct mm_struct *mm, unsigned long addr,
					unsigned long *flags)
{
	int ret = -ENOENT;
	pgd_t *pgd;
	p4d_t *p4d;
	pud_t *pud;
	pmd_t *pmd, entry;

	mmap_read_lock(mm);
	pgd = pgd_offset(mm, addr);
	if (pgd_none(*pgd))
		goto out;
	p4d = p4d_offset(pgd, addr);
	if (p4d_none(*p4d))
		goto out;
	pud = pud_offset(p4d, addr);
	if (pud_none(*pud) || pud_leaf(*pud))
		goto out;
	pmd = pmd_offset(pud, addr);
	entry = READ_ONCE(*pmd);
	if (pmd_none(entry))
		goto out;
	ret = -EXDEV;
	if (!pmd_leaf(entry))
		goto out;
	*flags = pmd_flags(entry);
	ret = 0;
out:
	mmap_read_unlock(mm);
	return ret;
}

/* xen_pv_domain() is a macro. */
int rust_helper_patverify_xen_pv(void)
{
	return xen_pv_domain();
}

/*
 * A page of RAM with the memtype TTM gives a buffer's pages for @mode
 * (ttm_set_pages_caching(): set_pages_array_wc() for write-combined,
 * set_pages_array_uc() for uncached, which reserves UC-; a cached buffer
 * keeps RAM's own WB). -EOPNOTSUPP for a mode no set_pages_array_*() gives
 * RAM (UC, WT, WP). The page is never freed: the module is built in.
 */
int rust_helper_patverify_ram_page(int mode, unsigned long *pfn)
{
	struct page *page;
	int ret = 0;

	if (mode != _PAGE_CACHE_MODE_WB && mode != _PAGE_CACHE_MODE_WC &&
	    mode != _PAGE_CACHE_MODE_UC_MINUS)
		return -EOPNOTSUPP;
	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		return -ENOMEM;
	if (mode == _PAGE_CACHE_MODE_WC)
		ret = set_pages_array_wc(&page, 1);
	else if (mode == _PAGE_CACHE_MODE_UC_MINUS)
		ret = set_pages_array_uc(&page, 1);
	if (ret) {
		__free_page(page);
		return ret;
	}
	*pfn = page_to_pfn(page);
	return 0;
}

/* vmf_insert_pfn_prot() as a DRM/TTM fault handler calls it. */
unsigned int rust_helper_patverify_insert_pfn(struct vm_fault *vmf, unsigned long pfn,
					     unsigned long prot)
{
	return vmf_insert_pfn_prot(vmf->vma, vmf->address, pfn, __pgprot(prot));
}

/*
 * Failure injection for the harness's own tests (`patverify_fault=oops`):
 * a store through NULL in process context. The page-fault handler oopses
 * and kills the writing task; the kernel itself keeps running, as after a
 * real oops with panic_on_oops=0.
 */
void rust_helper_patverify_inject_oops(void)
{
	*(volatile int *)NULL = 0;
}
