//! Asking the director over its control socket, and saying what went wrong: what every
//! command of the client shares.

use std::process::ExitCode;

use xdpvs_director::control::client;
use xdpvs_director::control::proto::{Reply, Request};

/// Says what went wrong, as one line, with ipvsadm's exit status for it.
pub fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("xdpvs: {e}");
    ExitCode::from(code)
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
