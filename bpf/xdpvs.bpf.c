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
 * - IPv6 TCP/UDP to a configured (VIP, port, protocol), through the extension headers
 *   that may precede them; IPv6 fragments to a VIP; ICMPv6 to a VIP -> AF_XDP socket
 * - neighbour solicitations and advertisements whose target is an IPv6 VIP (sent to
 *   its solicited-node multicast address or unicast)   -> AF_XDP socket
 * - IPv4/IPv6 TCP/UDP from a NAT real server's (address, port, protocol) to any
 *   address but a VIP (its replies, which come back through the director, its
 *   gateway) -> AF_XDP socket (IPv6: with no extension header before the transport);
 *   to the director's own addresses (its checks' answers) -> kernel; ICMP errors
 *   from a NAT real server's address (about clients' packets) -> AF_XDP socket
 * - everything else (the director's own addresses, other ports...) -> kernel
 *
 * Two-armed (the real servers behind a second interface, the program attached to both):
 * on the real servers' interface only NAT real servers' replies and errors are steered,
 * to the socket of its queue (XSKMAP index XDPVS_MAX_QUEUES + queue); a VIP is not
 * answered there.
 *
 * `run --offload`: an IPv4 TCP segment without SYN, FIN or RST, or a UDP datagram, of a
 * flow in the `flows` map (an established direct-routing connection the workers put
 * there) is forwarded here: the MACs rewritten as the engine rewrites them, counted in
 * the flow's counters (an array the director maps and reads), sent back out with
 * XDP_TX. The workers stay the
 * authority: they insert and remove flows, and the director reads the counters back.
 *
 * bpf_redirect_map() falls back to XDP_PASS when no socket is bound to the queue.
 * The maps are filled by xdpvs at run time: adding a service needs no reload.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "limits.h"

/* One load or store, as written (the director reads these words concurrently). */
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* Keys are in network byte order, as they appear in the frame. */
struct service_key {
	__u32 vip;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct vip6_key {
	__u8 addr[16];
};

struct service6_key {
	__u8 vip[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* A NAT real server: where its replies come from. */
struct nat_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct nat6_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* An offloaded flow, as the client sends it (network byte order). */
struct flow_key {
	__u32 client;
	__u32 vip;
	__u16 cport;
	__u16 vport;
	__u8 proto;
	__u8 pad[3];
};

/* Where it goes. */
struct flow_val {
	__u8 to[ETH_ALEN];   /* the real server's MAC */
	__u8 from[ETH_ALEN]; /* the director's MAC */
	__u32 slot; /* its counters in `flow_counts`, a slot the director chose */
	__u64 idle_ns; /* the connection's timeout: idle longer, it is the workers' again */
};

/* What the program forwarded of a flow, on every CPU (added atomically). The director
 * maps the array and reads it in place: a pass over a million flows reads memory, no
 * system call per flow. */
struct flow_count {
	__u64 packets;
	__u64 bytes; /* IP lengths, as IPVS counts */
	__u64 last_seen; /* bpf_ktime_get_ns() */
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 2 * XDPVS_MAX_QUEUES);
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_VIPS);
	__type(key, struct vip6_key);
	__type(value, __u8);
} vips6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_SERVICES);
	__type(key, struct service6_key);
	__type(value, __u8);
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_DESTS);
	__type(key, struct nat_key);
	__type(value, __u8);
} nats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_DESTS);
	__type(key, struct nat6_key);
	__type(value, __u8);
} nats6 SEC(".maps");

/* `run --offload`: established flows (max_entries set at load; 1 when off). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

/* Their counters, by the slot a flow's value names (as many as `flows` holds). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_count);
} flow_counts SEC(".maps");

/* Two-armed: the index of the real servers' interface (0: one interface). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} servers_side SEC(".maps");

/* The director's own addresses: traffic to them (health checks' answers from a NAT
 * real server, say) is the kernel's. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u8);
} own SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPVS_MAX_VIPS);
	__type(key, struct vip6_key);
	__type(value, __u8);
} own6 SEC(".maps");

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
/* Forwarded here (the frame rewritten): XDP_TX. */
#define FAST 2

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* `run --offload`: forwards a packet of an offloaded flow, if it is one. `ports` points
 * at the transport header, whose first 4 bytes are known to be in the frame. */
