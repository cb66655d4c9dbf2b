//! How a run invokes the kernel's `make`: the tree's toolchain (see
//! toolchain.rs), reproducible build metadata, and ccache
//! with its remote storage and distcc workers. A `Kbuild` value carries all
//! of it to every stage that runs make (configure, build, the bench's raw
//! make); nothing is set in the harness's own environment.

pub use crate::model::CcacheStats;
use crate::stages::toolchain::Toolchain;
use crate::support::cache::{write_atomic, Cache};
use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use crate::support::rustc_cache;
use crate::support::sandbox::{absolute, Handover, Sandbox};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The compiler and environment every `make` of this run gets.
#[derive(Clone, Debug)]
pub struct Kbuild {
    /// The ccache wrapper `CC=` starts with (None: clang alone).
    wrapper: Option<PathBuf>,
    /// ccache's (and distcc's) settings, for make and for `ccache --print-stats`.
    env: Vec<(String, String)>,
    toolchain: Toolchain,
    /// Where an unpacked toolchain lives.
    cache_root: PathBuf,
    /// The sandbox every make (and the tree's scripts) runs in; None only
    /// for the bench's raw make, the reference a plain `make` is.
    sandbox: Option<Sandbox>,
    /// The Rust compile cache's directory.
    rustc_cache: PathBuf,
    /// Build unconfined where the sandbox cannot run (`--unconfined`).
    unconfined: bool,
}

/// The compile caches of builds whose variant is not trusted (a patch from
/// outside the repository): ccache's and the Rust compile cache's, beside
/// the shared ones under the cache root.
pub const UNTRUSTED_CCACHE: &str = "ccache-untrusted";
pub const UNTRUSTED_RUSTC_CACHE: &str = "rustc-cache-untrusted";

impl Kbuild {
    /// clang without ccache (the bench's raw make).
    pub fn plain() -> Self {
        Kbuild {
            wrapper: None,
            env: Vec::new(),
            toolchain: Toolchain::RustcWeb,
            cache_root: PathBuf::new(),
            sandbox: None,
            rustc_cache: PathBuf::new(),
            unconfined: false,
        }
    }

    /// clang without ccache, in the sandbox of a run whose cache is
    /// `cache_root` (the bench's measure of what the sandbox costs).
    pub fn plain_sandboxed(cache_root: &Path) -> Result<Self> {
        Ok(Kbuild {
            sandbox: Some(build_sandbox(cache_root, false)?),
            ..Kbuild::plain()
        })
    }

    /// The make of a variant: a trusted one's writes the shared compile
    /// caches; an untrusted one's (a patch from outside the repository)
    /// writes only a namespace of its own — ccache and the Rust compile
    /// cache under `*-untrusted`, the remote storage read-only — so that no
    /// object it makes can be served to a later trusted build.
    pub fn for_variant(&self, trusted: bool) -> Kbuild {
        let mut kbuild = self.clone();
        if trusted || kbuild.sandbox.is_none() {
            return kbuild;
        }
        let ccache = self.cache_root.join(UNTRUSTED_CCACHE);
        kbuild.rustc_cache = self.cache_root.join(UNTRUSTED_RUSTC_CACHE);
        for (key, value) in &mut kbuild.env {
            match key.as_str() {
                "CCACHE_DIR" => *value = ccache.display().to_string(),
                "CCACHE_REMOTE_STORAGE" => *value = read_only(value),
                _ => {}
            }
        }
        if let Some(sandbox) = &mut kbuild.sandbox {
            sandbox.writable = vec![absolute(&ccache), absolute(&kbuild.rustc_cache)];
        }
        kbuild
    }

    /// The same, for a tree that takes another toolchain.
    pub fn with_toolchain(&self, toolchain: Toolchain) -> Self {
        Kbuild {
            toolchain,
            ..self.clone()
        }
    }

    /// What confines this run's builds, for the record: "bubblewrap as
    /// patverify-build", "bubblewrap", or why there is none.
    pub fn sandbox_status(&self) -> String {
        use crate::support::sandbox::{available, Root, USER};
        let how = match (&self.sandbox, available()) {
            (None, _) => return "none (a raw make)".into(),
            (Some(_), Err(why)) => return format!("unavailable: {why}"),
            (Some(s), Ok(root)) if s.user.is_some() => (format!("bubblewrap, as {USER}"), root),
            (Some(_), Ok(root)) => ("bubblewrap".into(), root),
        };
        match how {
            (text, Root::Direct) => text,
            (text, Root::Rebound(_)) => {
                format!("{text} (its root rebound: / is no mount point here)")
            }
        }
    }

