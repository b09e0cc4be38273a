//! End to end, as root: a real LVS-DR cluster in network namespaces, the director on
//! AF_XDP, real clients (curl, ab, arping) and real HTTP servers.
//!
//! Skips (with a message) when not root or when the kernel lacks AF_XDP; under CI=true
//! that is a failure instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use xdpvs_testkit::lab::{self, Lab, LabSpec, CLIENT_IP, DIRECTOR_IP, VIP, VIP6};

/// One lab at a time: each runs a director that spins under load, on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lab_or_skip() -> Option<(MutexGuard<'static, ()>, Lab)> {
    lab_of_or_skip(LabSpec::default())
}

/// [`lab_or_skip`] of the lab `spec` describes.
fn lab_of_or_skip(spec: LabSpec) -> Option<(MutexGuard<'static, ()>, Lab)> {
    if let Err(why) = lab::available() {
        xdpvs_testkit::cannot_run("end-to-end test", &why);
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs")), spec).expect("lab builds");
    Some((guard, lab))
}

/// Where a test and the client it runs meet: files `<path>.<mark>` in the temporary
/// directory (`ready`, `go`, `stopped`, `restarted`, `end`), none there at first; the
/// guard removes them again when the test ends.
fn marks(name: &str) -> (String, Marks) {
    let path = std::env::temp_dir().join(format!("xdpvs-e2e-{name}-{}", std::process::id()));
    let m = Marks(path.to_str().expect("utf-8").to_string());
    m.clear();
    (m.0.clone(), m)
}

/// See [`marks`].
struct Marks(String);

impl Marks {
    fn clear(&self) {
        for m in ["ready", "go", "stopped", "restarted", "end"] {
            let _ = std::fs::remove_file(format!("{}.{m}", self.0));
        }
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        self.clear();
    }
}

fn x(lab: &Lab, args: &str) -> String {
    lab.xdpvs(&args.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
}

fn configure_rr(lab: &Lab) {
    for c in [
        "-C",
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g",
        "-a -t 198.18.0.100:80 -r 198.18.0.12 -g",
        "-a -t 198.18.0.100:80 -r 198.18.0.13 -g",
    ] {
        x(lab, c);
    }
    lab.wait_resolved().expect("real servers resolve");
}

fn get(lab: &Lab) -> String {
    lab.curl(&format!("http://{VIP}/"))
        .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
}

/// Asserts that `answers` go round rs1, rs2, rs3 in order (rr over three real servers).
fn assert_rotation(answers: &[String]) {
    let first = answers
        .iter()
        .position(|a| a == "rs1")
        .expect("rs1 answers");
    for (i, a) in answers.iter().enumerate() {
        let want = format!("rs{}", (i + 3 - first % 3) % 3 + 1);
        assert_eq!(a, &want, "request {i} in {answers:?}");
    }
}

fn counts(answers: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.clone()).or_default() += 1;
    }
    m
}

#[test]
fn lvs_dr_end_to_end() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    let director_mac = lab.mac("d").expect("director MAC");
    configure_rr(&lab);
    let listing = x(&lab, "-Ln");
    assert!(
        listing.starts_with("IP Virtual Server version"),
        "{listing}"
    );
    assert!(listing.contains("TCP  198.18.0.100:80 rr\n"), "{listing}");
    assert!(
        listing.contains("  -> 198.18.0.13:80               Route   1      0          0"),
        "{listing}"
    );

    // 30 sequential requests: each real server exactly 10 times, in rotation.
    let answers: Vec<String> = (0..30).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    assert_eq!(
        counts(&answers).values().copied().collect::<Vec<_>>(),
        [10, 10, 10]
    );

    // ARP: the client's neighbour entry for the VIP is the director; no real server
    // ever answers ARP for it.
    let neigh = lab
        .exec(&lab.ns("c"), &["ip", "neigh", "show", &VIP.to_string()])
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        neigh.contains(&director_mac),
        "client's entry {neigh:?}, director {director_mac}"
    );
    // ARP for the VIP: only the director answers, every time.
    let answers = arp_answers(&lab);
    assert_eq!(
        answers.into_iter().collect::<Vec<_>>(),
        [(director_mac.clone(), 3)],
        "who answers ARP for the VIP"
    );

    // wrr 3,2,1 over 60 requests: 30/20/10.
    for c in [
        "-E -t 198.18.0.100:80 -s wrr",
        "-e -t 198.18.0.100:80 -r 198.18.0.11 -w 3",
        "-e -t 198.18.0.100:80 -r 198.18.0.12 -w 2",
        "-e -t 198.18.0.100:80 -r 198.18.0.13 -w 1",
    ] {
        x(&lab, c);
    }
    let answers: Vec<String> = (0..60).map(|_| get(&lab)).collect();
    let c = counts(&answers);
    assert_eq!((c["rs1"], c["rs2"], c["rs3"]), (30, 20, 10), "{answers:?}");

    // One long-lived connection (HTTP keep-alive) stays on one real server, though rr
    // would rotate new connections.
    x(&lab, "-E -t 198.18.0.100:80 -s rr");
    let url = format!("http://{VIP}/");
    let many: Vec<&str> = std::iter::repeat_n(url.as_str(), 20).collect();
    let mut args = vec!["curl", "-sS", "--max-time", "10"];
    args.extend(many);
    let out = lab.exec(&lab.ns("c"), &args).expect("curl");
    let bodies: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(bodies.len(), 20, "{bodies:?}");
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "one connection moved: {bodies:?}"
    );

    // A load run with ab; replies bypass the director.
    let (c_tx0, d_rx0, d_tx0) = (
        lab.counter("c", "tx_packets").expect("counter"),
        lab.counter("d", "rx_packets").expect("counter"),
        lab.counter("d", "tx_packets").expect("counter"),
    );
    let ab = lab
        .exec(
            &lab.ns("c"),
            &["ab", "-q", "-n", "5000", "-c", "50", "-s", "20", &url],
        )
        .expect("ab runs");
    let ab_out = String::from_utf8_lossy(&ab.stdout).to_string();
    assert!(
        ab.status.success(),
        "ab failed: {ab_out}{}",
        String::from_utf8_lossy(&ab.stderr)
    );
    assert!(ab_out.contains("Complete requests:      5000"), "{ab_out}");
    assert!(ab_out.contains("Failed requests:        0"), "{ab_out}");
    let c_tx = lab.counter("c", "tx_packets").expect("counter") - c_tx0;
    let d_rx = lab.counter("d", "rx_packets").expect("counter") - d_rx0;
    let d_tx = lab.counter("d", "tx_packets").expect("counter") - d_tx0;
    eprintln!("ab: client sent {c_tx} frames; director received {d_rx}, transmitted {d_tx}");
    let near = |a: u64, b: u64| a.abs_diff(b) <= b / 100 + 20;
    assert!(c_tx > 5000 * 4, "the client sent {c_tx} frames");
    assert!(
        near(d_tx, c_tx),
        "director sent {d_tx} frames for {c_tx} client frames"
    );
    assert!(
        near(d_rx, c_tx),
        "director received {d_rx} frames for {c_tx} client frames: replies crossed it"
    );
    let reply_bytes = lab.counter("r1", "tx_bytes").expect("counter");
    assert!(reply_bytes > 0);

    // The director's own address still works through the kernel.
    let ping = lab
        .exec(
            &lab.ns("c"),
            &["ping", "-c", "2", "-W", "2", &DIRECTOR_IP.to_string()],
        )
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping the director: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    lab.start_http("d", "director", 8080)
        .expect("http on the director");
    assert_eq!(
        lab.curl(&format!("http://{DIRECTOR_IP}:8080/"))
            .expect("curl"),
        "director"
    );

    // SIGTERM: clean stop, no XDP program left, and a restart works.
    let status = lab.stop_director("TERM").expect("stops");
    assert!(status.success(), "exit status {status}");
    let link = lab
        .exec(&lab.ns("d"), &["ip", "link", "show", "dev", "eth0"])
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(
        !link.contains("xdp"),
        "XDP still attached after SIGTERM: {link}"
    );
    lab.start_director(&[]).expect("restart after SIGTERM");
    configure_rr(&lab);
    assert!(get(&lab).starts_with("rs"));

    // SIGKILL: a restart works without any manual cleanup.
    lab.stop_director("KILL").expect("killed");
    lab.start_director(&[]).expect("restart after SIGKILL");
    configure_rr(&lab);
    let answers: Vec<String> = (0..3).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).len(), 3, "{answers:?}");
}

#[test]
fn bad_commands_are_one_line_errors_and_change_nothing() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    // The ready line names the socket a command must use.
    let try_it = format!("(try: xdpvs --socket {} -Ln)", lab.socket().display());
    assert!(
        lab.director_log().contains(&try_it),
        "{}",
        lab.director_log()
    );
    // SIGHUP without a file to read again says so.
    let pid = lab.director().expect("running").id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(
        log_shows(&lab, "SIGHUP: nothing to read again", 1, 5),
        "{}",
        lab.director_log()
    );
    // `xdpvs drain` of the only director (no --announce) asks for --yes, and changes
    // nothing.
    let e = lab.xdpvs(&["drain"]).expect_err("refused").to_string();
    assert!(
        e.contains("this director does not --announce") && e.contains("xdpvs drain --yes"),
        "{e}"
    );
    assert!(lab
        .director()
        .expect("running")
        .try_wait()
        .expect("status")
        .is_none());
    configure_rr(&lab);
    let before = x(&lab, "-Ln");
    assert_refused_in_one_line(
        &lab,
        &[
            (
                "-a -t 198.18.0.100:80 -r 198.18.0.14 -g -m",
                "multiple forwarding methods",
            ),
            (
                "-a -t 198.18.0.100:80 -r 198.18.0.14 -i --tun-type gue",
                "You need to supply the 'tun-port' option for the 'gue' tunnel type",
            ),
            (
                "-A -t 198.18.0.100:80 -s rr",
                "Service already exists (TCP 198.18.0.100:80)",
            ),
            (
                "-a -t 198.18.0.100:81 -r 198.18.0.14",
                "Service not defined (TCP 198.18.0.100:81)",
            ),
            (
                "-a -t 198.18.0.100:80 -r 198.18.0.11",
                "Destination already exists (198.18.0.11 in TCP 198.18.0.100:80)",
            ),
            (
                "-d -t 198.18.0.100:80 -r 198.18.0.14",
                "No such destination (198.18.0.14 in TCP 198.18.0.100:80)",
            ),
            (
                "-D -t 198.18.0.100:81",
                "No such service (TCP 198.18.0.100:81)",
            ),
            ("-A -t 198.18.0.100:80 -s nope", "unknown scheduler"),
        ],
    );
    // What ipvsadm's kernel refuses exits as ipvsadm does (255); xdpvs's own refusals 1.
    for (args, code) in [
        ("-A -t 198.18.0.100:80 -s rr", 255),
        ("-D -t 198.18.0.100:81", 255),
        ("-a -t 198.18.0.100:80 -r 198.19.0.5", 1),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdpvs"))
            .args(args.split_whitespace())
            .env("XDPVS_SOCKET", lab.socket())
            .output()
            .expect("xdpvs runs");
        assert_eq!(out.status.code(), Some(code), "{args}");
    }
    assert_eq!(x(&lab, "-Ln"), before);
}

/// A VIP is never an address a host holds: the director's own, a real server's, or a
/// neighbour's. Refused in one line, with nothing advertised: the client's neighbour
/// entry for the real server still points at the real server.
#[test]
fn a_vip_that_a_host_holds_is_refused_and_no_neighbour_cache_is_poisoned() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    let c = lab.ns("c");
    // The client knows rs1 and the director; the director knows the client.
    lab.sh(
        &c,
        "ping -c 1 -W 2 198.18.0.11 && ping -c 1 -W 2 198.18.0.1",
    )
    .expect("pings");
    let rs1 = lab.mac("r1").expect("rs1 MAC");
    let client_knows_rs1 = |lab: &Lab| {
        let out = lab.sh(&c, "ip neigh show 198.18.0.11").expect("ip neigh");
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    assert!(
        client_knows_rs1(&lab).contains(&rs1),
        "{}",
        client_knows_rs1(&lab)
    );
    let before = x(&lab, "-Ln");
    assert_refused_in_one_line(
        &lab,
        &[
            (
                "-A -t 198.18.0.11:80 -s rr",
                "VIP 198.18.0.11: it is a real server's address",
            ),
            (
                "-A -t 198.18.0.1:80 -s rr",
                "VIP 198.18.0.1: it is the director's own address",
            ),
            (
                "-A -t 198.18.0.2:80 -s rr",
                "VIP 198.18.0.2: a host on the LAN holds it (the neighbour table has it at",
            ),
        ],
    );
    // The same in a restore: all or nothing.
    let e = lab
        .xdpvs_with_input(
            &["-R"],
            "-A -t 198.18.0.200:80 -s rr\n-A -t 198.18.0.12:80 -s rr\n",
        )
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("line 2: VIP 198.18.0.12: it is a real server's address"),
        "{e}"
    );
    assert_eq!(x(&lab, "-Ln"), before);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        client_knows_rs1(&lab).contains(&rs1),
        "the client's entry for rs1 moved: {}",
        client_knows_rs1(&lab)
    );
}

/// The control socket is the root's; a monitoring group gets a read-only socket: its
/// members list the table and are refused changes, each refusal saying why; a user
/// without access is told so, not "cannot reach the director".
#[test]
fn a_read_only_socket_serves_a_monitoring_group_and_refuses_changes() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    let ro = std::env::temp_dir().join(format!("{}-ro.sock", lab.ns("d")));
    let ro_path = ro.to_string_lossy().to_string();
    lab.start_director(&["--read-only-socket", &ro_path, "--read-only-group", "65534"])
        .expect("director starts");
    configure_rr(&lab);
    // As nobody (uid and gid 65534): the 0600 control socket is not theirs.
    let as_nobody = |socket: &str, args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_xdpvs"))
            .args(["--socket", socket])
            .args(args)
            .output()
            .expect("setpriv runs")
    };
    let main = lab.socket().to_string_lossy().to_string();
    let out = as_nobody(&main, &["-Ln"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("you may not use the director's control socket"),
        "{err}"
    );
    let out = as_nobody(&ro_path, &["-Ln"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), x(&lab, "-Ln"));
    let out = as_nobody(&ro_path, &["-D", "-t", "198.18.0.100:80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("this control socket answers questions only"),
        "{err}"
    );
    assert!(
        x(&lab, "-Ln").contains("TCP  198.18.0.100:80 rr"),
        "nothing changed"
    );
    let meta = std::fs::metadata(&ro).expect("the read-only socket");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.gid()),
        (0o660, 65534)
    );
}

/// Each command line of `cases` is refused with one line that contains its text.
fn assert_refused_in_one_line(lab: &Lab, cases: &[(&str, &str)]) {
    for &(args, want) in cases {
        let e = lab
            .xdpvs(&args.split_whitespace().collect::<Vec<_>>())
            .expect_err(args)
            .to_string();
        assert!(e.contains(want), "{args}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args}: one line, got {e:?}");
    }
}

/// Waits up to `secs` for the director's log to contain `what` `times` times.
fn log_shows(lab: &Lab, what: &str, times: usize, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if lab.director_log().matches(what).count() >= times {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn neighbour_changes_reach_the_director_through_rtnetlink() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    // A core the director cannot be pinned to is an error at start, not a log line.
    let e = lab
        .start_director(&["--cores", "99"])
        .expect_err("no core 99")
        .to_string();
    assert!(e.contains("cannot pin worker 0 to core 99"), "{e}");
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    let d = lab.ns("d");
    // A new MAC for rs1 in the director's neighbour table: seen without any probe (the
    // next full probe is 30 s away).
    lab.sh(
        &d,
        "ip neigh replace 198.18.0.11 lladdr 02:00:00:00:99:99 dev eth0 nud reachable",
    )
    .expect("neighbour changed");
    assert!(
        log_shows(
            &lab,
            "real server 198.18.0.11 is at 02:00:00:00:99:99",
            1,
            3
        ),
        "{}",
        lab.director_log()
    );
    // The entry deleted: rs1 gets no new traffic, is probed, and resolves to its real MAC.
    lab.sh(&d, "ip neigh del 198.18.0.11 dev eth0")
        .expect("neighbour deleted");
    assert!(
        log_shows(&lab, "real server 198.18.0.11 does not answer ARP", 1, 3),
        "{}",
        lab.director_log()
    );
    // Once when first resolved, once again now.
    let rs1 = lab.mac("r1").expect("rs1 MAC");
    assert!(
        log_shows(&lab, &format!("real server 198.18.0.11 is at {rs1}"), 2, 5),
        "{}",
        lab.director_log()
    );
    lab.wait_resolved().expect("resolved again");
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).get("rs1"), Some(&2), "{answers:?}");
}

