/* SPDX-License-Identifier: BSD-3-Clause
 * l3route.c - LPM routing with rte_lpm / rte_lpm6 and bulk lookups.
 *
 * rte_lpm over rte_fib: both are DIR-24-8; rte_lpm has a bulk lookup that
 * fits our burst API directly and a matching rte_lpm6, and it is what l3fwd
 * measures as its default. Tables are immutable once published: a commit
 * builds new ones and swaps the pointer with RCU (pd_rcu_swap).
 */
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>

#include "l3route.h"

struct l3_nh {
	int port;
	struct rte_ether_addr src;
	struct rte_ether_addr dst;
};

struct l3_table {
	struct rte_lpm *lpm4;
	struct rte_lpm6 *lpm6;
	int64_t def4;           /* next hop of 0.0.0.0/0, -1 none (LPM refuses depth 0) */
	int64_t def6;           /* next hop of ::/0, -1 none */
	unsigned n_nh;
	struct l3_nh nh[];
};

struct l3route_priv {
	struct l3_table *tbl;
};

#define X_L3_DROPS(_) \
	_(NOT_IP, "not-ip") \
	_(NO_ROUTE, "no-route") \
	_(TTL, "ttl-exceeded")
enum {
#define _E(id, s) L3_##id,
	X_L3_DROPS(_E)
#undef _E
};
static const char *const l3_drops[] = {
#define _S(id, s) s,
	X_L3_DROPS(_S)
#undef _S
	NULL,
};
static const char *const l3_edges[] = { "next", NULL };
static unsigned l3_seq;

static void table_free(void *arg)
{
	struct l3_table *t = arg;

	if (!t)
		return;
	rte_lpm_free(t->lpm4);
	rte_lpm6_free(t->lpm6);
	rte_free(t);
}

int pd_l3route_commit(struct pd_pipeline *p, int stage,
		      const struct pd_route *routes, unsigned n_routes,
		      const struct pd_nexthop *nhs, unsigned n_nhs)
{
	struct pd_stage *st = pd_stage_get(p, stage, "l3route");
	struct l3route_priv *pr;
	struct l3_table *t;
	struct rte_lpm_config c4;
	struct rte_lpm6_config c6;
	char name[RTE_LPM_NAMESIZE];
	unsigned i, n4 = 0, n6 = 0;
	int rc;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	for (i = 0; i < n_nhs; i++) {
		if ((rc = pd_port_idx_check(p, nhs[i].port)) < 0)
			return PD_ERR(EINVAL, "next hop %u: no port index %d", i,
				      nhs[i].port);
	}
	for (i = 0; i < n_routes; i++) {
		const struct pd_route *r = &routes[i];

		if (r->nexthop >= n_nhs)
			return PD_ERR(EINVAL, "route %u: next hop %u does not exist",
				      i, r->nexthop);
		if (r->family == 4 && r->depth <= 32)
			n4++;
		else if (r->family == 6 && r->depth <= 128)
			n6++;
		else
			return PD_ERR(EINVAL, "route %u: bad family %u / depth %u", i,
				      r->family, r->depth);
	}
	t = rte_zmalloc("pd_l3", sizeof(*t) + n_nhs * sizeof(t->nh[0]),
			RTE_CACHE_LINE_SIZE);
	if (!t)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	t->n_nh = n_nhs;
	t->def4 = -1;
	t->def6 = -1;
	for (i = 0; i < n_nhs; i++) {
		t->nh[i].port = nhs[i].port;
		memcpy(t->nh[i].dst.addr_bytes, nhs[i].dst_mac, 6);
		if (nhs[i].has_src_mac)
			memcpy(t->nh[i].src.addr_bytes, nhs[i].src_mac, 6);
		else
			t->nh[i].src = p->ports[nhs[i].port].mac;
	}
	memset(&c4, 0, sizeof(c4));
	c4.max_rules = n4 + 1;
	c4.number_tbl8s = 256 + n4;
	snprintf(name, sizeof(name), "pdl4_%u", l3_seq++);
	t->lpm4 = rte_lpm_create(name, (int)rte_socket_id(), &c4);
	memset(&c6, 0, sizeof(c6));
	c6.max_rules = n6 + 1;
	c6.number_tbl8s = 256 + 16 * n6;
	snprintf(name, sizeof(name), "pdl6_%u", l3_seq++);
	t->lpm6 = rte_lpm6_create(name, (int)rte_socket_id(), &c6);
	if (!t->lpm4 || !t->lpm6) {
		rc = PD_ERR(rte_errno ? rte_errno : ENOMEM, "stage '%s': cannot "
			    "create LPM tables: %s", st->name, rte_strerror(rte_errno));
		table_free(t);
		return rc;
	}
	for (i = 0; i < n_routes; i++) {
		const struct pd_route *r = &routes[i];

		if (r->depth == 0) {
			if (r->family == 4)
				t->def4 = r->nexthop;
			else
				t->def6 = r->nexthop;
			continue;
		}
		if (r->family == 4) {
			uint32_t a = ((uint32_t)r->addr[0] << 24) |
				     ((uint32_t)r->addr[1] << 16) |
				     ((uint32_t)r->addr[2] << 8) | r->addr[3];
			rc = rte_lpm_add(t->lpm4, a, r->depth, r->nexthop);
		} else {
			rc = rte_lpm6_add(t->lpm6, r->addr, r->depth, r->nexthop);
		}
		if (rc < 0) {
			table_free(t);
			return PD_ERR(-rc, "stage '%s': route %u rejected by LPM: %s",
				      st->name, i, rte_strerror(-rc));
		}
	}
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	return 0;
}

