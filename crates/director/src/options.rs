//! What `xdpvs run` is told on its command line.

use xdpvs_dataplane::sys::xsk::CopyMode;
use xdpvs_dataplane::worker::IdlePolicy;
use xdpvs_dataplane::xdp::XdpMode;
use xdpvs_dataplane::ConnReuseMode;

/// Options of `xdpvs run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// The interface clients reach the VIPs through (and real servers are on). Given
    /// twice, the two-armed director: `-i CLIENTS -i SERVERS`, the real servers behind
    /// the second interface (classic LVS-NAT with two NICs).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", value_parser = Interfaces, hide_possible_values = true, required = true)]
    pub ifaces: Vec<String>,
    /// RX queues to serve (default: all of the interface's queues).
    #[arg(long)]
    pub queues: Option<u32>,
    /// Cores to pin workers to, comma-separated (worker N gets the Nth; default: core N).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Where the XDP program runs: auto (native, else generic), native, generic.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
    /// AF_XDP bind: auto (zero-copy, else copy), zerocopy, copy.
    #[arg(long, value_enum, default_value_t = CopyMode::Auto)]
    pub bind: CopyMode,
    /// Worker polling: auto (yield where the interface's RX processing may run on the
    /// worker's core, else adaptive; re-read every second), busy (spin always), adaptive
    /// (spin under traffic, sleep in poll(2) after a long idle spell) or yield (spin,
    /// yielding the core after each empty poll).
    #[arg(long, value_enum, default_value_t = IdlePolicy::Auto)]
    pub poll: IdlePolicy,
    /// Connection-table entries per worker (33 bytes of table per 3/4 entry).
    #[arg(long, default_value_t = 1 << 20)]
    pub conn_capacity: usize,
    /// Established flows forwarded by the XDP program itself (XDP_TX), the workers staying
    /// the authority: IPv4 direct-routing TCP connections once ESTABLISHED and UDP flows
    /// once scheduled; SYN, FIN, RST, fragments, ICMP and NAT/tunnel/IPv6 traffic still go
    /// to the workers. Listings, counters, timeouts and expiry stay as without it. One
    /// interface only.
    #[arg(long)]
    pub offload: bool,
    /// Flows the XDP program's map holds with --offload (about 140 bytes each, in kernel
    /// memory); flows beyond stay with the workers.
    #[arg(long, default_value_t = 1 << 20, value_name = "N", requires = "offload", value_parser = clap::value_parser!(u32).range(1..=(1 << 26)))]
    pub offload_flows: u32,
    /// Connection-table slots each worker's expiry sweep examines per second at most:
    /// one full sweep a second for tables of up to that many slots, slots/rate seconds for
    /// larger ones (default 262144: the default table is swept every 8 s). An idle
    /// connection leaves `-Lnc` and the connection counts up to one sweep late; a higher
    /// rate costs forwarding speed on big tables.
    #[arg(long, default_value_t = xdpvs_dataplane::worker::DEFAULT_SWEEP_RATE, value_name = "SLOTS")]
    pub sweep_rate: u64,
    /// Preferred busy polling: each worker runs its queue's RX processing (NAPI) itself,
    /// spinning up to this many microseconds per poll (0 = off; the kernel's softirq or
    /// NAPI thread does it). Pair with the interface's `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` (see docs/OPERATIONS.md).
    #[arg(long, default_value_t = 0, value_name = "USECS")]
    pub busy_poll: u32,
    /// Frames one busy poll may process.
    #[arg(long, default_value_t = 64)]
    pub busy_poll_budget: u32,
    /// Schedule TCP segments without SYN that have no connection (IPVS sloppy_tcp),
    /// e.g. to take over connections after a director restart or failover. Default off.
    #[arg(long)]
    pub sloppy_tcp: bool,
    /// Expire the connections of a removed real server at their next packet, and answer
    /// a TCP client with a reset from the VIP so it fails fast (IPVS expire_nodest_conn).
    /// Default off: a removed real server keeps its connections while it answers ARP.
    #[arg(long)]
    pub expire_nodest_conn: bool,
    /// Drop the persistence template of a real server set to weight 0, so its persistent
    /// clients move at their next connection (IPVS expire_quiescent_template). Default
    /// off: persistent clients stay on a quiescent real server.
    #[arg(long)]
    pub expire_quiescent_template: bool,
    /// What a SYN that finds the entry of an earlier connection on its client port does
    /// (IPVS conn_reuse_mode): 0 continues the old entry (same real server); 1 schedules
    /// it afresh when that entry is in TIME_WAIT or CLOSE (and, with
    /// --expire-nodest-conn, when its real server is quiescent); 2 or 3 also from
    /// FIN_WAIT, the last state a direct-routing director sees. Default 3 (the kernel's
    /// is 1). Whatever the mode, a SYN never reaches a real server out of service.
    #[arg(long, default_value = "3", value_name = "N", value_parser = parse_conn_reuse_mode)]
    pub conn_reuse_mode: ConnReuseMode,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 198.18.0.1:9100 or
    /// 127.0.0.1:9100), from a thread off the workers' cores. Default: no metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the status page at http://ADDR:PORT/ (with its JSON API under /api/v1/ and
    /// /metrics), from a thread off the workers' cores. Bind it to loopback or a
    /// management network: it is plain HTTP. Default: no page.
    #[arg(long, value_name = "ADDR:PORT")]
    pub web: Option<std::net::SocketAddr>,
    /// Allow the status page's admin actions (quiesce, restore, set a weight, remove a
    /// real server) to requests that carry the token in FILE (first line; the file
    /// readable by its owner only) in the X-Xdpvs-Token header. Default: read-only.
    #[arg(long, value_name = "FILE", requires = "web")]
    pub web_admin_token: Option<std::path::PathBuf>,
    /// Scale-out behind ECMP routers: keep, as /32 (/128) addresses on IFACE, every VIP
    /// with a real server in service, for a routing daemon to announce (BIRD `protocol
    /// direct`, FRR `redistribute connected`). The addresses live 4 s unless renewed, so
    /// a director that dies stops attracting traffic on its own; an nftables rule keeps
    /// its kernel from answering the VIPs meanwhile. IFACE is created as a dummy
    /// interface if it does not exist. SIGTERM then drains (see `xdpvs drain`).
    #[arg(long, value_name = "IFACE")]
    pub announce: Option<String>,
    /// A VIP that follows keepalived's VRRP (for `--restore` users; with `--keepalived`,
    /// the `vrrp_instance`s' `virtual_ipaddress` follow anyway): served (ARP answered,
    /// traffic taken) only while keepalived holds it on an interface of this host, silent
    /// on the backup. Repeatable. Not with --announce.
    #[arg(long = "vrrp-vip", value_name = "ADDR", conflicts_with = "announce")]
    pub vrrp_vips: Vec<std::net::IpAddr>,
    /// Synchronise connections with IPVS's sync protocol (version 1) on IFACE, master and
    /// backup at once (ipvsadm --start-daemon, keepalived lvs_sync_daemon): this
    /// director's connections are multicast, other directors' (xdpvs or kernel IPVS)
    /// installed, so that a backup that takes the VIP over keeps them on their real
    /// servers.
    #[arg(long = "sync-interface", value_name = "IFACE")]
    pub sync_interface: Option<String>,
    /// The sync id sent, and the only one accepted unless 0 (ipvsadm --syncid).
    #[arg(
        long = "syncid",
        default_value_t = 0,
        value_name = "N",
        requires = "sync_interface"
    )]
    pub syncid: u8,
    /// The sync messages' multicast group (ipvsadm --mcast-group).
    #[arg(
        long = "sync-group",
        default_value = "224.0.0.81",
        value_name = "ADDR",
        requires = "sync_interface"
    )]
    pub sync_group: std::net::Ipv4Addr,
    /// Their UDP port (ipvsadm --mcast-port).
    #[arg(
        long = "sync-port",
        default_value_t = 8848,
        value_name = "PORT",
        requires = "sync_interface"
    )]
    pub sync_port: u16,
    /// Their multicast TTL (ipvsadm --mcast-ttl).
    #[arg(
        long = "sync-ttl",
        default_value_t = 1,
        value_name = "N",
        requires = "sync_interface"
    )]
    pub sync_ttl: u8,
    /// The largest sync message in bytes (ipvsadm --sync-maxlen).
    #[arg(long = "sync-maxlen", default_value_t = 1472, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(80..), requires = "sync_interface")]
    pub sync_maxlen: u16,
    /// A second control socket that answers questions only (-L, --timeout, -c, check,
    /// explain) and refuses every change, for monitoring (e.g. /run/xdpvs/read.sock).
    #[arg(long, value_name = "PATH")]
    pub read_only_socket: Option<std::path::PathBuf>,
    /// The group whose members may use the read-only socket (mode 0660); without it,
    /// only its owner (0600).
    #[arg(long, value_name = "GROUP", requires = "read_only_socket")]
    pub read_only_group: Option<String>,
    /// Draining (SIGTERM with --announce, `xdpvs drain`): the most seconds the director
    /// forwards the flows that still arrive after withdrawing its VIPs; it stops sooner,
    /// once none has arrived for 2 s.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_grace: u64,
}

/// `--conn-reuse-mode`: 0 to 3, as the sysctl.
fn parse_conn_reuse_mode(s: &str) -> Result<ConnReuseMode, String> {
    s.parse::<u8>()
        .ok()
        .and_then(ConnReuseMode::new)
        .ok_or_else(|| format!("{s:?} is not a conn_reuse_mode: give 0, 1, 2 or 3"))
}

/// `-i`: any name (the director says if there is no such interface), offering this host's
/// interfaces to shell completions (those of the host that generates them).
#[derive(Clone, Debug)]
pub struct Interfaces;

impl RunOptions {
    /// The interface clients reach the VIPs through.
    pub fn iface(&self) -> &str {
        self.ifaces.first().map_or("", String::as_str)
    }

    /// Two-armed: the interface the real servers are on.
    pub fn servers_iface(&self) -> Option<&str> {
        self.ifaces.get(1).map(String::as_str)
    }
}

impl clap::builder::TypedValueParser for Interfaces {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        Ok(value.to_string_lossy().into_owned())
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n != "lo")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Some(Box::new(
            names.into_iter().map(clap::builder::PossibleValue::new),
        ))
    }
}
