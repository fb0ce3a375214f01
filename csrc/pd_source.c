/* SPDX-License-Identifier: BSD-3-Clause
 * pd_source.c - the template traffic source.
 *
 * A source stands in for a port's rx: the worker that polls the port calls
 * pd_source_burst() instead of rte_eth_rx_burst(). Each packet is a copy of
 * the next template (round robin) with its variable fields stepped through
 * [min, max] or drawn at random, and its IPv4 header and TCP/UDP checksums
 * fixed when a field changed. Optional rate (packets per second, paced on
 * the TSC) and count (then the source is "done").
 *
 * Checksums are updated incrementally (RFC 1624), as TRex does: when the
 * source is set up, each varied template gets correct checksums once, and
 * each variable field knows which checksums cover it (IPv4 header, TCP/UDP
 * pseudo-header or segment) and at which byte parity. Per packet only the
 * changed fields are added in; no byte of the payload is summed again. The
 * result is bit for bit what a full recomputation gives (see fix_full()).
 * A template whose variable fields touch a length, protocol or checksum
 * field, or whose headers do not fit it, falls back to full recomputation.
 */
#include <string.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_memcpy.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "pd_source.h"

enum { FIX_NONE = 0, FIX_INCR, FIX_FULL };

struct src_var {
	struct pd_source_var v;
	uint32_t cur;
	uint8_t in_ip;          /* covered by the IPv4 header checksum */
	uint8_t in_l4;          /* covered by the TCP/UDP checksum */
	uint8_t odd_ip;         /* starts at an odd byte of that sum */
	uint8_t odd_l4;
	uint16_t not_old_ip;    /* ~(template bytes' sum), network order */
	uint16_t not_old_l4;
};

struct src_tmpl {
	uint16_t len;
	uint8_t fix;            /* FIX_NONE, FIX_INCR or FIX_FULL */
	uint8_t l4_udp;         /* a computed 0 is sent as 0xffff */
	uint8_t do_ip;          /* FIX_INCR: update the IPv4 header checksum */
	uint8_t do_l4;          /* FIX_INCR: update the TCP/UDP checksum */
	uint16_t ip_ck;         /* packet offset of the IPv4 header checksum */
	uint16_t l4_ck;         /* packet offset of the TCP/UDP checksum */
	uint16_t ip_base;       /* ~checksum of the template, network order */
	uint16_t l4_base;
	unsigned var_first;     /* its fields: vars[var_first, var_first + n_var) */
	unsigned n_var;
	const uint8_t *data;
};

struct pd_source {
	unsigned n_tmpl;
	unsigned next;
	uint64_t rate;          /* pps, 0 = as fast as possible */
	uint64_t count;         /* 0 = endless */
	uint64_t sent;
	uint64_t t0;
	uint64_t hz;
	uint64_t rng;
	int done;
	struct pd_source_tmpl *tmpl;   /* as given, for the full recomputation */
	struct src_tmpl *rt;
	uint8_t *data;
	struct src_var *vars;          /* grouped by template, in given order */
};

void pd_source_free(struct pd_source *s)
{
	if (!s)
		return;
	rte_free(s->tmpl);
	rte_free(s->rt);
	rte_free(s->data);
	rte_free(s->vars);
	rte_free(s);
}

