//! Running host commands: echo each as `$ cmd`, stream long ones into a log
//! file and a progress line, keep the tail for error messages.

use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A command to run: program, arguments, environment, working directory.
#[derive(Clone, Debug)]
pub struct Command {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub dir: Option<PathBuf>,
    /// What the command reads on its standard input (None: nothing).
    pub stdin: Option<Vec<u8>>,
}

impl Command {
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            stdin: None,
        }
    }
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// The command as a user would type it, for `$ …` echo lines.
    pub fn display(&self) -> String {
        let mut parts = Vec::new();
        if let Some(dir) = &self.dir {
            parts.push(format!("(cd {} &&", dir.display()));
        }
        for (k, v) in &self.env {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            ));
        }
        parts.push(self.program.to_string_lossy().into_owned());
        parts.extend(self.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        let mut line = parts.join(" ");
        if self.dir.is_some() {
            line.push(')');
        }
        line
    }

    pub fn expression(&self) -> duct::Expression {
        // Long-running children get a process group of their own, so a
        // signal to the harness can end them and everything they started.
        let mut expr = duct::cmd(&self.program, &self.args);
        expr = match &self.stdin {
            Some(input) => expr.stdin_bytes(input.clone()),
            None => expr.stdin_null(),
        };
        expr = expr.before_spawn(|cmd| {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
            Ok(())
        });
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        expr
    }

    /// Runs to completion, echoing the command; returns status and the
    /// combined stdout+stderr.
    pub fn output(&self) -> Result<(bool, String)> {
        echo(self);
        self.output_quiet()
    }

    /// Like `output`, without the echo (for probes such as `--version`).
    pub fn output_quiet(&self) -> Result<(bool, String)> {
        let out = self
            .expression()
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .with_context(|| format!("cannot run {}", self.program.to_string_lossy()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Runs, failing with the output's tail if the command fails.
    pub fn run(&self) -> Result<String> {
        let (ok, out) = self.output()?;
        if !ok {
            anyhow::bail!("`{}` failed:\n{}", self.display(), tail_lines(&out, 20));
        }
        Ok(out)
    }

    /// Streams the output into `log` while showing a progress line labelled
    /// `label` (elapsed time and the latest output line). Returns whether it
    /// succeeded and the last `TAIL` lines.
    pub fn run_logged(&self, label: &str, log: &Path) -> Result<Streamed> {
        echo(self);
        // Append: one log may collect several steps (tinyconfig, merge, olddefconfig).
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        writeln!(log_file, "$ {}", self.display())?;
        let reader = self.expression().stderr_to_stdout().unchecked().reader()?;
        let _guards = guard_children(&reader);
        let mut progress = Progress::new(label);
        let mut tail = VecDeque::with_capacity(TAIL);
        let mut lines = BufReader::new(&reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if lines.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            log_file.write_all(&buf)?;
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            progress.update(&line);
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let output = reader
            .try_wait()?
            .context("command output ended before the command")?;
        let ok = output.status.success();
        progress.finish(ok);
        Ok(Streamed {
            ok,
            tail: tail.into_iter().collect(),
            elapsed: progress.started.elapsed(),
        })
    }
}

pub const TAIL: usize = 30;

/// How many children can be registered at once: far above what a run
/// starts (a make per build, a QEMU per boot: `--parallel-boots` is at
/// most [`MAX_PARALLEL_BOOTS`]).
const SLOTS: usize = 256;

/// The most boots at once `--parallel-boots` accepts.
pub const MAX_PARALLEL_BOOTS: usize = 64;

/// Process groups of the running children (0 = free slot), read by the
/// signal handler, which may not allocate or lock.
static CHILDREN: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Registers a child (the leader of its own process group) for as long as
/// it lives, so that SIGINT/SIGTERM/SIGHUP to the harness ends it too.
pub struct ChildGuard(Option<usize>);

impl ChildGuard {
    /// # Panics
    /// When every slot is taken: a child the signal handler could not end
    /// must not run unnoticed, so it is ended here and the run stops.
    pub fn new(pid: u32) -> Self {
        let slot = CHILDREN.iter().position(|c| {
            c.compare_exchange(0, pid as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if slot.is_none() {
            // SAFETY: kill has no memory preconditions; a negative pid names
            // the child's own process group.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            panic!("more than {SLOTS} child processes at once: cannot end them on a signal");
        }
        ChildGuard(slot)
    }
}

/// Guards for every process a duct reader started.
pub fn guard_children(reader: &duct::ReaderHandle) -> Vec<ChildGuard> {
    reader.pids().into_iter().map(ChildGuard::new).collect()
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            CHILDREN[slot].store(0, Ordering::SeqCst);
        }
    }
}

fn on_signal(signal: libc::c_int) {
    // SIGTERM first: a child that is itself a harness (`probe` under `git
    // bisect run`) ends its own make and QEMU groups before it goes; SIGKILL
    // for whatever is left after two seconds.
    let signal_all = |sig: libc::c_int| {
        let mut alive = false;
        for child in &CHILDREN {
            let pgid = child.load(Ordering::SeqCst);
            // SAFETY: kill is async-signal-safe; a negative pid names the group.
            if pgid > 0 && unsafe { libc::kill(-pgid, sig) } == 0 {
                alive = true;
            }
        }
        alive
    };
    signal_all(libc::SIGTERM);
    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    for _ in 0..20 {
        // Signal 0 only asks whether any process of the groups is left.
        if !signal_all(0) {
            break;
        }
        // SAFETY: nanosleep is async-signal-safe; `tick` is a valid timespec.
        unsafe { libc::nanosleep(&tick, std::ptr::null_mut()) };
    }
    signal_all(libc::SIGKILL);
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(128 + signal) };
}

/// Makes SIGINT, SIGTERM and SIGHUP end every registered child group
/// (TERM, then KILL) before the harness exits (128 + signal): no make or
/// QEMU is left behind, also under a nested harness.
///
/// The work happens in the handler itself, not on a signal-hook iterator
/// thread: the interrupted thread must not go on and act on its children's
/// deaths (a killed make reads as a failed build, exit 6) before the harness
/// ends with 128 + signal.
pub fn end_children_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the action only reads atomics and calls async-signal-safe
        // functions (kill, nanosleep, _exit); it allocates nothing.
        let registered =
            unsafe { signal_hook::low_level::register(signal, move || on_signal(signal)) };
        if let Err(err) = registered {
            crate::output::progress(&format!("warning: cannot handle signal {signal}: {err}"));
        }
    }
}

pub struct Streamed {
    pub ok: bool,
    pub tail: Vec<String>,
    pub elapsed: Duration,
}

/// The run's command log (`<out>/commands.log`), once a run has opened one.
static COMMAND_LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Appends every later command line to `path`.
pub fn log_commands_to(path: &Path) {
    *COMMAND_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
}

/// Records a command line: always in the run's command log, on the
/// terminal only with `--verbose` (a 400-character make line between the
/// progress lines helps nobody who did not ask for it).
pub fn echo(cmd: &Command) {
    let line = format!("$ {}", cmd.display());
    if crate::output::verbose() {
        crate::output::progress(&line);
    }
    let log = COMMAND_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One progress line per long step: an indicatif spinner redrawn in place
/// on a terminal; elsewhere (CI logs) a plain line every 20 s, which
/// indicatif does not do (it draws nothing when stderr is not a terminal),
/// so a long build still shows that it moves.
pub struct Progress {
    label: String,
    started: Instant,
    last_line: Instant,
    spinner: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(label: &str) -> Self {
        let on_terminal = std::io::stderr().is_terminal() && !crate::output::capturing();
        let spinner = on_terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style =
                indicatif::ProgressStyle::with_template("  [{prefix}] {elapsed:>5} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            label: label.to_string(),
            started: Instant::now(),
            last_line: Instant::now(),
            spinner,
        }
    }

    pub fn update(&mut self, latest: &str) {
        let latest = latest.trim();
        if latest.is_empty() {
            return;
        }
        if let Some(spinner) = &self.spinner {
            spinner.set_message(latest.to_string());
            return;
        }
        if self.last_line.elapsed() < Duration::from_secs(20) {
            return;
        }
        self.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs();
        let mut step: String = latest.chars().take(70).collect();
        if step.len() < latest.len() {
            step.push('…');
        }
        let (label, min, sec) = (&self.label, secs / 60, secs % 60);
        crate::output::progress(&format!("  [{label}] {min:>3}:{sec:02} {step}"));
    }

    pub fn finish(&mut self, ok: bool) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let how = if ok { "done" } else { "FAILED" };
        crate::output::progress(&format!("  [{}] {how} in {secs:.1} s", self.label));
    }
}

/// Where `program` is found on $PATH, if anywhere.
pub fn which(program: &Path) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_needs_quoting() {
        let cmd = Command::new("make")
            .arg("O=/tmp/x")
            .arg("a b")
            .env("CC", "ccache clang");
        assert_eq!(cmd.display(), "CC='ccache clang' make O=/tmp/x 'a b'");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }

    #[test]
    fn run_logged_keeps_log_and_tail() {
        let dir = std::env::temp_dir().join(format!("patverify-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let out = Command::new("sh")
            .arg("-c")
            .arg("for i in $(seq 1 40); do echo line$i; done; echo err >&2; exit 3")
            .run_logged("test", &log)
            .unwrap();
        assert!(!out.ok);
        assert_eq!(out.tail.len(), TAIL);
        assert_eq!(out.tail.last().unwrap(), "err");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("line1\n") && logged.contains("line40\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
