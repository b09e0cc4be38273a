//! The JSON documents the control side's answers become: `xdpvs -L --json`'s table (schema
//! in docs/OPERATIONS.md), which the status page's API serves as well.

use serde_json::{json, Value};
use xdpvs_sched::Method;

use super::proto::{CheckSpec, Counters, Probe, Rates, Table};

pub fn json_counters(c: &Counters) -> Value {
    json!({
        "conns": c.conns,
        "in_pkts": c.inpkts,
        "out_pkts": c.outpkts,
        "in_bytes": c.inbytes,
        "out_bytes": c.outbytes,
    })
}

pub fn json_rates(r: &Rates) -> Value {
    json!({
        "cps": r.cps,
        "in_pps": r.inpps,
        "out_pps": r.outpps,
        "in_bps": r.inbps,
        "out_bps": r.outbps,
    })
}

/// `-L --json`'s document (also with `--stats`, `--rate`, `--persistent-conn`: one
/// document has every figure), also the status page's `/api/v1/services`.
pub fn table(table: &Table) -> Value {
    let services: Vec<Value> = table
        .services
        .iter()
        .map(|s| {
            let reals: Vec<Value> = s
                .reals
                .iter()
                .map(|r| {
                    json!({
                        "address": r.addr.to_string(),
                        "port": r.port,
                        "forward": r.method.name().to_ascii_lowercase(),
                        "tunnel": match r.method {
                            Method::Tunnel(t) => json!({
                                "type": t.kind.name(),
                                "port": t.port,
                                "checksum": &t.csum.option()[6..],
                            }),
                            _ => Value::Null,
                        },
                        "weight": r.weight,
                        "effective_weight": r.effective,
                        "active_conns": r.active,
                        "inactive_conns": r.inactive,
                        "persistent_conns": r.persistent,
                        "mac_resolved": r.resolved,
                        "sorry_server": r.sorry,
                        "check": r.check.as_ref().map(json_check),
                        "health": r.health.as_ref().map(|h| json!({
                            "up": h.up,
                            "last": h.last,
                            "checks": h.checks,
                            "failures": h.failures,
                            "transitions": h.transitions,
                            "latency_us": h.latency_us,
                            "weight": h.weight,
                            "checked_at": h.checked_at,
                            "changed_at": h.changed_at,
                        })),
                        "stats": json_counters(&r.stats),
                        "rate": json_rates(&r.rates),
                    })
                })
                .collect();
            json!({
                "protocol": s.key.proto.name(),
                "vip": s.key.vip.to_string(),
                "port": s.key.port,
                "scheduler": s.scheduler.to_string(),
                "sched_flags": s.flags.words(s.scheduler),
                "persistent": s.persistence.map(|p| json!({
                    "timeout": p.timeout.as_secs(),
                    "netmask": if s.key.is_ipv6() {
                        p.prefix_len.to_string()
                    } else {
                        p.netmask().to_string()
                    },
                    "prefix_len": p.prefix_len,
                })),
                "sorry_server": s.sorry.map(|a| a.to_string()),
                "quorum": json!({
                    "quorum": s.quorum.quorum,
                    "hysteresis": s.quorum.hysteresis,
                    "held": s.quorum_held,
                }),
                "stats": json_counters(&s.stats),
                "rate": json_rates(&s.rates),
                "reals": reals,
            })
        })
        .collect();
    let vrrp: Vec<Value> = table
        .vrrp
        .iter()
        .map(|(vip, served)| json!({ "vip": vip.to_string(), "served": served }))
        .collect();
    json!({ "size": table.size, "services": services, "vrrp": vrrp })
}

fn json_probe(p: &Probe) -> Value {
    let mut v = json!({ "type": p.kind(), "word": p.word() });
    if let Probe::Http(h) = p {
        v["path"] = json!(h.path);
        v["status"] = json!(h.status_words());
        v["digest"] = json!(h.digest);
        v["host"] = json!(h.host);
        v["regex"] = json!(h.regex);
        v["regex_no_match"] = json!(h.regex_no_match);
        v["sni"] = json!(h.sni);
    }
    v
}

fn json_check(c: &CheckSpec) -> Value {
    let first = json_probe(&c.probe);
    json!({
        "type": c.kind(),
        "path": first["path"],
        "status": first["status"],
        "digest": first["digest"],
        "host": first["host"],
        "checkers": c.probes().map(json_probe).collect::<Vec<_>>(),
        "port": c.port,
        "interval_ms": c.interval.0,
        "timeout_ms": c.timeout.0,
        "retry_delay_ms": c.retry_delay.0,
        "fall": c.fall,
        "rise": c.rise,
        "on_failure": c.on_failure.name(),
        "alpha": c.alpha,
        "forwarding": c.forwarding,
        "notify_up": c.notify_up.as_ref().map(|s| &s.command),
        "notify_down": c.notify_down.as_ref().map(|s| &s.command),
    })
}
