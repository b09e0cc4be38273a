//! What a health check is told: the probe, where it goes, its timing and what a failure
//! does. Shared by the ipvsadm-style options, the keepalived.conf import, the control
//! protocol and the checker.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration in whole milliseconds, written and read as seconds (`5`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u32);

impl Millis {
    /// Whole seconds.
    pub const fn secs(s: u32) -> Millis {
        Millis(s * 1000)
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }

    /// Parses seconds, whole or with up to three decimals (`5`, `1.5`, `0.25`), from
    /// 1 ms to 24 hours.
    pub fn parse_secs(s: &str) -> Result<Millis, String> {
        let bad = || format!("'{s}' is not a time in seconds from 0.001 to 86400 (e.g. 5 or 0.5)");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 3
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let w: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let f: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().map_err(|_| bad())?
        };
        let ms = w
            .checked_mul(1000)
            .and_then(|m| m.checked_add(f))
            .ok_or_else(bad)?;
        if ms == 0 || ms > 86_400_000 {
            return Err(bad());
        }
        Ok(Millis(ms as u32))
    }
}

impl fmt::Display for Millis {
    /// Seconds, with decimals only when needed (`5`, `1.5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, ms) = (self.0 / 1000, self.0 % 1000);
        if ms == 0 {
            write!(f, "{s}")
        } else {
            let frac = format!("{ms:03}");
            write!(f, "{s}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// What is tried against the real server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Probe {
    /// A TCP connection is opened and closed (keepalived `TCP_CHECK`).
    Tcp,
    /// An ICMP (IPv6: ICMPv6) echo request is answered (keepalived `PING_CHECK`).
    Ping,
    /// An HTTP/1.0 GET (keepalived `HTTP_GET`).
    Http {
        /// The path requested, e.g. `/health`.
        path: String,
        /// The status code that counts as healthy; any 2xx when `None` (as keepalived).
        status: Option<u16>,
        /// The MD5 of the body that counts as healthy, lowercase hex (keepalived
        /// `digest`); any body when `None`.
        digest: Option<String>,
        /// The `Host:` header (keepalived `virtualhost`); the real server's address and
        /// port when `None`.
        host: Option<String>,
    },
}

/// What a real server that fails its check gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnFailure {
    /// Weight 0: no new connections, established ones continue (keepalived's
    /// `inhibit_on_failure`). The default of the ipvsadm-style options.
    #[default]
    Inhibit,
    /// Taken out of the service (keepalived's default): its connections drain as with
    /// `-d`.
    Remove,
}

impl OnFailure {
    /// The option's word.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Inhibit => "inhibit",
            OnFailure::Remove => "remove",
        }
    }
}

/// A real server's health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckSpec {
    /// What is tried.
    pub probe: Probe,
    /// The port tried (keepalived `connect_port`); the real server's port when `None`
    /// (the service's, unless NAT maps it).
    pub port: Option<u16>,
    /// Time between checks while nothing changes (keepalived `delay_loop`).
    pub interval: Millis,
    /// How long a connection and an answer may take (keepalived `connect_timeout`).
    pub timeout: Millis,
    /// Time before the next try after a failure, or while rising (keepalived
    /// `delay_before_retry`).
    pub retry_delay: Millis,
    /// Failures in a row that take a healthy real server out (keepalived `retry` + 1).
    pub fall: u32,
    /// Successes in a row that bring a failed real server back (1 in keepalived).
    pub rise: u32,
    /// What a failed real server gets.
    pub on_failure: OnFailure,
}

impl CheckSpec {
    /// Interval when not given.
    pub const DEFAULT_INTERVAL: Millis = Millis::secs(5);
    /// Timeout when not given (keepalived's `connect_timeout` default).
    pub const DEFAULT_TIMEOUT: Millis = Millis::secs(5);
    /// Retry delay when not given (keepalived's `delay_before_retry` default).
    pub const DEFAULT_RETRY_DELAY: Millis = Millis::secs(1);
    /// Fall when not given (keepalived's default of one retry).
    pub const DEFAULT_FALL: u32 = 2;
    /// Rise when not given.
    pub const DEFAULT_RISE: u32 = 1;

    /// A check with every default.
    pub fn new(probe: Probe) -> CheckSpec {
        CheckSpec {
            probe,
            port: None,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
            fall: Self::DEFAULT_FALL,
            rise: Self::DEFAULT_RISE,
            on_failure: OnFailure::Inhibit,
        }
    }

