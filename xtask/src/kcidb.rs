//! `--kcidb FILE`: the run record as a KCIDB v5.3 document, the format of
//! KernelCI's common database (schema: kcidb-io, `kcidb_io/schema/v05_03.py`).
//! One checkout (the kernel source with the candidate patches as its
//! patchset), one build per variant, one test per row; what KCIDB has no
//! field for goes under `misc`. A run that ended in an error still gives a
//! valid document, its builds marked ERROR (or FAIL for a failed compile).

use crate::model::bits::BitOutcome;
use crate::model::kselftest::KselftestOutcome;
use crate::model::pagemap::PagemapOutcome;
use crate::model::rows::{Judgment, ModeResult};
use crate::model::{Env, Step};
use crate::record::Record;
use crate::support::cache::sha256_hex;
use crate::support::failure::Kind;
use serde::Serialize;
use serde_json::json;

/// The CI system name KCIDB ids start with.
const ORIGIN: &str = "patverify";

#[derive(Serialize)]
struct Document {
    version: Version,
    checkouts: Vec<Checkout>,
    builds: Vec<Build>,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Version {
    major: u32,
    minor: u32,
}

#[derive(Serialize)]
struct Resource {
    name: String,
    url: String,
}

#[derive(Serialize)]
struct Checkout {
    id: String,
    origin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    git_commit_hash: Option<String>,
    patchset_files: Vec<Resource>,
    patchset_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    valid: bool,
    misc: serde_json::Value,
}

#[derive(Serialize)]
struct Build {
    id: String,
    checkout_id: String,
    origin: &'static str,
    architecture: &'static str,
    config_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    compiler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_url: Option<String>,
    misc: serde_json::Value,
}

#[derive(Serialize)]
struct Test {
    id: String,
    build_id: String,
    origin: &'static str,
    path: String,
    status: &'static str,
    environment: Environment,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    misc: serde_json::Value,
}

#[derive(Serialize)]
struct Environment {
    comment: String,
}

fn file_url(path: &str) -> String {
    format!("file://{path}")
}

/// The KCIDB document of `record`; `run` makes its ids unique among this
/// CI system's submissions.
pub fn document(record: &Record, run: &str) -> String {
    documents(&[(run.to_string(), record)])
}

/// One KCIDB document of several runs (a matrix's jobs), each its own
/// checkout.
pub fn documents(runs: &[(String, &Record)]) -> String {
    let mut document = Document {
        version: Version { major: 5, minor: 3 },
        checkouts: Vec::new(),
        builds: Vec::new(),
        tests: Vec::new(),
    };
    for (run, record) in runs {
        let checkout_id = format!("{ORIGIN}:{run}");
        document.checkouts.push(checkout(record, &checkout_id));
        document.builds.extend(builds(record, &checkout_id));
        document.tests.extend(tests(record, &checkout_id));
    }
    serde_json::to_string_pretty(&document).expect("plain data serializes")
}

fn checkout(record: &Record, id: &str) -> Checkout {
    // The patchset in the order it is applied: every part of every patch.
    let parts: Vec<(&String, &String)> = record
        .patches
        .iter()
        .flat_map(|p| p.parts.iter().zip(&p.part_sha256))
        .collect();
    // KCIDB: sha256 over the newline-terminated sha256s of the patches.
    let hashes: String = parts.iter().map(|(_, sha)| format!("{sha}\n")).collect();
    let patchset_hash = if parts.is_empty() {
        String::new()
    } else {
        sha256_hex(hashes.as_bytes())
    };
    let kernel = record.kernel.as_ref();
    let git_rev = kernel.and_then(|k| k.git_rev.clone());
    Checkout {
        id: id.to_string(),
        origin: ORIGIN,
        git_commit_hash: git_rev.filter(|r| r.len() == 40),
        patchset_files: parts
            .iter()
            .map(|(path, _)| Resource {
                name: path.rsplit('/').next().unwrap_or(path).to_string(),
                url: file_url(path),
            })
            .collect(),
        patchset_hash,
        message_id: record.patches.iter().find_map(|p| p.message_id.clone()),
        // Not valid: a patch that applies neither way.
        valid: record.exit_code != Kind::PatchDoesNotApply.exit_code(),
        misc: json!({
            "kernel": kernel.map(|k| k.source.as_str()),
            "version": kernel.map(|k| k.version.as_str()),
            "verdict": record.verdict.to_string(),
            "candidates": record.candidates,
        }),
    }
}

fn build_id(checkout_id: &str, variant: &str) -> String {
    format!("{checkout_id}:{variant}")
}

fn builds(record: &Record, checkout_id: &str) -> Vec<Build> {
    let compiler = record.toolchain.as_ref().map(|t| t.clang.clone());
    record
        .variants
        .iter()
        .map(|variant| {
            let build = record.builds.iter().find(|b| b.variant == variant.name);
            let status = match build {
                Some(_) => "PASS",
                // The kernel did not compile.
                None if record.exit_code == Kind::Build.exit_code() => "FAIL",
                None => "ERROR",
            };
            let step = Step::Build {
                variant: variant.name.clone(),
            };
            Build {
                id: build_id(checkout_id, &variant.name),
                checkout_id: checkout_id.to_string(),
                origin: ORIGIN,
                architecture: "x86_64",
                config_name: "tinyconfig+patverify",
                compiler: compiler.clone(),
                duration: record.seconds(&step),
                status,
                log_url: build.map(|b| file_url(&format!("{}/build.log", b.build_dir))),
                misc: json!({
                    "variant": variant.name,
                    "describe": variant.describe,
                    "reused": build.map(|b| b.reused),
                    "ccache": build.and_then(|b| b.ccache),
                    "bzimage_sha256": build.map(|b| b.bzimage_sha256.as_str()),
                }),
            }
        })
        .collect()
}

/// A row's KCIDB status: a step that kept the mode passes, as does one that
/// kept the entry it was given (the step before it fails) or moved to an
/// entry of the same type; a step that lost it fails (on the baseline too:
/// that kernel is the faulty code); a skipped one is SKIP. `misc.judgment`
/// says which.
fn status(row: &ModeResult) -> &'static str {
    match row.judgment() {
        Judgment::Skipped => "SKIP",
        Judgment::Kept | Judgment::MovedSameType | Judgment::LostEarlier(_) => "PASS",
        Judgment::Lost | Judgment::KnownDefect => "FAIL",
    }
}

