//! `cargo xtask`: parses the flags (all declared in `xtask::flags`) and hands
//! each command to its module in `xtask::commands`.

use clap::Parser;
use xtask::flags::{Cli, Command};
use xtask::support::{cache, failure, proc};

fn main() {
    // The kernel build's rustc (`Kbuild::make`), not a command for people.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "rustc-cache") && args.len() > 2 {
        let code =
            xtask::support::rustc_cache::run(args[2].as_ref(), &args[3..]).unwrap_or_else(|err| {
                eprintln!("patverify rustc-cache: {err:#}");
                1
            });
        std::process::exit(code);
    }
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        // A usage error under `git bisect run` must abort the bisect, not
        // mark the revision bad (exit 2 would).
        if err.use_stderr() && std::env::args().any(|a| a == "probe") {
            let _ = err.print();
            std::process::exit(failure::BISECT_ABORT);
        }
        err.exit()
    });
    let cache_root = cli.cache_dir.unwrap_or_else(cache::default_root);
    failure::watch_disk(&cache_root);
    proc::end_children_on_signals();
    xtask::output::set_verbose(cli.verbose);
    let builds = cli.command.builds_kernels();
    let evict = |cache_root: &std::path::Path| {
        if builds {
            keep_within_limit(cache_root, cli.cache_max_size);
        }
    };
    let result = match cli.command {
        Command::Verify(verify) => verify.run(&cache_root),
        Command::Probe(probe) => {
            let code = probe.run(&cache_root);
            evict(&cache_root);
            std::process::exit(code)
        }
        Command::Bisect(bisect) => bisect.run(&cache_root),
        Command::Setup(setup) => setup.run(&cache_root),
        Command::Doctor => xtask::commands::doctor::run(&cache_root, cli.cache_max_size),
        Command::Clean(clean) => clean.run(&cache_root),
        Command::Report(report) => report.run(),
        Command::Matrix(matrix) => matrix.run(&cache_root),
        Command::Bench(bench) => bench.run(&cache_root),
        Command::Mutants(mutants) => mutants.run(&cache_root),
        Command::Test(test) => test.run(&cache_root),
    };
    evict(&cache_root);
    if let Err(err) = result {
        let code = failure::exit_code_of(&err);
        failure::print_error(&err);
        std::process::exit(code);
    }
}

/// Evicts what the cache holds beyond its limit, once the run is over (a
/// failure to evict is said, never the run's result).
fn keep_within_limit(cache_root: &std::path::Path, limit: u64) {
    match xtask::support::evict::enforce(cache_root, limit).map(|done| done.describe()) {
        Ok(Some(line)) => xtask::output::progress(&line),
        Ok(None) => {}
        Err(err) => xtask::output::progress(&format!("cache eviction skipped: {err:#}")),
    }
}