    pub fn toolchain(&self) -> Toolchain {
        self.toolchain
    }

    /// The cache the builds live in (for entries beside them, such as the
    /// configurations).
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }

    /// The kernel's C through ccache in `cache` (and the remote storage and
    /// distcc hosts of `sharing`). Paths are hashed relative to the cache
    /// root so variant trees share entries.
    pub fn with_ccache(cache: &Cache, sharing: &Sharing) -> Result<Self> {
        let bin = cache.root.join("bin");
        let wrapper = install_script(&bin, "ccache-cc", include_str!("../../ccache-cc"))?;
        let distcc_prefix = install_script(&bin, "distcc-cc", include_str!("../../distcc-cc"))?;
        let path = |p: &Path| p.display().to_string();
        let mut env = vec![
            ("CCACHE_DIR".to_string(), path(&cache.root.join("ccache"))),
            ("CCACHE_BASEDIR".into(), path(&cache.root)),
            ("CCACHE_NOHASHDIR".into(), "true".into()),
            (
                "CCACHE_SLOPPINESS".into(),
                "time_macros,include_file_mtime,include_file_ctime".into(),
            ),
            // Depend mode: on a miss, no extra preprocessor run (the kernel's
            // -Wp,-MMD output names the headers), which keeps cold builds cheap.
            ("CCACHE_DEPEND".into(), "true".into()),
            // ccache hashes a -fmacro-prefix-map by its replacement only and
            // paths relative to the base dir, so entries made in preprocessor
            // mode (the first harness versions), whose __FILE__ strings say
            // "../src/…", were served to depend-mode builds that would say
            // "…": right code, other bytes. A namespace of our own keeps
            // those entries out, so the same content gives the same image
            // wherever and however it is compiled.
            ("CCACHE_NAMESPACE".into(), "patverify-2".into()),
            // Only what the flag (or PATVERIFY_CACHE_REMOTE) says: a remote
            // from the user's ccache.conf must not change a run silently.
            (
                "CCACHE_REMOTE_STORAGE".into(),
                sharing.cache_remote.clone().unwrap_or_default(),
            ),
            // distcc only when asked: an empty prefix runs the compiler here.
            ("CCACHE_PREFIX".into(), String::new()),
        ];
        if let Some(hosts) = &sharing.distcc {
            env.retain(|(k, _)| k != "CCACHE_PREFIX");
            env.push(("CCACHE_PREFIX".into(), path(&distcc_prefix)));
            env.push(("DISTCC_HOSTS".into(), hosts.clone()));
        }
        // rustup's proxies (bindgen runs rustfmt) find their toolchains
        // through RUSTUP_HOME: the sandbox's HOME is its private /tmp.
        if let Some(rustup) = rustup_home() {
            env.push(("RUSTUP_HOME".into(), path(&rustup)));
        }
        let network = sharing.cache_remote.is_some() || sharing.distcc.is_some();
        Ok(Kbuild {
            wrapper: Some(wrapper),
            env,
            toolchain: Toolchain::RustcWeb,
            cache_root: cache.root.clone(),
            sandbox: Some(build_sandbox(&cache.root, network)?),
            rustc_cache: cache.root.join("rustc-cache"),
            unconfined: false,
        })
    }

    /// The same, building unconfined where the sandbox cannot run
    /// (`--unconfined`) instead of refusing to.
    pub fn allow_unconfined(self, unconfined: bool) -> Self {
        Kbuild { unconfined, ..self }
    }

    /// `cmd`, code from `tree` writing into `out`, as it runs in this run's
    /// sandbox (`out` handed to the build user first).
    pub fn sandboxed(&self, cmd: Command, out: &Path) -> Result<Command> {
        match &self.sandbox {
            Some(sandbox) => sandbox.confine(cmd, out, Handover::All, self.unconfined),
            None => Ok(cmd),
        }
    }

    /// `cmd` editing the variant tree `tree` in the sandbox: only the
    /// tree's directories are handed over (its files are the user's).
    pub fn patching(&self, cmd: Command, tree: &Path) -> Result<Command> {
        match &self.sandbox {
            Some(sandbox) => sandbox.confine(cmd, tree, Handover::DirsOnly, self.unconfined),
            None => Ok(cmd),
        }
    }

    /// The same sandbox, with `paths` (the configuration fragments of the
    /// run) readable too.
    pub fn reading(&self, paths: &[PathBuf]) -> Kbuild {
        let mut kbuild = self.clone();
        if let Some(sandbox) = &mut kbuild.sandbox {
            sandbox.readable.extend(paths.iter().map(|p| absolute(p)));
        }
        kbuild
    }

    /// `make` for `tree` with output in `out`, using the toolchain: clang,
    /// lld and LLVM of its version (`LLVM=-19`), its rustc and bindgen; in
    /// the run's sandbox.
    pub fn make(&self, tree: &Path, out: &Path) -> Result<Command> {
        let cmd = self.unsandboxed_make(tree, out);
        self.sandboxed(cmd, out)
    }

    fn unsandboxed_make(&self, tree: &Path, out: &Path) -> Command {
        let tc = self.toolchain;
        let clang = format!("clang{}", tc.llvm_suffix());
        let compiler = match &self.wrapper {
            Some(wrapper) => format!("{} {clang}", wrapper.display()),
            None => clang,
        };
        let real_rustc = tc.rustc(&self.cache_root);
        let rustc = match &self.wrapper {
            Some(_) => self.cached_rustc(tc, &real_rustc),
            None => real_rustc.clone(),
        };
        let mut cmd = Command::new("make")
            .arg("-C")
            .arg(tree)
            .arg(format!("O={}", out.display()))
            .arg(format!("LLVM={}", tc.llvm_suffix()))
            // ccache for the kernel's C only: HOSTCC doubles as the host Rust
            // linker, which cannot take a wrapper command.
            .arg(format!("CC={compiler}"))
            .arg(format!("RUSTC={}", rustc.display()))
            // Host programs are linked with -o: not cached, the real rustc.
            .arg(format!("HOSTRUSTC={}", real_rustc.display()))
            .arg(format!(
                "BINDGEN={}",
                tc.bindgen(&self.cache_root).display()
            ))
            .env("LIBCLANG_PATH", tc.libclang_dir(&self.cache_root))
            // Fixed build metadata: identical sources give identical objects, so
            // ccache hits across variants and runs.
            .env("KBUILD_BUILD_TIMESTAMP", "2023-05-01")
            .env("KBUILD_BUILD_USER", "patverify")
            .env("KBUILD_BUILD_HOST", "patverify")
            // A rebuild in the same directory would otherwise count up (#2, #3…).
            .env("KBUILD_BUILD_VERSION", "1")
            // Rust panic locations embed source paths: make them relative, so
            // the image does not depend on where the cache lives.
            .env("KRUSTFLAGS", remap_flags(tree, out))
            .env(rustc_cache::CACHE_ENV, &self.rustc_cache)
            .env(rustc_cache::TREE_ENV, absolute(tree))
            .env(rustc_cache::OUT_ENV, absolute(out));
        for (key, value) in &self.env {
            cmd = cmd.env(key, value);
        }
        cmd
    }

    /// The counters of the ccache this run's builds use.
    pub fn ccache_stats(&self) -> CcacheStats {
        let mut cmd = Command::new("ccache").arg("--print-stats");
        for (key, value) in &self.env {
            cmd = cmd.env(key, value);
        }
        let (_, text) = cmd.output_quiet().unwrap_or_default();
        CcacheStats::parse(&text)
    }
}