/* The checksums as a full recomputation sets them (the reference). */
static void fix_full(uint8_t *pkt, const struct pd_source_tmpl *t)
{
	if (t->ip_ver == 4) {
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(pkt + t->l3_off);

		ip->hdr_checksum = 0;
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		if (t->l4_proto == IPPROTO_UDP) {
			struct rte_udp_hdr *u = (struct rte_udp_hdr *)(pkt + t->l4_off);

			if (u->dgram_cksum) {   /* 0 means "no checksum" in IPv4 */
				u->dgram_cksum = 0;
				u->dgram_cksum = rte_ipv4_udptcp_cksum(ip, u);
			}
		} else if (t->l4_proto == IPPROTO_TCP) {
			struct rte_tcp_hdr *tc = (struct rte_tcp_hdr *)(pkt + t->l4_off);

			tc->cksum = 0;
			tc->cksum = rte_ipv4_udptcp_cksum(ip, tc);
		}
	} else if (t->ip_ver == 6) {
		struct rte_ipv6_hdr *ip6 = (struct rte_ipv6_hdr *)(pkt + t->l3_off);

		if (t->l4_proto == IPPROTO_UDP) {
			struct rte_udp_hdr *u = (struct rte_udp_hdr *)(pkt + t->l4_off);

			u->dgram_cksum = 0;
			u->dgram_cksum = rte_ipv6_udptcp_cksum(ip6, u);
		} else if (t->l4_proto == IPPROTO_TCP) {
			struct rte_tcp_hdr *tc = (struct rte_tcp_hdr *)(pkt + t->l4_off);

			tc->cksum = 0;
			tc->cksum = rte_ipv6_udptcp_cksum(ip6, tc);
		}
	}
}

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t fold(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint32_t)((s & 0xffff) + (s >> 16));
}

/* One's complement sum (network order) of a field's bytes, as if it
 * started on an even byte of the checksummed data. */
static inline uint16_t field_sum(uint32_t v, unsigned width)
{
	switch (width) {
	case 1: return (uint16_t)(v << 8);
	case 2: return (uint16_t)v;
	default: return (uint16_t)fold((v >> 16) + (v & 0xffff));
	}
}

static inline uint32_t rd_be(const uint8_t *p, unsigned width)
{
	switch (width) {
	case 1: return p[0];
	case 2: return rd16(p);
	default: return ((uint32_t)rd16(p) << 16) | rd16(p + 2);
	}
}

/* The same sum when the field starts on an odd byte. */
static inline uint16_t at_parity(uint16_t sum, unsigned odd)
{
	return odd ? rte_bswap16(sum) : sum;
}

/* [lo, hi) of a byte range relative to the packet */
struct span {
	unsigned lo, hi;
};

/* -1: the field straddles the span's edge; 0: outside; 1: inside */
static int in_span(const struct pd_source_var *v, struct span s)
{
	unsigned lo = v->offset, hi = v->offset + v->width;

	if (hi <= s.lo || lo >= s.hi)
		return 0;
	return lo >= s.lo && hi <= s.hi ? 1 : -1;
}

static int overlaps(const struct pd_source_var *v, unsigned off, unsigned n)
{
	return v->offset < off + n && off < (unsigned)v->offset + v->width;
}

/*
 * Decide how template `ti` gets its checksums and precompute what the
 * incremental update needs. When it can be updated incrementally, the
 * stored template is given correct checksums here, once.
 */
