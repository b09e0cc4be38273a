//! What a health check is told: the probe, where it goes, its timing and what a failure
//! does. Shared by the ipvsadm-style options, the keepalived.conf import, the control
//! protocol and the checker.

use std::fmt;
use std::net::IpAddr;
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

/// What is tried against the real server: one of keepalived's checkers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Probe {
    /// A TCP connection is opened and closed (keepalived `TCP_CHECK`).
    Tcp,
    /// An ICMP (IPv6: ICMPv6) echo request is answered (keepalived `PING_CHECK`).
    Ping,
    /// An HTTP GET, over TLS or not (keepalived `HTTP_GET`, `SSL_GET`).
    Http(Box<HttpCheck>),
    /// An SMTP greeting, `HELO` and `QUIT` (keepalived `SMTP_CHECK`).
    Smtp {
        /// The name given with `HELO` (keepalived `helo_name`).
        helo: String,
    },
    /// A DNS query over UDP answered without error (keepalived `DNS_CHECK`).
    Dns {
        /// The query type's number (A 1, NS 2, CNAME 5, SOA 6, MX 15, TXT 16, AAAA 28).
        qtype: u16,
        /// The name asked for (`""`: the root).
        name: String,
    },
    /// A UDP datagram, and no ICMP error or the reply asked for (keepalived `UDP_CHECK`).
    Udp(UdpCheck),
    /// A program's exit status (keepalived `MISC_CHECK`).
    Misc(MiscCheck),
    /// A number read from a file (keepalived `FILE_CHECK` and its `track_file`).
    File(FileCheck),
}

/// An HTTP or HTTPS check of one URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpCheck {
    /// Over TLS (keepalived `SSL_GET`).
    pub tls: bool,
    /// The path requested, e.g. `/health`.
    pub path: String,
    /// The status codes that count as healthy, as inclusive ranges; any 2xx when empty
    /// (keepalived's default).
    pub status: Vec<(u16, u16)>,
    /// The MD5 of the body that counts as healthy, lowercase hex (keepalived `digest`).
    pub digest: Option<String>,
    /// The `Host:` header (keepalived `virtualhost`); the real server's address and port
    /// when `None`.
    pub host: Option<String>,
    /// A regular expression the body must match (keepalived `regex`).
    pub regex: Option<String>,
    /// A match of `regex` fails the check instead (keepalived `regex_no_match`).
    pub regex_no_match: bool,
    /// The request's protocol (keepalived `http_protocol`).
    pub protocol: HttpProtocol,
    /// The TLS server name sent (keepalived `enable_sni`/`sni_name`); none when `None`.
    pub sni: Option<String>,
    /// A PEM file of certificate authorities the server's certificate must chain to
    /// (keepalived's `SSL { ca }`); not verified when `None`, as keepalived.
    pub ca: Option<String>,
}

impl HttpCheck {
    /// A GET of `path` with every default.
    pub fn get(path: &str) -> HttpCheck {
        HttpCheck {
            tls: false,
            path: path.into(),
            status: Vec::new(),
            digest: None,
            host: None,
            regex: None,
            regex_no_match: false,
            protocol: HttpProtocol::default(),
            sni: None,
            ca: None,
        }
    }

    /// Whether `code` counts as healthy.
    pub fn status_ok(&self, code: u16) -> bool {
        if self.status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.status
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&code))
        }
    }

    /// The healthy codes in words (`2xx`, `200`, `200-299 503`).
    pub fn status_words(&self) -> String {
        if self.status.is_empty() {
            return "2xx".into();
        }
        let words: Vec<String> = self
            .status
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        words.join(" ")
    }
}

/// keepalived's `http_protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpProtocol {
    /// `HTTP/1.0` with `Connection: close` (xdpvs's default: the server closes, the
    /// answer ends).
    #[default]
    Close10,
    /// `HTTP/1.0` alone (keepalived's `1.0`).
    Plain10,
    /// `HTTP/1.1` with `Connection: close` (keepalived's `1.1`).
    Close11,
}

