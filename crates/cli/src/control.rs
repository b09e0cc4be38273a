//! The control plane: the wanted configuration, ipvsadm requests applied to it, and the
//! Unix-socket protocol between `xdpvs -A ...` and a running director.
//!
//! Protocol: the client connects, writes its arguments separated by NUL bytes and closes
//! its sending side; the director answers `ok\n` or `error\n` followed by the text to
//! print. One request per connection.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use xdpvs_dataplane::{Config, Limits, Options, Services};
use xdpvs_sched::conn::DestRef;
use xdpvs_sched::{Load, Mac, RealSpec, ServiceKey, ServiceSpec};

use crate::ipvsadm::{format_list, RealLine, Request, ServiceLine};

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/xdpvs/xdpvs.sock";

/// Where configuration goes: the workers and the XDP program (or a test double).
pub trait Dataplane {
    /// Hands a new snapshot to every worker and waits until all run with it.
    fn install(&mut self, services: &Services) -> Result<(), String>;
    /// Makes the XDP program steer exactly these services.
    fn steer(&mut self, keys: &[ServiceKey]) -> Result<(), String>;
    /// Announces a VIP (gratuitous ARP).
    fn announce(&mut self, vip: Ipv4Addr);
    /// ActiveConn/InActConn of a real server, summed over workers.
    fn load(&self, dest: DestRef) -> Load;
    /// Connection-table capacity over all workers (ipvsadm's "size").
    fn capacity(&self) -> usize;
}

/// The director's configuration state.
pub struct ControlPlane<D: Dataplane> {
    services: Vec<ServiceSpec>,
    macs: HashMap<Ipv4Addr, Mac>,
    director_mac: Mac,
    options: Options,
    limits: Limits,
    current: Services,
    dp: D,
}

impl<D: Dataplane> std::fmt::Debug for ControlPlane<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("services", &self.services.len())
            .finish()
    }
}

impl<D: Dataplane> ControlPlane<D> {
    /// An empty configuration, already installed in `dp`.
    pub fn new(
        director_mac: Mac,
        options: Options,
        limits: Limits,
        mut dp: D,
    ) -> Result<Self, String> {
        let cfg = Config {
            director_mac,
            services: Vec::new(),
            options,
        };
        let current = Services::build(&cfg, &limits, None).map_err(|e| e.to_string())?;
        dp.install(&current)?;
        dp.steer(&[])?;
        Ok(ControlPlane {
            services: Vec::new(),
            macs: HashMap::new(),
            director_mac,
            options,
            limits,
            current,
            dp,
        })
    }

    /// The dataplane.
    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    /// Gives the dataplane back (at shutdown).
    pub fn into_dataplane(self) -> D {
        self.dp
    }

    /// Every real-server address of the configuration.
    pub fn real_addrs(&self) -> Vec<Ipv4Addr> {
        let set: HashSet<Ipv4Addr> = self
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .collect();
        let mut v: Vec<_> = set.into_iter().collect();
        v.sort();
        v
    }

    /// Real servers whose MAC is not known yet.
    pub fn unresolved(&self) -> Vec<Ipv4Addr> {
        self.real_addrs()
            .into_iter()
            .filter(|a| !self.macs.contains_key(a))
            .collect()
    }

    /// Takes MACs from the neighbour table; re-applies the configuration if a real
    /// server's MAC appeared or changed. Returns what changed.
    pub fn learn_macs(
        &mut self,
        table: &HashMap<Ipv4Addr, Mac>,
    ) -> Result<Vec<(Ipv4Addr, Mac)>, String> {
        let mut changed = Vec::new();
        for a in self.real_addrs() {
            if let Some(&m) = table.get(&a) {
                if self.macs.get(&a) != Some(&m) {
                    changed.push((a, m));
                }
            }
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        let before = self.macs.clone();
        self.macs.extend(changed.iter().copied());
        if let Err(e) = self.apply(self.services.clone()) {
            self.macs = before;
            return Err(e);
        }
        Ok(changed)
    }

    /// Compiles and installs `services`; nothing changes if anything fails.
    fn apply(&mut self, services: Vec<ServiceSpec>) -> Result<(), String> {
        let with_macs = services
            .iter()
            .cloned()
            .map(|mut s| {
                for r in &mut s.reals {
                    r.mac = self.macs.get(&r.addr).copied();
                }
                s
            })
            .collect();
        let cfg = Config {
            director_mac: self.director_mac,
            services: with_macs,
            options: self.options,
        };
        let built =
            Services::build(&cfg, &self.limits, Some(&self.current)).map_err(|e| e.to_string())?;
        // Workers first, then the XDP program: a newly steered service always meets a
        // worker that knows it.
        self.dp.install(&built)?;
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.key).collect();
        self.dp.steer(&keys)?;
        let old_vips: HashSet<Ipv4Addr> = self.current.vips().iter().copied().collect();
        for &v in built.vips() {
            if !old_vips.contains(&v) {
                self.dp.announce(v);
            }
        }
        self.current = built;
        self.services = services;
        Ok(())
    }

