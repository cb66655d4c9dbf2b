//! The masks a protection change keeps bits through — `_COMMON_PAGE_CHG_MASK`,
//! `_PAGE_CHG_MASK` and `_HPAGE_CHG_MASK` in a tree's
//! arch/x86/include/asm/pgtable_types.h — read from the tree itself, and one
//! mutant per bit term: the header with that term dropped, as a patch on
//! the tree as is (what `cargo xtask mutants` builds and probes).

use anyhow::Result;

/// Where the masks live in a kernel tree.
pub const HEADER: &str = "arch/x86/include/asm/pgtable_types.h";

/// The masks, in the order the header defines them.
pub const MASKS: [&str; 3] = ["_COMMON_PAGE_CHG_MASK", "_PAGE_CHG_MASK", "_HPAGE_CHG_MASK"];

/// One mask as the header defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub name: String,
    /// 0-based index of the `#define` line, and how many lines the
    /// definition spans (continuation lines included).
    pub first_line: usize,
    pub lines: usize,
    /// The terms OR-ed together, in order: `_PAGE_*` bits, another mask,
    /// `PTE_PFN_MASK`.
    pub terms: Vec<String>,
}

impl Mask {
    /// The terms a mutant may drop: the `_PAGE_*` bits (not the PFN, not
    /// another mask, which has mutants of its own).
    pub fn bit_terms(&self) -> impl Iterator<Item = &str> {
        self.terms
            .iter()
            .map(String::as_str)
            .filter(|t| t.starts_with("_PAGE_"))
    }
}

/// One mutant: `term` dropped from `mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutant {
    pub mask: String,
    pub term: String,
    /// The patch that makes it from the tree as is (`git apply`/`patch -p1`).
    pub patch: String,
}

impl Mutant {
    /// "_PAGE_CHG_MASK-_PAGE_PAT": unique within a header.
    pub fn name(&self) -> String {
        format!("{}-{}", self.mask, self.term)
    }
}

/// Reads the three masks from the header's text; an error names the line
/// it could not read (or says which mask is missing).
pub fn parse(header: &str) -> Result<Vec<Mask>, String> {
    let lines: Vec<&str> = header.lines().collect();
    MASKS.iter().map(|name| parse_one(&lines, name)).collect()
}

fn parse_one(lines: &[&str], name: &str) -> Result<Mask, String> {
    let first_line = lines
        .iter()
        .position(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some("#define")
                && words
                    .next()
                    .is_some_and(|w| w == name || w.starts_with(&format!("{name}(")))
        })
        .ok_or_else(|| format!("{HEADER}: no `#define {name}`"))?;
    let mut count = 1;
    while lines[first_line + count - 1].trim_end().ends_with('\\') {
        if first_line + count >= lines.len() {
            return Err(format!(
                "{HEADER}:{}: {name} ends in a line continuation",
                first_line + count
            ));
        }
        count += 1;
    }
    let text: String = lines[first_line..first_line + count]
        .iter()
        .map(|l| l.trim_end().trim_end_matches('\\'))
        .collect::<Vec<_>>()
        .join(" ");
    let body = text
        .split_once(name)
        .map(|(_, rest)| rest.trim())
        .unwrap_or_default();
    let line_no = first_line + 1;
    let inner = body
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .ok_or_else(|| {
            format!("{HEADER}:{line_no}: {name} is not a parenthesised OR of terms: {body:?}")
        })?;
    let terms: Vec<String> = inner.split('|').map(|t| t.trim().to_string()).collect();
    let well_formed =
        |t: &String| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if let Some(bad) = terms.iter().find(|t| !well_formed(t)) {
        return Err(format!(
            "{HEADER}:{line_no}: {name}: cannot read the term {bad:?}"
        ));
    }
    Ok(Mask {
        name: name.to_string(),
        first_line,
        lines: count,
        terms,
    })
}

