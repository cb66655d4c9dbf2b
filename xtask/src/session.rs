//! What verify and probe share: the common flags, the cache and output
//! directory, provisioning and the kernel source, building a set of
//! variants, booting them in every environment, and the record of the run
//! (timings, JSON) that is written whatever the outcome.

use crate::flags::{Common, EnvChoice};
use crate::model::kselftest::Suite;
use crate::model::{Direction, Stage};
use crate::output::{self, Event};
use crate::record::{
    BitRecord, BuildRecord, EnvRecord, KernelRecord, PatchRecord, Record, ResultRecord, Step,
    Timing, ToolchainRecord, VariantRecord, Verdict,
};
use crate::stages::build::{self, Built, Kbuild};
use crate::stages::compare::Run;
use crate::stages::ktap;
use crate::stages::patch::PatchSet;
use crate::stages::qemu::{self, Env};
use crate::stages::source::Source;
use crate::stages::toolchain::{self, Toolchain};
use crate::stages::variant::Variant;
use crate::stages::{config, initramfs, kselftest, source};
use crate::support::cache::{sha256_hex, Cache};
use crate::support::failure::{fail, Kind};
use crate::support::provision;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl EnvChoice {
    pub fn envs(self) -> Vec<Env> {
        match self {
            EnvChoice::Native => vec![Env::Native],
            EnvChoice::Xen => vec![Env::Xen],
            EnvChoice::All => vec![Env::Native, Env::Xen],
        }
    }
}

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
        times.map(|(_, d)| d.as_secs_f64()).sum()
    }
}

