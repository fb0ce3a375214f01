/* SPDX-License-Identifier: BSD-3-Clause
 * parse.c - Ethernet, 802.1Q/QinQ, ARP, IPv4 (with options), IPv6 (with
 * extension headers), TCP, UDP, ICMP, ICMPv6.
 *
 * The walk works on a plain buffer (pd_parse_raw) so the fuzzer can drive
 * it without EAL. Lengths are checked against the IP header's own length,
 * never the frame length, so Ethernet padding is not taken for payload.
 * Non-IP, non-ARP frames (LLDP, ...) are not malformed: they take the
 * "other" edge.
 */
#include <stddef.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_prefetch.h>
#include <rte_vect.h>

#include "parse.h"

#define X_PARSE_DROPS(_) \
	_(TRUNC_ETH, "truncated-ethernet") \
	_(VLAN_DEPTH, "too-many-vlan-tags") \
	_(TRUNC_ARP, "truncated-arp") \
	_(TRUNC_IP, "truncated-ip") \
	_(BAD_VER, "bad-ip-version") \
	_(BAD_IHL, "bad-ipv4-header-length") \
	_(BAD_LEN, "bad-ip-total-length") \
	_(BAD_CKSUM, "bad-ipv4-checksum") \
	_(TRUNC_EXT, "truncated-ipv6-ext-header") \
	_(EXT_DEPTH, "too-many-ipv6-ext-headers") \
	_(TRUNC_L4, "truncated-l4") \
	_(BAD_TCP_OFF, "bad-tcp-data-offset") \
	_(BAD_UDP_LEN, "bad-udp-length")

enum {
#define _E(id, s) PARSE_##id,
	X_PARSE_DROPS(_E)
#undef _E
};

static const char *const parse_drops[] = {
#define _S(id, s) s,
	X_PARSE_DROPS(_S)
#undef _S
	NULL,
};
static const char *const parse_edges[] = { "next", "ipv4", "ipv6", "arp",
					   "other", NULL };

#define MAX_VLAN 2
#define MAX_EXT 8
#define DROP(r) return PARSE_##r + 1

/*
 * L4 header checks; `l4len` is what the IP header says follows. `partial`:
 * a first fragment (more-fragments set), which carries the L4 header but
 * only the start of the datagram, so the UDP length may exceed `l4len`.
 */
static __rte_always_inline int parse_l4(const uint8_t *l4, uint32_t l4len,
					uint8_t proto, bool partial)
{
	switch (proto) {
	case IPPROTO_TCP: {
		unsigned doff;

		if (l4len < 20)
			DROP(TRUNC_L4);
		doff = (unsigned)(l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4len)
			DROP(BAD_TCP_OFF);
		return 0;
	}
	case IPPROTO_UDP: {
		uint16_t ulen;

		if (l4len < 8)
			DROP(TRUNC_L4);
		ulen = pd_rd16(l4 + 4);
		if (ulen < 8 || (ulen > l4len && !partial))
			DROP(BAD_UDP_LEN);
		return 0;
	}
	case IPPROTO_ICMP:
		if (l4len < 8)
			DROP(TRUNC_L4);
		return 0;
	case IPPROTO_ICMPV6:
		if (l4len < 4)
			DROP(TRUNC_L4);
		return 0;
	default:
		return 0;
	}
}

/*
 * The IPv4 header sums to 0xffff (one's complement), the verdict of
 * rte_raw_cksum() without its loop. The sum of the five 32-bit words, s, is
 * congruent to the 16-bit word sum modulo 0xffff (2^16 = 1 mod 0xffff), and
 * a one's complement sum is 0xffff exactly when the word sum is a non-zero
 * multiple of 0xffff. It is never zero here: every caller has checked the
 * version nibble (4), so the first byte is not 0. GCC and clang turn the
 * divisibility test by the odd constant into one multiply and one compare
 * (x * 0xffff^-1 mod 2^64 <= (2^64 - 1) / 0xffff), so the check is five
 * loads, four independent adds, an imul and a compare, no fold.
 * Measured, forward.yaml on the bench PMDs (pydp bench, hugepages, on-CPU
 * medians of 3 x 3 s): the fold before it 61.6 cycles/pkt (bare 43.5, ratio
 * 0.706), this 58.6 (bare 43.8, 0.745); callgrind 320.8 -> 313.8
 * instructions/pkt for the whole worker loop (benchmarks/README.md).
 * Then (perf2): two 8-byte and one 4-byte load summed with add/adc/adc
 * (the end-around carry keeps the sum's residue mod 0xffff), and the
 * divisibility test written out as the multiply by 0xffff's inverse: 9
 * instructions. callgrind 301.0 -> 297.1 instructions/pkt; forward.yaml
 * on-CPU 59.3-63.8 -> 56.8-57.0 cycles/pkt (bare 43.8-46.0 -> 44.5-45.6;
 * cpu_ratio 0.715/0.774/0.739 -> 0.800/0.781/0.784, 3 runs each, host
 * shared). Checked against rte_raw_cksum() on 20M headers (half valid).
 */