impl HttpProtocol {
    /// keepalived's word.
    pub fn word(self) -> &'static str {
        match self {
            HttpProtocol::Close10 => "1.0C",
            HttpProtocol::Plain10 => "1.0",
            HttpProtocol::Close11 => "1.1",
        }
    }

    /// From keepalived's word.
    pub fn parse(s: &str) -> Result<HttpProtocol, String> {
        match s {
            "1.0C" | "1.0c" => Ok(HttpProtocol::Close10),
            "1.0" => Ok(HttpProtocol::Plain10),
            "1.1" => Ok(HttpProtocol::Close11),
            _ => Err(format!("http_protocol {s}: use 1.0, 1.0C or 1.1")),
        }
    }
}

/// A UDP check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UdpCheck {
    /// The datagram sent (keepalived `payload`); a few random bytes when `None`.
    pub payload: Option<Vec<u8>>,
    /// A reply is needed (keepalived `require_reply`); without it, no ICMP error within
    /// the timeout is a pass, as keepalived.
    pub require_reply: bool,
    /// What the reply starts with, as hex nibbles (`x` matches any), when given.
    pub reply: Option<String>,
    /// Reply lengths accepted (keepalived `min_reply_length`, `max_reply_length`).
    pub min: u16,
    /// See `min`.
    pub max: u16,
}

/// A program run as a check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MiscCheck {
    /// The command line (split on whitespace; the first word is the program).
    pub command: String,
    /// How long it may run before it is killed and failed (keepalived `misc_timeout`);
    /// the check's interval when `None`.
    pub timeout: Option<Millis>,
    /// The exit status sets the weight (keepalived `misc_dynamic`): 0 pass (configured
    /// weight), 1 fail, 2-255 pass with weight status - 2.
    pub dynamic: bool,
    /// The user (and `:group`) it runs as; root when `None`.
    pub user: Option<String>,
}

/// A file read as a check (keepalived `track_file`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileCheck {
    /// The file; it holds a number.
    pub path: String,
    /// The multiplier: 0, any value but 0 fails; otherwise a negative product fails.
    pub weight: i32,
    /// The product is negated (keepalived `reverse`).
    pub reverse: bool,
    /// The product is added to the real server's weight (keepalived `dynamic`).
    pub dynamic: bool,
}

/// A command the director runs on an event (keepalived `notify_up`, `quorum_up`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Script {
    /// The command line (split on whitespace; the first word is the program).
    pub command: String,
    /// The user (and `:group`) it runs as; root when `None`.
    pub user: Option<String>,
}

/// A service's quorum (keepalived `quorum`, `hysteresis`, `quorum_up`, `quorum_down`):
/// the sum of the weights of its real servers that are up must reach `quorum`, or the
/// sorry server (if any) replaces them all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quorum {
    /// The weight needed (keepalived's default 1).
    pub quorum: u32,
    /// Lost below `quorum - hysteresis`, gained again at `quorum + hysteresis`.
    pub hysteresis: u32,
    /// Run when the quorum is gained.
    pub up: Option<Script>,
    /// Run when the quorum is lost.
    pub down: Option<Script>,
    /// When the director stops, `down` runs for a service that holds its quorum, and
    /// each real server's `notify_down` for one that is up (keepalived `omega`).
    #[serde(default)]
    pub omega: bool,
}

impl Default for Quorum {
    fn default() -> Quorum {
        Quorum {
            quorum: 1,
            hysteresis: 0,
            up: None,
            down: None,
            omega: false,
        }
    }
}

impl Quorum {
    /// Whether it is keepalived's default (quorum 1, nothing to run).
    pub fn is_default(&self) -> bool {
        *self == Quorum::default()
    }

