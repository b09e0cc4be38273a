//! The read model: every question about the director (`-L` in all its forms, `--json`,
//! `-c`, `--timeout`, `/metrics`) answered from a published [`View`] and the workers'
//! shared counters ([`Observe`]), on the asking client's own thread. Nothing here asks the
//! write side or waits for it.

use std::collections::HashMap;
use std::net::SocketAddr;

use xdpvs_dataplane::stats::TrafficTotals;
use xdpvs_sched::conn::{DestRef, Listed};
use xdpvs_sched::tcp::State;
use xdpvs_sched::{Load, RealSpec, ServiceKey, ServiceSpec};

use super::dataplane::Observe;
use super::proto::{
    ConnRow, ControlError, Counters, HealthRow, RealRow, Reply, ServiceRow, Sysctl, Table,
    TimeoutSet, CONN_ROWS_PER_MESSAGE,
};
use super::view::View;
use crate::health::Health;

/// What `--stats` counts, from the dataplane's counters.
pub fn counters(t: TrafficTotals) -> Counters {
    Counters {
        conns: t.conns,
        inpkts: t.packets,
        outpkts: 0,
        inbytes: t.bytes,
        outbytes: 0,
    }
}

/// ipvsadm's `--timeout` figures, and the switches in force.
pub fn timeouts(view: &View) -> Reply {
    let secs = |s: State| view.timeouts.get(s).as_secs() as u32;
    let o = view.options;
    Reply::Timeouts(
        TimeoutSet {
            tcp: secs(State::Established),
            tcpfin: secs(State::FinWait),
            udp: secs(State::Udp),
        },
        Sysctl {
            conn_reuse_mode: o.conn_reuse_mode.get(),
            expire_nodest_conn: o.expire_nodest_conn,
            expire_quiescent_template: o.expire_quiescent_template,
            sloppy_tcp: o.sloppy_tcp,
        },
    )
}

/// The table as `-L` shows it (services sorted by protocol, VIP and port, real servers
/// by address, as ipvsadm sorts them), or only `service`.
pub fn table(
    view: &View,
    dp: &dyn Observe,
    service: Option<&ServiceKey>,
) -> Result<Table, ControlError> {
    let all = &view.config.services;
    let mut chosen: Vec<&ServiceSpec> = match service {
        Some(k) => vec![all
            .iter()
            .find(|s| s.key == *k)
            .ok_or(ControlError::NoSuchService(*k))?],
        None => all.iter().collect(),
    };
    // ipvsadm's order (ipvs_cmp_services): address family, protocol, address, port.
    chosen.sort_by_key(|s| {
        (
            s.key.vip.is_ipv6(),
            s.key.proto.ip_number(),
            s.key.vip,
            s.key.port,
        )
    });
    let services = chosen
        .into_iter()
        .map(|s| service_row(view, dp, s))
        .collect();
    Ok(Table {
        size: dp.capacity(),
        services,
        vrrp: view.vrrp.clone(),
    })
}

