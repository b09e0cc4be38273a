//! ipvsadm's command grammar, for the subset xdpvs supports, and its listing format.
//!
//! `xdpvs -A -t 198.18.0.100:80 -s rr`, `xdpvs -a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 2`,
//! `xdpvs -Ln`, `xdpvs -C` work exactly as with ipvsadm.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use clap::Args;
use xdpvs_sched::{Persistence, Protocol, SchedKind, ServiceKey};

/// ipvsadm-style options (given without a subcommand).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "ipvsadm commands (sent to a running director)")]
pub struct IpvsArgs {
    /// Add a virtual service.
    #[arg(short = 'A', long = "add-service", group = "cmd")]
    pub add_service: bool,
    /// Edit a virtual service.
    #[arg(short = 'E', long = "edit-service", group = "cmd")]
    pub edit_service: bool,
    /// Delete a virtual service and its real servers.
    #[arg(short = 'D', long = "delete-service", group = "cmd")]
    pub delete_service: bool,
    /// Clear the whole table.
    #[arg(short = 'C', long = "clear", group = "cmd")]
    pub clear: bool,
    /// Add a real server to a virtual service.
    #[arg(short = 'a', long = "add-server", group = "cmd")]
    pub add_server: bool,
    /// Edit a real server.
    #[arg(short = 'e', long = "edit-server", group = "cmd")]
    pub edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server", group = "cmd")]
    pub delete_server: bool,
    /// List the table.
    #[arg(short = 'L', visible_short_alias = 'l', long = "list", group = "cmd")]
    pub list: bool,
    /// TCP service VIP:PORT.
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT")]
    pub tcp: Option<String>,
    /// UDP service VIP:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
    pub udp: Option<String>,
    /// Scheduler: rr, wrr, lc, wlc (default), sh, mh.
    #[arg(short = 's', long = "scheduler")]
    pub scheduler: Option<String>,
    /// Persistent service, with an optional timeout in seconds (default 300).
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "300")]
    pub persistent: Option<u64>,
    /// Persistence granularity netmask (default 255.255.255.255).
    #[arg(short = 'M', long = "netmask")]
    pub netmask: Option<Ipv4Addr>,
    /// Real server address RIP[:PORT].
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    pub real: Option<String>,
    /// Direct routing (the default and the only method supported).
    #[arg(short = 'g', long = "gatewaying")]
    pub gatewaying: bool,
    /// Masquerading (NAT): not supported.
    #[arg(short = 'm', long = "masquerading")]
    pub masquerading: bool,
    /// IP-in-IP tunnelling: not supported.
    #[arg(short = 'i', long = "ipip")]
    pub ipip: bool,
    /// Weight of the real server, 0..65535 (0 = quiescent).
    #[arg(short = 'w', long = "weight")]
    pub weight: Option<String>,
    /// Numeric output (xdpvs never resolves names, so this is always the case).
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
}

/// A control request, as the director executes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `-A`
    AddService {
        key: ServiceKey,
        scheduler: SchedKind,
        persistence: Option<Persistence>,
    },
    /// `-E`
    EditService {
        key: ServiceKey,
        scheduler: Option<SchedKind>,
        persistence: Option<Option<Persistence>>,
    },
    /// `-D`
    DeleteService { key: ServiceKey },
    /// `-C`
    Clear,
    /// `-a`
    AddReal {
        key: ServiceKey,
        addr: Ipv4Addr,
        weight: u16,
    },
    /// `-e`
    EditReal {
        key: ServiceKey,
        addr: Ipv4Addr,
        weight: Option<u16>,
    },
    /// `-d`
    DeleteReal { key: ServiceKey, addr: Ipv4Addr },
    /// `-L`
    List,
}

fn parse_addr_port(s: &str, what: &str) -> Result<SocketAddrV4, String> {
    s.parse::<SocketAddrV4>().map_err(|_| {
        format!("invalid {what} '{s}': use an IPv4 address and a port, e.g. 198.18.0.100:80")
    })
}

impl IpvsArgs {
    /// Whether any ipvsadm command was given.
    pub fn any(&self) -> bool {
        self.add_service
            || self.edit_service
            || self.delete_service
            || self.clear
            || self.add_server
            || self.edit_server
            || self.delete_server
            || self.list
    }

