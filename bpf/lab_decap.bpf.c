// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * xdpvs_lab_decap: on the ingress of a lab real server's eth0, in place of the ipip,
 * ip6_tunnel, fou and ip_gre modules this kernel lacks. A packet to this host that
 * carries another IP packet -- IPIP (protocol 4), IPv6 in IPv6 (41), GUE (UDP to
 * LAB_GUE_PORT, version 0, no options) or GRE (version 0, with or without checksum) --
 * loses its outer headers and goes on as the packet it carried, marked with
 * LAB_MARK | kind so that the lab counts it (nftables counters on the mark).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LAB_GUE_PORT 6080
#define LAB_MARK 0x7800

enum { KIND_IPIP = 1, KIND_GUE = 2, KIND_GRE = 3 };

SEC("tc")
int xdpvs_lab_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 outer, proto, off;
	int kind;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return TC_ACT_OK;
		outer = sizeof(*ip);
		proto = ip->protocol;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		outer = sizeof(*ip6);
		proto = ip6->nexthdr;
	} else {
		return TC_ACT_OK;
	}
	off = sizeof(*eth) + outer;
	if (proto == 4 || proto == 41) {
		kind = KIND_IPIP;
	} else if (proto == 17) {
		struct udphdr *udp = data + off;
		__u8 *gue = (void *)(udp + 1);
		if ((void *)(gue + 4) > end || udp->dest != bpf_htons(LAB_GUE_PORT) || gue[0] != 0)
			return TC_ACT_OK;
		outer += sizeof(*udp) + 4;
		kind = KIND_GUE;
	} else if (proto == 47) {
		__u8 *gre = data + off;
		if ((void *)(gre + 4) > end || (gre[0] & 0x7f) || gre[1])
			return TC_ACT_OK;
		outer += (gre[0] & 0x80) ? 8 : 4;
		kind = KIND_GRE;
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_adjust_room(skb, -(__s32)outer, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_OK;
	skb->mark = LAB_MARK | kind;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
