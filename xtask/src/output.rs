//! The terminal's one way out: the stages and commands emit typed
//! [`Event`]s (progress, stderr) and result lines (tables, verdicts, stdout)
//! through here, so a matrix job can capture a whole run's output in its log.
//! How tables look is `ui`'s business; JSON and JUnit are `record`'s and
//! `junit`'s.

use crate::model::{CcacheStats, Direction, Stage, Step};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Something a run reports while it goes.
pub enum Event<'a> {
    /// A stage of the pipeline begins.
    Stage(Stage),
    /// The kernel source the run tests.
    Kernel(&'a str),
    /// How a candidate patch (or series of `parts` mails) relates to the tree.
    Candidate {
        file: &'a str,
        parts: usize,
        direction: Direction,
    },
    /// A variant tree is being made (first use of this content).
    MakingTree { variant: &'a str, describe: &'a str },
    /// A build with the same inputs exists: no make.
    BuildReused { variant: &'a str },
    /// A `.config` made from the same inputs exists: no configuring.
    ConfigReused { variant: &'a str },
    /// A kernel was built.
    Built {
        variant: &'a str,
        took: Duration,
        ccache: CcacheStats,
    },
    /// A boot printed its complete report.
    ReportReceived { label: &'a str, took: Duration },
    /// Where the time went (the end of every run).
    Timings(&'a [(Step, Duration)]),
}

/// Renders an event on the terminal (stderr: stdout is for results).
pub fn emit(event: Event) {
    progress(&render(&event));
}

/// `--verbose`: every command line and the full timing list on the terminal.
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Says whether `--verbose` was given (once, by `main`).
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// Whether `--verbose` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Where a run's output goes while something captures it (a matrix job's
/// log); the terminal otherwise.
static CAPTURE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// While alive, every line this module prints goes to a file instead of
/// the terminal (a matrix job's whole output goes to its log).
pub struct Capture(());

impl Capture {
    pub fn to(path: &Path) -> Result<Capture> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        *CAPTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(Capture(()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        *CAPTURE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Whether output is being captured (no in-place spinner then).
pub fn capturing() -> bool {
    CAPTURE.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Writes `text` to the capture file, or hands it back for the terminal.
fn captured(text: &str) -> bool {
    let mut capture = CAPTURE.lock().unwrap_or_else(|e| e.into_inner());
    match capture.as_mut() {
        Some(file) => {
            let _ = writeln!(file, "{text}");
            true
        }
        None => false,
    }
}

/// A progress line (stderr).
pub fn progress(text: &str) {
    if !captured(text) {
        eprintln!("{text}");
    }
}

/// A result line: tables, verdicts (stdout).
pub fn result(text: &str) {
    if !captured(text) {
        println!("{text}");
    }
}

fn render(event: &Event) -> String {
    match event {
        Event::Stage(stage) => format!("==> {}", stage.name()),
        Event::Kernel(describe) => format!("kernel: {describe}"),
        Event::Candidate {
            file,
            parts,
            direction,
        } => {
            let series = if *parts > 1 {
                format!(" (a series of {parts})")
            } else {
                String::new()
            };
            match direction {
                Direction::Forward => {
                    format!("{file}{series} applies forward: a candidate = baseline + it")
                }
                Direction::Reverse => format!(
                    "the tree already contains {file}{series}: the baseline has it reversed"
                ),
            }
        }
        Event::MakingTree { variant, describe } => {
            format!("making the {variant} tree ({describe})")
        }
        Event::BuildReused { variant } => format!("{variant}: kernel already built, reusing it"),
        Event::ConfigReused { variant } => {
            format!("{variant}: configuration made from the same inputs, reusing it")
        }
        Event::Built {
            variant,
            took,
            ccache,
        } => format!("{variant}: built in {:.0} s, {ccache}", took.as_secs_f64()),
        Event::ReportReceived { label, took } => {
            format!("  [{label}] report received in {:.1} s", took.as_secs_f64())
        }
        Event::Timings(steps) => render_timings(steps),
    }
}

/// The timings: one line of where most of the time went (the steps are in
/// the record), or every step with --verbose.
fn render_timings(steps: &[(Step, Duration)]) -> String {
    if verbose() {
        let mut out = String::from("time:");
        for (step, took) in steps.iter() {
            out += &format!("\n  {step:<28} {:>7.1} s", took.as_secs_f64());
        }
        return out;
    }
    let secs = |wanted: fn(&Step) -> bool| -> f64 {
        let steps = steps.iter().filter(|(step, _)| wanted(step));
        // fold, not sum: an empty f64 sum is -0.0.
        steps.fold(0.0, |total, (_, took)| total + took.as_secs_f64())
    };
    format!(
        "time: {:.1} s (builds {:.1} s, boots {:.1} s wall)",
        secs(|s| matches!(s, Step::Total)),
        secs(|s| matches!(s, Step::Build { .. } | Step::Config { .. })),
        secs(|s| matches!(s, Step::Boots)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_as_one_line_each() {
        let reverse = Event::Candidate {
            file: "0001-fix.patch",
            parts: 2,
            direction: Direction::Reverse,
        };
        assert_eq!(
            render(&reverse),
            "the tree already contains 0001-fix.patch (a series of 2): the baseline has it reversed"
        );
        let built = Event::Built {
            variant: "baseline",
            took: Duration::from_secs(337),
            ccache: CcacheStats::default(),
        };
        assert!(render(&built).starts_with("baseline: built in 337 s, ccache 0 hits"));
        let steps = [
            (Step::Boots, Duration::from_millis(6_200)),
            (Step::Total, Duration::from_millis(12_900)),
        ];
        assert_eq!(
            render(&Event::Timings(&steps)),
            "time: 12.9 s (builds 0.0 s, boots 6.2 s wall)"
        );
    }
}