    /// Whether a total of `weight` up keeps (`was` true) or gains the quorum.
    pub fn holds(&self, weight: u64, was: bool) -> bool {
        let q = u64::from(self.quorum);
        let h = u64::from(self.hysteresis);
        if was {
            weight >= q.saturating_sub(h)
        } else {
            weight >= q + h
        }
    }
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
    /// More checkers of the same real server (keepalived allows several): each round
    /// tries them all, and fails if one fails.
    #[serde(default)]
    pub also: Vec<Also>,
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
    /// The real server starts down, until its first check passes (keepalived `alpha`).
    #[serde(default)]
    pub alpha: bool,
    /// TCP, HTTP and HTTPS checks also go the way clients' packets go (xdpvs only): a
    /// SYN for VIP:port at the real server's MAC (direct routing; encapsulated for a
    /// tunnel; NAT: to its address and port) must get a SYN-ACK.
    #[serde(default)]
    pub forwarding: bool,
    /// Run when the check brings the real server up (keepalived `notify_up`).
    #[serde(default)]
    pub notify_up: Option<Script>,
    /// Run when the check takes it down (keepalived `notify_down`).
    #[serde(default)]
    pub notify_down: Option<Script>,
    /// The address checked instead of the real server's (keepalived `connect_ip`).
    #[serde(default)]
    pub connect_ip: Option<IpAddr>,
    /// The address checks come from (keepalived `bindto`).
    #[serde(default)]
    pub bindto: Option<IpAddr>,
    /// The port checks come from (keepalived `bind_port`).
    #[serde(default)]
    pub bind_port: Option<u16>,
    /// The interface checks leave from (keepalived `bind_if`).
    #[serde(default)]
    pub bind_if: Option<String>,
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
            also: Vec::new(),
            port: None,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
            fall: Self::DEFAULT_FALL,
            rise: Self::DEFAULT_RISE,
            on_failure: OnFailure::Inhibit,
            alpha: false,
            forwarding: false,
            notify_up: None,
            notify_down: None,
            connect_ip: None,
            bindto: None,
            bind_port: None,
            bind_if: None,
        }
    }

    /// Every checker: `probe`, then `also`.
    pub fn probes(&self) -> impl Iterator<Item = &Probe> {
        std::iter::once(&self.probe).chain(self.also.iter().map(|a| &a.probe))
    }

    /// Every checker with the port and address it tries instead of the check's own
    /// (`None`: the check's `port`/`connect_ip`, or the real server's).
    pub fn checkers(&self) -> impl Iterator<Item = (&Probe, Option<u16>, Option<IpAddr>)> {
        std::iter::once((&self.probe, None, None))
            .chain(self.also.iter().map(|a| (&a.probe, a.port, a.ip)))
    }

    /// The probe's kind, for listings and metrics labels (`misc+tcp` for several).
    pub fn kind(&self) -> String {
        let kinds: Vec<&str> = self.probes().map(Probe::kind).collect();
        kinds.join("+")
    }
}

/// A further checker of a real server, with where it connects when that is not where
/// the first does (keepalived's checkers each have their `connect_ip`/`connect_port`:
/// `SMTP_CHECK`s of several hosts, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Also {
    /// What is tried.
    pub probe: Probe,
    /// Its port (`,port=` in its word).
    pub port: Option<u16>,
    /// Its address (`,ip=` in its word).
    pub ip: Option<IpAddr>,
}

impl Also {
    /// A checker that goes where the first does.
    pub fn same(probe: Probe) -> Also {
        Also {
            probe,
            port: None,
            ip: None,
        }
    }

    /// Its `--check` word: the probe's, with `,port=` and `,ip=`.
    pub fn word(&self) -> String {
        let mut w = self.probe.word();
        if let Some(p) = self.port {
            w.push_str(&format!(",port={p}"));
        }
        if let Some(a) = self.ip {
            w.push_str(&format!(",ip={a}"));
        }
        w
    }
}

/// Parses a `--check` word with where it connects: [`parse_probe`]'s words, plus
/// `,port=N` and `,ip=ADDR` for a checker that connects elsewhere.
pub fn parse_checker(s: &str) -> Result<Also, String> {
    let mut port = None;
    let mut ip = None;
    let mut rest = Vec::new();
    for (i, part) in s.split(',').enumerate() {
        match part.split_once('=') {
            Some(("port", v)) if i > 0 => {
                port = Some(v.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    format!("illegal check '{s}': port={v}: a port from 1 to 65535")
                })?)
            }
            Some(("ip", v)) if i > 0 => {
                ip =
                    Some(v.parse::<IpAddr>().map_err(|_| {
                        format!("illegal check '{s}': ip={v}: an IPv4 or IPv6 address")
                    })?)
            }
            _ => rest.push(part),
        }
    }
    let probe = parse_probe(&rest.join(","))?;
    if (port.is_some() || ip.is_some())
        && !probe.has_port()
        && !(ip.is_some() && port.is_none() && probe == Probe::Ping)
    {
        return Err(format!(
            "illegal check '{s}': a {} check connects nowhere: no port= or ip=",
            probe.kind()
        ));
    }
    Ok(Also { probe, port, ip })
}

/// keepalived's default `helo_name`.
pub const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";
/// keepalived's default DNS query type (SOA).
pub const DEFAULT_DNS_TYPE: u16 = 6;
/// keepalived's default largest UDP reply.
pub const DEFAULT_UDP_MAX: u16 = 255;

