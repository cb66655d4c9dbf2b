//! The sandbox every step that runs code from a kernel tree or a patch goes
//! through: the tree's configuration scripts and `make`, with everything it
//! starts (the compilers, the compile-cache wrappers, the host programs the
//! build makes and runs). bubblewrap gives the step a read-only system;
//! private /tmp, /root, /home and /run (nothing of root's or the users'
//! files, no sockets); its own PID, IPC and UTS namespaces; a new session
//! (no terminal to inject input into); and no network, unless a
//! `--distcc`/`--cache-remote` run must reach its hosts. Only the build's
//! own directory and the compile caches are writable. Started as root, the
//! step runs as the unprivileged user [`USER`] with every capability
//! dropped (`setpriv`); started as anyone else, as that user.
//!
//! What the harness itself does (staging, renaming into place, logs) stays
//! outside: a build can only write what its own directory holds.

use crate::support::failure::{fail, Kind};
use crate::support::proc::Command;
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The user sandboxed steps run as when the harness runs as root.
pub const USER: &str = "patverify-build";

/// The directories the system keeps private: hidden (an empty tmpfs) in the
/// sandbox, and what the sandbox must read from them bound back read-only.
const HIDDEN: [&str; 4] = ["/tmp", "/root", "/home", "/run"];

/// The namespaces of their own every sandboxed step gets (beside the mount
/// namespace bubblewrap always makes, and the network one unless needed).
const NAMESPACES: [&str; 4] = [
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
];

/// setpriv's: no supplementary groups, no capability to inherit or regain.
const DROP_EVERYTHING: [&str; 4] = [
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// The uid and gid to run as (root's runs); None: the invoking user.
    pub user: Option<(u32, u32)>,
    /// Whether the step keeps the network (distcc, a remote cache).
    pub network: bool,
    /// Visible read-only, also where they lie in a hidden directory (the
    /// cache, the repository, the harness binary, the toolchain).
    pub readable: Vec<PathBuf>,
    /// The only writable paths (the build directory, the compile caches).
    pub writable: Vec<PathBuf>,
}

impl Sandbox {
    /// The same sandbox with `dir` writable too (a step's own build dir).
    pub fn writing(&self, dir: &Path) -> Sandbox {
        let mut sandbox = self.clone();
        sandbox.writable.push(absolute(dir));
        sandbox
    }

