//! Diagnostics: `xdpvs check` and `xdpvs explain`, run on a thread of their own from a
//! published [`View`], so that a check listening for a second stalls neither the write
//! side nor any reader. One request at a time (two checks at once would hear each
//! other's answers); a client waits its turn on its own thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use xdpvs_dataplane::engine::Why;
use xdpvs_sched::ServiceKey;

use super::check::{self, CheckReport};
use super::dataplane::{DataplaneError, Probe};
use super::proto::{Answer, ControlError, Explanation, Reason, Reply, SchedReal, WorkerAnswer};
use super::view::{Published, View};

/// How long `xdpvs check` listens for the answers to its probes, and again after sending
/// the unanswered ones a second time.
const CHECK_LISTEN: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(700)];

/// A diagnostic asked for, and where its answer goes.
#[derive(Debug)]
pub struct Ask {
    /// What is asked.
    pub what: Diagnostic,
    /// Where the answer goes.
    pub reply: Sender<Answer>,
}

/// The diagnostics there are.
#[derive(Debug, Clone, Copy)]
pub enum Diagnostic {
    /// `xdpvs check`.
    Check,
    /// `xdpvs explain`.
    Explain {
        /// The service.
        key: ServiceKey,
        /// The client's address and port.
        client: SocketAddr,
    },
}

/// Starts the diagnostics thread: it answers what comes on the returned channel until
/// every sender is gone.
pub fn start(
    view: Arc<Published<View>>,
    probe: impl Probe + Send + 'static,
) -> Result<Sender<Ask>, std::io::Error> {
    let (tx, rx): (Sender<Ask>, Receiver<Ask>) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("xdpvs-diagnose".into())
        .spawn(move || {
            for ask in rx {
                let v = view.get();
                let answer = match ask.what {
                    Diagnostic::Check => {
                        let r = getrandom::u32().unwrap_or(0);
                        run_check(
                            &v,
                            &probe,
                            check::FIRST_PORT + (r as u16) % check::PORTS,
                            (r >> 16) as u16,
                        )
                        .map(Reply::Check)
                    }
                    Diagnostic::Explain { key, client } => {
                        explain(&v, &probe, &key, client).map(Reply::Explain)
                    }
                };
                let _ = ask.reply.send(answer);
            }
        })?;
    Ok(tx)
}