/// DNS query types by name, as keepalived's `type` takes them.
const DNS_TYPES: [(&str, u16); 7] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
];

/// A DNS query type from its name (`A`, `AAAA`, `SOA`, ...).
pub fn dns_type(name: &str) -> Result<u16, String> {
    DNS_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, t)| t)
        .ok_or_else(|| format!("DNS type {name}: use A, NS, CNAME, SOA, MX, TXT or AAAA"))
}

/// The name of DNS query type `t`.
pub fn dns_type_name(t: u16) -> &'static str {
    DNS_TYPES
        .iter()
        .find(|(_, n)| *n == t)
        .map_or("?", |(n, _)| n)
}

impl Probe {
    /// The probe's kind, for listings and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Ping => "ping",
            Probe::Http(h) if h.tls => "https",
            Probe::Http(_) => "http",
            Probe::Smtp { .. } => "smtp",
            Probe::Dns { .. } => "dns",
            Probe::Udp(_) => "udp",
            Probe::Misc(_) => "misc",
            Probe::File(_) => "file",
        }
    }

    /// Whether it goes to a port of the real server (`--check-port` applies).
    pub fn has_port(&self) -> bool {
        !matches!(self, Probe::Ping | Probe::Misc(_) | Probe::File(_))
    }

    /// Whether it opens a TCP connection to the real server.
    pub fn is_tcp(&self) -> bool {
        matches!(self, Probe::Tcp | Probe::Http(_) | Probe::Smtp { .. })
    }

    /// The word `--check` takes for it ([`parse_probe`] reads it back).
    pub fn word(&self) -> String {
        let mut w = String::new();
        let mut opt = |k: &str, v: Option<&str>| {
            w.push(',');
            w.push_str(k);
            if let Some(v) = v {
                w.push('=');
                w.push_str(&encode(v));
            }
        };
        let head = match self {
            Probe::Tcp | Probe::Ping => self.kind().to_string(),
            Probe::Http(h) => {
                let single = match h.status[..] {
                    [(lo, hi)] if lo == hi => Some(lo),
                    _ => None,
                };
                if single.is_none() && !h.status.is_empty() {
                    opt("status", Some(&h.status_words().replace(' ', "+")));
                }
                for (k, v) in [
                    ("host", &h.host),
                    ("digest", &h.digest),
                    ("regex", &h.regex),
                    ("sni", &h.sni),
                    ("ca", &h.ca),
                ] {
                    if let Some(v) = v {
                        opt(k, Some(v));
                    }
                }
                if h.regex_no_match {
                    opt("regex-no-match", None);
                }
                if h.protocol != HttpProtocol::default() {
                    opt("protocol", Some(h.protocol.word()));
                }
                match single {
                    Some(code) => format!("{}:{}:{code}", self.kind(), h.path),
                    None => format!("{}:{}", self.kind(), h.path),
                }
            }
            Probe::Smtp { helo } => {
                if helo != DEFAULT_HELO {
                    opt("helo", Some(helo));
                }
                "smtp".into()
            }
            Probe::Dns { qtype, name } => {
                if *qtype != DEFAULT_DNS_TYPE {
                    opt("type", Some(dns_type_name(*qtype)));
                }
                if !name.is_empty() {
                    opt("name", Some(name));
                }
                "dns".into()
            }
            Probe::Udp(u) => {
                if let Some(p) = &u.payload {
                    opt("payload", Some(&hex(p)));
                }
                match (&u.reply, u.require_reply) {
                    (Some(r), _) => opt("reply", Some(r)),
                    (None, true) => opt("reply", None),
                    (None, false) => {}
                }
                if u.min != 0 {
                    opt("min", Some(&u.min.to_string()));
                }
                if u.max != DEFAULT_UDP_MAX {
                    opt("max", Some(&u.max.to_string()));
                }
                "udp".into()
            }
            Probe::Misc(m) => {
                if let Some(t) = m.timeout {
                    opt("timeout", Some(&t.to_string()));
                }
                if m.dynamic {
                    opt("dynamic", None);
                }
                if let Some(u) = &m.user {
                    opt("user", Some(u));
                }
                format!("misc:{}", encode(&m.command))
            }
            Probe::File(f) => {
                if f.weight != 1 {
                    opt("weight", Some(&f.weight.to_string()));
                }
                if f.reverse {
                    opt("reverse", None);
                }
                if f.dynamic {
                    opt("dynamic", None);
                }
                format!("file:{}", encode(&f.path))
            }
        };
        head + &w
    }
}

