//! Where an interface does its RX processing, seen from a worker's core: the input of
//! `--poll auto`.
//!
//! A worker that spins on a core where the kernel also runs its interface's RX
//! processing (a threaded-NAPI kernel thread allowed on that core, or the queue's
//! interrupt, whose softirq falls back to the `ksoftirqd` thread under load) holds the
//! core until the scheduler preempts it, and the frames it waits for are stuck behind
//! it. Such a worker must give the core away after an empty poll (`yield`); a worker
//! alone on its core spins (`adaptive`). The placement can change while the director
//! runs (NAPI made threaded, a thread or an interrupt moved), so it is read again every
//! second, off the packet path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xdpvs_dataplane::worker::IdlePolicy;

/// How often the placement is read again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why the interface's RX processing may run on `core`, or `None` when nothing says it
/// does. `root` is `/` in production (a directory holding `sys/` and `proc/` in tests).
pub fn rx_on_core(root: &Path, iface: &str, core: usize) -> Option<String> {
    let net = root.join("sys/class/net").join(iface);
    let threaded = read(&net.join("threaded")).is_some_and(|s| s.trim() == "1");
    if threaded {
        let prefix = format!("napi/{iface}-");
        for (pid, comm) in processes(&root.join("proc")) {
            if !comm.starts_with(&prefix) {
                continue;
            }
            let status = read(&root.join("proc").join(&pid).join("status")).unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(str::trim);
            if allowed.is_some_and(|l| cpu_list_has(l, core)) {
                return Some(format!(
                    "its RX processing thread {comm} (pid {pid}) may run on core {core}"
                ));
            }
        }
        // Threaded: the interrupts only wake the threads.
        return None;
    }
    let irqs = std::fs::read_dir(net.join("device/msi_irqs")).ok()?;
    let mut irqs: Vec<String> = irqs
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    irqs.sort();
    for irq in irqs {
        let dir = root.join("proc/irq").join(&irq);
        let list = read(&dir.join("effective_affinity_list"))
            .or_else(|| read(&dir.join("smp_affinity_list")))
            .unwrap_or_default();
        if cpu_list_has(list.trim(), core) {
            return Some(format!(
                "its interrupt {irq} is handled on core {core} (RX softirq, ksoftirqd under load)"
            ));
        }
    }
    None
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// (pid, comm) of every process.
fn processes(proc_dir: &Path) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(proc_dir) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = read(&e.path().join("comm"))?;
            Some((pid, comm.trim_end().to_string()))
        })
        .collect()
}

/// Whether a kernel CPU list ("0-3,8,10-11") holds `core`.
pub fn cpu_list_has(list: &str, core: usize) -> bool {
    list.split(',').map(str::trim).any(|part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&core),
            _ => false,
        }
    })
}

/// What `--poll auto` means for a worker on `core`, and why.
pub fn decide(root: &Path, iface: &str, core: Option<usize>) -> (IdlePolicy, String) {
    let Some(core) = core else {
        return (
            IdlePolicy::Yield,
            "the worker is not pinned, so it may share a core with RX processing".into(),
        );
    };
    match rx_on_core(root, iface, core) {
        Some(why) => (IdlePolicy::Yield, why),
        None => (
            IdlePolicy::Adaptive,
            format!("no RX processing of the interface is seen on core {core}"),
        ),
    }
}

/// The `--poll auto` decisions of the workers, re-read every [`RECHECK`].
#[derive(Debug)]
pub struct AutoPoll {
    root: PathBuf,
    iface: String,
    /// Per worker: its core and the policy in force.
    workers: Vec<(Option<usize>, IdlePolicy)>,
    next: Instant,
}

impl AutoPoll {
    /// Decisions for workers on `cores` (worker i on `cores[i]`), read from `/`.
    pub fn new(iface: &str, cores: Vec<Option<usize>>) -> AutoPoll {
        Self::with_root(Path::new("/"), iface, cores)
    }

    /// Decisions read from another root (tests).
    pub fn with_root(root: &Path, iface: &str, cores: Vec<Option<usize>>) -> AutoPoll {
        AutoPoll {
            root: root.to_path_buf(),
            iface: iface.to_string(),
            workers: cores.into_iter().map(|c| (c, IdlePolicy::Auto)).collect(),
            next: Instant::now(),
        }
    }