/// Where the director's probes come from: its MAC and its (global) address of each
/// family.
pub fn origin(view: &View) -> check::Origin {
    let global = |a: &IpAddr| match a {
        IpAddr::V4(_) => true,
        IpAddr::V6(v) => !v.is_unicast_link_local(),
    };
    check::Origin {
        mac: view.director_mac,
        servers_mac: view.current.servers_mac(),
        v4: view.local.iter().find_map(|l| match l.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }),
        v6: view
            .local
            .iter()
            .filter(|l| global(&l.addr))
            .find_map(|l| match l.addr {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
    }
}

/// An ARP request or neighbour solicitation for each VIP: a host that answers shows in
/// the workers' conflict logs. The write side sends these every few seconds, so that a
/// host that starts answering for a VIP is noticed even when no broadcast of its own
/// reaches the director.
pub fn who_has_the_vips(view: &View) -> Vec<Vec<u8>> {
    let origin = origin(view);
    let mut vips: Vec<IpAddr> = view.config.services.iter().map(|s| s.key.vip).collect();
    vips.sort();
    vips.dedup();
    vips.iter()
        .filter_map(|&v| check::who(v, &origin))
        .collect()
}

/// `xdpvs check`: probes every VIP and every real server (see [`super::check`]); the
/// probes' source ports start at `first_port`, their echo requests carry `echo_id`.
pub fn run_check(
    view: &View,
    dp: &dyn Probe,
    first_port: u16,
    echo_id: u16,
) -> Result<CheckReport, ControlError> {
    let mut targets = Vec::new();
    for s in &view.config.services {
        let sorry = view
            .config
            .sorry
            .get(&s.key)
            .map(|&addr| (crate::control::view::sorry_real(s, addr), true));
        for (r, sorry) in s.reals.iter().map(|r| (*r, false)).chain(sorry) {
            targets.push(check::Target {
                service: s.key,
                addr: r.addr,
                mac: view.macs.get(&r.addr).copied(),
                sorry,
                port: r.port_for(s.key.port),
                method: r.method,
                gateway: view
                    .local
                    .iter()
                    .find(|l| l.contains(r.addr))
                    .map(|l| l.addr),
            });
        }
    }
    let origin = origin(view);
    let plan = check::plan(targets, &origin, first_port, echo_id);
    let dp_error = |e: DataplaneError| ControlError::Dataplane(e.to_string());
    let first = dp
        .probe(&plan.frames(), CHECK_LISTEN[0])
        .map_err(dp_error)?;
    let again = check::unanswered(&plan, &first);
    let heard = match again.is_empty() {
        true => first,
        false => first.merged(dp.probe(&again, CHECK_LISTEN[1]).map_err(dp_error)?),
    };
    let resets = check::resets(&plan, &heard, &origin);
    if !resets.is_empty() {
        dp.probe(&resets, Duration::ZERO).map_err(dp_error)?;
    }
    Ok(check::report(&plan, &heard, &origin))
}

/// A forwarding check (a health check's `forwarding` option): a SYN for `service` to real
/// server `addr` the way clients' packets go (see [`super::check`]), answered by a
/// SYN-ACK within `wait`; a reset closes it. Its source port is one of the probes'.
pub fn forwarding(
    view: &View,
    dp: &dyn Probe,
    service: ServiceKey,
    addr: IpAddr,
    wait: Duration,
) -> Result<(), String> {
    let s = view
        .config
        .services
        .iter()
        .find(|s| s.key == service)
        .ok_or("the service is gone")?;
    let r = s
        .reals
        .iter()
        .find(|r| r.addr == addr)
        .ok_or("the real server is gone")?;
    let mac = view.macs.get(&addr).copied();
    if mac.is_none() {
        return Err("its MAC is not known yet (no neighbour entry)".into());
    }
    let target = check::Target {
        service,
        addr,
        mac,
        sorry: false,
        port: r.port_for(service.port),
        method: r.method,
        gateway: view.local.iter().find(|l| l.contains(addr)).map(|l| l.addr),
    };
    let origin = origin(view);
    let r = getrandom::u32().unwrap_or(0);
    let method = target.method;
    let plan = check::plan(
        vec![target],
        &origin,
        check::FIRST_PORT + (r as u16) % check::PORTS,
        (r >> 16) as u16,
    );
    let frames = check::syns(&plan);
    if frames.is_empty() {
        return Err(format!(
            "no SYN can be sent: the director has no {} address",
            xdpvs_sched::model::family_name(service.vip)
        ));
    }
    let heard = dp
        .probe_until(&frames, wait, &|h| check::syn_verdict(&plan, h).is_some())
        .map_err(|e| e.to_string())?;
    let resets = check::resets(&plan, &heard, &origin);
    if !resets.is_empty() {
        let _ = dp.probe(&resets, Duration::ZERO);
    }
    match check::syn_verdict(&plan, &heard) {
        Some(v) => v,
        None => Err(format!(
            "no SYN-ACK within {} ms from {service} at {addr} ({})",
            wait.as_millis(),
            if method == xdpvs_sched::Method::Masq {
                "does it listen on its port, and route its replies through the director?"
            } else {
                "does it hold the VIP on lo, and listen on the port?"
            }
        )),
    }
}

/// `xdpvs explain`: where `client`'s flow to `key` goes, and why, as each worker's own
/// tables and scheduler say.
pub fn explain(
    view: &View,
    dp: &dyn Probe,
    key: &ServiceKey,
    client: SocketAddr,
) -> Result<Explanation, ControlError> {
    let spec = view
        .config
        .services
        .iter()
        .find(|s| s.key == *key)
        .ok_or(ControlError::NoSuchService(*key))?;
    if client.is_ipv4() != key.vip.is_ipv4() {
        return Err(ControlError::BadRequest(format!(
            "client {client} and service {key} are of different address families"
        )));
    }
    let (scheduler, persistence) = (spec.scheduler, spec.persistence);
    let answers = dp
        .explain(key, client)
        .map_err(|e| ControlError::Dataplane(e.to_string()))?;
    let mut workers = Vec::new();
    for (worker, e) in answers.into_iter().enumerate() {
        let Some(e) = e else { continue };
        let drained = e
            .dest
            .and_then(|d| view.draining.iter().find(|r| r.dest == d).map(|r| r.addr));
        let mut syn_reschedules = false;
        let (reason, state, expires) = match e.why {
            Why::Connection {
                state,
                expires_in,
                syn_reschedules: again,
            } => {
                syn_reschedules = again;
                (
                    Reason::Connection,
                    Some(state.name().to_string()),
                    Some(expires_in.as_secs()),
                )
            }
            Why::Template { expires_in } => (Reason::Template, None, Some(expires_in.as_secs())),
            Why::Scheduled { stale_template } => {
                let reason = if stale_template.is_some() {
                    Reason::StaleTemplate
                } else {
                    Reason::Scheduled
                };
                (reason, None, None)
            }
            Why::Stateless => (Reason::Stateless, None, None),
        };
        let reason = if e.dest.is_none() {
            Reason::NoRealServer
        } else {
            reason
        };
        workers.push(WorkerAnswer {
            worker,
            real: e.real.or(drained),
            draining: e.real.is_none() && drained.is_some(),
            reason,
            state,
            expires_in: expires,
            syn_reschedules,
            reals: e
                .reals
                .iter()
                .map(|r| SchedReal {
                    addr: r.addr,
                    weight: r.weight,
                    resolved: r.mac.is_some(),
                    up: r.up,
                    active: u64::from(r.load.active),
                    inactive: u64::from(r.load.inactive),
                })
                .collect(),
        });
    }
    Ok(Explanation {
        service: *key,
        client,
        scheduler,
        persistence,
        workers,
    })
}
