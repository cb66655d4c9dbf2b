//! End-to-end: a shared compile cache (redis) and distributed compiles (distccd)
//! on the loopback: fresh machines build the kernels this one built, byte for
//! byte, without compiling the whole kernel again.
//!
//! Against real servers on the loopback, "machines" (fresh cache
//! directories) share a redis-server as ccache's remote storage. A seed
//! machine whose local ccache is this machine's fills it without compiling
//! (ccache's `reshare`); machine B (nothing local) must be served remotely
//! and build this machine's kernel byte for byte; machine A gets the tree
//! with a one-file change and `--distcc`: the objects the remote cache lacks
//! must be compiled on distccd, and its kernel must be byte for byte the one
//! this machine built of that content. The machines run once, in that
//! order; each check is its own test on what they left.

mod common;

use anyhow::Result;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xtask::record::{BuildRecord, Record, Step};

/// What one probe (on this machine or a fresh one) left.
struct Machine {
    code: Option<i32>,
    text: String,
    record: Record,
}

impl Machine {
    /// Its build (a machine that wrote no record built nothing).
    fn build(&self) -> BuildRecord {
        self.record.builds.first().cloned().unwrap_or(BuildRecord {
            reused: true,
            ..BuildRecord::default()
        })
    }

    /// It said "good" and built the kernel itself.
    fn good_and_built(&self) -> bool {
        self.code == Some(0) && !self.build().reused
    }

    fn ccache(&self) -> xtask::model::CcacheStats {
        self.build().ccache.unwrap_or_default()
    }

    fn tail(&self) -> String {
        format!(
            "exit {:?}: {}",
            self.code,
            xtask::support::proc::tail_lines(&self.text, 3)
        )
    }

    fn build_seconds(&self) -> f64 {
        let step = Step::Build {
            variant: "probe".into(),
        };
        self.record.seconds(&step).unwrap_or(0.0)
    }
}

/// The scenario's runs: this machine's two kernels, then the three machines.
struct Scale {
    local: Machine,
    patched: Machine,
    seed: Machine,
    b: Machine,
    a: Machine,
    /// distccd's log lines of the compiles it did, and where the log is.
    distccd_jobs: Vec<String>,
    distcc_log: PathBuf,
}

fn scale() -> &'static Scale {
    static SCALE: OnceLock<Scale> = OnceLock::new();
    SCALE.get_or_init(|| run().expect("the scale scenario's runs"))
}

fn run() -> Result<Scale> {
    let out = scenario_dir("scale")?;
    // The kernels this machine builds alone, to compare the others with:
    // the tree as is, and the tree with a one-file change (the objects
    // machine A must compile through distcc).
    let local = local_probe(&out.join("probe-good.json"), &[])?;
    let patch = unrelated_patch(source_tree(&local.record)?, &out.join("one-file.patch"))?;
    let patch_arg = strings(&["--patch", &patch.display().to_string()]);
    let patched = local_probe(&out.join("probe-patched.json"), &patch_arg)?;
    println!("==> e2e: shared compile cache (redis-server) and distributed compiles (distccd)");
    let dir = out.join("at-scale");
    std::fs::create_dir_all(&dir)?;
    let servers = Servers::start(&dir)?;
    let remote = servers.remote();
    let seed = machine(
        &dir,
        "machine-seed",
        &strings(&["--cache-remote", &remote]),
        How::Seed,
    )?;
    let b = machine(&dir, "machine-b", &[], How::EnvRemote(&remote))?;
    let distcc_hosts = format!("127.0.0.1:{}/4", servers.distcc_port);
    let a_args = strings(&["--cache-remote", &remote, "--distcc", &distcc_hosts]);
    let a = machine(&dir, "machine-a", &[a_args, patch_arg].concat(), How::Plain)?;
    let distccd_jobs = std::fs::read_to_string(&servers.distcc_log)?
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .map(str::to_string)
        .collect();
    // Each machine holds a kernel source and build (~3 GB); their logs and
    // JSON stay as the evidence.
    for name in ["machine-seed", "machine-a", "machine-b"] {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
    let scale = Scale {
        local,
        patched,
        seed,
        b,
        a,
        distccd_jobs,
        distcc_log: servers.distcc_log.clone(),
    };
    println!(
        "e2e: at scale: seed in {:.0} s, machine B in {:.0} s, machine A in {:.0} s ({} compiles on distccd)",
        scale.seed.build_seconds(),
        scale.b.build_seconds(),
        scale.a.build_seconds(),
        scale.distccd_jobs.len()
    );
    Ok(scale)
}

/// `probe --env native --json JSON EXTRA…` on this machine's cache.
fn local_probe(json: &Path, extra: &[String]) -> Result<Machine> {
    let mut args = strings(&["probe", "--env", "native", "--json"]);
    args.push(json.display().to_string());
    args.extend(extra.iter().cloned());
    let (code, text) = harness(&cache_root(), &args)?;
    let record = Record::read(json).unwrap_or_default();
    Ok(Machine { code, text, record })
}

/// A redis-server and a distccd on the loopback, stopped when dropped.
struct Servers {
    redis_port: u16,
    distcc_port: u16,
    distcc_log: PathBuf,
    _redis: Server,
    _distccd: Server,
}

impl Servers {
    fn start(dir: &Path) -> Result<Servers> {
        let (redis_port, distcc_port) = (free_port()?, free_port()?);
        let (port, logfile) = (redis_port.to_string(), dir.join("redis.log"));
        let redis = Server::start(
            "redis-server",
            &strings(&[
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                &logfile.display().to_string(),
            ]),
            redis_port,
        )?;
        // distccd drops root for its own user, which must be able to write its log.
        let distcc_log = dir.join("distccd.log");
        std::fs::write(&distcc_log, "")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&distcc_log, std::fs::Permissions::from_mode(0o666))?;
        let port = distcc_port.to_string();
        let distccd = Server::start(
            "distccd",
            &strings(&[
                "--no-detach",
                "--daemon",
                "--listen",
                "127.0.0.1",
                "--port",
                &port,
                "--allow",
                "127.0.0.1",
                "--jobs",
                "2",
                "--log-level",
                "info",
                "--log-file",
                &distcc_log.display().to_string(),
            ]),
            distcc_port,
        )?;
        Ok(Servers {
            redis_port,
            distcc_port,
            distcc_log,
            _redis: redis,
            _distccd: distccd,
        })
    }

    fn remote(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }
}