/// `%` and `,` as `%25` and `%2C`, so that a value stays one option of a `--check` word.
fn encode(v: &str) -> String {
    v.replace('%', "%25").replace(',', "%2C")
}

fn decode(v: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(v.len());
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = v
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{v}': % starts an escape like %2C (a comma) or %25"))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{v}' is not UTF-8 once unescaped"))
}

/// A check's regular expression, compiled; the error in one line.
pub fn compile_regex(re: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(re).map_err(|e| {
        let why = e.to_string();
        let last = why
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("invalid");
        format!("regex {re}: {}", last.trim_start_matches("error: "))
    })
}

/// Bytes as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// keepalived's free-form hex (`Ab12f 3 456` is AB 12 0F 03 45 06): each group in
/// pairs from the left, a last odd digit a byte of its own. With `wild`, `x` stands for
/// a nibble that matches anything; the result is then nibbles (`x` kept), else bytes.
pub fn parse_hex(s: &str, wild: bool) -> Result<String, String> {
    let mut nibbles = String::new();
    for group in s.split_whitespace() {
        let ok = group
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || (wild && (c == b'x' || c == b'X')));
        if !ok {
            return Err(format!(
                "'{group}' is not hex{}",
                if wild { " (x for any nibble)" } else { "" }
            ));
        }
        let g = group.to_ascii_lowercase();
        let (pairs, last) = g.split_at(g.len() - g.len() % 2);
        nibbles.push_str(pairs);
        if !last.is_empty() {
            nibbles.push('0');
            nibbles.push_str(last);
        }
    }
    if nibbles.is_empty() {
        return Err("no hex digits".into());
    }
    Ok(nibbles)
}

/// Bytes of even-length plain hex.
pub fn hex_bytes(nibbles: &str) -> Result<Vec<u8>, String> {
    (0..nibbles.len())
        .step_by(2)
        .map(|i| {
            nibbles
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{nibbles}' is not hex"))
        })
        .collect()
}

/// HTTP status codes as keepalived's `status_code` takes them: codes and ranges
/// (`200`, `200-299 503`; `+` separates them too).
pub fn parse_status(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = |w: &str| {
        format!("status code {w}: give codes or ranges from 100 to 599 (e.g. 200 or 200-299)")
    };
    let code = |w: &str| {
        w.parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| bad(w))
    };
    let mut out = Vec::new();
    for w in s
        .split(|c: char| c.is_whitespace() || c == '+')
        .filter(|w| !w.is_empty())
    {
        let (lo, hi) = match w.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(w)?, code(w)?),
        };
        if lo > hi {
            return Err(bad(w));
        }
        out.push((lo, hi));
    }
    if out.is_empty() {
        return Err(bad(s));
    }
    Ok(out)
}

/// What `--check` takes, for messages.
pub const CHECK_WORDS: &str = "tcp, ping, http[s][:/PATH[:STATUS]], smtp, dns, udp, misc:COMMAND or file:PATH, each with ,OPTION=VALUE options (see docs/OPERATIONS.md)";

