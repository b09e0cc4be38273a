//! Where a flow goes and why (`xdpvs explain`), answered from a worker's own tables and
//! scheduler without changing either: the connection-table entry the flow has; else the
//! client's persistence template; else the real server the scheduler would pick now,
//! from a copy of its state (an rr position is not advanced).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use xdpvs_sched::conn::{ConnKey, DestRef};
use xdpvs_sched::tcp::State;
use xdpvs_sched::{Load, Mac, Persistence, SchedKind, Scheduler, ServiceKey, Time};

use super::{template_usable, Fam, Tables, HASH_WINDOW};
use crate::config::View;
use crate::reuse;

/// Why the flow goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It has a connection-table entry.
    Connection {
        /// Its state.
        state: State,
        /// Time left before it expires if nothing more is seen.
        expires_in: Duration,
        /// A new connection (a SYN) from the client's port would not continue the entry
        /// but be scheduled afresh (`conn_reuse_mode`, or its real server is out of
        /// service).
        syn_reschedules: bool,
    },
    /// No entry: the client's persistence template sends it on.
    Template {
        /// Time left on the template.
        expires_in: Duration,
    },
    /// No entry and no usable template: a new connection, placed by the scheduler.
    Scheduled {
        /// A template that no longer sends anybody to its real server (removed,
        /// unresolved, or quiescent with `expire_quiescent_template`).
        stale_template: Option<DestRef>,
    },
    /// No entry, and the table was full lately: a new connection is placed by the
    /// stateless hash.
    Stateless,
}

/// A real server of the service, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealNow {
    /// Its address.
    pub addr: IpAddr,
    /// Its configured weight.
    pub weight: u16,
    /// Its MAC (no new connections while unresolved).
    pub mac: Option<Mac>,
    /// In service by its health check (or it has none).
    pub up: bool,
    /// Its connections on this worker.
    pub load: Load,
}

/// A worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The real server's slot (none: no real server can take it).
    pub dest: Option<DestRef>,
    /// Its address, if it is one of the service's real servers (a connection may belong
    /// to one removed since, still draining).
    pub real: Option<IpAddr>,
    /// Why.
    pub why: Why,
    /// The service's scheduler.
    pub scheduler: SchedKind,
    /// Its persistence.
    pub persistence: Option<Persistence>,
    /// Its real servers, in configuration order.
    pub reals: Vec<RealNow>,
}

impl Tables {
    /// Where a packet of `client` to `key` would go now, and why; `None` when this
    /// worker has no such service (or the families differ).
    pub fn explain(&self, key: &ServiceKey, client: SocketAddr, now: Time) -> Option<Explained> {
        match (key.vip, client.ip()) {
            (IpAddr::V4(vip), IpAddr::V4(c)) => explain_in(self, key, vip, c, client.port(), now),
            (IpAddr::V6(vip), IpAddr::V6(c)) => explain_in(self, key, vip, c, client.port(), now),
            _ => None,
        }
    }
}

fn explain_in<A: Fam>(
    t: &Tables,
    key: &ServiceKey,
    vip: A,
    client: A,
    cport: u16,
    now: Time,
) -> Option<Explained> {
    let si = A::find(&t.services, key.proto, vip, key.port)?;
    let svc = &t.services.services[si];
    let ck = ConnKey {
        proto: key.proto,
        client,
        cport,
        vip,
        vport: key.port,
    };
    let conns = A::conns(t);
    let answer = |dest: Option<DestRef>, why: Why| Explained {
        dest,
        real: dest.and_then(|d| svc.reals.iter().find(|r| r.dest == d).map(|r| r.addr)),
        why,
        scheduler: svc.scheduler(),
        persistence: svc.persistence,
        reals: svc
            .reals
            .iter()
            .map(|r| RealNow {
                addr: r.addr,
                weight: r.weight,
                mac: r.mac,
                up: r.up,
                load: t.loads.load(r.dest),
            })
            .collect(),
    };
    if let Some(i) = conns.peek(&ck, now) {
        let e = conns.entry(i);
        let options = t.services.options();
        let found = reuse::Found {
            state: e.state(),
            persistent: e.is_persistent(),
            one_way: true,
            dest: t.services.dest(e.dest()),
        };
        let why = Why::Connection {
            state: e.state(),
            expires_in: conns.expires_in(e, now),
            syn_reschedules: key.proto == xdpvs_sched::Protocol::Tcp
                && reuse::reschedules(options.conn_reuse_mode, options.expire_nodest_conn, &found),
        };
        return Some(answer(Some(e.dest()), why));
    }
    let mut stale_template = None;
    if let Some(p) = svc.persistence {
        if let Some(ti) = conns.peek_template(&ck, p.prefix_len, now) {
            let e = conns.entry(ti);
            if template_usable(&t.services, e.dest()) {
                let why = Why::Template {
                    expires_in: conns.expires_in(e, now),
                };
                return Some(answer(Some(e.dest()), why));
            }
            stale_template = Some(e.dest());
        }
    } else if t.full_at.is_some_and(|at| now.since(at) < HASH_WINDOW) {
        let dest = super::fallback(t, si, &ck).map(|(d, _)| d);
        return Some(answer(dest, Why::Stateless));
    }
    // A new connection: the scheduler's pick, from a copy of its state.
    let mut sched = svc.sched.clone();
    let view = View {
        reals: &svc.reals,
        weighted: &svc.weighted,
        loads: Some(&t.loads),
    };
    let dest = sched
        .pick(&view, &super::flow_of(&ck, now))
        .map(|i| svc.reals[i].dest);
    Some(answer(dest, Why::Scheduled { stale_template }))
}
