//! The `xdpvs` binary's library: ipvsadm grammar, control plane, director, lab.
#![forbid(unsafe_code)]

pub mod cli;
pub mod control;
pub mod demo;
pub mod director;
pub mod ipvsadm;
pub mod lab;
pub mod resolve;
pub mod selfcheck;

/// An attribute of a network interface from sysfs (`/sys/class/net/IFACE/FILE`), trimmed.
pub fn netdev_attr(iface: &str, file: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let p = format!("/sys/class/net/{iface}/{file}");
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("interface {iface} not found ({p} unreadable): check `ip link`"))?
        .trim()
        .to_string())
}

/// The interface's index.
pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    use anyhow::Context;
    netdev_attr(iface, "ifindex")?
        .parse()
        .context("reading ifindex")
}

/// The interface's Ethernet address.
pub fn mac_of(iface: &str) -> anyhow::Result<xdpvs_sched::Mac> {
    use anyhow::Context;
    resolve::parse_mac(&netdev_attr(iface, "address")?)
        .with_context(|| format!("{iface} has no Ethernet address"))
}

/// Whether this process runs as root (effective uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
