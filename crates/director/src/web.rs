//! `xdpvs run --web ADDR:PORT`: the status page, its JSON API and, with
//! `--web-admin-token FILE`, its admin actions. One thread off the workers' cores runs
//! every client's connection on a single-threaded async runtime; it reads published
//! snapshots only (the write side's view, the watch's findings, the workers' counters,
//! the event log) and renders the page's state once per sample, whatever the number of
//! browsers: a browser costs the copy of a string, never a lock the director waits on.
//! An admin action is the change its ipvsadm command makes, sent to the write side as
//! the control socket sends one (all or nothing), logged with the client's address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};
use xdpvs_dataplane::stats::DropReason;
use xdpvs_sched::{Method, Protocol, ServiceKey};

use crate::control::dataplane::Observe;
use crate::control::proto::{CheckEdit, Reply, Request, Table};
use crate::control::route::Change;
use crate::control::view::{Published, View};
use crate::control::{json as table_json, read};
use crate::events::Events;
use crate::watch::Watch;
use crate::workers::Links;

pub mod http;

use http::{Head, Status};

/// What the director is, as the page shows it (known once it runs).
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The clients' interface.
    pub iface: String,
    /// The real servers' interface of a two-armed director.
    pub servers_iface: Option<String>,
    /// Where the XDP program runs (native, generic).
    pub xdp_mode: String,
    /// Each queue: its worker's core, the socket's bind mode, the polling policy.
    pub queues: Vec<QueueFacts>,
    /// xdpvs's version.
    pub version: &'static str,
    /// `--announce`'s interface.
    pub announce: Option<String>,
}

/// One queue of [`Facts`].
#[derive(Debug, Clone, Serialize)]
pub struct QueueFacts {
    /// The queue.
    pub queue: u32,
    /// Its worker's core (none: it floats).
    pub core: Option<usize>,
    /// `zero-copy` or `copy`.
    pub bind: &'static str,
    /// The polling policy.
    pub poll: String,
}

/// What the page reads, and where its admin actions go.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The write side's published view.
    pub view: Arc<Published<View>>,
    /// The watch's published findings.
    pub watch: Arc<Published<Watch>>,
    /// The workers' counters.
    pub links: Links,
    /// What happened.
    pub events: Arc<Events>,
    /// The write side's inbox of changes.
    pub changes: crossbeam_channel::Sender<Change>,
    /// What the director is.
    pub facts: Facts,
}

/// The status page's server; stops when dropped.
#[derive(Debug)]
pub struct WebServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Browsers (connections) served at once; more are answered 503.
pub const MAX_CLIENTS: usize = 512;
/// How often the page's state is rendered (the rates' own cadence).
const SAMPLE: Duration = crate::control::stats::SAMPLE_EVERY;
/// How long a client may take to send its request.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// How long a client may take to take an answer (or one event).
const WRITE_TIME: Duration = Duration::from_secs(10);
/// A comment on an idle event stream this often keeps proxies from closing it.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The 15 minutes of a service's plot, at one point per sample.
const SERVICE_POINTS: usize = 450;
/// The 5 minutes of a real server's sparkline.
const REAL_POINTS: usize = 150;
/// Events in each state (the page asks for older ones once).
const RECENT_EVENTS: u64 = 20;
/// The header that carries the admin token.
pub const TOKEN_HEADER: &str = "x-xdpvs-token";

