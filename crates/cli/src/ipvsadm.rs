//! ipvsadm's command grammar, for the subset xdpvs supports, and its listing format.
//!
//! `xdpvs -A -t 198.18.0.100:80 -s rr`, `xdpvs -a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 2`,
//! `xdpvs -Ln`, `xdpvs -C` work exactly as with ipvsadm.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use clap::Args;
use xdpvs_director::control::proto::{Request, Table};
use xdpvs_sched::{ConfigError, Persistence, Protocol, SchedKind, ServiceKey};

/// A real server as `-r` names it: an address and, optionally, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealAddr {
    /// Address.
    pub addr: Ipv4Addr,
    /// Port, if given (it must be the virtual port: DR cannot map ports).
    pub port: Option<u16>,
}

fn parse_service_addr(s: &str) -> Result<SocketAddrV4, String> {
    s.parse::<SocketAddrV4>().map_err(|_| {
        format!(
            "invalid service address '{s}': use an IPv4 address and a port, e.g. 198.18.0.100:80"
        )
    })
}

fn parse_real(s: &str) -> Result<RealAddr, String> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(RealAddr {
            addr: *a.ip(),
            port: Some(a.port()),
        });
    }
    s.parse::<Ipv4Addr>()
        .map(|addr| RealAddr { addr, port: None })
        .map_err(|_| format!("invalid real server '{s}': use an IPv4 address, e.g. 198.18.0.11"))
}

fn parse_weight(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("invalid weight '{s}': use a whole number from 0 to 65535"))
}

fn parse_scheduler(s: &str) -> Result<SchedKind, String> {
    s.parse::<SchedKind>().map_err(|e| e.to_string())
}

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
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub tcp: Option<SocketAddrV4>,
    /// UDP service VIP:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub udp: Option<SocketAddrV4>,
    /// Scheduler: rr, wrr, lc, wlc (default), sh, mh.
    #[arg(short = 's', long = "scheduler", value_parser = parse_scheduler)]
    pub scheduler: Option<SchedKind>,
    /// Persistent service, with an optional timeout in seconds (default 300).
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "300")]
    pub persistent: Option<u64>,
    /// Persistence granularity netmask (default 255.255.255.255).
    #[arg(short = 'M', long = "netmask")]
    pub netmask: Option<Ipv4Addr>,
    /// Real server address RIP[:PORT].
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]", value_parser = parse_real)]
    pub real: Option<RealAddr>,
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
    #[arg(short = 'w', long = "weight", value_parser = parse_weight)]
    pub weight: Option<u16>,
    /// Numeric output (xdpvs never resolves names, so this is always the case).
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
}