static inline bool ipv4_cksum_ok(const uint8_t *ip, uint32_t ihl)
{
	unsigned long long a, b, s2;
	uint32_t e;

	if (unlikely(ihl != 20))
		return rte_raw_cksum(ip, ihl) == 0xffff;
	memcpy(&a, ip, 8);
	memcpy(&b, ip + 8, 8);
	memcpy(&e, ip + 16, 4);
	/* end-around carry: 2^64 = 1 mod 0xffff too; after the second add
	 * a carry leaves s2 < 2^32, so adding it cannot overflow */
#ifdef RTE_ARCH_X86_64
	/* GCC spills the carry of _addcarry_u64 and __int128 to the stack */
	s2 = a;
	__asm__("addq %[b], %[s]\n\tadcq %[e], %[s]\n\tadcq $0, %[s]"
		: [s] "+r" (s2)
		: [b] "rm" (b), [e] "rm" ((unsigned long long)e)
		: "cc");
#else
	s2 = a + b;
	s2 += s2 < a;   /* a + b + 1 <= 2^65 - 2: no second overflow */
	s2 += e;
	s2 += s2 < e;   /* then s2 < 2^32: adding 1 cannot overflow */
#endif
	/* s2 % 0xffff == 0 written out: GCC does not see it through the
	 * carries. 0xfffefffefffeffff = 0xffff^-1 mod 2^64. */
	return s2 * 0xfffefffefffeffffULL <= 0x1000100010001ULL;
}

static __rte_always_inline int parse_ipv4(const uint8_t *ip, uint32_t avail,
					  uint32_t off, int verify,
					  struct pd_meta *m)
{
	uint32_t ihl, tot;
	uint16_t frag;
	int rc;

	if (avail < 20)
		DROP(TRUNC_IP);
	if ((ip[0] >> 4) != 4)
		DROP(BAD_VER);
	ihl = (uint32_t)(ip[0] & 0xf) * 4;
	if (ihl < 20)
		DROP(BAD_IHL);
	if (ihl > avail)
		DROP(TRUNC_IP);
	tot = pd_rd16(ip + 2);
	if (tot < ihl || tot > avail)
		DROP(BAD_LEN);
	if (verify && !ipv4_cksum_ok(ip, ihl))
		DROP(BAD_CKSUM);
	m->l3 = PD_L3_IPV4;
	m->l4_proto = ip[9];
	frag = pd_rd16(ip + 6);
	if (frag & RTE_IPV4_HDR_OFFSET_MASK) {
		m->flags |= PD_META_FRAG;  /* non-first fragment: no L4 header */
		return 0;
	}
	if ((rc = parse_l4(ip + ihl, tot - ihl, m->l4_proto,
			   frag & RTE_IPV4_HDR_MF_FLAG)) != 0)
		return rc;
	if (tot > ihl)  /* else nothing follows: there is no L4 header */
		m->l4_off = (uint16_t)(off + ihl);
	return 0;
}