static void plan_tmpl(struct pd_source *s, unsigned ti)
{
	const struct pd_source_tmpl *t = &s->tmpl[ti];
	struct src_tmpl *rt = &s->rt[ti];
	uint8_t *d = s->data + (rt->data - s->data);
	struct span ip = { 0, 0 }, ph = { 0, 0 }, l4 = { 0, 0 };
	unsigned l3 = t->l3_off, l4len, k, ck = 0;
	int l4sum, do_ip = 0, do_l4 = 0;

	rt->fix = FIX_NONE;
	if (rt->n_var == 0)
		return;
	rt->fix = FIX_INCR;
	if (l3 == 0 || (t->ip_ver != 4 && t->ip_ver != 6))
		return;                 /* no checksum to keep */
	rt->fix = FIX_FULL;
	l4sum = t->l4_proto == IPPROTO_UDP || t->l4_proto == IPPROTO_TCP;
	/* the spans summed, as the full recomputation (rte_ip.h) sees them */
	if (t->ip_ver == 4) {
		unsigned ihl = (unsigned)(d[l3] & 0xf) * 4, tot = rd16(d + l3 + 2);

		if (ihl < 20 || l3 + ihl > t->len || tot < ihl || l3 + tot > t->len)
			return;
		ip = (struct span){ l3, l3 + ihl };
		ph = (struct span){ l3 + 12, l3 + 20 };
		l4len = tot - ihl;
		rt->l4_udp = d[l3 + 9] == IPPROTO_UDP;
		do_ip = 1;
	} else {
		if (l3 + 40 > t->len)
			return;
		ph = (struct span){ l3 + 8, l3 + 40 };
		l4len = rd16(d + l3 + 4);
		rt->l4_udp = d[l3 + 6] == IPPROTO_UDP;
	}
	if (l4sum) {
		ck = t->l4_off + (t->l4_proto == IPPROTO_UDP ? 6 : 16);
		if (t->l4_off + l4len > t->len || ck + 2 > t->l4_off + l4len)
			return;
		l4 = (struct span){ t->l4_off, t->l4_off + l4len };
	}
	for (k = rt->var_first; k < rt->var_first + rt->n_var; k++) {
		const struct pd_source_var *pv = &s->vars[k].v;

		if (in_span(pv, ip) < 0 || in_span(pv, ph) < 0 ||
		    in_span(pv, l4) < 0)
			return;
		/* lengths, protocol and checksums change what is summed */
		if (t->ip_ver == 4 && (overlaps(pv, l3, 1) || overlaps(pv, l3 + 2, 2) ||
				       overlaps(pv, l3 + 9, 3)))
			return;
		if (t->ip_ver == 6 && overlaps(pv, l3 + 4, 3))
			return;
		if (l4sum && overlaps(pv, ck, 2))
			return;
	}
	fix_full(d, t);                 /* the template's own checksums, once */
	/* IPv4 UDP checksum 0 means "none": left alone */
	do_l4 = l4sum && !(t->ip_ver == 4 && t->l4_proto == IPPROTO_UDP &&
			   rd16(d + ck) == 0);
	for (k = rt->var_first; k < rt->var_first + rt->n_var; k++) {
		struct src_var *v = &s->vars[k];
		const struct pd_source_var *pv = &v->v;
		uint16_t old = field_sum(rd_be(d + pv->offset, pv->width), pv->width);
		int b = in_span(pv, ph);

		v->in_ip = (uint8_t)(do_ip && in_span(pv, ip));
		v->odd_ip = (uint8_t)((pv->offset - ip.lo) & 1);
		v->not_old_ip = (uint16_t)~at_parity(old, v->odd_ip);
		v->in_l4 = (uint8_t)(do_l4 && (b || in_span(pv, l4)));
		v->odd_l4 = (uint8_t)((pv->offset - (b ? l3 : l4.lo)) & 1);
		v->not_old_l4 = (uint16_t)~at_parity(old, v->odd_l4);
	}
	rt->do_ip = (uint8_t)do_ip;
	rt->do_l4 = (uint8_t)do_l4;
	rt->ip_ck = (uint16_t)(l3 + 10);
	rt->l4_ck = (uint16_t)ck;
	rt->ip_base = do_ip ? (uint16_t)~rd16(d + rt->ip_ck) : 0;
	rt->l4_base = do_l4 ? (uint16_t)~rd16(d + ck) : 0;
	rt->fix = FIX_INCR;
}