/// Why a command line is not a request. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `-m` or `-i`.
    #[error("{flag} ({what}) is not supported: xdpvs only does direct routing (-g)")]
    Forwarding {
        /// The flag.
        flag: &'static str,
        /// What it asks for.
        what: &'static str,
    },
    /// An option given to a command it does not apply to.
    #[error("{flag} does not apply to {command}")]
    NotFor {
        /// The option.
        flag: &'static str,
        /// The command.
        command: &'static str,
    },
    /// Both `-t` and `-u`.
    #[error("give either -t or -u, not both")]
    TwoServices,
    /// Neither `-t` nor `-u`.
    #[error("a service is needed: -t VIP:PORT or -u VIP:PORT")]
    NoService,
    /// Port 0.
    #[error("service {0}: port 0 (all ports) is not supported; give the service's port")]
    ZeroPort(SocketAddrV4),
    /// No `-r`.
    #[error("a real server is needed: -r RIP[:PORT]")]
    NoReal,
    /// `-r RIP:PORT` with another port than the service's.
    #[error("real server port {real} differs from the virtual port {virt}: direct routing cannot map ports (the real server must serve on {virt})")]
    PortMapping {
        /// The real server's port.
        real: u16,
        /// The service's.
        virt: u16,
    },
    /// `-M` without `-p`.
    #[error("-M (netmask) only applies to a persistent service: add -p")]
    NetmaskWithoutPersistence,
    /// Bad persistence.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No command.
    #[error("no command given: use one of -A -E -D -C -a -e -d -L (see --help)")]
    NoCommand,
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

    fn service(&self) -> Result<ServiceKey, UsageError> {
        let (proto, a) = match (self.tcp, self.udp) {
            (Some(a), None) => (Protocol::Tcp, a),
            (None, Some(a)) => (Protocol::Udp, a),
            (Some(_), Some(_)) => return Err(UsageError::TwoServices),
            (None, None) => return Err(UsageError::NoService),
        };
        if a.port() == 0 {
            return Err(UsageError::ZeroPort(a));
        }
        Ok(ServiceKey {
            proto,
            vip: *a.ip(),
            port: a.port(),
        })
    }

    fn persistence(&self) -> Result<Option<Persistence>, UsageError> {
        match (self.persistent, self.netmask) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(UsageError::NetmaskWithoutPersistence),
            (Some(t), m) => Ok(Some(Persistence::new(
                Duration::from_secs(t),
                m.unwrap_or(Ipv4Addr::BROADCAST),
            )?)),
        }
    }

    fn forwarding(&self) -> Result<(), UsageError> {
        if self.masquerading {
            return Err(UsageError::Forwarding {
                flag: "-m",
                what: "masquerading/NAT",
            });
        }
        if self.ipip {
            return Err(UsageError::Forwarding {
                flag: "-i",
                what: "IP-in-IP tunnelling",
            });
        }
        Ok(())
    }

    fn real(&self, key: &ServiceKey) -> Result<Ipv4Addr, UsageError> {
        let r = self.real.ok_or(UsageError::NoReal)?;
        if let Some(p) = r.port.filter(|&p| p != key.port) {
            return Err(UsageError::PortMapping {
                real: p,
                virt: key.port,
            });
        }
        Ok(r.addr)
    }

    /// Checks the combination and turns it into a request.
    pub fn request(&self) -> Result<Request, UsageError> {
        self.forwarding()?;
        let not_for = |flag: bool, name: &'static str, command: &'static str| {
            if flag {
                Err(UsageError::NotFor {
                    flag: name,
                    command,
                })
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
                    scheduler: self.scheduler.unwrap_or_default(),
                    persistence: self.persistence()?,
                }
            } else {
                Request::EditService {
                    key,
                    scheduler: self.scheduler,
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
            return Ok(if self.add_server {
                Request::AddReal {
                    key,
                    addr,
                    weight: self.weight.unwrap_or(1),
                }
            } else if self.edit_server {
                Request::EditReal {
                    key,
                    addr,
                    weight: self.weight,
                }
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
        Err(UsageError::NoCommand)
    }
}

/// ipvsadm's `-L -n` layout.
pub fn format_list(table: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={})", table.size);
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    for s in &table.services {
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
    use xdpvs_director::control::proto::{RealRow, ServiceRow};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: IpvsArgs,
    }

    fn req(args: &str) -> Result<Request, String> {
        let t = T::try_parse_from(std::iter::once("xdpvs").chain(args.split_whitespace()))
            .map_err(|e| e.to_string())?;
        t.a.request().map_err(|e| e.to_string())
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
        let s = ServiceRow {
            key: key(),
            scheduler: SchedKind::Rr,
            persistence: None,
            reals: vec![RealRow {
                addr: Ipv4Addr::new(198, 18, 0, 11),
                weight: 1,
                active: 2,
                inactive: 30,
                resolved: true,
            }],
        };
        let out = format_list(&Table {
            size: 4096,
            services: vec![s],
        });
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n  \
                    -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                    TCP  198.18.0.100:80 rr\n  \
                    -> 198.18.0.11:80               Route   1      2          30        \n";
        assert_eq!(out, want);
    }
}
