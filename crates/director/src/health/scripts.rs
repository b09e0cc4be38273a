//! What the director runs as a check or on an event (keepalived's `MISC_CHECK`,
//! `notify_up`/`notify_down`, `quorum_up`/`quorum_down`), with keepalived's script
//! security always on: the program and every directory above it must be writable by
//! root (or the user it runs as) only. Notify scripts run on a thread of their own, so
//! that a script that hangs never delays the write side or a check.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::spec::Script;

/// The user and group a script runs as: `user`, `user:group` or `user group`
/// (keepalived's forms), looked up in `/etc/passwd` and `/etc/group`; root when `None`.
pub fn ids(user: Option<&str>) -> Result<(u32, u32), String> {
    let Some(spec) = user else {
        return Ok((0, 0));
    };
    let (name, group) = match spec.split_once([':', ' ']) {
        Some((u, g)) => (u, Some(g.trim_start_matches(':').trim())),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, gid) = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| format!("user {name} does not exist on this host"))?;
    let gid = match group.filter(|g| !g.is_empty()) {
        None => gid,
        Some(g) => std::fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[0] == g)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("group {g} does not exist on this host"))?,
    };
    Ok((uid, gid))
}

/// The words of a command line as keepalived splits a script's: on whitespace, with
/// '...' and "..." quoting and `\` escaping the next character (`\n`, `\t` and `\\`
/// as in C).
pub fn argv(command: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = command.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => {
                    let e = chars
                        .next()
                        .ok_or_else(|| format!("'{command}': a \\ ends it"))?;
                    w.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        e => e,
                    });
                }
                (q @ ('\'' | '"'), None) => quote = Some(q),
                (q, Some(open)) if q == open => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => w.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("'{command}': a {q} is not closed"));
        }
        out.push(w);
    }
}

/// The program of a command line (its first word).
pub fn program(command: &str) -> String {
    argv(command)
        .ok()
        .and_then(|a| a.into_iter().next())
        .unwrap_or_default()
}

/// keepalived's script security: the program is given by an absolute path, exists, is
/// executable, and neither it nor a directory above it can be changed by anyone but
/// root or `uid` (no write permission for others, nor for a group other than root's).
pub fn secure(command: &str, uid: u32) -> Result<(), String> {
    let prog = program(command);
    let path = Path::new(&prog);
    if !path.is_absolute() {
        return Err(format!(
            "script {prog}: give the program by its absolute path"
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "script {prog} does not exist on this host (keepalived would disable the checker or notifier; xdpvs refuses it: install the script, or remove what runs it)"
        ),
        _ => format!("script {prog}: {}", super::words::io_words(&e)),
    })?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(format!("script {prog}: not an executable file"));
    }
    for p in path.ancestors() {
        let m = std::fs::metadata(p).map_err(|e| {
            format!(
                "script {prog}: {}: {}",
                p.display(),
                super::words::io_words(&e)
            )
        })?;
        let owner_ok = m.uid() == 0 || m.uid() == uid;
        let others = m.mode() & 0o002 != 0 && !(m.is_dir() && m.mode() & 0o1000 != 0 && p != path);
        let group = m.mode() & 0o020 != 0 && m.gid() != 0;
        if !owner_ok || others || group {
            return Err(format!(
                "script {prog} is not secure: {} can be changed by users other than root (keepalived's script security refuses it too; chown root and chmod go-w)",
                p.display()
            ));
        }
    }
    Ok(())
}

/// The command for `command` (split as [`argv`] does) run as `user`, after the security
/// check; its output goes nowhere.
pub fn command(command: &str, user: Option<&str>) -> Result<Command, String> {
    let (uid, gid) = ids(user)?;
    secure(command, uid)?;
    let words = argv(command)?;
    let mut c = Command::new(words.first().map_or("", String::as_str));
    c.args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if (uid, gid) != (0, 0) {
        c.uid(uid).gid(gid);
    }
    Ok(c)
}