/// The sandbox of a run whose cache is `cache_root`: the cache, the
/// repository, the harness binary (the Rust compile cache's wrapper) and
/// cargo's programs (bindgen) readable; the compile caches writable; as
/// root, the build user's.
fn build_sandbox(cache_root: &Path, network: bool) -> Result<Sandbox> {
    let user = if crate::support::provision::is_root() {
        Some(crate::support::sandbox::build_user()?)
    } else {
        None
    };
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let readable = [
        Some(cache_root.to_path_buf()),
        Some(crate::support::repo_dir()),
        exe_dir,
        Some(crate::support::provision::cargo_bin_dir()),
        rustup_home(),
    ];
    let readable = readable
        .into_iter()
        .flatten()
        .filter(|p| p.exists())
        .map(|p| absolute(&p));
    Ok(Sandbox {
        user,
        network,
        readable: readable.collect(),
        writable: [cache_root.join("ccache"), cache_root.join("rustc-cache")]
            .iter()
            .map(|p| absolute(p))
            .collect(),
    })
}

/// rustup's home, where it is installed (`RUSTUP_HOME`, else ~/.rustup).
fn rustup_home() -> Option<PathBuf> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))?;
    home.is_dir().then_some(home)
}

/// ccache's remote storage list with every entry read-only.
fn read_only(remotes: &str) -> String {
    let each = remotes.split_whitespace().map(|r| {
        if r.contains("read-only") {
            r.to_string()
        } else {
            format!("{r}|read-only")
        }
    });
    each.collect::<Vec<_>>().join(" ")
}

