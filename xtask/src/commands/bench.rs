//! `cargo xtask bench`: measures what a user waits for. Default scenarios
//! are cheap (warm re-runs and boots); `--slow` adds a cold verify against
//! a raw `make` of the same configuration, an edited candidate patch (with
//! ccache's hit rate) and bisect steps on content nobody built.

use crate::flags::{Bench, Scenario};
use crate::record::{Record, Step};
use crate::stages::qemu::Phases;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn min_median(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    (
        s.first().copied().unwrap_or(f64::NAN),
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN),
    )
}

/// One `verify` run: wall seconds and its record. The bench runs the
/// command as a separate process on purpose: its figure is the wall time a
/// user waits for, start-up and all.
fn verify(cache_root: &Path, out: &Path, extra: &[String]) -> Result<(f64, Record)> {
    verify_expecting(cache_root, out, extra, 0)
}

/// `verify` that must end with exit code `expected`.
fn verify_expecting(
    cache_root: &Path,
    out: &Path,
    extra: &[String],
    expected: i32,
) -> Result<(f64, Record)> {
    let json_path = out.join("bench-verify.json");
    let mut args = vec![
        "--cache-dir".to_string(),
        cache_root.display().to_string(),
        "verify".into(),
        "--json".into(),
        json_path.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let secs = timed_run(&args, expected)?;
    Ok((secs, Record::read(&json_path)?))
}

/// Every mutant of the default tree's masks, natively (exit 0 or 1: a
/// survivor is a figure here, not a failure).
fn mutants_run(cache_root: &Path, out: &Path) -> Result<MutantsRun> {
    let json = out.join("bench-mutants.json");
    let args = mutants_args(cache_root, &json, &out.join("mutants"), &[]);
    crate::output::progress("bench: mutants (one kernel per bit term of the masks)");
    let seconds = timed_run_ending(&args, &[0, 1])?;
    let record = Record::read(&json)?;
    let of = |f: fn(&crate::record::MutantRecord) -> f64| {
        let values: Vec<f64> = record.mutants.iter().map(f).filter(|s| *s > 0.0).collect();
        min_median(&values).1
    };
    let figures = MutantsRun {
        seconds,
        score: crate::record::mutation_score(&record.mutants),
        build_seconds_median: of(|m| m.build_seconds),
        boot_seconds_median: of(|m| m.boot_seconds),
        mutants: record.mutants.clone(),
    };
    crate::output::result(&format!(
        "{:<40} {seconds:.0} s, {}",
        "mutants (native)", figures.score
    ));
    Ok(figures)
}

/// `mutants --env native` in `cache_root`, its record in `json`, its
/// results in `out`, with `extra` flags.
fn mutants_args(cache_root: &Path, json: &Path, out: &Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--cache-dir".into(),
        cache_root.display().to_string(),
        "mutants".into(),
        "--env".into(),
        "native".into(),
        "--json".into(),
        json.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// Runs this harness with `args` as a user would (its own process) and
/// returns the wall seconds; any exit code but `expected` is an error.
fn timed_run(args: &[String], expected: i32) -> Result<f64> {
    timed_run_ending(args, &[expected])
}

/// `timed_run` that may end with any of the `expected` exit codes.
fn timed_run_ending(args: &[String], expected: &[i32]) -> Result<f64> {
    let started = Instant::now();
    let output = duct::cmd(std::env::current_exe()?, args)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.code().is_some_and(|c| expected.contains(&c)),
        "`{}` ended with {} during the bench, not {expected:?}:\n{}",
        args.get(2).map_or("", String::as_str),
        output.status,
        crate::support::proc::tail_lines(&String::from_utf8_lossy(&output.stdout), 10)
    );
    Ok(secs)
}

fn timing(record: &Record, step: Step) -> f64 {
    record.seconds(&step).unwrap_or(0.0)
}

fn build_of(variant: &str) -> Step {
    Step::Build {
        variant: variant.into(),
    }
}

/// The ccache counters of a run's builds, summed (hits, misses).
fn ccache_counts(record: &Record) -> (u64, u64) {
    let stats = record.builds.iter().filter_map(|b| b.ccache);
    stats.fold((0, 0), |(hits, misses), c| {
        (hits + c.hits, misses + c.misses)
    })
}

/// What a bench run measured: its JSON (`--json`) and the figures the
/// README quotes. A scenario not run leaves its fields out.
#[derive(serde::Serialize, Default)]
struct Figures {
    machine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    warm_verify_seconds: Option<Spread>,
    /// "boot VARIANT ENV" → its boots' spread.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    boot_seconds: BTreeMap<String, Spread>,
    /// Per environment, median seconds from QEMU's start to Linux's banner,
    /// the report's start, its end, QEMU's exit.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    boot_phases: BTreeMap<String, [f64; 4]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boots_one_at_a_time_seconds: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boots_one_per_core_seconds: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cold: Option<Cold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_candidate: Option<Edited>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bisect_step: Option<BisectStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thp_cost: Option<ThpCost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox_cost: Option<SandboxCost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mutants: Option<MutantsRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mutant_cost: Option<MutantCost>,
}

/// One mutant's build as `mutants` makes it (after the reference's, in a
/// cache of its own) against a raw `make` of the mutant's tree and
/// configuration (no ccache).
#[derive(serde::Serialize)]
struct MutantCost {
    mutant: String,
    reference_build_seconds: f64,
    mutant_build_seconds: f64,
    /// The mutant build's ccache counters: the objects its header does not
    /// reach hit the reference's.
    mutant_ccache: crate::model::CcacheStats,
    raw_make_seconds: f64,
    over_raw_make: f64,
}

/// A full `mutants` run of the default tree, natively: its wall time, each
/// mutant's build and boot time, and what came of them.
#[derive(serde::Serialize)]
struct MutantsRun {
    seconds: f64,
    score: String,
    /// Median over the mutants that were built (not reused) and booted.
    build_seconds_median: f64,
    boot_seconds_median: f64,
    mutants: Vec<crate::record::MutantRecord>,
}

/// Raw cold `make`s of the baseline's configuration with and without
/// transparent huge pages.
#[derive(serde::Serialize)]
struct ThpCost {
    with_thp_seconds: f64,
    without_thp_seconds: f64,
}

/// Raw cold `make`s of the baseline's tree and configuration, unconfined
/// and in the build sandbox.
#[derive(serde::Serialize)]
struct SandboxCost {
    unconfined_seconds: f64,
    sandboxed_seconds: f64,
}

/// Bisect steps: each a `probe --env native` of new content (wall time),
/// and its build.
#[derive(serde::Serialize)]
struct BisectStep {
    seconds: Spread,
    build_seconds: Spread,
}

/// The minimum and median of repeated runs (and the runs).
#[derive(serde::Serialize)]
struct Spread {
    min: f64,
    median: f64,
    samples: Vec<f64>,
}

impl Spread {
    fn of(samples: &[f64]) -> Spread {
        let (min, median) = min_median(samples);
        Spread {
            min,
            median,
            samples: samples.to_vec(),
        }
    }
}

#[derive(serde::Serialize)]
struct Cold {
    verify_seconds: f64,
    raw_make_seconds: f64,
    over_two_raw_makes: f64,
    steps: Vec<crate::record::Timing>,
}

#[derive(serde::Serialize)]
struct Edited {
    seconds: f64,
    build_baseline: f64,
    build_candidate_1: f64,
    build_candidate_2: f64,
    ccache_hits: u64,
    ccache_misses: u64,
}

impl Bench {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let out = std::env::temp_dir().join(format!("patverify-bench-{}", std::process::id()));
        std::fs::create_dir_all(&out)?;
        let mut figures = Figures::default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']))
            .unwrap_or("?");
        let machine = format!(
            "{} cores, {model}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        figures.machine = machine;

        let wants = |scenario: Scenario| {
            if self.scenarios.is_empty() {
                scenario == Scenario::Warm || self.slow
            } else {
                self.scenarios.contains(&scenario)
            }
        };
        if wants(Scenario::Cold) {
            self.cold(cache_root, &out, &mut figures)?;
        }
        if wants(Scenario::Warm) {
            self.warm(cache_root, &out, &mut figures)?;
        }
        if wants(Scenario::Edited) {
            self.edited_candidate(cache_root, &out, &mut figures)?;
        }
        if wants(Scenario::BisectStep) {
            self.bisect_steps(cache_root, &out, &mut figures)?;
        }
        if wants(Scenario::ThpCost) {
            figures.thp_cost = Some(thp_cost(cache_root, &out)?);
        }
        if wants(Scenario::SandboxCost) {
            figures.sandbox_cost = Some(sandbox_cost(cache_root, &out)?);
        }
        if wants(Scenario::Mutants) {
            figures.mutants = Some(mutants_run(cache_root, &out)?);
        }
        if wants(Scenario::MutantCost) {
            let cost = in_cold_cache(cache_root, "a mutant's build", |cold| {
                mutant_cost(cold, &out)
            })?;
            figures.mutant_cost = Some(cost);
        }
        let text = serde_json::to_string_pretty(&figures)?;
        if let Some(path) = &self.json {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        crate::output::result(&text);
        Ok(())
    }

    /// Warm re-runs, per-boot times, and boots one at a time vs one per core.
    fn warm(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        crate::output::progress("bench: priming run (builds whatever is missing)");
        verify(cache_root, out, &[])?;
        let mut totals = Vec::new();
        let mut boots: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut phases: BTreeMap<crate::model::Env, Vec<Phases>> = BTreeMap::new();
        for i in 0..self.runs {
            crate::output::progress(&format!("bench: warm verify {}/{}", i + 1, self.runs));
            let (secs, json) = verify(cache_root, out, &[])?;
            totals.push(secs);
            for env in &json.environments {
                let label = format!("boot {} {}", env.variant, env.env);
                boots.entry(label).or_default().push(env.boot_seconds);
                phases.entry(env.env).or_default().push(env.phases);
            }
        }
        for (env, seen) in &phases {
            let median = |f: fn(&Phases) -> Option<f64>| {
                let values: Vec<f64> = seen.iter().filter_map(f).collect();
                min_median(&values).1
            };
            let spans = [
                median(|p| p.kernel_start),
                median(|p| p.report_begin),
                median(|p| p.report_end),
                median(|p| p.exit),
            ];
            crate::output::result(&format!("{:<40} firmware+loader {:.2} s, kernel+module {:.2} s, report {:.2} s, power-off {:.2} s",
                format!("boot phases, {env} (medians)"),
                spans[0],
                spans[1] - spans[0],
                spans[2] - spans[1],
                spans[3] - spans[2]));
            figures.boot_phases.insert(env.to_string(), spans);
        }
        let (min, median) = min_median(&totals);
        crate::output::result(&format!(
            "{:<40} min {min:>6.1} s   median {median:>6.1} s   (target ≤ 6 s)",
            "warm verify (both envs)"
        ));
        figures.warm_verify_seconds = Some(Spread::of(&totals));
        for (label, samples) in &boots {
            let (min, median) = min_median(samples);
            crate::output::result(&format!(
                "{label:<40} min {min:>6.1} s   median {median:>6.1} s"
            ));
            figures
                .boot_seconds
                .insert(label.clone(), Spread::of(samples));
        }
        self.boot_concurrency(cache_root, out, figures)
    }

    /// The four boots of a verify one at a time against one per core.
    fn boot_concurrency(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        let mut serial = Vec::new();
        let mut parallel = Vec::new();
        for i in 0..self.runs {
            crate::output::progress(&format!(
                "bench: boots one at a time vs one per core {}/{}",
                i + 1,
                self.runs
            ));
            let one_at_a_time = ["--parallel-boots".into(), "1".into()];
            serial.push(timing(
                &verify(cache_root, out, &one_at_a_time)?.1,
                Step::Boots,
            ));
            parallel.push(timing(&verify(cache_root, out, &[])?.1, Step::Boots));
        }
        let ((smin, smed), (pmin, pmed)) = (min_median(&serial), min_median(&parallel));
        crate::output::result(&format!(
            "{:<40} min {smin:>6.1} s   median {smed:>6.1} s",
            "4 boots, one at a time"
        ));
        crate::output::result(&format!(
            "{:<40} min {pmin:>6.1} s   median {pmed:>6.1} s",
            "4 boots, one per core"
        ));
        figures.boots_one_at_a_time_seconds = Some(Spread::of(&serial));
        figures.boots_one_per_core_seconds = Some(Spread::of(&parallel));
        Ok(())
    }

    /// Cold verify (no builds, empty ccache) against the raw `make` of the
    /// same tree and configuration, twice (the two variants). Runs in a
    /// cache of its own that shares only the unpacked source and Xen, so
    /// the user's builds and ccache survive the bench.
    fn cold(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        in_cold_cache(cache_root, "cold verify", |cold| {
            self.cold_in(cold, out, figures)
        })
    }

    fn cold_in(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        let (cold, json) = verify(cache_root, out, &[])?;
        let tree = PathBuf::from(&json.variants.get(1).context("no candidate tree")?.tree);
        let config = PathBuf::from(&json.builds.get(1).context("no candidate build")?.build_dir)
            .join(".config");
        let raw_dir = out.join("raw-make");
        std::fs::create_dir_all(&raw_dir)?;
        std::fs::copy(&config, raw_dir.join(".config"))?;
        crate::output::progress("bench: raw make of the same configuration (no ccache)");
        let raw_secs = raw_make(&tree, &raw_dir, &out.join("raw-make.log"))?;
        let ratio = cold / (2.0 * raw_secs);
        crate::output::result(&format!(
            "{:<40} {cold:>6.1} s; raw make {raw_secs:.1} s ×2; ratio {ratio:.3} (target ≤ 1.05)",
            "cold verify"
        ));
        let cold_figures = Cold {
            verify_seconds: cold,
            raw_make_seconds: raw_secs,
            over_two_raw_makes: ratio,
            steps: json.timings.clone(),
        };
        // The profile that explains the ratio: where the cold verify's time went.
        for timing in &json.timings {
            crate::output::result(&format!(
                "  cold step {:<28} {:>7.1} s",
                timing.step, timing.seconds
            ));
        }
        figures.cold = Some(cold_figures);
        Ok(())
    }

    /// A patch author's edit: the v2 proposal with a changed line, next to
    /// the upstream fix. The baseline and the upstream candidate are reused;
    /// only the edited candidate is rebuilt (its header is in nearly every
    /// file, so ccache's depend mode misses on them). Exit 1 is the honest
    /// verdict: the proposal loses modes on pte_modify_direct.
    fn edited_candidate(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        let patches = crate::support::repo_dir().join("patches");
        let proposal =
            std::fs::read_to_string(patches.join(crate::stages::variant::PROPOSAL_PATCH))?;
        // A new edit each run: the same edit twice is a cached kernel, and the
        // scenario would time a warm verify.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let edited = proposal.replacen(
            "+\tpgprotval_t mask = _PAGE_CHG_MASK | _PAGE_PAT;\n",
            &format!(
                "+\tpgprotval_t mask = _PAGE_CHG_MASK | _PAGE_PAT; /* bench edit {stamp} */\n"
            ),
            1,
        );
        anyhow::ensure!(
            edited != proposal,
            "cannot edit the shipped proposal for the bench"
        );
        let patch = out.join("edited-proposal.patch");
        std::fs::write(&patch, edited)?;
        let upstream = crate::stages::variant::default_patch()
            .display()
            .to_string();
        crate::output::progress("bench: verify with an edited candidate patch");
        let (secs, json) = verify_expecting(
            cache_root,
            out,
            &[
                "--patch".into(),
                upstream,
                "--patch".into(),
                patch.display().to_string(),
            ],
            1,
        )?;
        let (hits, misses) = ccache_counts(&json);
        let rate = hits as f64 / (hits + misses).max(1) as f64;
        crate::output::result(&format!("{:<40} {secs:>6.1} s (build baseline {:.1} s, build candidate-1 {:.1} s, build candidate-2 {:.1} s; ccache {hits} hits / {misses} misses = {:.0} %)",
            "edited candidate",
            timing(&json, build_of("baseline")),
            timing(&json, build_of("candidate-1")),
            timing(&json, build_of("candidate-2")),
            rate * 100.0));
        figures.edited_candidate = Some(Edited {
            seconds: secs,
            build_baseline: timing(&json, build_of("baseline")),
            build_candidate_1: timing(&json, build_of("candidate-1")),
            build_candidate_2: timing(&json, build_of("candidate-2")),
            ccache_hits: hits,
            ccache_misses: misses,
        });
        Ok(())
    }

    /// Bisect steps as `git bisect run … probe --kernel .` makes them: a
    /// work tree (here a hard-link copy of the 6.12 source) whose content
    /// nobody built — one C file differs — so its C is all in ccache but
    /// one object. One untimed step first fills the Rust compile cache.
    fn bisect_steps(&self, cache_root: &Path, out: &Path, figures: &mut Figures) -> Result<()> {
        crate::output::progress("bench: priming run (builds whatever is missing)");
        verify(cache_root, out, &[])?;
        let source = unpacked_source(cache_root)?;
        let (mut walls, mut builds) = (Vec::new(), Vec::new());
        for step in 0..=self.runs {
            crate::output::progress(&format!("bench: bisect step {step}/{}", self.runs));
            let tree = out.join(format!("bisect-step-{step}"));
            new_content(&source, &tree, step)?;
            let json_path = out.join("bench-probe.json");
            let args: Vec<String> = vec![
                "--cache-dir".into(),
                cache_root.display().to_string(),
                "probe".into(),
                "--env".into(),
                "native".into(),
                "--kernel".into(),
                tree.display().to_string(),
                "--json".into(),
                json_path.display().to_string(),
            ];
            let secs = timed_run(&args, 0);
            let _ = std::fs::remove_dir_all(&tree);
            let secs = secs?;
            if step > 0 {
                walls.push(secs);
                builds.push(timing(&Record::read(&json_path)?, build_of("probe")));
            }
        }
        let (min, median) = min_median(&walls);
        crate::output::result(&format!("{:<40} min {min:>6.1} s   median {median:>6.1} s   (build median {:.1} s; target ≤ 60 s)",
            "bisect step (new content, C in ccache)",
            min_median(&builds).1));
        figures.bisect_step = Some(BisectStep {
            seconds: Spread::of(&walls),
            build_seconds: Spread::of(&builds),
        });
        Ok(())
    }
}

/// A raw `make bzImage` (no ccache, no harness) of `tree` into `dir`, which
/// holds the `.config`; returns its wall seconds.
fn raw_make(tree: &Path, dir: &Path, log: &Path) -> Result<f64> {
    raw_make_with(&crate::stages::kbuild::Kbuild::plain(), tree, dir, log)
}

/// The same `make`, as `kbuild` runs it (unconfined, or in a sandbox).
fn raw_make_with(
    kbuild: &crate::stages::kbuild::Kbuild,
    tree: &Path,
    dir: &Path,
    log: &Path,
) -> Result<f64> {
    let started = Instant::now();
    let jobs = crate::stages::build::local_jobs();
    let built = kbuild
        .make(tree, dir)?
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .run_logged("raw make", log)?;
    anyhow::ensure!(built.ok, "raw make failed: {}", built.tail.join("\n"));
    Ok(started.elapsed().as_secs_f64())
}

/// The baseline's tree and its build's `.config` (a native verify first,
/// which builds them if they are missing).
fn baseline_tree_and_config(cache_root: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    crate::output::progress("bench: priming run (the baseline's tree and configuration)");
    let (_, json) = verify(cache_root, out, &["--env".into(), "native".into()])?;
    let tree = PathBuf::from(&json.variants.first().context("no baseline tree")?.tree);
    let config =
        PathBuf::from(&json.builds.first().context("no baseline build")?.build_dir).join(".config");
    Ok((tree, config))
}

/// Raw cold `make`s (no ccache) of the baseline's tree and configuration,
/// with `CONFIG_TRANSPARENT_HUGEPAGE` and without it (`olddefconfig` after
/// turning it off), in that order.
fn thp_cost(cache_root: &Path, out: &Path) -> Result<ThpCost> {
    let (tree, config) = baseline_tree_and_config(cache_root, out)?;
    let mut seconds = [0.0; 2];
    for (thp, slot) in [true, false].into_iter().zip(seconds.iter_mut()) {
        let dir = out.join(if thp { "raw-thp" } else { "raw-no-thp" });
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut text = std::fs::read_to_string(&config)?;
        if !thp {
            text = text.replace(
                "CONFIG_TRANSPARENT_HUGEPAGE=y",
                "# CONFIG_TRANSPARENT_HUGEPAGE is not set",
            );
        }
        std::fs::write(dir.join(".config"), text)?;
        let make = || crate::stages::kbuild::Kbuild::plain().make(&tree, &dir);
        let log = dir.with_extension("log");
        let configured = make()?
            .arg("olddefconfig")
            .run_logged("olddefconfig", &log)?;
        anyhow::ensure!(configured.ok, "olddefconfig failed");
        let has_thp =
            std::fs::read_to_string(dir.join(".config"))?.contains("CONFIG_TRANSPARENT_HUGEPAGE=y");
        anyhow::ensure!(has_thp == thp, "THP={thp} did not survive olddefconfig");
        crate::output::progress(&format!(
            "bench: raw make, transparent huge pages {}",
            if thp { "on" } else { "off" }
        ));
        *slot = raw_make(&tree, &dir, &log)?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    crate::output::result(&format!(
        "{:<40} {:>6.1} s with THP, {:.1} s without (+{:.1} %)",
        "raw cold make",
        seconds[0],
        seconds[1],
        100.0 * (seconds[0] / seconds[1] - 1.0)
    ));
    Ok(ThpCost {
        with_thp_seconds: seconds[0],
        without_thp_seconds: seconds[1],
    })
}

/// Raw cold `make`s of the baseline's tree and configuration: unconfined,
/// then in the build sandbox (the same compiler, no ccache either time).
fn sandbox_cost(cache_root: &Path, out: &Path) -> Result<SandboxCost> {
    use crate::stages::kbuild::Kbuild;
    let (tree, config) = baseline_tree_and_config(cache_root, out)?;
    let mut seconds = [0.0; 2];
    let ways = [
        (Kbuild::plain(), "unconfined"),
        (Kbuild::plain_sandboxed(cache_root)?, "sandboxed"),
    ];
    for ((kbuild, way), slot) in ways.iter().zip(seconds.iter_mut()) {
        let dir = out.join(format!("raw-{way}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&config, dir.join(".config"))?;
        crate::output::progress(&format!("bench: raw make, {way}"));
        *slot = raw_make_with(kbuild, &tree, &dir, &dir.with_extension("log"))?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    crate::output::result(&format!(
        "{:<40} {:>6.1} s unconfined, {:.1} s sandboxed ({:.3} ×)",
        "raw cold make",
        seconds[0],
        seconds[1],
        seconds[1] / seconds[0]
    ));
    Ok(SandboxCost {
        unconfined_seconds: seconds[0],
        sandboxed_seconds: seconds[1],
    })
}

/// Runs `scenario` in a fresh cache beside `cache_root` that shares only
/// the unpacked source and Xen (no variant trees, builds or ccache), so the
/// user's builds and ccache survive the bench; removed afterwards.
fn in_cold_cache<T>(
    cache_root: &Path,
    what: &str,
    scenario: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let cold_root = cache_root.join("bench-cold");
    let _ = std::fs::remove_dir_all(&cold_root);
    std::fs::create_dir_all(&cold_root)?;
    for shared in ["src", "xen"] {
        if cache_root.join(shared).exists() {
            std::os::unix::fs::symlink(cache_root.join(shared), cold_root.join(shared))?;
        }
    }
    crate::output::progress(&format!(
        "bench: {what} (a fresh cache in {}: no variant trees, builds or ccache)",
        cold_root.display()
    ));
    let result = scenario(&cold_root);
    let _ = std::fs::remove_dir_all(&cold_root);
    result
}

/// The mutant the cost is measured on: a bit term every x86 header has.
const COST_MUTANT: &str = "_COMMON_PAGE_CHG_MASK-_PAGE_PWT";

/// `mutants --mutant COST_MUTANT` natively in `cache_root` (the reference
/// built first, then the mutant), then a raw `make` of the mutant's tree
/// with its build's `.config`.
fn mutant_cost(cache_root: &Path, out: &Path) -> Result<MutantCost> {
    let json = out.join("bench-mutant-cost.json");
    let only = ["--mutant".to_string(), COST_MUTANT.into()];
    let args = mutants_args(cache_root, &json, &out.join("mutant-cost"), &only);
    timed_run_ending(&args, &[0, 1])?;
    let record = Record::read(&json)?;
    let tree = &record.variants.iter().find(|v| v.name == COST_MUTANT);
    let build = &record.builds.iter().find(|b| b.variant == COST_MUTANT);
    let (tree, build) = (
        tree.context("no mutant tree in the record")?,
        build.context("no mutant build in the record")?,
    );
    let raw_dir = out.join("raw-make-mutant");
    let _ = std::fs::remove_dir_all(&raw_dir);
    std::fs::create_dir_all(&raw_dir)?;
    std::fs::copy(
        Path::new(&build.build_dir).join(".config"),
        raw_dir.join(".config"),
    )?;
    crate::output::progress("bench: raw make of the mutant's tree and configuration (no ccache)");
    let raw = raw_make(
        Path::new(&tree.tree),
        &raw_dir,
        &raw_dir.with_extension("log"),
    )?;
    let _ = std::fs::remove_dir_all(&raw_dir);
    let cost = MutantCost {
        mutant: COST_MUTANT.into(),
        reference_build_seconds: timing(&record, build_of("reference")),
        mutant_build_seconds: timing(&record, build_of(COST_MUTANT)),
        mutant_ccache: build.ccache.unwrap_or_default(),
        raw_make_seconds: raw,
        over_raw_make: timing(&record, build_of(COST_MUTANT)) / raw,
    };
    crate::output::result(&format!(
        "{:<40} {:>6.1} s (reference {:.1} s; ccache {} hits, {} misses); raw make {raw:.1} s; ratio {:.3} (target ≤ 1.05)",
        "mutant build",
        cost.mutant_build_seconds,
        cost.reference_build_seconds,
        cost.mutant_ccache.hits,
        cost.mutant_ccache.misses,
        cost.over_raw_make
    ));
    Ok(cost)
}

/// The unpacked 6.12 source in the cache.
fn unpacked_source(cache_root: &Path) -> Result<PathBuf> {
    let found = std::fs::read_dir(cache_root.join("src"))?
        .flatten()
        .map(|e| e.path().join("linux-source-6.12"))
        .find(|p| p.is_dir())
        .context("no unpacked linux-source-6.12 in the cache")?;
    Ok(found)
}

/// A hard-link copy of `source` at `tree` whose kernel/panic.c differs (by a
/// comment naming the step and the time): content nobody built.
fn new_content(source: &Path, tree: &Path, step: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(tree);
    crate::support::proc::Command::new("cp")
        .arg("-al")
        .arg(source)
        .arg(tree)
        .run()?;
    let file = tree.join("kernel/panic.c");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let text = std::fs::read_to_string(&file)?
        + &format!("/* patverify bench: bisect step {step} at {stamp} */\n");
    // Replaced, not written through: the copy's files are hard links.
    std::fs::remove_file(&file)?;
    std::fs::write(&file, text)?;
    Ok(())
}
