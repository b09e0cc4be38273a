//! `xdpvs explain -t VIP:PORT --client IP:PORT`: where the running director sends this
//! client's flow and why, as its workers' own tables and schedulers say (a connection's
//! entry, a persistence template, or the scheduler's pick for a new connection now).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use xdpvs_director::control::proto::{Explanation, Reason, Reply, Request, WorkerAnswer};
use xdpvs_sched::{Protocol, ServiceKey};

use crate::ask::{ask_at, fail, print_answer};
use crate::ipvsadm::parse_service_addr;

/// Options of `xdpvs explain`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("service").required(true).args(["tcp", "udp"])))]
pub struct Args {
    /// The TCP service, VIP:PORT (as ipvsadm's -t).
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub tcp: Option<SocketAddr>,
    /// The UDP service, VIP:PORT (as ipvsadm's -u).
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub udp: Option<SocketAddr>,
    /// The client's address and source port (a flow is one connection: its port counts;
    /// an IPv6 client as [ADDR]:PORT).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_client)]
    pub client: SocketAddr,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

fn why(w: &WorkerAnswer, e: &Explanation) -> String {
    let sched = e.scheduler.name();
    match w.reason {
        Reason::Connection => format!(
            "its connection: an entry in worker {}'s table ({}, expires in {} s){}{}",
            w.worker,
            w.state.as_deref().unwrap_or("?"),
            w.expires_in.unwrap_or(0),
            if w.draining {
                "; that real server was removed and drains its connections"
            } else {
                ""
            },
            if w.syn_reschedules {
                "; a new connection (SYN) from this port is scheduled afresh"
            } else {
                ""
            }
        ),
        Reason::Template => format!(
            "no entry; the client's persistence template in worker {} (expires in {} s) sends its new connections there",
            w.worker,
            w.expires_in.unwrap_or(0)
        ),
        Reason::Scheduled => format!(
            "no entry: a new connection; {sched} in worker {} would pick it now",
            w.worker
        ),
        Reason::StaleTemplate => format!(
            "no entry, and the client's template points at a real server that takes nobody new: {sched} in worker {} would pick it now",
            w.worker
        ),
        Reason::Stateless => format!(
            "no entry, and worker {}'s connection table was full lately: the stateless hash places new connections",
            w.worker
        ),
        Reason::NoRealServer => format!(
            "no entry, and no real server can take a new connection in worker {} (none up with a weight above 0): its packets are dropped",
            w.worker
        ),
    }
}

/// The answer as text: `-> REAL` (or the workers' picks), why, and what the scheduler
/// sees.
pub fn render(e: &Explanation) -> String {
    let proto = e.service.proto.name().to_uppercase();
    let service = xdpvs_sched::model::addr_port(e.service.vip, e.service.port);
    let mut out = format!("{proto} {service} from {}", e.client);
    // A worker with an entry or a template for the flow is where it is.
    let settled = e
        .workers
        .iter()
        .find(|w| matches!(w.reason, Reason::Connection | Reason::Template));
    let shown: Vec<&WorkerAnswer> = match settled {
        Some(w) => vec![w],
        None => e.workers.iter().collect(),
    };
    let real = |w: &WorkerAnswer| w.real.map_or("nowhere".to_string(), |a| a.to_string());
    let mut picks: Vec<String> = shown.iter().map(|w| real(w)).collect();
    picks.dedup();
    if picks.len() == 1 {
        out.push_str(&format!(" -> {}\n", picks[0]));
    } else {
        let each: Vec<String> = shown
            .iter()
            .map(|w| format!("{} (worker {})", real(w), w.worker))
            .collect();
        out.push_str(&format!(" -> {}\n", each.join(", ")));
    }
    for w in &shown {
        out.push_str(&format!("  why: {}\n", why(w, e)));
    }
    if settled.is_none() && e.workers.len() > 1 {
        out.push_str("  the NIC's RSS chooses the worker from the flow's addresses and ports\n");
    }
    if let Some(p) = &e.persistence {
        out.push_str(&format!(
            "  persistence: {} s, clients grouped by /{}\n",
            p.timeout.as_secs(),
            p.prefix_len
        ));
    }
    for w in &shown {
        out.push_str(&format!("  {} in worker {}:", e.scheduler.name(), w.worker));
        for r in &w.reals {
            out.push_str(&format!(
                " {} (weight {}, {} active, {} inactive{}{})",
                r.addr,
                r.weight,
                r.active,
                r.inactive,
                if r.resolved { "" } else { ", MAC unresolved" },
                if r.up {
                    ""
                } else {
                    ", out of service by its check"
                }
            ));
        }
        out.push('\n');
    }
    out
}

/// Asks the director at `socket` and prints its answer.
pub fn run(socket: &Path, args: &Args) -> ExitCode {
    let (proto, vip) = match (args.tcp, args.udp) {
        (Some(v), _) => (Protocol::Tcp, v),
        (None, Some(v)) => (Protocol::Udp, v),
        (None, None) => unreachable!("clap requires one of -t and -u"),
    };
    let key = ServiceKey {
        proto,
        vip: vip.ip(),
        port: vip.port(),
    };
    let req = Request::Explain {
        key,
        client: args.client,
    };
    match ask_at(socket, &req) {
        Ok(Reply::Explain(e)) => match print_answer(&e, args.json, render) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Ok(other) => fail(format!("the director answered {} to explain: use the same xdpvs for the director and its commands", other.name()), 1),
        Err(code) => code,
    }
}

/// `--client`: IP:PORT, or [IPv6]:PORT; an address alone is explained.
fn parse_client(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Err(format!(
            "{ip} has no port: a flow is one connection, so give the client's source port too ({}); `xdpvs -Lnc` lists the flows with theirs",
            SocketAddr::new(ip, 40000)
        )),
        Err(_) => Err(format!(
            "{s} is not a client address and port: give IP:PORT, e.g. 198.18.0.2:40000 or [2001:2::2]:40000"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpvs_director::control::proto::SchedReal;
    use xdpvs_sched::SchedKind;

    fn answer(worker: usize, real: &str, reason: Reason) -> WorkerAnswer {
        WorkerAnswer {
            worker,
            real: Some(real.parse().expect("address")),
            draining: false,
            reason,
            state: (reason == Reason::Connection).then(|| "ESTABLISHED".to_string()),
            expires_in: (reason == Reason::Connection).then_some(899),
            syn_reschedules: false,
            reals: vec![SchedReal {
                addr: real.parse().expect("address"),
                weight: 1,
                resolved: true,
                up: true,
                active: 2,
                inactive: 0,
            }],
        }
    }

    fn explanation(workers: Vec<WorkerAnswer>) -> Explanation {
        Explanation {
            service: ServiceKey {
                proto: Protocol::Tcp,
                vip: "198.18.0.100".parse().expect("address"),
                port: 80,
            },
            client: "198.18.0.2:40000".parse().expect("address"),
            scheduler: SchedKind::Rr,
            persistence: None,
            workers,
        }
    }

    #[test]
    fn json_says_tcp_and_rr_as_the_listings_do() {
        let e = explanation(vec![answer(0, "198.18.0.13", Reason::Scheduled)]);
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&e).expect("json")).expect("parses");
        assert_eq!(j["service"]["proto"], "TCP");
        assert_eq!(j["scheduler"], "rr");
        assert_eq!(j["workers"][0]["reason"], "scheduled");
        assert!(parse_client("198.18.0.2")
            .expect_err("no port")
            .contains("has no port"));
        assert_eq!(
            parse_client("[2001:2::2]:40000").map(|a| a.port()),
            Ok(40000)
        );
    }

    #[test]
    fn a_connection_in_one_worker_is_the_answer() {
        let e = explanation(vec![
            answer(0, "198.18.0.13", Reason::Scheduled),
            answer(1, "198.18.0.12", Reason::Connection),
        ]);
        assert_eq!(
            render(&e),
            "TCP 198.18.0.100:80 from 198.18.0.2:40000 -> 198.18.0.12\n  \
             why: its connection: an entry in worker 1's table (ESTABLISHED, expires in 899 s)\n  \
             rr in worker 1: 198.18.0.12 (weight 1, 2 active, 0 inactive)\n"
        );
    }

    #[test]
    fn a_new_flow_shows_each_workers_pick() {
        let e = explanation(vec![
            answer(0, "198.18.0.13", Reason::Scheduled),
            answer(1, "198.18.0.11", Reason::Scheduled),
        ]);
        let r = render(&e);
        assert!(
            r.starts_with("TCP 198.18.0.100:80 from 198.18.0.2:40000 -> 198.18.0.13 (worker 0), 198.18.0.11 (worker 1)\n"),
            "{r}"
        );
        assert!(r.contains("the NIC's RSS chooses the worker"), "{r}");
    }
}
