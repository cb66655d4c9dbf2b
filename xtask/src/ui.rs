//! What a verify shows at its end: the header, one table per environment,
//! one line per candidate. The stages return values; this module decides how
//! they look (progress lines go through `output`).

use crate::stages::compare::{self, Run};
use crate::stages::qemu::Env;
use crate::stages::variant::Variant;
use anyhow::Result;

/// verify's header (kernel, variants) and one table per environment.
pub fn verify_tables(
    kernel: &str,
    variants: &[Variant],
    envs: &[Env],
    runs: &[Run],
) -> Result<String> {
    let mut out = format!("\nkernel       {kernel}\n");
    for v in variants {
        out += &format!("{:<12} {}\n", v.name, v.describe);
    }
    out += "\n";
    for &env in envs {
        let in_env: Vec<&Run> = variants
            .iter()
            .filter_map(|v| runs.iter().find(|r| r.env == env && r.variant == v.name))
            .collect();
        if in_env.len() != variants.len() {
            return Err(anyhow::anyhow!("a run is missing for {env}"));
        }
        out += &format!("{}\n", compare::table(env, &in_env));
    }
    Ok(out)
}

/// One line per candidate (name, patch file, verdict): what it loses, or
/// that it keeps everything.
pub fn candidate_lines(judged: &[(&str, &str, &compare::Verdict)]) -> Vec<String> {
    judged
        .iter()
        .filter_map(|&(name, file, verdict)| match verdict {
            compare::Verdict::CandidateLost {
                rows,
                only_synthetic,
                others,
            } => {
                let only = if *only_synthetic {
                    " (only on synthetic rows: no real mapping lost a mode)"
                } else {
                    ""
                };
                Some(format!(
                    "{name:<12} {file}: LOSES {}{only}",
                    rows.iter()
                        .map(|row| row.to_string())
                        .chain(others.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            compare::Verdict::BaselineNotReproduced(_) => None,
            compare::Verdict::Pass => Some(format!(
                "{name:<12} {file}: keeps every row the baseline lost, and loses none"
            )),
        })
        .collect()
}