/// How a machine shares: the remote from the flags only, from the
/// environment, or (the seed) this machine's local compile caches in place
/// of its own, written through to the remote.
enum How<'a> {
    Plain,
    EnvRemote(&'a str),
    Seed,
}

/// `probe --env native` on a fresh machine: a cache directory of its own.
fn machine(dir: &Path, name: &str, extra: &[String], how: How) -> Result<Machine> {
    let json = dir.join(format!("{name}.json"));
    let root = dir.join(name);
    let mut argv = strings(&["--cache-dir", &root.display().to_string(), "--verbose"]);
    argv.extend(strings(&["probe", "--env", "native", "--json"]));
    argv.push(json.display().to_string());
    argv.extend(extra.iter().cloned());
    println!("==> e2e: {name}: probe {}", argv[4..].join(" "));
    let mut cmd = duct::cmd(exe(), &argv)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    // Each machine uses exactly the sharing its case names: a remote or
    // distcc hosts from the caller's environment (a CI runner's shared
    // cache) must not serve it. (duct applies the innermost setting last:
    // one setting per variable.)
    cmd = cmd.env_remove("PATVERIFY_DISTCC");
    cmd = match how {
        How::EnvRemote(remote) => cmd.env("PATVERIFY_CACHE_REMOTE", remote),
        How::Plain | How::Seed => cmd.env_remove("PATVERIFY_CACHE_REMOTE"),
    };
    if let How::Seed = how {
        std::fs::create_dir_all(&root)?;
        for shared in ["ccache", "rustc-cache"] {
            std::os::unix::fs::symlink(cache_root().join(shared), root.join(shared))?;
        }
        // ccache's `reshare`: local hits are written to the remote too.
        cmd = cmd.env("CCACHE_RESHARE", "true");
    }
    let output = cmd.run()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    std::fs::write(dir.join(format!("{name}.log")), &text)?;
    let record = Record::read(&json).unwrap_or_default();
    Ok(Machine {
        code: output.status.code(),
        text,
        record,
    })
}

fn sha(machine: &Machine) -> String {
    machine.build().bzimage_sha256
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn this_machine_calls_both_of_its_kernels_good() {
    let s = scale();
    assert_eq!(s.local.code, Some(0), "{}", s.local.tail());
    assert_eq!(s.patched.code, Some(0), "{}", s.patched.tail());
    assert!(!sha(&s.local).is_empty() && sha(&s.local) != sha(&s.patched));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn the_seed_machine_builds_from_this_machines_compiles() {
    let s = scale();
    assert!(s.seed.good_and_built(), "{}", s.seed.tail());
    let hits = s.seed.ccache().hits;
    assert!(hits > 1000, "{hits} local hits");
    assert_eq!(sha(&s.seed), sha(&s.local));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machine_b_is_served_by_the_remote_cache() {
    let b = &scale().b;
    assert!(b.good_and_built(), "{}", b.tail());
    // B's own counts: the seed's come from this machine's ccache, whose
    // counters another run on the machine may move meanwhile.
    let (remote_hits, misses) = (b.ccache().remote_hits, b.ccache().misses);
    assert!(
        remote_hits > 0 && misses * 100 <= (remote_hits + misses) * 5,
        "{remote_hits} remote hits, {misses} misses"
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machine_b_builds_this_machines_kernel_byte_for_byte() {
    let s = scale();
    assert!(!sha(&s.local).is_empty());
    assert_eq!(sha(&s.b), sha(&s.local));
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machine_a_compiles_the_changed_file_on_distccd_and_the_rest_comes_from_redis() {
    let s = scale();
    assert!(s.a.good_and_built(), "{}", s.a.tail());
    let (misses, remote_hits) = (s.a.ccache().misses, s.a.ccache().remote_hits);
    let jobs = s.distccd_jobs.len() as u64;
    // Only misses go to distcc (a few compile locally: distcc's own rule
    // for some jobs); the changed file must be among those it compiled.
    assert!(
        (1..=50).contains(&misses)
            && (1..=misses).contains(&jobs)
            && s.distccd_jobs
                .iter()
                .any(|l| l.ends_with("/kernel/panic.c"))
            && remote_hits > 1000,
        "{jobs} jobs in {}, {misses} ccache misses, {remote_hits} remote hits",
        s.distcc_log.display()
    );
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machine_a_sizes_make_for_the_distcc_slots() {
    let a = &scale().a;
    assert!(a.text.contains(" -j4 bzImage"), "{}", a.tail());
}

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machine_a_builds_the_kernel_this_machine_built_of_the_same_content() {
    let s = scale();
    assert!(!sha(&s.patched).is_empty());
    assert_eq!(sha(&s.a), sha(&s.patched));
}
