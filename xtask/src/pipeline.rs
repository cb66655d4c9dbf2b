//! The one path through the stages: open the run (cache, provisioning,
//! kernel source, toolchain) → plan its variants → build them → boot them
//! and check each report → judge. A command is a [`Job`]: it plans the
//! variants, may leave some unbooted, and says what the boots mean; the
//! pipeline keeps the run's record and timings, and hands back an
//! [`Outcome`] from which the command writes the outputs it offers.

use crate::flags::Common;
use crate::model::{Direction, Stage};
use crate::output::{self, Event};
use crate::record::{
    BitRecord, BuildRecord, EnvRecord, KernelRecord, PatchRecord, Record, ResultRecord, Step,
    Timing, ToolchainRecord, VariantRecord, Verdict,
};
use crate::stages::build::{self, Built, Kbuild};
use crate::stages::compare::Run;
use crate::stages::initramfs;
use crate::stages::patch::PatchSet;
use crate::stages::qemu::{self, Env};
use crate::stages::source::Source;
use crate::stages::toolchain::{self, Toolchain};
use crate::stages::variant::Variant;
use crate::stages::{config, report, source};
use crate::support::cache::{sha256_hex, Cache};
use crate::support::failure::{exit_code_of, fail, Kind};
use crate::support::provision;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the time went: recorded per step, printed at the end of every run.
#[derive(Default)]
pub struct Timings(Vec<(Step, Duration)>);

impl Timings {
    pub fn add(&mut self, step: Step, d: Duration) {
        self.0.push((step, d));
    }
    pub fn time<T>(&mut self, step: Step, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let out = f();
        self.add(step, started.elapsed());
        out
    }

    /// Seconds `step` took so far (summed, when timed more than once).
    pub fn seconds(&self, step: &Step) -> f64 {
        let times = self.0.iter().filter(|(s, _)| s == step);
        // + 0.0: a float sum of nothing is -0.0, which the JSON would show.
        times.map(|(_, d)| d.as_secs_f64()).sum::<f64>() + 0.0
    }
}

/// The opened run: cache (locked), output directory, Xen, kernel source.
pub struct Ctx {
    pub cache: Cache,
    /// How every make of this run is invoked (toolchain, ccache, distcc).
    pub kbuild: Kbuild,
    pub out_dir: PathBuf,
    pub xen_dir: PathBuf,
    pub source: Source,
}

/// One boot's outcome: the variant (its index in the plan), the
/// environment, and its checked report or why there is none.
pub type Boot = (usize, Env, Result<Run>);

/// What a command asks of the pipeline.
pub trait Job {
    /// What planning made; `variants()` are built, in that order.
    type Plan: Planned;

    /// The variants to build (patches the run uses noted in `record`).
    fn plan(&self, ctx: &Ctx, record: &mut Record) -> Result<Self::Plan>;

    /// Which built variants to boot, by index (all unless the job knows
    /// better: `mutants` leaves out those its build shows equivalent).
    fn to_boot(
        &self,
        _plan: &Self::Plan,
        built: &[Built],
        _so_far: &mut Tally,
    ) -> Result<Vec<usize>> {
        Ok((0..built.len()).collect())
    }

    /// The run's ending from its boots (in variant, env order; a boot
    /// that failed is an `Err` the job may end the run with).
    fn judge(
        &self,
        ctx: &Ctx,
        plan: &Self::Plan,
        boots: Vec<Boot>,
        so_far: &mut Tally,
    ) -> Result<Ending>;

    /// How a run that stopped before its verdict ends: its verdict and
    /// exit code (by default an error with the failure's own code).
    fn stopped(&self, err: &anyhow::Error) -> (Verdict, i32) {
        (Verdict::Error, exit_code_of(err))
    }
}

/// A plan's variants, to build in this order.
pub trait Planned {
    fn variants(&self) -> &[Variant];
}

/// The boots that reported, in order; the first that failed ends the run
/// (verify and probe: a kernel that does not report proves nothing).
pub fn reported(boots: Vec<Boot>) -> Result<Vec<Run>> {
    boots.into_iter().map(|(_, _, run)| run).collect()
}

/// How a run that reached its verdict ended: the verdict, the exit code and,
/// when it is a failure, the error line that says why.
pub struct Ending {
    pub verdict: Verdict,
    pub code: i32,
    pub failure: Option<anyhow::Error>,
}