    fn service(&self) -> Result<ServiceKey, String> {
        let (proto, s) = match (&self.tcp, &self.udp) {
            (Some(s), None) => (Protocol::Tcp, s),
            (None, Some(s)) => (Protocol::Udp, s),
            (Some(_), Some(_)) => return Err("give either -t or -u, not both".into()),
            (None, None) => return Err("a service is needed: -t VIP:PORT or -u VIP:PORT".into()),
        };
        let a = parse_addr_port(s, "service address")?;
        if a.port() == 0 {
            return Err(format!(
                "service {s}: port 0 (all ports) is not supported; give the service's port"
            ));
        }
        Ok(ServiceKey {
            proto,
            vip: *a.ip(),
            port: a.port(),
        })
    }

    fn scheduler(&self) -> Result<Option<SchedKind>, String> {
        self.scheduler
            .as_deref()
            .map(|s| s.parse::<SchedKind>().map_err(|e| e.to_string()))
            .transpose()
    }

    fn persistence(&self) -> Result<Option<Persistence>, String> {
        match (self.persistent, self.netmask) {
            (None, None) => Ok(None),
            (None, Some(_)) => {
                Err("-M (netmask) only applies to a persistent service: add -p".into())
            }
            (Some(t), m) => {
                Persistence::new(Duration::from_secs(t), m.unwrap_or(Ipv4Addr::BROADCAST))
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn forwarding(&self) -> Result<(), String> {
        if self.masquerading {
            return Err(
                "-m (masquerading/NAT) is not supported: xdpvs only does direct routing (-g)"
                    .into(),
            );
        }
        if self.ipip {
            return Err(
                "-i (IP-in-IP tunnelling) is not supported: xdpvs only does direct routing (-g)"
                    .into(),
            );
        }
        Ok(())
    }

    fn real(&self, key: &ServiceKey) -> Result<Ipv4Addr, String> {
        let r = self
            .real
            .as_deref()
            .ok_or("a real server is needed: -r RIP[:PORT]")?;
        let (addr, port) = match r.parse::<SocketAddrV4>() {
            Ok(a) => (*a.ip(), Some(a.port())),
            Err(_) => (
                r.parse::<Ipv4Addr>().map_err(|_| {
                    format!("invalid real server '{r}': use an IPv4 address, e.g. 198.18.0.11")
                })?,
                None,
            ),
        };
        if let Some(p) = port.filter(|&p| p != key.port) {
            return Err(format!(
                "real server port {p} differs from the virtual port {}: direct routing cannot map ports (the real server must serve on {})",
                key.port, key.port
            ));
        }
        Ok(addr)
    }

    fn weight(&self) -> Result<Option<u16>, String> {
        self.weight
            .as_deref()
            .map(|w| {
                w.parse::<u16>().map_err(|_| {
                    format!("invalid weight '{w}': use a whole number from 0 to 65535")
                })
            })
            .transpose()
    }

    /// Checks the combination and turns it into a request. Every error is one line saying
    /// what to change.
    pub fn request(&self) -> Result<Request, String> {
        self.forwarding()?;
        let not_for = |flag: bool, what: &str, cmd: &str| -> Result<(), String> {
            if flag {
                Err(format!("{what} does not apply to {cmd}"))
            } else {
                Ok(())
            }
        };
        if self.add_service || self.edit_service {
            not_for(
                self.real.is_some(),
                "-r",
                "a service command (use -a to add a real server)",
            )?;
            not_for(self.weight.is_some(), "-w", "a service command")?;
            let key = self.service()?;
            return Ok(if self.add_service {
                Request::AddService {
                    key,
                    scheduler: self.scheduler()?.unwrap_or_default(),
                    persistence: self.persistence()?,
                }
            } else {
                Request::EditService {
                    key,
                    scheduler: self.scheduler()?,
                    persistence: if self.persistent.is_some() {
                        Some(self.persistence()?)
                    } else {
                        None
                    },
                }
            });
        }
        if self.delete_service {
            return Ok(Request::DeleteService {
                key: self.service()?,
            });
        }
        if self.add_server || self.edit_server || self.delete_server {
            not_for(self.scheduler.is_some(), "-s", "a real-server command")?;
            not_for(self.persistent.is_some(), "-p", "a real-server command")?;
            let key = self.service()?;
            let addr = self.real(&key)?;
            let weight = self.weight()?;
            return Ok(if self.add_server {
                Request::AddReal {
                    key,
                    addr,
                    weight: weight.unwrap_or(1),
                }
            } else if self.edit_server {
                Request::EditReal { key, addr, weight }
            } else {
                Request::DeleteReal { key, addr }
            });
        }
        if self.clear {
            return Ok(Request::Clear);
        }
        if self.list {
            return Ok(Request::List);
        }
        Err("no command given: use one of -A -E -D -C -a -e -d -L (see --help)".into())
    }
}

/// One real server line of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealLine {
    /// Address.
    pub addr: Ipv4Addr,
    /// Weight.
    pub weight: u16,
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// Whether its MAC is resolved.
    pub resolved: bool,
}

/// One service of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLine {
    /// Protocol, VIP, port.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedKind,
    /// Persistence.
    pub persistence: Option<Persistence>,
    /// Real servers.
    pub reals: Vec<RealLine>,
}

/// ipvsadm's `-L -n` layout.
pub fn format_list(size: usize, services: &[ServiceLine]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={size})");
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    for s in services {
        let _ = write!(
            out,
            "{}  {}:{} {}",
            s.key.proto, s.key.vip, s.key.port, s.scheduler
        );
        if let Some(p) = s.persistence {
            let _ = write!(out, " persistent {}", p.timeout.as_secs());
            if p.prefix_len != 32 {
                let _ = write!(out, " mask {}", p.netmask());
            }
        }
        out.push('\n');
        for r in &s.reals {
            let _ = write!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                format!("{}:{}", r.addr, s.key.port),
                "Route",
                r.weight,
                r.active,
                r.inactive
            );
            if !r.resolved {
                out.push_str(" (MAC unresolved: no traffic)");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: IpvsArgs,
    }

    fn req(args: &str) -> Result<Request, String> {
        let t = T::try_parse_from(std::iter::once("xdpvs").chain(args.split_whitespace()))
            .map_err(|e| e.to_string())?;
        t.a.request()
    }

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port: 80,
        }
    }

    #[test]
    fn the_dr_howto_commands() {
        assert_eq!(req("-C"), Ok(Request::Clear));
        assert_eq!(
            req("-A -t 198.18.0.100:80 -s rr"),
            Ok(Request::AddService {
                key: key(),
                scheduler: SchedKind::Rr,
                persistence: None
            })
        );
        assert_eq!(
            req("-a -t 198.18.0.100:80 -r 198.18.0.11 -g"),
            Ok(Request::AddReal {
                key: key(),
                addr: Ipv4Addr::new(198, 18, 0, 11),
                weight: 1
            })
        );
        assert_eq!(req("-Ln"), Ok(Request::List));
        assert_eq!(req("-L -n"), Ok(Request::List));
    }

    #[test]
    fn defaults_and_options() {
        assert_eq!(
            req("-A -t 198.18.0.100:80"),
            Ok(Request::AddService {
                key: key(),
                scheduler: SchedKind::Wlc,
                persistence: None
            })
        );
        let Ok(Request::AddService {
            persistence: Some(p),
            ..
        }) = req("-A -t 198.18.0.100:80 -p -M 255.255.255.0")
        else {
            panic!("persistent service expected")
        };
        assert_eq!((p.timeout.as_secs(), p.prefix_len), (300, 24));
        assert_eq!(
            req("-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 0"),
            Ok(Request::AddReal {
                key: key(),
                addr: Ipv4Addr::new(198, 18, 0, 11),
                weight: 0
            })
        );
    }

    #[test]
    fn clear_errors() {
        let e = req("-a -t 198.18.0.100:80 -r 198.18.0.11 -m").expect_err("NAT refused");
        assert!(e.contains("only does direct routing"), "{e}");
        let e = req("-a -t 198.18.0.100:80 -r 198.18.0.11 -i").expect_err("tunnel refused");
        assert!(e.contains("only does direct routing"), "{e}");
        let e = req("-a -t 198.18.0.100:80 -r 198.18.0.11:8080").expect_err("port mapping refused");
        assert!(e.contains("cannot map ports"), "{e}");
        let e = req("-a -t 198.18.0.100:80 -r 198.18.0.11 -w 70000").expect_err("weight range");
        assert!(e.contains("0 to 65535"), "{e}");
        let e = req("-A -t 198.18.0.100:80 -s fancy").expect_err("scheduler");
        assert!(e.contains("unknown scheduler"), "{e}");
        let e = req("-A -t 198.18.0.100").expect_err("port");
        assert!(e.contains("e.g. 198.18.0.100:80"), "{e}");
        assert!(
            req("-A -a -t 198.18.0.100:80").is_err(),
            "two commands at once"
        );
    }

    #[test]
    fn listing_layout() {
        let s = ServiceLine {
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            reals: vec![RealLine {
                addr: Ipv4Addr::new(198, 18, 0, 11),
                weight: 1,
                active: 2,
                inactive: 30,
                resolved: true,
            }],
        };
        let out = format_list(4096, &[s]);
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n  \
                    -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                    TCP  198.18.0.100:80 rr\n  \
                    -> 198.18.0.11:80               Route   1      2          30        \n";
        assert_eq!(out, want);
    }
}
