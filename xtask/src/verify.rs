//! `cargo xtask verify`: the pipeline, step by step — provision, source,
//! variants, build, initramfs, boot, report, diff — and the verdict.

use crate::build::{self, Built};
use crate::cache::{sha256_hex, Cache};
use crate::diff::{self, Run, Verdict};
use crate::failure::{fail, Kind};
use crate::patch::{self, Direction};
use crate::qemu::{self, Env};
use crate::report::{self, ModeResult};
use crate::variant::{self, Spec, Variant};
use crate::{config, initramfs, provision, source};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct Verify {
    /// Kernel tree to test (a directory or git work tree; never modified).
    /// Default: Debian's linux-source-6.12 tarball, unpacked into the cache.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Git revision of --kernel to build (exported with `git archive`).
    #[arg(long, value_name = "REV", requires = "kernel")]
    pub rev: Option<String>,
    /// Candidate patch. Default: patches/0001-…-modify-mask.patch (upstream fix).
    #[arg(long, value_name = "FILE")]
    pub patch: Option<PathBuf>,
    /// Environments to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub env: EnvChoice,
    /// Seconds each boot may take before it counts as hung.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Write the machine-readable verdict and results here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep this run's JSON, console logs and KTAP here (default: under the cache).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Parallel make jobs (default: cores + 1).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Use KVM instead of TCG (guests die with emulation failures on some hosts).
    #[arg(long)]
    pub kvm: bool,
    /// Extra kernel command line for every boot (for failure-injection tests).
    #[arg(long, hide = true, default_value = "")]
    pub extra_cmdline: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvChoice {
    Native,
    Xen,
    All,
}

impl EnvChoice {
    pub fn envs(self) -> Vec<Env> {
        match self {
            EnvChoice::Native => vec![Env::Native],
            EnvChoice::Xen => vec![Env::Xen],
            EnvChoice::All => vec![Env::Native, Env::Xen],
        }
    }
}

#[derive(Serialize, Default)]
struct JsonResult {
    variant: String,
    env: &'static str,
    #[serde(flatten)]
    result: Option<ModeResult>,
}

#[derive(Serialize, Default)]
struct JsonReport {
    verdict: &'static str,
    exit_code: i32,
    message: String,
    kernel: Option<serde_json::Value>,
    patch: Option<serde_json::Value>,
    variants: Vec<serde_json::Value>,
    environments: Vec<serde_json::Value>,
    results: Vec<JsonResult>,
    timings_seconds: Vec<(String, f64)>,
}

/// Where the time went, printed at the end.
#[derive(Default)]
struct Timings(Vec<(String, Duration)>);

impl Timings {
    fn add(&mut self, step: impl Into<String>, d: Duration) {
        self.0.push((step.into(), d));
    }
    fn time<T>(&mut self, step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let out = f();
        self.add(step, started.elapsed());
        out
    }
}

impl Verify {
    pub fn run(self, cache_root: &Path) -> Result<()> {
        let started = Instant::now();
        let mut json = JsonReport::default();
        let mut timings = Timings::default();
        let outcome = self.pipeline(cache_root, &mut json, &mut timings);
        timings.add("total", started.elapsed());
        eprintln!("\ntime:");
        for (step, d) in &timings.0 {
            eprintln!("  {step:<28} {:>7.1} s", d.as_secs_f64());
        }
        json.timings_seconds = timings.0.iter().map(|(s, d)| (s.clone(), d.as_secs_f64())).collect();
        let (verdict, code, message) = match &outcome {
            Ok(()) => ("pass", 0, "the candidate keeps every cache mode; the baseline shows the bug".to_string()),
            Err(err) => {
                let code = crate::failure::exit_code_of(err);
                (if code == 1 { "fail" } else { "error" }, code, format!("{err:#}"))
            }
        };
        json.verdict = verdict;
        json.exit_code = code;
        json.message = message;
        let text = serde_json::to_string_pretty(&json)?;
        if let Some(path) = &self.json {
            std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        outcome
    }

    fn out_dir(&self, cache: &Cache) -> Result<PathBuf> {
        let dir = match &self.out {
            Some(dir) => dir.clone(),
            None => {
                let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                cache.dir("runs")?.join(format!("{stamp}-{}", std::process::id()))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail(Kind::Setup, format!("cannot create --out {}: {e}", dir.display())))?;
        Ok(dir)
    }

    fn pipeline(&self, cache_root: &Path, json: &mut JsonReport, timings: &mut Timings) -> Result<()> {
        let patch_file = self.patch.clone().unwrap_or_else(|| variant::repo_dir().join("patches").join(variant::DEFAULT_PATCH));
        let patch_bytes = std::fs::read(&patch_file)
            .map_err(|e| fail(Kind::Setup, format!("cannot read patch {}: {e}", patch_file.display())))?;
        let cache = Cache::open(cache_root)?;
        build::use_ccache_in(&cache);
        let out_dir = self.out_dir(&cache)?;
        let envs = self.env.envs();

        eprintln!("==> provision");
        let xen_dir = cache.root.join("xen");
        timings.time("provision", || provision::ensure(&xen_dir))?;

        eprintln!("==> kernel source");
        let source = timings.time("source", || source::get(&cache, self.kernel.as_deref(), self.rev.as_deref()))?;
        eprintln!("kernel: {}", source.describe);
        json.kernel = Some(serde_json::json!({"source": source.describe, "version": source.version, "git_rev": source.git_rev}));

        eprintln!("==> variants");
        let direction = timings.time("patch", || patch::detect(&source.root, &patch_file))?;
        let patch_name = patch_file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match direction {
            Direction::Forward => eprintln!("{patch_name} applies forward: baseline = the tree, candidate = tree + patch"),
            Direction::Reverse => eprintln!("the tree already contains {patch_name}: baseline = tree with it reversed, candidate = the tree"),
        }
        json.patch = Some(serde_json::json!({
            "file": patch_file.display().to_string(),
            "sha256": sha256_hex(&patch_bytes),
            "direction": format!("{direction:?}").to_lowercase(),
        }));
        let candidate_name = "candidate".to_string();
        let (baseline_spec, candidate_spec) = match direction {
            Direction::Forward => (
                Spec { name: "baseline".into(), patch: None },
                Spec { name: candidate_name.clone(), patch: Some((patch_file.as_path(), Direction::Forward)) },
            ),
            Direction::Reverse => (
                Spec { name: "baseline".into(), patch: Some((patch_file.as_path(), Direction::Reverse)) },
                Spec { name: candidate_name.clone(), patch: None },
            ),
        };
        let variants: Vec<Variant> = timings.time("variant trees", || {
            Ok(vec![variant::make(&cache, &source, baseline_spec)?, variant::make(&cache, &source, candidate_spec)?])
        })?;
        for v in &variants {
            json.variants.push(serde_json::json!({"name": v.name, "describe": v.describe, "key": v.key, "tree": v.tree.display().to_string()}));
        }

        eprintln!("==> build");
        let fragments = config::fragments(&variant::repo_dir().join("configs"))?;
        let toolchain = build::toolchain_id();
        let jobs = self.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()) + 1);
        let mut built: Vec<Built> = Vec::new();
        for v in &variants {
            let b = build::build(&cache, v, &fragments, &toolchain, jobs)?;
            timings.add(format!("config {}", v.name), b.config_time);
            timings.add(format!("build {}", v.name), b.build_time);
            built.push(b);
        }

        eprintln!("==> initramfs");
        let initramfs_path = out_dir.join("initramfs.cpio");
        timings.time("initramfs", || initramfs::write(&initramfs::build_init()?, &initramfs_path))?;

        eprintln!("==> boot");
        let boots: Vec<(usize, Env)> = (0..variants.len()).flat_map(|v| envs.iter().map(move |&e| (v, e))).collect();
        // Each TCG guest keeps one core busy: boot as many at once as there are cores.
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut outcomes = Vec::new();
        for batch in boots.chunks(parallel) {
            let results: Vec<Result<(Run, Duration)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|&(v, env)| {
                        let (variant, built) = (&variants[v], &built[v]);
                        let (initramfs, xen_dir, out_dir) = (&initramfs_path, &xen_dir, &out_dir);
                        scope.spawn(move || self.boot_one(variant, built, env, initramfs, xen_dir, out_dir))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("boot thread panicked")))).collect()
            });
            outcomes.extend(results);
        }
        let mut runs: Vec<Run> = Vec::new();
        for outcome in outcomes {
            let (run, elapsed) = outcome?;
            timings.add(format!("boot {}-{}", run.variant, run.env.name()), elapsed);
            json.environments.push(serde_json::json!({
                "variant": run.variant, "env": run.env.name(),
                "pat_layout": run.report.pat_layout, "pat_msr": run.report.pat_msr,
                "boot_seconds": elapsed.as_secs_f64(),
            }));
            for r in &run.report.results {
                json.results.push(JsonResult { variant: run.variant.clone(), env: run.env.name(), result: Some(r.clone()) });
            }
            runs.push(run);
        }

        let (baseline, candidate): (Vec<Run>, Vec<Run>) = runs.into_iter().partition(|r| r.variant == "baseline");
        println!();
        println!("kernel    {}", source.describe);
        println!("baseline  {}", variants[0].describe);
        println!("{:<9} {}", candidate_name, variants[1].describe);
        println!();
        for env in &envs {
            let b = baseline.iter().find(|r| r.env == *env).context("missing baseline run")?;
            let c = candidate.iter().find(|r| r.env == *env).context("missing candidate run")?;
            println!("{}", diff::table(*env, b, c));
        }
        println!("results: {}", out_dir.display());
        match diff::verdict(&baseline, &candidate) {
            Verdict::Pass => {
                println!("PASS: {candidate_name} keeps every cache mode; the baseline loses some (bug reproduced)");
                Ok(())
            }
            Verdict::CandidateLost(lost) => Err(fail(Kind::CandidateLost, format!("FAIL: {candidate_name} loses {}", lost.join(", ")))),
            Verdict::BaselineNotReproduced(envs) => {
                let names: Vec<&str> = envs.iter().map(|e| e.name()).collect();
                Err(fail(
                    Kind::BaselineNotReproduced,
                    format!("the baseline kept every mode in {}: the bug was not reproduced, so the candidate proves nothing", names.join(", ")),
                ))
            }
        }
    }

    fn boot_one(&self, v: &Variant, b: &Built, env: Env, initramfs: &Path, xen_dir: &Path, out_dir: &Path) -> Result<(Run, Duration)> {
        let label = format!("{}-{}", v.name, env.name());
        let xen_image = provision::xen_image(xen_dir);
        let boot = qemu::Boot {
            env,
            bzimage: &b.bzimage,
            initramfs,
            xen: (env == Env::Xen).then_some(xen_image.as_path()),
            timeout: Duration::from_secs(self.timeout),
            kvm: self.kvm,
            console_log: out_dir.join(format!("{label}.console.log")),
            extra_cmdline: &self.extra_cmdline,
        };
        let console = qemu::run(&boot)?;
        let where_ = |what: String| {
            fail(Kind::Boot, format!("{label}: {what} (console log: {})", boot.console_log.display()))
        };
        let ktap = match report::extract(&console.text) {
            Ok(ktap) => ktap,
            Err(problem) => {
                // An environment that never came up explains a missing report best.
                qemu::check_env(env, &console.text).map_err(&where_)?;
                return Err(match problem {
                    report::BootProblem::NoReport if console.timed_out => {
                        where_(format!("no report within the {} s timeout (hang)", self.timeout))
                    }
                    problem => where_(problem.to_string()),
                });
            }
        };
        qemu::check_env(env, &console.text).map_err(&where_)?;
        let ktap_path = out_dir.join(format!("{label}.ktap"));
        std::fs::write(&ktap_path, &ktap)?;
        let parsed = report::parse_ktap(&ktap).map_err(|e| where_(format!("garbled KTAP report: {e}")))?;
        if env == Env::Xen && parsed.pat_layout == qemu::LINUX_PAT_LAYOUT {
            return Err(where_("the guest reports Linux's native PAT layout, not Xen's: it did not run with Xen's PAT".into()));
        }
        eprintln!("  [{label}] report received in {:.1} s", console.elapsed.as_secs_f64());
        Ok((Run { variant: v.name.clone(), env, report: parsed }, console.elapsed))
    }
}
