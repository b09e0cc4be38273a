//! The checker: every real server's health check, run on a thread of its own (an
//! asynchronous runtime on one thread, so a thousand checks cost one thread and no
//! worker core). It is told the whole set of checks after each change and reports each
//! result; the control plane decides what a result changes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use xdpvs_sched::ServiceKey;

use super::machine::{Health, Machine};
use super::spec::{CheckSpec, Probe};

/// One check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service of the real server.
    pub service: ServiceKey,
    /// The real server.
    pub addr: IpAddr,
    /// The port tried.
    pub port: u16,
    /// The check.
    pub spec: CheckSpec,
    /// The state it starts in (kept across changes that leave the check as it is).
    pub start: Health,
}

impl Target {
    fn id(&self) -> (ServiceKey, IpAddr) {
        (self.service, self.addr)
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The service of the real server.
    pub service: ServiceKey,
    /// The real server.
    pub addr: IpAddr,
    /// Passed.
    pub ok: bool,
    /// `ok`, or why it failed.
    pub detail: String,
    /// How long the check took.
    pub latency: Duration,
    /// The real server's new state, when this result changed it.
    pub changed: Option<Health>,
}

/// The largest answer an HTTP check reads.
const MAX_ANSWER: usize = 1 << 20;

/// The running checker; stops its thread when dropped.
#[derive(Debug)]
pub struct Checker {
    targets: Option<mpsc::UnboundedSender<Vec<Target>>>,
    results: crossbeam_channel::Receiver<Outcome>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checker {
    /// Starts the checker's thread, pinned to `core` if given.
    pub fn start(core: Option<usize>) -> std::io::Result<Checker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (out, results) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("xdpvs-checks".into())
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                runtime.block_on(serve(rx, out));
            })?;
        Ok(Checker {
            targets: Some(tx),
            results,
            thread: Some(thread),
        })
    }

    /// Runs exactly these checks from now on: checks that stay as they are go on
    /// undisturbed, others start or stop.
    pub fn set(&self, targets: Vec<Target>) {
        if let Some(tx) = &self.targets {
            // The thread only ends when this sender is dropped.
            let _ = tx.send(targets);
        }
    }

    /// The results so far.
    pub fn results(&self) -> &crossbeam_channel::Receiver<Outcome> {
        &self.results
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.targets = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    mut rx: mpsc::UnboundedReceiver<Vec<Target>>,
    out: crossbeam_channel::Sender<Outcome>,
) {
    let mut running: HashMap<(ServiceKey, IpAddr), (Target, AbortHandle)> = HashMap::new();
    while let Some(targets) = rx.recv().await {
        let mut wanted: HashMap<_, Target> = targets.into_iter().map(|t| (t.id(), t)).collect();
        running.retain(|id, (t, task)| {
            let same = wanted
                .get(id)
                .is_some_and(|w| w.spec == t.spec && w.port == t.port);
            if same {
                wanted.remove(id);
            } else {
                task.abort();
            }
            same
        });
        for (id, t) in wanted {
            let task = tokio::spawn(check_loop(t.clone(), out.clone()));
            running.insert(id, (t, task.abort_handle()));
        }
    }
    for (_, task) in running.values() {
        task.abort();
    }
}

/// A first delay spread over up to a second, so that many checks do not all start at once.
fn spread(t: &Target) -> Duration {
    let h = xdpvs_sched::hash::addr_word(t.addr)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u32::from(t.port).wrapping_mul(40_503));
    let max = t.spec.interval.0.clamp(1, 1000);
    Duration::from_millis(u64::from(h % max))
}

async fn check_loop(t: Target, out: crossbeam_channel::Sender<Outcome>) {
    let mut machine = Machine::new(t.start);
    tokio::time::sleep(spread(&t)).await;
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(t.spec.timeout.duration(), probe(&t)).await;
        let latency = started.elapsed();
        let (ok, detail) = match result {
            Ok(Ok(())) => (true, "ok".to_string()),
            Ok(Err(why)) => (false, why),
            Err(_) => (false, format!("no answer within {} s", t.spec.timeout)),
        };
        let step = machine.record(ok, &t.spec);
        let outcome = Outcome {
            service: t.service,
            addr: t.addr,
            ok,
            detail,
            latency,
            changed: step.changed,
        };
        if out.send(outcome).is_err() {
            return;
        }
        tokio::time::sleep(step.next).await;
    }
}

