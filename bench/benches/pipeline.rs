//! Micro-benchmarks of the pure pipeline: ns per packet on one core.
//!
//! cargo bench -p xdpvs-bench --bench pipeline

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xdpvs_bench::pipeline::Replay;
use xdpvs_bench::{
    established, established_in, established_nat, established_with, flow_frame, CLIENT_MAC, VIP,
};
use xdpvs_dataplane::{prefetch, prefetch_frame, process, Tables, Verdict};
use xdpvs_sched::tcp::flags::SYN;
use xdpvs_sched::Time;
use xdpvs_sched::{Method, TunCsum, TunKind, Tunnel};

fn established_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("established_hit");
    g.throughput(Throughput::Elements(1));
    for &n in &[1_000u32, 100_000, 1_000_000] {
        let (mut t, mut acks) = established(n, n as usize);
        let now = Time::from_secs(2);
        // The same flow over and over: table entry in cache.
        assert_eq!(process(&mut acks[0].clone(), &mut t, now), Verdict::Tx);
        g.bench_function(BenchmarkId::new("same_flow", n), |b| {
            let f = &mut acks[0];
            b.iter(|| black_box(process(black_box(f), &mut t, now)))
        });
        // Every flow in turn: a cache miss per packet once the table outgrows the cache.
        g.bench_function(BenchmarkId::new("rotating_flows", n), |b| {
            let mut k = 0usize;
            b.iter(|| {
                let v = process(&mut acks[k], &mut t, now);
                k += 1;
                if k == acks.len() {
                    k = 0;
                }
                black_box(v)
            })
        });
        // Batches of 32 as a worker receives them: each frame is copied into a reused
        // 32-slot buffer (as frames land in recycled UMEM frames; the copy is timed), then
        // every frame's table slot is prefetched, then each is processed.
        let mut replay = Replay::with(t, &acks);
        g.bench_function(BenchmarkId::new("rotating_batch32", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                black_box(replay.run(iters, now));
                start.elapsed()
            })
        });
        let t = replay.tables();
        assert_eq!(t.stats().drops_total(), 0);
    }
    g.finish();
}

/// Tables for new connections of `syns.len()` flows: every page of the connection
/// table written once (an IPv6 table's pages are lazily zeroed: in a director they fault
/// in once each, on first use; measured here is the steady state), then emptied.
fn table_for_new_flows(syns: &[Vec<u8>], v6: bool) -> Tables {
    let (mut t, _) = established_in(0, syns.len(), v6);
    for f in syns {
        process(&mut f.clone(), &mut t, Time::from_secs(1));
    }
    empty(&mut t);
    t
}

/// Expires every connection of `t`.
fn empty(t: &mut Tables) {
    let slots = t.slot_count();
    while t.conn_count() > 0 {
        t.expire(Time::from_secs(1_000_000), slots);
    }
}

/// The time `iters` SYNs of distinct flows (from `syns`, in order) take to be scheduled
/// and inserted into `t`, emptied (untimed) whenever they run out.
fn time_new_flows(t: &mut Tables, iters: u64, syns: &[Vec<u8>]) -> Duration {
    let mut spent = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let batch = (iters - done).min(syns.len() as u64) as usize;
        let mut frames: Vec<Vec<u8>> = syns[..batch].to_vec();
        let tx = t.stats().tx.get();
        let start = Instant::now();
        for f in frames.iter_mut() {
            black_box(process(f, t, Time::from_secs(1)));
        }
        spent += start.elapsed();
        assert_eq!(t.stats().tx.get() - tx, batch as u64);
        empty(t);
        done += batch as u64;
    }
    spent
}

fn new_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    const CAP: u32 = 1 << 20;
    // SYNs of distinct flows, scheduled (wlc over 8 reals) and inserted. The table is
    // replaced, untimed, whenever it fills.
    let syns: Vec<Vec<u8>> = (0..CAP).map(|k| flow_frame(k, SYN, false)).collect();
    let mut t = table_for_new_flows(&syns, false);
    g.bench_function("schedule_insert", |b| {
        b.iter_custom(|iters| time_new_flows(&mut t, iters, &syns))
    });
    drop(t);
    // The same as a worker runs it: batches of 32 copied into a reused buffer (as frames
    // land in the UMEM), every frame's headers and connection slot prefetched, then each
    // processed.
    g.bench_function("schedule_insert_batch32", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0u64;
            let mut buf = vec![[0u8; 60]; 32];
            while done < iters {
                let (mut t, _) = established(0, CAP as usize);
                let todo = (iters - done).min(u64::from(CAP)) as usize;
                let start = Instant::now();
                for chunk in syns[..todo].chunks(32) {
                    for (b, f) in buf.iter_mut().zip(chunk) {
                        b.copy_from_slice(&f[..60]);
                    }
                    let batch = &mut buf[..chunk.len()];
                    for f in batch.iter() {
                        prefetch_frame(f);
                    }
                    for f in batch.iter() {
                        prefetch(f, &t);
                    }
                    for f in batch.iter_mut() {
                        black_box(process(f, &mut t, Time::from_secs(1)));
                    }
                }
                spent += start.elapsed();
                assert_eq!(t.stats().tx.get(), todo as u64);
                done += todo as u64;
            }
            spent
        })
    });
    g.finish();
}

