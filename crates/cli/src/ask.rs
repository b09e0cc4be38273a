//! Asking the director over its control socket, and saying what went wrong: what every
//! command of the client shares.

use std::process::ExitCode;

use xdpvs_director::control::client;
use xdpvs_director::control::proto::{ControlError, Reply, Request};

/// Says what went wrong, as one line, with ipvsadm's exit status for it.
pub fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("xdpvs: {e}");
    ExitCode::from(code)
}

/// ipvsadm's exit status for what its kernel refuses (it returns -1 from main), and for
/// a command line without a command or with an unknown option.
pub const IPVSADM_FAILED: u8 = 255;

/// What ipvsadm says (after the `xdpvs: ` prefix) when the kernel refuses `req` as the
/// director refused it with `e`, if ipvsadm would say it: the kernel's refusals of a
/// change, in libipvs's words, with what they concern.
pub fn ipvsadm_words(req: &Request, e: &ControlError) -> Option<String> {
    let on_real = matches!(
        req,
        Request::AddReal { .. } | Request::EditReal { .. } | Request::DeleteReal { .. }
    );
    Some(match e {
        ControlError::ServiceExists(k) => format!("Service already exists ({k})"),
        ControlError::NoSuchService(k) if on_real => format!("Service not defined ({k})"),
        ControlError::NoSuchService(k) => format!("No such service ({k})"),
        ControlError::RealExists { service, addr } => {
            format!("Destination already exists ({addr} in {service})")
        }
        ControlError::NoSuchReal { service, addr } => {
            format!("No such destination ({addr} in {service})")
        }
        ControlError::DaemonRunning(r) => format!("Daemon has already run ({r})"),
        ControlError::NoDaemon(r) => format!("No daemon is running ({r})"),
        _ => return None,
    })
}

/// Says why the director refused the change `req`: in ipvsadm's words and with its exit
/// status (255) when ipvsadm's kernel would have refused it too, else in one line of
/// xdpvs's own, status 1.
pub fn refused(req: &Request, e: ControlError) -> ExitCode {
    match ipvsadm_words(req, &e) {
        Some(words) => fail(words, IPVSADM_FAILED),
        None => fail(e, 1),
    }
}

/// Has the director at `socket` answer `req`; a failure is said in one line.
pub fn ask_at(socket: &std::path::Path, req: &Request) -> Result<Reply, ExitCode> {
    match client::request(socket, req) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(fail(e, 1)),
        Err(e) => Err(fail(e, 1)),
    }
}

/// Prints `answer` as pretty JSON with `json`, else as `text` renders it.
pub fn print_answer<T: serde::Serialize>(
    answer: &T,
    json: bool,
    text: impl Fn(&T) -> String,
) -> Result<(), ExitCode> {
    if json {
        let j = serde_json::to_string_pretty(answer).map_err(|e| fail(e, 1))?;
        println!("{j}");
    } else {
        print!("{}", text(answer));
    }
    Ok(())
}
