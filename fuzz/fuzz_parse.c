/* SPDX-License-Identifier: BSD-3-Clause
 * fuzz_parse.c - libFuzzer harness for the packet parser.
 *
 * Links without EAL: only csrc/stages/parse.c and csrc/pd_error.c. The few
 * runner symbols parse.c references (through the inline helpers of
 * pd_internal.h and pd_parse_config) are stubbed below.
 *
 * Every input is parsed with and without IPv4 checksum verification, through
 * pd_parse_raw, pd_parse_buffer and the stage's process callback on a fake
 * mbuf, and the results are checked against invariants that hold for any
 * input. A violation traps, which libFuzzer reports as a crash.
 *
 * Build and run: bash fuzz/run.sh [SECONDS]
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>

#include "pd_internal.h"
#include "stages/parse.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

/* ---- stubs for the runner symbols parse.c references ------------------- */

int pd_meta_offset = -1;

static struct pd_stage fz_stage;

struct pd_stage *pd_stage_get(struct pd_pipeline *p, int stage,
			      const char *type)
{
	(void)p;
	if (stage != 0 || strcmp(type, pd_stage_parse.type) != 0)
		return NULL;
	return &fz_stage;
}

void pd_drop_flush(struct pd_worker *w)
{
	w->drop.n = 0;
}

/* ---- harness state ----------------------------------------------------- */

static struct pd_worker fz_worker;
static uint64_t fz_ctr[64];
static uint64_t fz_priv[8];
static unsigned n_drops, n_edges, bad_cksum_rc;

static unsigned count_names(const char *const *names)
{
	unsigned n = 0;

	while (names && names[n])
		n++;
	return n;
}

static void fz_setup(void)
{
	unsigned i;

	n_drops = count_names(pd_stage_parse.drops);
	n_edges = count_names(pd_stage_parse.edges);
	CHECK(n_drops > 0 && n_drops <= RTE_DIM(fz_ctr));
	CHECK(n_edges > PD_PARSE_OTHER && n_edges <= PD_MAX_EDGES);
	for (i = 0; i < n_drops; i++)
		if (strcmp(pd_stage_parse.drops[i], "bad-ipv4-checksum") == 0)
			bad_cksum_rc = i + 1;
	CHECK(bad_cksum_rc != 0);
	CHECK(pd_stage_parse.priv_size <= sizeof(fz_priv));
	CHECK(pd_stage_parse.process != NULL);

	pd_meta_offset = (int)offsetof(struct rte_mbuf, dynfield1);
	fz_stage.ops = &pd_stage_parse;
	fz_stage.priv = fz_priv;
	fz_stage.ctr_drop = 0;
	fz_stage.n_drops = (uint16_t)n_drops;
	for (i = 0; i < PD_MAX_EDGES; i++)
		fz_stage.next[i] = (int16_t)i;  /* edge i feeds w->in[i] */
	fz_worker.ctr = fz_ctr;
}

/* The edge the stage must use for a packet that parsed as `l3`. */
static unsigned expect_edge(uint8_t l3)
{
	switch (l3) {
	case PD_L3_IPV4:
		return PD_PARSE_IPV4;
	case PD_L3_IPV6:
		return PD_PARSE_IPV6;
	case PD_L3_ARP:
		return PD_PARSE_ARP;
	default:
		return PD_PARSE_OTHER;
	}
}

static uint32_t rd16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static int same_parse(const struct pd_meta *a, const struct pd_meta *b)
{
	return a->l3_off == b->l3_off && a->l4_off == b->l4_off &&
	       a->l3 == b->l3 && a->l4_proto == b->l4_proto &&
	       a->flags == b->flags;
}

/* Parse once with a poisoned meta; check what must hold for any input. */
static int parse_checked(const uint8_t *data, uint32_t len, int verify,
			 struct pd_meta *m)
{
	const uint8_t *ip;
	struct pd_meta m2;
	uint32_t ip_end;
	int rc, rc2, may_frag;

