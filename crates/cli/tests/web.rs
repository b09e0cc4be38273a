//! The status page (`xdpvs run --web`) in a real browser: headless Chromium, driven over
//! WebDriver (Debian's `chromium-driver`), from the client's namespace, against a
//! director in the lab under traffic. The page renders the services and real servers,
//! their rates move, a killed real server turns down, an admin click without the token
//! is refused and with it changes `-Ln`; its API answers bad requests with 4xx; and the
//! cost of 100 browsers refreshing is measured on forwarding and on a health failover.
//! A screenshot of the page under load goes to docs/status-page.png.
//!
//! Skips (with a message) when not root, without AF_XDP or without Chromium; under
//! CI=true that is a failure instead.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xdpvs_testkit::lab::{self, Lab, LabSpec};

const WEB: &str = "198.18.0.1:8080";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Real server `n`'s weight, as `-Ln --json` lists it.
fn weight(lab: &Lab, n: usize) -> Value {
    let doc: Value = serde_json::from_str(&x(lab, "-Ln --json")).expect("json");
    doc["services"][0]["reals"][n - 1]["weight"].clone()
}

fn x(lab: &Lab, args: &str) -> String {
    lab.xdpvs(&args.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{e}\ndirector log:\n{}", lab.director_log()))
}

/// A WebDriver session with Chromium, driven from the client's namespace.
struct Browser {
    ns: String,
    session: String,
}

/// Runs `args` in namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

impl Browser {
    /// One WebDriver command: its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://127.0.0.1:9515{path}");
        let mut args = vec!["curl", "-sS", "--max-time", "60", "-X", method, &url];
        let data = body.map(|b| b.to_string());
        if let Some(d) = &data {
            args.extend(["-H", "Content-Type: application/json", "--data-binary", d]);
        }
        let out = in_ns(&self.ns, &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}: {text} {out:?}"));
        v["value"].clone()
    }

    fn start(ns: String, profile: &Path) -> Browser {
        let mut b = Browser {
            ns,
            session: String::new(),
        };
        let v = b.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1700",
                             format!("--user-data-dir={}", profile.display())],
                }
            }}})),
        );
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn go(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body) in the page: what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The element `css` selects (it must exist).
    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/session/{}/element/{e}/click", self.session),
            Some(json!({})),
        );
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/session/{}/element/{e}/value", self.session),
            Some(json!({ "text": text })),
        );
    }

    /// Waits until `script` returns true; how long it took.
    fn until(&self, what: &str, script: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(script) == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; the page says: {}",
                self.eval("return document.body.innerText"),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, to: &Path) {
        let v = self.call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        let b64 = v.as_str().expect("base64 PNG");
        let tmp = to.with_extension("b64");
        std::fs::write(&tmp, b64).expect("write");
        let out = std::process::Command::new("base64")
            .arg("-d")
            .arg(&tmp)
            .output()
            .expect("base64");
        let _ = std::fs::remove_file(&tmp);
        assert!(out.status.success() && out.stdout.starts_with(b"\x89PNG"));
        std::fs::write(to, out.stdout).expect("screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = in_ns(
                &self.ns,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "20",
                    "-X",
                    "DELETE",
                    &format!("http://127.0.0.1:9515/session/{}", self.session),
                ],
            );
        }
    }
}

/// An HTTP request from the client to the page: status and body.
fn http(lab: &Lab, args: &[&str]) -> (u16, String) {
    let mut a = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ];
    a.extend(args);
    let out = lab.exec(&lab.ns("c"), &a).expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// From the client for SECS seconds: N browsers, each holding the event stream and
/// polling the state every second (as a page that fell back to polling, refreshed).
const BROWSERS: &str = r#"
import sys, threading, time, urllib.request
base, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + secs
got = [0, 0, 0]
def stream():
    try:
        with urllib.request.urlopen(base + "/api/v1/stream", timeout=secs + 5) as r:
            while time.time() < end:
                if not r.readline():
                    break
                got[0] += 1
    except Exception:
        got[2] += 1
