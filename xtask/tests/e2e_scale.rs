//! End-to-end: a shared compile cache (redis) and distributed compiles (distccd)
//! on the loopback: two fresh machines build the kernel this one built, byte for byte.

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;
use xtask::record::{BuildRecord, Record, Step};

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machines_share_compiles_and_build_the_same_kernel() -> Result<()> {
    let (out, mut checks, _) = start("scale", false)?;
    // The kernel this machine builds alone, to compare the others with.
    let good = out.join("probe-good.json");
    let args = strings(&[
        "probe",
        "--env",
        "native",
        "--json",
        &good.display().to_string(),
    ]);
    let (code, text) = harness(&cache_root(), &args)?;
    checks.check("this machine's kernel is good", code == Some(0), || {
        format!(
            "exit {code:?}: {}",
            xtask::support::proc::tail_lines(&text, 3)
        )
    });
    shared_cache_and_distcc(&out, &mut checks)?;
    checks.finish()
}

/// Beyond one machine, against real servers on the loopback: two "machines"
/// (fresh cache directories, each with its own local ccache) share a
/// redis-server as ccache's remote storage; the first hands its compiles to
/// a distccd. The first must compile through distccd, the second must be
/// served remotely, and both kernels must be byte-for-byte the one this
/// machine built alone (probe-good.json).
fn shared_cache_and_distcc(out: &Path, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: shared compile cache (redis-server) and distributed compiles (distccd)");
    let failed_before = checks.failed.len();
    let local = Record::read(&out.join("probe-good.json"))?;
    let local_sha = local
        .builds
        .first()
        .map(|b| b.bzimage_sha256.clone())
        .unwrap_or_default();
    let dir = out.join("at-scale");
    std::fs::create_dir_all(&dir)?;
    let (redis_port, distcc_port) = (free_port()?, free_port()?);
    let _redis = Server::start(
        "redis-server",
        &strings(&[
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
            "--logfile",
            &dir.join("redis.log").display().to_string(),
        ]),
        redis_port,
    )?;
    // distccd drops root for its own user, which must be able to write its log.
    let distcc_log = dir.join("distccd.log");
    std::fs::write(&distcc_log, "")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&distcc_log, std::fs::Permissions::from_mode(0o666))?;
    let _distccd = Server::start(
        "distccd",
        &strings(&[
            "--no-detach",
            "--daemon",
            "--listen",
            "127.0.0.1",
            "--port",
            &distcc_port.to_string(),
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
    let remote = format!("redis://127.0.0.1:{redis_port}");
    let machine =
        |name: &str, extra: &[String], env_remote: bool| -> Result<(Option<i32>, String, Record)> {
            let json = dir.join(format!("{name}.json"));
            let mut argv = strings(&[
                "--cache-dir",
                &dir.join(name).display().to_string(),
                "--verbose",
                "probe",
                "--env",
                "native",
                "--json",
                &json.display().to_string(),
            ]);
            argv.extend(extra.iter().cloned());
            println!("==> e2e: {name}: probe {}", argv[4..].join(" "));
            let mut cmd = duct::cmd(exe(), &argv)
                .stdin_null()
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked();
            if env_remote {
                cmd = cmd.env("PATVERIFY_CACHE_REMOTE", &remote);
            }
            let output = cmd.run()?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            std::fs::write(dir.join(format!("{name}.log")), &text)?;
            let record = Record::read(&json).unwrap_or_default();
            Ok((output.status.code(), text, record))
        };
    let build_secs = |json: &Record| {
        let step = Step::Build {
            variant: "probe".into(),
        };
        json.seconds(&step).unwrap_or(0.0)
    };
    // A machine that wrote no build record counts as a build that did nothing.
    let no_build = BuildRecord {
        variant: String::new(),
        build_dir: String::new(),
        bzimage: String::new(),
        reused: true,
        config_sha256: String::new(),
        bzimage_sha256: String::new(),
        ccache: None,
        cache_remote: None,
        distcc: None,
    };
    let distcc_hosts = format!("127.0.0.1:{distcc_port}/4");
    let (code_a, text_a, json_a) = machine(
        "machine-a",
        &strings(&["--cache-remote", &remote, "--distcc", &distcc_hosts]),
        false,
    )?;
    let a = json_a.builds.first().unwrap_or(&no_build);
    let jobs_on_distccd = std::fs::read_to_string(&distcc_log)?
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .count() as u64;
    let misses_a = a.ccache.map_or(0, |c| c.misses);
    checks.check(
        "machine A (empty caches, --distcc): the kernel is good",
        code_a == Some(0) && !a.reused,
        || {
            format!(
                "exit {code_a:?}: {}",
                xtask::support::proc::tail_lines(&text_a, 3)
            )
        },
    );
    checks.check(
        "machine A: its compiles went through distccd",
        misses_a > 500 && jobs_on_distccd * 2 >= misses_a,
        || {
            format!(
                "{jobs_on_distccd} jobs in {}, {misses_a} ccache misses",
                distcc_log.display()
            )
        },
    );
    checks.check(
        "machine A: -j sized for the distcc hosts (4 slots)",
        text_a.contains(" -j4 bzImage"),
        || xtask::support::proc::tail_lines(&text_a, 3),
    );
    checks.check(
        "machine A: the distcc-built kernel is byte-for-byte the local one",
        !local_sha.is_empty() && a.bzimage_sha256 == local_sha,
        || format!("{} vs local {local_sha}", a.bzimage_sha256),
    );
    let (code_b, text_b, json_b) = machine("machine-b", &[], true)?;
    let b = json_b.builds.first().unwrap_or(&no_build);
    let remote_hits = b.ccache.map_or(0, |c| c.remote_hits);
    let misses_b = b.ccache.map_or(u64::MAX, |c| c.misses);
    checks.check(
        "machine B (empty local cache, PATVERIFY_CACHE_REMOTE): the kernel is good",
        code_b == Some(0) && !b.reused,
        || {
            format!(
                "exit {code_b:?}: {}",
                xtask::support::proc::tail_lines(&text_b, 3)
            )
        },
    );
    checks.check(
        "machine B: machine A's compiles are served by redis",
        remote_hits * 100 >= misses_a * 95 && misses_b * 100 <= misses_a,
        || format!("{remote_hits} remote hits, {misses_b} misses (A missed {misses_a})"),
    );
    checks.check(
        "machine B: byte-for-byte the local kernel",
        b.bzimage_sha256 == local_sha,
        || format!("{} vs local {local_sha}", b.bzimage_sha256),
    );
    println!(
        "e2e: at scale: machine A built in {:.0} s ({misses_a} ccache misses, {jobs_on_distccd} compiles on distccd), machine B in {:.0} s ({remote_hits} remote hits, {misses_b} misses = {:.0} % hit rate)",
        build_secs(&json_a),
        build_secs(&json_b),
        100.0 * remote_hits as f64 / (remote_hits + misses_b).max(1) as f64,
    );
    // Each machine holds a kernel source and build (~3 GB): kept as
    // evidence only when a check failed; the logs and JSON stay anyway.
    if checks.failed.len() == failed_before {
        for name in ["machine-a", "machine-b"] {
            let _ = std::fs::remove_dir_all(dir.join(name));
        }
    }
    Ok(())
}