impl Ending {
    /// An ending the exit code alone tells (pass, probe's good and bad).
    pub fn plain(verdict: Verdict, code: i32) -> Ending {
        Ending {
            verdict,
            code,
            failure: None,
        }
    }

    /// A failing ending: `kind`'s exit code and `why` as the error line.
    pub fn failed(verdict: Verdict, kind: Kind, why: String) -> Ending {
        Ending {
            verdict,
            code: kind.exit_code(),
            failure: Some(fail(kind, why)),
        }
    }
}

/// What the run's record holds so far and where its time went; a job adds
/// its own findings (candidates, mutants) to the record.
pub struct Tally {
    pub record: Record,
    pub timings: Timings,
}

/// A finished run: its record (verdict, exit code and timings set) and the
/// error that ended it, if any.
pub struct Outcome {
    pub record: Record,
    pub verdict: Verdict,
    pub code: i32,
    pub error: Option<anyhow::Error>,
    /// When the run started (seconds since the epoch), for its KCIDB ids.
    started_at: u64,
}

/// The files a command writes its outcome to.
#[derive(Default)]
pub struct Outputs<'a> {
    pub json: Option<&'a Path>,
    pub junit: Option<&'a Path>,
    pub kcidb: Option<&'a Path>,
}

impl Outputs<'_> {
    /// The `--json`, `--junit` and `--kcidb` of a command's common flags.
    pub fn of(common: &Common) -> Outputs<'_> {
        Outputs {
            json: common.json.as_deref(),
            junit: common.junit.as_deref(),
            kcidb: common.kcidb.as_deref(),
        }
    }
}