    fn find(&self, key: &ServiceKey) -> Result<usize, String> {
        self.services
            .iter()
            .position(|s| s.key == *key)
            .ok_or_else(|| format!("no such service: {key}"))
    }

    /// Executes one request; returns what to print.
    pub fn execute(&mut self, req: &Request) -> Result<String, String> {
        let mut next = self.services.clone();
        match req {
            Request::List => return Ok(self.list()),
            Request::Clear => next.clear(),
            Request::AddService {
                key,
                scheduler,
                persistence,
            } => {
                if self.find(key).is_ok() {
                    return Err(format!("service {key} already exists"));
                }
                let mut s = ServiceSpec::new(*key, *scheduler);
                s.persistence = *persistence;
                next.push(s);
            }
            Request::EditService {
                key,
                scheduler,
                persistence,
            } => {
                let i = self.find(key)?;
                if let Some(s) = scheduler {
                    next[i].scheduler = *s;
                }
                if let Some(p) = persistence {
                    next[i].persistence = *p;
                }
            }
            Request::DeleteService { key } => {
                next.remove(self.find(key)?);
            }
            Request::AddReal { key, addr, weight } => {
                let i = self.find(key)?;
                if next[i].reals.iter().any(|r| r.addr == *addr) {
                    return Err(format!(
                        "real server {addr} already exists in service {key}"
                    ));
                }
                next[i].reals.push(RealSpec {
                    addr: *addr,
                    weight: *weight,
                    mac: None,
                });
            }
            Request::EditReal { key, addr, weight } => {
                let i = self.find(key)?;
                let r = next[i]
                    .reals
                    .iter_mut()
                    .find(|r| r.addr == *addr)
                    .ok_or_else(|| format!("no such real server {addr} in service {key}"))?;
                if let Some(w) = weight {
                    r.weight = *w;
                }
            }
            Request::DeleteReal { key, addr } => {
                let i = self.find(key)?;
                let before = next[i].reals.len();
                next[i].reals.retain(|r| r.addr != *addr);
                if next[i].reals.len() == before {
                    return Err(format!("no such real server {addr} in service {key}"));
                }
            }
        }
        self.apply(next)?;
        Ok(String::new())
    }