    /// When due, reads the placement again and returns the workers whose policy changes:
    /// (worker index, new policy, why).
    pub fn recheck(&mut self, now: Instant) -> Vec<(usize, IdlePolicy, String)> {
        if now < self.next {
            return Vec::new();
        }
        self.next = now + RECHECK;
        let mut changed = Vec::new();
        for (i, (core, current)) in self.workers.iter_mut().enumerate() {
            let (p, why) = decide(&self.root, &self.iface, *core);
            if p != *current {
                *current = p;
                changed.push((i, p, why));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "xdpvs-placement-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }

    fn fake(dir: &Path, files: &[(&str, &str)]) {
        for (p, content) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().expect("a file in a directory"))
                .expect("fixture directory");
            std::fs::write(p, content).expect("fixture file");
        }
    }

    #[test]
    fn cpu_lists() {
        assert!(cpu_list_has("0-3,8", 2));
        assert!(cpu_list_has("0-3,8", 8));
        assert!(!cpu_list_has("0-3,8", 5));
        assert!(cpu_list_has("1", 1));
        assert!(!cpu_list_has("", 0));
    }

    #[test]
    fn a_threaded_napi_thread_allowed_on_the_core_means_yield() {
        let d = tempdir();
        fake(
            d.path(),
            &[
                ("sys/class/net/eth0/threaded", "1\n"),
                ("proc/77/comm", "napi/eth0-8193\n"),
                (
                    "proc/77/status",
                    "Name:\tnapi/eth0-8193\nCpus_allowed_list:\t0-1\n",
                ),
                ("proc/78/comm", "napi/eth1-8194\n"),
                ("proc/78/status", "Cpus_allowed_list:\t2\n"),
            ],
        );
        let (p, why) = decide(d.path(), "eth0", Some(1));
        assert_eq!(p, IdlePolicy::Yield);
        assert!(why.contains("napi/eth0-8193"), "{why}");
        // Moved off the worker's core: spin.
        fake(d.path(), &[("proc/77/status", "Cpus_allowed_list:\t0\n")]);
        assert_eq!(decide(d.path(), "eth0", Some(1)).0, IdlePolicy::Adaptive);
        // Another interface's thread on the core does not count.
        assert_eq!(decide(d.path(), "eth0", Some(2)).0, IdlePolicy::Adaptive);
    }

    #[test]
    fn napi_threads_count_only_when_the_interface_is_threaded() {
        let d = tempdir();
        fake(
            d.path(),
            &[
                ("sys/class/net/eth0/threaded", "0\n"),
                ("proc/77/comm", "napi/eth0-8193\n"),
                ("proc/77/status", "Cpus_allowed_list:\t0-1\n"),
            ],
        );
        assert_eq!(decide(d.path(), "eth0", Some(1)).0, IdlePolicy::Adaptive);
    }

    #[test]
    fn an_interrupt_on_the_core_means_yield() {
        let d = tempdir();
        fake(
            d.path(),
            &[
                ("sys/class/net/eth0/threaded", "0\n"),
                ("sys/class/net/eth0/device/msi_irqs/41", "msix\n"),
                ("sys/class/net/eth0/device/msi_irqs/42", "msix\n"),
                ("proc/irq/41/effective_affinity_list", "0\n"),
                ("proc/irq/42/effective_affinity_list", "3\n"),
            ],
        );
        let (p, why) = decide(d.path(), "eth0", Some(3));
        assert_eq!(p, IdlePolicy::Yield);
        assert!(why.contains("interrupt 42"), "{why}");
        assert_eq!(decide(d.path(), "eth0", Some(2)).0, IdlePolicy::Adaptive);
    }

    #[test]
    fn an_unpinned_worker_yields_and_changes_are_reported_once() {
        let d = tempdir();
        fake(d.path(), &[("sys/class/net/eth0/threaded", "1\n")]);
        let mut a = AutoPoll::with_root(d.path(), "eth0", vec![None, Some(1)]);
        let t = Instant::now();
        let first = a.recheck(t);
        assert_eq!(
            first.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(0, IdlePolicy::Yield), (1, IdlePolicy::Adaptive)]
        );
        // Not due yet, and nothing changed when due.
        assert!(a.recheck(t).is_empty());
        assert!(a.recheck(t + RECHECK).is_empty());
        fake(
            d.path(),
            &[
                ("proc/9/comm", "napi/eth0-1\n"),
                ("proc/9/status", "Cpus_allowed_list:\t1\n"),
            ],
        );
        let later = a.recheck(t + RECHECK * 2);
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].0, later[0].1), (1, IdlePolicy::Yield));
    }
}