static void l3route_fini(struct pd_stage *st)
{
	struct l3route_priv *pr = st->priv;

	table_free(pr->tbl);
	pr->tbl = NULL;
}

static inline void l3_send(struct pd_worker *w, struct pd_stage *st,
			   const struct l3_table *t, struct rte_mbuf *mb,
			   uint32_t nh)
{
	struct pd_meta *m = pd_meta(mb);
	uint8_t *l3 = rte_pktmbuf_mtod_offset(mb, uint8_t *, m->l3_off);
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(mb, struct rte_ether_hdr *);
	const struct l3_nh *h = &t->nh[nh];

	if (m->l3 == PD_L3_IPV4) {
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)l3;
		uint16_t old, new;

		if (unlikely(ip->time_to_live <= 1)) {
			pd_drop(w, st, L3_TTL, mb);
			return;
		}
		/* TTL sits in the high byte of the 16-bit word with protocol */
		old = rte_cpu_to_be_16((uint16_t)(ip->time_to_live << 8 |
						  ip->next_proto_id));
		ip->time_to_live--;
		new = rte_cpu_to_be_16((uint16_t)(ip->time_to_live << 8 |
						  ip->next_proto_id));
		ip->hdr_checksum = pd_cksum_adjust(ip->hdr_checksum, old, new);
	} else {
		struct rte_ipv6_hdr *ip6 = (struct rte_ipv6_hdr *)l3;

		if (unlikely(ip6->hop_limits <= 1)) {
			pd_drop(w, st, L3_TTL, mb);
			return;
		}
		ip6->hop_limits--;
	}
	rte_ether_addr_copy(&h->src, &eh->src_addr);
	rte_ether_addr_copy(&h->dst, &eh->dst_addr);
	pd_tx(w, (uint16_t)h->port, mb);
}

static void l3route_process(struct pd_stage *st, struct pd_worker *w,
			    struct rte_mbuf **pkts, uint16_t n)
{
	struct l3route_priv *pr = st->priv;
	const struct l3_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	struct rte_mbuf *v4[PD_BURST * 2], *v6[PD_BURST * 2];
	uint32_t ip4[PD_BURST * 2], hop4[PD_BURST * 2];
	uint8_t ip6[PD_BURST * 2][16];
	int32_t hop6[PD_BURST * 2];
	uint16_t i, n4 = 0, n6 = 0;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *mb = pkts[i];
		struct pd_meta *m = pd_meta(mb);
		const uint8_t *l3;

		if (unlikely(!t)) {
			pd_drop(w, st, L3_NO_ROUTE, mb);
			continue;
		}
		l3 = rte_pktmbuf_mtod_offset(mb, const uint8_t *, m->l3_off);
		if (m->l3 == PD_L3_IPV4) {
			ip4[n4] = ((uint32_t)l3[16] << 24) | ((uint32_t)l3[17] << 16) |
				  ((uint32_t)l3[18] << 8) | l3[19];
			v4[n4++] = mb;
		} else if (m->l3 == PD_L3_IPV6) {
			memcpy(ip6[n6], l3 + 24, 16);
			v6[n6++] = mb;
		} else {
			pd_drop(w, st, L3_NOT_IP, mb);
		}
	}
	if (n4) {
		rte_lpm_lookup_bulk(t->lpm4, ip4, hop4, n4);
		for (i = 0; i < n4; i++) {
			if (likely(hop4[i] & RTE_LPM_LOOKUP_SUCCESS))
				l3_send(w, st, t, v4[i], hop4[i] & 0x00ffffff);
			else if (t->def4 >= 0)
				l3_send(w, st, t, v4[i], (uint32_t)t->def4);
			else
				pd_drop(w, st, L3_NO_ROUTE, v4[i]);
		}
	}
	if (n6) {
		rte_lpm6_lookup_bulk_func(t->lpm6, ip6, hop6, n6);
		for (i = 0; i < n6; i++) {
			if (likely(hop6[i] >= 0))
				l3_send(w, st, t, v6[i], (uint32_t)hop6[i]);
			else if (t->def6 >= 0)
				l3_send(w, st, t, v6[i], (uint32_t)t->def6);
			else
				pd_drop(w, st, L3_NO_ROUTE, v6[i]);
		}
	}
}

const struct pd_stage_ops pd_stage_l3route = {
	.type = "l3route",
	.edges = l3_edges,
	.drops = l3_drops,
	.priv_size = sizeof(struct l3route_priv),
	.fini = l3route_fini,
	.process = l3route_process,
};
