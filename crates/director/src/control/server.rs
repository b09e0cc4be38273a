//! The director's side of the control socket: an acceptor thread, and a thread of its
//! own for every client (up to [`MAX_CLIENTS`] at once), so that a client that says
//! nothing, reads slowly or vanishes holds up only itself. Each client's request is read
//! within [`READ_TIMEOUT`] and each message of its answer written within
//! [`WRITE_TIMEOUT`], or the client is cut off. What a request does is the [`Handler`]'s
//! business (`super::route`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::proto::{read_message, write_message, Answer, ControlError, Reply, Request, WireError};

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another director answers there.
    #[error(
        "another director is already listening on {0}: stop it, or give this one --socket PATH"
    )]
    InUse(PathBuf),
    /// A filesystem or socket call failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The listening control socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (mode 0600), replacing a socket file left by a director that died.
    pub fn bind(path: &Path) -> Result<ControlSocket, SocketError> {
        ControlSocket::bind_for(path, None)
    }

    /// Binds `path` for its owner and, with `group`, that group's members too (mode
    /// 0660, the file's group set to it).
    pub fn bind_for(path: &Path, group: Option<u32>) -> Result<ControlSocket, SocketError> {
        let io = |what: &'static str| {
            move |source| SocketError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
        }
        let listener = UnixListener::bind(path).map_err(io("binding the control socket"))?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        if let Some(gid) = group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io("giving the group the control socket"))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io("restricting the control socket"))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves every client with `handler` from now on, each on its own thread, until
    /// the returned [`Server`] is stopped or dropped.
    pub fn serve(self, handler: Arc<dyn Handler>) -> Result<Server, std::io::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(AtomicUsize::new(0));
        let listener = self.listener.try_clone()?;
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&clients));
        let thread = std::thread::Builder::new()
            .name("xdpvs-accept".into())
            .spawn(move || accept(&listener, &flag, &count, &handler))?;
        Ok(Server {
            socket: self,
            stop,
            clients,
            thread: Some(thread),
        })
    }
}

/// What answers the requests of the control socket's clients, on their threads.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req`, sending pieces of a long answer to `pieces` first.
    fn handle(&self, req: Request, pieces: &mut Pieces<'_>) -> Answer;
}

/// Clients served at once at most; one more gets [`ControlError::Busy`] and is closed.
pub const MAX_CLIENTS: usize = 128;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one message of an answer may take to be written (a client reading slowly,
/// such as `xdpvs -Lnc | less` left paused, is cut off after it).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The control socket being served; stops serving (and removes its file) when dropped.
/// Clients already connected finish on their own threads.
#[derive(Debug)]
pub struct Server {
    socket: ControlSocket,
    stop: Arc<AtomicBool>,
    clients: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Where it listens.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Clients being served now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the acceptor from accept(2).
        let _ = UnixStream::connect(self.socket.path());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts a client for as long as it is served.
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept(
    listener: &UnixListener,
    stop: &AtomicBool,
    clients: &Arc<AtomicUsize>,
    handler: &Arc<dyn Handler>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = stream else {
            // Out of descriptors, say: let the clients in hand finish first.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = write_message(
                &mut stream,
                &Err::<Reply, _>(ControlError::Busy(MAX_CLIENTS)),
            );
            let _ = stream.flush();
            continue;
        }
        let seat = Seat(Arc::clone(clients));
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("xdpvs-client".into())
            .spawn(move || {
                let _seat = seat;
                serve(stream, |req, pieces| handler.handle(req, pieces));
            });
        // No thread to be had: the client is closed (its seat given back with the closure).
        drop(spawned);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a request answered in pieces writes them, before its final answer.
#[derive(Debug)]
pub struct Pieces<'a> {
    stream: &'a mut UnixStream,
    open: bool,
}

impl Pieces<'_> {
    /// Sends one piece of the answer. False once the client is gone (stop producing).
    pub fn send(&mut self, piece: Reply) -> bool {
        self.open = self.open && write_message(self.stream, &Ok::<_, ControlError>(piece)).is_ok();
        self.open
    }
}

