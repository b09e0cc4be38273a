//! A scale-out lab: a client behind a router that spreads the VIP's flows over two
//! directors by ECMP, each director running xdpvs with `--announce ifb0` and BIRD, which
//! exports ifb0's addresses to the router over BGP (docs/OPERATIONS.md, "Scale-out").
//!
//! ```text
//! client 198.19.0.2 ── 198.19.0.1 router 198.18.0.1 ─┬─ d1 198.18.0.2  (xdpvs, BIRD AS 65001)
//!                       (BIRD AS 65000, ECMP)         ├─ d2 198.18.0.3  (xdpvs, BIRD AS 65001)
//!                                                     ├─ rs1 198.18.0.11 ┐ VIP 198.19.255.10 on lo,
//!                                                     └─ rs2 198.18.0.12 ┘ default route: the router
//! ```
//!
//! The router hashes flows by addresses and ports (`fib_multipath_hash_policy=1`); real
//! servers answer clients through the router, never through a director. Namespaces are
//! named as [`super::Lab`]'s and removed the same way.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ip, new_prefix, run, sh_in, spawn_in, teardown, Doing, LabError, Result, HTTPD};

/// The VIP both directors announce.
pub const ECMP_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 10);
/// The client, behind the router: its first address.
pub const ECMP_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// How many addresses the client has (198.19.0.2 on): `mh` hashes the client's
/// address, so connections from several spread over both real servers.
pub const CLIENT_ADDRS: u8 = 8;

/// The client's addresses.
pub fn client_addrs() -> Vec<Ipv4Addr> {
    (0..CLIENT_ADDRS)
        .map(|i| Ipv4Addr::new(198, 19, 0, 2 + i))
        .collect()
}
/// The router on the servers' LAN (the BGP peer of both directors).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The router on the client's side.
const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// Director `n`'s address (1-based): 198.18.0.2, .3.
pub fn director_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 1 + n as u8)
}

/// Real server `n`'s address (1-based): 198.18.0.11, .12.
pub fn ecmp_real_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n as u8)
}

/// The router's BIRD: one BGP session per director (hold 3 s, keepalive 1 s), the
/// routes they send installed in the kernel as one multipath route.
fn router_bird(directors: usize) -> String {
    let mut c = format!(
        "router id {ROUTER};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n\
         template bgp director {{\n  local {ROUTER} as 65000;\n  hold time 3; keepalive time 1;\n  connect retry time 1; error wait time 1, 2;\n  ipv4 {{ import all; export none; }};\n}}\n"
    );
    for n in 1..=directors {
        c.push_str(&format!(
            "protocol bgp d{n} from director {{ neighbor {} as 65001; }}\n",
            director_ip(n)
        ));
    }
    c
}

/// A director's BIRD: docs/OPERATIONS.md's snippet, for this lab's addresses.
fn director_bird(n: usize) -> String {
    let me = director_ip(n);
    format!(
        "router id {me};\n\
         protocol device {{ scan time 1; }}\n\
         # The VIPs xdpvs keeps on ifb0 (run --announce ifb0), as /32 routes.\n\
         protocol direct vips {{ ipv4; interface \"ifb0\"; }}\n\
         protocol bgp uplink {{\n  local {me} as 65001;\n  neighbor {ROUTER} as 65000;\n  hold time 3; keepalive time 1;\n  connect retry time 1; error wait time 1, 2;\n  ipv4 {{ import none; export where proto = \"vips\"; next hop self; }};\n}}\n"
    )
}