/// One service of the listing.
fn service_row(view: &View, dp: &dyn Observe, s: &ServiceSpec) -> ServiceRow {
    let compiled = view.compiled(&s.key);
    let row = |r: &RealSpec, sorry: bool| {
        let (addr, weight) = (r.addr, r.weight);
        // A real server its check removed drains its connections under its old slot:
        // they are listed as -Lnc lists them.
        let dest = compiled
            .and_then(|c| c.reals.iter().find(|cr| cr.addr == addr))
            .map(|cr| cr.dest)
            .or_else(|| {
                view.draining
                    .iter()
                    .rev()
                    .find(|d| d.addr == addr && d.port == s.key.port && d.vip == s.key.vip)
                    .map(|d| d.dest)
            });
        let load = dest.map_or(Load::default(), |d| dp.load(d));
        let effective = compiled
            .and_then(|c| c.reals.iter().find(|cr| cr.addr == addr))
            .map_or(0, |cr| {
                cr.effective_weight().min(u32::from(u16::MAX)) as u16
            });
        let (stats, rates) = dest
            .and_then(|d| {
                let t = view.dest_stats.get(&d.slot).filter(|t| t.gen == d.gen)?;
                Some((t.counters(counters(dp.dest_traffic(d.slot))), t.rates()))
            })
            .unwrap_or_default();
        let id = (s.key, addr);
        RealRow {
            addr,
            port: r.port_for(s.key.port),
            method: r.method,
            weight,
            effective,
            active: u64::from(load.active),
            inactive: u64::from(load.inactive),
            persistent: dest.map_or(0, |d| dp.persistent(d)),
            resolved: view.macs.contains_key(&addr),
            check: if sorry {
                None
            } else {
                view.config.checks.get(&id).cloned()
            },
            health: if sorry {
                None
            } else {
                view.health.get(&id).map(|h| HealthRow {
                    up: h.state == Health::Up,
                    last: h.last.clone(),
                    checks: h.checks,
                    failures: h.failures,
                    transitions: h.transitions,
                    latency_us: h.latency.as_micros() as u64,
                    weight: h.dynamic.map(|d| d.weight(weight)),
                    checked_at: h.checked_at,
                    changed_at: h.changed_at,
                })
            },
            sorry,
            stats,
            rates,
        }
    };
    let mut reals: Vec<RealRow> = s.reals.iter().map(|r| row(r, false)).collect();
    let sorry = view.config.sorry.get(&s.key).copied();
    if let Some(a) = sorry {
        let standing_in = !s.reals.iter().any(|r| r.addr == a)
            && compiled.is_some_and(|c| c.reals.iter().any(|cr| cr.addr == a));
        if standing_in {
            reals.push(row(&crate::control::view::sorry_real(s, a), true));
        }
    }
    reals.sort_by_key(|r| r.addr);
    let (stats, rates) = compiled
        .and_then(|c| {
            let t = view.svc_stats.get(&c.slot).filter(|t| t.gen == c.gen)?;
            Some((t.counters(counters(dp.service_traffic(c.slot))), t.rates()))
        })
        .unwrap_or_default();
    ServiceRow {
        key: s.key,
        scheduler: s.scheduler,
        flags: s.flags,
        persistence: s.persistence,
        sorry,
        quorum: view.config.quorum.get(&s.key).cloned().unwrap_or_default(),
        quorum_held: view.quorum_held.get(&s.key).copied().unwrap_or(true),
        reals,
        stats,
        rates,
    }
}

/// `-L -c`: hands the connection table to `sink` in messages of at most
/// [`CONN_ROWS_PER_MESSAGE`] rows, as the workers hand it over a piece at a time; stops
/// early when `sink` returns false (the client is gone). A slow `sink` holds up only its
/// own thread: the next piece is asked for when it is wanted.
pub fn connections(
    view: &View,
    dp: &dyn Observe,
    sink: &mut dyn FnMut(Vec<ConnRow>) -> bool,
) -> Result<(), ControlError> {
    // Each real server at the port it is reached on (NAT's mapped one).
    let mut dests: HashMap<DestRef, SocketAddr> = view
        .draining
        .iter()
        .map(|d| (d.dest, SocketAddr::new(d.addr, d.fwd.port(d.port))))
        .collect();
    for s in view.current.services() {
        for r in &s.reals {
            dests.insert(r.dest, SocketAddr::new(r.addr, r.fwd.port(s.key.port)));
        }
    }
    let mut rows = Vec::with_capacity(CONN_ROWS_PER_MESSAGE);
    let mut open = true;
    let mut each = |piece: &[Listed]| {
        for l in piece {
            // A connection whose real server's slot went to another is dead: its next
            // packet drops it.
            let Some(&destination) = dests.get(&l.dest) else {
                continue;
            };
            let k = l.key;
            rows.push(ConnRow {
                proto: k.proto,
                expires: l.expires_in.as_secs(),
                state: l.state.name().to_string(),
                source: SocketAddr::new(k.client, k.cport),
                virtual_addr: SocketAddr::new(k.vip, k.vport),
                destination,
                template: l.template,
            });
            if rows.len() == CONN_ROWS_PER_MESSAGE {
                open = sink(std::mem::replace(
                    &mut rows,
                    Vec::with_capacity(CONN_ROWS_PER_MESSAGE),
                ));
                if !open {
                    return false;
                }
            }
        }
        true
    };
    dp.list_connections(&mut each)
        .map_err(|e| ControlError::Dataplane(e.to_string()))?;
    if open && !rows.is_empty() {
        sink(rows);
    }
    Ok(())
}