def poll():
    while time.time() < end:
        try:
            urllib.request.urlopen(base + "/api/v1/state", timeout=5).read()
            urllib.request.urlopen(base + "/", timeout=5).read()
            got[1] += 1
        except Exception:
            got[2] += 1
        time.sleep(1)
ts = [threading.Thread(target=f, daemon=True) for _ in range(n) for f in (stream, poll)]
for t in ts: t.start()
time.sleep(secs)
print(got[0], got[1], got[2])
"#;

/// ab's rate and failed requests, from the client.
fn ab(lab: &Lab, n: u32) -> (f64, u64) {
    let out = lab
        .exec(
            &lab.ns("c"),
            &[
                "ab",
                "-q",
                "-n",
                &n.to_string(),
                "-c",
                "8",
                "http://198.18.0.100/",
            ],
        )
        .expect("ab");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str, at: usize| {
        report
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(at)?.parse::<f64>().ok())
    };
    let failed = field("Failed requests:", 2).unwrap_or(f64::MAX) as u64;
    (field("Requests per second:", 3).unwrap_or(0.0), failed)
}

#[test]
fn the_status_page_works_in_a_real_browser_under_load() {
    for (what, bin) in [
        ("Chromium", "/usr/bin/chromium"),
        ("chromium-driver", "/usr/bin/chromedriver"),
    ] {
        if !Path::new(bin).exists() {
            xdpvs_testkit::cannot_run(
                "the status page",
                &format!("{what} is not installed ({bin})"),
            );
            return;
        }
    }
    if let Err(why) = lab::available() {
        xdpvs_testkit::cannot_run("the status page", &why);
        return;
    }
    let mut lab =
        Lab::up(Path::new(env!("CARGO_BIN_EXE_xdpvs")), LabSpec::default()).expect("lab builds");
    let tmp = std::env::temp_dir().join(lab.ns("web"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let token = tmp.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    lab.start_director(&[
        "--web",
        WEB,
        "--web-admin-token",
        token.to_str().expect("utf-8"),
    ])
    .expect("director starts");
    x(&lab, "-A -t 198.18.0.100:80 -s rr");
    for n in 1..=3 {
        x(
            &lab,
            &format!("-a -t 198.18.0.100:80 -r 198.18.0.1{n} -g --check tcp --check-interval 1 --check-timeout 0.5 --check-retry-delay 0.5 --fall 2"),
        );
    }
    lab.wait_resolved().expect("resolved");
    assert!(lab
        .director_log()
        .contains(&format!("status page at http://{WEB}/")));

    // The API, by hand: the documents, and 4xx for what is wrong, never a crash.
    let (code, body) = http(&lab, &[&format!("http://{WEB}/api/v1/services")]);
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        doc["services"][0]["reals"].as_array().map(Vec::len),
        Some(3),
        "{doc}"
    );
    for (path, want) in [
        ("/api/v1/workers", 200),
        ("/api/v1/events", 200),
        ("/api/v1/director", 200),
        ("/api/v1/state", 200),
        ("/metrics", 200),
        ("/nothing", 404),
        ("/api/v1/events?since=x", 400),
    ] {
        let (code, body) = http(&lab, &[&format!("http://{WEB}{path}")]);
        assert_eq!(code, want, "{path}: {body}");
    }
    let act = |extra: &[&str], body: &str| {
        let url = format!("http://{WEB}/api/v1/quiesce");
        let mut a = vec!["-X", "POST", &url, "--data-binary", body];
        a.extend(extra);
        http(&lab, &a)
    };
    let rs1 = r#"{"service":"TCP 198.18.0.100:80","real":"198.18.0.11"}"#;
    let json_type = ["-H", "Content-Type: application/json"];
    let with_token = format!("X-Xdpvs-Token: {TOKEN}");
    for (extra, body, want) in [
        (vec![json_type[0], json_type[1]], rs1, 403),
        (
            vec![json_type[0], json_type[1], "-H", "X-Xdpvs-Token: wrong"],
            rs1,
            403,
        ),
        (vec!["-H", &with_token], rs1, 415),
        (
            vec![
                json_type[0],
                json_type[1],
                "-H",
                &with_token,
                "-H",
                "Origin: http://evil.example",
            ],
            rs1,
            403,
        ),
        (
            vec![json_type[0], json_type[1], "-H", &with_token],
            "{not json",
            400,
        ),
        (
            vec![json_type[0], json_type[1], "-H", &with_token],
            r#"{"service":"TCP 198.18.0.100:80","real":"198.18.0.99"}"#,
            404,
        ),
    ] {
        let (code, said) = act(&extra, body);
        assert_eq!(code, want, "{extra:?} {body}: {said}");
    }
    let (code, said) = http(
        &lab,
        &["-X", "DELETE", &format!("http://{WEB}/api/v1/services")],
    );
    assert_eq!(code, 405, "{said}");
    let big = "x".repeat(20_000);
    let (code, _) = http(
        &lab,
        &["-H", &format!("X-Big: {big}"), &format!("http://{WEB}/")],
    );
    assert_eq!(code, 431);
    assert_eq!(weight(&lab, 1), json!(1), "nothing was applied");

    // Traffic through the director for the rest of the test.
    let mut load = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("c"),
            "ab",
            "-q",
            "-t",
            "200",
            "-n",
            "100000000",
            "-c",
            "4",
            "http://198.18.0.100/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ab");

    // The browser.
    let profile = tmp.join("chromium");
    let client = lab.ns("c");
    lab.spawn(
        &client,
        &["chromedriver", "--port=9515", "--allowed-ips=127.0.0.1"],
    )
    .expect("chromedriver");
    std::thread::sleep(Duration::from_secs(1));
    let b = Browser::start(client, &profile);
    b.go(&format!("http://{WEB}/"));
    let svc = r#"section.service[data-key="TCP 198.18.0.100:80"]"#;
    b.until(
        "the service and its three real servers shown",
        &format!("return document.querySelectorAll('{svc} tr[data-real]').length === 3"),
        Duration::from_secs(20),
    );
    b.until(
        "the page live over server-sent events",
        "return document.getElementById('live').textContent.startsWith('live (server-sent events)')",
        Duration::from_secs(20),
    );
    // Rates move: the service's connections per second above 0, then changing.
    b.until(
        "the service's rate above 0",
        &format!("return Number(document.querySelector('{svc} .svc-cps').textContent) > 0"),
        Duration::from_secs(20),
    );
    let first = b.eval(&format!(
        "return document.querySelector('{svc} .svc-pps').textContent"
    ));
    b.until(
        "the rate moves",
        &format!("return document.querySelector('{svc} .svc-pps').textContent !== {first}"),
        Duration::from_secs(20),
    );
    for n in 1..=3 {
        let state = b.eval(&format!(
            "return document.querySelector('{svc} tr[data-real=\"198.18.0.1{n}\"] .health span').textContent"
        ));
        assert_eq!(state, json!("up"), "rs{n}");
    }
    b.until(
        "the workers and an event shown",
        "return document.querySelectorAll('#workers tbody tr').length >= 1 && document.querySelectorAll('#events li[data-kind]').length >= 1",
        Duration::from_secs(20),
    );

    // A killed real server turns down: within fall × interval (2 s) and a check's
    // timeout, plus a refresh (2 s) and the page's own turn.
    lab.stop_programs("r2");
    let down = b.until(
        "rs2 shown down",
        &format!("return document.querySelector('{svc} tr[data-real=\"198.18.0.12\"]').className === 'is-down'"),
        Duration::from_secs(30),
    );
    eprintln!("a killed real server shown down on the page after {down:?}");
    b.until(
        "its transition in the events",
        "return [...document.querySelectorAll('#events li')].some(l => l.textContent.includes('198.18.0.12 of TCP 198.18.0.100:80 failed its check'))",
        Duration::from_secs(10),
    );

    // Admin: a button of rs1's row clicked, and what the page then says.
    let click = |button: &str, says: &str| {
        b.click(&format!(
            "{svc} tr[data-real=\"198.18.0.11\"] button.{button}"
        ));
        b.until(
            &format!("{button}: {says}"),
            &format!(
                "return document.getElementById('admin-result').textContent.startsWith('{says}')"
            ),
            Duration::from_secs(10),
        );
    };
    // Without the token the click is refused and nothing changes.
    click("quiesce", "refused (403)");
    assert_eq!(weight(&lab, 1), json!(1), "nothing was applied");
    // With it: applied, as `-e ... -w 0` would.
    b.type_in("#token", TOKEN);
    click(
        "quiesce",
        "applied: xdpvs -e -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 0",
    );
    assert_eq!(weight(&lab, 1), json!(0), "the quiesce applied");
    assert!(
        lab.director_log()
            .contains("-r 198.18.0.11:80 -g -w 0: applied"),
        "the action is logged with the client's address"
    );
    b.until(
        "the change in the events, with who made it",
        "return [...document.querySelectorAll('#events li')].some(l => l.textContent.includes('by the status page (198.18.0.2:'))",
        Duration::from_secs(10),
    );
    click(
        "restore",
        "applied: xdpvs -e -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1",
    );
    assert_eq!(weight(&lab, 1), json!(1), "the weight restored");

    // The page under load, for the docs.
    std::thread::sleep(Duration::from_secs(4));
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status-page.png");
    b.screenshot(&shot);
    // And on a phone's width: the tables scroll sideways, nothing spills over.
    b.call(
        "POST",
        &format!("/session/{}/window/rect", b.session),
        Some(json!({ "width": 390, "height": 1400 })),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        b.eval("return document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "the page is wider than a phone's screen"
    );
    b.screenshot(&shot.with_file_name("status-page-phone.png"));
    drop(b);
    let _ = load.kill();
    let _ = load.wait();
    let _ = std::process::Command::new("pkill")
        .args(["-f", &profile.display().to_string()])
        .status();

    // The cost of 100 browsers: ab's rate through the director without, then with 100
    // event streams and 100 pages polling every second; and a health failover (rs2
    // back, then rs3 killed) timed by -Ln with them.
    lab.start_http("r2", "rs2", 80).expect("rs2 back");
    std::thread::sleep(Duration::from_secs(4));
    let (quiet, failed) = ab(&lab, 4000);
    assert_eq!(failed, 0);
    let crowd = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("c"), "python3", "-c", BROWSERS])
        .args([format!("http://{WEB}"), "100".into(), "25".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("browsers");
    std::thread::sleep(Duration::from_secs(3));
    let (busy, failed) = ab(&lab, 4000);
    assert_eq!(failed, 0, "requests failed beside 100 browsers");
    lab.stop_programs("r3");
    let started = Instant::now();
    loop {
        let doc: Value = serde_json::from_str(&x(&lab, "-Ln --json")).expect("json");
        if doc["services"][0]["reals"][2]["health"]["up"] == json!(false) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rs3 never went down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let failover = started.elapsed();
    let out = crowd.wait_with_output().expect("browsers end");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let counts: Vec<u64> = said
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    eprintln!(
        "100 browsers (event streams and polls every second): ab {quiet:.0} requests/s without, {busy:.0} with ({:.2}x); health failover (fall 2 × 1 s) {failover:?} with them; {} events streamed, {} polls, {} errors",
        busy / quiet.max(1.0),
        counts.first().copied().unwrap_or(0),
        counts.get(1).copied().unwrap_or(0),
        counts.get(2).copied().unwrap_or(0)
    );
    assert!(
        counts.get(1).copied().unwrap_or(0) > 100,
        "the browsers were not served: {said}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
