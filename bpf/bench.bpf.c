// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * XDP programs of the benchmark harness (xdpvs-bench), not of the director.
 *
 * - xdpvs_bench_sink: on the sink real server. Counts benchmark frames whose MACs show
 *   they were forwarded (destination = the real server, source = the forwarder) and drops
 *   them; frames to the VIP with any other MACs are counted as "wrong" and dropped;
 *   everything else (ARP...) goes to the kernel. A good frame carries a stamp at the
 *   start of its L4 payload: the harness generator's (magic "XVBN", CLOCK_MONOTONIC ns)
 *   or kernel pktgen's header (magic 0xbe9be955, sequence, realtime seconds and
 *   microseconds). Every (mask+1)-th good frame's receive time and stamp go to a ring
 *   buffer; the harness turns them into one-way latencies in an HDR histogram.
 * - xdpvs_bench_mac_tx: the in-kernel ceiling. Rewrites the MACs of frames to the VIP
 *   (IPv4 or IPv6) as the director would and sends them back out with XDP_TX.
 *
 * IPv6 frames count when their transport header follows the IPv6 header directly (the
 * harness sends no extension headers).
 * - xdpvs_bench_pass: XDP_PASS. On veth, XDP_TX into a peer only delivers when the peer
 *   has an XDP program.
 *
 * Configuration lives in single-entry array maps (rodata arrays were folded to zeros by
 * clang 14: see shared AF_XDP notes).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The stamp a generator frame carries at the start of its L4 payload. */
#define STAMP_MAGIC 0x5856424eu /* "XVBN" */
#define PKTGEN_MAGIC 0xbe9be955u
struct stamp {
	__u32 magic;
	__u32 pad;
	__u64 tx_ns;
} __attribute__((packed));

/* A latency sample: when the frame arrived and its stamp, as it was. */
struct sample {
	__u64 rx_ns;
	__u8 stamp[16];
};

struct sink_cfg {
	__u8 rs_mac[6];
	__u8 fwd_mac[6];
	__u32 vip;         /* network byte order */
	__u32 sample_mask; /* a latency sample every (mask+1) good frames */
	__u8 vip6[16];
	__u32 rs;          /* the sink's own address (NAT frames), network byte order */
};

struct sink_counts {
	__u64 good;
	__u64 good_bytes;
	__u64 wrong_mac;
	__u64 samples_lost;
};

struct tx_cfg {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 vip;
	__u8 vip6[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_cfg);
} sink_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_counts);
} sink_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tx_cfg);
} tx_cfg SEC(".maps");

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	/* Byte by byte: see the note on clang 14 above. */
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] &&
	       a[4] == b[4] && a[5] == b[5];
}

/* The IPv4 header of a frame to `vip`, or NULL. */
static __always_inline struct iphdr *ipv4_to(void *data, void *end, __u32 vip)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	if (ip->daddr != vip)
		return NULL;
	return ip;
}

/* A benchmark frame xdpvs forwarded by NAT (to the sink's address `rs`) or in an IPIP
 * or GUE (UDP port 6080, 4-byte header) tunnel to it: the IPv4 header of the packet the
 * generator sent (after the outer headers), or of the NAT frame; NULL otherwise. */
static __always_inline struct iphdr *ipv4_nat_or_tunnel(void *data, void *end, __u32 rs)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->daddr != rs ||
	    ip->ihl != 5)
		return NULL;
	if (ip->protocol == 4)
		ip = ip + 1;
	else if (ip->protocol == IPPROTO_UDP && (void *)ip + 20 + 12 <= end &&
		 *(__u16 *)((void *)ip + 22) == bpf_htons(6080))
		ip = (void *)ip + 20 + 12;
	else
		return ip;
	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return NULL;
	return ip;
}

static __always_inline int addr6_eq(const __u8 *a, const __u8 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 16; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* Where the transport header of a frame to the VIP (IPv4) or to `vip6` starts, and
 * its protocol; NULL for any other frame. */
static __always_inline void *l4_to(void *data, void *end, __u32 vip, const __u8 *vip6,
				   __u32 rs, __u8 *proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return NULL;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || !addr6_eq((void *)&ip6->daddr, vip6))
			return NULL;
		*proto = ip6->nexthdr;
		return ip6 + 1;
	}
	struct iphdr *ip = ipv4_to(data, end, vip);

	if (!ip)
		ip = ipv4_nat_or_tunnel(data, end, rs);
	if (!ip)
		return NULL;
	*proto = ip->protocol;
	return (void *)ip + ip->ihl * 4;
}

SEC("xdp")
int xdpvs_bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct sink_cfg *cfg = bpf_map_lookup_elem(&sink_cfg, &zero);
	struct sink_counts *cnt = bpf_map_lookup_elem(&sink_counts, &zero);
	struct ethhdr *eth = data;
	struct stamp *st;
	void *l4;
	__u8 proto = 0;

	if (!cfg || !cnt)
		return XDP_PASS;
	l4 = l4_to(data, end, cfg->vip, cfg->vip6, cfg->rs, &proto);
	if (!l4)
		return XDP_PASS;
	if (!mac_eq(eth->h_dest, cfg->rs_mac) || !mac_eq(eth->h_source, cfg->fwd_mac)) {
		cnt->wrong_mac++;
		return XDP_DROP;
	}
	if (proto == IPPROTO_UDP)
		st = l4 + 8;
	else if (proto == IPPROTO_TCP)
		st = l4 + 20;
	else
		return XDP_PASS;
	if ((void *)(st + 1) > end ||
	    (st->magic != bpf_htonl(STAMP_MAGIC) && st->magic != bpf_htonl(PKTGEN_MAGIC)))
		return XDP_PASS;
	cnt->good++;
	cnt->good_bytes += end - data;
	if ((cnt->good & cfg->sample_mask) == 0) {
		struct sample smp;

		smp.rx_ns = bpf_ktime_get_ns();
		__builtin_memcpy(smp.stamp, st, sizeof(smp.stamp));
		if (bpf_ringbuf_output(&latency, &smp, sizeof(smp), BPF_RB_NO_WAKEUP))
			cnt->samples_lost++;
	}
	return XDP_DROP;
}

SEC("xdp")
int xdpvs_bench_mac_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct tx_cfg *cfg = bpf_map_lookup_elem(&tx_cfg, &zero);
	struct ethhdr *eth = data;
	__u8 proto;
	int i;

	if (!cfg || !l4_to(data, end, cfg->vip, cfg->vip6, 0, &proto))
		return XDP_PASS;
#pragma unroll
	for (i = 0; i < 6; i++) {
		eth->h_dest[i] = cfg->dst_mac[i];
		eth->h_source[i] = cfg->src_mac[i];
	}
	return XDP_TX;
}

SEC("xdp")
int xdpvs_bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
