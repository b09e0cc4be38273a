//! `xdpvs selfcheck`: the real pipeline over scripted frames, with every outcome checked.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use xdpvs_dataplane::{process, Config, Limits, Options, Services, Tables, Verdict};
use xdpvs_sched::tcp::flags::{ACK, FIN, SYN};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec, Time};
use xdpvs_testkit::frames::{self, Endpoints};

const DIRECTOR: Mac = [0x02, 0x78, 0x64, 0x00, 0x00, 0x01];
const CLIENT_MAC: Mac = [0x02, 0x78, 0x64, 0x00, 0x00, 0x02];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Options of `xdpvs selfcheck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scheduler of the test service (any of ipvsadm's -s).
    #[arg(short = 's', long, default_value = "rr")]
    scheduler: SchedKind,
    /// Weights of the real servers, comma-separated (one real server each).
    #[arg(short = 'w', long, value_delimiter = ',', default_value = "1,1,1")]
    weights: Vec<u16>,
    /// Number of TCP connections to send (SYN, ACK, data, FIN each).
    #[arg(short = 'n', long, default_value_t = 30)]
    flows: u32,
}

fn real_mac(i: usize) -> Mac {
    [0x02, 0x78, 0x64, 0x00, 0x01, 11 + i as u8]
}

/// One scripted frame and the verdict it must get.
struct Probe {
    what: String,
    frame: Vec<u8>,
    want: Verdict,
}

pub fn run(args: &Args) -> Result<()> {
    if args.weights.is_empty() || args.weights.len() > 200 {
        bail!("--weights: give between 1 and 200 weights, e.g. --weights 3,2,1");
    }
    let key = ServiceKey {
        proto: Protocol::Tcp,
        vip: VIP.into(),
        port: 80,
    };
    let mut svc = ServiceSpec::new(key, args.scheduler);
    svc.reals = args
        .weights
        .iter()
        .enumerate()
        .map(|(i, &w)| RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, 11 + i as u8).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: w,
            mac: Some(real_mac(i)),
        })
        .collect();
    let cfg = Config::new(DIRECTOR, vec![svc], Options::default());
    let limits = Limits {
        conn_capacity: 65536,
        ..Limits::default()
    };
    let services =
        Services::build(&cfg, &limits, None).context("building the test configuration")?;
    let mut t =
        Tables::new(services, &limits, Timeouts::default(), 0x5e1f).context("allocating tables")?;

    println!("xdpvs pipeline self-check: process(frame, tables, now) on scripted frames, no NIC");
    println!(
        "service {key} scheduler {}, real servers 198.18.0.11.. weights {:?}\n",
        args.scheduler, args.weights
    );

    let ep = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| Endpoints {
        src_mac: CLIENT_MAC,
        dst_mac: DIRECTOR,
        src_ip: src,
        dst_ip: dst,
        sport,
        dport,
    };
    let mut probes = vec![
        Probe {
            what: format!("ARP who-has {VIP}"),
            frame: xdpvs_arp::request(CLIENT_MAC, CLIENT, VIP).to_vec(),
            want: Verdict::Reply,
        },
        Probe {
            what: "ARP who-has 198.18.0.1 (not a VIP)".into(),
            frame: xdpvs_arp::request(CLIENT_MAC, CLIENT, Ipv4Addr::new(198, 18, 0, 1)).to_vec(),
            want: Verdict::Pass,
        },
        Probe {
            what: "TCP SYN to 198.18.0.1:80 (not a VIP)".into(),
            frame: frames::tcp(
                &ep(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 80),
                SYN,
                b"",
            ),
            want: Verdict::Pass,
        },
        Probe {
            what: format!("TCP SYN to {VIP}:443 (no service)"),
            frame: frames::tcp(&ep(CLIENT, 40000, VIP, 443), SYN, b""),
            want: Verdict::Pass,
        },
        Probe {
            what: format!("TCP ACK to {VIP}:80 without a connection"),
            frame: frames::tcp(&ep(CLIENT, 40001, VIP, 80), ACK, b""),
            // mh takes over a connection another director opened; the others drop it.
            want: if args.scheduler == xdpvs_sched::SchedKind::Mh {
                Verdict::Tx
            } else {
                Verdict::Drop(xdpvs_dataplane::DropReason::NoConnection)
            },
        },
        Probe {
            what: "truncated frame (20 bytes)".into(),
            frame: frames::tcp(&ep(CLIENT, 40002, VIP, 80), SYN, b"")[..20].to_vec(),
            want: Verdict::Drop(xdpvs_dataplane::DropReason::Ipv4Header),
        },
    ];
    let mut failures = 0;
    for p in &mut probes {
        let before = p.frame.clone();
        let got = process(&mut p.frame, &mut t, Time::from_secs(1));
        let ok = got == p.want;
        let detail = match got {
            Verdict::Reply => format!(
                " (is-at {})",
                xdpvs_director::iface::format_mac(&p.frame[22..28].try_into().unwrap_or_default())
            ),
            _ if p.frame == before => " (frame untouched)".to_string(),
            _ => String::new(),
        };
        println!(
            "  {:<45} -> {:<28} {}",
            p.what,
            format!("{got:?}{detail}"),
            if ok { "ok" } else { "FAILED" }
        );
        failures += usize::from(!ok);
    }

    // Connections: SYN, ACK, data, FIN; every packet of a flow must reach one real server
    // and only the MACs may change.
    let n_reals = args.weights.len();
    let mut per_real = vec![0u64; n_reals];
    let mut flows_ok = 0;
    for k in 0..args.flows {
        let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + k);
        let e = ep(client, 30000 + (k % 20000) as u16, VIP, 80);
        let packets = [
            frames::tcp(&e, SYN, b""),
            frames::tcp(&e, ACK, b""),
            frames::tcp(&e, ACK | 0x08, b"GET / HTTP/1.0\r\n\r\n"),
            frames::tcp(&e, FIN | ACK, b""),
        ];
        let mut real = None;
        let mut ok = true;
        for original in packets {
            let mut f = original.clone();
            let v = process(&mut f, &mut t, Time::from_secs(2));
            let idx = (0..n_reals).find(|&i| f[0..6] == real_mac(i));
            ok &= v == Verdict::Tx
                && f[6..12] == DIRECTOR
                && f[12..] == original[12..]
                && idx.is_some();
            ok &= real.is_none() || real == idx;
            real = real.or(idx);
        }
        if let (true, Some(i)) = (ok, real) {
            per_real[i] += 1;
            flows_ok += 1;
        }
    }
    println!("\n{} TCP connections (4 packets each), {} kept on one real server with only the MACs rewritten:", args.flows, flows_ok);
    let svc = &t.services().services()[0];
    let mut table = String::new();
    for r in &svc.reals {
        let load = t.conns().load(r.dest);
        let c = &t.stats().dests[r.dest.slot as usize];
        let _ = writeln!(
            table,
            "  -> {:<18} weight {:<5} conns {:<6} packets {:<7} ActiveConn {:<5} InActConn {}",
            format!("{}:80", r.addr),
            r.weight,
            c.conns.get(),
            c.packets.get(),
            load.active,
            load.inactive
        );
    }
    print!("{table}");
    let s = t.stats();
    println!(
        "\ncounters: rx {} tx {} reply {} pass {} drop {}",
        s.rx.get(),
        s.tx.get(),
        s.reply.get(),
        s.pass.get(),
        s.drops_total()
    );
    if flows_ok != args.flows {
        failures += 1;
        println!(
            "FAILED: {} connections moved between real servers or were not forwarded",
            args.flows - flows_ok
        );
    }
    // For rr and wrr the split is exact over whole cycles.
    let total_w: u64 = args.weights.iter().map(|&w| u64::from(w)).sum();
    if matches!(args.scheduler, SchedKind::Rr | SchedKind::Wrr) && total_w > 0 {
        let weights: Vec<u64> = args
            .weights
            .iter()
            .map(|&w| {
                if args.scheduler == SchedKind::Rr {
                    u64::from(w > 0)
                } else {
                    u64::from(w)
                }
            })
            .collect();
        let cycle: u64 = weights.iter().sum();
        if u64::from(args.flows) % cycle == 0 {
            let want: Vec<u64> = weights
                .iter()
                .map(|w| w * u64::from(args.flows) / cycle)
                .collect();
            if per_real != want {
                failures += 1;
                println!("FAILED: distribution {per_real:?}, expected {want:?}");
            }
        }
    }
    if failures > 0 {
        bail!("self-check failed: {failures} check(s) did not hold");
    }
    println!("self-check passed");
    Ok(())
}