/// Runs one check; `Err` says why it failed.
async fn probe(t: &Target) -> Result<(), String> {
    if t.spec.probe == Probe::Ping {
        return ping(t.addr, t.spec.timeout.duration()).await;
    }
    let to = SocketAddr::from((t.addr, t.port));
    let mut stream = TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect to {to}: {}", io_words(&e)))?;
    let Probe::Http {
        path,
        status,
        digest,
        host,
    } = &t.spec.probe
    else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| to.to_string());
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: xdpvs-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending GET {path} to {to}: {}", io_words(&e)))?;
    let mut answer = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer to GET {path}: {}", io_words(&e)))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.len() > MAX_ANSWER {
            return Err(format!(
                "the answer to GET {path} is over {MAX_ANSWER} bytes"
            ));
        }
        if complete(&answer) {
            break;
        }
    }
    judge(&answer, path, *status, digest.as_deref())
}

/// The payload of the checker's echo requests.
const PING_PAYLOAD: &[u8] = b"xdpvs-check";

/// An ICMP (IPv6: ICMPv6) echo request to `addr`, answered within `timeout`
/// (keepalived's `PING_CHECK`). A raw socket connected to `addr` (the kernel then hands
/// it only packets from there), on a thread of the runtime's blocking pool (started from
/// the checker's thread, so on its core); the identifier and sequence number tell this
/// echo's reply from others'.
async fn ping(addr: IpAddr, timeout: Duration) -> Result<(), String> {
    tokio::task::spawn_blocking(move || ping_blocking(addr, timeout))
        .await
        .map_err(|e| format!("the echo request's task failed: {e}"))?
}

fn ping_blocking(addr: IpAddr, timeout: Duration) -> Result<(), String> {
    use socket2::{Domain, Protocol as Proto, SockAddr, Socket, Type};
    use std::io::Read;
    use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
    static SEQ: AtomicU16 = AtomicU16::new(1);
    let v6 = addr.is_ipv6();
    let (domain, proto) = if v6 {
        (Domain::IPV6, Proto::ICMPV6)
    } else {
        (Domain::IPV4, Proto::ICMPV4)
    };
    let fail = |what: &str, e: std::io::Error| format!("{what}: {}", io_words(&e));
    let mut sock = Socket::new(domain, Type::RAW, Some(proto))
        .map_err(|e| fail("opening an ICMP socket (CAP_NET_RAW is needed)", e))?;
    sock.connect(&SockAddr::from(SocketAddr::new(addr, 0)))
        .map_err(|e| fail("setting up the ICMP socket", e))?;
    let id = (std::process::id() as u16) ^ xdpvs_sched::hash::addr_word(addr) as u16;
    let seq = SEQ.fetch_add(1, Relaxed);
    sock.send(&echo_request(v6, id, seq))
        .map_err(|e| fail(&format!("sending an echo request to {addr}"), e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no echo reply from {addr}"));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| fail("setting up the ICMP socket", e))?;
        match sock.read(&mut buf) {
            Ok(n) if is_echo_reply(v6, &buf[..n], id, seq) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no echo reply from {addr}"))
            }
            Err(e) => return Err(fail(&format!("reading the echo reply from {addr}"), e)),
        }
    }
}