    /// `tcp` or `http:PATH[:STATUS]`, as `--check` takes it (the digest and host are
    /// options of their own).
    pub fn probe_word(&self) -> String {
        match &self.probe {
            Probe::Tcp => "tcp".into(),
            Probe::Ping => "ping".into(),
            Probe::Http { path, status, .. } => match status {
                Some(s) => format!("http:{path}:{s}"),
                None => format!("http:{path}"),
            },
        }
    }

    /// The probe's kind, for listings and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self.probe {
            Probe::Tcp => "tcp",
            Probe::Ping => "ping",
            Probe::Http { .. } => "http",
        }
    }
}

/// Parses `--check`: `tcp`, `ping`, `http`, `http:/path` or `http:/path:STATUS`.
pub fn parse_probe(s: &str) -> Result<Probe, String> {
    let bad = || {
        format!("illegal check '{s}': use tcp, ping, http, http:/path or http:/path:STATUS (e.g. http:/health:200)")
    };
    match s {
        "tcp" => return Ok(Probe::Tcp),
        "ping" => return Ok(Probe::Ping),
        _ => {}
    }
    let rest = match s.strip_prefix("http") {
        Some("") => "/",
        Some(r) => r.strip_prefix(':').ok_or_else(bad)?,
        None => return Err(bad()),
    };
    let (path, status) = match rest.rsplit_once(':') {
        Some((p, st)) if !st.is_empty() && st.bytes().all(|b| b.is_ascii_digit()) => {
            let code: u16 = st.parse().map_err(|_| bad())?;
            if !(100..=599).contains(&code) {
                return Err(bad());
            }
            (p, Some(code))
        }
        _ => (rest, None),
    };
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad());
    }
    Ok(Probe::Http {
        path: path.to_string(),
        status,
        digest: None,
        host: None,
    })
}

/// Checks an MD5 digest written as 32 hex digits; returns it in lowercase.
pub fn parse_digest(s: &str) -> Result<String, String> {
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "illegal digest '{s}': give the body's MD5 as 32 hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_print() {
        assert_eq!(Millis::parse_secs("5"), Ok(Millis(5000)));
        assert_eq!(Millis::parse_secs("1.5"), Ok(Millis(1500)));
        assert_eq!(Millis::parse_secs(".25"), Ok(Millis(250)));
        assert_eq!(Millis::parse_secs("0.001"), Ok(Millis(1)));
        for bad in ["", ".", "0", "0.0001", "-1", "1e3", "86401", "1,5", "x"] {
            assert!(Millis::parse_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(Millis(5000).to_string(), "5");
        assert_eq!(Millis(1500).to_string(), "1.5");
        assert_eq!(Millis(250).to_string(), "0.25");
        assert_eq!(Millis(1).to_string(), "0.001");
    }

    #[test]
    fn probes_parse() {
        assert_eq!(parse_probe("tcp"), Ok(Probe::Tcp));
        assert_eq!(parse_probe("ping"), Ok(Probe::Ping));
        let http = |p: &str, s| Probe::Http {
            path: p.into(),
            status: s,
            digest: None,
            host: None,
        };
        assert_eq!(parse_probe("http"), Ok(http("/", None)));
        assert_eq!(parse_probe("http:/health"), Ok(http("/health", None)));
        assert_eq!(
            parse_probe("http:/health:204"),
            Ok(http("/health", Some(204)))
        );
        assert_eq!(parse_probe("http:/a:b"), Ok(http("/a:b", None)));
        for bad in [
            "udp",
            "http:",
            "http:health",
            "http:/x:700",
            "httpx",
            "http:/a b",
        ] {
            assert!(parse_probe(bad).is_err(), "{bad}");
        }
        let c = CheckSpec::new(http("/h", Some(200)));
        assert_eq!(parse_probe(&c.probe_word()), Ok(c.probe));
    }

    #[test]
    fn digests_parse() {
        assert_eq!(
            parse_digest("5B6D74F1453E20C09D6A20D909779AD7").as_deref(),
            Ok("5b6d74f1453e20c09d6a20d909779ad7")
        );
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest("zz6d74f1453e20c09d6a20d909779ad7").is_err());
    }
}
