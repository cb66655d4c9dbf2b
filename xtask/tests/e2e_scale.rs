//! End-to-end: a shared compile cache (redis) and distributed compiles (distccd)
//! on the loopback: fresh machines build the kernels this one built, byte for
//! byte, without compiling the whole kernel again.

mod common;

use anyhow::Result;
use common::*;
use std::path::{Path, PathBuf};
use xtask::record::{BuildRecord, Record, Step};

#[test]
#[ignore = "builds and boots kernels: run by `cargo xtask test`"]
fn machines_share_compiles_and_build_the_same_kernel() -> Result<()> {
    let (out, mut checks, _) = start("scale", false)?;
    // The kernels this machine builds alone, to compare the others with:
    // the tree as is, and the tree with a one-file change (the objects
    // machine A must compile through distcc).
    let good = out.join("probe-good.json");
    let local = local_probe(&good, &[], &mut checks, "this machine's kernel is good")?;
    let patch = unrelated_patch(source_tree(&local)?, &out.join("one-file.patch"))?;
    let patched = local_probe(
        &out.join("probe-patched.json"),
        &strings(&["--patch", &patch.display().to_string()]),
        &mut checks,
        "this machine's kernel with a one-file change is good",
    )?;
    let sha = |record: &Record| {
        let build = record.builds.first();
        build.map(|b| b.bzimage_sha256.clone()).unwrap_or_default()
    };
    let kernels = Kernels {
        local: sha(&local),
        patched: sha(&patched),
        patch,
    };
    shared_cache_and_distcc(&out, &kernels, &mut checks)?;
    checks.finish()
}

/// `probe --env native --json JSON EXTRA…` on this machine's cache.
fn local_probe(json: &Path, extra: &[String], checks: &mut Checks, name: &str) -> Result<Record> {
    let mut args = strings(&[
        "probe",
        "--env",
        "native",
        "--json",
        &json.display().to_string(),
    ]);
    args.extend(extra.iter().cloned());
    let (code, text) = harness(&cache_root(), &args)?;
    checks.check(name, code == Some(0), || {
        format!(
            "exit {code:?}: {}",
            xtask::support::proc::tail_lines(&text, 3)
        )
    });
    Ok(Record::read(json).unwrap_or_default())
}

/// What this machine built: the bzImages' hashes, and the one-file patch.
struct Kernels {
    local: String,
    patched: String,
    patch: PathBuf,
}