static __always_inline int fast_path(struct iphdr *ip, __u16 *ports, void *end)
{
	struct flow_key key = {};
	struct flow_val *v;
	struct flow_count *c;
	struct ethhdr *eth = (void *)ip - sizeof(struct ethhdr);
	__u64 now;
	int i;

	if (ip->protocol == IPPROTO_TCP) {
		__u8 *tcp = (void *)ports;

		if ((void *)(tcp + 14) > end)
			return STEER;
		if (tcp[13] & (TCP_SYN | TCP_FIN | TCP_RST))
			return STEER;
	}
	key.client = ip->saddr;
	key.vip = ip->daddr;
	key.cport = ports[0];
	key.vport = ports[1];
	key.proto = ip->protocol;
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v)
		return STEER;
	c = bpf_map_lookup_elem(&flow_counts, &v->slot);
	if (!c)
		return STEER;
	if ((void *)(eth + 1) > end)
		return STEER;
	now = bpf_ktime_get_ns();
	/* Idle past its timeout: the worker decides (it expired there). */
	if (now - READ_ONCE(c->last_seen) > v->idle_ns)
		return STEER;
	/* Byte by byte: see docs (clang folds some array copies). */
#pragma unroll
	for (i = 0; i < ETH_ALEN; i++) {
		eth->h_dest[i] = v->to[i];
		eth->h_source[i] = v->from[i];
	}
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, bpf_ntohs(ip->tot_len));
	WRITE_ONCE(c->last_seen, now);
	return FAST;
}

static __always_inline int classify_arp(void *l3, void *end, int servers)
{
	struct arp_eth_ipv4 *arp = l3;
	__u32 tpa, spa;

	if (servers || (void *)(arp + 1) > end)
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

/* A NAT real server's reply (a whole packet or a first fragment). */
static __always_inline int classify_nat_reply(struct iphdr *ip, void *end)
{
	struct nat_key key = {};
	__u16 *ports;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
	    ip->protocol != IPPROTO_ICMP)
		return PASS;
	if ((ip->frag_off & bpf_htons(0x1fff)) || ip->ihl < 5)
		return PASS;
	if (bpf_map_lookup_elem(&own, &ip->daddr))
		return PASS;
	if (ip->protocol == IPPROTO_ICMP) {
		/* An error a NAT real server sent about a client's packet: keyed port 0. */
		__u8 *icmp = (void *)ip + ip->ihl * 4;

		if ((void *)(icmp + 1) > end || (ip->frag_off & bpf_htons(0x2000)))
			return PASS;
		if (icmp[0] != 3 && icmp[0] != 4 && icmp[0] != 11 && icmp[0] != 12)
			return PASS;
		key.addr = ip->saddr;
		key.proto = IPPROTO_ICMP;
		return bpf_map_lookup_elem(&nats, &key) ? STEER : PASS;
	}
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		return PASS;
	key.addr = ip->saddr;
	key.port = ports[0];
	key.proto = ip->protocol;
	return bpf_map_lookup_elem(&nats, &key) ? STEER : PASS;
}

static __always_inline int classify_ipv4(void *l3, void *end, int servers)
{
	struct iphdr *ip = l3;
	struct service_key key = {};
	__u16 *ports;

	if ((void *)(ip + 1) > end)
		return PASS;
	if (!bpf_map_lookup_elem(&vips, &ip->daddr))
		return classify_nat_reply(ip, end);
	if (servers)
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
	return fast_path(ip, ports, end);
}

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_ICMPV6 58
#define ND_SOLICIT 135
#define ND_ADVERT 136
/* Extension headers walked before giving up (to the kernel). */
#define MAX_EXTS 4