#[test]
fn save_clear_restore_is_identical_and_a_restart_restores() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    for c in [
        "-A -t 198.18.0.100:80 -s wrr",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 3",
        "-a -t 198.18.0.100:80 -r 198.18.0.12 -g -w 2",
        "-a -t 198.18.0.100:80 -r 198.18.0.13 -g -w 1",
        "-A -u 198.18.0.100:53 -s sh -p 600 -M 24",
        "-a -u 198.18.0.100:53 -r 198.18.0.12 -g",
    ] {
        x(&lab, c);
    }
    let saved = x(&lab, "-S -n");
    assert_eq!(
        saved,
        "-A -t 198.18.0.100:80 -s wrr\n\
         -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 3\n\
         -a -t 198.18.0.100:80 -r 198.18.0.12:80 -g -w 2\n\
         -a -t 198.18.0.100:80 -r 198.18.0.13:80 -g -w 1\n\
         -A -u 198.18.0.100:53 -s sh -p 600 -M 255.255.255.0\n\
         -a -u 198.18.0.100:53 -r 198.18.0.12:53 -g -w 1\n"
    );
    x(&lab, "-C");
    assert!(!x(&lab, "-Ln").contains("198.18.0.100"), "cleared");
    lab.xdpvs_with_input(&["-R"], &saved).expect("restored");
    assert_eq!(
        x(&lab, "-S -n"),
        saved,
        "save, clear, restore, save: identical"
    );

    // The weights hold after the restore: wrr 3,2,1 over 60 requests.
    lab.wait_resolved().expect("resolved");
    let answers: Vec<String> = (0..60).map(|_| get(&lab)).collect();
    let c = counts(&answers);
    assert_eq!(
        (c.get("rs1"), c.get("rs2"), c.get("rs3")),
        (Some(&30), Some(&20), Some(&10)),
        "{c:?}"
    );

    // A restore with a bad line changes nothing and names the line.
    let e = lab
        .xdpvs_with_input(
            &["-R"],
            "-C\n-A -t 198.18.0.100:81 -s rr\n-a -t 198.18.0.100:82 -r 198.18.0.11 -g\n",
        )
        .expect_err("no such service on line 3")
        .to_string();
    assert!(
        e.contains(
            "line 3: Service not defined (TCP 198.18.0.100:82); nothing of the restore was applied"
        ),
        "{e}"
    );
    assert_eq!(x(&lab, "-S -n"), saved);

    // Timeouts: --set and -L --timeout.
    assert_eq!(
        x(&lab, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    x(&lab, "--set 100 0 50");
    assert_eq!(
        x(&lab, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 100 120 50\n"
    );

    // A restarted director starts with the saved table.
    let file = std::env::temp_dir().join(format!("xdpvs-e2e-{}.rules", std::process::id()));
    std::fs::write(&file, &saved).expect("rules written");
    lab.stop_director("TERM").expect("stopped");
    let started = lab.start_director(&["--restore", file.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&file);
    started.expect("director restarts with --restore");
    assert_eq!(x(&lab, "-S -n"), saved, "restored at start");
    lab.wait_resolved().expect("resolved");
    assert_eq!(get(&lab).len(), 3, "answers after the restart");
}

fn json(lab: &Lab, args: &str) -> serde_json::Value {
    let out = x(lab, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args}: {e}: {out}"))
}

/// Runs ab in the client's namespace (with `-k`: keep-alive, many requests per
/// connection); its report.
fn ab(lab: &Lab, requests: u32, concurrency: u32, keepalive: bool) -> String {
    let url = format!("http://{VIP}/");
    let (n, c) = (requests.to_string(), concurrency.to_string());
    let mut args = vec!["ab", "-q", "-n", &n, "-c", &c, "-s", "20"];
    if keepalive {
        args.push("-k");
    }
    args.push(&url);
    let out = lab.exec(&lab.ns("c"), &args).expect("ab runs");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ab failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// A TCP counter of the client's kernel (/proc/net/snmp in its namespace).
fn client_tcp(lab: &Lab, name: &str) -> u64 {
    snmp(lab, "c", "Tcp", name)
}

#[test]
fn stats_rates_and_connections_agree_with_the_load() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    x(&lab, "-Z");
    let stats = json(&lab, "-Ln --stats --json");
    assert_eq!(stats["services"][0]["stats"]["conns"], 0, "zeroed");

    let segs = |lab: &Lab| client_tcp(lab, "OutSegs") + client_tcp(lab, "RetransSegs");
    let (opens0, segs0) = (client_tcp(&lab, "ActiveOpens"), segs(&lab));
    let report = ab(&lab, 1000, 10, false);
    assert!(report.contains("Complete requests:      1000"), "{report}");
    // ab opens a few connections more than it has requests for (it closes them unused
    // at the end): count what the client's kernel opened and sent (every TCP segment of
    // the client goes to the VIP here).
    let opens = client_tcp(&lab, "ActiveOpens") - opens0;
    let sent = segs(&lab) - segs0;
    assert!(
        (1000..=1010).contains(&opens),
        "{opens} connections for 1000 requests"
    );

    // --stats: the connections the client opened (to within the few that ab opens as
    // it exits, racing the counters' reading), and the segments it sent.
    let text = x(&lab, "-Ln --stats --exact");
    let stats = json(&lab, "-Ln --stats --json");
    let svc = &stats["services"][0];
    let conns = svc["stats"]["conns"].as_u64().expect("number");
    assert!(
        conns >= 1000 && conns.abs_diff(opens) <= opens / 100,
        "{conns} connections scheduled for {opens} opened\n{text}"
    );
    let inpkts = svc["stats"]["in_pkts"].as_u64().expect("number");
    assert!(
        inpkts.abs_diff(sent) <= sent / 100,
        "InPkts {inpkts} for {sent} segments the client sent\n{text}"
    );
    let per_real: Vec<u64> = svc["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| r["stats"]["conns"].as_u64().expect("number"))
        .collect();
    assert_eq!(per_real.iter().sum::<u64>(), conns, "{text}");
    assert!(
        per_real.iter().all(|&c| c.abs_diff(conns / 3) <= 1),
        "rr: {per_real:?}"
    );
    assert!(
        text.contains(&format!("TCP  {VIP}:80")) && text.contains("Conns   InPkts  OutPkts"),
        "{text}"
    );

    // --rate: once the estimator took a sample (every 2 s) that saw the load.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let rate = json(&lab, "-Ln --rate --json");
    let r = &rate["services"][0]["rate"];
    assert!(
        r["cps"].as_u64() > Some(0) && r["in_pps"].as_u64() > Some(0),
        "{rate:#}"
    );
    assert_eq!(r["out_pps"], 0);
    assert!(x(&lab, "-Ln --rate").contains("CPS    InPPS   OutPPS"));

    // -c: the load's connections, each to one of the real servers.
    let listing = json(&lab, "-Lnc --json");
    let rows = listing["connections"].as_array().expect("connections");
    if rows.len() as u64 != conns {
        // What the listing held, and what the director said meanwhile, to tell an entry
        // that expired or was replaced from one the listing missed.
        let mut states = std::collections::BTreeMap::new();
        for r in rows {
            *states
                .entry(r["state"].as_str().unwrap_or("?"))
                .or_insert(0) += 1;
        }
        panic!(
            "one entry per connection scheduled: {} listed for {conns} scheduled \
             ({opens} opened by the client); states {states:?}; listed again: {}\n{}\n\
             {text}\ndirector log:\n{}",
            rows.len(),
            json(&lab, "-Lnc --json")["connections"]
                .as_array()
                .map_or(0, Vec::len),
            x(&lab, "-Ln"),
            lab.director_log()
        );
    }
    let mut sources: Vec<&str> = rows.iter().filter_map(|r| r["source"].as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(sources.len(), rows.len(), "no connection listed twice");
    let reals: Vec<String> = (1..=3).map(|n| format!("{}:80", lab::real_ip(n))).collect();
    for r in rows {
        assert_eq!(r["virtual"], format!("{VIP}:80"));
        assert!(r["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.18.0.2:")));
        assert!(reals.iter().any(|d| r["destination"] == d.as_str()), "{r}");
    }
    let text = x(&lab, "-Lnc");
    assert!(
        text.starts_with("IPVS connection entries\npro expire state"),
        "{text}"
    );
    assert_eq!(
        text.lines().count() as u64,
        conns + 2,
        "two title lines and a line per entry"
    );

    // --set changes what -c shows as expire (FIN_WAIT entries follow the tcpfin timeout).
    let fin_wait = |v: &serde_json::Value| -> Vec<u64> {
        v["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|r| r["state"] == "FIN_WAIT")
            .map(|r| r["expire"].as_u64().expect("number"))
            .collect()
    };
    let before = fin_wait(&listing);
    assert!(!before.is_empty(), "the load's connections end in FIN_WAIT");
    assert!(before.iter().all(|&e| e > 30), "{before:?}");
    x(&lab, "--set 100 30 50");
    let after = fin_wait(&json(&lab, "-Lnc --json"));
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|&e| e <= 30), "{after:?}");

    // -Z: counters and rates from zero again.
    x(&lab, "-Z -t 198.18.0.100:80");
    let stats = json(&lab, "-Ln --stats --json");
    assert_eq!(stats["services"][0]["stats"]["conns"], 0);
    assert_eq!(stats["services"][0]["rate"]["cps"], 0);
}

/// `run --offload`: the XDP program forwards the established connections' segments
/// itself, and what the operator sees is what it is without it: every segment the
/// client sent counted once in --stats and the metrics, the connections listed, and the
/// flows back with the workers once they end.
#[test]
fn offload_forwards_established_flows_in_xdp_and_the_operator_sees_no_difference() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&["--offload", "--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    configure_rr(&lab);
    x(&lab, "-Z");
    let segs = |lab: &Lab| client_tcp(lab, "OutSegs") + client_tcp(lab, "RetransSegs");
    let (opens0, segs0) = (client_tcp(&lab, "ActiveOpens"), segs(&lab));
    // Keep-alive: 3000 requests over 6 connections, most segments after the handshake.
    let report = ab(&lab, 3000, 6, true);
    assert!(report.contains("Complete requests:      3000"), "{report}");
    assert!(report.contains("Failed requests:        0"), "{report}");
    let opens = client_tcp(&lab, "ActiveOpens") - opens0;
    let sent = segs(&lab) - segs0;
    let (m, text) = scrape(&lab);
    let fast = metric(
        &m,
        "xdpvs_worker_forwarded_packets_total",
        &[("worker", "xdp")],
    );
    assert!(
        fast >= sent as f64 * 0.8,
        "the XDP program forwarded {fast} of the {sent} segments\n{}",
        lab.director_log()
    );
    // Every segment counted once, whoever forwarded it.
    let stats = json(&lab, "-Ln --stats --json");
    let svc = &stats["services"][0];
    let inpkts = svc["stats"]["in_pkts"].as_u64().expect("number");
    assert!(
        inpkts.abs_diff(sent) <= sent / 100,
        "InPkts {inpkts} for {sent} segments the client sent\n{text}"
    );
    let per_real: u64 = svc["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| r["stats"]["in_pkts"].as_u64().expect("number"))
        .sum();
    assert_eq!(per_real, inpkts);
    assert_eq!(
        metric(&m, "xdpvs_service_packets_total", &[]) as u64,
        inpkts,
        "{text}"
    );
    let rx = metric(&m, "xdpvs_worker_received_packets_total", &[]);
    let accounted = metric(&m, "xdpvs_worker_forwarded_packets_total", &[])
        + metric(&m, "xdpvs_worker_replies_total", &[])
        + metric(&m, "xdpvs_worker_dropped_packets_total", &[])
        + metric(&m, "xdpvs_worker_unhandled_packets_total", &[]);
    assert_eq!(rx, accounted, "{text}");
    // -c: one entry per connection, each ended (its FIN crossed a worker).
    let listing = json(&lab, "-Lnc --json");
    let rows = listing["connections"].as_array().expect("connections");
    assert_eq!(rows.len() as u64, opens, "{listing:#}");
    assert!(rows.iter().all(|r| r["state"] == "FIN_WAIT"), "{listing:#}");
    // Ended connections are the workers' again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (m, text) = scrape(&lab);
        if metric(&m, "xdpvs_offload_flows", &[]) == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flows left in the XDP map after their FIN\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn live_changes_under_load_never_fail_a_request() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    for c in [
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g",
        "-a -t 198.18.0.100:80 -r 198.18.0.12 -g",
    ] {
        x(&lab, c);
    }
    lab.wait_resolved().expect("resolved");
    let packets = |lab: &Lab| {
        json(lab, "-Ln --stats --json")["services"][0]["stats"]["in_pkts"]
            .as_u64()
            .expect("number")
    };
    // Two loads at once: ab as the issue runs it (a connection per request) and ab -k
    // (4000 requests per connection, so connections are open to rs1 when it is removed).
    // Each change waits for the load to have moved on by some packets.
    let steps = [
        (2000, "-e -t 198.18.0.100:80 -r 198.18.0.12 -w 3"),
        (4000, "-a -t 198.18.0.100:80 -r 198.18.0.13 -g -w 2"),
        (6000, "-d -t 198.18.0.100:80 -r 198.18.0.11"),
        (8000, "-E -t 198.18.0.100:80 -s wrr"),
        (10000, "-e -t 198.18.0.100:80 -r 198.18.0.13 -w 1"),
        (12000, "-E -t 198.18.0.100:80 -s lc"),
    ];
    let started = std::time::Instant::now();
    let (plain, kept) = std::thread::scope(|s| {
        let plain = s.spawn(|| ab(&lab, 4000, 20, false));
        let kept = s.spawn(|| ab(&lab, 40_000, 10, true));
        for (at, change) in steps {
            while packets(&lab) < at && !plain.is_finished() && !kept.is_finished() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            eprintln!(
                "{:?}: {} packets, plain done {}, kept done {}: {change}",
                started.elapsed(),
                packets(&lab),
                plain.is_finished(),
                kept.is_finished()
            );
            assert!(
                !plain.is_finished() && !kept.is_finished(),
                "a load ended before `{change}`: the changes must happen under load"
            );
            if change.starts_with("-d") {
                let l = x(&lab, "-Ln");
                let line = l
                    .lines()
                    .find(|l| l.contains("198.18.0.11:80"))
                    .expect("rs1 listed");
                let active: u64 = line
                    .split_whitespace()
                    .nth(4)
                    .and_then(|n| n.parse().ok())
                    .expect("ActiveConn");
                assert!(
                    active > 0,
                    "rs1 holds open connections when removed: {line}"
                );
            }
            x(&lab, change);
        }
        (
            plain.join().expect("ab thread"),
            kept.join().expect("ab -k thread"),
        )
    });
    eprintln!("{:?}: {} packets", started.elapsed(), packets(&lab));
    assert!(plain.contains("Complete requests:      4000\n"), "{plain}");
    assert!(kept.contains("Complete requests:      40000\n"), "{kept}");
    for report in [&plain, &kept] {
        assert!(report.contains("Failed requests:        0"), "{report}");
        assert!(!report.contains("Non-2xx"), "{report}");
    }
    let l = x(&lab, "-Ln");
    assert!(
        !l.contains("198.18.0.11:80") && l.contains("TCP  198.18.0.100:80 lc"),
        "{l}"
    );
}

/// A client in the lab that opens one keep-alive connection to the VIP, asks once,
/// waits for `go`, then asks again on the same connection and prints both answers
/// ("reset" when the connection was reset).
const HELD_CLIENT: &str = r#"
import os, socket, sys, time
sync = sys.argv[1]
s = socket.create_connection(("198.18.0.100", 80), timeout=10)
def get():
    s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(4096)
        if not c:
            raise ConnectionError("closed")
        buf += c
    head, body = buf.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
    while len(body) < n:
        body += s.recv(4096)
    return body.decode().strip()
print(get(), flush=True)
open(sync + ".ready", "w").close()
for _ in range(600):
    if os.path.exists(sync + ".go"):
        break
    time.sleep(0.05)
try:
    print(get())
except ConnectionResetError:
    print("reset")
except Exception as e:
    print("error", type(e).__name__)
"#;

/// Holds a connection to rs1, removes rs1 (adding rs2) while it is open, then uses the
/// connection again; what the client saw.
fn remove_under_a_held_connection(lab: &Lab) -> String {
    for c in [
        "-C",
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g",
    ] {
        x(lab, c);
    }
    lab.wait_resolved().expect("resolved");
    let (sync, _marks) = marks("held");
    let (ready, go) = (format!("{sync}.ready"), format!("{sync}.go"));
    let out = std::thread::scope(|s| {
        let client = s.spawn(|| lab.exec(&lab.ns("c"), &["python3", "-c", HELD_CLIENT, &sync]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !Path::new(&ready).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the client never got its first answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The held connection is listed, and --set changes its expire.
        x(lab, "--set 100 0 0");
        let conns = json(lab, "-Lnc --json");
        let held = conns["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .find(|r| r["state"] == "ESTABLISHED")
            .unwrap_or_else(|| panic!("the held connection is listed: {conns:#}"))
            .clone();
        assert_eq!(held["destination"], "198.18.0.11:80");
        assert!(held["expire"].as_u64() <= Some(100), "{held}");
        x(lab, "-a -t 198.18.0.100:80 -r 198.18.0.12 -g");
        x(lab, "-d -t 198.18.0.100:80 -r 198.18.0.11");
        lab.wait_resolved().expect("resolved");
        std::fs::write(&go, "").expect("go");
        client.join().expect("client thread").expect("client ran")
    });
    x(lab, "--set 900 120 300");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_removed_real_server_drains_by_default_and_resets_with_expire_nodest_conn() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    assert_eq!(
        remove_under_a_held_connection(&lab),
        "rs1\nrs1\n",
        "the open connection keeps reaching its removed real server"
    );
    assert_eq!(get(&lab), "rs2", "new connections go to the others");

    lab.stop_director("TERM").expect("stopped");
    lab.start_director(&["--expire-nodest-conn"])
        .expect("director starts");
    assert_eq!(
        remove_under_a_held_connection(&lab),
        "rs1\nreset\n",
        "the client is reset at its next packet"
    );
    assert_eq!(get(&lab), "rs2");
}

/// A load client: one request per connection, one after another, until `SYNC.end`
/// exists. Each line: seconds since `SYNC.stopped` appeared (or -1 before), seconds since
/// `SYNC.restarted` appeared (or -1), and who answered or `fail`.
const CHECKED_LOAD: &str = r#"
import os, sys, time, urllib.request
sync = sys.argv[1]
marks = {"stopped": None, "restarted": None}
while not os.path.exists(sync + ".end"):
    # A mark's time is when the test wrote it (its file's), not when a request that was
    # hanging then let this loop see it.
    for m in marks:
        if marks[m] is None and os.path.exists(sync + "." + m):
            marks[m] = os.path.getmtime(sync + "." + m)
    t = time.time()
    try:
        who = urllib.request.urlopen("http://198.18.0.100/", timeout=2).read().decode().strip()
    except Exception:
        who = "fail"
    rel = [("%.3f" % (t - v)) if v is not None else "-1" for v in marks.values()]
    print(rel[0], rel[1], who, flush=True)
    time.sleep(0.005)
"#;

/// What the load client saw: (since stopped, since restarted, answer) per request.
fn checked_load_lines(out: &str) -> Vec<(f64, f64, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.to_string(),
            ))
        })
        .collect()
}

/// Stops the HTTP server of `role` under load, then starts it again; asserts what a
/// health check with `fall` and `interval` promises; returns the load client's lines.
fn stop_and_restart_under_load(
    lab: &mut Lab,
    role: &str,
    name: &str,
    fall: f64,
    interval: f64,
) -> Vec<(f64, f64, String)> {
    let restart = |lab: &mut Lab| lab.start_http(role, name, 80).expect("http again");
    break_and_mend_under_load(
        lab,
        name,
        &|lab: &mut Lab| lab.stop_programs(role),
        &restart,
        fall * interval + 0.5,
        interval,
    )
}

/// Breaks real server `name` under load (`break_it`), then mends it (`mend`); asserts
/// that its check takes it out within `settled` seconds (no request fails or reaches it
/// after), and that it rejoins without a failure; returns the load client's lines.
fn break_and_mend_under_load(
    lab: &mut Lab,
    name: &str,
    break_it: &dyn Fn(&mut Lab),
    mend: &dyn Fn(&mut Lab),
    settled: f64,
    interval: f64,
) -> Vec<(f64, f64, String)> {
    let role = format!("r{}", name.trim_start_matches("rs"));
    let (sync, _marks) = marks(&format!("check-{role}"));
    let ns = lab.ns("c");
    let client = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", CHECKED_LOAD, &sync])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("load client");
    let sleep = |s: f64| std::thread::sleep(std::time::Duration::from_secs_f64(s));
    sleep(1.5);
    break_it(lab);
    let broke = std::time::Instant::now();
    std::fs::write(format!("{sync}.stopped"), "").expect("mark");
    // Out within fall x interval (plus a little for the apply and the client's turn).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let l = lab.list_notes().expect("-Ln");
        if l.contains("check failed") {
            eprintln!("{l}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never marked failed:\n{l}"
        );
        sleep(0.05);
    }
    // Two seconds of load past `settled` (however soon the check took it out), so that
    // what comes after it is seen.
    let hold = (settled + 2.0 - broke.elapsed().as_secs_f64()).max(2.0);
    sleep(hold);
    // Marked before the mend begins: from then on the real server may be back, and once
    // its check passes it is scheduled again, which may be before `mend` returns (a CI
    // run saw a request reach rs2 0.19 s into a mend that had not returned yet).
    std::fs::write(format!("{sync}.restarted"), "").expect("mark");
    mend(lab);
    sleep(interval * 2.0 + 2.0);
    std::fs::write(format!("{sync}.end"), "").expect("mark");
    let out = client.wait_with_output().expect("load client ends");
    let lines = checked_load_lines(&String::from_utf8_lossy(&out.stdout));
    let after: Vec<_> = lines
        .iter()
        .filter(|(stopped, restarted, _)| *stopped > settled && *restarted < 0.0)
        .collect();
    assert!(
        after.len() > 20,
        "too few requests after the check took it out: {after:?}"
    );
    let bad: Vec<_> = after
        .iter()
        .filter(|(_, _, who)| who == "fail" || who == name)
        .collect();
    assert!(
        bad.is_empty(),
        "requests after {settled} s failed or reached {name}: {bad:?}"
    );
    let after_restart: Vec<_> = lines.iter().filter(|(_, r, _)| *r >= 0.0).collect();
    assert!(
        after_restart.iter().all(|(_, _, who)| who != "fail"),
        "a request failed after the restart: {after_restart:?}"
    );
    assert!(
        after_restart.iter().any(|(_, _, who)| who == name),
        "{name} did not rejoin after its restart"
    );
    lines
}

/// Starts the director with an rr service over the three real servers, each checked as
/// `check` says, and waits until they are resolved.
fn rr_checked(lab: &mut Lab, check: &str) {
    lab.start_director(&[]).expect("director starts");
    x(lab, "-A -t 198.18.0.100:80 -s rr");
    for n in 1..=3 {
        x(
            lab,
            &format!("-a -t 198.18.0.100:80 -r 198.18.0.1{n} -g {check}"),
        );
    }
    lab.wait_resolved().expect("resolved");
}

#[test]
fn health_checks_take_a_dead_real_server_out_and_bring_it_back() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    rr_checked(
        &mut lab,
        "--check http:/ --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2",
    );
    let lines = stop_and_restart_under_load(&mut lab, "r3", "rs3", 2.0, 0.5);
    eprintln!("http check: {} requests", lines.len());
    let log = lab.director_log();
    assert!(
        log.contains("real server 198.18.0.13 of TCP 198.18.0.100:80 failed its check"),
        "{log}"
    );
    assert!(
        log.contains("198.18.0.13 of TCP 198.18.0.100:80 passes its check again"),
        "{log}"
    );
    let doc = json(&lab, "-Ln --json");
    let r3 = &doc["services"][0]["reals"][2];
    assert_eq!(r3["health"]["up"], true, "{r3}");
    assert_eq!(r3["health"]["transitions"], 2, "{r3}");
    assert!(r3["health"]["failures"].as_u64().expect("n") >= 2, "{r3}");

    // The same with a TCP check that removes instead of inhibiting, on rs2.
    x(
        &lab,
        "-e -t 198.18.0.100:80 -r 198.18.0.12 --check tcp --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2 --on-failure remove",
    );
    stop_and_restart_under_load(&mut lab, "r2", "rs2", 2.0, 0.5);
    let saved = x(&lab, "-S -n");
    assert!(
        saved.contains(
            "-a -t 198.18.0.100:80 -r 198.18.0.12:80 -g -w 1 --check tcp --check-interval 0.5 \
             --check-timeout 0.5 --check-retry-delay 0.2 --on-failure remove"
        ),
        "{saved}"
    );

    // An echo request check (keepalived's PING_CHECK) on rs1: its ICMP echo switched
    // off takes it out, switched on again brings it back.
    x(
        &lab,
        "-e -t 198.18.0.100:80 -r 198.18.0.11 --check ping --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2",
    );
    let echo = |on: bool| {
        lab.sh(
            &lab.ns("r1"),
            &format!("sysctl -qw net.ipv4.icmp_echo_ignore_all={}", u8::from(!on)),
        )
        .expect("sysctl");
    };
    let wait_for = |says: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !lab.director_log().contains(says) {
            assert!(
                std::time::Instant::now() < deadline,
                "never: {says}\n{}",
                lab.director_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    echo(false);
    wait_for("real server 198.18.0.11 of TCP 198.18.0.100:80 failed its check");
    let answers: Vec<String> = (0..4).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).get("rs1"), None, "{answers:?}");
    echo(true);
    wait_for("198.18.0.11 of TCP 198.18.0.100:80 passes its check again");
    let saved = x(&lab, "-S -n");
    assert!(
        saved.contains(
            "-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1 --check ping --check-interval 0.5"
        ),
        "{saved}"
    );
}

/// keepalived.conf with two virtual servers (and sections xdpvs skips).
fn keepalived_conf(weight_12: u16) -> String {
    format!(
        r#"! migrated as is
global_defs {{
   router_id LVS_LAB
}}
vrrp_instance VI_1 {{
    state MASTER
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {{
        198.18.0.200
    }}
}}
virtual_server 198.18.0.100 80 {{
    delay_loop 1
    lb_algo wrr
    lb_kind DR
    protocol TCP
    real_server 198.18.0.11 80 {{
        weight 1
        HTTP_GET {{
            url {{
              path /
              status_code 200
            }}
            connect_timeout 1
            retry 1
            delay_before_retry 0.5
        }}
    }}
    real_server 198.18.0.12 80 {{
        weight {weight_12}
        inhibit_on_failure
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
virtual_server 198.18.0.100 81 {{
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 198.18.0.13 81 {{
        weight 1
    }}
}}
"#
    )
}

#[test]
fn a_keepalived_conf_is_served_and_sighup_applies_its_edits_without_breaking_a_connection() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_http("r3", "rs3-81", 81)
        .expect("a second service on rs3");
    let conf =
        std::env::temp_dir().join(format!("xdpvs-e2e-keepalived-{}.conf", std::process::id()));
    std::fs::write(&conf, keepalived_conf(1)).expect("conf");
    lab.start_director(&["--keepalived", conf.to_str().expect("utf-8")])
        .expect("director starts with the keepalived.conf");
    lab.wait_resolved().expect("resolved");
    let log = lab.director_log();
    assert!(
        log.contains("global_defs skipped") && log.contains("vrrp_instance skipped"),
        "{log}"
    );
    assert_eq!(
        x(&lab, "-S -n"),
        "-A -t 198.18.0.100:80 -s wrr\n\
         -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1 --check http:/:200 --check-interval 1 \
         --check-timeout 1 --check-retry-delay 0.5 --on-failure remove\n\
         -a -t 198.18.0.100:80 -r 198.18.0.12:80 -g -w 1 --check tcp --check-interval 1 \
         --check-timeout 1\n\
         -A -t 198.18.0.100:81 -s rr\n\
         -a -t 198.18.0.100:81 -r 198.18.0.13:81 -g -w 1\n"
    );
    // Both virtual servers serve.
    let answers: Vec<String> = (0..4).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).len(), 2, "{answers:?}");
    assert_eq!(
        lab.curl(&format!("http://{VIP}:81/")).expect("port 81"),
        "rs3-81"
    );

    // A long-lived connection to rs1 (rs1 and rs2 take turns: open until rs1 answers).
    let (sync, _marks) = marks("hup");
    let (ready, go) = (format!("{sync}.ready"), format!("{sync}.go"));
    let checks_before = |lab: &Lab| {
        json(lab, "-Ln --json")["services"][0]["reals"][0]["health"]["checks"]
            .as_u64()
            .expect("checks")
    };
    let pid = lab.director().expect("running").id().to_string();
    let lab = &lab;
    let out = std::thread::scope(|s| {
        let client = s.spawn(|| lab.exec(&lab.ns("c"), &["python3", "-c", HELD_CLIENT, &sync]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !Path::new(&ready).exists() {
            assert!(std::time::Instant::now() < deadline, "no first answer");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let before = checks_before(lab);
        // Edit the file: rs2's weight 1 -> 5. SIGHUP.
        std::fs::write(&conf, keepalived_conf(5)).expect("conf");
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(hup.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !lab.director_log().contains("SIGHUP:") {
            assert!(std::time::Instant::now() < deadline, "no reload logged");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let l = x(lab, "-Ln");
        assert!(
            l.lines().any(|line| line.contains("198.18.0.12:80")
                && line.split_whitespace().nth(3) == Some("5")),
            "{l}\n{}",
            lab.director_log()
        );
        // The held connection is still there, and the checks went on (not restarted).
        let conns = json(lab, "-Lnc --json");
        assert!(
            conns["connections"]
                .as_array()
                .expect("rows")
                .iter()
                .any(|r| r["state"] == "ESTABLISHED"),
            "{conns:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            checks_before(lab) > before,
            "the checks of unchanged real servers go on"
        );
        std::fs::write(&go, "").expect("go");
        client.join().expect("client thread").expect("client ran")
    });
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let answers: Vec<&str> = said.lines().collect();
    assert_eq!(answers.len(), 2, "{said}");
    assert_eq!(
        answers[0], answers[1],
        "the long-lived connection kept its real server"
    );
    assert!(
        lab.director_log().contains(&format!(
            "SIGHUP: {} applied: services 0 added, 0 removed, 0 changed; real servers 0 added, 0 removed, 1 changed",
            conf.display()
        )),
        "{}",
        lab.director_log()
    );
    // A broken edit changes nothing.
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.100 80 {\n lb_kind LOCAL\n}\n",
    )
    .expect("conf");
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lab
        .director_log()
        .contains("the configuration in force stays")
    {
        assert!(std::time::Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(x(lab, "-Ln").contains("TCP  198.18.0.100:81 rr"));
    assert!(
        lab.director_log().contains(&format!(
            "SIGHUP: {}:2: virtual_server 198.18.0.100 80: lb_kind LOCAL",
            conf.display()
        )),
        "the file and its line: {}",
        lab.director_log()
    );
    // What the director refuses (not the parser) names the file's line too.
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.100 80 {\n lb_kind DR\n real_server 198.18.0.11 80 {\n }\n real_server 198.19.0.5 80 {\n }\n}\n",
    )
    .expect("conf");
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    let want = format!(
        "SIGHUP: {}:5: real server 198.19.0.5: it is not on the director's subnet",
        conf.display()
    );
    assert!(log_shows(lab, &want, 1, 10), "{}", lab.director_log());
    assert!(!lab.director_log().contains("of the batch"));
    let _ = std::fs::remove_file(&conf);
}

#[test]
fn metrics_are_prometheus_text_and_agree_with_the_traffic() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&["--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    configure_rr(&lab);
    x(
        &lab,
        "-e -t 198.18.0.100:80 -r 198.18.0.11 --check tcp --check-interval 0.5",
    );
    let report = ab(&lab, 300, 10, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (m, text) = scrape(&lab);
    let value = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);
    let stats = json(&lab, "-Ln --stats --json");
    let svc = &stats["services"][0]["stats"];
    assert_eq!(
        value("xdpvs_service_connections_total", &[]) as u64,
        svc["conns"].as_u64().expect("conns"),
        "{text}"
    );
    assert!(value("xdpvs_service_connections_total", &[]) >= 300.0);
    assert_eq!(
        value("xdpvs_service_packets_total", &[]) as u64,
        svc["in_pkts"].as_u64().expect("pkts")
    );
    assert_eq!(
        value("xdpvs_real_connections_total", &[]),
        value("xdpvs_service_connections_total", &[])
    );
    // Every frame the worker received was forwarded, answered (ARP) or dropped by reason.
    let rx = value("xdpvs_worker_received_packets_total", &[]);
    let accounted = value("xdpvs_worker_forwarded_packets_total", &[])
        + value("xdpvs_worker_replies_total", &[])
        + value("xdpvs_worker_dropped_packets_total", &[])
        + value("xdpvs_worker_unhandled_packets_total", &[]);
    assert_eq!(rx, accounted, "{text}");
    assert!(
        value(
            "xdpvs_health_checks_total",
            &[("real", "198.18.0.11"), ("result", "ok")]
        ) >= 1.0
    );
    assert_eq!(value("xdpvs_real_up", &[("real", "198.18.0.11")]), 1.0);
    assert!(
        value("xdpvs_worker_connection_table_entries", &[]) > 0.0,
        "{text}"
    );
    assert!(
        text.contains("xdpvs_xsk_rx_ring_full_total{worker=\"0\"}"),
        "{text}"
    );
    let missing = lab
        .exec(
            &lab.ns("c"),
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://198.18.0.1:9100/",
            ],
        )
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");

    // Content negotiation: the Prometheus text format 0.0.4 unless OpenMetrics is asked
    // for (as Prometheus itself asks), and promtool accepts what a plain client gets.
    let (kind, plain) = scrape_as(&lab, None);
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!plain.contains("# EOF") && !plain.contains(".."), "{plain}");
    assert!(
        plain.contains("# TYPE xdpvs_service_connections_total counter"),
        "{plain}"
    );
    let (kind, _) = scrape_as(&lab, Some("text/plain;version=0.0.4"));
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let (kind, om) = scrape_as(
        &lab,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        om.ends_with("# EOF") && om.contains("# TYPE xdpvs_service_connections counter"),
        "{om}"
    );
    let checked = lab
        .sh(
            &lab.ns("c"),
            "m=$(curl -sS --max-time 5 http://198.18.0.1:9100/metrics) && [ -n \"$m\" ] \
             && printf '%s\\n' \"$m\" | promtool check metrics",
        )
        .expect("promtool runs");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A scrape of /metrics with this `Accept` header: its Content-Type and its body.
fn scrape_as(lab: &Lab, accept: Option<&str>) -> (String, String) {
    let mut args = vec!["curl", "-sS", "--max-time", "5", "-D", "/dev/stderr"];
    let header;
    if let Some(a) = accept {
        header = format!("Accept: {a}");
        args.extend(["-H", &header]);
    }
    args.push("http://198.18.0.1:9100/metrics");
    let out = lab.exec(&lab.ns("c"), &args).expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = String::from_utf8_lossy(&out.stderr).to_string();
    let kind = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Content-Type in {headers}"));
    (
        kind,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// A UDP server on a real server: answers each datagram with its name and the size it
/// received (from the VIP, directly to the client: direct routing).
const UDP_SIZES: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(("%s %d" % (sys.argv[1], len(data))).encode(), peer)
"#;

/// A UDP service VIP:9000 with scheduler `sched` on the three real servers, each
/// running [`UDP_SIZES`].
fn configure_udp(lab: &mut Lab, sched: &str) {
    for n in 1..=3 {
        let ns = lab.ns(&format!("r{n}"));
        lab.spawn(
            &ns,
            &["python3", "-c", UDP_SIZES, &format!("rs{n}"), "9000"],
        )
        .expect("udp server");
    }
    x(lab, &format!("-A -u 198.18.0.100:9000 -s {sched}"));
    for n in 1..=3 {
        x(lab, &format!("-a -u 198.18.0.100:9000 -r 198.18.0.1{n} -g"));
    }
    lab.wait_resolved().expect("resolved");
}

/// The client side: `N` datagrams of `SIZE` bytes from as many source ports; prints each
/// answer (or `lost`).
const UDP_BIG: &str = r#"
import socket, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(bytes([i % 251]) * size, ("198.18.0.100", 9000))
    try:
        print(s.recv(100).decode())
    except socket.timeout:
        print("lost")
    s.close()
"#;

/// Opens a connection to the VIP, gets an answer, then sends the VIP an ICMP
/// "fragmentation needed" (as a router would) quoting the real server's reply of that
/// connection; prints who answered.
const PMTU_CLIENT: &str = r#"
import socket, struct
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
import http.client
h = http.client.HTTPConnection("198.18.0.100", 80, timeout=5)
h.request("GET", "/")
answer = h.getresponse().read().decode().strip()
me, port = h.sock.getsockname()
vip = socket.inet_aton("198.18.0.100")
quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0, vip, socket.inet_aton(me))
quoted_ip = quoted_ip[:10] + struct.pack("!H", csum(quoted_ip)) + quoted_ip[12:]
quoted = quoted_ip + struct.pack("!HHI", 80, port, 0)
icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1280) + quoted
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
r.sendto(icmp, ("198.18.0.100", 0))
print(answer)
"#;

/// A counter of a namespace's kernel from /proc/net/snmp (`Icmp: InDestUnreachs`...).
fn snmp(lab: &Lab, role: &str, group: &str, name: &str) -> u64 {
    let out = lab
        .exec(&lab.ns(role), &["cat", "/proc/net/snmp"])
        .expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let prefix = format!("{group}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().expect("names"), rows.next().expect("values"));
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {name} in {names}"));
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// `/metrics` of a director started with `--metrics 198.18.0.1:9100`, parsed as
/// Prometheus text (with a real parser), and its text.
fn scrape(lab: &Lab) -> (prometheus_parse::Scrape, String) {
    let text = lab
        .curl("http://198.18.0.1:9100/metrics")
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    (
        prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text"),
        text,
    )
}

/// The sum of the samples of `name` whose labels include `labels`.
fn metric(m: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn ping_icmp_errors_and_fragments_to_a_vip() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    // Ping: the director answers for the VIP.
    let out = lab
        .exec(
            &lab.ns("c"),
            &["ping", "-c", "5", "-i", "0.2", "-W", "2", &VIP.to_string()],
        )
        .expect("ping");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.contains("5 received"),
        "{said}"
    );
    let m = json(&lab, "-Ln --json");
    assert!(m["services"].is_array());

    // An ICMP error about a connection reaches that connection's real server.
    let before: Vec<u64> = (1..=3)
        .map(|n| snmp(&lab, &format!("r{n}"), "Icmp", "InDestUnreachs"))
        .collect();
    let out = lab
        .exec(&lab.ns("c"), &["python3", "-c", PMTU_CLIENT])
        .expect("pmtu client");
    let who = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{who}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = who.trim_start_matches("rs").parse().expect("rsN");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let after: Vec<u64> = (1..=3)
            .map(|k| snmp(&lab, &format!("r{k}"), "Icmp", "InDestUnreachs"))
            .collect();
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        if got[n - 1] >= 1 {
            assert_eq!(
                got.iter().sum::<u64>(),
                got[n - 1],
                "only {who} got it: {got:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who} never got the ICMP error: {got:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // 4,000-byte UDP datagrams (three fragments each on this 1500-byte LAN) arrive whole.
    configure_udp(&mut lab, "rr");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab
        .exec(&lab.ns("c"), &["python3", "-c", UDP_BIG, "30", "4000"])
        .expect("udp client");
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), 30, "{answers:?}");
    assert!(answers.iter().all(|a| a.ends_with(" 4000")), "{answers:?}");
    let by_real = counts(&answers);
    assert_eq!(by_real.len(), 3, "rr spreads the datagrams: {by_real:?}");
    let stats = json(&lab, "-Ln --stats --json");
    let udp = stats["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["protocol"] == "UDP")
        .expect("the UDP service")
        .clone();
    assert_eq!(
        udp["stats"]["in_pkts"], 90,
        "three fragments per datagram: {udp}"
    );
}

/// Sends `N` TCP SYNs to VIP:80 from spoofed sources in 198.19.0.0/16 (raw socket), at
/// most `RATE` a second (0: as fast as it can); prints how long that took.
const SYN_FLOOD: &str = r#"
import socket, struct, sys, time, random
n, rate = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
vip = socket.inet_aton("198.18.0.100")
rnd = random.Random(7)
t0 = time.monotonic()
for i in range(n):
    src = struct.pack("!BBH", 198, 19, rnd.randrange(1, 65535))
    sport = rnd.randrange(1024, 65535)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xffff, 0, 64, 6, 0, src, vip)
    tcp = struct.pack("!HHIIBBHHH", sport, 80, rnd.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    s.sendto(ip + tcp, ("198.18.0.100", 0))
    if rate and i % 500 == 499:
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
print("%.3f" % (time.monotonic() - t0))
"#;

/// One keep-alive connection asking every 20 ms until `SYNC.end` exists; prints each
/// answer (or `fail`).
const KEEPALIVE_LOAD: &str = r#"
import http.client, os, sys, time
sync = sys.argv[1]
h = http.client.HTTPConnection("198.18.0.100", 80, timeout=3)
while not os.path.exists(sync + ".end"):
    try:
        h.request("GET", "/")
        print(h.getresponse().read().decode().strip(), flush=True)
    except Exception as e:
        print("fail", type(e).__name__, flush=True)
        h = http.client.HTTPConnection("198.18.0.100", 80, timeout=3)
    time.sleep(0.02)
"#;

#[test]
fn a_syn_flood_on_a_full_table_denies_no_one() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&["--conn-capacity", "1000"])
        .expect("director starts");
    configure_rr(&lab);
    let (sync, _marks) = marks("flood");
    let ns = lab.ns("c");
    let held = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", KEEPALIVE_LOAD, &sync])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keep-alive client");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = json(&lab, "-Ln --stats --json")["services"][0]["stats"]["conns"]
        .as_u64()
        .expect("conns");
    // The flood, with new clients during it.
    let (flood, during) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            lab.exec(
                &lab.ns("c"),
                &["python3", "-c", SYN_FLOOD, "50000", "20000"],
            )
        });
        let mut during = Vec::new();
        while !flood.is_finished() {
            during.push(lab.curl(&format!("http://{VIP}/")));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (
            flood.join().expect("flood thread").expect("flood ran"),
            during,
        )
    });
    let secs: f64 = String::from_utf8_lossy(&flood.stdout)
        .trim()
        .parse()
        .expect("seconds");
    let after = json(&lab, "-Ln --stats --json")["services"][0]["stats"]["conns"]
        .as_u64()
        .expect("conns");
    let l = x(&lab, "-Ln");
    eprintln!(
        "flood: 50000 SYNs in {secs:.2} s ({:.0}/s); {} connections scheduled ({:.0}/s); {} new clients during it\n{l}",
        50000.0 / secs,
        after - before,
        (after - before) as f64 / secs,
        during.len()
    );
    // New clients right after the flood.
    let right_after: Vec<_> = (0..6)
        .map(|_| lab.curl(&format!("http://{VIP}/")))
        .collect();
    std::fs::write(format!("{sync}.end"), "").expect("mark");
    let out = held.wait_with_output().expect("keep-alive client ends");
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(answers.len() > 20, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a == &answers[0] && a.starts_with("rs")),
        "the long-lived connection kept its real server with no failure: {:?}",
        counts(&answers)
    );
    let failed: Vec<_> = during
        .iter()
        .chain(&right_after)
        .filter(|r| r.is_err())
        .collect();
    assert!(failed.is_empty(), "new clients were refused: {failed:?}");
    assert!(!during.is_empty(), "clients tried during the flood");
    // The flood filled the table and was scheduled (evicting half-open entries), not
    // dropped: 1,000 entries took 50,000 SYNs.
    assert!(
        after - before >= 40_000,
        "most SYNs were scheduled: {}",
        after - before
    );
    let table = json(&lab, "-Ln --json");
    let held: u64 = table["services"][0]["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| {
            r["active_conns"].as_u64().unwrap_or(0) + r["inactive_conns"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(
        held <= 1000,
        "the table never holds more than its capacity: {held}"
    );
}

#[test]
fn a_second_director_on_the_interface_is_refused_in_one_line() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    let other = std::env::temp_dir().join(format!("xdpvs-e2e-second-{}.sock", std::process::id()));
    let started = std::time::Instant::now();
    let out = lab
        .exec(
            &lab.ns("d"),
            &[
                env!("CARGO_BIN_EXE_xdpvs"),
                "run",
                "-i",
                "eth0",
                "--socket",
                other.to_str().expect("utf-8"),
            ],
        )
        .expect("second director");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("xdpvs:")).collect();
    assert_eq!(
        errors,
        ["xdpvs: another xdpvs director runs on eth0: stop it first, or give this one another interface"],
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The first one is untouched.
    configure_rr(&lab);
    assert!(get(&lab).starts_with("rs"));
    let _ = std::fs::remove_file(&other);
}

#[test]
fn the_director_rides_out_a_replaced_real_server_a_link_flap_and_an_mtu_change() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&["--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    configure_rr(&lab);
    // rs1 gets new hardware: a new MAC, announced by a gratuitous ARP (as a host with
    // arp_notify does when its link comes up). The director uses it within a second, and
    // says and counts the change.
    let old_mac = lab.mac("r1").expect("rs1 MAC");
    let r1 = lab.ns("r1");
    lab.sh(
        &r1,
        "ip link set eth0 address 02:00:00:00:77:01 && arping -q -U -c 1 -I eth0 198.18.0.11",
    )
    .expect("new MAC announced");
    assert!(
        log_shows(
            &lab,
            &format!(
                "real server 198.18.0.11 moved from {old_mac} to 02:00:00:00:77:01: its \
                 connections now go to 02:00:00:00:77:01. If it was replaced, nothing to do"
            ),
            1,
            1
        ),
        "{}",
        lab.director_log()
    );
    let (m, _) = scrape(&lab);
    assert_eq!(
        metric(
            &m,
            "xdpvs_real_mac_changes_total",
            &[("real", "198.18.0.11")]
        ),
        1.0
    );
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).get("rs1"), Some(&2), "{answers:?}");
    // The director's link goes down and up: it serves again.
    let d = lab.ns("d");
    lab.sh(
        &d,
        "ip link set eth0 down && sleep 0.5 && ip link set eth0 up",
    )
    .expect("link flap");
    let serves = |lab: &Lab| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if lab.curl(&format!("http://{VIP}/")).is_ok() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    assert!(serves(&lab), "after a link flap:\n{}", lab.director_log());
    // Its MTU changes: it serves again.
    let mtu = lab.sh(
        &d,
        "ip link set eth0 mtu 1400 && cat /sys/class/net/eth0/mtu",
    );
    eprintln!("mtu change: {mtu:?}");
    assert!(serves(&lab), "after an MTU change:\n{}", lab.director_log());
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).len(), 3, "{answers:?}");
    assert!(lab
        .director()
        .expect("running")
        .try_wait()
        .expect("status")
        .is_none());
    // SIGINT stops it as cleanly as SIGTERM: exit 0, XDP detached, socket removed.
    let status = lab.stop_director("INT").expect("stops on SIGINT");
    assert!(status.success(), "exit status {status}");
    let link = lab
        .exec(&d, &["ip", "link", "show", "dev", "eth0"])
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(
        !link.contains("xdp"),
        "XDP still attached after SIGINT: {link}"
    );
    assert!(!lab.socket().exists(), "the control socket is removed");
}

