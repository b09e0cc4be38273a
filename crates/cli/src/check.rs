//! `xdpvs check`: has the running director probe its VIPs and real servers (ARP for each
//! VIP, a SYN or an echo request to each real server at its MAC) and prints the checklist,
//! a ✓ or ✗ per check and the fix under every ✗. Exits non-zero when anything failed, so
//! that it can gate a deployment.

use std::path::Path;
use std::process::ExitCode;

use xdpvs_director::control::check::CheckReport;
use xdpvs_director::control::proto::{Reply, Request};

use crate::ask::{ask_at, fail, print_answer};

/// Options of `xdpvs check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the checklist as JSON (`items`: `subject`, `ok`, `detail`, `fix`).
    #[arg(long)]
    pub json: bool,
}

/// The checklist as text.
pub fn render(r: &CheckReport) -> String {
    if r.items.is_empty() {
        return "nothing to check: no virtual service is configured\n".into();
    }
    let mut out = String::new();
    for i in &r.items {
        let mark = if i.ok { '✓' } else { '✗' };
        out.push_str(&format!("{mark} {}: {}\n", i.subject, i.detail));
        if let Some(fix) = &i.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let failed = r.failed();
    out.push_str(&format!(
        "{} checks: {} passed, {failed} failed\n",
        r.items.len(),
        r.items.len() - failed
    ));
    out
}

/// Asks the director at `socket` and prints what it found.
pub fn run(socket: &Path, args: &Args) -> ExitCode {
    let report = match ask_at(socket, &Request::Check) {
        Ok(Reply::Check(r)) => r,
        Ok(other) => return fail(format!("the director answered {} to a check: use the same xdpvs for the director and its commands", other.name()), 1),
        Err(code) => return code,
    };
    if let Err(code) = print_answer(&report, args.json, render) {
        return code;
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpvs_director::control::check::CheckItem;

    #[test]
    fn the_checklist_marks_each_check_and_puts_the_fix_under_a_failure() {
        let item = |ok: bool, fix: Option<&str>| CheckItem {
            subject: "VIP 198.18.0.100".into(),
            ok,
            detail: if ok { "fine" } else { "stolen" }.into(),
            fix: fix.map(String::from),
        };
        let r = CheckReport {
            items: vec![
                item(true, None),
                item(
                    false,
                    Some("on 198.18.0.12: xdpvs rs-setup --vip 198.18.0.100 --apply --persist"),
                ),
            ],
        };
        assert_eq!(
            render(&r),
            "✓ VIP 198.18.0.100: fine\n\
             ✗ VIP 198.18.0.100: stolen\n    \
             fix: on 198.18.0.12: xdpvs rs-setup --vip 198.18.0.100 --apply --persist\n\
             2 checks: 1 passed, 1 failed\n"
        );
        assert!(render(&CheckReport::default()).starts_with("nothing to check"));
    }
}