    /// The `-L -n` listing.
    pub fn list(&self) -> String {
        let lines: Vec<ServiceLine> = self
            .services
            .iter()
            .map(|s| {
                let compiled = self
                    .current
                    .find(&s.key)
                    .map(|i| &self.current.services()[i]);
                ServiceLine {
                    key: s.key,
                    scheduler: s.scheduler,
                    persistence: s.persistence,
                    reals: s
                        .reals
                        .iter()
                        .map(|r| {
                            let load = compiled
                                .and_then(|c| c.reals.iter().find(|cr| cr.addr == r.addr))
                                .map_or(Load::default(), |cr| self.dp.load(cr.dest));
                            RealLine {
                                addr: r.addr,
                                weight: r.weight,
                                active: u64::from(load.active),
                                inactive: u64::from(load.inactive),
                                resolved: self.macs.contains_key(&r.addr),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        format_list(self.dp.capacity(), &lines)
    }
}

/// Sends `args` to the director at `socket`; returns (success, text).
pub fn send(socket: &Path, args: &[String]) -> Result<(bool, String), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the director at {} ({e}): is `xdpvs run` running? (--socket or XDPVS_SOCKET choose another)",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    s.write_all(args.join("\0").as_bytes())
        .map_err(|e| format!("sending to the director: {e}"))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("sending to the director: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("reading the director's answer: {e}"))?;
    match reply.split_once('\n') {
        Some(("ok", body)) => Ok((true, body.to_string())),
        Some(("error", body)) => Ok((false, body.to_string())),
        _ => Err("the director sent an unreadable answer".into()),
    }
}

/// Reads one request from `stream`, runs it through `handle` and writes the answer.
pub fn serve(mut stream: UnixStream, handle: impl FnOnce(Vec<String>) -> Result<String, String>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    if (&mut stream).take(64 * 1024).read_to_end(&mut buf).is_err() {
        return;
    }
    let args: Vec<String> = String::from_utf8_lossy(&buf)
        .split('\0')
        .map(str::to_string)
        .collect();
    let answer = match handle(args) {
        Ok(text) => format!("ok\n{text}"),
        Err(e) => format!("error\n{e}\n"),
    };
    let _ = stream.write_all(answer.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpvs_sched::{Protocol, SchedKind};

    #[derive(Default)]
    struct Mock {
        installs: usize,
        steered: Vec<ServiceKey>,
        announced: Vec<Ipv4Addr>,
        fail_install: bool,
    }

    impl Dataplane for Mock {
        fn install(&mut self, _: &Services) -> Result<(), String> {
            if self.fail_install {
                return Err("worker gone".into());
            }
            self.installs += 1;
            Ok(())
        }
        fn steer(&mut self, keys: &[ServiceKey]) -> Result<(), String> {
            self.steered = keys.to_vec();
            Ok(())
        }
        fn announce(&mut self, vip: Ipv4Addr) {
            self.announced.push(vip);
        }
        fn load(&self, _: DestRef) -> Load {
            Load {
                active: 1,
                inactive: 2,
            }
        }
        fn capacity(&self) -> usize {
            1 << 20
        }
    }

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 80,
        }
    }

    fn plane() -> ControlPlane<Mock> {
        ControlPlane::new(
            [2, 0, 0, 0, 0, 1],
            Options::default(),
            Limits::default(),
            Mock::default(),
        )
        .expect("ok")
    }

    #[test]
    fn add_list_and_announce() {
        let mut p = plane();
        p.execute(&Request::AddService {
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
        })
        .expect("ok");
        assert_eq!(p.dataplane().announced, vec![key().vip]);
        assert_eq!(p.dataplane().steered, vec![key()]);
        for last in [11, 12] {
            p.execute(&Request::AddReal {
                key: key(),
                addr: Ipv4Addr::new(198, 18, 0, last),
                weight: 1,
            })
            .expect("ok");
        }
        let out = p.list();
        assert!(out.contains("TCP  198.18.0.100:80 rr\n"), "{out}");
        assert!(out.contains("  -> 198.18.0.11:80               Route   1      1          2          (MAC unresolved"));
        assert_eq!(p.unresolved().len(), 2);
        let table = HashMap::from([(Ipv4Addr::new(198, 18, 0, 11), [2, 0, 0, 0, 1, 11])]);
        assert_eq!(p.learn_macs(&table).expect("ok").len(), 1);
        assert!(p.learn_macs(&table).expect("ok").is_empty(), "nothing new");
        assert_eq!(p.unresolved(), vec![Ipv4Addr::new(198, 18, 0, 12)]);
        assert!(!p
            .list()
            .contains("198.18.0.11:80               Route   1      1          2          (MAC"));
    }

    #[test]
    fn errors_change_nothing() {
        let mut p = plane();
        assert!(p
            .execute(&Request::AddReal {
                key: key(),
                addr: Ipv4Addr::new(198, 18, 0, 11),
                weight: 1
            })
            .is_err());
        p.execute(&Request::AddService {
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
        })
        .expect("ok");
        let e = p.execute(&Request::AddService {
            key: key(),
            scheduler: SchedKind::Wrr,
            persistence: None,
        });
        assert_eq!(e, Err("service TCP 198.18.0.100:80 already exists".into()));
        p.dp.fail_install = true;
        let installs = p.dp.installs;
        assert!(p.execute(&Request::Clear).is_err());
        assert_eq!(p.dp.installs, installs);
        assert!(
            p.list().contains("TCP  198.18.0.100:80 rr"),
            "still configured"
        );
    }
}
