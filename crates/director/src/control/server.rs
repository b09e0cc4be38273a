//! The director's side of the control socket.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
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
    #[error("{what} {path}: {source}")]
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
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restricting the control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("configuring the control socket"))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves the connection waiting, if any, with `handle`. Returns whether there was one.
    pub fn serve_one(
        &self,
        handle: impl FnOnce(Request, &mut Pieces<'_>) -> Answer,
    ) -> Result<bool, std::io::Error> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                serve(stream, handle);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
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
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
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
        let body = br#"{"version":2,"body":"Clear"}"#;
        let mut newer = (body.len() as u32).to_be_bytes().to_vec();
        newer.extend_from_slice(body);
        assert_eq!(
            exchange(&newer),
            Err(ControlError::Version { got: 2, want: 1 })
        );
        let body = br#"{"version":1,"body":"Clear"}"#;
        let mut ok = (body.len() as u32).to_be_bytes().to_vec();
        ok.extend_from_slice(body);
        assert_eq!(exchange(&ok), Ok(Reply::Done));
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