/// Parses a `--check` word: `KIND[:ARG][,OPTION[=VALUE]]...` (values escape `,` as
/// `%2C` and `%` as `%25`): `tcp`, `ping`, `http[s][:/PATH[:STATUS]]` (options
/// `status`, `host`, `digest`, `regex`, `regex-no-match`, `protocol`, `sni`, `ca`),
/// `smtp` (`helo`), `dns` (`type`, `name`), `udp` (`payload`, `reply[=HEX]`, `min`,
/// `max`), `misc:COMMAND` (`timeout`, `dynamic`, `user`), `file:PATH` (`weight`,
/// `reverse`, `dynamic`).
pub fn parse_probe(s: &str) -> Result<Probe, String> {
    let bad = |why: String| format!("illegal check '{s}': {why}");
    let mut parts = s.split(',');
    let head = parts.next().unwrap_or_default();
    let mut opts: Vec<(&str, Option<String>)> = Vec::new();
    for p in parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(decode(v).map_err(bad)?)),
            None => (p, None),
        };
        opts.push((k, v));
    }
    let (kind, arg) = match head.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (head, None),
    };
    let mut probe = match (kind, arg) {
        ("tcp", None) => Probe::Tcp,
        ("ping", None) => Probe::Ping,
        ("http" | "https", arg) => {
            Probe::Http(Box::new(http_head(kind == "https", arg).map_err(bad)?))
        }
        ("smtp", None) => Probe::Smtp {
            helo: DEFAULT_HELO.into(),
        },
        ("dns", None) => Probe::Dns {
            qtype: DEFAULT_DNS_TYPE,
            name: String::new(),
        },
        ("udp", None) => Probe::Udp(UdpCheck {
            payload: None,
            require_reply: false,
            reply: None,
            min: 0,
            max: DEFAULT_UDP_MAX,
        }),
        ("misc", Some(cmd)) if !cmd.trim().is_empty() => Probe::Misc(MiscCheck {
            command: decode(cmd).map_err(bad)?,
            timeout: None,
            dynamic: false,
            user: None,
        }),
        ("file", Some(path)) if path.starts_with('/') => Probe::File(FileCheck {
            path: decode(path).map_err(bad)?,
            weight: 1,
            reverse: false,
            dynamic: false,
        }),
        _ => return Err(bad(format!("use {CHECK_WORDS}"))),
    };
    for (k, v) in opts {
        set_option(&mut probe, k, v).map_err(bad)?;
    }
    Ok(probe)
}

/// `[:/PATH[:STATUS]]` of an HTTP(S) check.
fn http_head(tls: bool, arg: Option<&str>) -> Result<HttpCheck, String> {
    let rest = arg.unwrap_or("/");
    let (path, status) = match rest.rsplit_once(':') {
        Some((p, st)) if !st.is_empty() && st.bytes().all(|b| b.is_ascii_digit()) => {
            (p, parse_status(st)?)
        }
        _ => (rest, Vec::new()),
    };
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("the path starts with / and has no spaces (e.g. http:/health:200)".into());
    }
    Ok(HttpCheck {
        tls,
        status,
        ..HttpCheck::get(path)
    })
}