impl WebServer {
    /// Listens on `addr` and serves from `sources`; admin actions need `token` (none:
    /// off). Runs on its own thread, pinned to `core`.
    pub fn start(
        addr: SocketAddr,
        sources: Sources,
        token: Option<String>,
        core: Option<usize>,
    ) -> std::io::Result<WebServer> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (state, _) = tokio::sync::watch::channel(Arc::new(String::from("{}")));
        let shared = Arc::new(Shared {
            sources,
            token,
            state,
            history: Mutex::default(),
            before_quiesce: Mutex::default(),
            clients: Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS)),
        });
        let thread = std::thread::Builder::new()
            .name("xdpvs-web".into())
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!("status page: {e}");
                        return;
                    }
                };
                rt.block_on(serve(listener, shared, flag));
            })?;
        Ok(WebServer {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What every connection shares.
struct Shared {
    sources: Sources,
    token: Option<String>,
    /// The page's state, rendered once per sample.
    state: tokio::sync::watch::Sender<Arc<String>>,
    history: Mutex<History>,
    /// The weight each real server had before the page quiesced it (for "restore").
    before_quiesce: Mutex<HashMap<(ServiceKey, IpAddr), u16>>,
    clients: Arc<tokio::sync::Semaphore>,
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("status page: {e}");
            return;
        }
    };
    sample(&shared);
    let mut next = tokio::time::Instant::now() + SAMPLE;
    while !stop.load(Relaxed) {
        let wait = next
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_millis(200));
        if let Ok(Ok((stream, peer))) = tokio::time::timeout(wait, listener.accept()).await {
            tokio::spawn(connection(stream, peer, Arc::clone(&shared)));
        }
        if tokio::time::Instant::now() >= next {
            next += SAMPLE;
            sample(&shared);
        }
    }
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Renders the page's state: the director, the services, the workers, the last events;
/// and keeps the rates' history.
fn sample(sh: &Shared) {
    let view = sh.sources.view.get();
    let table = match read::table(&view, &sh.sources.links, None) {
        Ok(t) => t,
        Err(e) => {
            warn!("status page: {e}");
            return;
        }
    };
    let t = epoch();
    lock(&sh.history).push(t, &table);
    let last = sh.sources.events.last();
    let state = json!({
        "t": t,
        "director": director(sh, &view),
        "services": table_json::table(&table),
        "workers": workers(&sh.sources.links),
        "events": {
            "last": last,
            "recent": sh.sources.events.since(last.saturating_sub(RECENT_EVENTS)),
        },
    });
    sh.state.send_replace(Arc::new(state.to_string()));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The director: what it is, how long it has run, VRRP, announce and sync states.
fn director(sh: &Shared, view: &View) -> Value {
    let watch = sh.sources.watch.get();
    json!({
        "facts": sh.sources.facts,
        "started": view.started,
        "uptime_s": (epoch() - view.started).max(0.0).round(),
        "vrrp": view.vrrp.iter().map(|(v, on)| json!({"vip": v.to_string(), "served": on})).collect::<Vec<_>>(),
        "announced": watch.announced().map(|a| a.iter().map(|(v, on)| json!({"vip": v.to_string(), "announced": on})).collect::<Vec<_>>()),
        "sync": view.sync.as_ref().map(|s| s.rows().iter().map(|r| json!({
            "role": r.role.word(),
            "iface": r.iface,
            "syncid": r.syncid,
            "follows": r.follows,
        })).collect::<Vec<_>>()),
        "admin": sh.token.is_some(),
    })
}

/// The workers: frames, forwarded, drops by reason, table occupancy, TX ring full.
fn workers(links: &Links) -> Value {
    let all = links.stats();
    let per_worker = links.capacity() / all.len().max(1);
    Value::Array(
        all.iter()
            .enumerate()
            .map(|(i, (l, w))| {
                let drops: serde_json::Map<String, Value> = DropReason::ALL
                    .iter()
                    .filter(|r| w.drop_count(**r) > 0)
                    .map(|r| (r.name().to_string(), json!(w.drop_count(*r))))
                    .collect();
                json!({
                    "worker": i,
                    "frames": w.rx.get(),
                    "forwarded": w.tx.get(),
                    "replies": w.reply.get(),
                    "drops": drops,
                    "dropped": DropReason::ALL.iter().map(|r| w.drop_count(*r)).sum::<u64>(),
                    "entries": l.table_entries.get(),
                    "capacity": per_worker,
                    "tx_ring_full": l.tx_full.get(),
                })
            })
            .collect(),
    )
}

/// The rates of the last minutes: per service (15 min) and real server (5 min), a point
/// `[time, connections/s, packets/s, bytes/s]` per sample.
#[derive(Debug, Default)]
struct History {
    services: HashMap<String, VecDeque<[f64; 4]>>,
    reals: HashMap<String, VecDeque<[f64; 4]>>,
}

impl History {
    fn push(&mut self, t: f64, table: &Table) {
        let point = |r: &crate::control::proto::Rates| {
            [
                t,
                r.cps as f64,
                (r.inpps + r.outpps) as f64,
                (r.inbps + r.outbps) as f64,
            ]
        };
        let mut seen = (Vec::new(), Vec::new());
        for s in &table.services {
            let key = s.key.to_string();
            keep(
                self.services.entry(key.clone()).or_default(),
                point(&s.rates),
                SERVICE_POINTS,
            );
            for r in &s.reals {
                let rk = format!("{key}|{}", r.addr);
                keep(
                    self.reals.entry(rk.clone()).or_default(),
                    point(&r.rates),
                    REAL_POINTS,
                );
                seen.1.push(rk);
            }
            seen.0.push(key);
        }
        self.services.retain(|k, _| seen.0.contains(k));
        self.reals.retain(|k, _| seen.1.contains(k));
    }

    fn json(&self) -> Value {
        json!({ "services": self.services, "reals": self.reals })
    }
}

fn keep(q: &mut VecDeque<[f64; 4]>, p: [f64; 4], cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(p);
}

/// The page and its assets, embedded: nothing is fetched from elsewhere.
const PAGE: &str = include_str!("web/page.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

async fn connection(mut s: TcpStream, peer: SocketAddr, sh: Arc<Shared>) {
    let Ok(_permit) = Arc::clone(&sh.clients).try_acquire_owned() else {
        let _ = send(
            &mut s,
            &http::error(Status::Unavailable, "too many clients: try again"),
        )
        .await;
        return;
    };
    let (head, body) = match tokio::time::timeout(REQUEST_TIME, request(&mut s)).await {
        Ok(Ok(r)) => r,
        Ok(Err(status)) => {
            let _ = send(&mut s, &http::error(status, status.line().1)).await;
            // Let the client read the answer before the connection closes on what it
            // is still sending (closing with unread bytes would reset it).
            let _ = s.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
        // Too slow, or gone.
        Err(_) => return,
    };
    if head.method == "GET" && head.path == "/api/v1/stream" {
        stream(&mut s, &sh).await;
        return;
    }
    let answer = route(&head, &body, peer, &sh).await;
    let _ = send(&mut s, &answer).await;
}

async fn send(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIME, s.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads a request: its head, then its body (at most [`http::MAX_BODY`]).
async fn request(s: &mut TcpStream) -> Result<(Head, Vec<u8>), Status> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        let n = s.read(&mut chunk).await.map_err(|_| Status::BadRequest)?;
        if n == 0 {
            return Err(Status::BadRequest);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = http::head_end(&buf) {
            break end;
        }
        if buf.len() > http::MAX_HEAD {
            return Err(Status::HeadTooLarge);
        }
    };
    let head = http::parse_head(&buf[..end])?;
    let want = head.content_length()?;
    let mut body = buf.split_off(end);
    while body.len() < want {
        let n = s.read(&mut chunk).await.map_err(|_| Status::BadRequest)?;
        if n == 0 {
            return Err(Status::BadRequest);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(want);
    Ok((head, body))
}

/// Server-sent events: the page's state at every sample.
async fn stream(s: &mut TcpStream, sh: &Shared) {
    let mut rx = sh.state.subscribe();
    if send(s, &http::event_stream_head()).await.is_err() {
        return;
    }
    loop {
        let state = Arc::clone(&rx.borrow_and_update());
        if send(s, &http::event(&state)).await.is_err() {
            return;
        }
        match tokio::time::timeout(KEEPALIVE, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                if send(s, b": still here\n\n").await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn route(head: &Head, body: &[u8], peer: SocketAddr, sh: &Arc<Shared>) -> Vec<u8> {
    let json_ok =
        |v: Value| http::response(Status::Ok, "application/json", v.to_string().as_bytes());
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => {
            http::response(Status::Ok, "text/html; charset=utf-8", PAGE.as_bytes())
        }
        ("GET", "/app.js") => http::response(
            Status::Ok,
            "text/javascript; charset=utf-8",
            SCRIPT.as_bytes(),
        ),
        ("GET", "/app.css") => {
            http::response(Status::Ok, "text/css; charset=utf-8", STYLE.as_bytes())
        }
        ("GET", "/api/v1/state") => {
            let state = Arc::clone(&sh.state.borrow());
            http::response(Status::Ok, "application/json", state.as_bytes())
        }
        ("GET", "/api/v1/services") => {
            match read::table(&sh.sources.view.get(), &sh.sources.links, None) {
                Ok(t) => json_ok(table_json::table(&t)),
                Err(e) => http::error(Status::Unavailable, &e.to_string()),
            }
        }
        ("GET", "/api/v1/workers") => json_ok(workers(&sh.sources.links)),
        ("GET", "/api/v1/director") => json_ok(director(sh, &sh.sources.view.get())),
        ("GET", "/api/v1/history") => json_ok(lock(&sh.history).json()),
        ("GET", "/api/v1/events") => {
            let since = match head.query.get("since").map(|v| v.parse::<u64>()) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    return http::error(Status::BadRequest, "since: the number of an event")
                }
            };
            json_ok(json!({
                "last": sh.sources.events.last(),
                "events": sh.sources.events.since(since),
            }))
        }
        ("GET", "/metrics") => {
            let sources = crate::metrics::Sources {
                view: Arc::clone(&sh.sources.view),
                watch: Arc::clone(&sh.sources.watch),
                links: sh.sources.links.clone(),
            };
            match crate::metrics::scrape(&sources, head.header("accept")) {
                Ok((text, ctype)) => http::response(Status::Ok, ctype, text.as_bytes()),
                Err(e) => http::error(Status::Unavailable, &e.to_string()),
            }
        }
        ("POST", path) if path.starts_with("/api/v1/") => {
            let action = &path["/api/v1/".len()..];
            admin(head, body, action, peer, sh).await
        }
        (_, "/" | "/index.html" | "/app.js" | "/app.css" | "/metrics") => {
            http::error(Status::MethodNotAllowed, "GET only")
        }
        (_, p) if p.starts_with("/api/v1/") => http::error(
            Status::MethodNotAllowed,
            "GET the state, POST an admin action",
        ),
        _ => http::error(
            Status::NotFound,
            "no such page: the status page is /, its API /api/v1/",
        ),
    }
}

/// What an admin action asks.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    /// `TCP 198.18.0.100:80`.
    service: String,
    /// The real server's address.
    real: IpAddr,
    /// For `weight`.
    #[serde(default)]
    weight: Option<u16>,
}

/// Constant-time equality of the token given and the one configured.
fn same(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request comes from this page (not another site): no `Origin`, or one whose
/// host is the `Host` asked.
fn same_origin(head: &Head) -> bool {
    match (head.header("origin"), head.header("host")) {
        (None, _) => true,
        (Some(o), Some(h)) => {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                == Some(h)
        }
        (Some(_), None) => false,
    }
}

/// `TCP 198.18.0.100:80` (or `UDP [2001:2::1]:53`).
fn parse_service(s: &str) -> Option<ServiceKey> {
    let (proto, at) = s.trim().split_once(' ')?;
    let proto = match proto.to_ascii_uppercase().as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return None,
    };
    let a: SocketAddr = at.trim().parse().ok()?;
    Some(ServiceKey {
        proto,
        vip: a.ip(),
        port: a.port(),
    })
}

/// The ipvsadm command that makes the same change.
fn command(
    key: &ServiceKey,
    real: IpAddr,
    port: u16,
    method: Method,
    weight: Option<u16>,
) -> String {
    let svc = match key.proto {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    };
    let at = |a: IpAddr, p: u16| SocketAddr::new(a, p).to_string();
    match weight {
        None => format!("xdpvs -d {svc} {} -r {}", at(key.vip, key.port), real),
        Some(w) => {
            let m = match method {
                Method::Route => "-g",
                Method::Masq => "-m",
                Method::Tunnel(_) => "-i",
            };
            let port = if port == 0 { key.port } else { port };
            format!(
                "xdpvs -e {svc} {} -r {} {m} -w {w}",
                at(key.vip, key.port),
                at(real, port)
            )
        }
    }
}

/// An admin action: `quiesce`, `restore`, `weight`, `remove`.
async fn admin(
    head: &Head,
    body: &[u8],
    action: &str,
    peer: SocketAddr,
    sh: &Arc<Shared>,
) -> Vec<u8> {
    let Some(token) = &sh.token else {
        return http::error(
            Status::NotFound,
            "admin actions are off: start the director with --web-admin-token FILE",
        );
    };
    if !matches!(action, "quiesce" | "restore" | "weight" | "remove") {
        return http::error(
            Status::NotFound,
            "no such action: quiesce, restore, weight, remove",
        );
    }
    if !same_origin(head) {
        return http::error(Status::Forbidden, "a request from another site");
    }
    if !head.header("content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim() == "application/json")
    }) {
        return http::error(
            Status::UnsupportedMediaType,
            "send JSON (Content-Type: application/json)",
        );
    }
    if !head.header(TOKEN_HEADER).is_some_and(|t| same(t, token)) {
        warn!("status page {peer}: {action} refused: no or a wrong admin token");
        return http::error(
            Status::Forbidden,
            "the admin token is missing or wrong (header X-Xdpvs-Token)",
        );
    }
    let a: Action = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return http::error(Status::BadRequest, &format!("the action's JSON: {e}")),
    };
    let Some(key) = parse_service(&a.service) else {
        return http::error(
            Status::BadRequest,
            "service: PROTOCOL VIP:PORT, e.g. TCP 198.18.0.100:80",
        );
    };
    let view = sh.sources.view.get();
    let Some(real) = view
        .config
        .services
        .iter()
        .find(|s| s.key == key)
        .and_then(|s| s.reals.iter().find(|r| r.addr == a.real))
        .cloned()
    else {
        return http::error(
            Status::NotFound,
            &format!("no real server {} in service {key}", a.real),
        );
    };
    let weight = match action {
        "quiesce" => Some(0),
        "weight" => match a.weight {
            Some(w) => Some(w),
            None => return http::error(Status::BadRequest, "weight: 0 to 65535"),
        },
        "restore" => match lock(&sh.before_quiesce).get(&(key, a.real)) {
            Some(&w) => Some(w),
            None => {
                return http::error(
                    Status::Conflict,
                    "no weight to restore: this page did not quiesce it; set a weight",
                )
            }
        },
        _ => None,
    };
    let req = match weight {
        Some(weight) => Request::EditReal {
            key,
            addr: a.real,
            port: real.port,
            method: real.method,
            weight,
            check: CheckEdit::Keep,
        },
        None => Request::DeleteReal { key, addr: a.real },
    };
    let cmd = command(&key, a.real, real.port, real.method, weight);
    let by = format!("the status page ({peer}): {cmd}");
    let changes = sh.sources.changes.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let (reply, answer) = crossbeam_channel::bounded(1);
        changes
            .send(Change { req, by, reply })
            .map_err(|_| "the director is stopping".to_string())?;
        match answer.recv() {
            Ok(Ok(Reply::Done)) | Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the director is stopping".to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match answer {
        Ok(()) => {
            info!("status page {peer}: {cmd}: applied");
            let mut before = lock(&sh.before_quiesce);
            match action {
                "quiesce" if real.weight > 0 => {
                    before.insert((key, a.real), real.weight);
                }
                "restore" | "remove" | "weight" => {
                    before.remove(&(key, a.real));
                }
                _ => {}
            }
            http::response(
                Status::Ok,
                "application/json",
                json!({ "applied": true, "command": cmd })
                    .to_string()
                    .as_bytes(),
            )
        }
        Err(why) => {
            warn!("status page {peer}: {cmd}: refused: {why}");
            http::response(
                Status::Conflict,
                "application/json",
                json!({ "error": why, "command": cmd })
                    .to_string()
                    .as_bytes(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        http::parse_head(raw.as_bytes()).expect("head")
    }

    #[test]
    fn only_this_page_s_origin_may_act() {
        assert!(same_origin(&head(
            "POST /a HTTP/1.1\r\nHost: 198.18.0.1:8080\r\n\r\n"
        )));
        assert!(same_origin(&head(
            "POST /a HTTP/1.1\r\nHost: 198.18.0.1:8080\r\nOrigin: http://198.18.0.1:8080\r\n\r\n"
        )));
        assert!(!same_origin(&head(
            "POST /a HTTP/1.1\r\nHost: 198.18.0.1:8080\r\nOrigin: http://evil.example\r\n\r\n"
        )));
        assert!(!same_origin(&head(
            "POST /a HTTP/1.1\r\nOrigin: http://x\r\n\r\n"
        )));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cre", "s3cret"));
        assert!(!same("s3creT", "s3cret"));
        assert!(!same("", "s3cret"));
    }

    #[test]
    fn actions_name_their_ipvsadm_command() {
        let key = parse_service("TCP 198.18.0.100:80").expect("service");
        assert_eq!(key.to_string(), "TCP 198.18.0.100:80");
        let rs: IpAddr = "198.18.0.11".parse().expect("address");
        assert_eq!(
            command(&key, rs, 0, Method::Route, Some(0)),
            "xdpvs -e -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 0"
        );
        assert_eq!(
            command(&key, rs, 8080, Method::Masq, Some(5)),
            "xdpvs -e -t 198.18.0.100:80 -r 198.18.0.11:8080 -m -w 5"
        );
        assert_eq!(
            command(&key, rs, 0, Method::Route, None),
            "xdpvs -d -t 198.18.0.100:80 -r 198.18.0.11"
        );
        let v6 = parse_service("udp [2001:2::1]:53").expect("service");
        assert_eq!(v6.port, 53);
        assert!(parse_service("SCTP 198.18.0.100:80").is_none());
        assert!(parse_service("TCP 198.18.0.100").is_none());
    }

    #[test]
    fn history_keeps_the_last_points_of_what_exists() {
        let mut h = History::default();
        let mut t = Table {
            size: 0,
            services: Vec::new(),
            vrrp: Vec::new(),
        };
        h.push(1.0, &t);
        assert!(h.services.is_empty());
        let mut q = VecDeque::new();
        for i in 0..(SERVICE_POINTS + 5) {
            keep(&mut q, [i as f64, 0.0, 0.0, 0.0], SERVICE_POINTS);
        }
        assert_eq!(q.len(), SERVICE_POINTS);
        assert_eq!(q[0][0], 5.0);
        t.size = 1;
        h.push(2.0, &t);
        assert_eq!(h.json()["services"], json!({}));
    }
}
