// SPDX-License-Identifier: GPL-2.0
//
// The relay's kernel fast path: a tc ingress program that forwards a
// call's plain RTP from one party to the other without waking the relay
// thread, as rtpengine's kernel module does.
//
// The relay thread installs one route per direction of a call while that
// direction needs nothing but forwarding (no prompt, no SRTP, no
// recording; see media/src/relay/fast_path.rs). A datagram that matches a
// route (the party's latched address and port, to the leg's port, RTP
// version 2 from the stream's SSRC, not a telephone-event, before the
// call's cut) has its addresses, ports and, when the stream is being
// continued after a prompt, its sequence number, timestamp and SSRC
// rewritten, the checksums mended incrementally, and goes on to the other
// party: up the stack when that party is on this host, else out of the
// route's interface through the neighbour table. Everything else is left
// untouched for the relay thread (and for the next program on the hook:
// every relay on the host attaches its own, tcx runs them in turn). The route counts what it forwarded and
// remembers the last packet, which the thread folds into its counters.
//
// Built by media/build.rs with clang when clang is installed.

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Keep in step with media/src/relay/fast_path.rs (Key and Route).
struct key {
	__u32 remote_addr; // the party's address, network order
	__u16 local_port;  // the leg's RTP port, network order
	__u16 remote_port; // the party's port, network order
};

struct route {
	// Written by the relay thread.
	__u32 out_src_addr;    // network order
	__u32 out_dst_addr;    // network order
	__u16 out_src_port;    // network order
	__u16 out_dst_port;    // network order
	__u32 out_ifindex;     // 0: the other party is on this host
	__u64 deadline_ns;     // CLOCK_MONOTONIC; 0: no cut
	__u32 in_ssrc;         // as in the packet
	__u32 out_ssrc;        // as in the packet
	__u32 timestamp_delta; // host order
	__u16 seq_delta;       // host order
	__u8 event_type;       // telephone-event payload type; 0xff: none
	__u8 rewrite;          // nonzero: apply the deltas and out_ssrc
	// Written here.
	__u64 packets;
	__u64 bytes;          // UDP payload bytes, as the thread counts them
	__u64 last_ns;        // when the last one was forwarded
	__u32 last_timestamp; // the last forwarded timestamp, host order
	__u16 last_seq;       // the last forwarded sequence number, host order
	__u16 unused;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	// Kernel memory for the routes in use only, not for all of them.
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct key);
	__type(value, struct route);
} ROUTES SEC(".maps");

#define IP_OFF ETH_HLEN
#define IP_CHECK (IP_OFF + offsetof(struct iphdr, check))
#define IP_SADDR (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DADDR (IP_OFF + offsetof(struct iphdr, daddr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define UDP_SPORT (UDP_OFF + offsetof(struct udphdr, source))
#define UDP_DPORT (UDP_OFF + offsetof(struct udphdr, dest))
#define UDP_CHECK (UDP_OFF + offsetof(struct udphdr, check))
#define RTP_OFF (UDP_OFF + sizeof(struct udphdr))
#define RTP_SEQ (RTP_OFF + 2)
#define RTP_TS (RTP_OFF + 4)
#define RTP_SSRC (RTP_OFF + 8)
#define RTP_HEADER 12

// Not ours: the next program on the hook (another relay's) or the stack.
#define NEXT TC_ACT_UNSPEC

#define L4 (BPF_F_MARK_MANGLED_0)
#define PSEUDO (BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR)

// Replaces a 4-byte field at `off` that the UDP checksum covers (and the
// IP header checksum too when `l3`); false when the kernel refuses.
static __always_inline int replace4(struct __sk_buff *skb, __u32 off, __u32 from, __u32 to,
				    int l3, __u64 l4_flags)
{
	if (from == to)
		return 1;
	if (l3 && bpf_l3_csum_replace(skb, IP_CHECK, from, to, 4) < 0)
		return 0;
	if (bpf_l4_csum_replace(skb, UDP_CHECK, from, to, l4_flags | 4) < 0)
		return 0;
	return bpf_skb_store_bytes(skb, off, &to, 4, 0) == 0;
}

static __always_inline int replace2(struct __sk_buff *skb, __u32 off, __u16 from, __u16 to)
{
	if (from == to)
		return 1;
	if (bpf_l4_csum_replace(skb, UDP_CHECK, from, to, L4 | 2) < 0)
		return 0;
	return bpf_skb_store_bytes(skb, off, &to, 2, 0) == 0;
}

SEC("classifier")
int relay(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return NEXT;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + RTP_OFF + RTP_HEADER > end) {
		if (bpf_skb_pull_data(skb, RTP_OFF + RTP_HEADER) < 0)
			return NEXT;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		if (data + RTP_OFF + RTP_HEADER > end)
			return NEXT;
	}
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	__u8 *rtp = data + RTP_OFF;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
		return NEXT;
	struct key key = {
		.remote_addr = ip->saddr,
		.local_port = udp->dest,
		.remote_port = udp->source,
	};
	struct route *route = bpf_map_lookup_elem(&ROUTES, &key);
	if (!route)
		return NEXT;
	// RTP version 2; payload types 64-95 are RTCP's when multiplexed.
	__u8 type = rtp[1] & 0x7f;
	if ((rtp[0] & 0xc0) != 0x80 || type == route->event_type || (type >= 64 && type < 96))
		return NEXT;
	__u32 ssrc = *(__u32 *)(rtp + 8);
	if (ssrc != route->in_ssrc)
		return NEXT;
	__u64 now = bpf_ktime_get_ns();
	if (route->deadline_ns && now >= route->deadline_ns)
		return NEXT;

	__u32 saddr = ip->saddr, daddr = ip->daddr;
	__u16 sport = udp->source, dport = udp->dest;
	__u16 udp_len = bpf_ntohs(udp->len);
	__u16 seq_raw = *(__u16 *)(rtp + 2);
	__u32 ts_raw = *(__u32 *)(rtp + 4);
	__u16 seq = bpf_ntohs(seq_raw);
	__u32 timestamp = bpf_ntohl(ts_raw);
	if (route->rewrite) {
		seq += route->seq_delta;
		timestamp += route->timestamp_delta;
	}
	// From here on the packet is changed: a helper that fails leaves it
	// half rewritten, so it is dropped, as a full queue would.
	if (!replace4(skb, IP_SADDR, saddr, route->out_src_addr, 1, PSEUDO) ||
	    !replace4(skb, IP_DADDR, daddr, route->out_dst_addr, 1, PSEUDO) ||
	    !replace2(skb, UDP_SPORT, sport, route->out_src_port) ||
	    !replace2(skb, UDP_DPORT, dport, route->out_dst_port))
		return TC_ACT_SHOT;
	if (route->rewrite &&
	    (!replace2(skb, RTP_SEQ, seq_raw, bpf_htons(seq)) ||
	     !replace4(skb, RTP_TS, ts_raw, bpf_htonl(timestamp), 0, L4) ||
	     !replace4(skb, RTP_SSRC, ssrc, route->out_ssrc, 0, L4)))
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&route->packets, 1);
	__sync_fetch_and_add(&route->bytes, udp_len > 8 ? udp_len - 8 : 0);
	route->last_ns = now;
	route->last_seq = seq;
	route->last_timestamp = timestamp;
	if (!route->out_ifindex)
		return TC_ACT_OK;
	return bpf_redirect_neigh(route->out_ifindex, NULL, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
