// SPDX-License-Identifier: GPL-2.0
/*
 * patverify: C helpers for what bindgen cannot see (inline functions,
 * macros). The harness copies this file into the variant tree's
 * rust/helpers/ and includes it from helpers.c.
 */

#include <asm/msr.h>
#include <asm/msr-index.h>

/* rdmsrl_safe() is an inline (paravirt under Xen PV): wrap it. */
int rust_helper_patverify_read_pat_msr(u64 *val)
{
	return rdmsrl_safe(MSR_IA32_CR_PAT, val);
}
