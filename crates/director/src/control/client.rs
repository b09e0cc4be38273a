//! The client side of the control socket: what `xdpvs -A ...` runs.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{read_message, write_message, Answer, Reply, Request, WireError};

/// Why the director could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error("cannot reach the director at {path} ({cause}): is `xdpvs run` running? (--socket or XDPVS_SOCKET choose another)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The socket is there, but this user may not use it.
    #[error("you may not use the director's control socket {0} (permission denied): run as root or as its owner, or ask through a --read-only-socket your group may use (docs/OPERATIONS.md, Control socket)")]
    NoAccess(PathBuf),
    /// The exchange failed.
    #[error("talking to the director: {0}")]
    Wire(WireError),
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Wire(e)
    }
}

/// The request is out, or the director answered before reading it.
enum Sent {
    /// Read the answer here.
    Open(UnixStream),
    /// The director answered at once and closed (it is busy, or stopping).
    Answered(Answer),
}

/// Connects to the director at `socket` and sends `req`.
fn send(socket: &Path, req: &Request) -> Result<Sent, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::NoAccess(socket.to_path_buf())
        } else {
            ClientError::Connect {
                path: socket.to_path_buf(),
                cause,
            }
        }
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    match write_message(&mut s, req) {
        Ok(()) => Ok(Sent::Open(s)),
        // A director that answers without reading (Busy) may close before the request
        // is written: what it said is still waiting to be read, and is the answer.
        Err(e) => read_message(&mut s)
            .map(Sent::Answered)
            .map_err(|_| ClientError::Wire(e)),
    }
}

/// Sends `req` to the director at `socket` and returns its answer.
pub fn request(socket: &Path, req: &Request) -> Result<Answer, ClientError> {
    match send(socket, req)? {
        Sent::Open(mut s) => Ok(read_message(&mut s)?),
        Sent::Answered(a) => Ok(a),
    }
}

/// Sends `req` to the director at `socket` and hands each piece of a pieced answer
/// ([`Reply::Connections`]) to `piece` as it arrives; returns the final answer.
pub fn request_pieces(
    socket: &Path,
    req: &Request,
    mut piece: impl FnMut(Reply),
) -> Result<Answer, ClientError> {
    let mut s = match send(socket, req)? {
        Sent::Open(s) => s,
        Sent::Answered(a) => return Ok(a),
    };
    loop {
        match read_message::<Answer>(&mut s)? {
            Ok(p @ Reply::Connections(_)) => piece(p),
            other => return Ok(other),
        }
    }
}