#[test]
fn a_real_server_that_answers_arp_for_the_vip_is_a_logged_conflict() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&["--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    configure_rr(&lab);
    // rs2 announces the VIP as its own (what arp_ignore=0 plus a gratuitous ARP does),
    // while the director runs.
    let r2 = lab.ns("r2");
    let garp = "arping -q -U -c 2 -s 198.18.0.100 -I eth0 198.18.0.100";
    lab.sh(&r2, garp).expect("gratuitous ARP for the VIP");
    let rs2 = lab.mac("r2").expect("rs2 MAC");
    let said = format!(
        "VIP conflict: real server 198.18.0.12 ({rs2}) answers ARP for 198.18.0.100: clients \
         that reach it bypass the director. Fix, on that host: xdpvs rs-setup --vip \
         198.18.0.100 --apply --persist"
    );
    assert!(log_shows(&lab, &said, 1, 3), "{}", lab.director_log());
    // Said once, counted every time: two more frames, one line still, four counted.
    lab.sh(&r2, garp).expect("gratuitous ARP for the VIP");
    let conflicts = || {
        let (m, _) = scrape(&lab);
        metric(
            &m,
            "xdpvs_vip_conflicts_total",
            &[("vip", "198.18.0.100"), ("mac", rs2.as_str())],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while conflicts() < 4.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(conflicts(), 4.0, "every frame counted");
    assert_eq!(lab.director_log().matches("VIP conflict").count(), 1);
    // The client still reaches the VIP through the director.
    let answers: Vec<String> = (0..3).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).len(), 3, "{answers:?}");
    // rs3 starts answering ARP for the VIP without a word (arp_ignore back to 0, no
    // gratuitous ARP): its replies go to whoever asks, never to the director, but the
    // director asks who has each VIP every 5 s, so it is named within seconds.
    let rs3 = lab.mac("r3").expect("rs3 MAC");
    lab.sh(
        &lab.ns("r3"),
        "sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth0.arp_ignore=0 \
         net.ipv4.conf.lo.arp_ignore=0",
    )
    .expect("rs3 misconfigured");
    let named =
        format!("VIP conflict: real server 198.18.0.13 ({rs3}) answers ARP for 198.18.0.100");
    assert!(log_shows(&lab, &named, 1, 7), "{}", lab.director_log());
}

