//! Which part answers which request, on the client's own thread:
//!
//! - questions (`-L` in all its forms, `--timeout`, `-c`): the read model, from the
//!   latest published view and the workers' counters, without asking the write side;
//! - changes (edits, `-R`, `-Z`, `--set`, `xdpvs drain`): handed to the write side's
//!   thread, which answers as soon as it has applied them (or refused them);
//! - diagnostics (`xdpvs check`, `xdpvs explain`): handed to the diagnostics thread.

use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};

use super::dataplane::Observe;
use super::diagnose::{Ask, Diagnostic};
use super::proto::{Answer, ControlError, Reply, Request};
use super::read;
use super::server::{Handler, Pieces};
use super::view::{Published, View};

/// A change for the write side, and where its answer goes.
#[derive(Debug)]
pub struct Change {
    /// The request.
    pub req: Request,
    /// What sent it, for the event log (`the control socket`, `the status page (ADDR)`).
    pub by: String,
    /// Where the answer goes (the write side never waits on it: it has room for one).
    pub reply: Sender<Answer>,
}

/// Routes each client's request to the part that answers it.
pub struct Router<O> {
    view: Arc<Published<View>>,
    observe: O,
    changes: Sender<Change>,
    diagnostics: Sender<Ask>,
    read_only: bool,
}

impl<O> std::fmt::Debug for Router<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl<O: Observe + Send + Sync + 'static> Router<O> {
    /// Questions answered from `view` and `observe`, changes sent to `changes`,
    /// diagnostics to `diagnostics`.
    pub fn new(
        view: Arc<Published<View>>,
        observe: O,
        changes: Sender<Change>,
        diagnostics: Sender<Ask>,
    ) -> Router<O> {
        Router {
            view,
            observe,
            changes,
            diagnostics,
            read_only: false,
        }
    }

    /// Where diagnostics are asked (for another router that shares them).
    pub fn diagnostics(&self) -> Sender<Ask> {
        self.diagnostics.clone()
    }

    /// The same router, answering questions only: every change is refused (the
    /// `--read-only-socket` for monitoring).
    pub fn read_only(mut self) -> Router<O> {
        self.read_only = true;
        self
    }

    fn diagnose(&self, what: Diagnostic) -> Answer {
        call(&self.diagnostics, |reply| Ask { what, reply })
    }

    fn change(&self, req: Request) -> Answer {
        if self.read_only {
            return Err(ControlError::ReadOnly(req.name().to_string()));
        }
        call(&self.changes, |reply| Change {
            req,
            by: "the control socket".into(),
            reply,
        })
    }
}

/// Sends the message `make` builds to the part behind `to` and waits for its answer (on
/// the client's own thread); a part that is gone means the director is stopping.
fn call<M>(to: &Sender<M>, make: impl FnOnce(Sender<Answer>) -> M) -> Answer {
    let (reply, answer) = bounded(1);
    to.send(make(reply)).map_err(|_| ControlError::Stopping)?;
    answer.recv().unwrap_or(Err(ControlError::Stopping))
}

impl<O: Observe + Send + Sync + 'static> Handler for Router<O> {
    fn handle(&self, req: Request, pieces: &mut Pieces<'_>) -> Answer {
        match req {
            Request::List { service } => {
                read::table(&self.view.get(), &self.observe, service.as_ref()).map(Reply::Table)
            }
            Request::GetTimeouts => Ok(read::timeouts(&self.view.get())),
            Request::GetDaemon => Ok(Reply::Daemon(
                self.view
                    .get()
                    .sync
                    .as_ref()
                    .map(|d| d.rows())
                    .unwrap_or_default(),
            )),
            Request::Connections => {
                read::connections(&self.view.get(), &self.observe, &mut |rows| {
                    pieces.send(Reply::Connections(rows))
                })?;
                Ok(Reply::Done)
            }
            Request::Check => self.diagnose(Diagnostic::Check),
            Request::Explain { key, client } => self.diagnose(Diagnostic::Explain { key, client }),
            Request::AddService { .. }
            | Request::EditService { .. }
            | Request::DeleteService { .. }
            | Request::Clear
            | Request::AddReal { .. }
            | Request::EditReal { .. }
            | Request::DeleteReal { .. }
            | Request::SetTimeouts(_)
            | Request::Follow { .. }
            | Request::SyncDaemon { .. }
            | Request::StartDaemon { .. }
            | Request::StopDaemon { .. }
            | Request::Zero { .. }
            | Request::Batch(_)
            | Request::Drain { .. } => self.change(req),
        }
    }
}
