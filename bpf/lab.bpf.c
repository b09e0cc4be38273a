// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * A tc program of the test lab (xdpvs-testkit), not of the director.
 *
 * xdpvs_lab_rss: on the switch's egress port to a multi-queue director. A veth picks the
 * RX queue of its peer from the hash the sending socket chose at random (sk_txhash, and
 * chosen again when the socket retransmits), so two sockets that reuse one source port, or
 * one connection's retransmitted SYN, may land on two queues: a NIC's RSS never does
 * that. Forgetting the hash makes the kernel pick the queue from a hash of the addresses
 * and ports (the flow dissector), as RSS does.
 *
 * xdpvs_lab_pass: an XDP program that passes everything, on the switch's port to a
 * director run with --offload: a frame sent with XDP_TX out of a veth is delivered only
 * when its peer has an XDP program.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int xdpvs_lab_rss(struct __sk_buff *skb)
{
	bpf_set_hash_invalid(skb);
	return TC_ACT_OK;
}

SEC("xdp")
int xdpvs_lab_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