/// Junk at the director: random frames to its MAC, half of them IPv4 to the VIP with
/// random contents, until `SYNC.end` exists; prints how many it sent.
const JUNK: &str = r#"
import os, random, socket, struct, sys, time
sync, dmac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
me = open("/sys/class/net/eth0/address").read().strip()
smac = bytes.fromhex(me.replace(":", ""))
rnd = random.Random(11)
sent = 0
while not os.path.exists(sync + ".end"):
    n = rnd.randrange(14, 200)
    body = bytes(rnd.getrandbits(8) for _ in range(n))
    if rnd.random() < 0.5:
        ip = bytearray(body.ljust(40, b"\0"))
        ip[0] = 0x40 | rnd.choice([4, 5, 5, 5, 6, 15])
        ip[9] = rnd.choice([1, 6, 17, 47])
        ip[16:20] = socket.inet_aton("198.18.0.100")
        frame = dmac + smac + b"\x08\x00" + bytes(ip)
    else:
        frame = dmac + smac + struct.pack("!H", rnd.choice([0x0806, 0x0800, 0x86dd, 0x8100, 0x1234])) + body
    s.send(frame)
    sent += 1
    time.sleep(0.002)
print(sent)
"#;

/// A UDP stream to VIP:9000 until `SYNC.end` exists, 100 datagrams a second from a few
/// source ports; prints sent and answered.
const UDP_STREAM: &str = r#"
import os, socket, sys, time
sync = sys.argv[1]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
for s in socks:
    s.settimeout(1)
sent = answered = 0
while not os.path.exists(sync + ".end"):
    s = socks[sent % 4]
    s.sendto(b"x" * 100, ("198.18.0.100", 9000))
    sent += 1
    try:
        s.recv(100)
        answered += 1
    except socket.timeout:
        pass
    time.sleep(0.01)
print(sent, answered)
"#;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Mixed traffic with configuration changes every few seconds. `XDPVS_SOAK_SECS` long
/// (default 120; `XDPVS_SOAK_SECS=1800` for the 30-minute soak of docs/ROBUSTNESS.md).
#[test]
fn soak_mixed_traffic_and_changes() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    let secs: u64 = std::env::var("XDPVS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    lab.start_director(&["--conn-capacity", "65536", "--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    configure_rr(&lab);
    configure_udp(&mut lab, "sh");
    let pid = lab.director().expect("running").id();
    let dmac = lab.mac("d").expect("director MAC");
    let (sync, _marks) = marks("soak");
    let ns = lab.ns("c");
    let bg = |script: &str, extra: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", script, &sync])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("background client")
    };
    let junk = bg(JUNK, &[&dmac]);
    let udp = bg(UDP_STREAM, &[]);
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "ping",
            "-q",
            "-i",
            "0.2",
            "-w",
            &secs.to_string(),
            "198.18.0.100",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping");
    let changes = [
        "-e -t 198.18.0.100:80 -r 198.18.0.12 -w 3",
        "-E -t 198.18.0.100:80 -s wrr",
        "-d -t 198.18.0.100:80 -r 198.18.0.13",
        "-e -u 198.18.0.100:9000 -r 198.18.0.11 -w 2",
        "-a -t 198.18.0.100:80 -r 198.18.0.13 -g -w 2",
        "-E -t 198.18.0.100:80 -s lc",
        "--set 900 120 300",
        "-e -t 198.18.0.100:80 -r 198.18.0.12 -w 1",
        "-E -t 198.18.0.100:80 -s rr",
    ];
    let started = std::time::Instant::now();
    let mut rss = Vec::new();
    let report = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let t = secs.to_string();
            let url = format!("http://{VIP}/");
            let out = lab
                .exec(
                    &lab.ns("c"),
                    &[
                        "ab",
                        "-q",
                        "-t",
                        &t,
                        "-n",
                        "100000000",
                        "-c",
                        "4",
                        "-s",
                        "10",
                        &url,
                    ],
                )
                .expect("ab");
            String::from_utf8_lossy(&out.stdout).to_string()
        });
        let mut i = 0;
        while !load.is_finished() {
            std::thread::sleep(std::time::Duration::from_secs(3));
            if started.elapsed() < std::time::Duration::from_secs(secs.saturating_sub(5)) {
                x(&lab, changes[i % changes.len()]);
                i += 1;
            }
            rss.push((started.elapsed().as_secs(), rss_kib(pid)));
        }
        load.join().expect("ab thread")
    });
    std::fs::write(format!("{sync}.end"), "").expect("mark");
    let udp = udp.wait_with_output().expect("udp");
    let junk = junk.wait_with_output().expect("junk");
    let ping = ping.wait_with_output().expect("ping");
    let (udp, junk, ping) = (
        String::from_utf8_lossy(&udp.stdout).trim().to_string(),
        String::from_utf8_lossy(&junk.stdout).trim().to_string(),
        String::from_utf8_lossy(&ping.stdout).to_string(),
    );
    let complete = report
        .lines()
        .find(|l| l.starts_with("Complete requests:"))
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "soak {secs} s: {complete}; UDP sent/answered {udp}; junk frames {junk}; ping {}; RSS KiB {:?}",
        ping.lines().find(|l| l.contains("packet loss")).unwrap_or("?"),
        rss
    );
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let (sent, answered): (u64, u64) = {
        let mut w = udp.split_whitespace().map(|v| v.parse().unwrap_or(0));
        (w.next().unwrap_or(0), w.next().unwrap_or(0))
    };
    assert!(
        sent > 0 && answered * 100 >= sent * 99,
        "UDP {answered} of {sent}"
    );
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    // Memory stays flat once warm (the first 20 s fill the table and the allocator).
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= 20)
        .map(|(_, k)| *k)
        .collect();
    if let (Some(lo), Some(hi)) = (warm.iter().min(), warm.iter().max()) {
        assert!(
            hi - lo < 8 * 1024,
            "RSS grew from {lo} to {hi} KiB: {rss:?}"
        );
    }
    // Every frame each worker received is accounted for by a verdict.
    let (m, _) = scrape(&lab);
    let sum = |name: &str| metric(&m, name, &[]);
    let rx = sum("xdpvs_worker_received_packets_total");
    let verdicts = sum("xdpvs_worker_forwarded_packets_total")
        + sum("xdpvs_worker_replies_total")
        + sum("xdpvs_worker_dropped_packets_total")
        + sum("xdpvs_worker_unhandled_packets_total");
    assert!(rx > 0.0);
    assert_eq!(rx, verdicts, "verdicts add up to the frames received");
    assert_eq!(
        sum("xdpvs_worker_unhandled_packets_total"),
        0.0,
        "the XDP program and the engine agree"
    );
    assert!(lab
        .director()
        .expect("running")
        .try_wait()
        .expect("status")
        .is_none());
}

/// A client source port the two-queue test reuses (outside the ephemeral range ab uses).
const REUSED_PORT: u16 = 20000;

/// HTTP/1.0 requests to argv[1]:80 (argv[3] of them, default ten), each from a new socket
/// bound to port argv[2]; prints each answer's body on one line.
const REUSE_CLIENT: &str = r#"
import socket, sys, time
for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 10):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    s.connect((sys.argv[1], 80))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    print(data.split(b"\r\n\r\n", 1)[1].decode().strip())
    time.sleep(0.05)
"#;

#[test]
fn two_queues_two_workers_every_flow_on_one() {
    if let Err(why) = lab::available() {
        xdpvs_testkit::cannot_run("end-to-end test", &why);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let spec = LabSpec {
        director_queues: 2,
        ..LabSpec::default()
    };
    let mut lab = Lab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs")), spec).expect("lab builds");
    lab.start_director(&["--metrics", "198.18.0.1:9100"])
        .expect("director starts on two queues");
    assert!(
        lab.director_log().contains("queue 1: AF_XDP socket bound"),
        "{}",
        lab.director_log()
    );
    configure_rr(&lab);
    let report = ab(&lab, 3000, 8, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    let kept = ab(&lab, 3000, 8, true);
    assert!(kept.contains("Failed requests:        0"), "{kept}");
    // Both workers carried traffic.
    let (m, _) = scrape(&lab);
    let forwarded = |w: &str| metric(&m, "xdpvs_worker_forwarded_packets_total", &[("worker", w)]);
    let (w0, w1) = (forwarded("0"), forwarded("1"));
    eprintln!("forwarded: worker 0 {w0}, worker 1 {w1}");
    assert!(w0 > 100.0 && w1 > 100.0, "both workers forward: {w0} {w1}");
    // Ten sockets in turn on one source port: one 4-tuple, one queue, one worker, one
    // entry at a time (each new connection replaces the last one's: conn_reuse_mode 3),
    // the last one's at the real server that answered it. Each reads to the end, so the
    // server closes first and the port is free again at once (curl closes first and
    // would leave it in TIME_WAIT).
    let reused = lab
        .exec(
            &lab.ns("c"),
            &[
                "python3",
                "-c",
                REUSE_CLIENT,
                &VIP.to_string(),
                &REUSED_PORT.to_string(),
            ],
        )
        .expect("python runs");
    let answers = String::from_utf8_lossy(&reused.stdout).to_string();
    assert!(
        reused.status.success() && answers.lines().count() == 10,
        "{answers}{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    // explain finds that flow's entry, in one of the two workers, at the server that
    // answered last.
    let rs = answers.lines().last().expect("an answer");
    let said = explain(&lab, REUSED_PORT);
    assert!(
        said.starts_with(&format!(
            "TCP 198.18.0.100:80 from 198.18.0.2:{REUSED_PORT} -> {}\n  why: its connection",
            real_of(rs)
        )),
        "{said}"
    );
    let distinct: std::collections::BTreeSet<&str> = answers.lines().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each a new connection, spread by rr: {answers}"
    );
    // Every flow on one worker: no connection is in both tables, and -Ln sums both.
    let conns = json(&lab, "-Lnc --json");
    let rows = conns["connections"].as_array().expect("rows");
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        let k = (r["source"].to_string(), r["virtual"].to_string());
        assert!(
            seen.insert(k.clone()),
            "a flow in two workers' tables: {k:?}"
        );
    }
    let reused_source = format!("\"{CLIENT_IP}:{REUSED_PORT}\"");
    assert!(
        seen.iter().any(|(src, _)| *src == reused_source),
        "the reused port's entry is listed"
    );
    let table = json(&lab, "-Ln --json");
    let listed: u64 = table["services"][0]["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| {
            r["active_conns"].as_u64().unwrap_or(0) + r["inactive_conns"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(
        listed,
        rows.len() as u64,
        "-Ln counts what the two tables hold"
    );
    assert_eq!(
        table["size"].as_u64(),
        Some(2 * 1_048_576),
        "the size is both workers' capacity"
    );
}

#[test]
fn ipv6_and_ipv4_services_side_by_side() {
    let Some((_one, mut lab)) = lab_of_or_skip(LabSpec {
        ipv6: true,
        ..LabSpec::default()
    }) else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    let director_mac = lab.mac("d").expect("director MAC");
    for c in [
        "-A -t [2001:2::100]:80 -s rr",
        "-a -t [2001:2::100]:80 -r 2001:2::11 -g",
        "-a -t [2001:2::100]:80 -r [2001:2::12]:80 -g",
        "-a -t [2001:2::100]:80 -r 2001:2::13 -g",
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g",
        "-a -t 198.18.0.100:80 -r 198.18.0.12 -g",
    ] {
        x(&lab, c);
    }
    // Mixing families is refused, in one line, and changes nothing.
    let e = lab
        .xdpvs(&["-a", "-t", "[2001:2::100]:80", "-r", "198.18.0.13"])
        .expect_err("an IPv4 real server of an IPv6 service");
    assert!(
        e.to_string()
            .contains("direct routing needs real servers of the service's address family"),
        "{e}"
    );
    lab.wait_resolved()
        .expect("real servers resolve over NDP and ARP");
    let listing = x(&lab, "-Ln");
    assert!(listing.contains("TCP  [2001:2::100]:80 rr\n"), "{listing}");
    assert!(
        listing.contains("  -> [2001:2::13]:80              Route   1      0          0"),
        "{listing}"
    );
    assert!(listing.contains("TCP  198.18.0.100:80 rr\n"), "{listing}");

    // rr across the three IPv6 real servers, in rotation; IPv4 alongside.
    let url6 = format!("http://[{VIP6}]/");
    let answers: Vec<String> = (0..9)
        .map(|_| {
            lab.curl(&url6)
                .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
        })
        .collect();
    assert_rotation(&answers);
    let v4: Vec<String> = (0..4).map(|_| get(&lab)).collect();
    assert_eq!(counts(&v4).values().copied().collect::<Vec<_>>(), [2, 2]);

    // Neighbour discovery: the client's entry for the VIP is the director's MAC.
    let neigh = lab
        .exec(
            &lab.ns("c"),
            &["ip", "-6", "neigh", "show", &VIP6.to_string()],
        )
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        neigh.contains(&director_mac),
        "client's entry {neigh:?}, director {director_mac}"
    );

    // ping -6: the director answers for the VIP.
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "ping",
                "-6",
                "-c",
                "5",
                "-i",
                "0.2",
                "-W",
                "2",
                &VIP6.to_string(),
            ],
        )
        .expect("ping -6");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.contains("5 received"),
        "{said}"
    );

    // ab over IPv6: every request answered.
    let out = lab
        .exec(
            &lab.ns("c"),
            &["ab", "-q", "-n", "3000", "-c", "20", "-s", "20", &url6],
        )
        .expect("ab runs");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "ab failed: {report}");
    assert!(report.contains("Complete requests:      3000"), "{report}");
    assert!(report.contains("Failed requests:        0"), "{report}");

    // Connections are listed with IPv6 addresses, and the stats count them.
    let conns = x(&lab, "-Lnc");
    assert!(
        conns
            .lines()
            .any(|l| l.contains("[2001:2::2]:") && l.contains("[2001:2::100]:80")),
        "{conns}"
    );
    let m = json(&lab, "-Ln --stats --json");
    let svc6 = m["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vip"] == "2001:2::100"))
        .expect("the IPv6 service in --json");
    // 9 curls and 3000 ab connections. A client port reused while the director's entry
    // of its previous connection lives (FIN_WAIT: the real server closed first) continues
    // that entry instead of counting a new connection, as IPVS does for direct routing
    // (conn_reuse_mode 1 reschedules only from TIME_WAIT), hence the 1% allowance, as
    // for IPv4 in `stats_rates_and_connections_agree_with_the_load`.
    let conns = svc6["stats"]["conns"].as_u64().expect("a number");
    assert!(
        conns.abs_diff(3009) <= 30,
        "{conns} connections counted: {svc6}"
    );
    let per_real: u64 = svc6["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| r["stats"]["conns"].as_u64().expect("a number"))
        .sum();
    assert_eq!(per_real, conns, "{svc6}");
    let saved = x(&lab, "-Sn");
    assert!(
        saved.contains("-a -t [2001:2::100]:80 -r [2001:2::12]:80 -g -w 1\n"),
        "{saved}"
    );

    // `xdpvs check` over both families; then rs1 with the IPv6 VIP on its LAN interface.
    let (code, found) = check(&lab);
    assert_eq!(code, Some(0), "{found}");
    for line in [
        "✓ VIP 2001:2::100: no host but the director answers neighbour solicitations for it\n",
        "✓ VIP 198.18.0.100: no host but the director answers ARP for it\n",
        "✓ TCP [2001:2::100]:80 real server 2001:2::13: port 80 is open (SYN-ACK)\n",
        "✓ TCP 198.18.0.100:80 real server 198.18.0.12: port 80 is open (SYN-ACK)\n",
    ] {
        assert!(found.contains(line), "{line} in {found}");
    }
    let rs1 = lab.mac("r1").expect("rs1 MAC");
    lab.sh(
        &lab.ns("r1"),
        "ip -6 addr add 2001:2::100/64 dev eth0 nodad",
    )
    .expect("the IPv6 VIP on eth0");
    let (code, found) = check(&lab);
    assert_eq!(code, Some(1), "{found}");
    let named = format!(
        "✗ VIP 2001:2::100: real server 2001:2::11 ({rs1}) answers neighbour solicitations for \
         it: the clients it answers bypass the director\n    fix: on 2001:2::11: xdpvs rs-setup \
         --vip 2001:2::100 --apply --persist\n"
    );
    assert!(found.contains(&named), "{found}");
    assert!(found.ends_with("1 failed\n"), "{found}");
    // The director's watch says it too, by its IPv6 address.
    let said = format!(
        "VIP conflict: real server 2001:2::11 ({rs1}) answers neighbour solicitations for 2001:2::100"
    );
    assert!(log_shows(&lab, &said, 1, 7), "{}", lab.director_log());
}

/// The MACs that answer ARP for the VIP on the lab's LAN (arping from the client).
fn arp_answers(lab: &Lab) -> BTreeMap<String, usize> {
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "arping",
                "-c",
                "3",
                "-w",
                "4",
                "-I",
                "eth0",
                &VIP.to_string(),
            ],
        )
        .expect("arping");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let mut macs = BTreeMap::new();
    for l in text.lines().filter(|l| l.contains("reply from")) {
        if let Some(mac) = l.split(['[', ']']).nth(1) {
            *macs.entry(mac.to_string()).or_default() += 1;
        }
    }
    macs
}