    /// bubblewrap's arguments (and setpriv's, as root) before the program.
    pub fn args(&self) -> Vec<OsString> {
        let words = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut args = words(&["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
        for dir in HIDDEN.iter().filter(|d| Path::new(d).is_dir()) {
            // /tmp as every user expects it: writable by all, sticky.
            let perms = if *dir == "/tmp" { "1777" } else { "0755" };
            args.extend(words(&["--perms", perms, "--tmpfs", dir]));
        }
        args.extend(words(&[
            "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        ]));
        args.extend(words(&NAMESPACES));
        if !self.network {
            args.push("--unshare-net".into());
        }
        args.extend(words(&["--die-with-parent", "--new-session"]));
        // bubblewrap makes a bind's missing parents 0700: the build user
        // could not walk to the cache in root's hidden home.
        for dir in self.parents_to_make() {
            args.extend(words(&[
                "--perms",
                "0755",
                "--dir",
                &dir.display().to_string(),
            ]));
        }
        for (flag, dirs) in [("--ro-bind", &self.readable), ("--bind", &self.writable)] {
            for dir in dirs {
                let dir = dir.display().to_string();
                args.extend(words(&[flag, &dir, &dir]));
            }
        }
        if let Some((uid, gid)) = self.user {
            // Root's bubblewrap drops every capability but these two, which
            // setpriv needs to become the build user and then drops too.
            args.extend(words(&[
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]));
            args.extend(words(&[
                "--",
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
            ]));
            args.extend(words(&DROP_EVERYTHING));
        }
        args.push("--".into());
        args.into_iter().map(OsString::from).collect()
    }

    /// The directories between a hidden directory and a bound path, outer
    /// first: what the sandbox must make for the binds to be reachable.
    fn parents_to_make(&self) -> Vec<PathBuf> {
        let mut parents: Vec<PathBuf> = Vec::new();
        for path in self.readable.iter().chain(&self.writable) {
            let Some(hidden) = HIDDEN.iter().map(Path::new).find(|h| path.starts_with(h)) else {
                continue;
            };
            let mut between: Vec<PathBuf> = path
                .ancestors()
                .skip(1)
                .take_while(|a| *a != hidden)
                .map(Path::to_path_buf)
                .collect();
            between.reverse();
            parents.extend(between);
        }
        let mut seen = std::collections::HashSet::new();
        parents.retain(|p| seen.insert(p.clone()));
        parents
    }

    /// `cmd` run inside the sandbox (its environment, directory and input
    /// kept), bubblewrap started as `root` says.
    pub fn wrap(&self, cmd: Command, root: &Root) -> Command {
        let mut bwrap = Vec::new();
        // Set inside, not inherited: a rebound root starts in its "/".
        if let Some(dir) = &cmd.dir {
            bwrap.push(OsString::from("--chdir"));
            bwrap.push(dir.clone().into_os_string());
        }
        bwrap.extend(self.args());
        let mut wrapped = match root {
            Root::Direct => Command::new("bwrap").args(bwrap),
            Root::Rebound(dir) => Command::new("unshare")
                .args(["--mount", "--propagation", "unchanged", "sh", "-c"])
                .arg(r#"mount --rbind / "$0" && exec chroot "$0" "$@""#)
                .arg(dir)
                .arg("bwrap")
                .args(bwrap),
        };
        wrapped = wrapped.arg(cmd.program).args(cmd.args);
        wrapped.env = cmd.env;
        wrapped.dir = cmd.dir;
        wrapped.stdin = cmd.stdin;
        wrapped
    }

    /// `cmd`, writing `out` (handed to the build user first; only its
    /// directories when `Handover::DirsOnly`), as it runs in this sandbox.
    /// Where bubblewrap cannot run, a refusal that says what to do — or,
    /// when the user chose `--unconfined`, `cmd` as it is, said once.
    pub fn confine(
        &self,
        cmd: Command,
        out: &Path,
        handover: Handover,
        unconfined: bool,
    ) -> Result<Command> {
        match available() {
            Ok(root) => {
                let sandbox = self.writing(out);
                sandbox.hand_over(handover)?;
                Ok(sandbox.resolved().wrap(cmd, &root))
            }
            Err(why) if unconfined => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| crate::output::progress(&unavailable_warning(&why)));
                Ok(cmd)
            }
            Err(why) => Err(fail(Kind::Setup, refusal(&why))),
        }
    }

    /// The same sandbox with each path as the kernel resolves it: a bind
    /// of a symbolic link (a cache whose compile caches link to another's)
    /// mounts the directory it points to, where the link will find it.
    pub fn resolved(&self) -> Sandbox {
        let real = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths
                .iter()
                .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
                .collect()
        };
        Sandbox {
            readable: real(&self.readable),
            writable: real(&self.writable),
            ..self.clone()
        }
    }

    /// Gives the build user every writable path (as root): what a step
    /// writes must be its to write. Entries already its are left alone.
    pub fn hand_over(&self, handover: Handover) -> Result<()> {
        let Some((uid, gid)) = self.user else {
            return Ok(());
        };
        for dir in &self.writable {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // Where a link points, not the link itself.
            chown_tree(&dir.canonicalize()?, uid, gid, handover)?;
        }
        Ok(())
    }
}

/// What of a writable path the build user is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// Everything below it (a build directory, a compile cache).
    All,
    /// Its directories only: a variant tree's files are hard links to the
    /// user's tree, so their owner is the user's. A step may replace them
    /// (GNU patch writes a new file and renames it), never write them.
    DirsOnly,
}

/// How bubblewrap starts here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    /// As it is.
    Direct,
    /// In a chroot whose root is not a mount point, bubblewrap cannot make
    /// "/" a slave mount: as root, a mount namespace of its own binds the
    /// root onto this directory and enters it first.
    Rebound(PathBuf),
}

/// Whether bubblewrap can make this sandbox's namespaces here, and how it
/// starts, tried once per run (after provisioning installed it): a
/// container without the privilege to make mount namespaces cannot — the
/// error says why.
pub fn available() -> Result<Root, String> {
    static TRIED: std::sync::OnceLock<Result<Root, String>> = std::sync::OnceLock::new();
    TRIED
        .get_or_init(|| {
            let direct = try_root(&Root::Direct);
            if direct.is_ok() || !crate::support::provision::is_root() {
                return direct.map(|()| Root::Direct);
            }
            let dir = std::env::temp_dir().join("patverify-root");
            let rebound = Root::Rebound(dir.clone());
            match std::fs::create_dir_all(&dir).map(|()| try_root(&rebound)) {
                Ok(Ok(())) => Ok(rebound),
                _ => direct.map(|()| Root::Direct),
            }
        })
        .clone()
}

/// Whether a sandbox started as `root` says runs `true`.
fn try_root(root: &Root) -> Result<(), String> {
    let sandbox = Sandbox {
        user: None,
        network: false,
        readable: Vec::new(),
        writable: Vec::new(),
    };
    match sandbox.wrap(Command::new("true"), root).output_quiet() {
        Ok((true, _)) => Ok(()),
        Ok((false, said)) => Err(said.trim().to_string()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Why a run stops where the sandbox cannot run, and what to do.
fn refusal(why: &str) -> String {
    format!("the build sandbox cannot run here ({why}): code from the tree would run unconfined. Run on a machine or VM that may make mount namespaces, or pass --unconfined to build anyway, as this user, with the network")
}

/// Said once when the user chose `--unconfined` where the sandbox cannot run.
pub fn unavailable_warning(why: &str) -> String {
    format!("WARNING: the build sandbox cannot run here ({why}): code from the tree and its patches runs unconfined (--unconfined), as this user, with the network.")
}

/// `dir` as an absolute path (as given when it cannot be made one).
pub fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Hands `path` and everything below it to `uid`:`gid`. Entries that vanish
/// meanwhile (ccache renames its temporary files as other runs build) are
/// no longer anyone's to hand over.
fn chown_tree(path: &Path, uid: u32, gid: u32, handover: Handover) -> Result<()> {
    use std::io::ErrorKind::NotFound;
    use std::os::unix::fs::MetadataExt;
    let gone = |e: &std::io::Error| e.kind() == NotFound;
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if gone(&e) => return Ok(()),
        other => other?,
    };
    let mine = meta.uid() == uid && meta.gid() == gid;
    if !mine && (meta.is_dir() || handover == Handover::All) {
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Err(e) if gone(&e) => return Ok(()),
            other => other.with_context(|| format!("cannot hand {} to {USER}", path.display()))?,
        }
    }
    if meta.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        };
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid, handover)?;
        }
    }
    Ok(())
}