/// A run in progress: its record, and once opened, its cache and outputs.
pub struct Session {
    pub common: Common,
    pub record: Record,
    pub timings: Timings,
    started: Instant,
    /// When the run started (seconds since the epoch), for its KCIDB ids.
    started_at: u64,
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

impl Session {
    /// Records a patch file (name, hash, direction, the mails of a series) in
    /// the run's record.
    pub fn note_patch(&mut self, set: &PatchSet, direction: Direction) -> Result<()> {
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
        self.record.patches.push(PatchRecord {
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

    pub fn new(common: Common) -> Self {
        Session {
            common,
            record: Record::default(),
            timings: Timings::default(),
            started: Instant::now(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Locks the cache, provisions the host, and gets the kernel source.
    pub fn open(&mut self, cache_root: &Path) -> Result<Ctx> {
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
        self.timings.time(Step::Provision, || {
            provision::ensure(&cache.root, &features)
        })?;
        check_qemu(&self.common.qemu)?;
        output::emit(Event::Stage(Stage::Source));
        let common = &self.common;
        let source = self.timings.time(Step::Source, || {
            source::get(&cache, common.kernel.as_deref(), common.rev.as_deref())
        })?;
        output::emit(Event::Kernel(&source.describe));
        self.record.kernel = Some(KernelRecord {
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
            self.timings.time(Step::Provision, || {
                provision::ensure_legacy_rust(&cache.root)
            })?;
        }
        let kbuild = kbuild.with_toolchain(toolchain);
        let record = toolchain_record(&kbuild, xen_dir, &self.common.qemu);
        self.record.toolchain = Some(record);
        Ok(kbuild)
    }

    fn sharing(&self) -> build::Sharing {
        build::Sharing {
            cache_remote: self.common.cache_remote.clone(),
            distcc: self.common.distcc.clone(),
        }
    }

    pub fn note_variants(&mut self, variants: &[Variant]) {
        for v in variants {
            self.record.variants.push(VariantRecord {
                name: v.name.clone(),
                describe: v.describe.clone(),
                key: v.key.clone(),
                tree: v.tree.display().to_string(),
            });
        }
    }

    /// Configures and builds every variant (reusing unchanged builds).
    pub fn build(&mut self, ctx: &Ctx, variants: &[Variant]) -> Result<Vec<Built>> {
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
            self.timings.add(Step::Config { variant }, b.config_time);
            let variant = v.name.clone();
            self.timings.add(Step::Build { variant }, b.build_time);
            let sha = |path: &Path| {
                std::fs::read(path)
                    .map(|bytes| crate::support::cache::sha256_hex(&bytes))
                    .unwrap_or_default()
            };
            self.record.builds.push(BuildRecord {
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
        self.record.sandbox = Some(ctx.kbuild.sandbox_status());
        Ok(built)
    }

    /// Boots every variant in every environment (as many at once as there
    /// are cores) and returns the parsed reports, in variant, env order;
    /// the first boot that failed ends the run.
    pub fn boot(&mut self, ctx: &Ctx, variants: &[Variant], built: &[Built]) -> Result<Vec<Run>> {
        self.boot_each(ctx, variants, built)?
            .into_iter()
            .map(|(_, _, run)| run)
            .collect()
    }

    /// Every boot's own outcome, in variant, env order (`mutants`: a
    /// kernel that oopses is a finding, not the end of the run).
    pub fn boot_each(
        &mut self,
        ctx: &Ctx,
        variants: &[Variant],
        built: &[Built],
    ) -> Result<Vec<(usize, Env, Result<Run>)>> {
        output::emit(Event::Stage(Stage::Initramfs));
        let initramfs = self.timings.time(Step::Initramfs, || {
            initramfs_of_each(&self.common, ctx, variants, built)
        })?;
        let boots_started = Instant::now();

        output::emit(Event::Stage(Stage::Boot));
        let envs = self.common.env.envs();
        let boots: Vec<(usize, Env)> = (0..variants.len())
            .flat_map(|v| envs.iter().map(move |&e| (v, e)))
            .collect();
        // Each TCG guest keeps one core busy.
        let parallel = self
            .common
            .parallel_boots
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, crate::support::proc::MAX_PARALLEL_BOOTS);
        let common = &self.common;
        let outcomes = run_pool(&boots, parallel, |&(v, env)| {
            boot_one(common, ctx, &variants[v], &built[v], env, &initramfs[v])
        });
        self.timings.add(Step::Boots, boots_started.elapsed());
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
        self.timings.add(Step::Boot { variant, env }, elapsed);
        self.record.environments.push(EnvRecord {
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
            self.record.results.push(row);
        }
        for b in &run.report.bits {
            let row = BitRecord::new(&run.variant, run.env, b.clone());
            self.record.bits.push(row);
        }
    }

    /// Prints the timings and writes the JSON (and JUnit), whatever the
    /// outcome; `verdict` names the outcome and its exit code.
    pub fn finish(
        self,
        outcome: Result<()>,
        verdict: impl FnOnce(&Result<()>) -> (Verdict, i32),
    ) -> Result<()> {
        self.finish_with_record(outcome, verdict).0
    }

    /// `finish`, handing back the record too (a matrix keeps each job's).
    pub fn finish_with_record(
        mut self,
        outcome: Result<()>,
        verdict: impl FnOnce(&Result<()>) -> (Verdict, i32),
    ) -> (Result<()>, Record) {
        let written = self.write_outputs(outcome, verdict);
        (written, self.record)
    }

    fn write_outputs(
        &mut self,
        outcome: Result<()>,
        verdict: impl FnOnce(&Result<()>) -> (Verdict, i32),
    ) -> Result<()> {
        self.timings.add(Step::Total, self.started.elapsed());
        output::emit(Event::Timings(&self.timings.0));
        self.record.timings = self
            .timings
            .0
            .iter()
            .map(|(step, d)| Timing {
                step: step.clone(),
                seconds: d.as_secs_f64(),
            })
            .collect();
        let (verdict, code) = verdict(&outcome);
        self.record.verdict = verdict;
        self.record.exit_code = code;
        self.record.message = match &outcome {
            Ok(()) => String::new(),
            Err(err) => format!("{err:#}"),
        };
        if let Some(path) = &self.common.json {
            self.record.write(path)?;
        }
        if let Some(path) = &self.common.kcidb {
            let run = format!("{}-{}", self.started_at, std::process::id());
            std::fs::write(path, crate::kcidb::document(&self.record, &run))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = &self.common.junit {
            let xml = crate::junit::render(&self.record);
            std::fs::write(path, xml)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        outcome
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

/// The initramfs each variant boots with: one for all, or with
/// `--kselftest` one per variant carrying the selftests built from its tree.
fn initramfs_of_each(
    common: &Common,
    ctx: &Ctx,
    variants: &[Variant],
    built: &[Built],
) -> Result<Vec<Initramfs>> {
    let init = initramfs::build_init()?;
    let Some(suite) = common.kselftest else {
        let path = ctx.out_dir.join("initramfs.cpio");
        initramfs::write(&init, &path)?;
        let shared = Initramfs {
            path,
            kselftests: None,
        };
        return Ok(variants.iter().map(|_| shared.clone()).collect());
    };
    let mut each = Vec::new();
    for (v, b) in variants.iter().zip(built) {
        let kbuild = ctx.kbuild.for_variant(v.trusted);
        let config = b.build_dir.join(".config");
        let programs = kselftest::build(&kbuild, &ctx.cache, suite, &v.tree, &config)?;
        let path = ctx.out_dir.join(format!("initramfs-{}.cpio", v.name));
        initramfs::write_with(&init, &path, &programs.programs)?;
        each.push(Initramfs {
            path,
            kselftests: Some((suite, std::sync::Arc::new(programs))),
        });
    }
    Ok(each)
}

/// What a variant's guest starts from.
#[derive(Clone)]
struct Initramfs {
    path: std::path::PathBuf,
    /// The selftests in it (`--kselftest`), as built.
    kselftests: Option<(Suite, std::sync::Arc<kselftest::Built>)>,
}

fn boot_one(
    common: &Common,
    ctx: &Ctx,
    v: &Variant,
    b: &Built,
    env: Env,
    initramfs: &Initramfs,
) -> Result<(Run, Duration, qemu::Phases)> {
    let label = format!("{}-{env}", v.name);
    let xen_image = provision::xen_image(&ctx.xen_dir);
    let vmlinux = b.build_dir.join("vmlinux");
    let boot = qemu::Boot {
        qemu: &common.qemu,
        env,
        dom0: match (&common.dom0_kernel, env) {
            (Some(fake), Env::Xen) => fake,
            _ => &vmlinux,
        },
        vmlinux: &vmlinux,
        firmware: qemu::native_firmware(ctx.source.version),
        initramfs: &initramfs.path,
        xen: (env == Env::Xen).then_some(xen_image.as_path()),
        timeout: Duration::from_secs(common.timeout + initramfs.kselftest_seconds()),
        kvm: common.kvm,
        console_log: ctx.out_dir.join(format!("{label}.console.log")),
        extra_cmdline: &common.extra_cmdline,
        stop_after: patverify_protocol::GUEST_DONE,
    };
    let console = qemu::run(&boot)?;
    let log = boot.console_log.display();
    let named = |what: String| fail(Kind::Boot, format!("{label}: {what} (console log: {log})"));
    let ktap = report_of(env, &console, common.timeout).map_err(&named)?;
    std::fs::write(ctx.out_dir.join(format!("{label}.ktap")), &ktap)?;
    let parsed = ktap::parse_ktap(&ktap).map_err(|e| named(format!("garbled KTAP report: {e}")))?;
    let series = Some(ctx.source.version.series());
    ktap::check_rows(&parsed, env, series).map_err(|e| named(format!("incomplete report: {e}")))?;
    ran_with_its_pat(env, &parsed).map_err(&named)?;
    output::emit(Event::ReportReceived {
        label: &label,
        took: console.elapsed,
    });
    let pagemap = ktap::pagemap_rows(&console.text)
        .map_err(|e| named(format!("garbled pagemap rows: {e}")))?;
    let kselftests = initramfs.kselftest_results(&console.text);
    let (variant, report) = (v.name.clone(), parsed);
    let run = Run {
        variant,
        env,
        report,
        kselftests,
        pagemap,
    };
    Ok((run, console.elapsed, console.phases))
}

/// Under Xen, the guest must report Xen's PAT layout, not Linux's own.
fn ran_with_its_pat(env: Env, report: &crate::model::rows::Report) -> Result<(), String> {
    if env == Env::Xen && report.pat_layout == qemu::LINUX_PAT_LAYOUT {
        return Err(
            "the guest reports Linux's native PAT layout, not Xen's: it did not run with Xen's PAT"
                .into(),
        );
    }
    Ok(())
}

impl Initramfs {
    /// What the selftests add to a boot's time limit: each one's own limit.
    fn kselftest_seconds(&self) -> u64 {
        self.kselftests.as_ref().map_or(0, |(_, built)| {
            built.programs.len() as u64 * patverify_protocol::KSELFTEST_SECONDS
        })
    }

    /// The selftests' rows from a boot's console.
    fn kselftest_results(&self, console: &str) -> Vec<crate::model::kselftest::KselftestResult> {
        match &self.kselftests {
            Some((suite, programs)) => kselftest::results(*suite, programs, console),
            None => Vec::new(),
        }
    }
}

/// The module's report from a boot's console, in the environment it was
/// meant to run in; else why not (an environment that never came up
/// explains a missing report best).
fn report_of(env: Env, console: &qemu::Console, timeout: u64) -> Result<String, String> {
    let ktap = ktap::extract(&console.text);
    qemu::check_env(env, &console.text)?;
    ktap.map_err(|problem| no_report(&problem, console, timeout))
}

/// Why a boot left no usable report: a hang, QEMU dying, or what the
/// console showed.
fn no_report(problem: &ktap::BootProblem, console: &qemu::Console, timeout: u64) -> String {
    match problem {
        ktap::BootProblem::NoReport if console.timed_out => {
            format!("no report within the {timeout} s timeout (hang)")
        }
        ktap::BootProblem::NoReport if console.failed_status.is_some() => {
            let lines = console.text.lines().rev();
            let last = lines.map(str::trim).find(|l| !l.is_empty());
            let status = console.failed_status.map(|s| s.to_string());
            format!(
                "QEMU died ({}) before the guest reported; last line: {:?}",
                status.unwrap_or_default(),
                last.unwrap_or("(no output)")
            )
        }
        problem => problem.to_string(),
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