/// Every mutant of the header: one per bit term of each mask.
pub fn mutants(header: &str) -> Result<Vec<Mutant>, String> {
    let masks = parse(header)?;
    let lines: Vec<&str> = header.lines().collect();
    let mut out = Vec::new();
    for mask in &masks {
        for term in mask.bit_terms() {
            let old = &lines[mask.first_line..mask.first_line + mask.lines];
            let new = without(old, term);
            out.push(Mutant {
                mask: mask.name.clone(),
                term: term.to_string(),
                patch: unified_diff(&lines, mask.first_line, old.len(), &new),
            });
        }
    }
    Ok(out)
}

/// The definition's lines with `term` dropped: "TERM |" where a pipe
/// follows it, else the "| TERM" before it (and a continuation that then
/// leads nowhere).
fn without(old: &[&str], term: &str) -> Vec<String> {
    let text = old.join("\n");
    let is_word = |at: usize| {
        let before = text[..at].chars().last();
        let after = text[at + term.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !part(before) && !part(after)
    };
    let at = text
        .match_indices(term)
        .map(|(at, _)| at)
        .find(|&at| is_word(at))
        .expect("the term was read from these lines");
    let after = &text[at + term.len()..];
    let trimmed = after.trim_start_matches([' ', '\t']);
    let edited = if let Some(rest) = trimmed.strip_prefix('|') {
        format!("{}{}", &text[..at], rest.trim_start_matches(' '))
    } else {
        let before = &text[..at];
        let pipe = before
            .rfind('|')
            .expect("a term after the first follows a pipe");
        format!("{}{}", before[..pipe].trim_end_matches([' ', '\t']), after)
    };
    edited.lines().map(str::to_string).collect()
}

/// A unified diff of the header replacing `count` lines at `first` with
/// `new`, three lines of context each side.
fn unified_diff(lines: &[&str], first: usize, count: usize, new: &[String]) -> String {
    let start = first.saturating_sub(3);
    let end = (first + count + 3).min(lines.len());
    let mut hunk = String::new();
    for l in &lines[start..first] {
        hunk += &format!(" {l}\n");
    }
    for l in &lines[first..first + count] {
        hunk += &format!("-{l}\n");
    }
    for l in new {
        hunk += &format!("+{l}\n");
    }
    for l in &lines[first + count..end] {
        hunk += &format!(" {l}\n");
    }
    let old_len = end - start;
    let new_len = old_len - count + new.len();
    format!(
        "--- a/{HEADER}\n+++ b/{HEADER}\n@@ -{},{old_len} +{},{new_len} @@\n{hunk}",
        start + 1,
        start + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks as Linux 6.12.117 defines them (and its neighbours).
    const V6_12: &str = "/* Set of bits not changed in pte_modify */\n#define _COMMON_PAGE_CHG_MASK\t(PTE_PFN_MASK | _PAGE_PCD | _PAGE_PWT |\t\\\n\t\t\t\t _PAGE_SPECIAL | _PAGE_ACCESSED |\t\\\n\t\t\t\t _PAGE_DIRTY_BITS | _PAGE_SOFT_DIRTY |\t\\\n\t\t\t\t _PAGE_DEVMAP | _PAGE_CC | _PAGE_UFFD_WP)\n#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)\n#define _HPAGE_CHG_MASK (_COMMON_PAGE_CHG_MASK | _PAGE_PSE | _PAGE_PAT_LARGE)\n\n/*\n * The cache modes defined here\n */\n";

    /// And as Linux 6.1.192 does.
    const V6_1: &str = "#define _COMMON_PAGE_CHG_MASK\t(PTE_PFN_MASK | _PAGE_PCD | _PAGE_PWT |\t       \\\n\t\t\t\t _PAGE_SPECIAL | _PAGE_ACCESSED | _PAGE_DIRTY |\\\n\t\t\t\t _PAGE_SOFT_DIRTY | _PAGE_DEVMAP | _PAGE_CC | \\\n\t\t\t\t _PAGE_UFFD_WP)\n#define _PAGE_CHG_MASK\t(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)\n#define _HPAGE_CHG_MASK (_COMMON_PAGE_CHG_MASK | _PAGE_PSE | _PAGE_PAT_LARGE)\n";

    fn names(header: &str) -> Vec<String> {
        mutants(header)
            .unwrap()
            .iter()
            .map(|m| m.term.clone())
            .collect()
    }

    #[test]
    fn one_mutant_per_bit_term_of_each_mask() {
        let bits = [
            "_PAGE_PCD",
            "_PAGE_PWT",
            "_PAGE_SPECIAL",
            "_PAGE_ACCESSED",
            "_PAGE_DIRTY_BITS",
            "_PAGE_SOFT_DIRTY",
            "_PAGE_DEVMAP",
            "_PAGE_CC",
            "_PAGE_UFFD_WP",
            "_PAGE_PAT",
            "_PAGE_PSE",
            "_PAGE_PAT_LARGE",
        ];
        assert_eq!(names(V6_12), bits);
        // 6.1 keeps _PAGE_DIRTY alone (no shadow-stack saved-dirty bit).
        let mut v6_1 = bits.to_vec();
        v6_1[4] = "_PAGE_DIRTY";
        assert_eq!(names(V6_1), v6_1);
        let masks = parse(V6_12).unwrap();
        assert_eq!(masks[0].terms[0], "PTE_PFN_MASK");
        assert_eq!((masks[0].first_line, masks[0].lines), (1, 4));
    }

    #[test]
    fn each_mutant_drops_exactly_its_term() {
        for header in [V6_12, V6_1] {
            for m in mutants(header).unwrap() {
                let applied = apply(header, &m.patch);
                let masks =
                    parse(&applied).unwrap_or_else(|e| panic!("{}: {e}\n{applied}", m.name()));
                for (before, after) in parse(header).unwrap().iter().zip(&masks) {
                    let mut want = before.terms.clone();
                    if before.name == m.mask {
                        want.retain(|t| *t != m.term);
                    }
                    assert_eq!(after.terms, want, "{}", m.name());
                }
            }
        }
    }

    #[test]
    fn the_patches_apply_with_gnu_patch() {
        let tmp = crate::support::cache::scratch("mask");
        let path = tmp.path().join(HEADER);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for m in mutants(V6_12).unwrap() {
            std::fs::write(&path, V6_12).unwrap();
            let out = std::process::Command::new("patch")
                .args(["-p1", "--forward", "--quiet"])
                .current_dir(tmp.path())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(m.patch.as_bytes())?;
                    child.wait()
                })
                .unwrap();
            assert!(out.success(), "{}:\n{}", m.name(), m.patch);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                apply(V6_12, &m.patch)
            );
        }
    }

    #[test]
    fn a_header_that_cannot_be_read_names_the_line() {
        let missing = V6_12.replace("_HPAGE_CHG_MASK", "_HPAGE_OTHER");
        assert!(parse(&missing)
            .unwrap_err()
            .contains("no `#define _HPAGE_CHG_MASK`"));
        let odd = V6_12.replace(
            "(_COMMON_PAGE_CHG_MASK | _PAGE_PAT)",
            "_COMMON_PAGE_CHG_MASK + 4",
        );
        let err = parse(&odd).unwrap_err();
        assert!(
            err.contains(":6: _PAGE_CHG_MASK is not a parenthesised OR"),
            "{err}"
        );
        let shifted = V6_12.replace("| _PAGE_PSE |", "| (_PAGE_PSE << 1) |");
        assert!(parse(&shifted)
            .unwrap_err()
            .contains("cannot read the term"));
    }

    /// Applies one of our single-hunk patches to `text` (what `patch` does).
    fn apply(text: &str, patch: &str) -> String {
        let lines: Vec<&str> = text.lines().collect();
        let header = patch.lines().nth(2).unwrap();
        let start: usize = header[4..header.find(',').unwrap()].parse().unwrap();
        let body: Vec<&str> = patch.lines().skip(3).collect();
        let old_len = body.iter().filter(|l| !l.starts_with('+')).count();
        let mut out: Vec<String> = lines[..start - 1].iter().map(|l| l.to_string()).collect();
        out.extend(
            body.iter()
                .filter(|l| !l.starts_with('-'))
                .map(|l| l[1..].to_string()),
        );
        out.extend(lines[start - 1 + old_len..].iter().map(|l| l.to_string()));
        out.join("\n") + "\n"
    }
}