fn environment(env: Env) -> Environment {
    let comment = match env {
        Env::Native => "QEMU TCG, bare-metal-like (q35-less pc machine, qemu64 CPU)",
        Env::Xen => "QEMU TCG, the kernel as a Xen 4.17 PV dom0",
    };
    Environment {
        comment: comment.to_string(),
    }
}

fn tests(record: &Record, checkout_id: &str) -> Vec<Test> {
    let mut tests = measured(record, checkout_id);
    // A built variant whose boots left no report: the run ended in an
    // error (a hang, a panic, QEMU dying) — one ERROR test says so.
    for build in &record.builds {
        if record.results.iter().any(|r| r.variant == build.variant) {
            continue;
        }
        let build_id = build_id(checkout_id, &build.variant);
        tests.push(Test {
            id: format!("{build_id}:boot"),
            build_id,
            origin: ORIGIN,
            path: "patverify".into(),
            status: "ERROR",
            environment: Environment {
                comment: "QEMU TCG".into(),
            },
            duration: None,
            misc: json!({ "message": record.message }),
        });
    }
    tests
}

/// A test per row the boots reported, then per kept-bit row.
fn measured(record: &Record, checkout_id: &str) -> Vec<Test> {
    let mut tests = mode_tests(record, checkout_id);
    tests.extend(record.bits.iter().map(|b| {
        let name = format!("{}.{}.{}", b.env, b.row.path, b.row.label());
        let build = build_id(checkout_id, &b.variant);
        let boot = Step::Boot {
            variant: b.variant.clone(),
            env: b.env,
        };
        let status = match b.row.outcome {
            BitOutcome::Kept { .. } => "PASS",
            BitOutcome::Changed { .. } => "FAIL",
            BitOutcome::Skipped { .. } => "SKIP",
        };
        Test {
            id: format!("{build}:{name}"),
            build_id: build,
            origin: ORIGIN,
            path: format!("patverify.{name}"),
            status,
            environment: environment(b.env),
            duration: record.seconds(&boot),
            misc: serde_json::to_value(b).unwrap_or_default(),
        }
    }));
    for e in &record.environments {
        let build = build_id(checkout_id, &e.variant);
        let guest_test = |row: &str, status: &'static str, misc: serde_json::Value| Test {
            id: format!("{build}:{}.{row}", e.env),
            build_id: build.clone(),
            origin: ORIGIN,
            path: format!("patverify.{}.{row}", e.env),
            status,
            environment: environment(e.env),
            duration: None,
            misc,
        };
        for p in &e.pagemap {
            let status = match p.outcome {
                PagemapOutcome::Kept => "PASS",
                PagemapOutcome::Lost => "FAIL",
                PagemapOutcome::Skipped { .. } => "SKIP",
                PagemapOutcome::Error { .. } => "ERROR",
            };
            tests.push(guest_test(&p.row, status, json!(p)));
        }
        for k in &e.kselftests {
            let status = match k.outcome {
                KselftestOutcome::Pass => "PASS",
                KselftestOutcome::Fail { .. } => "FAIL",
                KselftestOutcome::Skip { .. } => "SKIP",
                KselftestOutcome::Broken { .. } => "ERROR",
            };
            tests.push(guest_test(&k.row, status, json!(k)));
        }
    }
    tests
}