	memset(m, 0xa5, sizeof(*m));
	rc = pd_parse_raw(data, len, verify, m);
	CHECK(rc >= 0 && (unsigned)rc <= n_drops);

	/* fields the parser does not own are left alone */
	CHECK(m->in_port == 0xa5a5 && m->pad == 0xa5a5 &&
	      m->aux == 0xa5a5a5a5u);

	/* deterministic, and every parse field is written */
	memset(&m2, 0x5a, sizeof(m2));
	rc2 = pd_parse_raw(data, len, verify, &m2);
	CHECK(rc2 == rc && same_parse(m, &m2));

	/* the IPv4 fast path agrees with the full walk: same verdict, and
	 * the same fields when it accepts */
	memset(&m2, 0x3c, sizeof(m2));
	rc2 = pd_parse_walk(data, len, verify, &m2);
	CHECK(rc2 == rc && (rc != 0 || same_parse(m, &m2)));

	if (rc != 0)
		return rc;

	CHECK(m->l3 != PD_L3_NONE && m->l3 <= PD_L3_OTHER);
	CHECK((m->flags & ~PD_META_FRAG) == 0);
	CHECK(m->l3_off <= len);
	CHECK(m->l3_off >= 14 && (m->l3_off - 14) % 4 == 0);
	switch (m->l3) {
	case PD_L3_IPV4:
		ip = data + m->l3_off;
		CHECK((uint32_t)m->l3_off + 20 <= len);
		CHECK(m->l4_proto == ip[9]);
		ip_end = m->l3_off + rd16(ip + 2);
		CHECK(ip_end <= len);
		/* more-fragments set: the L4 payload continues elsewhere */
		may_frag = (ip[6] & 0x20) != 0;
		if (m->l4_off != 0)
			CHECK(m->l4_off == m->l3_off + (ip[0] & 0xf) * 4);
		break;
	case PD_L3_IPV6:
		ip = data + m->l3_off;
		CHECK((uint32_t)m->l3_off + 40 <= len);
		ip_end = m->l3_off + 40 + rd16(ip + 4);
		CHECK(ip_end <= len);
		/* without extension headers no fragment header can be seen */
		may_frag = ip[6] != m->l4_proto;
		if (m->l4_off != 0 && !may_frag)
			CHECK(m->l4_off == m->l3_off + 40);
		break;
	case PD_L3_ARP:
		CHECK((uint32_t)m->l3_off + 28 <= len);
		/* fall through */
	default:
		CHECK(m->l4_off == 0 && m->l4_proto == 0 && m->flags == 0);
		return 0;
	}
	if (m->flags & PD_META_FRAG)
		CHECK(m->l4_off == 0);
	if (m->l4_off != 0) {
		uint32_t l4 = m->l4_off;

		/* the brief's invariants, then the tighter IP-length ones */
		CHECK(l4 < len);
		CHECK(l4 > m->l3_off);
		CHECK(l4 < ip_end);
		switch (m->l4_proto) {
		case IPPROTO_TCP:
			CHECK(l4 + 20 <= ip_end);
			CHECK(l4 + (uint32_t)(data[l4 + 12] >> 4) * 4 <= ip_end);
			break;
		case IPPROTO_UDP:
			CHECK(l4 + 8 <= ip_end);
			CHECK(rd16(data + l4 + 4) >= 8);
			if (!may_frag)
				CHECK(l4 + rd16(data + l4 + 4) <= ip_end);
			break;
		case IPPROTO_ICMP:
			CHECK(l4 + 8 <= ip_end);
			break;
		case IPPROTO_ICMPV6:
			CHECK(l4 + 4 <= ip_end);
			break;
		default:
			break;
		}
	}
	return 0;
}