/// Reads one request from `stream`, runs it through `handle` (which may send pieces of
/// its answer first) and writes the answer. A message that cannot be read gets an error
/// answer; a client that went away is ignored.
pub fn serve(mut stream: UnixStream, handle: impl FnOnce(Request, &mut Pieces<'_>) -> Answer) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let answer: Answer = match read_message::<Request>(&mut stream) {
        Ok(req) => {
            let mut pieces = Pieces {
                stream: &mut stream,
                open: true,
            };
            let answer = handle(req, &mut pieces);
            if !pieces.open {
                return;
            }
            answer
        }
        Err(WireError::Version(got)) => Err(ControlError::Version {
            got,
            want: super::proto::VERSION,
        }),
        Err(WireError::Io(_)) => return,
        Err(e) => Err(ControlError::BadRequest(e.to_string())),
    };
    let _ = write_message(&mut stream, &answer);
}

#[cfg(test)]
mod tests {
    use super::super::proto::MAX_MESSAGE;
    use super::*;
    use std::io::{Read, Write};

    fn exchange(bytes: &[u8]) -> Answer {
        let (mut client, server) = UnixStream::pair().expect("pair");
        client.write_all(bytes).expect("written");
        serve(server, |_, _| Ok(Reply::Done));
        read_message(&mut client).expect("an answer")
    }

    #[test]
    fn malformed_and_oversized_requests_get_error_answers() {
        let mut junk = 6u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{nope}");
        assert!(matches!(exchange(&junk), Err(ControlError::BadRequest(_))));
        let big = ((MAX_MESSAGE as u32) + 1).to_be_bytes();
        let e = exchange(&big).expect_err("refused");
        assert!(e.to_string().contains("over the limit"), "{e}");
        let body = br#"{"version":99,"body":"Clear"}"#;
        let mut newer = (body.len() as u32).to_be_bytes().to_vec();
        newer.extend_from_slice(body);
        assert_eq!(
            exchange(&newer),
            Err(ControlError::Version {
                got: 99,
                want: crate::control::proto::VERSION
            })
        );
        let body = format!(
            r#"{{"version":{},"body":"Clear"}}"#,
            crate::control::proto::VERSION
        );
        let body = body.as_bytes();
        let mut ok = (body.len() as u32).to_be_bytes().to_vec();
        ok.extend_from_slice(body);
        assert_eq!(exchange(&ok), Ok(Reply::Done));
    }

    /// Answers every request at once.
    struct Done;

    impl Handler for Done {
        fn handle(&self, _: Request, _: &mut Pieces<'_>) -> Answer {
            Ok(Reply::Done)
        }
    }

    #[test]
    fn silent_clients_hold_up_nobody_and_one_over_the_limit_is_told_so() {
        let path = std::env::temp_dir().join(format!("xdpvs-server-{}.sock", std::process::id()));
        let server = ControlSocket::bind(&path)
            .expect("bound")
            .serve(Arc::new(Done))
            .expect("served");
        let ask = || super::super::client::request(&path, &Request::Clear).expect("answered");
        // Clients that connect and say nothing take a seat each, and nothing else.
        let mut silent: Vec<UnixStream> = Vec::new();
        for _ in 0..MAX_CLIENTS - 1 {
            silent.push(UnixStream::connect(&path).expect("connected"));
        }
        assert_eq!(
            ask(),
            Ok(Reply::Done),
            "answered beside {} silent clients",
            silent.len()
        );
        // Exactly the silent ones: the answered client's thread has let its seat go too.
        while server.clients() != MAX_CLIENTS - 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        silent.push(UnixStream::connect(&path).expect("connected"));
        while server.clients() != MAX_CLIENTS {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Every seat taken: the next client is told why, at once.
        let e = ask().expect_err("busy");
        assert_eq!(e, ControlError::Busy(MAX_CLIENTS));
        assert!(e.to_string().contains("try again"), "{e}");
        // A client that leaves gives its seat back.
        drop(silent.pop());
        while server.clients() >= MAX_CLIENTS {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ask(), Ok(Reply::Done));
        drop(server);
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn a_client_that_hangs_up_is_ignored() {
        let (client, server) = UnixStream::pair().expect("pair");
        drop(client);
        serve(server, |_, _| panic!("no request was sent"));
        let (mut client, server) = UnixStream::pair().expect("pair");
        client.write_all(&[0, 0]).expect("written");
        drop(server);
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
    }
}