/// Beyond one machine, against real servers on the loopback: "machines"
/// (fresh cache directories) share a redis-server as ccache's remote
/// storage. A seed machine whose local ccache is this machine's fills it
/// without compiling (ccache's `reshare`); machine B (nothing local) must
/// be served remotely and build this machine's kernel byte for byte;
/// machine A gets the tree with a one-file change and `--distcc`: the
/// objects the remote cache lacks must be compiled on distccd, and its
/// kernel must be byte for byte the one this machine built of that content.
fn shared_cache_and_distcc(out: &Path, kernels: &Kernels, checks: &mut Checks) -> Result<()> {
    println!("==> e2e: shared compile cache (redis-server) and distributed compiles (distccd)");
    let failed_before = checks.failed.len();
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
    // How a machine runs: its own cache directory, the remote from an
    // environment variable or a flag, and (the seed) this machine's local
    // compile caches in its place.
    struct How<'a> {
        extra: &'a [String],
        env_remote: bool,
        seed: bool,
    }
    let machine = |name: &str, how: How| -> Result<(Option<i32>, String, Record)> {
        let json = dir.join(format!("{name}.json"));
        let root = dir.join(name);
        let mut argv = strings(&[
            "--cache-dir",
            &root.display().to_string(),
            "--verbose",
            "probe",
            "--env",
            "native",
            "--json",
            &json.display().to_string(),
        ]);
        argv.extend(how.extra.iter().cloned());
        println!("==> e2e: {name}: probe {}", argv[4..].join(" "));
        let mut cmd = duct::cmd(exe(), &argv)
            .stdin_null()
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked();
        // Each machine uses exactly the sharing its case names: a remote
        // or distcc hosts from the caller's environment (a CI runner's
        // shared cache) must not serve it. (duct applies the innermost
        // setting last: one setting per variable.)
        cmd = cmd.env_remove("PATVERIFY_DISTCC");
        cmd = if how.env_remote {
            cmd.env("PATVERIFY_CACHE_REMOTE", &remote)
        } else {
            cmd.env_remove("PATVERIFY_CACHE_REMOTE")
        };
        if how.seed {
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
        untrusted: false,
    };
    let good = |name: &str, code: Option<i32>, text: &str, build: &BuildRecord| {
        (
            format!("{name}: the kernel is good, built there"),
            code == Some(0) && !build.reused,
            format!(
                "exit {code:?}: {}",
                xtask::support::proc::tail_lines(text, 3)
            ),
        )
    };
    let mut check = |(name, ok, detail): (String, bool, String)| checks.check(&name, ok, || detail);

    let remote_flag = strings(&["--cache-remote", &remote]);
    let seed_how = How {
        extra: &remote_flag,
        env_remote: false,
        seed: true,
    };
    let (code_s, text_s, json_s) = machine("machine-seed", seed_how)?;
    let s = json_s.builds.first().unwrap_or(&no_build);
    let hits_s = s.ccache.map_or(0, |c| c.hits);
    check(good(
        "seed machine (this machine's local caches, --cache-remote)",
        code_s,
        &text_s,
        s,
    ));
    check((
        "seed machine: its compiles are this machine's (local hits), the same kernel".into(),
        hits_s > 1000 && s.bzimage_sha256 == kernels.local,
        format!(
            "{hits_s} hits; {} vs local {}",
            s.bzimage_sha256, kernels.local
        ),
    ));

    let b_how = How {
        extra: &[],
        env_remote: true,
        seed: false,
    };
    let (code_b, text_b, json_b) = machine("machine-b", b_how)?;
    let b = json_b.builds.first().unwrap_or(&no_build);
    let remote_hits = b.ccache.map_or(0, |c| c.remote_hits);
    let misses_b = b.ccache.map_or(u64::MAX, |c| c.misses);
    check(good(
        "machine B (empty local cache, PATVERIFY_CACHE_REMOTE)",
        code_b,
        &text_b,
        b,
    ));
    check((
        "machine B: the seed's compiles are served by redis".into(),
        // B's own counts: the seed's come from this machine's ccache, whose
        // counters another run on the machine may move meanwhile.
        remote_hits > 0 && misses_b * 100 <= (remote_hits + misses_b) * 5,
        format!("{remote_hits} remote hits, {misses_b} misses (the seed hit {hits_s})"),
    ));
    check((
        "machine B: byte-for-byte the local kernel".into(),
        !kernels.local.is_empty() && b.bzimage_sha256 == kernels.local,
        format!("{} vs local {}", b.bzimage_sha256, kernels.local),
    ));

    let distcc_hosts = format!("127.0.0.1:{distcc_port}/4");
    let patch = kernels.patch.display().to_string();
    let a_args = strings(&[
        "--cache-remote",
        &remote,
        "--distcc",
        &distcc_hosts,
        "--patch",
        &patch,
    ]);
    let a_how = How {
        extra: &a_args,
        env_remote: false,
        seed: false,
    };
    let (code_a, text_a, json_a) = machine("machine-a", a_how)?;
    let a = json_a.builds.first().unwrap_or(&no_build);
    let distccd_jobs: Vec<String> = std::fs::read_to_string(&distcc_log)?
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .map(str::to_string)
        .collect();
    let jobs_on_distccd = distccd_jobs.len() as u64;
    let (misses_a, remote_a) = a.ccache.map_or((0, 0), |c| (c.misses, c.remote_hits));
    check(good(
        "machine A (empty local cache, a one-file change, --distcc)",
        code_a,
        &text_a,
        a,
    ));
    // Only misses go to distcc (a few compile locally: distcc's own rule
    // for some jobs); the changed file must be among those it compiled.
    check((
        "machine A: the changed file is compiled on distccd, everything else served by redis"
            .into(),
        (1..=50).contains(&misses_a)
            && (1..=misses_a).contains(&jobs_on_distccd)
            && distccd_jobs.iter().any(|l| l.ends_with("/kernel/panic.c"))
            && remote_a > 1000,
        format!(
            "{jobs_on_distccd} jobs in {}, {misses_a} ccache misses, {remote_a} remote hits",
            distcc_log.display()
        ),
    ));
    check((
        "machine A: -j sized for the distcc hosts (4 slots)".into(),
        text_a.contains(" -j4 bzImage"),
        xtask::support::proc::tail_lines(&text_a, 3),
    ));
    check((
        "machine A: byte-for-byte the kernel this machine built of the same content".into(),
        !kernels.patched.is_empty() && a.bzimage_sha256 == kernels.patched,
        format!("{} vs local {}", a.bzimage_sha256, kernels.patched),
    ));
    println!(
        "e2e: at scale: seed in {:.0} s ({hits_s} local hits reshared), machine B in {:.0} s ({remote_hits} remote hits, {misses_b} misses), machine A in {:.0} s ({remote_a} remote hits, {misses_a} misses, {jobs_on_distccd} compiles on distccd)",
        build_secs(&json_s),
        build_secs(&json_b),
        build_secs(&json_a),
    );
    // Each machine holds a kernel source and build (~3 GB): kept as
    // evidence only when a check failed; the logs and JSON stay anyway.
    if checks.failed.len() == failed_before {
        for name in ["machine-seed", "machine-a", "machine-b"] {
            let _ = std::fs::remove_dir_all(dir.join(name));
        }
    }
    Ok(())
}