#[test]
fn rs_setup_fixes_a_real_server_that_answers_arp_for_the_vip_and_undo_restores_it() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    let director_mac = lab.mac("d").expect("director MAC");
    let rs1_mac = lab.mac("r1").expect("rs1 MAC");
    configure_rr(&lab);
    // The classic mistake: the VIP on the LAN interface, ARP sysctls at their defaults.
    let r1 = lab.ns("r1");
    let broken = "ip addr del 198.18.0.100/32 dev lo && ip addr add 198.18.0.100/24 dev eth0 && \
                  sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0 \
                  net.ipv4.conf.eth0.arp_ignore=0 net.ipv4.conf.eth0.arp_announce=0 && \
                  ip route add default via 198.18.0.254 dev eth0 onlink";
    lab.sh(&r1, broken).expect("misconfigured");
    let before = arp_answers(&lab);
    assert!(
        before.contains_key(&rs1_mac) && before.contains_key(&director_mac),
        "the real server steals ARP for the VIP: {before:?}"
    );
    // `xdpvs check` on the director names it, with the fix, and fails.
    let (code, found) = check(&lab);
    assert_eq!(code, Some(1), "{found}");
    let named = format!(
        "✗ VIP 198.18.0.100: real server 198.18.0.11 ({rs1_mac}) answers ARP for it: the \
         clients it answers bypass the director\n    fix: on 198.18.0.11: xdpvs rs-setup --vip \
         198.18.0.100 --apply --persist\n"
    );
    assert!(found.contains(&named), "{found}");
    assert!(found.ends_with("1 failed\n"), "only that: {found}");
    for rs in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
        assert!(
            found.contains(&format!(
                "✓ TCP 198.18.0.100:80 real server {rs}: port 80 is open (SYN-ACK)\n"
            )),
            "{found}"
        );
    }
    let state = std::env::temp_dir().join(format!("{}-rs-setup", lab.ns("r1")));
    let exe = env!("CARGO_BIN_EXE_xdpvs");
    let rs_setup = |args: &[&str]| {
        let mut a = vec![exe, "rs-setup", "--vip", "198.18.0.100", "--state-dir"];
        let dir = state.to_string_lossy().to_string();
        a.push(&dir);
        a.extend_from_slice(args);
        let out = lab.exec(&r1, &a).expect("rs-setup runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // --print changes nothing and says what --apply would do.
    let (code, printed, _) = rs_setup(&["--print"]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("ip addr del 198.18.0.100/24 dev eth0\n"),
        "{printed}"
    );
    assert!(
        printed.contains("ip addr add 198.18.0.100/32 dev lo\n"),
        "{printed}"
    );
    assert!(
        printed.contains("sysctl -w net.ipv4.conf.eth0.arp_ignore=1\n"),
        "{printed}"
    );
    assert!(
        arp_answers(&lab).contains_key(&rs1_mac),
        "--print changed something"
    );
    // --apply: only the director answers ARP for the VIP, and traffic still flows.
    let (code, applied, err) = rs_setup(&["--apply", "--iface", "eth0"]);
    assert_eq!(code, Some(0), "{applied}{err}");
    assert!(
        applied.contains("applied: 6 change(s) above, recorded in")
            && applied.contains("--undo` reverts them"),
        "says what it changed: {applied}"
    );
    let after = arp_answers(&lab);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [&director_mac],
        "{after:?}"
    );
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).len(), 3, "{answers:?}");
    let (code, found) = check(&lab);
    assert_eq!(code, Some(0), "{found}");
    assert!(
        found.contains("✓ VIP 198.18.0.100: no host but the director answers ARP for it\n"),
        "{found}"
    );
    assert!(
        found.ends_with("10 checks: 10 passed, 0 failed\n"),
        "{found}"
    );
    // Idempotent.
    let (code, again, _) = rs_setup(&["--apply", "--iface", "eth0"]);
    assert_eq!(code, Some(0));
    assert!(again.contains("nothing to change"), "{again}");
    // A default route through the director is named, with a non-zero exit.
    let (code, _, err) = rs_setup(&["--print", "--iface", "eth0", "--director", "198.18.0.254"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("goes through the director"), "{err}");
    // --undo restores exactly the state before.
    let (code, undone, err) = rs_setup(&["--undo"]);
    assert_eq!(code, Some(0), "{undone}{err}");
    let addrs = lab.sh(&r1, "ip -o addr show; sysctl -n net.ipv4.conf.eth0.arp_ignore net.ipv4.conf.all.arp_announce").expect("read back");
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(addrs.contains("inet 198.18.0.100/24"), "{addrs}");
    assert!(!addrs.contains("inet 198.18.0.100/32"), "{addrs}");
    assert!(addrs.ends_with("0\n0\n"), "{addrs}");
    assert!(arp_answers(&lab).contains_key(&rs1_mac));
    assert_eq!(check(&lab).0, Some(1), "broken again");
    // A real server without the VIP, and one with nothing on the port.
    lab.sh(&r1, "ip addr del 198.18.0.100/24 dev eth0")
        .expect("VIP gone");
    lab.stop_programs("r2");
    let (code, found) = check(&lab);
    assert_eq!(code, Some(1), "{found}");
    assert!(
        found.contains(
            "✗ TCP 198.18.0.100:80 real server 198.18.0.11: a SYN sent to its MAC got no \
             answer: it does not take traffic for 198.18.0.100 (the VIP is not on its lo, or a \
             firewall drops it)\n    fix: on 198.18.0.11: xdpvs rs-setup --vip 198.18.0.100 \
             --apply --persist\n"
        ),
        "{found}"
    );
    assert!(
        found.contains(
            "✗ TCP 198.18.0.100:80 real server 198.18.0.12: port 80 is closed: the SYN was reset\n"
        ),
        "{found}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// `check` never fails a healthy real server, right after `rs-setup --apply` made it
/// one, twenty times over: each time the real server first answers ARP for the VIP (the
/// classic mistake, which check finds), then is fixed, then checked at once. (It used to
/// fail two times in three: the director's probes went out behind a stale frame left in
/// their UMEM buffer, a frame of the real server's own, so the switch learnt the real
/// server's MAC on the director's port and the probe never reached it.)
#[test]
fn check_never_fails_a_real_server_right_after_rs_setup_fixed_it() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    let r1 = lab.ns("r1");
    let state = std::env::temp_dir().join(format!("{r1}-rs-setup-20"));
    let state = state.to_string_lossy().to_string();
    let broken = "ip addr del 198.18.0.100/32 dev lo; ip addr add 198.18.0.100/24 dev eth0 && \
                  sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0 \
                  net.ipv4.conf.eth0.arp_ignore=0 net.ipv4.conf.eth0.arp_announce=0";
    for round in 1..=20 {
        lab.sh(&r1, broken).expect("misconfigured");
        let (code, found) = check(&lab);
        assert!(
            code == Some(1)
                && found.contains("real server 198.18.0.11 (")
                && found.contains("answers ARP for it"),
            "round {round}: the mistake is found:\n{found}"
        );
        let _ = std::fs::remove_dir_all(&state);
        let exe = env!("CARGO_BIN_EXE_xdpvs");
        let applied = lab
            .exec(
                &r1,
                &[
                    exe,
                    "rs-setup",
                    "--vip",
                    "198.18.0.100",
                    "--state-dir",
                    &state,
                    "--apply",
                    "--iface",
                    "eth0",
                ],
            )
            .expect("rs-setup runs");
        assert!(
            String::from_utf8_lossy(&applied.stdout).contains("ip addr add 198.18.0.100/32 dev lo"),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let (code, found) = check(&lab);
        assert!(
            code == Some(0) && found.ends_with("10 checks: 10 passed, 0 failed\n"),
            "round {round} of 20, check right after rs-setup --apply:\n{found}"
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}

/// `xdpvs check` against the lab's director: its exit status and what it printed.
fn check(lab: &Lab) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdpvs"))
        .arg("check")
        .env("XDPVS_SOCKET", lab.socket())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("xdpvs check runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// `xdpvs explain` of the client's port `cport` to the lab's TCP service.
fn explain(lab: &Lab, cport: u16) -> String {
    x(
        lab,
        &format!("explain -t 198.18.0.100:80 --client {CLIENT_IP}:{cport}"),
    )
}

/// The address of the real server that answered `rsN`.
fn real_of(answer: &str) -> std::net::Ipv4Addr {
    let n = answer
        .strip_prefix("rs")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a real server's answer: {answer}"));
    lab::real_ip(n)
}

/// One HTTP request from the client's port `cport`: the answering server's name.
fn request_from(lab: &Lab, cport: u16) -> String {
    requests_from(lab, cport, 1).remove(0)
}

/// `n` HTTP/1.0 requests one after another, each on a new connection from the client's
/// port `cport` (the server closes first): the answering servers' names.
fn requests_from(lab: &Lab, cport: u16, n: usize) -> Vec<String> {
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "python3",
                "-c",
                REUSE_CLIENT,
                &VIP.to_string(),
                &cport.to_string(),
                &n.to_string(),
            ],
        )
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\ndirector log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.director_log()
    );
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), n, "{answers:?}");
    answers
}

/// The service's `--stats` connections, and each real server's by name (`rsN`).
fn conns_counted(lab: &Lab) -> (u64, BTreeMap<String, u64>) {
    let stats = json(lab, "-Ln --stats --json");
    let svc = &stats["services"][0];
    let per_real = svc["reals"]
        .as_array()
        .expect("reals")
        .iter()
        .map(|r| {
            let addr: std::net::Ipv4Addr = r["address"]
                .as_str()
                .and_then(|a| a.split(':').next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("an address: {r}"));
            let n = (1..=3)
                .find(|&n| lab::real_ip(n) == addr)
                .expect("a lab real");
            (
                format!("rs{n}"),
                r["stats"]["conns"].as_u64().expect("number"),
            )
        })
        .collect();
    (svc["stats"]["conns"].as_u64().expect("number"), per_real)
}

/// Adds the TCP service over the three real servers with rr, each with a fast TCP
/// check, and waits until they resolve.
fn configure_checked_rr(lab: &Lab) {
    let check =
        "--check tcp --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2";
    x(lab, "-A -t 198.18.0.100:80 -s rr");
    for n in 1..=3 {
        x(
            lab,
            &format!("-a -t 198.18.0.100:80 -r 198.18.0.1{n} -g {check}"),
        );
    }
    lab.wait_resolved().expect("resolved");
    x(lab, "-Z");
}

/// Stops the HTTP server of `rs` (`rsN`) and waits until its check takes it out.
fn take_out_of_service(lab: &mut Lab, rs: &str) {
    let role = rs.replace("rs", "r");
    lab.stop_programs(&role);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ip = real_of(rs);
    loop {
        let l = lab.list_notes().expect("-Ln");
        if l.contains(&format!(
            "real server {ip}:80 of TCP 198.18.0.100:80: check failed"
        )) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{rs} never failed its check:\n{l}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// IPVS's conn_reuse_mode, as `ab` and HTTP/1.0 clients exercise it: a client port
/// reused for connection after connection (the server closes first, so the director's
/// entry is left in FIN_WAIT). By default (3) each is a new connection, spread by the
/// scheduler and counted; with 0 they continue the old entry, as in IPVS. In every mode
/// a SYN never reaches a real server out of service.
#[test]
fn a_reused_client_port_is_scheduled_afresh_and_never_to_a_real_server_out_of_service() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    let shown = json(&lab, "-L --timeout --json");
    assert_eq!(shown["sysctl"]["conn_reuse_mode"], 3, "{shown}");
    configure_checked_rr(&lab);
    const PORT: u16 = 23456;
    // Twelve connections with every real server up: rr's rotation, each one counted.
    let first = requests_from(&lab, PORT, 12);
    assert_rotation(&first);
    let (total, per_real) = conns_counted(&lab);
    assert_eq!(total, 12, "{per_real:?}");
    assert!(per_real.values().all(|&c| c == 4), "{per_real:?}");
    // The port's entry now holds the last one's real server, and explain says what a
    // new connection from the port does.
    let out = first.last().expect("answers").clone();
    let said = explain(&lab, PORT);
    assert!(
        said.contains(&format!("-> {}", real_of(&out)))
            && said.contains("(FIN_WAIT, expires in")
            && said.contains("a new connection (SYN) from this port is scheduled afresh"),
        "{said}"
    );
    // Its check fails, and the next eight connections from the port go to the other
    // two, in turn.
    take_out_of_service(&mut lab, &out);
    let rest = requests_from(&lab, PORT, 8);
    let spread = counts(&rest);
    assert!(
        !spread.contains_key(&out),
        "a SYN reached {out}, out of service: {rest:?}"
    );
    assert!(
        spread.len() == 2 && spread.values().all(|&c| c == 4),
        "{rest:?}"
    );
    let (total, per_real) = conns_counted(&lab);
    assert_eq!(total, 20, "every connection counted: {per_real:?}");
    assert_eq!(per_real[&out], 4, "{per_real:?}");
    lab.stop_director("TERM").expect("director stops");
    lab.start_http(&out.replace("rs", "r"), &out, 80)
        .expect("http again");

    // Mode 0: the port's connections continue its entry, to one real server, counted
    // once, until that server is out of service: then the next is scheduled afresh.
    lab.start_director(&["--conn-reuse-mode", "0"])
        .expect("director starts");
    let shown = json(&lab, "-L --timeout --json");
    assert_eq!(shown["sysctl"]["conn_reuse_mode"], 0, "{shown}");
    configure_checked_rr(&lab);
    let sticky = requests_from(&lab, PORT, 4);
    assert_eq!(counts(&sticky).len(), 1, "mode 0 sticks: {sticky:?}");
    assert_eq!(conns_counted(&lab).0, 1);
    let said = explain(&lab, PORT);
    assert!(!said.contains("scheduled afresh"), "{said}");
    let out = sticky[0].clone();
    take_out_of_service(&mut lab, &out);
    let moved = requests_from(&lab, PORT, 4);
    assert_eq!(counts(&moved).len(), 1, "mode 0 sticks again: {moved:?}");
    assert_ne!(moved[0], out, "a SYN reached {out}, out of service");
    assert_eq!(
        conns_counted(&lab).0,
        2,
        "the rescheduled connection is counted"
    );
    // A mode the kernel does not have is refused in one line.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_xdpvs"))
        .args(["run", "-i", "lo", "--conn-reuse-mode", "4"])
        .output()
        .expect("xdpvs runs");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("give 0, 1, 2 or 3"),
        "{err}"
    );
}

#[test]
fn explain_agrees_with_where_the_traffic_goes() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.start_director(&[]).expect("director starts");
    configure_rr(&lab);
    // A new flow: the pick explain predicts is where the flow then goes, and explain
    // then finds its entry there.
    for cport in [21001, 21002, 21003, 21004] {
        let before = explain(&lab, cport);
        assert!(
            before.contains("why: no entry: a new connection; rr in worker 0 would pick it now"),
            "{before}"
        );
        let predicted = before
            .lines()
            .next()
            .and_then(|l| l.rsplit(" -> ").next())
            .expect("a pick")
            .to_string();
        let rs = request_from(&lab, cport);
        assert_eq!(real_of(&rs).to_string(), predicted, "{before}");
        let after = explain(&lab, cport);
        assert!(
            after.contains(&format!(
                "-> {predicted}\n  why: its connection: an entry in worker 0's table"
            )),
            "{after}"
        );
    }
    // Persistence: a client's new port follows its template.
    x(&lab, "-E -t 198.18.0.100:80 -s rr -p 300");
    let rs = request_from(&lab, 21010);
    let said = explain(&lab, 21011);
    assert!(
        said.starts_with(&format!(
            "TCP 198.18.0.100:80 from {CLIENT_IP}:21011 -> {}\n  why: no entry; the client's persistence template",
            real_of(&rs)
        )),
        "{said}"
    );
    assert!(
        said.contains("persistence: 300 s, clients grouped by /32"),
        "{said}"
    );
    assert_eq!(request_from(&lab, 21011), rs);
    // A service that does not exist: one line, non-zero.
    let e = lab
        .xdpvs(&[
            "explain",
            "-t",
            "198.18.0.100:81",
            "--client",
            "198.18.0.2:1",
        ])
        .expect_err("no such service");
    assert!(e.to_string().contains("no such service"), "{e}");
    // A real server that does not exist (an address on the LAN nobody holds) is said
    // within seconds, not only shown as unresolved by -Ln.
    x(&lab, "-a -t 198.18.0.100:80 -r 198.18.0.14 -g");
    assert!(
        log_shows(
            &lab,
            "real server 198.18.0.14 has not answered ARP for 3 s: it gets no traffic until it does",
            1,
            8
        ),
        "{}",
        lab.director_log()
    );
}

