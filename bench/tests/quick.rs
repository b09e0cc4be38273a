//! The benchmark's quick mode, end to end in a namespace lab: it must move packets through
//! xdpvs and write a valid JSON report and valid SVG plots, and print what the report
//! holds. No figure's size is asserted (no timed assertions), only that it is there.

use std::path::Path;
use std::process::Command;

fn svg_ok(path: &Path) {
    let text = std::fs::read_to_string(path).expect("SVG written");
    let doc = roxmltree::Document::parse(&text).expect("SVG is well-formed XML");
    assert_eq!(
        doc.root_element().tag_name().name(),
        "svg",
        "{}",
        path.display()
    );
    assert!(
        doc.descendants()
            .any(|n| n.has_tag_name("polyline") || n.has_tag_name("path")),
        "{} draws something",
        path.display()
    );
}

#[test]
fn quick_mode_moves_packets_and_writes_valid_files() {
    if let Err(why) = xdpvs_testkit::lab::available() {
        xdpvs_testkit::cannot_run("the benchmark's quick mode", &why);
        return;
    }
    let out = std::env::temp_dir().join(format!("xdpvs-bench-quick-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_xdpvs-bench"))
        .args(["--quick", "-o"])
        .arg(&out)
        .output()
        .expect("xdpvs-bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "quick mode failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Maximum rate"), "{stdout}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json written"),
    )
    .expect("results.json is JSON");
    let xdpvs_delivered: f64 = json["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .filter(|t| t["variant"] == "xdpvs")
        .map(|t| t["delivered_pps"].as_f64().expect("a number"))
        .sum();
    assert!(xdpvs_delivered > 0.0, "no packet went through xdpvs");
    let ipv6_delivered: f64 = json["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .filter(|t| t["variant"] == "xdpvs" && t["phase"] == "max-ipv6")
        .map(|t| t["delivered_pps"].as_f64().expect("a number"))
        .sum();
    assert!(ipv6_delivered > 0.0, "no IPv6 packet went through xdpvs");
    // --offload: its XDP program forwarded the established flows.
    let offload_delivered: f64 = json["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .filter(|t| t["variant"] == "xdpvs-offload")
        .map(|t| t["delivered_pps"].as_f64().expect("a number"))
        .sum();
    assert!(
        offload_delivered > 0.0,
        "no packet went through xdpvs-offload"
    );
    assert!(stdout.contains("xdpvs-offload / xdp-tx"), "{stdout}");
    assert!(stdout.contains("Maximum rate over IPv6"), "{stdout}");
    assert!(stdout.contains("Zero-copy model"), "{stdout}");
    for key in [
        "throughput",
        "loads",
        "search",
        "scaling",
        "ipv6",
        "zerocopy",
    ] {
        assert!(
            !json[key].as_array().expect(key).is_empty(),
            "{key} is empty"
        );
    }
    // What it prints is what the report holds: xdpvs's row of the maximum-rate table
    // gives its median, and the TX-ring line the figure of the JSON.
    let xdpvs = json["throughput"]
        .as_array()
        .expect("throughput")
        .iter()
        .find(|t| t["variant"] == "xdpvs")
        .expect("an xdpvs summary");
    let median_kpps = xdpvs["median_pps"].as_f64().expect("a median") / 1e3;
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("xdpvs ") && l.contains("kpps"))
        .unwrap_or_else(|| panic!("an xdpvs row in {stdout}"));
    let printed: f64 = row
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a rate in {row}"));
    assert!(
        (printed - median_kpps.round()).abs() <= 1.0,
        "{row} prints {printed}, the report says {median_kpps}"
    );
    let per_million = xdpvs["tx_full_per_million"]
        .as_f64()
        .expect("xdpvs's TX-ring-full figure is in the report");
    assert!(
        stdout.contains(&format!(
            "TX ring full: {per_million:.0} frames per million"
        )),
        "{stdout}"
    );
    svg_ok(&out.join("throughput.svg"));
    svg_ok(&out.join("latency.svg"));
    let _ = std::fs::remove_dir_all(&out);
}