/// What an IPv6 connection costs next to an IPv4 one: hits on 1M established flows
/// (64-byte entries instead of 48) and new connections, as a worker runs them.
fn ipv6(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipv6");
    g.throughput(Throughput::Elements(1));
    const N: u32 = 1_000_000;
    for v6 in [false, true] {
        let family = if v6 { "ipv6" } else { "ipv4" };
        let (mut t, mut acks) = established_in(N, N as usize, v6);
        // One flow over and over: the parsing and the pipeline, its entry in cache.
        g.bench_function(BenchmarkId::new("same_flow", family), |b| {
            let f = &mut acks[0];
            b.iter(|| black_box(process(black_box(f), &mut t, Time::from_secs(2))))
        });
        let mut replay = Replay::with(t, &acks);
        g.bench_function(BenchmarkId::new("rotating_batch32_1M", family), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                black_box(replay.run(iters, Time::from_secs(2)));
                start.elapsed()
            })
        });
        assert_eq!(replay.tables().stats().drops_total(), 0);
        const CAP: u32 = 1 << 20;
        let syns: Vec<Vec<u8>> = (0..CAP).map(|k| flow_frame(k, SYN, v6)).collect();
        let mut t = table_for_new_flows(&syns, v6);
        g.bench_function(BenchmarkId::new("new_flow", family), |b| {
            b.iter_custom(|iters| time_new_flows(&mut t, iters, &syns))
        });
    }
    g.finish();
}

fn arp_reply(c: &mut Criterion) {
    let mut g = c.benchmark_group("arp");
    g.throughput(Throughput::Elements(1));
    let (mut t, _) = established(0, 1024);
    let request = xdpvs_arp::request(CLIENT_MAC, std::net::Ipv4Addr::new(198, 18, 0, 2), VIP);
    g.bench_function("reply_in_place", |b| {
        let mut f = request;
        b.iter(|| {
            f = request; // restore the request (a 60-byte copy)
            black_box(process(black_box(&mut f), &mut t, Time::ZERO))
        })
    });
    g.finish();
    // What was timed was an answer every time (asserted in the bench profile too), when
    // it ran (a filter may leave it out).
    let s = t.stats();
    assert!(
        s.reply.get() > 0 || s.rx.get() == 0,
        "the ARP requests were answered"
    );
    assert_eq!(s.drops_total(), 0, "no request was dropped");
}

/// The forwarding methods side by side in one run, 100k established flows, batches of
/// 32 as a worker runs them: direct routing (MACs only), NAT towards the real server
/// (address and port rewritten, checksums updated), and NAT replies (found from the real
/// server's address and port, rewritten from the VIP).
fn methods(c: &mut Criterion) {
    let mut g = c.benchmark_group("methods");
    g.throughput(Throughput::Elements(1));
    let n = 100_000u32;
    let now = Time::from_secs(2);
    let (dr, dr_acks) = established(n, n as usize);
    let (nat, nat_acks, replies) = established_nat(n, n as usize);
    let (nat_again, _, _) = established_nat(n, n as usize);
    let gue = Method::Tunnel(Tunnel {
        kind: TunKind::Gue,
        port: 6080,
        csum: TunCsum::No,
    });
    let gre_csum = Method::Tunnel(Tunnel {
        kind: TunKind::Gre,
        port: 0,
        csum: TunCsum::Csum,
    });
    let (ipip, ipip_acks) = established_with(n, n as usize, Method::Tunnel(Tunnel::IPIP), 0);
    let (gue_t, gue_acks) = established_with(n, n as usize, gue, 0);
    // Full-sized packets (1400 bytes of payload): the move of the packet in its buffer,
    // and a checksum over all of it, beside direct routing at the same size.
    let big = 1400;
    let (dr_big, dr_big_acks) = established_with(n, n as usize, Method::Route, big);
    let (ipip_big, ipip_big_acks) =
        established_with(n, n as usize, Method::Tunnel(Tunnel::IPIP), big);
    let (gre_big, gre_big_acks) = established_with(n, n as usize, gre_csum, big);
    for (name, tables, frames) in [
        ("dr_batch32", dr, &dr_acks),
        ("nat_to_real_batch32", nat, &nat_acks),
        ("nat_reply_batch32", nat_again, &replies),
        ("ipip_batch32", ipip, &ipip_acks),
        ("gue_batch32", gue_t, &gue_acks),
        ("dr_1454B_batch32", dr_big, &dr_big_acks),
        ("ipip_1454B_batch32", ipip_big, &ipip_big_acks),
        ("gre_csum_1454B_batch32", gre_big, &gre_big_acks),
    ] {
        replayed(&mut g, name, n, Replay::with(tables, frames), now);
    }
    g.finish();
}

/// Times `replay` as row `name` of `g` (`n` flows), and checks that nothing was dropped.
fn replayed(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: u32,
    mut replay: Replay,
    now: Time,
) {
    g.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            black_box(replay.run(iters, now));
            start.elapsed()
        })
    });
    assert_eq!(replay.tables().stats().drops_total(), 0, "{name}");
}

/// Two-armed NAT (`run -i CLIENTS -i SERVERS`): every frame crosses to the other
/// interface, copied into a buffer of its socket's UMEM, beside the same rewrite sent
/// from where it lies (one-armed), 100k established flows, small and full-sized packets.
fn two_armed(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_armed");
    g.throughput(Throughput::Elements(1));
    let n = 100_000u32;
    let now = Time::from_secs(2);
    for (name, payload, cross) in [
        ("nat_in_place_batch32", 0, false),
        ("nat_crossing_batch32", 0, true),
        ("nat_1454B_in_place_batch32", 1400, false),
        ("nat_1454B_crossing_batch32", 1400, true),
    ] {
        let (tables, frames) = established_with(n, n as usize, Method::Masq, payload);
        let replay = if cross {
            Replay::crossing(tables, &frames)
        } else {
            Replay::with(tables, &frames)
        };
        replayed(&mut g, name, n, replay, now);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = established_hit, new_flow, ipv6, arp_reply, methods, two_armed
}
criterion_main!(benches);