static __rte_noinline int parse_ipv6(const uint8_t *ip, uint32_t avail,
				     uint32_t off, struct pd_meta *m)
{
	uint32_t end, pos = 40;
	bool partial = false;
	uint8_t nh;
	int rc, i;

	if (avail < 40)
		DROP(TRUNC_IP);
	if ((ip[0] >> 4) != 6)
		DROP(BAD_VER);
	end = 40u + pd_rd16(ip + 4);
	if (end > avail)
		DROP(BAD_LEN);
	nh = ip[6];
	m->l3 = PD_L3_IPV6;
	for (i = 0;; i++) {
		uint32_t hlen;

		switch (nh) {
		case IPPROTO_HOPOPTS: case IPPROTO_ROUTING: case IPPROTO_DSTOPTS:
		case 135 /* mobility */: case 139 /* HIP */: case 140 /* shim6 */:
			if (pos + 2 > end)
				DROP(TRUNC_EXT);
			hlen = ((uint32_t)ip[pos + 1] + 1) * 8;
			break;
		case IPPROTO_AH:
			if (pos + 2 > end)
				DROP(TRUNC_EXT);
			hlen = ((uint32_t)ip[pos + 1] + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			if (pos + 8 > end)
				DROP(TRUNC_EXT);
			if (pd_rd16(ip + pos + 2) & 0xfff8) {
				m->flags |= PD_META_FRAG;
				m->l4_proto = ip[pos];
				return 0;
			}
			partial = ip[pos + 3] & 1;  /* M: more fragments */
			hlen = 8;
			break;
		default:
			m->l4_proto = nh;
			if (nh == IPPROTO_NONE) {
				m->l4_proto = 0;
				return 0;
			}
			if ((rc = parse_l4(ip + pos, end - pos, nh,
					   partial)) != 0)
				return rc;
			if (end > pos)  /* else there is no L4 header */
				m->l4_off = (uint16_t)(off + pos);
			return 0;
		}
		if (i >= MAX_EXT)
			DROP(EXT_DEPTH);
		if (pos + hlen > end)
			DROP(TRUNC_EXT);
		nh = ip[pos];
		pos += hlen;
	}
}

/* What parse writes of struct pd_meta, in its order: bytes 2..9 (l3_off to
 * flags), so the fast path sets them with one 8-byte store; in_port, pad and
 * aux are not parse's and stay as they are. */
struct parse_out {
	uint16_t l3_off;
	uint16_t l4_off;
	uint8_t l3;
	uint8_t l4_proto;
	uint16_t flags;
};
_Static_assert(sizeof(struct parse_out) == 8 &&
	       offsetof(struct pd_meta, l4_off) - offsetof(struct pd_meta, l3_off) == 2 &&
	       offsetof(struct pd_meta, l3) - offsetof(struct pd_meta, l3_off) == 4 &&
	       offsetof(struct pd_meta, l4_proto) - offsetof(struct pd_meta, l3_off) == 5 &&
	       offsetof(struct pd_meta, flags) - offsetof(struct pd_meta, l3_off) == 6,
	       "struct parse_out must mirror pd_meta from l3_off to flags");

/* parse_fast()'s end: the checksum, then the metadata as one 8-byte store
 * (called with a constant protocol where it is known, so the stored value
 * is a constant too) */
static __rte_always_inline bool parse_fast_done(const uint8_t *ip, const int verify,
						struct pd_meta *m, uint8_t proto)
{
	static const struct parse_out tmpl = {
		.l3_off = 14, .l4_off = 34, .l3 = PD_L3_IPV4,
	};
	uint64_t out;

	if (verify && unlikely(!ipv4_cksum_ok(ip, 20)))
		return false;
	/* the template with l4_proto (its byte 5) filled in */
	memcpy(&out, &tmpl, sizeof(out));
	out |= (uint64_t)proto << (RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? 40 : 16);
	memcpy((uint8_t *)m + offsetof(struct pd_meta, l3_off), &out, sizeof(out));
	return true;
}

/*
 * The usual packet: untagged IPv4 without options, not a fragment, at
 * least 8 bytes past the IP header, with a well-formed UDP or TCP header if
 * it is UDP or TCP (ESP between tunnel gateways takes this path too). Sets
 * exactly what parse_pkt() would and returns true; anything else
 * (including every drop) returns false and takes the full walk. Each range
 * check is one unsigned compare (lo <= x <= hi as x - lo <= hi - lo);
 * elsewhere than x86 the EtherType and the version/IHL byte are one 32-bit
 * compare and the fragment bits are tested in network order; the metadata
 * is one 8-byte store.
 * Measured with the checksum above (forward.yaml, pydp bench, on-CPU
 * medians of 3 x 3 s, hugepages): before 58.6 cycles/pkt (bare 43.8),
 * 313.8 instructions/pkt; this 58.7 (bare 43.9, the same within noise),
 * 309.7 instructions/pkt.
 * On x86 the EtherType, version/IHL, fragment and protocol checks are one
 * 16-byte load and a masked compare (SSE4.1 ptest; -march=corei7 is
 * DPDK's baseline), and with the checksum verdict tested once per packet
 * (parse_mbuf) and the next stage's buffer held in registers
 * (parse_burst, its end pointer in a register): 297.1 -> 283.3
 * instructions/pkt (callgrind; the bare loop is 219.9), forward.yaml ratio
 * to the bare loop 0.772 -> 0.80-0.85 (medians of 5 alternating 2 s runs;
 * this VM's noise is +-10 % from run to run).
 */
static __rte_always_inline bool parse_fast(const uint8_t *d, uint32_t len,
					   const int verify, struct pd_meta *m)
{
	const uint8_t *ip = d + 14, *l4 = d + 34;
	uint32_t tot;
	uint8_t proto;

	if (unlikely(len < 14 + 20 + 8))
		return false;
#ifdef RTE_ARCH_X86_64
	{
		/* bytes 12..27 in one load: EtherType 0x0800, version 4 with
		 * IHL 5, no MF flag nor fragment offset, protocol UDP as one
		 * masked compare (len >= 42 covers the 16 bytes); not UDP, the
		 * same compare without the protocol byte */
		const __m128i h = _mm_loadu_si128((const __m128i *)(d + 12));
		const __m128i mask = _mm_setr_epi8(-1, -1, -1, 0, 0, 0, 0, 0,
						   0x3f, -1, 0, -1, 0, 0, 0, 0);
		const __m128i mask_l3 = _mm_setr_epi8(-1, -1, -1, 0, 0, 0, 0, 0,
						      0x3f, -1, 0, 0, 0, 0, 0, 0);
		const __m128i udp = _mm_setr_epi8(8, 0, 0x45, 0, 0, 0, 0, 0,
						  0, 0, 0, IPPROTO_UDP, 0, 0, 0, 0);
		__m128i x = _mm_xor_si128(h, udp);

		/* opaque: else GCC keeps h alive for the second compare */
		__asm__("" : "+x" (x));

		if (likely(_mm_testz_si128(x, mask)))
			proto = IPPROTO_UDP;
		else if (_mm_testz_si128(x, mask_l3))
			proto = ip[9];
		else
			return false;
	}
#else
	{
		uint32_t head;
		uint16_t frag;

		/* bytes 12..14: EtherType 0x0800, then version 4 with IHL 5 */
		memcpy(&head, d + 12, 4);
		if (unlikely((head & RTE_BE32(0xffffff00)) != RTE_BE32(0x08004500)))
			return false;
		memcpy(&frag, ip + 6, 2);
		if (unlikely(frag & RTE_BE16(RTE_IPV4_HDR_OFFSET_MASK |
					     RTE_IPV4_HDR_MF_FLAG)))
			return false;
		proto = ip[9];
	}
#endif
	tot = pd_rd16(ip + 2);
	/* 20 + 8 <= tot <= len - 14 (len >= 42) */
	if (unlikely(tot - 28 > len - 42))
		return false;
	if (likely(proto == IPPROTO_UDP)) {
		/* 8 <= UDP length <= tot - 20 */
		if (unlikely((uint32_t)pd_rd16(l4 + 4) - 8 > tot - 28))
			return false;
		return parse_fast_done(ip, verify, m, IPPROTO_UDP);
	}
	if (proto == IPPROTO_TCP) {
		/* tot >= 40 first: then l4[12] is inside the frame;
		 * 20 <= data offset <= tot - 20 */
		if (unlikely(tot < 40 ||
			     (uint32_t)(l4[12] >> 4) * 4 - 20 > tot - 40))
			return false;
		return parse_fast_done(ip, verify, m, IPPROTO_TCP);
	}
	/* any other protocol (ESP, ICMP, ...): tot >= 28 is all parse_l4()
	 * asks of it (ICMP wants 8 bytes) */
	return parse_fast_done(ip, verify, m, proto);
}

/* the full walk: out of line, so each copy of the inlined fast path in
 * parse_burst() calls the one copy of it */
static __rte_noinline int parse_pkt(const uint8_t *data, uint32_t len,
				    int verify_cksum, struct pd_meta *m)
{
	uint32_t off = 12;
	uint16_t et;
	int vlans = 0;

	m->l3 = PD_L3_OTHER;
	m->l3_off = 0;
	m->l4_off = 0;
	m->l4_proto = 0;
	m->flags = 0;
	if (len < 14)
		DROP(TRUNC_ETH);
	et = pd_rd16(data + off);
	while (et == RTE_ETHER_TYPE_VLAN || et == RTE_ETHER_TYPE_QINQ) {
		if (++vlans > MAX_VLAN)
			DROP(VLAN_DEPTH);
		off += 4;
		if (off + 2 > len)
			DROP(TRUNC_ETH);
		et = pd_rd16(data + off);
	}
	off += 2;
	m->l3_off = (uint16_t)off;
	switch (et) {
	case RTE_ETHER_TYPE_IPV4:
		return parse_ipv4(data + off, len - off, off, verify_cksum, m);
	case RTE_ETHER_TYPE_IPV6:
		return parse_ipv6(data + off, len - off, off, m);
	case RTE_ETHER_TYPE_ARP:
		if (len - off < 28)
			DROP(TRUNC_ARP);
		m->l3 = PD_L3_ARP;
		return 0;
	default:
		return 0;
	}
}

/* What the stage runs per packet: the usual case inline, else the walk */
static __rte_always_inline int parse_one(const uint8_t *data, uint32_t len,
					 int verify_cksum, struct pd_meta *m)
{
	if (likely(parse_fast(data, len, verify_cksum, m)))
		return 0;
	return parse_pkt(data, len, verify_cksum, m);
}

/* the same code as the stage, so the fuzzer drives the fast path too */
int pd_parse_raw(const uint8_t *data, uint32_t len, int verify_cksum,
		 struct pd_meta *m)
{
	return parse_one(data, len, verify_cksum, m);
}

int pd_parse_walk(const uint8_t *data, uint32_t len, int verify_cksum,
		  struct pd_meta *m)
{
	return parse_pkt(data, len, verify_cksum, m);
}

int pd_parse_buffer(const uint8_t *data, uint32_t len, int verify_cksum,
		    uint16_t *l3_off, uint16_t *l4_off, uint8_t *l4_proto)
{
	struct pd_meta m;
	int rc = pd_parse_raw(data, len, verify_cksum, &m);

	*l3_off = m.l3_off;
	*l4_off = m.l4_off;
	*l4_proto = m.l4_proto;
	return rc > 0 ? -rc : m.l3;
}

struct parse_priv {
	int verify_cksum;
};

int pd_parse_config(struct pd_pipeline *p, int stage, int verify_cksum)
{
	struct pd_stage *st = pd_stage_get(p, stage, "parse");
	struct parse_priv *pr;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	pr->verify_cksum = verify_cksum;
	return 0;
}

static const uint8_t l3_edge[] = {
	[PD_L3_NONE] = PD_PARSE_OTHER, [PD_L3_IPV4] = PD_PARSE_IPV4,
	[PD_L3_IPV6] = PD_PARSE_IPV6, [PD_L3_ARP] = PD_PARSE_ARP,
	[PD_L3_OTHER] = PD_PARSE_OTHER,
};

/*
 * A packet whose PMD gave an IP checksum verdict: GOOD (or NONE: the
 * header's integrity was checked another way) skips the software sum, BAD
 * drops what is otherwise well formed. Out of line: virtual ports give no
 * verdict, and the usual packet pays one bit test for all of this.
 */
static __rte_noinline int parse_flagged(const uint8_t *data, uint32_t len,
					uint64_t ck, struct pd_meta *m)
{
	int rc = parse_one(data, len, !(ck & RTE_MBUF_F_RX_IP_CKSUM_GOOD), m);

	if (ck == RTE_MBUF_F_RX_IP_CKSUM_BAD && rc == 0)
		rc = PARSE_BAD_CKSUM + 1;
	return rc;
}

/*
 * Parse one mbuf and give it its verdict: dropped with its reason, or on to
 * the next stage. `mb` is read once: the metadata stores may alias pkts[],
 * which would make the compiler load it again. 305.6 -> 303.6
 * instructions/pkt (forward.yaml, callgrind). The PMD's checksum verdict
 * is one bit test here; parse_flagged() acts on it.
 */
static __rte_always_inline void parse_mbuf(struct pd_stage *st,
					   struct pd_worker *w,
					   struct rte_mbuf ***out,
					   struct rte_mbuf *mb, int moff,
					   const int verify_cfg, const int single)
{
	/* read before the metadata stores, which may alias the mbuf */
	const uint64_t ck = mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
	struct pd_meta *m = RTE_MBUF_DYNFIELD(mb, moff, struct pd_meta *);
	const uint8_t *d = rte_pktmbuf_mtod(mb, const uint8_t *);
	int rc;

	if (likely(!verify_cfg || ck == 0))
		rc = parse_one(d, rte_pktmbuf_data_len(mb), verify_cfg, m);
	else
		rc = parse_flagged(d, rte_pktmbuf_data_len(mb), ck, m);
	if (unlikely(rc))
		pd_drop(w, st, (unsigned)rc - 1, mb);
	else if (single)
		*(*out)++ = mb;
	else
		pd_emit(w, st, l3_edge[m->l3], mb);
}

/* prefetch the data of packet i + PARSE_AHEAD while parsing packet i */
#define PARSE_AHEAD 4

/*
 * The burst, for one value of verify_cfg and of `single` (constants in
 * each of the four copies parse_process() calls, so neither per-packet
 * test is left in the loop). single: every edge leads to one stage, the
 * usual case, and the packets that pass are appended to its buffer.
 * l3fwd's shape: prefetch the first PARSE_AHEAD packets, then parse i while
 * prefetching i + PARSE_AHEAD, then the tail without prefetch, no bound
 * check per packet. forward.yaml under callgrind: 309.7 -> 305.6
 * instructions/pkt. The prefetch is 4.9 of them: on net_pcap the PMD has
 * just copied the data (it is in L1), but a NIC DMAs it, and l3fwd's
 * prefetch is what pays there. Unrolled 4x: 1.5 fewer, not worth 4x code.
 */
static __rte_always_inline void parse_burst(struct pd_stage *st,
					    struct pd_worker *w,
					    struct rte_mbuf **pkts, uint16_t n,
					    const int verify_cfg, const int single)
{
	/* single: the next stage's buffer, its end kept in a register */
	struct pd_buf *one = &w->in[st->next[0]];
	struct rte_mbuf **out = one->pkts + (single ? one->n : 0);
	const int moff = pd_meta_offset;
	uint16_t i;

	for (i = 0; i < n && i < PARSE_AHEAD; i++)
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
	for (i = 0; i + PARSE_AHEAD < n; i++) {
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PARSE_AHEAD], void *));
		parse_mbuf(st, w, &out, pkts[i], moff, verify_cfg, single);
	}
	for (; i < n; i++)
		parse_mbuf(st, w, &out, pkts[i], moff, verify_cfg, single);
	if (single)
		one->n = (uint16_t)(out - one->pkts);
}

static void parse_process(struct pd_stage *st, struct pd_worker *w,
			  struct rte_mbuf **pkts, uint16_t n)
{
	const struct parse_priv *pr = st->priv;
	const int16_t *nx = st->next;
	/* edges left unset lead where next does: usually all of them */
	const bool single = nx[PD_PARSE_IPV4] == nx[0] && nx[PD_PARSE_IPV6] == nx[0] &&
		nx[PD_PARSE_ARP] == nx[0] && nx[PD_PARSE_OTHER] == nx[0];

	if (pr->verify_cksum) {
		if (single)
			parse_burst(st, w, pkts, n, 1, 1);
		else
			parse_burst(st, w, pkts, n, 1, 0);
	} else {
		if (single)
			parse_burst(st, w, pkts, n, 0, 1);
		else
			parse_burst(st, w, pkts, n, 0, 0);
	}
}

const struct pd_stage_ops pd_stage_parse = {
	.type = "parse",
	.edges = parse_edges,
	.drops = parse_drops,
	.needs_next = true,
	.priv_size = sizeof(struct parse_priv),
	.process = parse_process,
};