impl Outcome {
    /// Writes the record to each of `outputs`.
    pub fn write(&self, outputs: &Outputs) -> Result<()> {
        if let Some(path) = outputs.json {
            self.record.write(path)?;
        }
        if let Some(path) = outputs.kcidb {
            let run = format!("{}-{}", self.started_at, std::process::id());
            std::fs::write(path, crate::kcidb::document(&self.record, &run))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = outputs.junit {
            let xml = crate::junit::render(&self.record);
            std::fs::write(path, xml)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes `outputs`, then gives the run's error (or a write's).
    pub fn write_and_end(self, outputs: &Outputs) -> Result<()> {
        let written = self.write(outputs);
        match self.error {
            Some(err) => Err(err),
            None => written,
        }
    }
}

/// Runs `job` through every stage with `common`'s flags; whatever happens,
/// the outcome carries the record of what did.
pub fn run<J: Job>(common: &Common, cache_root: &Path, job: &J) -> Outcome {
    let mut pipeline = Pipeline::new(common.clone());
    let ending = pipeline.stages(cache_root, job);
    pipeline.finish(ending.unwrap_or_else(|err| {
        let (verdict, code) = job.stopped(&err);
        Ending {
            verdict,
            code,
            failure: Some(err),
        }
    }))
}

/// Records a patch file (name, hash, direction, the mails of a series).
pub fn note_patch(record: &mut Record, set: &PatchSet, direction: Direction) -> Result<()> {
    let bytes = std::fs::read(&set.file).map_err(|e| {
        fail(
            Kind::Setup,
            format!("cannot read patch {}: {e}", set.file.display()),
        )
    })?;
    let part_sha256 = set
        .parts
        .iter()
        .map(|part| std::fs::read(part).map(|b| sha256_hex(&b)))
        .collect::<std::io::Result<Vec<_>>>()?;
    record.patches.push(PatchRecord {
        file: set.file.display().to_string(),
        sha256: sha256_hex(&bytes),
        direction,
        series: set.subjects.clone(),
        parts: set.parts.iter().map(|p| p.display().to_string()).collect(),
        part_sha256,
        message_id: set.message_id.clone(),
        subject: set.subject.clone(),
    });
    Ok(())
}

/// A run in progress: its flags, record and timings.
struct Pipeline {
    common: Common,
    tally: Tally,
    started: Instant,
    started_at: u64,
}

impl Pipeline {
    fn new(common: Common) -> Self {
        Pipeline {
            common,
            tally: Tally {
                record: Record::default(),
                timings: Timings::default(),
            },
            started: Instant::now(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// open → plan → build → boot → judge.
    fn stages<J: Job>(&mut self, cache_root: &Path, job: &J) -> Result<Ending> {
        let ctx = self.open(cache_root)?;
        output::emit(Event::Stage(Stage::Variants));
        let started = Instant::now();
        let plan = job.plan(&ctx, &mut self.tally.record);
        self.tally.timings.add(Step::Variants, started.elapsed());
        let plan = plan?;
        let variants = plan.variants();
        self.note_variants(variants);
        let built = self.build(&ctx, variants)?;
        let chosen = job.to_boot(&plan, &built, &mut self.tally)?;
        let boots = self.boot_each(&ctx, variants, &built, &chosen)?;
        job.judge(&ctx, &plan, boots, &mut self.tally)
    }

    /// Locks the cache, provisions the host, and gets the kernel source.
    fn open(&mut self, cache_root: &Path) -> Result<Ctx> {
        let sharing = self.sharing();
        sharing.check()?;
        let cache = Cache::open(cache_root)?;
        let kbuild =
            Kbuild::with_ccache(&cache, &sharing)?.allow_unconfined(self.common.unconfined);
        let out_dir = match &self.common.out {
            Some(dir) => dir.clone(),
            None => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                cache
                    .dir("runs")?
                    .join(format!("{stamp}-{}", std::process::id()))
            }
        };
        std::fs::create_dir_all(&out_dir).map_err(|e| {
            fail(
                Kind::Setup,
                format!("cannot create output directory {}: {e}", out_dir.display()),
            )
        })?;
        crate::support::proc::log_commands_to(&out_dir.join("commands.log"));
        let features = match self.common.distcc {
            Some(_) => vec![provision::Feature::Pipeline, provision::Feature::Distcc],
            None => vec![provision::Feature::Pipeline],
        };
        output::emit(Event::Stage(Stage::Provision));
        let xen_dir = cache.root.join("xen");
        self.tally.timings.time(Step::Provision, || {
            provision::ensure(&cache.root, &features)
        })?;
        check_qemu(&self.common.qemu)?;
        output::emit(Event::Stage(Stage::Source));
        let common = &self.common;
        let source = self.tally.timings.time(Step::Source, || {
            source::get(&cache, common.kernel.as_deref(), common.rev.as_deref())
        })?;
        output::emit(Event::Kernel(&source.describe));
        self.tally.record.kernel = Some(KernelRecord {
            source: source.describe.clone(),
            tree: source.root.display().to_string(),
            version: source.version.to_string(),
            git_rev: source.git_rev.clone(),
        });
        let kbuild = self.toolchain_for(&source, &cache, kbuild, &xen_dir)?;
        Ok(Ctx {
            cache,
            kbuild,
            out_dir,
            xen_dir,
            source,
        })
    }

    /// The tree's toolchain (provisioned when it is not yet), recorded.
    /// Before any variant is made: a tree whose Rust no toolchain here can
    /// build is named as such (exit 9), not as a failure further down.
    fn toolchain_for(
        &mut self,
        source: &Source,
        cache: &Cache,
        kbuild: Kbuild,
        xen_dir: &Path,
    ) -> Result<Kbuild> {
        let toolchain = toolchain::choose(&source.root)?;
        if toolchain == Toolchain::DebianRustc163 {
            self.tally.timings.time(Step::Provision, || {
                provision::ensure_legacy_rust(&cache.root)
            })?;
        }
        let kbuild = kbuild.with_toolchain(toolchain);
        let record = toolchain_record(&kbuild, xen_dir, &self.common.qemu);
        self.tally.record.toolchain = Some(record);
        Ok(kbuild)
    }

    fn sharing(&self) -> build::Sharing {
        build::Sharing {
            cache_remote: self.common.cache_remote.clone(),
            distcc: self.common.distcc.clone(),
        }
    }

    fn note_variants(&mut self, variants: &[Variant]) {
        for v in variants {
            self.tally.record.variants.push(VariantRecord {
                name: v.name.clone(),
                describe: v.describe.clone(),
                key: v.key.clone(),
                tree: v.tree.display().to_string(),
            });
        }
    }

    /// Configures and builds every variant (reusing unchanged builds).
    fn build(&mut self, ctx: &Ctx, variants: &[Variant]) -> Result<Vec<Built>> {
        output::emit(Event::Stage(Stage::Build));
        let configs = crate::support::repo_dir().join("configs");
        let mut fragments = config::fragments(&configs)?;
        // The suite's needs first, so a --config fragment can still override them.
        if let Some(suite) = self.common.kselftest {
            fragments.push(configs.join(suite.config_fragment()));
        }
        for extra in &self.common.extra_configs {
            let path = extra.canonicalize().map_err(|e| {
                fail(
                    Kind::Setup,
                    format!("config fragment {}: {e}", extra.display()),
                )
            })?;
            fragments.push(path);
        }
        for fragment in &fragments {
            let text = std::fs::read_to_string(fragment)
                .with_context(|| format!("cannot read {}", fragment.display()))?;
            config::check_fragment(fragment, &text)?;
        }
        let toolchain = ctx.kbuild.toolchain().id(&ctx.cache.root);
        let jobs = self.common.jobs.unwrap_or_else(|| self.sharing().jobs());
        let mut built = Vec::new();
        for v in variants {
            let b = build::build(&ctx.kbuild, v, &fragments, &toolchain, jobs)?;
            let variant = v.name.clone();
            self.tally
                .timings
                .add(Step::Config { variant }, b.config_time);
            let variant = v.name.clone();
            self.tally
                .timings
                .add(Step::Build { variant }, b.build_time);
            let sha = |path: &Path| {
                std::fs::read(path)
                    .map(|bytes| crate::support::cache::sha256_hex(&bytes))
                    .unwrap_or_default()
            };
            self.tally.record.builds.push(BuildRecord {
                variant: v.name.clone(),
                build_dir: b.build_dir.display().to_string(),
                bzimage: b.bzimage.display().to_string(),
                reused: b.reused,
                config_sha256: sha(&b.build_dir.join(".config")),
                bzimage_sha256: sha(&b.bzimage),
                ccache: b.ccache,
                cache_remote: self.common.cache_remote.clone(),
                distcc: self.common.distcc.clone(),
                untrusted: !v.trusted,
            });
            built.push(b);
        }
        self.tally.record.sandbox = Some(ctx.kbuild.sandbox_status());
        Ok(built)
    }

    /// Boots the `chosen` variants in every environment (as many at once as
    /// there are cores); every boot's own outcome, in variant, env order.
    fn boot_each(
        &mut self,
        ctx: &Ctx,
        variants: &[Variant],
        built: &[Built],
        chosen: &[usize],
    ) -> Result<Vec<Boot>> {
        output::emit(Event::Stage(Stage::Initramfs));
        let suite = self.common.kselftest;
        let initramfs = self.tally.timings.time(Step::Initramfs, || {
            let (kbuild, cache, out) = (&ctx.kbuild, &ctx.cache, &ctx.out_dir);
            initramfs::of_each(kbuild, cache, out, suite, variants, built)
        })?;
        let boots_started = Instant::now();
        output::emit(Event::Stage(Stage::Boot));
        let envs = self.common.env.envs();
        let boots: Vec<(usize, Env)> = chosen
            .iter()
            .flat_map(|&v| envs.iter().map(move |&e| (v, e)))
            .collect();
        // Each TCG guest keeps one core busy.
        let parallel = self
            .common
            .parallel_boots
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, crate::support::proc::MAX_PARALLEL_BOOTS);
        let settings = report::Settings {
            common: &self.common,
            out_dir: &ctx.out_dir,
            xen_image: provision::xen_image(&ctx.xen_dir),
            version: ctx.source.version,
        };
        let outcomes = run_pool(&boots, parallel, |&(v, env)| {
            report::boot_and_check(&settings, &variants[v], &built[v], env, &initramfs[v])
        });
        self.tally.timings.add(Step::Boots, boots_started.elapsed());
        let mut runs = Vec::new();
        for (&(v, env), outcome) in boots.iter().zip(outcomes) {
            let run = outcome.map(|(run, elapsed, phases)| {
                self.note_run(&run, elapsed, phases);
                run
            });
            runs.push((v, env, run));
        }
        Ok(runs)
    }

    /// Records one boot: its environment and its report's rows.
    fn note_run(&mut self, run: &Run, elapsed: Duration, phases: qemu::Phases) {
        let (variant, env) = (run.variant.clone(), run.env);
        self.tally.timings.add(Step::Boot { variant, env }, elapsed);
        self.tally.record.environments.push(EnvRecord {
            variant: run.variant.clone(),
            env: run.env,
            pat_layout: run
                .report
                .pat_layout
                .iter()
                .map(|m| m.to_string())
                .collect(),
            pat_msr: run.report.pat_msr.clone(),
            boot_seconds: elapsed.as_secs_f64(),
            phases,
            kept_bits: run.report.kept_bits.clone(),
            kselftests: run.kselftests.clone(),
            pagemap: run.pagemap.clone(),
        });
        for r in &run.report.results {
            let row = ResultRecord::new(&run.variant, run.env, r.clone());
            self.tally.record.results.push(row);
        }
        for b in &run.report.bits {
            let row = BitRecord::new(&run.variant, run.env, b.clone());
            self.tally.record.bits.push(row);
        }
    }

    /// Prints the timings and sets the record's verdict, exit code, message
    /// and timings, whatever the ending.
    fn finish(mut self, ending: Ending) -> Outcome {
        self.tally.timings.add(Step::Total, self.started.elapsed());
        output::emit(Event::Timings(&self.tally.timings.0));
        let timings = self.tally.timings.0.iter().map(|(step, d)| Timing {
            step: step.clone(),
            seconds: d.as_secs_f64(),
        });
        let mut record = self.tally.record;
        record.timings = timings.collect();
        record.verdict = ending.verdict;
        record.exit_code = ending.code;
        record.message = match &ending.failure {
            None => String::new(),
            Some(err) => format!("{err:#}"),
        };
        Outcome {
            record,
            verdict: ending.verdict,
            code: ending.code,
            error: ending.failure,
            started_at: self.started_at,
        }
    }
}

/// Runs `job` on every item with `workers` threads, longest first (Xen
/// boots take twice a native one, so they start first and the natives fill
/// in around them); returns the outcomes in the items' order.
fn run_pool<T: BootCost + Sync, R: Send>(
    items: &[T],
    workers: usize,
    job: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].cost()));
    let queue = std::sync::Mutex::new(order.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(i) = next else { break };
                let outcome = job(&items[i]);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

/// How long an item of `run_pool` takes, relatively.
trait BootCost {
    fn cost(&self) -> u32;
}

impl BootCost for (usize, Env) {
    fn cost(&self) -> u32 {
        match self.1 {
            Env::Xen => 2,
            Env::Native => 1,
        }
    }
}

/// Before anything is built: the QEMU that will boot the kernels must run.
fn check_qemu(qemu: &Path) -> Result<()> {
    let found = if qemu.components().count() > 1 {
        qemu.is_file()
    } else {
        crate::support::proc::which(qemu).is_some()
    };
    if !found {
        return Err(fail(Kind::Setup, format!("QEMU program {} not found: run `cargo xtask setup` (Debian package qemu-system-x86) or pass --qemu", qemu.display())));
    }
    Ok(())
}

/// First lines of the tools' `--version` and the Xen package, for the JSON.
fn toolchain_record(kbuild: &Kbuild, xen_dir: &Path, qemu: &Path) -> ToolchainRecord {
    let cache_root = kbuild.cache_root();
    let first_line = |program: &Path| {
        provision::version_output(program)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let xen = std::fs::read_to_string(xen_dir.join("version")).unwrap_or_default();
    let tc = kbuild.toolchain();
    ToolchainRecord {
        name: tc.name().to_string(),
        rustc: first_line(&tc.rustc(cache_root)),
        clang: first_line(Path::new(&format!("clang{}", tc.llvm_suffix()))),
        bindgen: first_line(&tc.bindgen(cache_root)),
        qemu: first_line(qemu),
        xen: xen.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_starts_the_longest_boots_first_and_keeps_the_order() {
        let boots = [
            (0, Env::Native),
            (0, Env::Xen),
            (1, Env::Native),
            (1, Env::Xen),
        ];
        let started = std::sync::Mutex::new(Vec::new());
        let outcomes = run_pool(&boots, 1, |&(v, env)| {
            started.lock().unwrap().push((v, env));
            Ok(format!("{v}-{env}"))
        });
        let outcomes: Vec<String> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(outcomes, ["0-native", "0-xen", "1-native", "1-xen"]);
        let started = started.into_inner().unwrap();
        assert_eq!(started[..2], [(0, Env::Xen), (1, Env::Xen)]);
        let two = run_pool(&boots, 2, |&(v, _)| Ok(v));
        assert_eq!(two.len(), 4);
    }
}