/// `run --announce`: both families' VIPs kept on the interface with a short lifetime
/// while in service, guarded by the nftables table, withdrawn one by one, and all gone
/// at a clean stop (SIGTERM drains first).
#[test]
fn announced_vips_of_both_families_live_on_the_interface_while_in_service() {
    if let Err(why) = lab::available() {
        xdpvs_testkit::cannot_run("end-to-end test", &why);
        return;
    }
    if xdpvs_testkit::lab::ecmp::available().is_err() {
        xdpvs_testkit::cannot_run(
            "end-to-end test",
            "nft is not installed (bash .ci/setup installs it)",
        );
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let spec = LabSpec {
        ipv6: true,
        reals: 1,
        ..LabSpec::default()
    };
    let mut lab = Lab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs")), spec).expect("lab builds");
    let d = lab.ns("d");
    lab.sh(&d, "ip link add ifb0 type ifb").expect("ifb");
    // With --announce the VIPs are routed to the director, which answers no ARP or NDP
    // for them: the client routes them via its address, as a router would.
    lab.sh(
        &lab.ns("c"),
        &format!(
            "ip route add {VIP}/32 via {DIRECTOR_IP} && ip -6 route add {VIP6}/128 via {}",
            lab::DIRECTOR_IP6
        ),
    )
    .expect("routes");
    lab.start_director(&["--announce", "ifb0", "--metrics", "198.18.0.1:9100"])
        .expect("director starts");
    for c in [
        "-A -t [2001:2::100]:80 -s mh",
        "-a -t [2001:2::100]:80 -r 2001:2::11 -g",
        "-A -t 198.18.0.100:80 -s mh",
        "-a -t 198.18.0.100:80 -r 198.18.0.11 -g",
    ] {
        x(&lab, c);
    }
    lab.wait_resolved().expect("resolved");
    let addrs = |lab: &Lab| {
        String::from_utf8_lossy(&lab.sh(&d, "ip addr show dev ifb0").expect("ip").stdout)
            .into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(addrs(&lab).contains("198.18.0.100/32") && addrs(&lab).contains("2001:2::100/128")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            addrs(&lab),
            lab.director_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Short-lived: never `forever`, at most 4 s left.
    let shown = addrs(&lab);
    for line in shown.lines().filter(|l| l.contains("valid_lft")) {
        if line.contains("forever") {
            continue; // the link-local address
        }
        let secs: u32 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.strip_suffix("sec"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(secs <= 4, "{line}");
    }
    assert_eq!(shown.matches("dynamic").count(), 2, "{shown}");
    let table = lab
        .sh(&d, "nft list table inet xdpvs")
        .expect("the guard exists");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("198.18.0.100") && table.contains("2001:2::100"),
        "{table}"
    );
    // Traffic the director forwards never meets the guard.
    assert_eq!(get(&lab), "rs1");
    let v6 = lab
        .curl("http://[2001:2::100]/")
        .expect("IPv6 through the director");
    assert_eq!(v6, "rs1");
    let (m, text) = scrape(&lab);
    for vip in ["198.18.0.100", "2001:2::100"] {
        assert_eq!(
            metric(&m, "xdpvs_vip_announced", &[("vip", vip)]),
            1.0,
            "{text}"
        );
    }
    // Quiesced: withdrawn (and said so in the metrics), back at weight 1.
    x(&lab, "-e -t 198.18.0.100:80 -r 198.18.0.11 -g -w 0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!addrs(&lab).contains("198.18.0.100/32"), "{}", addrs(&lab));
    let (m, text) = scrape(&lab);
    assert_eq!(
        metric(&m, "xdpvs_vip_announced", &[("vip", "198.18.0.100")]),
        0.0,
        "{text}"
    );
    assert!(
        text.contains("xdpvs_vip_announced{vip=\"198.18.0.100\"} 0"),
        "{text}"
    );
    x(&lab, "-e -t 198.18.0.100:80 -r 198.18.0.11 -g -w 1");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(addrs(&lab).contains("198.18.0.100/32"), "{}", addrs(&lab));
    // The IPv6 service gone: its /128 is withdrawn, the IPv4 VIP stays.
    x(&lab, "-D -t [2001:2::100]:80");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shown = addrs(&lab);
    assert!(
        !shown.contains("2001:2::100") && shown.contains("198.18.0.100/32"),
        "{shown}"
    );
    let status = lab.stop_director("TERM").expect("stops");
    assert!(status.success(), "{status}\n{}", lab.director_log());
    assert!(
        lab.director_log().contains("drained:"),
        "{}",
        lab.director_log()
    );
    assert!(!addrs(&lab).contains("198.18.0.100"), "{}", addrs(&lab));
    assert!(
        lab.sh(&d, "nft list table inet xdpvs").is_err(),
        "a clean stop removes the guard"
    );
}

/// LVS-NAT, one-armed: the real servers on a subnet of their own on the director's LAN
/// (198.18.1.0/24, no VIP on them, set up by `rs-setup --nat`), their default route via
/// the director's address there; the service, from a keepalived.conf without `lb_kind`
/// (NAT, keepalived's default), maps port 80 to 8080. `check` finds the real server
/// whose route is wrong; requests rotate over the three, ab sees no failure, the listing
/// says Masq and the mapped port, the checks' answers stay the kernel's, ICMP comes back
/// from the VIP and a large download arrives whole.
#[test]
fn nat_one_armed_maps_ports_and_serves_ab_without_a_failure() {
    let Some((_guard, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.sh(&lab.ns("d"), "ip addr add 198.18.1.1/24 dev eth0")
        .expect("the director's address on the real servers' subnet");
    // Each real server moves to the subnet; rs-setup --nat removes the VIP and routes
    // via the director (r3 later: first `check` must find it wrong).
    let exe = env!("CARGO_BIN_EXE_xdpvs");
    let state = std::env::temp_dir().join(format!("{}-rs-setup-nat", lab.ns("r1")));
    let rs_setup_nat = |lab: &Lab, n: usize| {
        let dir = state.join(format!("r{n}")).to_string_lossy().to_string();
        let out = lab
            .exec(
                &lab.ns(&format!("r{n}")),
                &[
                    exe,
                    "rs-setup",
                    "--nat",
                    "--vip",
                    "198.18.0.100",
                    "--director",
                    "198.18.1.1",
                    "--apply",
                    "--state-dir",
                    &dir,
                ],
            )
            .expect("rs-setup runs");
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    };
    for n in 1..=3 {
        let ns = lab.ns(&format!("r{n}"));
        // The replies cross AF_XDP, which sends frames as they are: checksums complete.
        lab.sh(
            &ns,
            &format!(
                "ip addr flush dev eth0 && ip addr add 198.18.1.1{n}/24 dev eth0 && \
                 ethtool -K eth0 tx off >/dev/null"
            ),
        )
        .expect("a NAT real server");
        if n < 3 {
            let said = rs_setup_nat(&lab, n);
            assert!(
                said.contains("ip addr del 198.18.0.100/32 dev lo\n")
                    && said.contains("ip route replace default via 198.18.1.1\n"),
                "{said}"
            );
        }
        lab.start_http(&format!("r{n}"), &format!("rs{n}"), 8080)
            .expect("HTTP on 8080");
    }
    // The service as keepalived.conf says it: no lb_kind (keepalived's default, NAT),
    // real servers on another port, TCP checks every second.
    start_with_keepalived(&mut lab, &nat_keepalived_conf(""), &[]);
    lab.wait_resolved().expect("real servers resolve");
    // r3 has no route back through the director: `check` says so, with the fix.
    let (code, found) = check(&lab);
    assert_eq!(code, Some(1), "{found}");
    assert!(
        found.contains(
            "on 198.18.1.13: xdpvs rs-setup --nat --vip 198.18.0.100 --director 198.18.1.1 --apply"
        ),
        "{found}"
    );
    assert!(
        found.contains("real server 198.18.1.11: port 8080 is open (SYN-ACK)"),
        "{found}"
    );
    rs_setup_nat(&lab, 3);
    let (code, found) = check(&lab);
    assert_eq!(code, Some(0), "{found}");
    let listing = x(&lab, "-Ln");
    assert!(
        listing.contains("  -> 198.18.1.11:8080             Masq    1"),
        "{listing}"
    );
    let saved = x(&lab, "-S -n");
    assert!(
        saved.contains("-a -t 198.18.0.100:80 -r 198.18.1.12:8080 -m -w 1"),
        "{saved}"
    );
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    let report = ab(&lab, 4000, 20, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(report.contains("Complete requests:      4000"), "{report}");
    let json = x(&lab, "-L -n --stats --json");
    assert!(json.contains("\"forward\": \"masq\""), "{json}");
    // The connection table names the real server's own port.
    let conns = x(&lab, "-Lnc");
    assert!(conns.contains("198.18.1.11:8080"), "{conns}");
    assert!(
        conns
            .lines()
            .filter(|l| l.contains("198.18.1.1"))
            .all(|l| l.trim_end().ends_with(":8080")),
        "{conns}"
    );
    // The checks connect to 8080 from the director's own address: their answers from
    // the real servers' NAT port are the kernel's, not replies to rewrite. Every check
    // has run (twice) and passed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut health = x(&lab, "-L -n --json");
    while ["\"checks\": 0,", "\"checks\": 1,"]
        .iter()
        .any(|c| health.contains(c))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "checks never ran: {health}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        health = x(&lab, "-L -n --json");
    }
    assert_eq!(health.matches("\"failures\": 0,").count(), 3, "{health}");
    assert_eq!(health.matches("\"up\": true").count(), 3, "{health}");
    // A real server whose server stops is taken out by its check, and the others serve.
    lab.stop_programs("r2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !x(&lab, "-L -n --json").contains("\"up\": false") {
        assert!(
            std::time::Instant::now() < deadline,
            "r2's check never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answers: Vec<String> = (0..4).map(|_| get(&lab)).collect();
    assert_eq!(counts(&answers).get("rs2"), None, "{answers:?}");

    // ICMP from the real server's side: a UDP service whose real server does not listen
    // answers port unreachable, which reaches the client from the VIP: its connected
    // socket is refused.
    assert_udp_port_unreachable_reaches_the_client(&lab);

    // A large download through NAT (every segment rewritten, every checksum updated):
    // 30 MB from a real server's second port, byte for byte.
    assert_downloaded_through_nat(&mut lab, 30_000_000);
}

/// LVS-NAT with two arms (`run -i eth0 -i eth1`), as classic directors with two NICs:
/// the clients on the first LAN, three NAT real servers (80 mapped to 8080) on a second
/// one that only the director's second interface reaches, their gateway the director.
/// Every request crosses from one interface to the other and every reply back: rr in
/// rotation, ab without a failure, ICMP from the real servers' side, and a large download
/// byte for byte.
#[test]
fn nat_two_armed_crosses_interfaces_both_ways_and_serves_ab_without_a_failure() {
    let Some((_guard, mut lab)) = lab_or_skip() else {
        return;
    };
    lab.second_arm(
        "198.18.1.1".parse().expect("an address"),
        &["r1", "r2", "r3"],
    )
    .expect("the real servers' LAN");
    nat_real_servers(&mut lab);
    // The client has no route to the real servers' LAN: only the director joins them.
    assert!(
        lab.sh(&lab.ns("c"), "ping -c1 -W1 198.18.1.11").is_err(),
        "the client reaches 198.18.1.0/24 itself"
    );
    start_with_keepalived(
        &mut lab,
        &nat_keepalived_conf("  lb_kind NAT\n"),
        &["-i", "eth1"],
    );
    lab.wait_resolved().expect("real servers resolve on eth1");
    let log = lab.director_log();
    assert!(
        log.contains(
            "two-armed: clients reach the VIPs through eth0, the real servers are behind eth1"
        ),
        "{log}"
    );
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    let report = ab(&lab, 4000, 20, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(report.contains("Complete requests:      4000"), "{report}");
    // The real servers saw the director's second interface, the client its first.
    let mac = |ns: &str, dev: &str| {
        let o = lab
            .sh(ns, &format!("cat /sys/class/net/{dev}/address"))
            .expect("a MAC");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (d, eth0, eth1) = (lab.ns("d"), "eth0", "eth1");
    let (front, back) = (mac(&d, eth0), mac(&d, eth1));
    let neigh = |role: &str, ip: &str| {
        let o = lab
            .sh(&lab.ns(role), &format!("ip neigh show {ip}"))
            .expect("ip neigh");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(
        neigh("r1", "198.18.1.1").contains(&back),
        "r1's gateway is eth1"
    );
    assert!(
        neigh("c", "198.18.0.100").contains(&front),
        "the VIP is at eth0"
    );
    // The health checks (from the director's own address on eth1) pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut health = x(&lab, "-L -n --json");
    while health.matches("\"up\": true").count() < 3 || health.contains("\"checks\": 0,") {
        assert!(std::time::Instant::now() < deadline, "checks: {health}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        health = x(&lab, "-L -n --json");
    }
    // Port unreachable from the real servers' side reaches the client from the VIP.
    assert_udp_port_unreachable_reaches_the_client(&lab);
    // 10 MB across both interfaces, byte for byte.
    assert_downloaded_through_nat(&mut lab, 10_000_000);
}

/// LVS-NAT on two queues, the switch spreading frames by flow as a NIC's RSS does: a
/// real server's reply (its own 4-tuple) often lands on another queue than its client's
/// packets, whose worker holds the connection; it is handed to that worker. ab without a
/// failure, and the hand-offs counted.
#[test]
fn nat_on_two_queues_hands_each_packet_to_the_worker_of_its_connection() {
    let Some((_guard, mut lab)) = lab_of_or_skip(LabSpec {
        director_queues: 2,
        rss: true,
        ..LabSpec::default()
    }) else {
        return;
    };
    lab.sh(&lab.ns("d"), "ip addr add 198.18.1.1/24 dev eth0")
        .expect("the director's address on the real servers' subnet");
    nat_real_servers(&mut lab);
    lab.start_director(&["--metrics", "198.18.0.1:9100"])
        .expect("director starts on two queues");
    x(&lab, "-A -t 198.18.0.100:80 -s rr");
    for n in 1..=3 {
        x(
            &lab,
            &format!("-a -t 198.18.0.100:80 -r 198.18.1.1{n}:8080 -m"),
        );
    }
    lab.wait_resolved().expect("real servers resolve");
    let report = ab(&lab, 4000, 20, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(report.contains("Complete requests:      4000"), "{report}");
    let (m, _) = scrape(&lab);
    let handed = |w: &str| {
        metric(
            &m,
            "xdpvs_worker_handed_off_packets_total",
            &[("worker", w)],
        )
    };
    let forwarded = |w: &str| metric(&m, "xdpvs_worker_forwarded_packets_total", &[("worker", w)]);
    let (h0, h1) = (handed("0"), handed("1"));
    eprintln!("handed off: worker 0 {h0}, worker 1 {h1}");
    assert!(h0 + h1 > 100.0, "packets were handed over: {h0} {h1}");
    assert!(
        forwarded("0") > 100.0 && forwarded("1") > 100.0,
        "both workers forward"
    );
    let lost = metric(
        &m,
        "xdpvs_worker_dropped_packets_total",
        &[("reason", "nat_no_connection")],
    );
    assert_eq!(lost, 0.0, "no reply without its connection");
}

/// Starts the director (with `extra` options) on a keepalived.conf that says `conf`.
fn start_with_keepalived(lab: &mut Lab, conf: &str, extra: &[&str]) {
    let path = std::env::temp_dir().join(format!("{}-keepalived.conf", lab.ns("d")));
    std::fs::write(&path, conf).expect("keepalived.conf");
    let mut args = extra.to_vec();
    args.extend(["--keepalived", path.to_str().expect("utf-8")]);
    lab.start_director(&args).expect("director starts");
    let _ = std::fs::remove_file(&path);
}

/// A keepalived.conf of one TCP service on the VIP's port 80, rr over the NAT real
/// servers 198.18.1.11-13 on port 8080, TCP checks every second, with `lb_kind` (a line,
/// or nothing: keepalived's default is NAT).
fn nat_keepalived_conf(lb_kind: &str) -> String {
    let reals: String = (1..=3)
        .map(|n| format!("  real_server 198.18.1.1{n} 8080 {{\n    TCP_CHECK {{\n      connect_timeout 3\n    }}\n  }}\n"))
        .collect();
    format!("virtual_server 198.18.0.100 80 {{\n  delay_loop 1\n  lb_algo rr\n{lb_kind}  protocol TCP\n{reals}}}\n")
}

/// Makes r1..r3 NAT real servers at 198.18.1.11-13/24, routed through the director's
/// 198.18.1.1, serving HTTP on 8080 (no VIP; checksums complete, as AF_XDP sends frames
/// as they are).
fn nat_real_servers(lab: &mut Lab) {
    for n in 1..=3 {
        lab.sh(
            &lab.ns(&format!("r{n}")),
            &format!(
                "ip -4 addr flush dev eth0 && ip addr add 198.18.1.1{n}/24 dev eth0 && \
                 ip addr del 198.18.0.100/32 dev lo && ip route replace default via 198.18.1.1 && \
                 ethtool -K eth0 tx off >/dev/null"
            ),
        )
        .expect("a NAT real server");
        lab.start_http(&format!("r{n}"), &format!("rs{n}"), 8080)
            .expect("HTTP on 8080");
    }
}

/// A UDP service on port 53 whose NAT real server (198.18.1.13, port 5353) does not
/// listen: its port unreachable reaches the client from the VIP, whose connected socket
/// is refused.
fn assert_udp_port_unreachable_reaches_the_client(lab: &Lab) {
    x(lab, "-A -u 198.18.0.100:53 -s rr");
    x(lab, "-a -u 198.18.0.100:53 -r 198.18.1.13:5353 -m");
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "python3",
                "-c",
                "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(5)\ns.connect(('198.18.0.100', 53))\ns.send(b'q')\ntry:\n    s.recv(100)\n    print('answered')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')",
            ],
        )
        .expect("python runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.director_log()
    );
}

/// `bytes` downloaded by the client from a file server on r1's port 8081, behind the
/// service 198.18.0.100:81 by NAT (every segment rewritten, every checksum updated),
/// byte for byte.
fn assert_downloaded_through_nat(lab: &mut Lab, bytes: u32) {
    let r1 = lab.ns("r1");
    let dir = std::env::temp_dir().join(format!("{}-download", lab.ns("c")));
    std::fs::create_dir_all(&dir).expect("a directory");
    let big: Vec<u8> = (0..bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big"), &big).expect("a large file");
    lab.spawn(
        &r1,
        &[
            "python3",
            "-m",
            "http.server",
            "8081",
            "--directory",
            &dir.to_string_lossy(),
        ],
    )
    .expect("a file server");
    x(lab, "-A -t 198.18.0.100:81 -s rr");
    x(lab, "-a -t 198.18.0.100:81 -r 198.18.1.11:8081 -m");
    lab.wait_resolved().expect("resolved");
    let got = dir.join("got");
    let fetched = lab
        .sh(
            &lab.ns("c"),
            &format!(
                "for i in $(seq 50); do curl -sfI http://198.18.0.100:81/big >/dev/null && break; sleep 0.1; done; \
                 curl -sf --max-time 60 -o {} http://198.18.0.100:81/big",
                got.display()
            ),
        )
        .map(|o| o.status.success());
    let same = std::fs::read(&got).is_ok_and(|g| g == big);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        fetched.unwrap_or(false) && same,
        "{bytes} bytes through NAT, byte for byte\n{}",
        lab.director_log()
    );
}

/// LVS-NAT over IPv6, in a service that mixes methods: two real servers on
/// 2001:2:0:1::/64 behind the director by NAT (80 mapped to 8080), one by direct
/// routing; rr in rotation over the three and ab without a failure.
#[test]
fn nat_over_ipv6_maps_ports_and_serves_ab_without_a_failure() {
    let Some((_one, mut lab)) = lab_of_or_skip(LabSpec {
        ipv6: true,
        ..LabSpec::default()
    }) else {
        return;
    };
    lab.sh(
        &lab.ns("d"),
        "ip -6 addr add 2001:2:0:1::1/64 dev eth0 nodad",
    )
    .expect("the director's address on the real servers' subnet");
    // r1 and r2 by NAT; r3 stays a direct-routing real server (the VIP on its lo).
    for n in 1..=2 {
        lab.sh(
            &lab.ns(&format!("r{n}")),
            &format!(
                "ip -6 addr flush dev eth0 scope global && \
                 ip -6 addr add 2001:2:0:1::1{n}/64 dev eth0 nodad && \
                 ip -6 addr del {VIP6}/128 dev lo && \
                 ip -6 route replace default via 2001:2:0:1::1 && \
                 ethtool -K eth0 tx off >/dev/null"
            ),
        )
        .expect("a NAT real server");
        lab.start_http(&format!("r{n}"), &format!("rs{n}"), 8080)
            .expect("HTTP on 8080");
    }
    lab.start_director(&[]).expect("director starts");
    x(&lab, "-A -t [2001:2::100]:80 -s rr");
    for n in 1..=2 {
        x(
            &lab,
            &format!("-a -t [2001:2::100]:80 -r [2001:2:0:1::1{n}]:8080 -m"),
        );
    }
    x(&lab, "-a -t [2001:2::100]:80 -r 2001:2::13 -g");
    lab.wait_resolved().expect("real servers resolve over NDP");
    let listing = x(&lab, "-Ln");
    assert!(
        listing.contains("  -> [2001:2:0:1::11]:8080        Masq    1"),
        "{listing}"
    );
    assert!(
        listing.contains("  -> [2001:2::13]:80              Route   1"),
        "{listing}"
    );
    let url6 = format!("http://[{VIP6}]/");
    let answers: Vec<String> = (0..6)
        .map(|_| {
            lab.curl(&url6)
                .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
        })
        .collect();
    assert_rotation(&answers);
    let out = lab
        .exec(
            &lab.ns("c"),
            &["ab", "-q", "-n", "1000", "-c", "10", "-s", "20", &url6],
        )
        .expect("ab runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(report.contains("Complete requests:      1000"), "{report}");
}

/// LVS-TUN: three real servers on a subnet of their own (198.18.2.0/24, and
/// 2001:2:0:2::/64) behind a router namespace, each decapsulating with the lab's tc
/// program (this kernel has no tunnel modules): one over IPIP (IPv6 in IPv6 for the IPv6
/// service), one over GUE with checksums, one over GRE with checksums. Their answers go
/// from the VIP through the router straight to the client. One service mixes them with
/// a direct-routing and a NAT real server; ab sees no failure; a DF packet too big for a
/// tunnel gets "fragmentation needed" from the VIP, which the client's kernel takes.
#[test]
fn tunnels_ipip_gue_gre_and_a_service_mixing_every_method() {
    let Some((_guard, mut lab)) = lab_of_or_skip(LabSpec {
        reals: 6,
        ipv6: true,
        ..LabSpec::default()
    }) else {
        return;
    };
    let router = lab.ns("r6");
    lab.stop_programs("r6");
    lab.sh(
        &router,
        "ip -4 addr flush dev eth0 && ip -6 addr del 2001:2::16/64 dev eth0 && \
         ip addr del 198.18.0.100/32 dev lo && ip addr add 198.18.0.254/24 dev eth0 && ip addr add 198.18.2.254/24 dev eth0 && \
         ip addr add 2001:2::254/64 dev eth0 nodad && ip addr add 2001:2:0:2::254/64 dev eth0 nodad && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
           net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0",
    )
    .expect("the router");
    for n in 1..=3 {
        let role = format!("r{n}");
        lab.sh(
            &lab.ns(&role),
            &format!(
                "ip -4 addr flush dev eth0 && ip -6 addr del 2001:2::1{n}/64 dev eth0 && \
                 ip addr add 198.18.2.1{n}/24 dev eth0 && \
                 ip addr add 2001:2:0:2::1{n}/64 dev eth0 nodad && \
                 ip route add default via 198.18.2.254 && ip -6 route add default via 2001:2:0:2::254"
            ),
        )
        .expect("a tunnel real server in another subnet");
        lab.decapsulate(&role).expect("decapsulation");
    }
    // r5: NAT, on the real servers' subnet of the director, on port 8080.
    let d = lab.ns("d");
    lab.sh(&d, "ip addr add 198.18.1.1/24 dev eth0 && ip route add 198.18.2.0/24 via 198.18.0.254 && ip -6 route add 2001:2:0:2::/64 via 2001:2::254")
        .expect("the director's routes");
    lab.sh(
        &lab.ns("r5"),
        "ip addr flush dev eth0 && ip addr del 198.18.0.100/32 dev lo && \
         ip addr add 198.18.1.15/24 dev eth0 && ip route add default via 198.18.1.1 && \
         ethtool -K eth0 tx off >/dev/null",
    )
    .expect("a NAT real server");
    lab.stop_programs("r5");
    lab.start_http("r5", "rs5", 8080).expect("HTTP on 8080");
    // The IPv4 service as keepalived.conf says it: lb_kind TUN (IPIP), two real servers
    // overriding it with their own tunnel types.
    start_with_keepalived(
        &mut lab,
        "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  lb_kind TUN\n  protocol TCP\n  \
         real_server 198.18.2.11 80 {\n    weight 1\n  }\n  \
         real_server 198.18.2.12 80 {\n    lvs_method TUN type gue port 6080 csum\n  }\n  \
         real_server 198.18.2.13 80 {\n    lvs_method TUN type gre csum\n  }\n}\n",
        &["--metrics", "198.18.0.1:9100"],
    );
    for c in [
        "-A -t [2001:2::100]:80 -s rr",
        "-a -t [2001:2::100]:80 -r 2001:2:0:2::11 -i",
        "-a -t [2001:2::100]:80 -r 2001:2:0:2::12 -i --tun-type gue --tun-port 6080",
    ] {
        x(&lab, c);
    }
    lab.wait_resolved().expect("the router resolves");
    // `check` tunnels its probes as the clients' packets are: every real server
    // decapsulates and answers from the VIP.
    let (code, found) = check(&lab);
    assert_eq!(code, Some(0), "{found}");
    assert!(
        found.contains("decapsulates and takes traffic for 198.18.0.100: a SYN tunnelled to it (gue:6080:+c) was answered from the VIP"),
        "{found}"
    );
    // One that does not decapsulate is named, with the set-up it needs.
    lab.sh(&lab.ns("r3"), "tc filter del dev eth0 ingress")
        .expect("decapsulation off");
    let (code, found) = check(&lab);
    assert_eq!(code, Some(1), "{found}");
    assert!(
        found.contains("tunnelled to it (gre:+c) got no answer")
            && found.contains(
                "on 198.18.2.13: xdpvs rs-setup --tun --tun-type gre --vip 198.18.0.100 --apply"
            ),
        "{found}"
    );
    lab.sh(
        &lab.ns("r3"),
        "tc qdisc del dev eth0 clsact; nft delete table inet lab",
    )
    .expect("clean");
    lab.decapsulate("r3").expect("decapsulation back");
    // What rs-setup would do on a real server with the kernel's tunnel modules.
    let out = lab
        .exec(
            &lab.ns("r2"),
            &[
                env!("CARGO_BIN_EXE_xdpvs"),
                "rs-setup",
                "--tun",
                "--tun-type",
                "gue",
                "--tun-port",
                "6080",
                "--vip",
                "198.18.0.100",
                "--print",
            ],
        )
        .expect("rs-setup runs");
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.contains("modprobe fou\n")
            && plan.contains("ip link set tunl0 up\n")
            && plan.contains("ip fou add port 6080 gue\n")
            && !plan.contains("ip addr add 198.18.0.100/32 dev lo"),
        "{plan}"
    );
    let listing = x(&lab, "-Ln");
    assert!(
        listing.contains("  -> 198.18.2.11:80               Tunnel  1"),
        "{listing}"
    );
    let info = x(&lab, "-L -n --tun-info");
    assert!(
        info.contains("Forward TunnelInfo    Weight")
            && info.contains("198.18.2.12:80               Tunnel  gue:6080:+c   1")
            && info.contains("gre:+c")
            && info.contains("ipip"),
        "{info}"
    );
    let saved = x(&lab, "-S -n");
    assert!(
        saved.contains("-a -t 198.18.0.100:80 -r 198.18.2.12:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n")
            && saved.contains("-r 198.18.2.11:80 -i -w 1 --tun-type ipip\n"),
        "{saved}"
    );
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    let report = ab(&lab, 3000, 20, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(report.contains("Complete requests:      3000"), "{report}");
    for (role, kind) in [("r1", "ipip"), ("r2", "gue"), ("r3", "gre")] {
        let n = lab.decapsulated(role, kind).expect("counted");
        assert!(n >= 1000, "{role} decapsulated {n} {kind} packets");
    }
    // IPv6: IPv6 in IPv6 and GUE.
    let v6: Vec<String> = (0..4)
        .map(|_| {
            lab.curl("http://[2001:2::100]/").unwrap_or_else(|e| {
                panic!(
                    "IPv6 through a tunnel: {e}\n{}\n{}",
                    x(&lab, "-Ln"),
                    lab.director_log()
                )
            })
        })
        .collect();
    assert_eq!(counts(&v6).len(), 2, "{v6:?}");
    // A packet too big for a tunnel with DF: the client's kernel learns the tunnel's MTU
    // from the VIP's "fragmentation needed" (an upload: its segments are full-sized).
    let _ = lab.sh(
        &lab.ns("c"),
        "head -c 30000 /dev/zero | curl -s -o /dev/null --max-time 3 --data-binary @- http://198.18.0.100/ ; true",
    );
    let route = lab
        .sh(&lab.ns("c"), "ip route get 198.18.0.100")
        .expect("ip route get");
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(
        ["mtu 1480", "mtu 1468", "mtu 1472"]
            .iter()
            .any(|m| route.contains(m)),
        "{route}\n{}",
        lab.director_log()
    );
    let (m, text) = scrape(&lab);
    assert!(
        metric(&m, "xdpvs_worker_tunnel_too_big_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&m, "xdpvs_worker_tunnelled_packets_total", &[]) >= 3000.0,
        "{text}"
    );
    // Every method in one service: direct routing (r4), NAT with port mapping (r5) and
    // the three tunnels. The director routes the client through the router (an
    // asymmetric path): NAT replies follow the kernel's route, not the way the client's
    // packets came.
    lab.sh(&d, "ip route add 198.18.0.2/32 via 198.18.0.254")
        .expect("a route to the client");
    for c in [
        "-a -t 198.18.0.100:80 -r 198.18.0.14 -g",
        "-a -t 198.18.0.100:80 -r 198.18.1.15:8080 -m",
    ] {
        x(&lab, c);
    }
    lab.wait_resolved().expect("resolved");
    let answers: Vec<String> = (0..10).map(|_| get(&lab)).collect();
    let seen = counts(&answers);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["rs1", "rs2", "rs3", "rs4", "rs5"],
        "{answers:?}"
    );
    assert!(seen.values().all(|&n| n == 2), "{answers:?}");
    let report = ab(&lab, 2000, 20, false);
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(
        lab.director_log()
            .contains("NAT replies follow the routes: 198.18.0.2/32 at"),
        "{}",
        lab.director_log()
    );
    // Only the NAT real server takes new clients: its replies cross the router.
    for c in [
        "-e -t 198.18.0.100:80 -r 198.18.2.11 -i -w 0",
        "-e -t 198.18.0.100:80 -r 198.18.2.12 -i --tun-type gue --tun-port 6080 --tun-csum -w 0",
        "-e -t 198.18.0.100:80 -r 198.18.2.13 -i --tun-type gre --tun-csum -w 0",
        "-e -t 198.18.0.100:80 -r 198.18.0.14 -g -w 0",
    ] {
        x(&lab, c);
    }
    let forwarded = |lab: &Lab| snmp(lab, "r6", "Ip", "ForwDatagrams");
    let before = forwarded(&lab);
    let answers: Vec<String> = (0..10).map(|_| get(&lab)).collect();
    assert!(answers.iter().all(|a| a == "rs5"), "{answers:?}");
    let through = forwarded(&lab) - before;
    assert!(through >= 30, "{through} packets crossed the router");
}

/// keepalived checks a real server at its own address, so a DR real server that lost the
/// VIP from `lo` stays in service while every client connection to it fails. The
/// forwarding check (`--check-forwarding`; `xdpvs_forwarding_check` in keepalived.conf)
/// also sends a SYN for VIP:port to its MAC, the way clients' packets go: removing the
/// VIP under load takes it out, and no request fails or reaches it after; the VIP back,
/// it rejoins.
#[test]
fn a_forwarding_check_takes_out_a_real_server_that_lost_the_vip_under_load() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    let check =
        "--check tcp --check-interval 0.5 --check-timeout 0.5 --check-retry-delay 0.2 --fall 2";
    rr_checked(&mut lab, check);
    let vip = |lab: &Lab, op: &str| {
        lab.sh(
            &lab.ns("r2"),
            &format!("ip addr {op} 198.18.0.100/32 dev lo"),
        )
        .expect("ip addr");
    };
    let r2 = |lab: &Lab| json(lab, "-Ln --json")["services"][0]["reals"][1].clone();
    // keepalived's way: the check at rs2's own address passes without the VIP.
    vip(&lab, "del");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let seen = r2(&lab);
    assert_eq!(seen["health"]["up"], true, "{seen}");
    assert_eq!(seen["health"]["transitions"], 0, "never taken out: {seen}");
    vip(&lab, "add");
    // The forwarding check on every real server.
    for n in 1..=3 {
        x(
            &lab,
            &format!("-e -t 198.18.0.100:80 -r 198.18.0.1{n} -g {check} --check-forwarding"),
        );
    }
    let saved = x(&lab, "-S -n");
    assert!(
        saved.contains("--check-retry-delay 0.2 --check-forwarding"),
        "{saved}"
    );
    let lines = break_and_mend_under_load(
        &mut lab,
        "rs2",
        &|lab: &mut Lab| vip(lab, "del"),
        &|lab: &mut Lab| vip(lab, "add"),
        // Two checks that each wait their timeout, a retry delay, the apply.
        2.0 * (0.5 + 0.5) + 0.2 + 0.8,
        0.5,
    );
    eprintln!("forwarding check: {} requests", lines.len());
    let log = lab.director_log();
    assert!(
        log.contains("real server 198.18.0.12 of TCP 198.18.0.100:80 failed its check (forwarding path: no SYN-ACK"),
        "{log}"
    );
    let seen = r2(&lab);
    assert_eq!(seen["health"]["up"], true, "{seen}");
    assert_eq!(seen["check"]["forwarding"], true, "{seen}");
}

/// Servers for keepalived's checkers, in a real server's namespace: `tls PORT CERT KEY`
/// (HTTPS answering "ok NAME"), `smtp PORT GREETING`, `dns PORT RCODE`, `udp PORT`
/// (answers 0a then what came).
const CHECKER_SERVERS: &str = r#"
import socket, socketserver, sys, threading
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "tls":
    import http.server, ssl
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok " + socket.gethostname().encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
    srv = S(("0.0.0.0", port), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
elif kind == "smtp":
    greeting = sys.argv[3].encode()
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(greeting + b" mx ESMTP\r\n")
            for line in self.rfile:
                if line.upper().startswith(b"HELO"):
                    self.wfile.write(b"250 mx\r\n")
                elif line.upper().startswith(b"QUIT"):
                    self.wfile.write(b"221 bye\r\n")
                    return
    class S(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True
    S(("0.0.0.0", port), H).serve_forever()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        q, a = s.recvfrom(2048)
        if kind == "dns":
            rc = int(sys.argv[3])
            s.sendto(q[:2] + bytes([0x81, 0x80 | rc]) + q[4:6] + bytes(6) + q[12:], a)
        else:
            s.sendto(b"\x0a" + q, a)
"#;

/// The UDP_CHECK service of the checkers' lab, in a file keepalived.conf includes.
const UDP_CHECKED: &str = "virtual_server 198.18.0.100 514 {
    lb_kind DR
    protocol UDP
    {fast}
    real_server 198.18.0.11 514 {
        UDP_CHECK {
            payload 01 02
            require_reply 0a 01
        }
    }
    real_server 198.18.0.12 514 {
        UDP_CHECK {
            payload 01
        }
    }
}
";

/// keepalived.conf as operators write it (an include, a virtual_server_group), every
/// checker at work in the lab: SSL_GET
/// (SNI, a regex), SMTP_CHECK (with the forwarding check), DNS_CHECK, UDP_CHECK,
/// MISC_CHECK whose exit status sets the weight, FILE_CHECK, alpha, notify_down, and a
/// quorum that the dynamic weight gains (quorum_up runs, the sorry server steps back).
#[test]
fn every_keepalived_checker_judges_real_servers_in_the_lab() {
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    // Scripts where keepalived's script security accepts them (root's, not writable by
    // others), and a self-signed certificate.
    let dir = std::env::temp_dir().join(format!("{}-checks", lab.ns("d")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let d = dir.to_str().expect("utf-8").to_string();
    let script = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // MISC_CHECK's program exits with what the test writes; the notify and quorum
    // scripts leave a file named by their first argument.
    script("weight", &format!("exit $(cat {d}/status)"));
    script("mark", &format!("touch \"{d}/$1\""));
    std::fs::write(dir.join("status"), "7").expect("status");
    std::fs::write(dir.join("rs2.state"), "1\n").expect("track file");
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=www.example.org",
        ])
        .args([
            "-keyout",
            &format!("{d}/key.pem"),
            "-out",
            &format!("{d}/cert.pem"),
        ])
        .output()
        .expect("openssl runs");
    assert!(openssl.status.success(), "{openssl:?}");
    let serve = |lab: &mut Lab, role: &str, args: &[&str]| {
        let mut a = vec!["python3", "-c", CHECKER_SERVERS];
        a.extend(args);
        let ns = lab.ns(role);
        lab.spawn(&ns, &a).expect("server");
    };
    let (cert, key) = (format!("{d}/cert.pem"), format!("{d}/key.pem"));
    let serve_rs1 = |lab: &mut Lab| {
        serve(lab, "r1", &["tls", "443", &cert, &key]);
        serve(lab, "r1", &["smtp", "25", "220"]);
        serve(lab, "r1", &["dns", "53", "0"]);
        serve(lab, "r1", &["udp", "514"]);
    };
    serve_rs1(&mut lab);
    serve(&mut lab, "r2", &["smtp", "25", "554"]);
    serve(&mut lab, "r2", &["dns", "53", "2"]);
    let fast = "delay_loop 1\n    connect_timeout 1\n    retry 0\n    delay_before_retry 0.2";
    let conf = format!(
        r#"global_defs {{
    enable_script_security
}}
track_file rs2_state {{
    file {d}/rs2.state
    weight 0
}}
virtual_server 198.18.0.100 443 {{
    lb_kind DR
    {fast}
    real_server 198.18.0.11 443 {{
        SSL_GET {{
            url {{
                path /health
                regex "^ok"
            }}
            virtualhost www.example.org
            enable_sni
        }}
    }}
    real_server 198.18.0.12 443 {{
        alpha
        SSL_GET {{
            url {{
                path /health
            }}
        }}
    }}
}}
virtual_server 198.18.0.100 25 {{
    lb_kind DR
    {fast}
    real_server 198.18.0.11 25 {{
        xdpvs_forwarding_check
        SMTP_CHECK {{
            helo_name lb.example.org
        }}
    }}
    real_server 198.18.0.12 25 {{
        SMTP_CHECK {{
        }}
    }}
}}
virtual_server_group DNS {{
    198.18.0.100 53
}}
virtual_server group DNS {{
    lb_kind DR
    protocol UDP
    {fast}
    real_server 198.18.0.11 53 {{
        DNS_CHECK {{
            type A
            name www.example.org
        }}
    }}
    real_server 198.18.0.12 53 {{
        DNS_CHECK {{
            type A
            name www.example.org
        }}
    }}
}}
include {d}/conf.d/*.conf
virtual_server 198.18.0.100 80 {{
    lb_algo rr
    lb_kind DR
    {fast}
    quorum 5
    hysteresis 1
    omega
    quorum_up "{d}/mark quorum-up"
    quorum_down "{d}/mark quorum-down"
    sorry_server 198.18.0.13 80
    real_server 198.18.0.11 80 {{
        MISC_CHECK {{
            misc_path {d}/weight
            misc_dynamic
        }}
    }}
    real_server 198.18.0.12 80 {{
        notify_down "{d}/mark 'rs2 down'"
        FILE_CHECK {{
            track_file rs2_state
        }}
    }}
}}
"#
    );
    // The UDP_CHECK service from an included file (a wildcard, as conf.d layouts do).
    std::fs::create_dir_all(dir.join("conf.d")).expect("conf.d");
    std::fs::write(
        dir.join("conf.d/udp.conf"),
        UDP_CHECKED.replace("{fast}", fast),
    )
    .expect("included file");
    start_with_keepalived(&mut lab, &conf, &[]);
    lab.wait_resolved().expect("resolved");
    let service = |doc: &serde_json::Value, port: u64| -> serde_json::Value {
        doc["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["port"] == port)
            .unwrap_or_else(|| panic!("no service on {port}: {doc}"))
            .clone()
    };
    let real = |doc: &serde_json::Value, port: u64, last: u8| -> serde_json::Value {
        let s = service(doc, port);
        s["reals"]
            .as_array()
            .expect("reals")
            .iter()
            .find(|r| r["address"] == format!("198.18.0.{last}"))
            .unwrap_or_else(|| panic!("no 198.18.0.{last} on {port}: {s}"))
            .clone()
    };
    // Waits until `want` holds of `-Ln --json`, saying what is missing meanwhile.
    let wait_for = |lab: &Lab, what: &str, want: &dyn Fn(&serde_json::Value) -> Vec<String>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let misses = want(&json(lab, "-Ln --json"));
            if misses.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {misses:#?}\n{}",
                lab.director_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // (port, real server, up, what its last result says, transitions at least).
    let judged = |want: &[(u64, u8, bool, &'static str, u64)]| {
        let want = want.to_vec();
        move |doc: &serde_json::Value| -> Vec<String> {
            want.iter()
                .filter_map(|&(port, last, up, says, moved)| {
                    let h = real(doc, port, last)["health"].clone();
                    let ok = h["up"] == up
                        && h["checks"].as_u64().unwrap_or(0) >= 2
                        && h["transitions"].as_u64().unwrap_or(0) >= moved
                        && h["last"].as_str().is_some_and(|l| l.contains(says));
                    (!ok).then(|| format!("{port} .{last}: {h}"))
                })
                .collect()
        }
    };
    // Every checker passes on rs1 and fails on rs2 the way keepalived's would.
    wait_for(
        &lab,
        "first results",
        &judged(&[
            (443, 11, true, "ok", 0),
            (443, 12, false, "connect to 198.18.0.12:443", 0),
            (25, 11, true, "ok", 0),
            (25, 12, false, "SMTP greeting 554, want 220", 1),
            (53, 11, true, "ok", 0),
            (53, 12, false, "DNS: response code 2", 1),
            (514, 11, true, "ok", 0),
            (514, 12, false, "port unreachable", 1),
            (80, 12, false, "rs2.state holds 1", 1),
        ]),
    );
    let doc = json(&lab, "-Ln --json");
    // alpha: rs2 of 443 started down and never came up: no transition at all.
    assert_eq!(real(&doc, 443, 12)["health"]["transitions"], 0, "{doc}");
    assert_eq!(real(&doc, 443, 12)["check"]["alpha"], true);
    // rs1's servers stopped: each of its checkers fails; started again: each passes.
    lab.stop_programs("r1");
    wait_for(
        &lab,
        "rs1's servers stopped",
        &judged(&[
            (443, 11, false, "connect to 198.18.0.11:443", 1),
            (25, 11, false, "connect to 198.18.0.11:25", 1),
            (53, 11, false, "DNS: Connection refused", 1),
            (514, 11, false, "port unreachable", 1),
        ]),
    );
    serve_rs1(&mut lab);
    lab.start_http("r1", "rs1", 80).expect("http");
    wait_for(
        &lab,
        "rs1's servers back",
        &judged(&[
            (443, 11, true, "ok", 2),
            (25, 11, true, "ok", 2),
            (53, 11, true, "ok", 2),
            (514, 11, true, "ok", 2),
        ]),
    );
    // MISC_CHECK's exit statuses move rs1's weight, and the quorum (5, hysteresis 1: lost
    // below 4, gained from 6) moves the service to its sorry server (rs3) and back.
    let step = |status: u8, up: bool, weight: Option<u64>, held: bool| {
        std::fs::write(dir.join("status"), status.to_string()).expect("status");
        wait_for(
            &lab,
            &format!("exit status {status}"),
            &|doc: &serde_json::Value| {
                let h = real(doc, 80, 11)["health"].clone();
                let q = service(doc, 80)["quorum"].clone();
                let ok =
                    h["up"] == up && weight.is_none_or(|w| h["weight"] == w) && q["held"] == held;
                if ok {
                    Vec::new()
                } else {
                    vec![format!("rs1 {h}, quorum {q}")]
                }
            },
        );
        let answers: Vec<String> = (0..3).map(|_| get(&lab)).collect();
        let who = if held { "rs1" } else { "rs3" };
        assert_eq!(
            counts(&answers).get(who),
            Some(&3),
            "status {status}: {answers:?}"
        );
    };
    step(7, true, Some(5), false); // weight 5: not yet 6, the quorum stays lost
    step(8, true, Some(6), true); // gained: quorum_up runs, the sorry server steps back
    step(6, true, Some(4), true); // 4: not below 4, held
    step(1, false, None, false); // failed: lost, the sorry server stands in
    step(0, true, None, false); // passes with its configured weight 1: still lost
    step(255, true, Some(253), true); // weight 253
    step(2, true, Some(0), false); // weight 0
    step(8, true, Some(6), true);
    for mark in ["quorum-down", "quorum-up", "rs2 down"] {
        assert!(
            dir.join(mark).exists(),
            "{mark} never ran\n{}",
            lab.director_log()
        );
    }
    let log = lab.director_log();
    assert!(
        log.contains("TCP 198.18.0.100:80: quorum gained (weight up 6)"),
        "{log}"
    );
    // The track file back to 0: rs2 of 80 passes again.
    std::fs::write(dir.join("rs2.state"), "0\n").expect("track file");
    wait_for(
        &lab,
        "the track file at 0",
        &judged(&[(80, 12, true, "ok", 2)]),
    );
    let saved = x(&lab, "-S -n");
    for part in [
        "--check https:/health,host=www.example.org,regex=^ok,sni=www.example.org",
        "--check smtp,helo=lb.example.org",
        "--check-forwarding",
        "--check dns,type=A,name=www.example.org",
        "--check udp,payload=0102,reply=0a01",
        "--check-alpha",
        "--quorum 5 --hysteresis 1",
        "--check file:",
        "--omega",
        "--notify-down \"/",
    ] {
        assert!(saved.contains(part), "{part}\n{saved}");
    }
    // omega: as the director stops, the down scripts of what is up run.
    for mark in ["quorum-down", "rs2 down"] {
        std::fs::remove_file(dir.join(mark)).expect("marked before");
    }
    lab.stop_director("TERM").expect("director stops");
    for mark in ["quorum-down", "rs2 down"] {
        assert!(
            dir.join(mark).exists(),
            "{mark} did not run as the director stopped"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// From the client: a malformed sync message, then a valid one of sync id 9 (the
/// directors take 7) for a connection of 198.18.99.99.
const FOREIGN_SYNC: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("198.18.0.2"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(b"\x03\x07\x00\x04", ("224.0.0.81", 8848))
a = socket.inet_aton
conn = struct.pack("!BBHIHHHHII4s4s4s", 0, 6, 36, 3, 1, 40000, 80, 80, 0, 900,
                   a("198.18.99.99"), a("198.18.0.100"), a("198.18.0.11"))
s.sendto(struct.pack("!BBHBBH", 0, 9, 8 + len(conn), 1, 1, 0) + conn, ("224.0.0.81", 8848))
"#;

/// From the client for SECS seconds: sync messages of sync id ID as fast as it can send
/// them, each of 40 connections to a real server no director has (refused).
const SYNC_FLOOD: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("198.18.0.2"))
a = socket.inet_aton
conns = b"".join(struct.pack("!BBHIHHHHII4s4s4s", 0, 6, 36, 3, 1, 30000 + i, 80, 80, 0, 900,
                 a("198.18.98.1"), a("198.18.0.100"), a("198.18.0.99")) for i in range(40))
msg = struct.pack("!BBHBBH", 0, int(sys.argv[2]), 8 + len(conns), 40, 1, 0) + conns
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(100):
        s.sendto(msg, ("224.0.0.81", 8848))
"#;

/// A keepalived.conf for one director of the pair: its VRRP instance holds the VIP
/// (`priority`), tracks the local director through its socket, and the service is rr
/// over the three real servers.
fn pair_conf(priority: u8, socket: &Path, nopreempt: bool) -> String {
    let xdpvs = env!("CARGO_BIN_EXE_xdpvs");
    let reals: String = (1..=3)
        .map(|n| format!("  real_server 198.18.0.1{n} 80 {{\n    TCP_CHECK {{\n      connect_timeout 1\n    }}\n  }}\n"))
        .collect();
    let reals8080 = reals.replace(" 80 {", " 8080 {");
    format!(
        r#"vrrp_script chk_xdpvs {{
  script "{xdpvs} --socket {} -Ln"
  interval 1
  fall 2
  rise 1
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {priority}
  advert_int 1
{}
  virtual_ipaddress {{
    198.18.0.100/32 dev eth0
  }}
  track_script {{
    chk_xdpvs
  }}
}}
virtual_server 198.18.0.100 80 {{
  delay_loop 1
  lb_algo rr
  lb_kind DR
  protocol TCP
{reals}}}
virtual_server 198.18.0.100 8080 {{
  delay_loop 1
  lb_algo wlc
  lb_kind DR
  protocol TCP
  persistence_timeout 60
{reals8080}}}
"#,
        socket.display(),
        if nopreempt {
            "  nopreempt"
        } else {
            "  # A returning master waits: meanwhile the connections made in its absence reach it\n  # (every established connection is synchronised again each second it has traffic).\n  preempt_delay 3"
        }
    )
}

/// The classic director pair: keepalived's VRRP (one process per director, on the same
/// kind of keepalived.conf as xdpvs reads) decides which director holds the VIP, and
/// xdpvs serves it only there: only the master answers ARP for it, the backup is
/// silent; the master's host lost (its link down), the backup takes the VIP and serves;
/// it returns and takes it back (preempt); its xdpvs killed, keepalived's track_script
/// hands the VIP over. Each failover is timed (first request served after the event).
#[test]
fn a_director_pair_follows_keepalived_s_vrrp() {
    if std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_err()
    {
        xdpvs_testkit::cannot_run("the director pair", "keepalived is not installed");
        return;
    }
    let Some((_one, mut lab)) = lab_or_skip() else {
        return;
    };
    let d2_ip = std::net::Ipv4Addr::new(198, 18, 0, 3);
    lab.add_host("d2", d2_ip, "2001:2::3".parse().expect("v6"))
        .expect("second director");
    // The persistent service's servers.
    for n in 1..=3 {
        lab.start_http(&format!("r{n}"), &format!("rs{n}"), 8080)
            .expect("http on 8080");
    }
    let (tmp, prefix) = (std::env::temp_dir(), lab.ns("pair"));
    let name = |what: &str| tmp.join(format!("{prefix}-{what}"));
    let (sock1, sock2) = (lab.socket().to_path_buf(), name("d2.sock"));
    let (conf1, conf2) = (name("d1.conf"), name("d2.conf"));
    std::fs::write(&conf1, pair_conf(150, &sock1, false)).expect("conf");
    std::fs::write(&conf2, pair_conf(100, &sock2, false)).expect("conf");
    // xdpvs reads keepalived's file and the sync daemon, which keepalived's VRRP must
    // not see (it would drive kernel IPVS's): the daemon's role follows VI_1.
    let (x1, x2) = (name("d1-xdpvs.conf"), name("d2-xdpvs.conf"));
    for (x, conf) in [(&x1, &conf1), (&x2, &conf2)] {
        std::fs::write(
            x,
            format!(
                "global_defs {{\n  lvs_sync_daemon eth0 VI_1 id 7\n}}\ninclude {}\n",
                conf.display()
            ),
        )
        .expect("conf");
    }
    let exe = env!("CARGO_BIN_EXE_xdpvs");
    lab.start_director(&["--keepalived", x1.to_str().expect("utf-8")])
        .expect("director 1");
    let d2 = lab.ns("d2");
    lab.spawn_logged(
        &d2,
        &[
            exe,
            "run",
            "-i",
            "eth0",
            "--socket",
            sock2.to_str().expect("utf-8"),
            "--keepalived",
            x2.to_str().expect("utf-8"),
        ],
        &name("d2.log"),
    )
    .expect("director 2");
    let served = |lab: &Lab, sock: &Path| -> Option<bool> {
        let out = lab
            .xdpvs(&["--socket", sock.to_str().expect("utf-8"), "-Ln", "--json"])
            .ok()?;
        let doc: serde_json::Value = serde_json::from_str(&out).ok()?;
        doc["vrrp"][0]["served"].as_bool()
    };
    let logs = |lab: &Lab| {
        format!(
            "director 1:\n{}\ndirector 2:\n{}\nkeepalived 1:\n{}\nkeepalived 2:\n{}",
            lab.director_log(),
            std::fs::read_to_string(name("d2.log")).unwrap_or_default(),
            std::fs::read_to_string(name("k1.log")).unwrap_or_default(),
            std::fs::read_to_string(name("k2.log")).unwrap_or_default(),
        )
    };
    let wait = |lab: &Lab, what: &str, want: (Option<bool>, Option<bool>)| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = (served(lab, &sock1), served(lab, &sock2));
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {got:?}\n{}",
                logs(lab)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait(&lab, "director 2 up", (Some(false), Some(false)));
    // keepalived's VRRP, one per director.
    for (n, role, conf) in [(1, "d", &conf1), (2, "d2", &conf2)] {
        let ns = lab.ns(role);
        let pid = name(&format!("k{n}.pid"));
        let vpid = name(&format!("k{n}.vrrp.pid"));
        lab.spawn_logged(
            &ns,
            &[
                "keepalived",
                "--vrrp",
                "--dont-fork",
                "--log-console",
                "-f",
                conf.to_str().expect("utf-8"),
                "-p",
                pid.to_str().expect("utf-8"),
                "-r",
                vpid.to_str().expect("utf-8"),
            ],
            &name(&format!("k{n}.log")),
        )
        .expect("keepalived");
    }
    wait(&lab, "director 1 the master", (Some(true), Some(false)));
    lab.wait_resolved().expect("resolved");
    // (a) Only the master answers ARP for the VIP.
    let d1_mac = lab.mac("d").expect("mac");
    let arp = lab
        .exec(
            &lab.ns("c"),
            &["arping", "-c", "3", "-w", "4", "-I", "eth0", "198.18.0.100"],
        )
        .expect("arping");
    let said = String::from_utf8_lossy(&arp.stdout).to_lowercase();
    let replies: Vec<&str> = said.lines().filter(|l| l.contains("reply from")).collect();
    assert!(!replies.is_empty(), "no ARP answer: {said}");
    assert!(
        replies.iter().all(|l| l.contains(&d1_mac.to_lowercase())),
        "an ARP answer from another than the master ({d1_mac}): {said}"
    );
    let answers: Vec<String> = (0..3).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    // (e) The sync daemon, as ipvsadm lists it; a malformed message and one of another
    // sync id are dropped and counted, never installed.
    let on2 = |lab: &Lab, args: &[&str]| {
        let mut a = vec!["--socket", sock2.to_str().expect("utf-8")];
        a.extend(args);
        lab.xdpvs(&a).expect("xdpvs")
    };
    // The roles follow VRRP instance VI_1: the master sends, the backup receives.
    let roles = |lab: &Lab, sock: &Path| {
        lab.xdpvs(&["--socket", sock.to_str().expect("utf-8"), "-L", "--daemon"])
            .unwrap_or_default()
    };
    let settings =
        "sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n";
    let wait_roles = |lab: &Lab, what: &str, want: (&str, &str)| {
        let want = (
            format!("{} {settings}", want.0),
            format!("{} {settings}", want.1),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = (roles(lab, &sock1), roles(lab, &sock2));
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: sync roles {got:?}\n{}",
                logs(lab)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_roles(&lab, "director 1 the master", ("master", "backup"));
    let d: serde_json::Value =
        serde_json::from_str(&on2(&lab, &["-L", "--daemon", "--json"])).expect("json");
    assert_eq!(d["follows_vrrp_instance"], "VI_1", "{d}");
    let sent = lab
        .exec(&lab.ns("c"), &["python3", "-c", FOREIGN_SYNC])
        .expect("python");
    assert!(sent.status.success(), "{sent:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let d: serde_json::Value =
            serde_json::from_str(&on2(&lab, &["-L", "--daemon", "--json"])).expect("json");
        let counted = |k: &str| d["counters"][k].as_u64().unwrap_or(0);
        if counted("malformed_messages") >= 1 && counted("foreign_messages") >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{d}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !on2(&lab, &["-Lnc"]).contains("198.18.99.99"),
        "a foreign connection was installed"
    );
    // Served again after `event`: how long until a request succeeds.
    let failover = |lab: &Lab, event: &str| -> std::time::Duration {
        let started = std::time::Instant::now();
        loop {
            let ok = lab
                .exec(
                    &lab.ns("c"),
                    &["curl", "-sS", "--max-time", "1", "http://198.18.0.100/"],
                )
                .is_ok_and(|o| o.status.success());
            if ok {
                let t = started.elapsed();
                eprintln!("{event}: served again after {t:?}");
                return t;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{event}: never served again\n{}",
                logs(lab)
            );
        }
    };
    // 20 keep-alive connections, a request every 0.2 s each, across an event: none may
    // fail, and each stays on its real server (the connections are synchronised).
    let held_on = |lab: &Lab, port: u16, secs: u32| {
        let script = xdpvs_testkit::lab::ecmp::KEEPALIVE_CLIENT
            .replace("(vip, 80)", &format!("(vip, {port})"));
        std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("c"), "python3", "-c"])
            .arg(script)
            .args([
                "198.18.0.100",
                "20",
                &secs.to_string(),
                "0.2",
                "15",
                "198.18.0.2",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("keep-alive client")
    };
    let held = |lab: &Lab, secs: u32| held_on(lab, 80, secs);
    let unbroken = |lab: &Lab, child: std::process::Child, event: &str| {
        let out = child.wait_with_output().expect("client ends");
        let text = String::from_utf8_lossy(&out.stdout);
        let conns: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(conns.len(), 20, "{text}");
        let requests: u64 = conns
            .iter()
            .map(|c| c["requests"].as_u64().unwrap_or(0))
            .sum();
        let failed: u64 = conns
            .iter()
            .map(|c| c["failed"].as_u64().unwrap_or(1))
            .sum();
        eprintln!("{event}: 20 held connections, {requests} requests, {failed} failed");
        let servers: Vec<String> = conns
            .iter()
            .filter_map(|c| c["servers"][0].as_str().map(String::from))
            .collect();
        for c in &conns {
            assert!(
                c["failed"] == 0 && c["servers"].as_array().is_some_and(|s| s.len() == 1),
                "{event}: a connection broke or moved: {c}\n{}",
                logs(lab)
            );
        }
        servers
    };
    let synced = |lab: &Lab, sock: &Path| -> usize {
        lab.xdpvs(&["--socket", sock.to_str().expect("utf-8"), "-Lnc"])
            .map(|out| out.lines().filter(|l| l.contains("ESTABLISHED")).count())
            .unwrap_or(0)
    };
    // (b) The master's host lost: its link down, under held connections, of the rr
    // service and of the persistent one (whose template goes over too).
    let client = held(&lab, 12);
    let persistent = held_on(&lab, 8080, 12);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let backup_has = synced(&lab, &sock2);
    assert!(
        backup_has >= 40,
        "the backup holds {backup_has} synchronised connections\n{}",
        logs(&lab)
    );
    lab.sh(&lab.ns("d"), "ip link set eth0 down")
        .expect("link down");
    failover(&lab, "master's link down");
    wait(&lab, "director 2 the master", (Some(false), Some(true)));
    // Its sync daemon is master now; director 1's, without the VIP, backup.
    wait_roles(&lab, "director 2 the master", ("backup", "master"));
    unbroken(&lab, client, "master's link down");
    let stuck = unbroken(&lab, persistent, "master's link down, persistent service");
    assert!(
        stuck.windows(2).all(|w| w[0] == w[1]),
        "persistence sends one client to one real server: {stuck:?}"
    );
    // A new connection of the client after the failover: where the template says.
    let again = lab
        .curl("http://198.18.0.100:8080/")
        .expect("the persistent service");
    assert_eq!(Some(&again), stuck.first(), "the template did not go over");
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    // (d) It returns: keepalived takes the VIP back to it (preempt), under held
    // connections that director 2 synchronised to it.
    let client = held(&lab, 10);
    std::thread::sleep(std::time::Duration::from_secs(2));
    lab.sh(&lab.ns("d"), "ip link set eth0 up")
        .expect("link up");
    wait(
        &lab,
        "director 1 the master again",
        (Some(true), Some(false)),
    );
    failover(&lab, "master back");
    wait_roles(&lab, "director 1 the master again", ("master", "backup"));
    unbroken(&lab, client, "master back");
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    // (c) xdpvs killed on the master: track_script fails, the VIP goes to the backup.
    let client = held(&lab, 12);
    std::thread::sleep(std::time::Duration::from_secs(3));
    lab.stop_director("KILL").expect("killed");
    failover(&lab, "master's xdpvs killed");
    wait(&lab, "director 2 serves", (None, Some(true)));
    unbroken(&lab, client, "master's xdpvs killed");
    let answers: Vec<String> = (0..6).map(|_| get(&lab)).collect();
    assert_rotation(&answers);
    // (d) without preemption: director 1 comes back (xdpvs and keepalived restarted,
    // `nopreempt`) and stays the backup; the held connections never notice.
    lab.stop_programs("d");
    std::fs::write(&conf1, pair_conf(150, &sock1, true)).expect("conf");
    let client = held(&lab, 10);
    lab.start_director(&["--keepalived", x1.to_str().expect("utf-8")])
        .expect("director 1 again");
    let (pid, vpid) = (name("k1b.pid"), name("k1b.vrrp.pid"));
    let ns1 = lab.ns("d");
    lab.spawn_logged(
        &ns1,
        &[
            "keepalived",
            "--vrrp",
            "--dont-fork",
            "--log-console",
            "-f",
            conf1.to_str().expect("utf-8"),
            "-p",
            pid.to_str().expect("utf-8"),
            "-r",
            vpid.to_str().expect("utf-8"),
        ],
        &name("k1.log"),
    )
    .expect("keepalived again");
    std::thread::sleep(std::time::Duration::from_secs(6));
    wait(
        &lab,
        "director 2 stays the master",
        (Some(false), Some(true)),
    );
    unbroken(&lab, client, "the old master back, nopreempt");
    wait_roles(&lab, "director 2 stays the master", ("backup", "master"));
    // ipvsadm's --start-daemon at run time: the master receives too (as every director
    // of an ECMP group does), for the flood below; starting it twice is ipvsadm's error.
    let ipvsadm2 = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("d2"), exe, "--socket"])
            .arg(&sock2)
            .args(args)
            .output()
            .expect("xdpvs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let start = [
        "--start-daemon",
        "backup",
        "--mcast-interface",
        "eth0",
        "--syncid",
        "7",
    ];
    assert_eq!(ipvsadm2(&start), (Some(0), String::new()));
    assert_eq!(
        on2(&lab, &["-L", "--daemon"]),
        format!("master {settings}backup {settings}")
    );
    let (code, said) = ipvsadm2(&start);
    assert_eq!(code, Some(255), "{said}");
    assert!(said.contains("Daemon has already run (backup)"), "{said}");
    // (e) A flood of sync messages at the master does not stop its forwarding: ab
    // through it without, then with one (the figures are reported, not asserted).
    let ab_rate = |lab: &Lab| -> f64 {
        let out = lab
            .exec(
                &lab.ns("c"),
                &["ab", "-q", "-n", "3000", "-c", "8", "http://198.18.0.100/"],
            )
            .expect("ab");
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        let failed = report
            .lines()
            .find(|l| l.starts_with("Failed requests:"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok());
        assert_eq!(failed, Some(0), "{report}");
        report
            .lines()
            .find(|l| l.starts_with("Requests per second:"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0.0)
    };
    let quiet = ab_rate(&lab);
    // The same flood of another sync id (dropped by the receiving thread: what the flood
    // costs the host), then of this sync id (handed to the worker, which refuses them).
    let flooded = |lab: &Lab, syncid: &str| -> (f64, u64) {
        let key = if syncid == "7" {
            "received_messages"
        } else {
            "foreign_messages"
        };
        let count = |lab: &Lab| -> u64 {
            let d: serde_json::Value =
                serde_json::from_str(&on2(lab, &["-L", "--daemon", "--json"])).expect("json");
            d["counters"][key].as_u64().unwrap_or(0)
        };
        let before = count(lab);
        let flood = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("c"),
                "python3",
                "-c",
                SYNC_FLOOD,
                "8",
                syncid,
            ])
            .spawn()
            .expect("flood");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let rate = ab_rate(lab);
        let _ = flood.wait_with_output();
        (rate, count(lab) - before)
    };
    let (foreign, dropped) = flooded(&lab, "9");
    let (valid, got) = flooded(&lab, "7");
    eprintln!(
        "sync flood: ab {quiet:.0} requests/s without; {foreign:.0} ({:.2}x) with {dropped} messages of another sync id; {valid:.0} ({:.2}x) with {got} messages of 40 unknown connections of this sync id",
        foreign / quiet.max(1.0),
        valid / quiet.max(1.0)
    );
    assert!(
        got > 1000 && dropped > 1000,
        "the flood did not reach the master: {got} and {dropped} messages"
    );
    assert_eq!(
        ipvsadm2(&["--stop-daemon", "backup"]),
        (Some(0), String::new())
    );
    assert_eq!(on2(&lab, &["-L", "--daemon"]), format!("master {settings}"));
    let (code, said) = ipvsadm2(&["--stop-daemon", "backup"]);
    assert_eq!(code, Some(255), "{said}");
    assert!(said.contains("No daemon is running (backup)"), "{said}");
    let d2_log = std::fs::read_to_string(name("d2.log")).unwrap_or_default();
    assert!(
        d2_log.contains("VIP 198.18.0.100 is held here (VRRP master): served"),
        "{d2_log}"
    );
    assert!(
        !d2_log.contains("conflict"),
        "the master is no conflict: {d2_log}"
    );
    for f in [&conf1, &conf2, &x1, &x2] {
        let _ = std::fs::remove_file(f);
    }
}