/// An echo request (ICMP type 8, or ICMPv6 type 128 whose checksum the kernel fills in).
fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PING_PAYLOAD);
    if !v6 {
        let sum = internet_checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The one's complement of the one's complement sum of `b` (RFC 1071).
fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (IPv4: with its IP header; IPv6: the ICMPv6 message alone, as raw
/// sockets give them) is the reply to echo `id`/`seq`.
fn is_echo_reply(v6: bool, packet: &[u8], id: u16, seq: u16) -> bool {
    let icmp = if v6 {
        packet
    } else {
        let hlen = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(hlen..).unwrap_or_default()
    };
    let reply = if v6 { 129 } else { 0 };
    icmp.len() >= 8
        && icmp[0] == reply
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// Whether an answer with a `Content-Length` has all of its body.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = find(answer, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| answer.len() >= end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Judges an HTTP answer as keepalived's `HTTP_GET` does: the status code (any 2xx
/// unless one is given), then the body's MD5 if a digest is given.
pub fn judge(
    answer: &[u8],
    path: &str,
    status: Option<u16>,
    digest: Option<&str>,
) -> Result<(), String> {
    let line_end = find(answer, b"\r\n").unwrap_or(answer.len());
    let line = String::from_utf8_lossy(&answer[..line_end]);
    let mut words = line.split_whitespace();
    let code = match (words.next(), words.next()) {
        (Some(v), Some(c)) if v.starts_with("HTTP/") => c.parse::<u16>().ok(),
        _ => None,
    };
    let Some(code) = code else {
        return Err(format!("GET {path}: not an HTTP answer"));
    };
    let good = match status {
        Some(want) => code == want,
        None => (200..300).contains(&code),
    };
    if !good {
        let want = status.map_or("2xx".to_string(), |s| s.to_string());
        return Err(format!("GET {path}: status {code}, want {want}"));
    }
    if let Some(want) = digest {
        let body = find(answer, b"\r\n\r\n").map_or(&[][..], |i| &answer[i + 4..]);
        let got: String = Md5::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != want {
            return Err(format!("GET {path}: body digest {got}, want {want}"));
        }
    }
    Ok(())
}

/// An I/O error in words, without the errno suffix.
fn io_words(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum_and_replies_are_told_by_id_and_sequence() {
        let req = echo_request(false, 0x1234, 7);
        assert_eq!(internet_checksum(&req), 0, "a valid ICMP checksum");
        assert_eq!(&req[..2], &[8, 0]);
        // The reply as an IPv4 raw socket gives it: a 20-byte header first.
        let mut reply = vec![0x45; 1];
        reply.extend_from_slice(&[0; 19]);
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert!(is_echo_reply(false, &reply, 0x1234, 7));
        assert!(!is_echo_reply(false, &reply, 0x1234, 8), "another sequence");
        assert!(!is_echo_reply(false, &reply[..24], 0x1234, 7), "truncated");
        // ICMPv6: the message alone, type 129.
        let mut six = echo_request(true, 9, 1);
        assert_eq!(six[0], 128);
        six[0] = 129;
        assert!(is_echo_reply(true, &six, 9, 1));
        assert!(
            !is_echo_reply(false, &req, 0x1234, 7),
            "a request is no reply"
        );
    }
    use crate::health::spec::Millis;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    use std::net::TcpListener;
    use xdpvs_sched::Protocol;

    #[test]
    fn http_answers_are_judged_as_keepalived_does() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nrs1";
        assert_eq!(judge(ok, "/", None, None), Ok(()));
        assert_eq!(judge(ok, "/", Some(200), None), Ok(()));
        assert!(judge(ok, "/", Some(204), None).is_err());
        // md5sum of "rs1".
        let md5 = "4fc2f671f0898f76d30da6b1f9566f42";
        assert_eq!(judge(ok, "/", None, Some(md5)), Ok(()));
        assert!(judge(ok, "/", None, Some(&"0".repeat(32))).is_err());
        let err = judge(b"HTTP/1.0 503 Busy\r\n\r\n", "/h", None, None).expect_err("503");
        assert_eq!(err, "GET /h: status 503, want 2xx");
        assert!(judge(b"SSH-2.0-OpenSSH\r\n", "/", None, None).is_err());
        assert!(judge(b"", "/", None, None).is_err());
        assert!(complete(ok));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrs1"
        ));
    }

    fn target(port: u16, probe: Probe) -> Target {
        Target {
            service: ServiceKey {
                proto: Protocol::Tcp,
                vip: Ipv4Addr::new(198, 18, 0, 100).into(),
                port: 80,
            },
            addr: Ipv4Addr::LOCALHOST.into(),
            port,
            spec: CheckSpec {
                interval: Millis(50),
                retry_delay: Millis(20),
                timeout: Millis(1000),
                fall: 1,
                ..CheckSpec::new(probe)
            },
            start: Health::Up,
        }
    }

    #[test]
    fn checks_run_on_their_thread_and_report() {
        // An HTTP server on loopback that answers 200 twice, then 500.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let answer: &[u8] = if i < 2 {
                    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.0 500 Oops\r\n\r\n"
                };
                let _ = s.write_all(answer);
            }
        });
        let checker = Checker::start(None).expect("checker");
        let http = Probe::Http {
            path: "/".into(),
            status: Some(200),
            digest: None,
            host: None,
        };
        checker.set(vec![target(port, http)]);
        let next = || {
            checker
                .results()
                .recv_timeout(Duration::from_secs(5))
                .expect("a result")
        };
        assert!(next().ok);
        assert!(next().ok);
        let failed = next();
        assert!(!failed.ok);
        assert_eq!(failed.changed, Some(Health::Down));
        assert_eq!(failed.detail, "GET /: status 500, want 200");

        // A TCP check of a port nobody listens on: refused.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = closed.local_addr().expect("addr").port();
        drop(closed);
        checker.set(vec![target(dead, Probe::Tcp)]);
        let r = loop {
            let r = next();
            if r.detail.contains("refused") {
                break r;
            }
        };
        assert!(!r.ok && r.changed == Some(Health::Down), "{r:?}");
        // No checks: no more results after the last in flight.
        checker.set(vec![]);
        std::thread::sleep(Duration::from_millis(100));
        while checker.results().try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(200));
        assert!(checker.results().try_recv().is_err());
    }
}
