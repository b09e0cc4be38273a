//! `xdpvs demo`: a live LVS-DR cluster in network namespaces, driven with ipvsadm's
//! commands, answering real HTTP requests; torn down at the end, on Ctrl-C or on failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use xdpvs_testkit::lab::{self, Lab, LabSpec, VIP, VIP6};

/// Options of `xdpvs demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// HTTP requests to send through the director.
    #[arg(short = 'n', long, default_value_t = 30)]
    pub requests: usize,
    /// Scheduler of the demo service.
    #[arg(short = 's', long, default_value = "rr", value_parser = |s: &str| s.parse::<xdpvs_sched::SchedKind>().map_err(|e| e.to_string()))]
    pub scheduler: xdpvs_sched::SchedKind,
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Relaxed) {
        bail!("interrupted: tearing the lab down");
    }
    Ok(())
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    lab::available().map_err(|e| anyhow!("the demo cannot run here: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let exe = std::env::current_exe()?;
    println!(
        "== building the lab: client 198.18.0.2 and 2001:2::2, director 198.18.0.1 and 2001:2::1,"
    );
    println!("   real servers 198.18.0.11-13 and 2001:2::11-13, one switch");
    println!(
        "   each real server: VIP {VIP}/32 and {VIP6}/128 on lo, arp_ignore=1, arp_announce=2,"
    );
    println!(
        "   an HTTP server saying its name (IPv6 needs no arp_ignore: see docs/OPERATIONS.md)"
    );
    let spec = LabSpec {
        ipv6: true,
        ..LabSpec::default()
    };
    let mut lab = Lab::up(&exe, spec)?;
    check(&stop)?;
    println!("== starting the director: xdpvs run -i eth0 (in the director's namespace)");
    lab.start_director(&[])?;
    for line in lab.director_log().lines() {
        println!("   {line}");
    }
    let sched = args.scheduler.to_string();
    let sched = sched.as_str();
    let commands: Vec<Vec<&str>> = vec![
        vec!["-C"],
        vec!["-A", "-t", "198.18.0.100:80", "-s", sched],
        vec!["-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11", "-g"],
        vec!["-a", "-t", "198.18.0.100:80", "-r", "198.18.0.12", "-g"],
        vec!["-a", "-t", "198.18.0.100:80", "-r", "198.18.0.13", "-g"],
        vec!["-A", "-t", "[2001:2::100]:80", "-s", sched],
        vec!["-a", "-t", "[2001:2::100]:80", "-r", "2001:2::11", "-g"],
        vec!["-a", "-t", "[2001:2::100]:80", "-r", "2001:2::12", "-g"],
        vec!["-a", "-t", "[2001:2::100]:80", "-r", "2001:2::13", "-g"],
    ];
    println!("== configuring it with ipvsadm's commands");
    for c in &commands {
        println!("$ xdpvs {}", c.join(" "));
        print!("{}", lab.xdpvs(c)?);
        check(&stop)?;
    }
    lab.wait_resolved()?;
    println!("$ xdpvs -Ln");
    print!("{}", lab.xdpvs(&["-Ln"])?);
    println!(
        "== {} requests from the client: curl http://{VIP}/",
        args.requests
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..args.requests {
        check(&stop)?;
        let body = lab.curl(&format!("http://{VIP}/"))?;
        order.push(body.clone());
        *seen.entry(body).or_default() += 1;
    }
    println!("   answers in order: {}", order.join(" "));
    for (rs, n) in &seen {
        println!("   {rs}: {n}");
    }
    println!(
        "== {} requests over IPv6: curl http://[{VIP6}]/",
        args.requests
    );
    let mut order6 = Vec::new();
    for _ in 0..args.requests {
        check(&stop)?;
        order6.push(lab.curl(&format!("http://[{VIP6}]/"))?);
    }
    println!("   answers in order: {}", order6.join(" "));
    println!("$ xdpvs -Ln");
    print!("{}", lab.xdpvs(&["-Ln"])?);
    for vip in [VIP.to_string(), VIP6.to_string()] {
        let neigh = lab.exec(&lab.ns("c"), &["ip", "neigh", "show", &vip])?;
        println!(
            "client's neighbour entry for {vip}: {}",
            String::from_utf8_lossy(&neigh.stdout).trim()
        );
    }
    println!("== tearing the lab down");
    lab.down();
    if order.len() != args.requests || order6.len() != args.requests {
        bail!(
            "only {} and {} of {} requests (IPv4, IPv6) were answered",
            order.len(),
            order6.len(),
            args.requests
        );
    }
    println!(
        "demo finished: {} IPv4 and {} IPv6 requests answered by {} real servers, replies straight from them",
        order.len(),
        order6.len(),
        seen.len()
    );
    Ok(())
}