/* Run the stage's process callback on one fake mbuf around `data`. */
static void stage_checked(const uint8_t *data, uint32_t len, int verify,
			  uint64_t ol_flags, int rc_raw,
			  const struct pd_meta *m_raw)
{
	struct rte_mbuf mb, *pkts[1] = { &mb };
	struct pd_worker *w = &fz_worker;
	struct pd_meta *m;
	uint64_t before[RTE_DIM(fz_ctr)];
	unsigned i, emitted = 0, edge = 0;
	int expect_rc = rc_raw;

	CHECK(pd_parse_config(NULL, 0, verify) == 0);

	memset(&mb, 0, sizeof(mb));
	mb.buf_addr = (void *)(uintptr_t)data;
	mb.data_off = 0;
	mb.data_len = (uint16_t)len;
	mb.pkt_len = len;
	mb.nb_segs = 1;
	mb.ol_flags = ol_flags;
	m = pd_meta(&mb);
	m->in_port = 7;
	m->aux = 0xdeadbeef;

	memcpy(before, fz_ctr, sizeof(before));
	w->drop.n = 0;
	for (i = 0; i < PD_MAX_EDGES; i++)
		w->in[i].n = 0;

	pd_stage_parse.process(&fz_stage, w, pkts, 1);

	for (i = 0; i < PD_MAX_EDGES; i++) {
		if (w->in[i].n) {
			CHECK(w->in[i].n == 1 && w->in[i].pkts[0] == &mb);
			emitted++;
			edge = i;
		}
	}
	CHECK(m->in_port == 7 && m->aux == 0xdeadbeef);
	if (expect_rc == 0 && verify &&
	    (ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) ==
	    RTE_MBUF_F_RX_IP_CKSUM_BAD)
		expect_rc = (int)bad_cksum_rc;

	if (expect_rc != 0) {
		CHECK(emitted == 0);
		CHECK(w->drop.n == 1 && w->drop.pkts[0] == &mb);
		for (i = 0; i < RTE_DIM(fz_ctr); i++)
			CHECK(fz_ctr[i] - before[i] ==
			      (i == (unsigned)expect_rc - 1));
	} else {
		CHECK(w->drop.n == 0 && emitted == 1);
		CHECK(memcmp(before, fz_ctr, sizeof(before)) == 0);
		CHECK(edge < n_edges && edge == expect_edge(m->l3));
		CHECK(same_parse(m, m_raw));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t flags[] = {
		RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN, RTE_MBUF_F_RX_IP_CKSUM_BAD,
		RTE_MBUF_F_RX_IP_CKSUM_GOOD, RTE_MBUF_F_RX_IP_CKSUM_NONE,
	};
	struct pd_meta m0, m1;
	uint16_t l3_off, l4_off;
	uint8_t l4_proto;
	uint32_t len;
	unsigned f;
	int rc0, rc1, r;

	if (n_drops == 0)
		fz_setup();
	if (size > UINT16_MAX)
		return -1;  /* an mbuf segment cannot hold it: not a frame */
	len = (uint32_t)size;

	rc0 = parse_checked(data, len, 0, &m0);
	rc1 = parse_checked(data, len, 1, &m1);

	/* verification only adds the checksum drop, and nothing else */
	if (rc1 == 0)
		CHECK(rc0 == 0 && same_parse(&m0, &m1));
	else
		CHECK(rc1 == rc0 || rc1 == (int)bad_cksum_rc);
	if (rc1 == (int)bad_cksum_rc && rc0 == 0)
		CHECK(m0.l3 == PD_L3_IPV4);  /* only IPv4 has a header checksum */

	/* the API wrapper */
	r = pd_parse_buffer(data, len, 1, &l3_off, &l4_off, &l4_proto);
	if (rc1 != 0) {
		CHECK(r == -rc1);
	} else {
		CHECK(r == m1.l3);
		CHECK(l3_off == m1.l3_off && l4_off == m1.l4_off &&
		      l4_proto == m1.l4_proto);
	}

	/* the stage itself, for each RX checksum flag the NIC can report */
	for (f = 0; f < RTE_DIM(flags); f++) {
		int hw_ok = (flags[f] & RTE_MBUF_F_RX_IP_CKSUM_GOOD) != 0;

		stage_checked(data, len, 0, flags[f], rc0, &m0);
		stage_checked(data, len, 1, flags[f],
			      hw_ok ? rc0 : rc1, hw_ok ? &m0 : &m1);
	}
	return 0;
}
