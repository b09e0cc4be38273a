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
    for s in [
        "rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed", "nq", "lblc", "lblcr", "fo", "ovf",
        "twos",
    ] {
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

/// `manpage --all DIR` writes xdpvs(8) with the sections a man page has, and a page for
/// every page it refers to; the systemd unit, as its header installs things, passes
/// `systemd-analyze verify` (which looks its man page up).
#[test]
fn man_pages_are_whole_and_the_unit_verifies() {
    let dir = std::env::temp_dir().join(format!("xdpvs-man-{}", std::process::id()));
    let man8 = dir.join("man/man8");
    std::fs::create_dir_all(&man8).expect("dir");
    let out = xdpvs(&["manpage", "--all", &man8.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(man8.join("xdpvs.8")).expect("xdpvs.8");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH \"EXIT STATUS\"",
        ".SH SIGNALS",
        ".SH FILES",
        ".SH EXAMPLES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(main.contains(section), "xdpvs.8 lacks {section}");
    }
    let see_also = main.split(".SH \"SEE ALSO\"").nth(1).expect("see also");
    for page in see_also
        .split([',', ';', ' ', '\n'])
        .filter_map(|p| p.trim().strip_suffix("(8)"))
    {
        let file = man8.join(format!("{}.8", page.replace("\\-", "-")));
        assert!(
            file.exists(),
            "{} is referred to but not written",
            file.display()
        );
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/systemd/xdpvs.service"
    ))
    .expect("unit")
    .replace("/usr/local/bin/xdpvs", env!("CARGO_BIN_EXE_xdpvs"));
    assert!(unit.contains("xdpvs manpage --all /usr/local/share/man/man8"));
    let path = dir.join("xdpvs.service");
    std::fs::write(&path, unit).expect("unit");
    match Command::new("systemd-analyze")
        .args(["verify", &path.to_string_lossy()])
        .env("MANPATH", dir.join("man"))
        .output()
    {
        Ok(v) => assert!(
            v.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ),
        Err(e) => xdpvs_testkit::cannot_run(
            "systemd-analyze verify",
            &format!("{e} (Debian's systemd; bash .ci/setup)"),
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
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
        // Values: schedulers, --on-failure, --xdp-mode.
        ("bash", "lblcr fo ovf twos"),
        ("fish", "inhibit"),
        ("zsh", "generic"),
    ] {
        let out = xdpvs(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(word),
            "{shell} lacks {word}"
        );
    }
    // -i offers this host's interfaces.
    let iface = std::fs::read_dir("/sys/class/net")
        .expect("interfaces")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n != "lo");
    if let Some(i) = iface {
        let out = xdpvs(&["completions", "bash"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&i), "no {i}");
    }
    let bad = xdpvs(&["completions", "cmd.exe"]);
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}

/// ipvsadm's exit statuses for a command line: 255 without a command or with an unknown
/// option (its `Try ipvsadm -h` and popt exits), 2 for an option misused.
#[test]
fn command_line_errors_exit_as_ipvsadm_does() {
    for (args, code, said) in [
        (&["-n"][..], 255, "no command given"),
        (&["--bogus"][..], 255, "--bogus: unknown option"),
        (
            &["-A", "-t", "198.18.0.100:80", "--bogus"][..],
            255,
            "--bogus: unknown option",
        ),
        (
            &["-A", "-t", "198.18.0.100:80", "-r", "198.18.0.11"][..],
            2,
            "Illegal 'real-server' option with the 'add-service' command",
        ),
    ] {
        let out = xdpvs(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.starts_with("xdpvs: ") && err.contains(said),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn the_version_is_in_ipvsadms_form() {
    for flag in ["-v", "--version"] {
        let out = xdpvs(&[flag]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!(
                "xdpvs v{} (compiled with clap and IPVS v1.2.1)\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}

/// Whether this process runs as root (the director's start-up checks need it).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Start-up refusals name what to change: a missing capability by its name (AF_XDP
/// sockets need CAP_NET_RAW), and the loopback interface.
#[test]
fn start_up_names_the_missing_capability_and_refuses_lo() {
    if !root() {
        xdpvs_testkit::cannot_run("start-up checks", "not root");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_xdpvs");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw", exe])
        .args(["run", "-i", "lo", "--socket", "/tmp/xdpvs-cli-test.sock"])
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("xdpvs run lacks CAP_NET_RAW (open AF_XDP sockets"),
        "{err}"
    );
    let out = xdpvs(&["run", "-i", "lo", "--socket", "/tmp/xdpvs-cli-test.sock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("lo is the loopback interface"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("xdpvs:")).count(),
        1,
        "{err}"
    );
}

/// `config-test` checks a keepalived.conf (includes, conditional lines, parameters,
/// groups) or a saved table without a director: the table in `-S -n` form and exit 0,
/// or the line `run` would fail with and exit 1.
#[test]
fn config_test_prints_the_table_a_file_builds_or_the_line_that_refuses_it() {
    let dir = std::env::temp_dir().join(format!("xdpvs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).expect("a directory");
    let main = dir.join("keepalived.conf");
    std::fs::write(
        &main,
        "global_defs {\n  router_id lb\n}\n$NET=198.18.0\ninclude conf.d/*.conf\n",
    )
    .expect("written");
    std::fs::write(
        dir.join("conf.d/web.conf"),
        "virtual_server_group web {\n  ${NET}.100-101 80\n}\nvirtual_server group web {\n  lb_algo wlc\n  lb_kind DR\n  @lb1 real_server ${NET}.11 80 {\n  @lb1 }\n  @^lb1 real_server ${NET}.12 80 {\n  @^lb1 }\n}\n",
    )
    .expect("written");
    let path = main.to_str().expect("utf-8");
    let out = xdpvs(&["config-test", "--keepalived", path, "--config-id", "lb1"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "-A -t 198.18.0.100:80 -s wlc\n-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1\n\
         -A -t 198.18.0.101:80 -s wlc\n-a -t 198.18.0.101:80 -r 198.18.0.11:80 -g -w 1\n"
    );
    let other = xdpvs(&["config-test", "--keepalived", path, "--config-id", "lb2"]);
    assert!(String::from_utf8_lossy(&other.stdout).contains("-r 198.18.0.12:80"));
    // What it printed is a table `--restore` takes.
    let rules = dir.join("rules");
    std::fs::write(&rules, &stdout).expect("written");
    let again = xdpvs(&["config-test", "--restore", rules.to_str().expect("utf-8")]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    // A refusal in an included file: that file's line, exit 1.
    std::fs::write(
        dir.join("conf.d/zz.conf"),
        "virtual_server 198.18.0.102 80 {\n  lb_algo nope\n}\n",
    )
    .expect("written");
    let bad = xdpvs(&["config-test", "--keepalived", path]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "xdpvs: {}:2: virtual_server 198.18.0.102 80: lb_algo nope",
            dir.join("conf.d/zz.conf").display()
        )),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The corpus of keepalived.conf files (`tests/keepalived-corpus`): each loads with the
/// table its `.expect` file holds, or is refused with the line it holds.
#[test]
fn the_keepalived_corpus_loads_or_is_refused_as_expected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived-corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} files", files.len());
    let mut loaded = 0;
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("a name");
        let out = Command::new(env!("CARGO_BIN_EXE_xdpvs"))
            .args(["config-test", "--keepalived", name, "--config-id", "lb1"])
            .current_dir(&dir)
            .output()
            .expect("xdpvs runs");
        let want = std::fs::read_to_string(f.with_extension("expect")).expect("its .expect");
        let got = if out.status.success() {
            loaded += 1;
            String::from_utf8_lossy(&out.stdout).to_string()
        } else {
            assert_eq!(out.status.code(), Some(1), "{name}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr
                .lines()
                .find_map(|l| l.strip_prefix("xdpvs: "))
                .unwrap_or_default();
            format!("refused: {line}\n")
        };
        assert_eq!(got, want, "{name}");
    }
    eprintln!("{loaded} of {} corpus files load", files.len());
}
