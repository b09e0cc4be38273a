// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * xdpvs XDP program: steers the director's traffic to its AF_XDP sockets.
 *
 * - ARP requests whose target is a VIP                  -> AF_XDP socket of the RX queue
 * - ARP whose sender is a VIP (another host claiming it) -> AF_XDP socket (a conflict)
 * - IPv4 TCP/UDP to a configured (VIP, port, protocol)  -> AF_XDP socket of the RX queue
 * - IPv4 TCP/UDP fragments to a VIP (no ports to match on) -> AF_XDP socket (they follow
 *   their first fragment)
 * - ICMP to a VIP (echo, errors about connections)        -> AF_XDP socket
 * - everything else (the director's own address, other ports, IPv6...) -> kernel
 *
 * bpf_redirect_map() falls back to XDP_PASS when no socket is bound to the queue.
 * The maps are filled by xdpvs at run time: adding a service needs no reload.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "limits.h"

/* Keys are in network byte order, as they appear in the frame. */
struct service_key {
	__u32 vip;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XDPVS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u8);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, __u8);
} services SEC(".maps");

/* From linux/if_arp.h, which pulls in libc headers unusable for the BPF target. */
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1

/* Ethernet/IPv4 ARP (RFC 826). */
struct arp_eth_ipv4 {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

/* What the classifier decides. */
#define PASS 0
#define STEER 1

static __always_inline int classify_arp(void *l3, void *end)
{
	struct arp_eth_ipv4 *arp = l3;
	__u32 tpa, spa;

	if ((void *)(arp + 1) > end)
		return PASS;
	if (arp->ar_hrd != bpf_htons(ARPHRD_ETHER) ||
	    arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4)
		return PASS;
	/* Another host claiming a VIP (reply or gratuitous ARP): a conflict to count. */
	__builtin_memcpy(&spa, arp->spa, sizeof(spa));
	if (bpf_map_lookup_elem(&vips, &spa))
		return STEER;
	if (arp->ar_op != bpf_htons(ARPOP_REQUEST))
		return PASS;
	/* Byte copy: the field is not 4-byte aligned. */
	__builtin_memcpy(&tpa, arp->tpa, sizeof(tpa));
	if (!bpf_map_lookup_elem(&vips, &tpa))
		return PASS;
	return STEER;
}

static __always_inline int classify_ipv4(void *l3, void *end)
{
	struct iphdr *ip = l3;
	struct service_key key = {};
	__u16 *ports;

	if ((void *)(ip + 1) > end)
		return PASS;
	if (!bpf_map_lookup_elem(&vips, &ip->daddr))
		return PASS;
	/* ICMP to a VIP: echo answered, errors sent to their connection's real server. */
	if (ip->protocol == IPPROTO_ICMP)
		return STEER;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return PASS;
	if (ip->frag_off & bpf_htons(0x3fff))
		return STEER;
	if (ip->ihl < 5)
		return PASS;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		return PASS;
	key.vip = ip->daddr;
	key.port = ports[1];
	key.proto = ip->protocol;
	if (!bpf_map_lookup_elem(&services, &key))
		return PASS;
	return STEER;
}

/* Whether the director handles this frame (STEER) or the kernel does (PASS). */
static __always_inline int classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return PASS;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return classify_arp(eth + 1, end);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return classify_ipv4(eth + 1, end);
	return PASS;
}

SEC("xdp")
int xdpvs_steer(struct xdp_md *ctx)
{
	if (classify(ctx) == STEER)
		return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return XDP_PASS;
}

/*
 * The same decision, for BPF_PROG_TEST_RUN only (never attached): XDP_TX where
 * xdpvs_steer would redirect to the socket, XDP_PASS where it would pass. The shared
 * fixture table runs its frames through this and through the Rust engine.
 */
SEC("xdp")
int xdpvs_classify(struct xdp_md *ctx)
{
	return classify(ctx) == STEER ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
