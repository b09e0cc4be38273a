//! The `xdpvs` binary as a user runs it.

use std::process::Command;

fn xdpvs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xdpvs"))
        .args(args)
        .output()
        .expect("xdpvs runs")
}

#[test]
fn selfcheck_passes_for_every_scheduler() {
    for s in ["rr", "wrr", "lc", "wlc", "sh", "mh"] {
        let out = xdpvs(&["selfcheck", "-s", s, "-w", "3,2,1", "-n", "60"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{s}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("self-check passed"), "{s}: {stdout}");
    }
}

#[test]
fn wrr_split_is_reported_exactly() {
    let out = xdpvs(&["selfcheck", "-s", "wrr", "-w", "3,2,1", "-n", "60"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (addr, conns) in [
        ("198.18.0.11:80", 30),
        ("198.18.0.12:80", 20),
        ("198.18.0.13:80", 10),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(addr))
            .expect("a line per real server");
        assert!(line.contains(&format!("conns {conns} ")), "{line}");
    }
}

#[test]
fn bad_input_is_one_clear_error() {
    let out = xdpvs(&["selfcheck", "-s", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown scheduler 'nope'"), "{err}");
    let out = xdpvs(&["selfcheck", "-w", "70000"]);
    assert!(!out.status.success());
}

#[test]
fn man_page_and_completions_come_from_the_command_line_definitions() {
    let man = xdpvs(&["manpage"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.starts_with(".ie") && text.contains(".TH xdpvs 8"),
        "{text}"
    );
    for word in [
        r"\-\-check\-interval",
        r"\-\-sorry\-server",
        ".SH \"XDPVS RUN\"",
        r"\-\-keepalived",
        r"\-\-metrics",
    ] {
        assert!(text.contains(word), "man page lacks {word}");
    }
    for (shell, word) in [
        ("bash", "--check-interval"),
        ("zsh", "--keepalived"),
        ("fish", "sorry-server"),
    ] {
        let out = xdpvs(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(word),
            "{shell} lacks {word}"
        );
    }
    let bad = xdpvs(&["completions", "cmd.exe"]);
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}
