//! A test LAN in network namespaces: a client, the director, real servers and a switch.
//!
//! ```text
//!   client 198.18.0.2  2001:2::2  ─┐
//! director 198.18.0.1  2001:2::1  ─┼─ bridge (switch namespace)
//!  rs1..N 198.18.0.11+ 2001:2::11+ ┘  VIPs 198.18.0.100, 2001:2::100 on the real servers' lo
//! ```
//!
//! IPv6 (the benchmark range 2001:2::/48 of RFC 5180) only with [`LabSpec::ipv6`]:
//! otherwise it is disabled in every namespace, so that no router or neighbour
//! discovery chatter reaches the tests.
//!
//! Every namespace is named `xv<pid><n>-<role>`. Dropping the [`Lab`] kills what it
//! started and deletes its namespaces (their interfaces go with them); labs left by a
//! killed process are removed by the next [`Lab::up`]. Only addresses of the benchmark
//! ranges 198.18.0.0/15 and 2001:2::/48 are used.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why a lab step failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started, or a file not be used.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// A step did not succeed: what happened, with the output that says why.
    #[error("{0}")]
    Failed(String),
}

impl From<std::io::Error> for LabError {
    fn from(cause: std::io::Error) -> LabError {
        LabError::Io {
            what: "lab I/O".into(),
            cause,
        }
    }
}

/// A lab step's result.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

macro_rules! fail {
    ($($t:tt)*) => {
        return Err(LabError::Failed(format!($($t)*)))
    };
}

/// Says what was being done when an I/O call failed.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Doing<T> for std::io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|cause| LabError::Io {
            what: what(),
            cause,
        })
    }
}

/// The VIP of the lab.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The client's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The director's own address (DIP).
pub const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The n-th real server's address (1-based): 198.18.0.11, .12, ...
pub fn real_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n as u8)
}

/// The IPv6 VIP of the lab.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
/// The client's IPv6 address.
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// The director's own IPv6 address.
pub const DIRECTOR_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

/// The n-th real server's IPv6 address (1-based): 2001:2::11, ::12, ...
pub fn real_ip6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10 + n as u16)
}

/// The lab's tc program (`bpf/lab.bpf.c`), compiled by the build script.
static LAB_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lab.bpf.o"));
/// The lab's tunnel decapsulation (`bpf/lab_decap.bpf.c`), compiled by the build script.
static LAB_DECAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lab_decap.bpf.o"));

/// The UDP port of the lab's GUE tunnels (`LAB_GUE_PORT` of `bpf/lab_decap.bpf.c`).
pub const GUE_PORT: u16 = 6080;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A tiny HTTP/1.1 server (keep-alive) answering every GET with its name.
const HTTPD: &str = r#"
import sys, http.server, socketserver
name = sys.argv[1].encode() + b"\n"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without this, Nagle holds the body until
    # the client's delayed ACK of the headers (40 ms per keep-alive request).
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(name)))
        # Say so when the connection stays open (ab -k waits for a close otherwise).
        if self.headers.get("Connection", "").lower() == "keep-alive":
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    if len(sys.argv) > 3:
        import socket
        address_family = socket.AF_INET6
S(("::" if len(sys.argv) > 3 else "0.0.0.0", int(sys.argv[2])), H).serve_forever()
"#;

/// Shape of a lab.
#[derive(Clone, Copy, Debug)]
pub struct LabSpec {
    /// Real servers.
    pub reals: usize,
    /// RX/TX queues of the director's interface.
    pub director_queues: u32,
    /// Whether each real server runs the HTTP server.
    pub http: bool,
    /// IPv6 as well: every host gets its 2001:2::/64 address, the real servers the IPv6
    /// VIP on `lo`, and the HTTP servers listen on both families.
    pub ipv6: bool,
    /// With several director queues, the switch spreads frames over them by a hash of
    /// addresses and ports, as a NIC's RSS does (`bpf/lab.bpf.c`). Without it a veth
    /// picks the queue from the sending socket's random hash: one 4-tuple from two
    /// sockets (a reused source port), or a retransmitted SYN, may land on two queues.
    pub rss: bool,
}