/// The build user's uid and gid, the user made first if it is missing (a
/// system user with no home and no shell).
pub fn build_user() -> Result<(u32, u32)> {
    if let Some(ids) = lookup(&std::fs::read_to_string("/etc/passwd").unwrap_or_default()) {
        return Ok(ids);
    }
    Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args([
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .run()
        .map_err(|e| {
            fail(
                Kind::Setup,
                format!("cannot create the build user {USER}: {e:#}"),
            )
        })?;
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    lookup(&passwd).ok_or_else(|| fail(Kind::Setup, format!("useradd made no user {USER}")))
}

/// [`USER`]'s uid and gid in an /etc/passwd text.
fn lookup(passwd: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, uid, gid, ..] if *name == USER => {
                Some((uid.parse().ok()?, gid.parse().ok()?))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(user: Option<(u32, u32)>, network: bool) -> Sandbox {
        Sandbox {
            user,
            network,
            readable: vec!["/root/.cache/patverify".into()],
            writable: vec!["/root/.cache/patverify/ccache".into()],
        }
    }

    fn line(s: &Sandbox) -> String {
        let args: Vec<String> = s
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn the_system_is_read_only_and_only_the_build_writes() {
        let text = line(&sandbox(None, false).writing(Path::new("/c/variants/k/build-1")));
        assert!(
            text.starts_with("--ro-bind / / --dev /dev --proc /proc"),
            "{text}"
        );
        assert!(text.contains("--perms 1777 --tmpfs /tmp"), "{text}");
        assert!(
            text.contains("--unshare-net") && text.contains("--new-session"),
            "{text}"
        );
        // Hidden first, then what must be read bound back, then the writable.
        let readable = text.find("--ro-bind /root/.cache/patverify").unwrap();
        let writable = text.find("--bind /root/.cache/patverify/ccache").unwrap();
        assert!(
            text.find("--tmpfs /root").unwrap() < readable && readable < writable,
            "{text}"
        );
        assert!(
            text.contains("--bind /c/variants/k/build-1 /c/variants/k/build-1"),
            "{text}"
        );
        assert!(text.ends_with(" --"), "{text}");
        // The cache's parents in the hidden /root, walkable by the build user.
        assert!(
            text.contains("--perms 0755 --dir /root/.cache --perms 0755 --dir /root/.cache/patverify --ro-bind"),
            "{text}"
        );
        assert!(!text.contains("setpriv"), "{text}");
    }

    #[test]
    fn root_runs_the_step_as_the_build_user_without_capabilities() {
        let text = line(&sandbox(Some((999, 998)), false));
        assert!(text.contains("--cap-add CAP_SETUID --cap-add CAP_SETGID -- setpriv --reuid=999 --regid=998 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs --"), "{text}");
        let wrapped = sandbox(Some((999, 998)), false).wrap(
            Command::new("make").arg("-j2").env("A", "1").dir("/b"),
            &Root::Direct,
        );
        assert_eq!(wrapped.program, "bwrap");
        assert_eq!(&wrapped.args[..2], ["--chdir", "/b"]);
        assert_eq!(wrapped.args.last().unwrap(), "-j2");
        assert_eq!(wrapped.env, vec![("A".into(), "1".into())]);
    }

    #[test]
    fn a_rebound_root_enters_its_own_mount_namespace_first() {
        let root = Root::Rebound("/tmp/patverify-root".into());
        let wrapped =
            sandbox(None, false).wrap(Command::new("patch").stdin(b"diff".to_vec()), &root);
        let args: Vec<String> = wrapped
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(wrapped.program, "unshare");
        assert_eq!(
            &args[..5],
            ["--mount", "--propagation", "unchanged", "sh", "-c"]
        );
        assert_eq!(&args[6..8], ["/tmp/patverify-root", "bwrap"]);
        assert_eq!(args.last().unwrap(), "patch");
        assert_eq!(wrapped.stdin.as_deref(), Some(&b"diff"[..]));
    }

    #[test]
    fn a_remote_cache_keeps_the_network() {
        assert!(!line(&sandbox(None, true)).contains("--unshare-net"));
    }

    #[test]
    fn the_build_user_is_read_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npatverify-build:x:996:995::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup(passwd), Some((996, 995)));
        assert_eq!(lookup("root:x:0:0:root:/root:/bin/bash\n"), None);
    }
}
