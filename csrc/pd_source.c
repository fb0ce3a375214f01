/* SPDX-License-Identifier: BSD-3-Clause
 * pd_source.c - the template traffic source.
 *
 * A source stands in for a port's rx: the worker that polls the port calls
 * pd_source_burst() instead of rte_eth_rx_burst(). Each packet is a copy of
 * the next template (round robin) with its variable fields stepped through
 * [min, max] or drawn at random, and its IPv4 header and TCP/UDP checksums
 * recomputed when a field changed. Optional rate (packets per second, paced
 * on the TSC) and count (then the source is "done").
 */
#include <string.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_memcpy.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "pd_source.h"

struct src_var {
	struct pd_source_var v;
	uint32_t cur;
};

struct pd_source {
	unsigned n_tmpl;
	unsigned n_vars;
	unsigned next;
	uint64_t rate;          /* pps, 0 = as fast as possible */
	uint64_t count;         /* 0 = endless */
	uint64_t sent;
	uint64_t t0;
	uint64_t hz;
	uint64_t rng;
	int done;
	struct pd_source_tmpl *tmpl;
	uint8_t **data;
	uint8_t *fix;           /* per template: a variable field touches it */
	struct src_var *vars;
};

void pd_source_free(struct pd_source *s)
{
	if (!s)
		return;
	rte_free(s->tmpl);
	if (s->data)
		rte_free(s->data[0]);
	rte_free(s->data);
	rte_free(s->fix);
	rte_free(s->vars);
	rte_free(s);
}

int pd_pipeline_set_source(struct pd_pipeline *p, int port,
			   const uint8_t *data,
			   const struct pd_source_tmpl *tmpls, unsigned n_tmpl,
			   const struct pd_source_var *vars, unsigned n_vars,
			   uint64_t rate_pps, uint64_t count)
{
	struct pd_source *s;
	size_t total = 0, off = 0;
	unsigned i;
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
	s->data = rte_malloc("pd_src", n_tmpl * sizeof(*s->data), 0);
	s->fix = rte_zmalloc("pd_src", n_tmpl, 0);
	s->vars = rte_zmalloc("pd_src", (n_vars + 1) * sizeof(*s->vars), 0);
	if (s->data)
		s->data[0] = rte_malloc("pd_src", total, RTE_CACHE_LINE_SIZE);
	if (!s->tmpl || !s->data || !s->fix || !s->vars || !s->data[0]) {
		pd_source_free(s);
		return PD_ERR(ENOMEM, "out of memory");
	}
	memcpy(s->tmpl, tmpls, n_tmpl * sizeof(*tmpls));
	memcpy(s->data[0], data, total);
	for (i = 0; i < n_tmpl; i++) {
		s->data[i] = s->data[0] + off;
		off += tmpls[i].len;
	}
	for (i = 0; i < n_vars; i++) {
		s->vars[i].v = vars[i];
		s->vars[i].cur = vars[i].min;
		s->fix[vars[i].tmpl] = 1;
	}
	s->n_tmpl = n_tmpl;
	s->n_vars = n_vars;
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

static inline void fix_cksums(uint8_t *pkt, const struct pd_source_tmpl *t)
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

uint16_t pd_source_burst(struct pd_source *s, struct rte_mempool *mp,
			 struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t i;
	unsigned k;

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
		unsigned ti = s->next;
		const struct pd_source_tmpl *t = &s->tmpl[ti];
		uint8_t *d = (uint8_t *)rte_pktmbuf_append(pkts[i], t->len);

		if (++s->next == s->n_tmpl)
			s->next = 0;
		rte_memcpy(d, s->data[ti], t->len);
		if (!s->fix[ti])
			continue;
		for (k = 0; k < s->n_vars; k++) {
			struct src_var *v = &s->vars[k];
			uint32_t val;

			if (v->v.tmpl != ti)
				continue;
			if (v->v.random) {
				uint64_t span = (uint64_t)v->v.max - v->v.min + 1;

				val = v->v.min + (uint32_t)(xorshift(&s->rng) % span);
			} else {
				val = v->cur;
				if ((uint64_t)v->cur + v->v.step > v->v.max)
					v->cur = v->v.min;
				else
					v->cur += v->v.step;
			}
			put_be(d + v->v.offset, v->v.width, val);
		}
		if (t->l3_off)
			fix_cksums(d, t);
	}
	s->sent += n;
	if (s->count && s->sent >= s->count)
		__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	return n;
}