fn remap_flags(tree: &Path, out: &Path) -> String {
    let mut flags = std::env::var("KRUSTFLAGS").unwrap_or_default();
    for dir in [tree, out] {
        flags.push_str(&format!(
            " --remap-path-prefix={}/=",
            absolute(dir).display()
        ));
    }
    flags.trim().to_string()
}

impl Kbuild {
    /// The kernel's `RUSTC`: a script that runs this harness's rustc cache
    /// in front of `real` (one executable path: the kernel's scripts quote
    /// `$RUSTC`). Falls back to `real` when the script cannot be written.
    fn cached_rustc(&self, tc: Toolchain, real: &Path) -> PathBuf {
        // A binary rebuilt while it runs is gone from its path ("… (deleted)").
        let me = std::env::current_exe().ok().filter(|me| me.exists());
        let Some(me) = me else {
            return real.to_path_buf();
        };
        let script = format!(
            "#!/bin/sh\n# The kernel's rustc through patverify's Rust compile cache.\nexec '{}' rustc-cache '{}' \"$@\"\n",
            me.display(),
            real.display()
        );
        // Named by its content: runs of two harness binaries sharing the
        // cache (two checkouts) would otherwise rewrite one script under
        // each other's builds, pointing it at a binary the other may be
        // rebuilding.
        let name = format!(
            "rustc-cached-{}-{}",
            tc.name(),
            &crate::support::cache::sha256_hex(script.as_bytes())[..12]
        );
        let bin = self.cache_root.join("bin");
        install_script(&bin, &name, &script).unwrap_or_else(|_| real.to_path_buf())
    }
}