/// How long a script run as the director stops may take.
const AT_STOP: Duration = Duration::from_secs(5);

/// Runs `script` and waits for it, up to a few seconds (then it is killed): for the
/// scripts run as the director stops (keepalived's `omega`).
pub fn run_now(script: &Script, why: &str) {
    let child = command(&script.command, script.user.as_deref()).and_then(|mut c| {
        c.spawn()
            .map_err(|e| format!("starting {}: {e}", program(&script.command)))
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{why}: not run: {e}");
            return;
        }
    };
    tracing::info!("ran {} ({why})", script.command);
    let started = Instant::now();
    while started.elapsed() < AT_STOP {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How long a notify script may run before it is killed.
const NOTIFY_LIMIT: Duration = Duration::from_secs(60);

/// Runs notify scripts on a thread of its own; stops when dropped.
#[derive(Debug, Clone)]
pub struct Runner {
    tx: Sender<(Script, String)>,
}

impl Runner {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Runner> {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("xdpvs-scripts".into())
            .spawn(move || run(rx))?;
        Ok(Runner { tx })
    }

    /// Runs `script` (`why` names the event, for the log); never waits.
    pub fn run(&self, script: &Script, why: String) {
        let _ = self.tx.send((script.clone(), why));
    }
}

fn run(rx: Receiver<(Script, String)>) {
    let mut children: Vec<(Child, Instant, String)> = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((s, why)) => match command(&s.command, s.user.as_deref()).and_then(|mut c| {
                c.spawn()
                    .map_err(|e| format!("starting {}: {e}", program(&s.command)))
            }) {
                Ok(child) => {
                    tracing::info!("ran {} ({why})", s.command);
                    children.push((child, Instant::now(), s.command));
                }
                Err(e) => tracing::warn!("{why}: not run: {e}"),
            },
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if children.is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        children.retain_mut(|(c, started, cmd)| match c.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    tracing::warn!("{cmd} ended with {status}");
                }
                false
            }
            Ok(None) if started.elapsed() > NOTIFY_LIMIT => {
                tracing::warn!(
                    "{cmd} still runs after {} s: killed",
                    NOTIFY_LIMIT.as_secs()
                );
                let _ = c.kill();
                let _ = c.wait();
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn script_security_refuses_what_others_can_change() {
        let dir = std::env::temp_dir().join(format!("xdpvs-scripts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let cmd = format!("{} arg", script.display());
        // /tmp itself is world-writable but sticky: a directory above is fine.
        if std::fs::metadata("/tmp").is_ok_and(|m| m.uid() == 0) && nix_root() {
            assert_eq!(secure(&cmd, 0), Ok(()));
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757))
                .expect("chmod");
            let e = secure(&cmd, 0).expect_err("others may write");
            assert!(e.contains("is not secure"), "{e}");
        }
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(secure(&cmd, 0)
            .expect_err("not executable")
            .contains("not an executable"));
        assert!(secure("check.sh", 0)
            .expect_err("relative")
            .contains("absolute"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(ids(None), Ok((0, 0)));
        assert_eq!(ids(Some("root")), Ok((0, 0)));
        assert!(ids(Some("no-such-user-xdpvs")).is_err());
    }

    #[test]
    fn commands_split_as_keepalived_splits_scripts() {
        let words = |s: &str| argv(s).expect("splits");
        assert_eq!(words("/bin/x a  b"), ["/bin/x", "a", "b"]);
        assert_eq!(
            words("/bin/x 'rs 1' \"UP now\" c\\ d"),
            ["/bin/x", "rs 1", "UP now", "c d"]
        );
        assert_eq!(
            words("/bin/x a'b c'd \"it's\""),
            ["/bin/x", "ab cd", "it's"]
        );
        assert_eq!(words("  "), Vec::<String>::new());
        assert!(argv("/bin/x 'open").is_err());
        assert!(argv("/bin/x \\").is_err());
        assert_eq!(program("'/opt/my tools/check' -v"), "/opt/my tools/check");
    }

    fn nix_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