int pd_pipeline_set_source(struct pd_pipeline *p, int port,
			   const uint8_t *data,
			   const struct pd_source_tmpl *tmpls, unsigned n_tmpl,
			   const struct pd_source_var *vars, unsigned n_vars,
			   uint64_t rate_pps, uint64_t count)
{
	struct pd_source *s;
	size_t total = 0, off = 0;
	unsigned i, k, n;
	int rc;

	if ((rc = pd_port_idx_check(p, port)) < 0)
		return rc;
	if (p->built)
		return PD_ERR(EBUSY, "pipeline '%s' is already built", p->name);
	if (n_tmpl == 0)
		return PD_ERR(EINVAL, "source: no template packets");
	for (i = 0; i < n_tmpl; i++) {
		const struct pd_source_tmpl *t = &tmpls[i];

		if (t->len < 14 || t->len > 9000)
			return PD_ERR(EINVAL, "source template %u: length %u outside "
				      "14..9000", i, t->len);
		if (t->l3_off && (t->l3_off + 20 > t->len ||
				  (t->l4_off && t->l4_off + 8 > t->len)))
			return PD_ERR(EINVAL, "source template %u: header offsets "
				      "beyond the packet", i);
		total += t->len;
	}
	for (i = 0; i < n_vars; i++) {
		const struct pd_source_var *v = &vars[i];

		if (v->tmpl >= n_tmpl)
			return PD_ERR(EINVAL, "source field %u: no template %u", i,
				      v->tmpl);
		if (v->width != 1 && v->width != 2 && v->width != 4)
			return PD_ERR(EINVAL, "source field %u: width %u (1, 2 or 4)",
				      i, v->width);
		if ((unsigned)v->offset + v->width > tmpls[v->tmpl].len)
			return PD_ERR(EINVAL, "source field %u: offset %u beyond the "
				      "template", i, v->offset);
		if (v->min > v->max || v->step == 0)
			return PD_ERR(EINVAL, "source field %u: empty range or zero "
				      "step", i);
		if (v->width < 4 && v->max >= (1u << (8 * v->width)))
			return PD_ERR(EINVAL, "source field %u: max %u does not fit "
				      "%u bytes", i, v->max, v->width);
	}
	s = rte_zmalloc("pd_source", sizeof(*s), RTE_CACHE_LINE_SIZE);
	if (!s)
		return PD_ERR(ENOMEM, "out of memory");
	s->tmpl = rte_malloc("pd_src", n_tmpl * sizeof(*s->tmpl), 0);
	s->rt = rte_zmalloc("pd_src", n_tmpl * sizeof(*s->rt), RTE_CACHE_LINE_SIZE);
	s->vars = rte_zmalloc("pd_src", (n_vars + 1) * sizeof(*s->vars),
			      RTE_CACHE_LINE_SIZE);
	s->data = rte_malloc("pd_src", total, RTE_CACHE_LINE_SIZE);
	if (!s->tmpl || !s->rt || !s->vars || !s->data) {
		pd_source_free(s);
		return PD_ERR(ENOMEM, "out of memory");
	}
	memcpy(s->tmpl, tmpls, n_tmpl * sizeof(*tmpls));
	memcpy(s->data, data, total);
	/* group the fields by template, keeping their order within one */
	for (i = 0, n = 0; i < n_tmpl; i++) {
		struct src_tmpl *rt = &s->rt[i];

		rt->len = tmpls[i].len;
		rt->data = s->data + off;
		off += tmpls[i].len;
		rt->var_first = n;
		for (k = 0; k < n_vars; k++) {
			if (vars[k].tmpl != i)
				continue;
			s->vars[n].v = vars[k];
			s->vars[n].cur = vars[k].min;
			n++;
		}
		rt->n_var = n - rt->var_first;
		plan_tmpl(s, i);
	}
	s->n_tmpl = n_tmpl;
	s->rate = rate_pps;
	s->count = count;
	s->hz = rte_get_tsc_hz();
	s->rng = 0x9e3779b97f4a7c15ull ^ rte_rdtsc();
	pd_source_free(p->ports[port].src);
	p->ports[port].src = s;
	return 0;
}

int pd_pipeline_source_done(const struct pd_pipeline *p)
{
	unsigned i;

	for (i = 0; i < p->n_ports; i++)
		if (p->ports[i].src &&
		    !__atomic_load_n(&p->ports[i].src->done, __ATOMIC_ACQUIRE))
			return 0;
	return 1;
}

