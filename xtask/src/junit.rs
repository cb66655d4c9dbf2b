//! `--junit FILE`: the run's JSON record as JUnit XML for CI systems. A
//! suite per variant and environment, a test case per path and mode. A mode
//! a candidate (or probed tree) loses is a failure; the baseline's losses
//! are the bug being reproduced, so its suite instead has one case per
//! environment that fails when the baseline lost nothing. A run that ended
//! in an error (build, boot, setup) is one case with an <error>.

use serde_json::Value;
use std::fmt::Write;

pub fn render(json: &Value) -> String {
    let results: Vec<&Value> = json["results"].as_array().into_iter().flatten().collect();
    let mut suites: Vec<(String, String)> = Vec::new();
    for r in &results {
        let key = (str_of(&r["variant"]), str_of(&r["env"]));
        if !suites.contains(&key) {
            suites.push(key);
        }
    }
    let mut body = String::new();
    let (mut total, mut failures, mut skipped) = (0, 0, 0);
    for (variant, env) in &suites {
        let in_suite: Vec<&&Value> = results
            .iter()
            .filter(|r| str_of(&r["variant"]) == *variant && str_of(&r["env"]) == *env)
            .collect();
        let mut cases = String::new();
        let (mut tests, mut failed, mut skips) = (0, 0, 0);
        let class = format!("patverify.{variant}.{env}");
        for r in &in_suite {
            tests += 1;
            let name = format!("{}.{}", str_of(&r["path"]), str_of(&r["requested"]));
            let detail = format!(
                "observed {} (PTE {} → {})",
                str_of(&r["observed"]),
                str_of(&r["pte_before"]),
                str_of(&r["pte_after"])
            );
            let inner = if let Some(reason) = r["skipped"].as_str() {
                skips += 1;
                format!("<skipped message=\"{}\"/>", escape(reason))
            } else if r["kept"] == true || variant == "baseline" {
                format!("<system-out>{}</system-out>", escape(&detail))
            } else {
                failed += 1;
                format!(
                    "<failure message=\"{} lost: {}\">{}</failure>",
                    escape(&str_of(&r["requested"])),
                    escape(&str_of(&r["observed"])),
                    escape(&detail)
                )
            };
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\">{inner}</testcase>\n",
                escape(&class),
                escape(&name)
            );
        }
        if variant == "baseline" {
            tests += 1;
            let reproduced = in_suite
                .iter()
                .any(|r| r["kept"] == false && r["skipped"].is_null());
            let inner = if reproduced {
                String::new()
            } else {
                failed += 1;
                "<failure message=\"the baseline kept every mode: bug not reproduced\"/>"
                    .to_string()
            };
            let _ = write!(cases, "    <testcase classname=\"{}\" name=\"baseline reproduces the bug\">{inner}</testcase>\n", escape(&class));
        }
        total += tests;
        failures += failed;
        skipped += skips;
        let _ = write!(
            body,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skips}\">\n{cases}  </testsuite>\n",
            escape(&class)
        );
    }
    let mut errors = 0;
    if json["verdict"] == "error" {
        errors = 1;
        total += 1;
        let _ = write!(
            body,
            "  <testsuite name=\"patverify.run\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n    <testcase classname=\"patverify.run\" name=\"run\"><error message=\"{}\"/></testcase>\n  </testsuite>\n",
            escape(&str_of(&json["message"]))
        );
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"patverify\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">\n{body}</testsuites>\n"
    )
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(variant: &str, env: &str, path: &str, mode: &str, observed: &str) -> Value {
        json!({"variant": variant, "env": env, "path": path, "requested": mode, "observed": observed,
               "pte_before": "0x1", "pte_after": "0x2", "kept": mode == observed})
    }

    #[test]
    fn candidate_losses_fail_baseline_losses_reproduce() {
        let mut skipped = result(
            "candidate",
            "xen",
            "pmd_modify_ioremap_encoding",
            "WB",
            "skip",
        );
        skipped["kept"] = json!(false);
        skipped["skipped"] = json!("Xen PV has no 2 MiB pages");
        let run = json!({"verdict": "fail", "results": [
            result("baseline", "native", "mprotect", "WT", "UC"),
            result("baseline", "native", "mprotect", "WB", "WB"),
            result("candidate", "native", "mprotect", "WT", "UC"),
            result("candidate", "native", "mprotect", "WB", "WB"),
            skipped,
        ]});
        let xml = render(&run);
        assert!(xml.starts_with("<?xml version=\"1.0\""), "{xml}");
        assert!(xml.contains("<testsuites name=\"patverify\" tests=\"6\" failures=\"1\" errors=\"0\" skipped=\"1\">"), "{xml}");
        assert!(
            xml.contains(
                "<testsuite name=\"patverify.baseline.native\" tests=\"3\" failures=\"0\""
            ),
            "{xml}"
        );
        assert!(xml.contains("name=\"mprotect.WT\"><failure message=\"WT lost: UC\">observed UC (PTE 0x1 → 0x2)</failure>"), "{xml}");
        assert!(
            xml.contains("<skipped message=\"Xen PV has no 2 MiB pages\"/>"),
            "{xml}"
        );
    }

    #[test]
    fn a_baseline_that_keeps_everything_fails_and_errors_are_named() {
        let run = json!({"verdict": "error", "message": "build failed: <a> & \"b\"", "results": [result("baseline", "xen", "mprotect", "WC", "WC")]});
        let xml = render(&run);
        assert!(
            xml.contains("name=\"baseline reproduces the bug\"><failure"),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"build failed: &lt;a&gt; &amp; &quot;b&quot;\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
    }
}
