//! End-to-end: `cargo xtask mutants` on Debian's 6.12 tree, natively, for
//! three mutants of the masks — one the cache-mode rows kill (the PAT bit),
//! one only a kept-bit row can kill (soft-dirty: the configuration's
//! soft-dirty tracking at work), and one the build shows equivalent
//! (`_PAGE_CC` is 0 without memory encryption). With `--kselftest mm`: the
//! kernel's own selftests (built from the same tree) run in the same boots
//! and get a column of their own. One run, built once through the
//! harness's cache; each check is its own test on its record.

mod common;

use anyhow::{Context, Result};
use common::*;
use std::sync::OnceLock;
use xtask::record::{MutantOutcome, MutantRecord, Record, Verdict};

const PAT: &str = "_PAGE_CHG_MASK-_PAGE_PAT";
const SOFT_DIRTY: &str = "_COMMON_PAGE_CHG_MASK-_PAGE_SOFT_DIRTY";
const CC: &str = "_COMMON_PAGE_CHG_MASK-_PAGE_CC";

struct Ran {
    code: Option<i32>,
    text: String,
    record: Record,
}

/// The one mutants run the tests below read.
fn ran() -> &'static Ran {
    static RAN: OnceLock<Ran> = OnceLock::new();
    RAN.get_or_init(|| run().expect("the mutants run"))
}

fn run() -> Result<Ran> {
    let out = scenario_dir("mutants")?;
    let json = out.join("mutants.json");
    let mut args = strings(&["mutants", "--env", "native", "--kselftest", "mm", "--out"]);
    args.push(out.join("run").display().to_string());
    args.push("--json".into());
    args.push(json.display().to_string());
    for m in [PAT, SOFT_DIRTY, CC] {
        args.push("--mutant".into());
        args.push(m.into());
    }
    println!("==> e2e: mutants {PAT} {SOFT_DIRTY} {CC} (native, --kselftest mm)");
    let (code, text) = harness(&cache_root(), &args)?;
    println!("{text}");
    let record = Record::read(&json).with_context(|| format!("exit {code:?}: {text}"))?;
    Ok(Ran { code, text, record })
}

fn mutant(name: &str) -> &'static MutantRecord {
    let found = ran().record.mutants.iter().find(|m| m.name == name);
    found.unwrap_or_else(|| panic!("no record of {name}: {}", ran().text))
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn every_chosen_mutant_is_killed_or_equivalent_exit_0() {
    let ran = ran();
    assert_eq!(ran.code, Some(0), "{}", ran.text);
    assert_eq!(ran.record.verdict, Verdict::Pass);
    assert_eq!(ran.record.mutants.len(), 3);
    assert!(
        ran.text
            .contains("mutation score 2/2 (3 mutants, 1 equivalent, 0 survived)"),
        "{}",
        ran.text
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn dropping_the_pat_bit_is_killed_by_the_cache_mode_rows() {
    let m = mutant(PAT);
    assert_eq!(m.outcome, MutantOutcome::Killed, "{m:?}");
    // The fault of a real mapping, and mprotect() of device memory.
    for row in ["native mmap_fault WT→UC", "native devmem_mprotect WP→WC"] {
        assert!(m.by.iter().any(|b| b == row), "{row}: {m:?}");
    }
    assert!(m.by.iter().all(|b| !b.contains(" bits.")), "{m:?}");
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn dropping_soft_dirty_is_killed_by_the_soft_dirty_row() {
    let m = mutant(SOFT_DIRTY);
    assert_eq!(m.outcome, MutantOutcome::Killed, "{m:?}");
    let by_row = |row: &str| m.by.iter().any(|b| b.starts_with(row));
    assert!(
        by_row("native mprotect bits.soft_dirty→cleared in WB"),
        "{m:?}"
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn dropping_the_memory_encryption_bit_is_equivalent_by_its_build() {
    let m = mutant(CC);
    assert_eq!(m.outcome, MutantOutcome::Equivalent, "{m:?}");
    assert!(
        m.by[0].starts_with("bzImage byte-identical to the reference's"),
        "{m:?}"
    );
    // Shown, not assumed: the equivalent mutant was built, never booted.
    let record = &ran().record;
    assert!(record.builds.iter().any(|b| b.variant == CC));
    assert!(!record.environments.iter().any(|e| e.variant == CC));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_reference_keeps_every_bit_it_can_show() {
    let record = &ran().record;
    let reference: Vec<_> = record.bit_rows("reference", env("native")).collect();
    assert!(!reference.is_empty(), "no bit rows: {}", ran().text);
    assert!(reference.iter().all(|b| !b.lost()), "{reference:?}");
    let kept = |path: &str, bit: &str| {
        let label = format!("bits.{bit}");
        reference
            .iter()
            .any(|b| b.path.name() == path && b.label() == label && b.judgment_name() == "kept")
    };
    for (path, bit) in [
        ("mprotect", "accessed"),
        ("mprotect", "dirty"),
        ("mprotect", "soft_dirty"),
        ("devmem_mprotect", "special"),
        ("huge_pfn_mprotect", "pse"),
    ] {
        assert!(kept(path, bit), "{path}.bits.{bit} not kept: {reference:?}");
    }
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_kernels_selftests_ran_in_the_same_boots_and_have_their_column() {
    let record = &ran().record;
    let rows: Vec<_> = record.kselftests("reference", env("native")).collect();
    let names: Vec<&str> = rows.iter().map(|k| k.row.as_str()).collect();
    assert_eq!(
        names,
        [
            "kselftest.mm.mkdirty",
            "kselftest.mm.pagemap_ioctl",
            "kselftest.mm.soft-dirty",
            "kselftest.mm.uffd-unit-tests"
        ]
    );
    // soft-dirty ran its cases in the reference's boot (pass or fail, never a skip).
    let soft = rows
        .iter()
        .find(|k| k.row == "kselftest.mm.soft-dirty")
        .unwrap();
    assert!(soft.passed > 0, "{soft:?}");
    // Each booted mutant has the selftests' verdict beside patverify's;
    // the equivalent one, never booted, has none.
    for name in [PAT, SOFT_DIRTY] {
        assert!(mutant(name).kselftests_kill.is_some(), "{:?}", mutant(name));
    }
    assert!(mutant(CC).kselftests_kill.is_none());
    assert!(
        ran().text.contains("the kernel's selftests kill"),
        "{}",
        ran().text
    );
}