/// Writes one of the compiler wrapper scripts into `bin` (when changed).
fn install_script(bin: &Path, name: &str, script: &str) -> Result<PathBuf> {
    let path = bin.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(script) {
        std::fs::create_dir_all(bin)?;
        write_atomic(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

/// How this machine's compiles are shared beyond it.
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// ccache remote storage (`redis://HOST:PORT`, `http://…`): every
    /// machine pointed at it reuses what any of them compiled.
    pub cache_remote: Option<String>,
    /// distcc hosts (DISTCC_HOSTS syntax): ccache's misses compile there.
    pub distcc: Option<String>,
}

impl Sharing {
    /// Checks the flags before anything runs.
    pub fn check(&self) -> Result<()> {
        if let Some(url) = &self.cache_remote {
            const SCHEMES: [&str; 5] = ["redis://", "redis+unix:", "http://", "https://", "file:"];
            if !SCHEMES.iter().any(|s| url.starts_with(s)) {
                return Err(fail(
                    Kind::Setup,
                    format!("--cache-remote {url:?}: not a ccache remote storage URL (redis://HOST:PORT, redis+unix:PATH, http://HOST/PATH or file:DIR)"),
                ));
            }
        }
        if let Some(hosts) = &self.distcc {
            if distcc_slots(hosts) == 0 {
                return Err(fail(
                    Kind::Setup,
                    format!(
                        "--distcc {hosts:?}: no hosts (DISTCC_HOSTS syntax: HOST[:PORT][/LIMIT] …)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parallel make jobs: one per core here, or with distcc, one per slot
    /// of all its hosts (what `-j` distcc's manual recommends), whichever is more.
    pub fn jobs(&self) -> usize {
        let local = local_jobs();
        self.distcc
            .as_deref()
            .map_or(local, |hosts| local.max(distcc_slots(hosts)))
    }
}

/// make's -j on this machine alone: one per core, and one more.
pub fn local_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// How many compile jobs a DISTCC_HOSTS list takes at once: `HOST/N` is N,
/// a host without a limit 4 (distcc's default), `localhost` 2; options
/// after a comma (`,lzo`, `,cpp`) and `--randomize` do not count.
pub fn distcc_slots(hosts: &str) -> usize {
    hosts
        .split_whitespace()
        .filter(|h| !h.starts_with("--"))
        .map(|host| {
            let host = host.split(',').next().unwrap_or(host);
            match host.split_once('/') {
                Some((_, limit)) => limit.parse().unwrap_or(4),
                None if host == "localhost" => 2,
                None => 4,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_compiler_wrapper_bypasses_ccache_for_incbin_sources() {
        let tmp = crate::support::cache::scratch("ccache-cc");
        let dir = tmp.path();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // A fake ccache that says it ran; the "compiler" is `echo`.
        std::fs::write(bin.join("ccache"), "#!/bin/sh\necho ccache \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("ccache"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.join("piggy.S"), ".incbin \"vmlinux.bin.xz\"\n").unwrap();
        std::fs::write(dir.join("plain.c"), "int x;\n").unwrap();
        let wrapper = variant_repo_file("xtask/ccache-cc");
        let run = |source: &str| {
            let out = std::process::Command::new("sh")
                .arg(&wrapper)
                .args(["echo", "-c", source])
                .current_dir(dir)
                .env(
                    "PATH",
                    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
                )
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run("piggy.S"), "-c piggy.S\n");
        assert_eq!(run("plain.c"), "ccache echo -c plain.c\n");
    }

    #[test]
    fn distcc_host_lists_size_the_jobs() {
        assert_eq!(distcc_slots("127.0.0.1:3632/8"), 8);
        assert_eq!(distcc_slots("a/6 b c,lzo localhost"), 6 + 4 + 4 + 2);
        assert_eq!(distcc_slots("--randomize w1/3,lzo w2/5"), 8);
        assert_eq!(distcc_slots("  "), 0);
        let sharing = Sharing {
            distcc: Some("w1/40".into()),
            ..Sharing::default()
        };
        assert_eq!(sharing.jobs(), 40);
        assert!(sharing.check().is_ok());
    }

    #[test]
    fn sharing_flags_are_checked_before_anything_runs() {
        let bad_url = Sharing {
            cache_remote: Some("127.0.0.1:6379".into()),
            ..Sharing::default()
        };
        let err = bad_url.check().unwrap_err();
        assert_eq!(
            crate::support::failure::exit_code_of(&err),
            Kind::Setup.exit_code()
        );
        assert!(err.to_string().contains("redis://HOST:PORT"), "{err}");
        let no_hosts = Sharing {
            distcc: Some(" ".into()),
            ..Sharing::default()
        };
        assert!(no_hosts
            .check()
            .unwrap_err()
            .to_string()
            .contains("no hosts"));
        let good = Sharing {
            cache_remote: Some("redis://127.0.0.1:6379".into()),
            distcc: Some("127.0.0.1/4".into()),
        };
        assert!(good.check().is_ok());
    }

    #[test]
    fn ccache_counters_of_one_build() {
        let before =
            CcacheStats::parse("cache_miss\t10\ndirect_cache_hit\t5\nremote_storage_hit\t0\n");
        let after = CcacheStats::parse(
            "cache_miss\t10\ndirect_cache_hit\t95\npreprocessed_cache_hit\t5\nremote_storage_hit\t90\nremote_storage_read_hit\t180\nremote_storage_timeout\t1\n",
        );
        let build = after.since(before);
        assert_eq!(
            build,
            CcacheStats {
                hits: 95,
                remote_hits: 90,
                misses: 0,
                remote_errors: 1
            }
        );
        assert_eq!(build.hit_rate(), 100.0);
        let line = build.to_string();
        assert!(
            line.starts_with("ccache 95 hits (90 remote) / 0 misses = 100 %"),
            "{line}"
        );
        assert!(line.contains("1 remote storage errors"), "{line}");
    }

    #[test]
    fn rust_paths_are_remapped_relative_to_tree_and_build() {
        let flags = remap_flags(
            Path::new("/c/variants/k/src"),
            Path::new("/c/variants/k/build-1"),
        );
        assert!(flags.ends_with("--remap-path-prefix=/c/variants/k/src/= --remap-path-prefix=/c/variants/k/build-1/="), "{flags}");
    }

    fn variant_repo_file(path: &str) -> PathBuf {
        crate::support::repo_dir().join(path)
    }
}
