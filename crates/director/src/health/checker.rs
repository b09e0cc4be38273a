//! The checker: every real server's health check, run on a thread of its own (an
//! asynchronous runtime on one thread, so a thousand checks cost one thread and no
//! worker core). It is told the whole set of checks after each change and reports each
//! result; the control plane decides what a result changes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use xdpvs_sched::ServiceKey;

use super::machine::{Health, Machine};
use super::spec::{CheckSpec, FileCheck, HttpCheck, HttpProtocol, MiscCheck, Probe, UdpCheck};
use super::words::io_words;

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

/// A weight a check asks for (keepalived's `misc_dynamic`, `FILE_CHECK`'s `dynamic`):
/// `set` replaces the configured weight, then `add` is added (the result kept within
/// 0..=65535).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// The weight a `MISC_CHECK` exit status gave (status - 2); the configured weight
    /// when `None`.
    pub set: Option<u16>,
    /// What `FILE_CHECK`s add.
    pub add: i64,
}

impl Dynamic {
    /// The weight of a real server configured with `weight`.
    pub fn weight(&self, weight: u16) -> u16 {
        let base = i64::from(self.set.unwrap_or(weight));
        (base + self.add).clamp(0, 65535) as u16
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
    /// The weight its dynamic checkers ask for (`None` without one, or on a failure).
    pub dynamic: Option<Dynamic>,
}

/// The largest answer an HTTP or SMTP check reads.
const MAX_ANSWER: usize = 1 << 20;

/// A forwarding check (see [`CheckSpec::forwarding`]): a SYN for the service at the real
/// server, the way clients' packets go, answered by a SYN-ACK within the time given. It
/// blocks; the checker calls it on its blocking pool.
pub type Forwarder = Arc<dyn Fn(ServiceKey, IpAddr, Duration) -> Result<(), String> + Send + Sync>;

/// The running checker; stops its thread when dropped.
pub struct Checker {
    targets: Option<mpsc::UnboundedSender<Vec<Target>>>,
    results: crossbeam_channel::Receiver<Outcome>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

impl Checker {
    /// Starts the checker's thread, pinned to `core` if given; `forwarder` runs the
    /// forwarding checks (they fail without one).
    pub fn start(core: Option<usize>, forwarder: Option<Forwarder>) -> std::io::Result<Checker> {
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
                runtime.block_on(serve(rx, out, forwarder));
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
    forwarder: Option<Forwarder>,
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
            let task = tokio::spawn(check_loop(t.clone(), out.clone(), forwarder.clone()));
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

async fn check_loop(
    t: Target,
    out: crossbeam_channel::Sender<Outcome>,
    forwarder: Option<Forwarder>,
) {
    let mut machine = Machine::new(t.start);
    tokio::time::sleep(spread(&t)).await;
    loop {
        let started = Instant::now();
        let result = round(&t, forwarder.as_ref()).await;
        let latency = started.elapsed();
        let (ok, detail, dynamic) = match result {
            Ok(d) => (true, "ok".to_string(), d),
            Err(why) => (false, why, None),
        };
        let step = machine.record(ok, &t.spec);
        let outcome = Outcome {
            service: t.service,
            addr: t.addr,
            ok,
            detail,
            latency,
            changed: step.changed,
            dynamic,
        };
        if out.send(outcome).is_err() {
            return;
        }
        tokio::time::sleep(step.next).await;
    }
}

/// One round: every checker of the real server in turn, each within its time (a
/// program's `misc_timeout` or the interval, the others `connect_timeout`), then the
/// forwarding check if asked. The first failure ends it.
async fn round(t: &Target, forwarder: Option<&Forwarder>) -> Result<Option<Dynamic>, String> {
    let mut dynamic: Option<Dynamic> = None;
    let several = !t.spec.also.is_empty();
    for (p, port, ip) in t.spec.checkers() {
        let limit = match p {
            Probe::Misc(m) => m.timeout.unwrap_or(t.spec.interval).duration(),
            // Silence until the timeout is a pass: its wait ends first.
            Probe::Udp(_) => t.spec.timeout.duration() + Duration::from_millis(500),
            _ => t.spec.timeout.duration(),
        };
        let named = |why: String| {
            if several {
                format!("{}: {why}", p.kind())
            } else {
                why
            }
        };
        let to = SocketAddr::new(
            ip.or(t.spec.connect_ip).unwrap_or(t.addr),
            port.unwrap_or(t.port),
        );
        let asked = tokio::time::timeout(limit, probe(t, p, to))
            .await
            .map_err(|_| {
                named(format!(
                    "no answer within {} s",
                    crate::health::Millis(limit.as_millis() as u32)
                ))
            })?
            .map_err(named)?;
        if let Some(a) = asked {
            let d = dynamic.get_or_insert_with(Dynamic::default);
            match a {
                Asked::Set(w) => d.set = w,
                Asked::Add(n) => d.add = d.add.saturating_add(n),
            }
        }
    }
    if t.spec.forwarding && t.spec.probes().any(Probe::is_tcp) {
        let Some(f) = forwarder.cloned() else {
            return Err("the forwarding check has no dataplane to send from".into());
        };
        let (service, addr) = (t.service, t.addr);
        let wait = t.spec.timeout.duration().min(FORWARDING_WAIT);
        tokio::task::spawn_blocking(move || f(service, addr, wait))
            .await
            .map_err(|e| format!("the forwarding check's task failed: {e}"))?
            .map_err(|why| format!("forwarding path: {why}"))?;
    }
    Ok(dynamic)
}

/// How long a forwarding check waits for its SYN-ACK at most (the real server is on the
/// director's LAN, or one tunnel away).
const FORWARDING_WAIT: Duration = Duration::from_secs(2);

/// What a passed dynamic checker asks for the weight.
enum Asked {
    /// A `MISC_CHECK`'s weight (`None`: the configured one).
    Set(Option<u16>),
    /// A `FILE_CHECK`'s addition.
    Add(i64),
}

/// Runs one checker; `Err` says why it failed.
async fn probe(t: &Target, p: &Probe, to: SocketAddr) -> Result<Option<Asked>, String> {
    match p {
        Probe::Ping => ping(to.ip(), t.spec.timeout.duration())
            .await
            .map(|()| None),
        Probe::Tcp => connect(t, to).await.map(|_| None),
        Probe::Http(h) => {
            let stream = connect(t, to).await?;
            if h.tls {
                let tls = tls_connect(stream, h, to.ip()).await?;
                http(tls, h, to).await.map(|()| None)
            } else {
                http(stream, h, to).await.map(|()| None)
            }
        }
        Probe::Smtp { helo } => smtp(connect(t, to).await?, helo).await.map(|()| None),
        Probe::Dns { qtype, name } => dns(udp(t, to).await?, *qtype, name).await.map(|()| None),
        Probe::Udp(u) => udp_check(udp(t, to).await?, u, t.spec.timeout.duration())
            .await
            .map(|()| None),
        Probe::Misc(m) => misc(m).await.map(|w| m.dynamic.then_some(Asked::Set(w))),
        // On the blocking pool: a file on a hung network mount stalls no other check.
        Probe::File(f) => {
            let f = f.clone();
            let dynamic = f.dynamic;
            tokio::task::spawn_blocking(move || file(&f))
                .await
                .map_err(|e| format!("reading the file failed: {e}"))?
                .map(|add| dynamic.then_some(Asked::Add(add)))
        }
    }
}

/// The address a check's connections come from: `bindto` and `bind_port`.
fn source(t: &Target, to: SocketAddr) -> Option<SocketAddr> {
    let s = &t.spec;
    match (s.bindto, s.bind_port) {
        (None, None) => None,
        (a, p) => Some(SocketAddr::new(
            a.unwrap_or(if to.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            }),
            p.unwrap_or(0),
        )),
    }
}

/// A TCP connection to `to`, from `bindto`/`bind_port`/`bind_if` if given.
async fn connect(t: &Target, to: SocketAddr) -> Result<TcpStream, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {}", io_words(&e));
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| fail("opening a socket", e))?;
    if let Some(dev) = &t.spec.bind_if {
        sock.bind_device(Some(dev.as_bytes()))
            .map_err(|e| fail(&format!("binding to interface {dev}"), e))?;
    }
    if let Some(from) = source(t, to) {
        sock.set_reuseaddr(true)
            .map_err(|e| fail("setting SO_REUSEADDR", e))?;
        sock.bind(from)
            .map_err(|e| fail(&format!("binding to {from}"), e))?;
    }
    sock.connect(to)
        .await
        .map_err(|e| fail(&format!("connect to {to}"), e))
}

/// A UDP socket connected to `to` (an ICMP error then fails its next receive).
async fn udp(t: &Target, to: SocketAddr) -> Result<UdpSocket, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {}", io_words(&e));
    let any = if to.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let from = source(t, to).unwrap_or(any);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| fail("opening a socket", e))?;
    if let Some(dev) = &t.spec.bind_if {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| fail(&format!("binding to interface {dev}"), e))?;
    }
    s.set_nonblocking(true)
        .map_err(|e| fail("opening a socket", e))?;
    s.bind(&from.into())
        .map_err(|e| fail(&format!("binding to {from}"), e))?;
    let sock = UdpSocket::from_std(s.into()).map_err(|e| fail("opening a socket", e))?;
    sock.connect(to)
        .await
        .map_err(|e| fail(&format!("connect to {to}"), e))?;
    Ok(sock)
}