/// One `,OPTION[=VALUE]` of a `--check` word.
fn set_option(probe: &mut Probe, k: &str, v: Option<String>) -> Result<(), String> {
    let kind = probe.kind();
    let unknown = || format!("{kind} checks take no option {k}");
    let value = |v: Option<String>| {
        v.filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{k} takes a value ({k}=...)"))
    };
    let flag = |v: &Option<String>| match v {
        None => Ok(()),
        Some(_) => Err(format!("{k} takes no value")),
    };
    let number = |v: Option<String>| -> Result<i64, String> {
        let v = value(v)?;
        v.parse().map_err(|_| format!("{k}={v}: not a number"))
    };
    match probe {
        Probe::Http(h) => match k {
            "status" => h.status = parse_status(&value(v)?)?,
            "host" => h.host = Some(value(v)?),
            "digest" => h.digest = Some(parse_digest(&value(v)?)?),
            "regex" => {
                let re = value(v)?;
                compile_regex(&re)?;
                h.regex = Some(re);
            }
            "regex-no-match" => {
                flag(&v)?;
                h.regex_no_match = true;
            }
            "protocol" => h.protocol = HttpProtocol::parse(&value(v)?)?,
            "sni" if h.tls => h.sni = Some(value(v)?),
            "ca" if h.tls => h.ca = Some(value(v)?),
            _ => return Err(unknown()),
        },
        Probe::Smtp { helo } if k == "helo" => *helo = value(v)?,
        Probe::Dns { qtype, name } => match k {
            "type" => *qtype = dns_type(&value(v)?)?,
            "name" => *name = value(v)?,
            _ => return Err(unknown()),
        },
        Probe::Udp(u) => match k {
            "payload" => u.payload = Some(hex_bytes(&parse_hex(&value(v)?, false)?)?),
            "reply" => {
                u.require_reply = true;
                u.reply = v.map(|r| parse_hex(&r, true)).transpose()?;
            }
            "min" | "max" => {
                let n = number(v)?;
                let n = u16::try_from(n)
                    .ok()
                    .filter(|&n| n <= 65507)
                    .ok_or_else(|| format!("{k}={n}: from 0 to 65507"))?;
                if k == "min" {
                    u.min = n;
                } else {
                    u.max = n;
                }
            }
            _ => return Err(unknown()),
        },
        Probe::Misc(m) => match k {
            "timeout" => m.timeout = Some(Millis::parse_secs(&value(v)?)?),
            "dynamic" => {
                flag(&v)?;
                m.dynamic = true;
            }
            "user" => m.user = Some(value(v)?),
            _ => return Err(unknown()),
        },
        Probe::File(f) => match k {
            "weight" => {
                let n = number(v)?;
                f.weight = i32::try_from(n)
                    .ok()
                    .filter(|w| *w != i32::MIN)
                    .ok_or_else(|| format!("weight={n}: from -2147483647 to 2147483647"))?;
            }
            "reverse" => {
                flag(&v)?;
                f.reverse = true;
            }
            "dynamic" => {
                flag(&v)?;
                f.dynamic = true;
            }
            _ => return Err(unknown()),
        },
        _ => return Err(unknown()),
    }
    Ok(())
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
        let http = |p: &str, s: &[(u16, u16)]| {
            Probe::Http(Box::new(HttpCheck {
                status: s.to_vec(),
                ..HttpCheck::get(p)
            }))
        };
        assert_eq!(parse_probe("http"), Ok(http("/", &[])));
        assert_eq!(parse_probe("http:/health"), Ok(http("/health", &[])));
        assert_eq!(
            parse_probe("http:/health:204"),
            Ok(http("/health", &[(204, 204)]))
        );
        assert_eq!(parse_probe("http:/a:b"), Ok(http("/a:b", &[])));
        for bad in [
            "udp:x",
            "http:",
            "http:health",
            "http:/x:700",
            "httpx",
            "http:/a b",
            "tcp,helo=x",
            "smtp,helo",
            "misc:",
            "file:relative",
            "dns,type=PTR",
            "udp,payload=zz",
            "http,regex=(",
            "http,sni=x",
            "misc:/x%zz",
        ] {
            assert!(parse_probe(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_probe_reads_back_from_its_word() {
        let words = [
            "tcp",
            "https:/h:200,host=www.example.org,regex=ok%2C+fine,sni=www.example.org,ca=/etc/ca.pem,regex-no-match",
            "http:/,status=200-299+503,digest=4fc2f671f0898f76d30da6b1f9566f42,protocol=1.1",
            "smtp,helo=mx.example.org",
            "smtp",
            "dns,type=AAAA,name=example.org",
            "udp,payload=0a0b0c,reply=0axx,min=2,max=64",
            "udp,reply",
            "misc:/usr/local/bin/check rs1 80%2C90,timeout=3,dynamic,user=nobody:nogroup",
            "file:/run/rs1.weight,weight=-2,reverse,dynamic",
        ];
        for w in words {
            let p = parse_probe(w).unwrap_or_else(|e| panic!("{w}: {e}"));
            assert_eq!(p.word(), w, "{w}");
            assert_eq!(parse_probe(&p.word()), Ok(p));
        }
        let Ok(Probe::Misc(m)) = parse_probe(words[8]) else {
            panic!("misc")
        };
        assert_eq!(m.command, "/usr/local/bin/check rs1 80,90");
    }

    #[test]
    fn keepalived_hex_and_status_codes_read_as_keepalived_does() {
        assert_eq!(
            parse_hex("Ab12f 3 456 546443123", false).as_deref(),
            Ok("ab120f0345065464431203")
        );
        assert_eq!(parse_hex("0x1", true).as_deref(), Ok("0x01"));
        assert!(parse_hex("0g", false).is_err());
        assert_eq!(hex_bytes("0a10"), Ok(vec![10, 16]));
        assert_eq!(
            parse_status("200-299 503"),
            Ok(vec![(200, 299), (503, 503)])
        );
        assert!(parse_status("299-200").is_err());
        let h = HttpCheck {
            status: vec![(200, 204), (302, 302)],
            ..HttpCheck::get("/")
        };
        assert!(h.status_ok(204) && h.status_ok(302) && !h.status_ok(205));
        assert!(HttpCheck::get("/").status_ok(299));
        let q = Quorum {
            quorum: 3,
            hysteresis: 1,
            ..Quorum::default()
        };
        assert!(q.holds(2, true) && !q.holds(1, true));
        assert!(!q.holds(3, false) && q.holds(4, false));
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