impl Default for LabSpec {
    fn default() -> LabSpec {
        LabSpec {
            reals: 3,
            director_queues: 1,
            http: true,
            ipv6: false,
            rss: true,
        }
    }
}

/// A running lab. Dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    exe: PathBuf,
    exe_args: Vec<String>,
    socket: PathBuf,
    reals: usize,
    ipv6: bool,
    children: Vec<(String, Child)>,
    director: Option<Child>,
    namespaces: Vec<String>,
    /// The switch's port to the director passes XDP_TX frames (`--offload`).
    offload_ready: bool,
}

/// Whether `XDPVS_TEST_OFFLOAD=1` asks every director to run with `--offload`.
pub fn offload_asked() -> bool {
    std::env::var_os("XDPVS_TEST_OFFLOAD").is_some_and(|v| v == "1")
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .doing(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        fail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// Whether this process may build a lab (root, `ip`, AF_XDP in the kernel). `Err` says
/// why not, to be printed by a skipping test.
pub fn available() -> Result<(), String> {
    let root = is_root();
    if !root {
        return Err("not root: the lab needs network namespaces".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("`ip` (iproute2) is not installed".into());
    }
    // AF_XDP = 44. /proc/net/protocols lists XDP when the kernel has it.
    let protos = std::fs::read_to_string("/proc/net/protocols").unwrap_or_default();
    if !protos.lines().any(|l| l.starts_with("XDP")) {
        return Err("the kernel lacks AF_XDP sockets (CONFIG_XDP_SOCKETS)".into());
    }
    Ok(())
}

pub use crate::is_root;

/// A fresh lab's namespace prefix, `xv<pid>l<n>`, once the namespaces of labs whose
/// process is gone are deleted.
fn new_prefix() -> String {
    remove_stale();
    format!(
        "xv{}l{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a long-running command in `ns`, its output discarded.
fn spawn_in(ns: &str, args: &[&str]) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .doing(|| format!("starting {} in {ns}", args[0]))
}

/// Runs a shell command line in namespace `ns`.
fn sh_in(ns: &str, script: &str) -> Result<Output> {
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))
}

/// Kills what a lab started and deletes its namespaces, last made first.
fn teardown(children: &mut Vec<(String, Child)>, namespaces: &mut Vec<String>) {
    for (_, mut c) in children.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
    for ns in namespaces.drain(..).rev() {
        let _ = ip(&["netns", "del", &ns]);
    }
}

/// Deletes namespaces left by labs whose process is gone.
fn remove_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("xv") else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        // The prefix is xv<pid>l<n>-: the pid ends at the 'l'.
        if !rest[pid.len()..].starts_with('l') || pid.is_empty() {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Lab {
    /// Builds a lab; `exe` is the xdpvs binary used for the director and its commands.
    pub fn up(exe: &Path, spec: LabSpec) -> Result<Lab> {
        let prefix = new_prefix();
        let mut lab = Lab {
            socket: std::env::temp_dir().join(format!("{prefix}.sock")),
            prefix,
            exe: exe.to_path_buf(),
            exe_args: Vec::new(),
            reals: spec.reals,
            ipv6: spec.ipv6,
            children: Vec::new(),
            director: None,
            namespaces: Vec::new(),
            offload_ready: false,
        };
        lab.build(spec)?;
        Ok(lab)
    }

    /// Arguments put before every xdpvs command line: for a binary that embeds xdpvs
    /// behind a subcommand (the benchmark harness).
    pub fn set_exe_args(&mut self, args: &[&str]) {
        self.exe_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The namespace of a role: "sw", "c", "d", "r1"...
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The director's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn add_ns(&mut self, role: &str) -> Result<String> {
        let ns = self.ns(role);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let v6 = if self.ipv6 {
            // No duplicate address detection (addresses usable at once), no router
            // solicitations.
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
             net.ipv6.conf.default.router_solicitations=0"
        } else {
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
        };
        self.sh(&ns, &format!("ip link set lo up; {v6}"))?;
        Ok(ns)
    }

    /// Runs a shell command line in namespace `ns`.
    pub fn sh(&self, ns: &str, script: &str) -> Result<Output> {
        sh_in(ns, script)
    }

    /// Runs a command in namespace `ns` (not failing on a non-zero exit).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .doing(|| format!("running {args:?} in {ns}"))
    }

    fn link_host(
        &mut self,
        role: &str,
        addr: Ipv4Addr,
        addr6: Ipv6Addr,
        queues: u32,
    ) -> Result<()> {
        let (ns, sw) = (self.ns(role), self.ns("sw"));
        let q = queues.to_string();
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            role,
            "netns",
            &sw,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        self.sh(&sw, &format!("ip link set dev {role} master br0 up"))?;
        self.sh(
            &ns,
            &format!("ip addr add {addr}/24 dev eth0 && ip link set eth0 up"),
        )?;
        if self.ipv6 {
            self.sh(&ns, &format!("ip addr add {addr6}/64 dev eth0 nodad"))?;
        }
        // A static forwarding entry: the switch never floods frames for this host, so
        // each port sees only its own traffic.
        let mac = self.mac(role)?;
        self.sh(
            &sw,
            &format!("bridge fdb replace {mac} dev {role} master static"),
        )?;
        Ok(())
    }

    /// Adds a host `role` at `addr`/24 (and the IPv6 address `addr6`) on the lab's LAN:
    /// a second director, say.
    pub fn add_host(&mut self, role: &str, addr: Ipv4Addr, addr6: Ipv6Addr) -> Result<()> {
        self.add_ns(role)?;
        self.link_host(role, addr, addr6, 1)?;
        // Frames it sends through AF_XDP go as they are: no checksum offload.
        self.sh(&self.ns(role), "ethtool -K eth0 tx off >/dev/null")?;
        Ok(())
    }

    /// Starts a long-running command in `ns` with its output in `log`; killed with the
    /// role's other programs ([`Lab::stop_programs`]) or when the lab is dropped.
    pub fn spawn_logged(&mut self, ns: &str, args: &[&str], log: &Path) -> Result<()> {
        let out = std::fs::File::create(log).doing(|| format!("creating {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .doing(|| format!("starting {} in {ns}", args[0]))?;
        self.children.push((ns.to_string(), child));
        Ok(())
    }

    /// Gives the director a second interface, `eth1`, with `addr`/24 on a second bridge
    /// of the switch, and moves the real servers `roles` onto that bridge: the
    /// two-armed layout (clients on the first LAN, these real servers reachable only
    /// through the director's second interface).
    pub fn second_arm(&mut self, addr: Ipv4Addr, roles: &[&str]) -> Result<()> {
        let (d, sw) = (self.ns("d"), self.ns("sw"));
        self.sh(&sw, "ip link add br1 type bridge && ip link set br1 up")?;
        ip(&[
            "link", "add", "eth1", "netns", &d, "type", "veth", "peer", "name", "d1", "netns", &sw,
        ])?;
        self.sh(&sw, "ip link set dev d1 master br1 up")?;
        self.sh(
            &d,
            &format!("ip addr add {addr}/24 dev eth1 && ip link set eth1 up"),
        )?;
        let mac = self.sh(&d, "cat /sys/class/net/eth1/address")?;
        let mac = String::from_utf8_lossy(&mac.stdout).trim().to_string();
        self.sh(
            &sw,
            &format!("bridge fdb replace {mac} dev d1 master static"),
        )?;
        for role in roles {
            let mac = self.mac(role)?;
            self.sh(
                &sw,
                &format!(
                    "ip link set dev {role} nomaster && ip link set dev {role} master br1 && \
                     bridge fdb replace {mac} dev {role} master static"
                ),
            )?;
        }
        Ok(())
    }

    /// Attaches `bpf/lab.bpf.c`'s XDP pass program to the switch's port to `role`: frames
    /// `role` sends with XDP_TX (`run --offload`) reach the switch only then.
    fn pass_xdp_on_switch_port(&mut self, role: &str) -> Result<()> {
        // One there already (the benchmark's own pass program): it does.
        let shown = self.sh(&self.ns("sw"), &format!("ip link show dev {role}"))?;
        if String::from_utf8_lossy(&shown.stdout).contains("prog/xdp") {
            return Ok(());
        }
        let obj = std::env::temp_dir().join(format!("{}-lab-xdp.bpf.o", self.prefix));
        std::fs::write(&obj, LAB_BPF).doing(|| format!("writing {}", obj.display()))?;
        let attached = self.sh(
            &self.ns("sw"),
            &format!(
                "ip link set dev {role} xdpdrv obj {} sec xdp",
                obj.display()
            ),
        );
        let _ = std::fs::remove_file(&obj);
        attached.map(drop)
    }

    /// Attaches `bpf/lab.bpf.c` to the switch's egress port to `role`: the queue of each
    /// frame is then chosen from its addresses and ports.
    fn steer_by_flow(&mut self, role: &str) -> Result<()> {
        let obj = std::env::temp_dir().join(format!("{}-lab.bpf.o", self.prefix));
        std::fs::write(&obj, LAB_BPF).doing(|| format!("writing {}", obj.display()))?;
        let attached = self.sh(
            &self.ns("sw"),
            &format!(
                "tc qdisc add dev {role} clsact && \
                 tc filter add dev {role} egress bpf direct-action obj {} sec tc",
                obj.display()
            ),
        );
        let _ = std::fs::remove_file(&obj);
        attached.map(drop)
    }

    /// Makes a role a tunnel real server without the kernel's tunnel modules (this
    /// kernel has none): `bpf/lab_decap.bpf.c` on its eth0's ingress takes the outer
    /// headers off IPIP, IPv6-in-IPv6, GUE (to [`GUE_PORT`]) and GRE packets, and marks
    /// what it decapsulated, which nftables counters count ([`Lab::decapsulated`]).
    pub fn decapsulate(&mut self, role: &str) -> Result<()> {
        let ns = self.ns(role);
        let obj = std::env::temp_dir().join(format!("{}-{role}-decap.bpf.o", self.prefix));
        std::fs::write(&obj, LAB_DECAP).doing(|| format!("writing {}", obj.display()))?;
        let attached = self.sh(
            &ns,
            &format!(
                "tc qdisc add dev eth0 clsact && \
                 tc filter add dev eth0 ingress bpf direct-action obj {} sec tc",
                obj.display()
            ),
        );
        let _ = std::fs::remove_file(&obj);
        attached?;
        let mut nft = String::from(
            "add table inet lab\nadd chain inet lab pre { type filter hook prerouting priority -300; }\n",
        );
        for (kind, mark) in [("ipip", 1), ("gue", 2), ("gre", 3)] {
            nft.push_str(&format!(
                "add counter inet lab {kind}\nadd rule inet lab pre meta mark {:#x} counter name {kind}\n",
                0x7800 | mark
            ));
        }
        let file = std::env::temp_dir().join(format!("{}-{role}-decap.nft", self.prefix));
        std::fs::write(&file, nft).doing(|| format!("writing {}", file.display()))?;
        let loaded = self.sh(&ns, &format!("nft -f {}", file.display()));
        let _ = std::fs::remove_file(&file);
        loaded.map(drop)
    }

    /// How many packets of tunnel `kind` (`ipip`, `gue`, `gre`) a role set up with
    /// [`Lab::decapsulate`] has decapsulated.
    pub fn decapsulated(&self, role: &str, kind: &str) -> Result<u64> {
        let out = self.sh(&self.ns(role), &format!("nft list counter inet lab {kind}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| LabError::Failed(format!("no packet count in: {text}")))
    }

    /// The MAC of a role's eth0.
    pub fn mac(&self, role: &str) -> Result<String> {
        let out = self.exec(&self.ns(role), &["cat", "/sys/class/net/eth0/address"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A counter of a role's eth0 (`rx_packets`, `tx_packets`, ...).
    pub fn counter(&self, role: &str, name: &str) -> Result<u64> {
        let file = format!("/sys/class/net/eth0/statistics/{name}");
        let out = self.exec(&self.ns(role), &["cat", &file])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| LabError::Failed(format!("reading the interface counter {name}: {e}")))
    }

    /// Starts an HTTP server answering `name` on `port` in a role's namespace.
    pub fn start_http(&mut self, role: &str, name: &str, port: u16) -> Result<()> {
        let ns = self.ns(role);
        let port_s = port.to_string();
        let mut args = vec!["python3", "-c", HTTPD, name, &port_s];
        if self.ipv6 {
            args.push("dual-stack");
        }
        self.spawn(&ns, &args)?;
        self.wait_port(&ns, port)
    }

    /// Stops every program started in a role's namespace (its HTTP server, say).
    pub fn stop_programs(&mut self, role: &str) {
        let ns = self.ns(role);
        self.children.retain_mut(|(n, c)| {
            if *n != ns {
                return true;
            }
            let _ = c.kill();
            let _ = c.wait();
            false
        });
    }

    fn build(&mut self, spec: LabSpec) -> Result<()> {
        let sw = self.add_ns("sw")?;
        self.sh(&sw, "ip link add br0 type bridge && ip link set br0 up")?;
        self.add_ns("c")?;
        self.link_host("c", CLIENT_IP, CLIENT_IP6, 1)?;
        // Frames from the client go through AF_XDP, which copies them as they are: the
        // client must not leave checksums to offload.
        self.sh(&self.ns("c"), "ethtool -K eth0 tx off >/dev/null")?;
        self.add_ns("d")?;
        self.link_host("d", DIRECTOR_IP, DIRECTOR_IP6, spec.director_queues)?;
        if spec.rss && spec.director_queues > 1 {
            self.steer_by_flow("d")?;
        }
        for n in 1..=spec.reals {
            let role = format!("r{n}");
            let ns = self.add_ns(&role)?;
            self.link_host(&role, real_ip(n), real_ip6(n), 1)?;
            // An LVS-DR real server: the VIP on lo, never answering ARP for it.
            self.sh(
                &ns,
                &format!(
                    "ip addr add {VIP}/32 dev lo && \
                     sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                     net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2 \
                     net.ipv4.conf.lo.arp_ignore=1 net.ipv4.conf.lo.arp_announce=2"
                ),
            )?;
            if spec.ipv6 {
                // The IPv6 VIP on lo: the kernel never answers neighbour solicitations
                // for it on eth0 (no arp_ignore needed, see docs/OPERATIONS.md).
                self.sh(&ns, &format!("ip addr add {VIP6}/128 dev lo nodad"))?;
            }
            if spec.http {
                self.start_http(&role, &format!("rs{n}"), 80)?;
            }
        }
        Ok(())
    }

    /// Starts a long-running command in `ns`, killed when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> Result<()> {
        let child = spawn_in(ns, args)?;
        self.children.push((ns.to_string(), child));
        Ok(())
    }

    fn wait_port(&self, ns: &str, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns, "bash", "-c", &probe])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        fail!("nothing listens on port {port} in {ns} after 10 s")
    }

    /// Starts the director in its namespace (`xdpvs run -i eth0 ...` plus `extra`) and
    /// waits until it answers on its socket.
    pub fn start_director(&mut self, extra: &[&str]) -> Result<()> {
        let ns = self.ns("d");
        // XDPVS_TEST_OFFLOAD=1: every director runs with --offload (the end-to-end tests
        // agree with it on and off).
        let mut extra: Vec<&str> = extra.to_vec();
        // Not for a two-armed director, which refuses it (XDP_TX leaves by the
        // interface a frame came in by).
        let two_armed = extra.iter().any(|a| *a == "-i" || *a == "--interface");
        if offload_asked() && !two_armed && !extra.contains(&"--offload") {
            extra.push("--offload");
        }
        if extra.contains(&"--offload") && !self.offload_ready {
            self.pass_xdp_on_switch_port("d")?;
            self.offload_ready = true;
        }
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("{}-director.log", self.prefix)),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&self.exe)
            .args(&self.exe_args)
            .args(["run", "-i", "eth0", "--socket"])
            .arg(&self.socket)
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .doing(|| "starting the director".into())?;
        self.director = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .director
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                fail!("the director exited ({status}):\n{}", self.director_log());
            }
            if self.xdpvs(&["-Ln"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        fail!(
            "the director did not come up in 20 s:\n{}",
            self.director_log()
        )
    }

    /// What the director has logged.
    pub fn director_log(&self) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}-director.log", self.prefix)))
            .unwrap_or_default()
    }

    /// The director's process, if running.
    pub fn director(&mut self) -> Option<&mut Child> {
        self.director.as_mut()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the director and waits for it to exit.
    pub fn stop_director(&mut self, signal: &str) -> Result<std::process::ExitStatus> {
        let mut child = self
            .director
            .take()
            .ok_or_else(|| LabError::Failed("no director running".into()))?;
        // `ip netns exec` execs the program, so the child's pid is the director's.
        run(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                fail!("the director did not stop within 10 s of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `xdpvs ARGS` against the lab's director; its standard output, or an error with
    /// its standard error.
    pub fn xdpvs(&self, args: &[&str]) -> Result<String> {
        self.xdpvs_with_input(args, "")
    }

    /// Runs an xdpvs command with `input` on its standard input (e.g. `-R`).
    pub fn xdpvs_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        self.xdpvs_both(args, input).map(|(out, _)| out)
    }

    /// What `xdpvs -Ln` says beyond ipvsadm's columns, on stderr: a line per real server
    /// whose MAC is unresolved, whose check failed, or that stands in as sorry server.
    pub fn list_notes(&self) -> Result<String> {
        self.xdpvs_both(&["-Ln"], "").map(|(_, notes)| notes)
    }

    /// Runs an xdpvs command with `input` on its standard input: its standard output and
    /// standard error.
    fn xdpvs_both(&self, args: &[&str], input: &str) -> Result<(String, String)> {
        use std::io::Write as _;
        let mut child = Command::new(&self.exe)
            .args(&self.exe_args)
            .args(args)
            .env("XDPVS_SOCKET", &self.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .doing(|| format!("starting xdpvs {}", args.join(" ")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .doing(|| "writing xdpvs's standard input".into())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            fail!(
                "xdpvs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Waits until the director has resolved every real server's MAC.
    pub fn wait_resolved(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let l = self.list_notes()?;
            if !l.contains("unresolved") {
                return Ok(());
            }
            if Instant::now() > deadline {
                fail!("real servers still unresolved after 15 s:\n{l}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl` from the client: the body, trimmed.
    pub fn curl(&self, url: &str) -> Result<String> {
        let out = self.exec(&self.ns("c"), &["curl", "-sS", "--max-time", "5", url])?;
        if !out.status.success() {
            fail!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// How many real servers.
    pub fn reals(&self) -> usize {
        self.reals
    }

    /// Deletes everything (also done on drop).
    pub fn down(&mut self) {
        if let Some(mut d) = self.director.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        teardown(&mut self.children, &mut self.namespaces);
        let _ = std::fs::remove_file(&self.socket);
        remove_files(&self.prefix);
    }
}

/// Removes what a lab left in the temporary directory: every file and directory named
/// `<prefix>-...` (logs, sockets, configuration, a real server's saved state), unless
/// the test is failing (a panic unwinds): then they stay for whoever reads its output.
pub(crate) fn remove_files(prefix: &str) {
    if std::thread::panicking() {
        return;
    }
    let mine = format!("{prefix}-");
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for f in dir.flatten() {
        if f.file_name().to_string_lossy().starts_with(&mine) {
            let _ = if f.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(f.path())
            } else {
                std::fs::remove_file(f.path())
            };
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}

pub mod ecmp;