/// Accepts any server certificate: keepalived's `SSL_GET` does not verify unless given
/// a CA.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration of a check: verifying against `ca`, or not at all.
fn tls_config(ca: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    // ring's provider has no post-quantum key exchange, which a health check does not
    // need (what it reads is public); it builds without a C toolchain of its own.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match ca {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Some(file) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("reading the CA file {file}: {e}"))?;
            for c in certs {
                let c = c.map_err(|e| format!("reading the CA file {file}: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("the CA file {file}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// A TLS session over `stream`: SNI `h.sni` if given (none otherwise, as keepalived
/// without `enable_sni`), the certificate verified only with a CA.
async fn tls_connect(
    stream: TcpStream,
    h: &HttpCheck,
    addr: IpAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = tls_config(h.ca.as_deref())?;
    let name = match &h.sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|_| format!("sni {n}: not a host name"))?,
        None => rustls::pki_types::ServerName::IpAddress(addr.into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {}", io_words(&e)))
}

/// Reads until `done` says the answer is whole, the peer closes, or MAX_ANSWER.
async fn read_answer<S: AsyncRead + Unpin>(
    stream: &mut S,
    what: &str,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut answer = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify has still answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => 0,
            Err(e) => return Err(format!("reading the answer to {what}: {}", io_words(&e))),
        };
        if n == 0 {
            return Ok(answer);
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.len() > MAX_ANSWER {
            return Err(format!("the answer to {what} is over {MAX_ANSWER} bytes"));
        }
        if done(&answer) {
            return Ok(answer);
        }
    }
}

/// An HTTP GET over `stream`, judged as keepalived's `HTTP_GET`/`SSL_GET` do.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    h: &HttpCheck,
    to: SocketAddr,
) -> Result<(), String> {
    let host = h.host.clone().unwrap_or_else(|| to.to_string());
    let (version, close) = match h.protocol {
        HttpProtocol::Close10 => ("1.0", "Connection: close\r\n"),
        HttpProtocol::Plain10 => ("1.0", ""),
        HttpProtocol::Close11 => ("1.1", "Connection: close\r\n"),
    };
    let path = &h.path;
    let request = format!(
        "GET {path} HTTP/{version}\r\nHost: {host}\r\nUser-Agent: xdpvs-check\r\n{close}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending GET {path} to {to}: {}", io_words(&e)))?;
    let answer = read_answer(&mut stream, &format!("GET {path}"), complete).await?;
    judge(&answer, h)
}

/// The status code of an SMTP reply once it is whole (its last line `NNN text`).
fn smtp_code(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    let last = text.lines().last()?;
    (last.len() >= 3 && last.as_bytes().get(3) != Some(&b'-'))
        .then(|| last[..3].parse().ok())
        .flatten()
}

/// keepalived's `SMTP_CHECK`: a 220 greeting, `HELO` answered 250, then `QUIT`.
async fn smtp(mut s: TcpStream, helo: &str) -> Result<(), String> {
    let greeting = read_answer(&mut s, "the connection", |a| smtp_code(a).is_some()).await?;
    match smtp_code(&greeting) {
        Some(220) => {}
        c => {
            return Err(format!(
                "SMTP greeting {}, want 220",
                c.map_or("missing".into(), |c| c.to_string())
            ))
        }
    }
    s.write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(|e| format!("sending HELO: {}", io_words(&e)))?;
    let reply = read_answer(&mut s, "HELO", |a| smtp_code(a).is_some()).await?;
    match smtp_code(&reply) {
        Some(250) => {}
        c => {
            return Err(format!(
                "SMTP HELO answered {}, want 250",
                c.map_or("nothing".into(), |c| c.to_string())
            ))
        }
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// A DNS query for `name`/`qtype` (class IN, recursion desired) with identifier `id`.
pub fn dns_query(id: u16, qtype: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Judges a DNS answer as keepalived's `DNS_CHECK`: the query's identifier, a response,
/// response code 0.
pub fn dns_judge(answer: &[u8], id: u16) -> Result<(), String> {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
        return Err("DNS: an answer to another query".into());
    }
    if answer[2] & 0x80 == 0 {
        return Err("DNS: not a response".into());
    }
    match answer[3] & 0x0f {
        0 => Ok(()),
        rc => Err(format!("DNS: response code {rc}")),
    }
}

async fn dns(s: UdpSocket, qtype: u16, name: &str) -> Result<(), String> {
    let id = getrandom::u32().unwrap_or(0x7864) as u16;
    s.send(&dns_query(id, qtype, name))
        .await
        .map_err(|e| format!("sending the DNS query: {}", io_words(&e)))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s
            .recv(&mut buf)
            .await
            .map_err(|e| format!("DNS: {}", io_words(&e)))?;
        // Another query's late answer is skipped.
        match dns_judge(&buf[..n], id) {
            Err(e) if e.contains("another query") => continue,
            r => return r,
        }
    }
}

/// Whether `reply` matches a `require_reply` pattern (hex nibbles, `x` any), up to the
/// shorter of the two, as keepalived.
pub fn udp_reply_matches(reply: &[u8], pattern: &str) -> bool {
    let nibbles: Vec<u8> = pattern.bytes().collect();
    reply.iter().zip(nibbles.chunks(2)).all(|(&b, pair)| {
        let want = |c: u8, got: u8| c == b'x' || (c as char).to_digit(16) == Some(u32::from(got));
        want(pair[0], b >> 4) && pair.get(1).is_none_or(|&c| want(c, b & 0x0f))
    })
}

/// keepalived's `UDP_CHECK`: the payload sent; an ICMP error fails; without
/// `require_reply`, silence until the timeout passes (the checker's timeout ends the
/// wait: see [`round`]).
async fn udp_check(s: UdpSocket, u: &UdpCheck, wait: Duration) -> Result<(), String> {
    let payload = u.payload.clone().unwrap_or_else(|| {
        let r = getrandom::u64().unwrap_or(0x7864_7673);
        r.to_be_bytes().to_vec()
    });
    s.send(&payload)
        .await
        .map_err(|e| format!("sending the datagram: {}", io_words(&e)))?;
    let mut buf = vec![0u8; 65536];
    let got = match tokio::time::timeout(wait, s.recv(&mut buf)).await {
        Ok(got) => got,
        Err(_) if u.require_reply => {
            return Err(format!(
                "no UDP reply within {} s",
                crate::health::Millis(wait.as_millis() as u32)
            ))
        }
        Err(_) => return Ok(()),
    };
    match got {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("port unreachable (nothing listens)".into())
        }
        Err(e) => Err(format!("UDP: {}", io_words(&e))),
        Ok(n) if u.require_reply => {
            let reply = &buf[..n];
            if n < usize::from(u.min) || n > usize::from(u.max) {
                return Err(format!(
                    "UDP reply of {n} bytes, want {} to {}",
                    u.min, u.max
                ));
            }
            match &u.reply {
                Some(p) if !udp_reply_matches(reply, p) => Err(format!(
                    "UDP reply {} does not match {p}",
                    super::spec::hex(&reply[..n.min(16)])
                )),
                _ => Ok(()),
            }
        }
        Ok(_) => Ok(()),
    }
}

/// keepalived's `MISC_CHECK`: the program's exit status (0 pass, 1 fail; with
/// `misc_dynamic`, 2-255 pass with weight status - 2); the weight it sets.
async fn misc(m: &MiscCheck) -> Result<Option<u16>, String> {
    let cmd = super::scripts::command(&m.command, m.user.as_deref())?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let status = cmd.status().await.map_err(|e| {
        format!(
            "running {}: {}",
            super::scripts::program(&m.command),
            io_words(&e)
        )
    })?;
    match status.code() {
        Some(0) => Ok(None),
        Some(c @ 2..=255) if m.dynamic => Ok(Some((c - 2) as u16)),
        Some(c) => Err(format!(
            "{} exited with status {c}",
            super::scripts::program(&m.command)
        )),
        None => Err(format!(
            "{} was killed ({status})",
            super::scripts::program(&m.command)
        )),
    }
}

/// keepalived's `FILE_CHECK`: the number in the file times the weight (negated with
/// `reverse`); with weight 0 any value but 0 fails, otherwise a negative product fails
/// unless `dynamic` adds it to the weight. The product.
fn file(f: &FileCheck) -> Result<i64, String> {
    let text = std::fs::read_to_string(&f.path)
        .map_err(|e| format!("reading {}: {}", f.path, io_words(&e)))?;
    let t = text.trim();
    let value: i64 = if t.is_empty() {
        0
    } else {
        t.parse().map_err(|_| {
            format!(
                "{}: '{}' is not a number",
                f.path,
                t.chars().take(20).collect::<String>()
            )
        })?
    };
    let m = i64::from(f.weight) * if f.reverse { -1 } else { 1 };
    if f.weight == 0 {
        return if value == 0 {
            Ok(0)
        } else {
            Err(format!("{} holds {value}", f.path))
        };
    }
    let product = value.saturating_mul(m);
    if product < 0 && !f.dynamic {
        return Err(format!("{} holds {value} (x {m} = {product})", f.path));
    }
    Ok(product)
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
/// unless codes are given), the body's MD5 if a digest is given, the regular expression
/// if one is given.
pub fn judge(answer: &[u8], h: &HttpCheck) -> Result<(), String> {
    let path = &h.path;
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
    if !h.status_ok(code) {
        return Err(format!(
            "GET {path}: status {code}, want {}",
            h.status_words()
        ));
    }
    let body = find(answer, b"\r\n\r\n").map_or(&[][..], |i| &answer[i + 4..]);
    if let Some(want) = &h.digest {
        let got: String = Md5::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != *want {
            return Err(format!("GET {path}: body digest {got}, want {want}"));
        }
    }
    if let Some(re) = &h.regex {
        let re = super::spec::compile_regex(re)?;
        match (re.is_match(body), h.regex_no_match) {
            (true, true) => {
                return Err(format!(
                    "GET {path}: the body matches {re} (regex_no_match)"
                ))
            }
            (false, false) => return Err(format!("GET {path}: the body does not match {re}")),
            _ => {}
        }
    }
    Ok(())
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
        let get = |f: &dyn Fn(&mut HttpCheck)| {
            let mut h = HttpCheck::get("/");
            f(&mut h);
            h
        };
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nrs1";
        assert_eq!(judge(ok, &get(&|_| {})), Ok(()));
        assert_eq!(judge(ok, &get(&|h| h.status = vec![(200, 200)])), Ok(()));
        assert!(judge(ok, &get(&|h| h.status = vec![(204, 204)])).is_err());
        assert_eq!(
            judge(ok, &get(&|h| h.status = vec![(100, 199), (200, 200)])),
            Ok(())
        );
        // md5sum of "rs1".
        let md5 = "4fc2f671f0898f76d30da6b1f9566f42";
        assert_eq!(judge(ok, &get(&|h| h.digest = Some(md5.into()))), Ok(()));
        assert!(judge(ok, &get(&|h| h.digest = Some("0".repeat(32)))).is_err());
        let err = judge(b"HTTP/1.0 503 Busy\r\n\r\n", &HttpCheck::get("/h")).expect_err("503");
        assert_eq!(err, "GET /h: status 503, want 2xx");
        assert!(judge(b"SSH-2.0-OpenSSH\r\n", &get(&|_| {})).is_err());
        assert!(judge(b"", &get(&|_| {})).is_err());
        // keepalived's regex and regex_no_match.
        assert_eq!(
            judge(ok, &get(&|h| h.regex = Some("^rs[0-9]$".into()))),
            Ok(())
        );
        let no = judge(ok, &get(&|h| h.regex = Some("down".into()))).expect_err("no match");
        assert!(no.contains("does not match"), "{no}");
        let inverse = get(&|h| {
            h.regex = Some("(?i)RS1".into());
            h.regex_no_match = true;
        });
        assert!(judge(ok, &inverse).is_err());
        assert!(complete(ok));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrs1"
        ));
    }

    #[test]
    fn smtp_dns_and_udp_answers_are_read_as_keepalived_does() {
        assert_eq!(smtp_code(b"220 mx ESMTP\r\n"), Some(220));
        assert_eq!(smtp_code(b"250-mx\r\n250 SIZE 10\r\n"), Some(250));
        assert_eq!(smtp_code(b"250-mx\r\n"), None, "more lines to come");
        assert_eq!(smtp_code(b"220 mx"), None, "a line not ended");
        let q = dns_query(0xabcd, 1, "www.example.org.");
        assert_eq!(&q[..4], &[0xab, 0xcd, 0x01, 0x00]);
        assert_eq!(&q[12..16], b"\x03www");
        assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
        assert_eq!(dns_query(1, 6, "").len(), 12 + 1 + 4, "the root");
        let mut a = q.clone();
        a[2] |= 0x80;
        assert_eq!(dns_judge(&a, 0xabcd), Ok(()));
        assert!(dns_judge(&q, 0xabcd).is_err(), "a query is no response");
        a[3] = 0x03;
        assert_eq!(dns_judge(&a, 0xabcd), Err("DNS: response code 3".into()));
        assert!(dns_judge(&a, 1).is_err());
        assert!(udp_reply_matches(&[0x0a, 0x17, 0xff], "0ax7"));
        assert!(!udp_reply_matches(&[0x0b], "0a"));
        assert!(udp_reply_matches(&[0x0a], "0a0b"), "the shorter decides");
    }

    #[test]
    fn misc_and_file_checks_give_keepalived_weights() {
        let dir = std::env::temp_dir().join(format!("xdpvs-checker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("weight");
        let file = |w: i32, reverse: bool, dynamic: bool| FileCheck {
            path: f.display().to_string(),
            weight: w,
            reverse,
            dynamic,
        };
        std::fs::write(&f, "3\n").expect("write");
        assert_eq!(super::file(&file(2, false, true)), Ok(6));
        assert!(
            super::file(&file(0, false, false)).is_err(),
            "weight 0: non-zero fails"
        );
        assert!(
            super::file(&file(1, true, false)).is_err(),
            "a negative product fails"
        );
        assert_eq!(
            super::file(&file(1, true, true)),
            Ok(-3),
            "unless it is dynamic"
        );
        std::fs::write(&f, "0").expect("write");
        assert_eq!(super::file(&file(0, false, false)), Ok(0));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(super::file(&file(1, false, false)).is_err(), "no file");
        let d = Dynamic {
            set: Some(10),
            add: -3,
        };
        assert_eq!(d.weight(1), 7);
        assert_eq!(Dynamic { set: None, add: -5 }.weight(2), 0);
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
    fn programs_pass_fail_set_weights_and_are_killed_at_their_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let run = |command: &str, dynamic: bool| {
            let mut t = target(1, Probe::Tcp);
            t.spec.probe = Probe::Misc(MiscCheck {
                command: command.into(),
                timeout: Some(Millis(300)),
                dynamic,
                user: None,
            });
            rt.block_on(round(&t, None))
        };
        assert_eq!(run("/bin/sh -c 'exit 0'", false), Ok(None));
        let failed = run("/bin/sh -c 'exit 1'", true).expect_err("status 1");
        assert!(failed.contains("exited with status 1"), "{failed}");
        assert!(
            run("/bin/sh -c 'exit 9'", false).is_err(),
            "9 without misc_dynamic"
        );
        let weight = |d: Option<Dynamic>| d.map(|d| d.weight(1));
        assert_eq!(run("/bin/sh -c 'exit 9'", true).map(weight), Ok(Some(7)));
        assert_eq!(run("/bin/sh -c 'exit 0'", true).map(weight), Ok(Some(1)));
        let slow = run("/bin/sh -c 'sleep 5'", false).expect_err("killed");
        assert!(slow.contains("no answer within 0.3 s"), "{slow}");
        let refused = run("relative/script", false).expect_err("relative");
        assert!(refused.contains("absolute path"), "{refused}");
    }

    #[test]
    fn a_hanging_check_never_delays_another() {
        // A server that accepts and never answers: its HTTP check waits its timeout.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in silent.incoming() {
                held.push(s);
            }
        });
        let open = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open_port = open.local_addr().expect("addr").port();
        std::thread::spawn(move || for _ in open.incoming() {});
        let checker = Checker::start(None, None).expect("checker");
        let mut hanging = target(silent_port, Probe::Http(Box::new(HttpCheck::get("/"))));
        // It waits up to a minute: every result below comes while it hangs.
        hanging.spec.timeout = Millis(60_000);
        hanging.addr = Ipv4Addr::new(127, 0, 0, 2).into();
        let mut quick = target(open_port, Probe::Tcp);
        quick.spec.interval = Millis(20);
        hanging.spec.connect_ip = Some(Ipv4Addr::LOCALHOST.into());
        checker.set(vec![hanging, quick]);
        for _ in 0..5 {
            let o = checker
                .results()
                .recv_timeout(Duration::from_secs(30))
                .expect("a result of the quick check");
            assert_eq!(
                o.addr,
                IpAddr::from(Ipv4Addr::LOCALHOST),
                "the hanging one answered: {o:?}"
            );
            assert!(o.ok, "{o:?}");
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
        let checker = Checker::start(None, None).expect("checker");
        let http = Probe::Http(Box::new(HttpCheck {
            status: vec![(200, 200)],
            ..HttpCheck::get("/")
        }));
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