static __always_inline int classify_ipv6(void *l3, void *end, int servers)
{
	struct ipv6hdr *ip = l3;
	struct service6_key key = {};
	void *p = ip + 1;
	__u8 next;
	__u16 *ports;
	int i;

	if ((void *)(ip + 1) > end)
		return PASS;
	next = ip->nexthdr;
	/* Neighbour discovery for a VIP: its target, not its destination, says. */
	if (next == NEXTHDR_ICMPV6) {
		__u8 *icmp = p;

		if ((void *)(icmp + 1) > end)
			return PASS;
		if (icmp[0] == ND_SOLICIT || icmp[0] == ND_ADVERT) {
			if (servers || (void *)(icmp + 24) > end)
				return PASS;
			return bpf_map_lookup_elem(&vips6, icmp + 8) ? STEER : PASS;
		}
	}
	if (!bpf_map_lookup_elem(&vips6, &ip->daddr)) {
		struct nat6_key nat = {};

		/* A NAT real server's reply, the transport header straight after, or its
		 * ICMPv6 error (keyed port 0). */
		if (next != IPPROTO_TCP && next != IPPROTO_UDP && next != NEXTHDR_ICMPV6)
			return PASS;
		if (bpf_map_lookup_elem(&own6, &ip->daddr))
			return PASS;
		if (next == NEXTHDR_ICMPV6) {
			__u8 *icmp = p;

			if ((void *)(icmp + 1) > end || icmp[0] < 1 || icmp[0] > 4)
				return PASS;
			__builtin_memcpy(nat.addr, &ip->saddr, sizeof(nat.addr));
			nat.proto = NEXTHDR_ICMPV6;
			return bpf_map_lookup_elem(&nats6, &nat) ? STEER : PASS;
		}
		ports = p;
		if ((void *)(ports + 2) > end)
			return PASS;
		__builtin_memcpy(nat.addr, &ip->saddr, sizeof(nat.addr));
		nat.port = ports[0];
		nat.proto = next;
		return bpf_map_lookup_elem(&nats6, &nat) ? STEER : PASS;
	}
	if (servers)
		return PASS;
#pragma unroll
	for (i = 0; i < MAX_EXTS; i++) {
		__u8 *ext = p;

		if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
		    next != NEXTHDR_FRAGMENT && next != NEXTHDR_AUTH)
			break;
		if ((void *)(ext + 8) > end)
			return PASS;
		if (next == NEXTHDR_FRAGMENT) {
			/* A later fragment has no ports: it follows its first. */
			if ((ext[2] << 8 | ext[3]) & 0xfff8)
				return STEER;
			p = ext + 8;
		} else if (next == NEXTHDR_AUTH) {
			p = ext + ((__u32)ext[1] + 2) * 4;
		} else {
			p = ext + ((__u32)ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	/* ICMPv6 to a VIP: echo answered, errors sent to their connection's real server. */
	if (next == NEXTHDR_ICMPV6)
		return STEER;
	if (next != IPPROTO_TCP && next != IPPROTO_UDP)
		return PASS;
	ports = p;
	if ((void *)(ports + 2) > end)
		return PASS;
	__builtin_memcpy(key.vip, &ip->daddr, sizeof(key.vip));
	key.port = ports[1];
	key.proto = next;
	if (!bpf_map_lookup_elem(&services6, &key))
		return PASS;
	return STEER;
}

/* Whether the director handles this frame (STEER) or the kernel does (PASS). */
static __always_inline int classify(struct xdp_md *ctx, int servers)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return PASS;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return classify_arp(eth + 1, end, servers);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return classify_ipv4(eth + 1, end, servers);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return classify_ipv6(eth + 1, end, servers);
	return PASS;
}

SEC("xdp")
int xdpvs_steer(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *side = bpf_map_lookup_elem(&servers_side, &zero);

	if (side && *side && ctx->ingress_ifindex == *side) {
		if (classify(ctx, 1) == STEER)
			return bpf_redirect_map(&xsks, XDPVS_MAX_QUEUES + ctx->rx_queue_index,
						XDP_PASS);
		return XDP_PASS;
	}
	switch (classify(ctx, 0)) {
	case STEER:
		return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	case FAST:
		return XDP_TX;
	default:
		return XDP_PASS;
	}
}

/*
 * The same decision, for BPF_PROG_TEST_RUN only (never attached): XDP_TX where
 * xdpvs_steer would redirect to the socket, XDP_PASS where it would pass. The shared
 * fixture table runs its frames through this and through the Rust engine.
 */
SEC("xdp")
int xdpvs_classify(struct xdp_md *ctx)
{
	return classify(ctx, 0) != PASS ? XDP_TX : XDP_PASS;
}

/*
 * `run --offload`, for BPF_PROG_TEST_RUN only (never attached): XDP_TX (the frame
 * rewritten) where xdpvs_steer forwards the frame itself, XDP_PASS otherwise. The
 * equivalence tests compare its frames with the engine's.
 */
SEC("xdp")
int xdpvs_fast(struct xdp_md *ctx)
{
	return classify(ctx, 0) == FAST ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
