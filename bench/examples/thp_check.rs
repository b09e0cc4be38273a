//! Prints how much of this process is backed by transparent huge pages after building a
//! default-size (1M-entry) connection table: `cargo run --release -p xdpvs-bench --example thp_check`.
fn main() {
    let (t, _) = xdpvs_bench::established(0, 1 << 20);
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let huge = rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages"))
        .unwrap_or("AnonHugePages: ?");
    println!("table {} MiB; {huge}", t.conns().memory_bytes() >> 20);
}