fn mode_tests(record: &Record, checkout_id: &str) -> Vec<Test> {
    record
        .results
        .iter()
        .map(|r| {
            let row = &r.result;
            let name = format!("{}.{}.{}", r.env, row.path, row.key());
            let build = build_id(checkout_id, &r.variant);
            let boot = Step::Boot {
                variant: r.variant.clone(),
                env: r.env,
            };
            Test {
                id: format!("{build}:{name}"),
                build_id: build,
                origin: ORIGIN,
                path: format!("patverify.{name}"),
                status: status(row),
                environment: environment(r.env),
                duration: record.seconds(&boot),
                // The row with its path's kind and its step's judgment.
                misc: serde_json::to_value(r).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record_with;
    use crate::record::{PatchRecord, VariantRecord};

    #[test]
    fn a_record_becomes_one_checkout_a_build_per_variant_a_test_per_row() {
        let mut record = record_with("baseline", &[("WT", "UC")]);
        record.variants.push(VariantRecord {
            name: "baseline".into(),
            describe: "tree − fix".into(),
            key: "k".into(),
            tree: "/t".into(),
        });
        record.patches.push(PatchRecord {
            file: "/p/fix.mbox".into(),
            sha256: "0".repeat(64),
            direction: crate::model::Direction::Reverse,
            series: vec!["a".into(), "b".into()],
            parts: vec!["/s/0001-a.patch".into(), "/s/0002-b.patch".into()],
            part_sha256: vec!["a".repeat(64), "b".repeat(64)],
            message_id: Some("cover@example.org".into()),
            subject: Some("[PATCH 0/2] masks".into()),
        });
        let text = document(&record, "run1");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["version"]["major"], 5);
        let checkout = &doc["checkouts"][0];
        assert_eq!(checkout["id"], "patverify:run1");
        assert_eq!(checkout["message_id"], "cover@example.org");
        let want = sha256_hex(format!("{}\n{}\n", "a".repeat(64), "b".repeat(64)).as_bytes());
        assert_eq!(checkout["patchset_hash"], want.as_str());
        assert_eq!(
            checkout["patchset_files"][1]["url"],
            "file:///s/0002-b.patch"
        );
        // record_with has no build: a run that stopped before it.
        assert_eq!(doc["builds"][0]["status"], "ERROR");
        let tests = doc["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 6);
        let wt = tests
            .iter()
            .find(|t| t["path"] == "patverify.native.vma_set_page_prot.WT");
        assert_eq!(wt.unwrap()["status"], "FAIL");
        assert_eq!(tests[0]["status"], "PASS");
        assert_eq!(tests[0]["build_id"], "patverify:run1:baseline");
    }
}