static inline uint32_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return (uint32_t)(x >> 16);
}

static inline void put_be(uint8_t *p, unsigned width, uint32_t v)
{
	switch (width) {
	case 1: p[0] = (uint8_t)v; break;
	case 2: p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; break;
	default:
		p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
		p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
	}
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Write the variable fields of template `rt` into packet `d`; with
 * FIX_INCR, add them into its checksums. */
static inline void vary(struct pd_source *s, const struct src_tmpl *rt,
			uint8_t *d)
{
	struct src_var *v = &s->vars[rt->var_first];
	struct src_var *end = v + rt->n_var;
	uint64_t ip = rt->ip_base, l4 = rt->l4_base;
	uint64_t rng = s->rng;

	for (; v < end; v++) {
		uint32_t val;
		uint16_t sum;

		if (v->v.random) {
			uint64_t span = (uint64_t)v->v.max - v->v.min + 1;

			/* multiply-shift: uniform on [min, max], no division */
			val = v->v.min + (uint32_t)(((uint64_t)xorshift(&rng) *
						     span) >> 32);
		} else {
			val = v->cur;
			if ((uint64_t)v->cur + v->v.step > v->v.max)
				v->cur = v->v.min;
			else
				v->cur += v->v.step;
		}
		put_be(d + v->v.offset, v->v.width, val);
		if (!(v->in_ip | v->in_l4))
			continue;
		sum = field_sum(val, v->v.width);
		if (v->in_ip)
			ip += v->not_old_ip + at_parity(sum, v->odd_ip);
		if (v->in_l4)
			l4 += v->not_old_l4 + at_parity(sum, v->odd_l4);
	}
	s->rng = rng;
	if (rt->fix != FIX_INCR)
		return;
	if (rt->do_ip)
		put16(d + rt->ip_ck, (uint16_t)~fold(ip));
	if (rt->do_l4) {
		uint16_t c = (uint16_t)~fold(l4);

		put16(d + rt->l4_ck, c == 0 && rt->l4_udp ? 0xffff : c);
	}
}

uint16_t pd_source_burst(struct pd_source *s, struct rte_mempool *mp,
			 struct rte_mbuf **pkts, uint16_t n)
{
	unsigned ti = s->next;
	uint16_t i, out = 0;

	if (unlikely(s->done))
		return 0;
	if (s->count && s->count - s->sent < n)
		n = (uint16_t)(s->count - s->sent);
	if (s->rate) {
		uint64_t now = rte_rdtsc(), allowed;

		if (s->t0 == 0)
			s->t0 = now;
		allowed = (uint64_t)((double)(now - s->t0) * (double)s->rate /
				     (double)s->hz) + 1;
		if (allowed <= s->sent)
			return 0;
		if (allowed - s->sent < n)
			n = (uint16_t)(allowed - s->sent);
	}
	if (n == 0 || rte_pktmbuf_alloc_bulk(mp, pkts, n) != 0)
		return 0;
	for (i = 0; i < n; i++) {
		const struct src_tmpl *rt = &s->rt[ti];
		struct rte_mbuf *m = pkts[i];
		uint8_t *d;

		if (++ti == s->n_tmpl)
			ti = 0;
		if (unlikely(rt->len > rte_pktmbuf_tailroom(m))) {
			/* the pool's buffers are too small for this template */
			rte_pktmbuf_free(m);
			continue;
		}
		d = rte_pktmbuf_mtod(m, uint8_t *);
		m->data_len = rt->len;
		m->pkt_len = rt->len;
		rte_memcpy(d, rt->data, rt->len);
		pkts[out++] = m;
		if (rt->fix == FIX_NONE)
			continue;
		vary(s, rt, d);
		if (unlikely(rt->fix == FIX_FULL))
			fix_full(d, &s->tmpl[rt - s->rt]);
	}
	s->next = ti;
	s->sent += n;
	if (s->count && s->sent >= s->count)
		__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	return out;
}