/// Long-lived HTTP/1.1 keep-alive connections to the VIP from the client's addresses in
/// turn, each sending a request every INTERVAL seconds for SECS seconds; prints one JSON object per connection: its
/// requests, whether one failed (and why), the real servers that answered in turn, the
/// slowest request.
pub const KEEPALIVE_CLIENT: &str = r#"
import json, socket, sys, threading, time
vip, n, secs, interval, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
sources = sys.argv[6].split(",")
out = []
def conn(source):
    r = {"client": source, "requests": 0, "failed": 0, "servers": [], "max_latency": 0.0, "error": None}
    try:
        s = socket.create_connection((vip, 80), timeout=timeout, source_address=(source, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r["client"] = "%s:%d" % s.getsockname()
        f = s.makefile("rb")
        end = time.time() + secs
        while time.time() < end:
            t0 = time.time()
            s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: keep-alive\r\n\r\n")
            status = f.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                raise Exception("status %r" % status)
            length = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            body = f.read(length).decode().strip()
            r["requests"] += 1
            if not r["servers"] or r["servers"][-1] != body:
                r["servers"].append(body)
            r["max_latency"] = max(r["max_latency"], time.time() - t0)
            time.sleep(interval)
    except Exception as e:
        r["failed"] += 1
        r["error"] = repr(e)
    out.append(r)
ts = [threading.Thread(target=conn, args=(sources[i % len(sources)],)) for i in range(n)]
for t in ts:
    t.start()
    time.sleep(0.02)
for t in ts:
    t.join()
for r in out:
    print(json.dumps(r))
"#;

/// A running scale-out lab. Dropping it tears everything down.
#[derive(Debug)]
pub struct EcmpLab {
    prefix: String,
    exe: PathBuf,
    rules: PathBuf,
    children: Vec<(String, Child)>,
    directors: Vec<Option<Child>>,
    namespaces: Vec<String>,
}

impl EcmpLab {
    /// Builds the lab (router, two directors with BIRD, two real servers with HTTP, a
    /// client), with xdpvs at `exe` for the directors; starts no director.
    pub fn up(exe: &Path) -> Result<EcmpLab> {
        let prefix = new_prefix();
        let mut lab = EcmpLab {
            rules: std::env::temp_dir().join(format!("{prefix}-rules")),
            prefix,
            exe: exe.to_path_buf(),
            children: Vec::new(),
            directors: vec![None, None],
            namespaces: Vec::new(),
        };
        lab.build()?;
        Ok(lab)
    }

    /// The namespace of a role: "rt", "c", "d1", "d2", "r1", "r2", "sw".
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn tmp(&self, what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}-{what}", self.prefix))
    }

    /// Director `n`'s control socket.
    pub fn socket(&self, n: usize) -> PathBuf {
        self.tmp(&format!("d{n}.sock"))
    }

    /// Runs a shell command line in a role's namespace.
    pub fn sh(&self, role: &str, script: &str) -> Result<std::process::Output> {
        sh_in(&self.ns(role), script)
    }

    fn add_ns(&mut self, role: &str) -> Result<()> {
        let ns = self.ns(role);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns);
        self.sh(
            role,
            "ip link set lo up; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        )
        .map(drop)
    }

    /// A veth from `role`'s eth0 (`name` inside `role`) to the switch's bridge.
    fn link_to_switch(&mut self, role: &str, name: &str, addr: Ipv4Addr) -> Result<()> {
        let (ns, sw) = (self.ns(role), self.ns("sw"));
        ip(&[
            "link", "add", name, "netns", &ns, "type", "veth", "peer", "name", role, "netns", &sw,
        ])?;
        self.sh("sw", &format!("ip link set dev {role} master br0 up"))?;
        self.sh(
            role,
            &format!("ip addr add {addr}/24 dev {name} && ip link set {name} up"),
        )
        .map(drop)
    }

    fn spawn(&mut self, role: &str, args: &[&str]) -> Result<()> {
        let ns = self.ns(role);
        let child = spawn_in(&ns, args)?;
        self.children.push((ns, child));
        Ok(())
    }

    fn bird(&mut self, role: &str, conf: &str) -> Result<()> {
        let path = self.tmp(&format!("{role}-bird.conf"));
        std::fs::write(&path, conf).doing(|| format!("writing {}", path.display()))?;
        let (c, s, p) = (
            path.display().to_string(),
            self.tmp(&format!("{role}-bird.ctl")).display().to_string(),
            self.tmp(&format!("{role}-bird.pid")).display().to_string(),
        );
        self.spawn(role, &["bird", "-f", "-c", &c, "-s", &s, "-P", &p])
    }

    /// `birdc show protocols` in a role's namespace (for messages).
    pub fn bird_protocols(&self, role: &str) -> String {
        let s = self.tmp(&format!("{role}-bird.ctl"));
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "birdc", "-s"])
            .arg(&s)
            .args(["show", "protocols"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn build(&mut self) -> Result<()> {
        self.add_ns("sw")?;
        self.sh("sw", "ip link add br0 type bridge && ip link set br0 up")?;
        // The router: servers' LAN on eth0, the client on eth1.
        self.add_ns("rt")?;
        self.link_to_switch("rt", "eth0", ROUTER)?;
        self.add_ns("c")?;
        let (rt, c) = (self.ns("rt"), self.ns("c"));
        ip(&[
            "link", "add", "eth1", "netns", &rt, "type", "veth", "peer", "name", "eth0", "netns",
            &c,
        ])?;
        self.sh(
            "rt",
            &format!(
                "ip addr add {ROUTER_CLIENT_SIDE}/24 dev eth1 && ip link set eth1 up && \
                 sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
                 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                 net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0"
            ),
        )?;
        // Frames reach the real servers through AF_XDP as they are: the client must
        // not leave checksums to offload.
        self.sh(
            "c",
            &format!(
                "ip addr add {ECMP_CLIENT}/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via {ROUTER_CLIENT_SIDE} && ethtool -K eth0 tx off >/dev/null"
            ),
        )?;
        for a in client_addrs().into_iter().skip(1) {
            self.sh("c", &format!("ip addr add {a}/24 dev eth0"))?;
        }
        for n in 1..=2 {
            let role = format!("d{n}");
            self.add_ns(&role)?;
            self.link_to_switch(&role, "eth0", director_ip(n))?;
            // No dummy driver in this kernel: an ifb device carries the VIPs.
            self.sh(
                &role,
                &format!("ip link add ifb0 type ifb && ip route add default via {ROUTER}"),
            )?;
            self.bird(&role, &director_bird(n))?;
        }
        self.bird("rt", &router_bird(2))?;
        for n in 1..=2 {
            let role = format!("r{n}");
            self.add_ns(&role)?;
            self.link_to_switch(&role, "eth0", ecmp_real_ip(n))?;
            self.sh(
                &role,
                &format!(
                    "ip addr add {ECMP_VIP}/32 dev lo && ip route add default via {ROUTER} && \
                     sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                     net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2"
                ),
            )?;
            let name = format!("rs{n}");
            self.spawn(&role, &["python3", "-c", HTTPD, &name, "80"])?;
        }
        let rules = format!(
            "-A -t {ECMP_VIP}:80 -s mh\n-a -t {ECMP_VIP}:80 -r {}:80 -g -w 1\n-a -t {ECMP_VIP}:80 -r {}:80 -g -w 1\n",
            ecmp_real_ip(1),
            ecmp_real_ip(2)
        );
        std::fs::write(&self.rules, rules).doing(|| "writing the directors' rules".into())
    }

    /// Starts xdpvs on director `n` (`run -i eth0 --announce ifb0`, the lab's table,
    /// plus `extra`) and waits until it answers on its socket.
    pub fn start_director(&mut self, n: usize, extra: &[&str]) -> Result<()> {
        let ns = self.ns(&format!("d{n}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp(&format!("d{n}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&self.exe)
            .args(["run", "-i", "eth0", "--announce", "ifb0", "--socket"])
            .arg(self.socket(n))
            .arg("--restore")
            .arg(&self.rules)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .doing(|| "starting a director".into())?;
        self.directors[n - 1] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.directors[n - 1]
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                fail!("director {n} exited ({status}):\n{}", self.director_log(n));
            }
            if self.all_resolved(n) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        fail!(
            "director {n} did not come up (real servers resolved) in 20 s:\n{}",
            self.director_log(n)
        )
    }

    /// Sends `signal` ("KILL", "TERM") to director `n`'s xdpvs, without waiting.
    pub fn signal_director(&mut self, n: usize, signal: &str) -> Result<()> {
        let pid = self.directors[n - 1]
            .as_ref()
            .map(|c| c.id())
            .ok_or_else(|| LabError::Failed(format!("director {n} is not running")))?;
        run(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()])).map(drop)
    }

    /// Waits up to `within` for director `n`'s xdpvs to exit; its status.
    pub fn wait_director(
        &mut self,
        n: usize,
        within: Duration,
    ) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.directors[n - 1]
                .as_mut()
                .ok_or_else(|| LabError::Failed(format!("director {n} is not running")))?;
            if let Some(s) = child.try_wait()? {
                self.directors[n - 1] = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                fail!(
                    "director {n} still runs after {within:?}:\n{}",
                    self.director_log(n)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What director `n` has logged (every start).
    pub fn director_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.tmp(&format!("d{n}.log"))).unwrap_or_default()
    }

    /// Whether director `n` answers `-Ln` with every real server's MAC resolved (a
    /// real server that is not says so on stderr).
    fn all_resolved(&self, n: usize) -> bool {
        Command::new(&self.exe)
            .arg("-Ln")
            .env("XDPVS_SOCKET", self.socket(n))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("unresolved")
            })
    }

    /// Runs `xdpvs ARGS` against director `n`; its standard output.
    pub fn xdpvs(&self, n: usize, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .env("XDPVS_SOCKET", self.socket(n))
            .stdin(Stdio::null())
            .output()
            .doing(|| format!("running xdpvs {}", args.join(" ")))?;
        if !out.status.success() {
            fail!(
                "xdpvs {} (director {n}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Connections director `n` scheduled since it started (`-Ln --stats --exact`).
    pub fn director_conns(&self, n: usize) -> Result<u64> {
        let l = self.xdpvs(n, &["-Ln", "--stats", "--exact"])?;
        l.lines()
            .find(|l| l.starts_with("TCP"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| LabError::Failed(format!("no connection count in:\n{l}")))
    }

    /// Frames director `n`'s eth0 received (its interface counter: survives restarts).
    pub fn director_rx(&self, n: usize) -> Result<u64> {
        let out = self.sh(
            &format!("d{n}"),
            "cat /sys/class/net/eth0/statistics/rx_packets",
        )?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| LabError::Failed(format!("reading rx_packets: {e}")))
    }

    /// The router's next hops for the VIP now.
    pub fn next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        let out = self.sh("rt", &format!("ip -4 route show {ECMP_VIP}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut hops: Vec<Ipv4Addr> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        Ok(hops)
    }

    /// Waits up to `within` until the router's next hops for the VIP are `want`; how
    /// long that took.
    pub fn wait_next_hops(&self, want: &[Ipv4Addr], within: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let hops = self.next_hops()?;
            if hops == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                fail!(
                    "the router's next hops for {ECMP_VIP} are {hops:?}, not {want:?}, after {within:?}\nrouter: {}\nd1: {}\nd2: {}",
                    self.bird_protocols("rt"),
                    self.bird_protocols("d1"),
                    self.bird_protocols("d2")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts [`KEEPALIVE_CLIENT`] in the client's namespace: `conns` connections, a
    /// request every `interval` for `secs`, each request allowed `timeout` seconds.
    pub fn keepalive_client(
        &self,
        conns: usize,
        secs: f64,
        interval: f64,
        timeout: f64,
    ) -> Result<Child> {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("c"),
                "python3",
                "-c",
                KEEPALIVE_CLIENT,
            ])
            .args([
                ECMP_VIP.to_string(),
                conns.to_string(),
                secs.to_string(),
                interval.to_string(),
                timeout.to_string(),
                client_addrs()
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .doing(|| "starting the keep-alive client".into())
    }

    /// Runs a command in the client's namespace (not failing on a non-zero exit).
    pub fn client(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("c")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .doing(|| format!("running {args:?} in the client"))
    }

    /// Starts a command in the client's namespace, its output piped.
    pub fn client_spawn(&self, args: &[&str]) -> Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("c")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .doing(|| format!("starting {args:?} in the client"))
    }

    /// Deletes everything (also done on drop).
    pub fn down(&mut self) {
        for d in self.directors.iter_mut() {
            if let Some(mut c) = d.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        teardown(&mut self.children, &mut self.namespaces);
        // Every file of this lab is named `<prefix>-...` in the temporary directory.
        super::remove_files(&self.prefix);
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        self.down();
    }
}

/// Whether BIRD is installed (`.ci/setup` installs it): `Err` says why not.
pub fn available() -> std::result::Result<(), String> {
    super::available()?;
    for tool in ["bird", "birdc", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "{tool} is not installed (bash .ci/setup installs bird2 and nftables)"
            ));
        }
    }
    Ok(())
}
