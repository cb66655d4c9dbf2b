//! patverify's host tool. `main` parses the flags and hands each command to
//! its module; every module is one step of the pipeline (see verify.rs).

mod bench;
mod bisect;
mod build;
mod cache;
mod clean;
mod compare;
mod config;
mod diff;
mod failure;
mod initramfs;
mod junit;
mod matrix;
mod patch;
mod probe;
mod proc;
mod provision;
mod qemu;
mod report;
mod session;
mod source;
mod test;
mod variant;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Proves or disproves an x86 page-table patch on real booted kernels.
#[derive(Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    /// Cache directory (default: $PATVERIFY_CACHE, else ~/.cache/patverify).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build baseline and candidate kernels, boot them, diff the cache modes.
    Verify(verify::Verify),
    /// Build and boot one tree; exit 0 good, 1 bad, 125 untestable, 128 abort (for `git bisect run`).
    Probe(probe::Probe),
    /// Bisect a kernel git history with `probe` in a clone of its own.
    Bisect(bisect::Bisect),
    /// Install what the pipeline needs (Debian packages, bindgen-cli, Xen).
    Setup,
    /// Report which requirements are present, with versions, and the cache size.
    Doctor,
    /// Measure warm re-runs and boots (--slow: cold verify vs raw make, edited candidate).
    Bench(bench::Bench),
    /// One verify per kernel source, merged into one table (or --emit a CI matrix).
    Matrix(matrix::Matrix),
    /// Read earlier runs' JSON records (`report diff OLD NEW`, `report merge FILES…`).
    #[command(subcommand)]
    Report(compare::Report),
    /// Remove variant trees, builds and run outputs from the cache (--all: everything).
    Clean(clean::Clean),
    /// Run the unit tests, then the end-to-end test (real builds and boots).
    Test(test::Test),
}

fn main() {
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
    let result = match cli.command {
        Command::Verify(verify) => verify.run(&cache_root),
        Command::Probe(probe) => std::process::exit(probe.run(&cache_root)),
        Command::Bisect(bisect) => bisect.run(&cache_root),
        Command::Setup => {
            provision::ensure(&cache_root.join("xen")).map(|()| println!("setup complete"))
        }
        Command::Doctor => provision::doctor(&cache_root),
        Command::Clean(clean) => clean.run(&cache_root),
        Command::Report(report) => report.run(),
        Command::Matrix(matrix) => matrix.run(&cache_root),
        Command::Bench(bench) => bench.run(&cache_root),
        Command::Test(test) => test.run(&cache_root),
    };
    if let Err(err) = result {
        let code = failure::exit_code_of(&err);
        failure::print_error(&err);
        std::process::exit(code);
    }
}
