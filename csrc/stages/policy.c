/* SPDX-License-Identifier: BSD-3-Clause
 * policy.c - zero-trust allow/deny on the 5-tuple with rte_acl.
 *
 * One rte_acl context per family, built with one category. Search keys are
 * built per burst in a local array (never from the packet in place: IPv4
 * options and IPv6 extension headers put the L4 header anywhere, and
 * fragments have none), then each family takes one rte_acl_classify call.
 * The tables are immutable once published: a commit builds new ones and
 * swaps the pointer with RCU (pd_rcu_swap). See policy.h for the semantics.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_acl.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include "policy.h"

/* conntrack.c, when it is linked in; NULL otherwise (see policy.h) */
extern struct pd_stage *pd_conntrack_find(struct pd_pipeline *p, int stage)
	__attribute__((weak));
extern int pd_conntrack_recheck(struct pd_stage *ct, struct pd_worker *w,
				struct rte_mbuf *m) __attribute__((weak));
extern int pd_conntrack_confirm(struct pd_stage *ct, struct pd_worker *w,
				struct rte_mbuf *m, uint32_t tag)
	__attribute__((weak));

#define X_POL_DROPS(_) \
	_(POLICY_DENY, "policy-deny") \
	_(DEFAULT_DENY, "default-deny") \
	_(FLOW_FULL, "flow-table-full") \
	_(CT_ERROR, "conntrack-error")
enum {
#define _E(id, s) POL_##id,
	X_POL_DROPS(_E)
#undef _E
};
static const char *const pol_drops[] = {
#define _S(id, s) s,
	X_POL_DROPS(_S)
#undef _S
	NULL,
};
enum { POL_X_STATEFUL = 0, POL_X_DEFAULT_ALLOW };
static const char *const pol_extra[] = { "stateful", "default-allow", NULL };
static const char *const pol_edges[] = { "next", "other", NULL };

/* ---- search keys: what rte_acl reads, in network byte order ------------- */
struct pol_key4 {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t addr[2];       /* src, dst */
	uint32_t ports;         /* sport, dport as on the wire */
};

struct pol_key6 {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t addr[8];       /* src[4], dst[4] */
	uint32_t ports;
};

enum { F4_PROTO, F4_SRC, F4_DST, F4_SPORT, F4_DPORT, F4_NUM };
enum { F6_PROTO, F6_SRC0, F6_DST0 = F6_SRC0 + 4, F6_SPORT = F6_DST0 + 4,
       F6_DPORT, F6_NUM };

RTE_ACL_RULE_DEF(pol_rule4, F4_NUM);
RTE_ACL_RULE_DEF(pol_rule6, F6_NUM);

/*
 * The first field is one byte (rte_acl requires it); the others are read
 * four bytes at a time, one input_index per 4-byte group: the two ports
 * share one.
 */
#define FDEF(t, sz, f, in, st, mb) { .type = RTE_ACL_FIELD_TYPE_##t, \
	.size = (sz), .field_index = (f), .input_index = (in), \
	.offset = offsetof(struct st, mb) }
#define FDEFX(t, sz, f, in, st, mb, x) { .type = RTE_ACL_FIELD_TYPE_##t, \
	.size = (sz), .field_index = (f), .input_index = (in), \
	.offset = offsetof(struct st, mb) + (x) }

static const struct rte_acl_field_def defs4[F4_NUM] = {
	FDEF(BITMASK, 1, F4_PROTO, 0, pol_key4, proto),
	FDEFX(MASK, 4, F4_SRC, 1, pol_key4, addr, 0),
	FDEFX(MASK, 4, F4_DST, 2, pol_key4, addr, 4),
	FDEFX(RANGE, 2, F4_SPORT, 3, pol_key4, ports, 0),
	FDEFX(RANGE, 2, F4_DPORT, 3, pol_key4, ports, 2),
};

static const struct rte_acl_field_def defs6[F6_NUM] = {
	FDEF(BITMASK, 1, F6_PROTO, 0, pol_key6, proto),
	FDEFX(MASK, 4, F6_SRC0 + 0, 1, pol_key6, addr, 0),
	FDEFX(MASK, 4, F6_SRC0 + 1, 2, pol_key6, addr, 4),
	FDEFX(MASK, 4, F6_SRC0 + 2, 3, pol_key6, addr, 8),
	FDEFX(MASK, 4, F6_SRC0 + 3, 4, pol_key6, addr, 12),
	FDEFX(MASK, 4, F6_DST0 + 0, 5, pol_key6, addr, 16),
	FDEFX(MASK, 4, F6_DST0 + 1, 6, pol_key6, addr, 20),
	FDEFX(MASK, 4, F6_DST0 + 2, 7, pol_key6, addr, 24),
	FDEFX(MASK, 4, F6_DST0 + 3, 8, pol_key6, addr, 28),
	FDEFX(RANGE, 2, F6_SPORT, 9, pol_key6, ports, 0),
	FDEFX(RANGE, 2, F6_DPORT, 9, pol_key6, ports, 2),
};

/* ---- the published table ------------------------------------------------ */
struct pol_table {
	struct rte_acl_ctx *acl4;   /* NULL: no IPv4 rule */
	struct rte_acl_ctx *acl6;   /* NULL: no IPv6 rule */
	int default_allow;
	uint32_t n_ids;
	uint32_t n4, n6;
	uint32_t n_rows;            /* worker rows in ctr */
	uint32_t stride;            /* uint64 per row: 2 * n_ids, cache-line padded */
	uint64_t generation;
	uint64_t *ctr;              /* row w: [2 id] packets, [2 id + 1] bytes */
};

struct policy_priv {
	struct pol_table *tbl;      /* RCU-published */
	struct pd_stage *ct;        /* conntrack stage, NULL: stateless */
	int ct_stage;
	pthread_mutex_t lock;       /* control path: commit's swap vs counter reads */
	uint64_t generation;
	uint64_t build_ns;
	uint64_t publish_ns;
	struct rte_ring *deny_ring; /* flow log of denies: NULL off (RCU-published) */
	uint64_t deny_lost;         /* records the full ring refused (atomic) */
};

static unsigned pol_seq;   /* rte_acl context names must be unique */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void table_free(void *arg)
{
	struct pol_table *t = arg;

	if (!t)
		return;
	rte_acl_free(t->acl4);
	rte_acl_free(t->acl6);
	rte_free(t->ctr);
	rte_free(t);
}

/* ---- control: validation and compilation -------------------------------- */
static const char *family_name(uint8_t f)
{
	return f == 4 ? "IPv4" : "IPv6";
}

static int rule_check(const struct pd_stage *st, const struct pd_acl_rule *r,
		      unsigned n_ids)
{
	unsigned max_depth = r->family == 4 ? 32 : 128;

	if (r->family != 4 && r->family != 6)
		return PD_ERR(EINVAL, "stage '%s': rule %u: family: %u is neither 4 "
			      "nor 6", st->name, r->id, r->family);
	if (r->id >= n_ids)
		return PD_ERR(EINVAL, "stage '%s': rule %u: id: not below n_ids %u",
			      st->name, r->id, n_ids);
	if (r->priority > PD_POLICY_MAX_PRIORITY)
		return PD_ERR(EINVAL, "stage '%s': rule %u: priority: %u is above "
			      "the maximum %u", st->name, r->id, r->priority,
			      PD_POLICY_MAX_PRIORITY);
	if (r->src_depth > max_depth)
		return PD_ERR(EINVAL, "stage '%s': rule %u: src_depth: /%u is too "
			      "long for %s (max /%u)", st->name, r->id, r->src_depth,
			      family_name(r->family), max_depth);
	if (r->dst_depth > max_depth)
		return PD_ERR(EINVAL, "stage '%s': rule %u: dst_depth: /%u is too "
			      "long for %s (max /%u)", st->name, r->id, r->dst_depth,
			      family_name(r->family), max_depth);
	if (r->sport_lo > r->sport_hi)
		return PD_ERR(EINVAL, "stage '%s': rule %u: sport: empty range "
			      "%u-%u (lo > hi)", st->name, r->id, r->sport_lo,
			      r->sport_hi);
	if (r->dport_lo > r->dport_hi)
		return PD_ERR(EINVAL, "stage '%s': rule %u: dport: empty range "
			      "%u-%u (lo > hi)", st->name, r->id, r->dport_lo,
			      r->dport_hi);
	if (r->action > 1)
		return PD_ERR(EINVAL, "stage '%s': rule %u: action: %u is neither 0 "
			      "(deny) nor 1 (allow)", st->name, r->id, r->action);
	return 0;
}

/* 32 bits of an address in host order, bits past `depth` cleared */
static uint32_t addr_word(const uint8_t *a, unsigned depth)
{
	uint32_t v = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) |
		     ((uint32_t)a[2] << 8) | a[3];

	return depth == 0 ? 0 : depth >= 32 ? v : v & ~(UINT32_MAX >> depth);
}

static unsigned word_depth(unsigned depth, unsigned j)
{
	return depth <= 32 * j ? 0 : RTE_MIN(depth - 32 * j, 32u);
}

static void rule_data(struct rte_acl_rule_data *d, const struct pd_acl_rule *r)
{
	d->category_mask = 1;
	/* deny wins a tie: its internal priority is one above an allow's */
	d->priority = 2 * r->priority + 1 + (r->action == 0);
	d->userdata = (r->id << 1 | r->action) + 1;
}

static void rule_common(struct rte_acl_field *proto, struct rte_acl_field *sp,
			struct rte_acl_field *dp, const struct pd_acl_rule *r)
{
	proto->value.u8 = r->proto;
	proto->mask_range.u8 = r->proto ? 0xff : 0;
	sp->value.u16 = r->sport_lo;
	sp->mask_range.u16 = r->sport_hi;
	dp->value.u16 = r->dport_lo;
	dp->mask_range.u16 = r->dport_hi;
}

/*
 * Create and build the context of one family. Rules are added one at a
 * time (rte_acl copies each: cheap) so a refusal names its rule.
 */
static int acl_compile(const struct pd_stage *st, const struct pd_acl_rule *rules,
		       unsigned n_rules, uint8_t family, unsigned n_fam,
		       struct rte_acl_ctx **out)
{
	struct rte_acl_param prm;
	struct rte_acl_config cfg;
	struct rte_acl_ctx *ctx;
	char name[RTE_ACL_NAMESIZE];
	unsigned i, j;
	int rc;

	snprintf(name, sizeof(name), "pdpol%u_%u", family,
		 __atomic_fetch_add(&pol_seq, 1, __ATOMIC_RELAXED));
	memset(&prm, 0, sizeof(prm));
	prm.name = name;
	prm.socket_id = (int)rte_socket_id();
	prm.rule_size = family == 4 ? RTE_ACL_RULE_SZ(F4_NUM) : RTE_ACL_RULE_SZ(F6_NUM);
	prm.max_rule_num = n_fam;
	ctx = rte_acl_create(&prm);
	if (!ctx)
		return PD_ERR(ENOMEM, "stage '%s': cannot create the %s ACL for %u "
			      "rules: out of memory", st->name, family_name(family),
			      n_fam);
	for (i = 0; i < n_rules; i++) {
		const struct pd_acl_rule *r = &rules[i];

		if (r->family != family)
			continue;
		if (family == 4) {
			struct pol_rule4 a;

			memset(&a, 0, sizeof(a));
			rule_data(&a.data, r);
			rule_common(&a.field[F4_PROTO], &a.field[F4_SPORT],
				    &a.field[F4_DPORT], r);
			a.field[F4_SRC].value.u32 = addr_word(r->src, r->src_depth);
			a.field[F4_SRC].mask_range.u32 = r->src_depth;
			a.field[F4_DST].value.u32 = addr_word(r->dst, r->dst_depth);
			a.field[F4_DST].mask_range.u32 = r->dst_depth;
			rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&a, 1);
		} else {
			struct pol_rule6 a;

			memset(&a, 0, sizeof(a));
			rule_data(&a.data, r);
			rule_common(&a.field[F6_PROTO], &a.field[F6_SPORT],
				    &a.field[F6_DPORT], r);
			for (j = 0; j < 4; j++) {
				unsigned sd = word_depth(r->src_depth, j);
				unsigned dd = word_depth(r->dst_depth, j);

				a.field[F6_SRC0 + j].value.u32 = addr_word(r->src + 4 * j, sd);
				a.field[F6_SRC0 + j].mask_range.u32 = sd;
				a.field[F6_DST0 + j].value.u32 = addr_word(r->dst + 4 * j, dd);
				a.field[F6_DST0 + j].mask_range.u32 = dd;
			}
			rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&a, 1);
		}
		if (rc < 0) {
			rte_acl_free(ctx);
			return PD_ERR(-rc, "stage '%s': rule %u: refused by rte_acl: %s",
				      st->name, r->id, rte_strerror(-rc));
		}
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.num_categories = 1;
	if (family == 4) {
		cfg.num_fields = F4_NUM;
		memcpy(cfg.defs, defs4, sizeof(defs4));
	} else {
		cfg.num_fields = F6_NUM;
		memcpy(cfg.defs, defs6, sizeof(defs6));
	}
	rc = rte_acl_build(ctx, &cfg);
	if (rc < 0) {
		rte_acl_free(ctx);
		return PD_ERR(-rc, "stage '%s': cannot compile the %u %s rules: %s",
			      st->name, n_fam, family_name(family), rte_strerror(-rc));
	}
	*out = ctx;
	return 0;
}

int pd_policy_commit(struct pd_pipeline *p, int stage,
		     const struct pd_acl_rule *rules, unsigned n_rules,
		     unsigned n_ids, int default_allow)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	struct pol_table *t;
	uint64_t t0, t1, t2;
	unsigned i, n4 = 0, n6 = 0;
	size_t sz;
	int rc;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	t0 = now_ns();
	if (n_rules && !rules)
		return PD_ERR(EINVAL, "stage '%s': %u rules but no array", st->name,
			      n_rules);
	if (n_rules > PD_POLICY_MAX_RULES)
		return PD_ERR(EINVAL, "stage '%s': %u rules (at most %u)", st->name,
			      n_rules, PD_POLICY_MAX_RULES);
	if (n_ids > PD_POLICY_MAX_IDS)
		return PD_ERR(EINVAL, "stage '%s': n_ids %u (at most %u)", st->name,
			      n_ids, PD_POLICY_MAX_IDS);
	for (i = 0; i < n_rules; i++) {
		if ((rc = rule_check(st, &rules[i], n_ids)) < 0)
			return rc;
		if (rules[i].family == 4)
			n4++;
		else
			n6++;
	}
	t = rte_zmalloc("pd_policy", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (!t)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	t->default_allow = !!default_allow;
	t->n_ids = n_ids;
	t->n4 = n4;
	t->n6 = n6;
	/* before build there are at most as many workers as worker lcores */
	t->n_rows = p->built ? p->n_workers : rte_lcore_count();
	t->stride = RTE_ALIGN_CEIL(2 * n_ids, RTE_CACHE_LINE_SIZE / sizeof(uint64_t));
	sz = (size_t)t->stride * t->n_rows * sizeof(uint64_t);
	if (sz) {
		t->ctr = rte_zmalloc("pd_policy_ctr", sz, RTE_CACHE_LINE_SIZE);
		if (!t->ctr) {
			rc = PD_ERR(ENOMEM, "stage '%s': out of memory for %u rule "
				    "counters", st->name, n_ids);
			goto fail;
		}
	}
	if (n4 && (rc = acl_compile(st, rules, n_rules, 4, n4, &t->acl4)) < 0)
		goto fail;
	if (n6 && (rc = acl_compile(st, rules, n_rules, 6, n6, &t->acl6)) < 0)
		goto fail;
	t1 = now_ns();
	pthread_mutex_lock(&pr->lock);
	t->generation = ++pr->generation;
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	t2 = now_ns();
	pr->build_ns = t1 - t0;
	pr->publish_ns = t2 - t1;
	pthread_mutex_unlock(&pr->lock);
	return 0;
fail:
	table_free(t);
	return rc;
}

int pd_policy_config(struct pd_pipeline *p, int stage, int conntrack_stage)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	struct pd_stage *ct = NULL;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (p->running)
		return PD_ERR(EBUSY, "stage '%s': stop the pipeline before linking "
			      "conntrack", st->name);
	if (conntrack_stage >= 0) {
		if (!pd_conntrack_find || !pd_conntrack_confirm)
			return PD_ERR(ENOTSUP, "stage '%s': this build has no "
				      "conntrack stage to link to", st->name);
		if (conntrack_stage >= stage)
			return PD_ERR(EINVAL, "stage '%s': conntrack stage %d must "
				      "come before it", st->name, conntrack_stage);
		ct = pd_conntrack_find(p, conntrack_stage);
		if (!ct)
			return -EINVAL;  /* pd_conntrack_find left the message */
	}
	pthread_mutex_lock(&pr->lock);
	pr->ct = ct;
	pr->ct_stage = ct ? conntrack_stage : -1;
	pthread_mutex_unlock(&pr->lock);
	return 0;
}

int pd_policy_counters(struct pd_pipeline *p, int stage, uint64_t *pkts,
		       uint64_t *bytes, unsigned n_ids)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	const struct pol_table *t;
	unsigned i, w, n;
	int gen;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (n_ids && (!pkts || !bytes))
		return PD_ERR(EINVAL, "stage '%s': no counter arrays", st->name);
	for (i = 0; i < n_ids; i++)
		pkts[i] = bytes[i] = 0;
	pthread_mutex_lock(&pr->lock);   /* the table cannot be freed meanwhile */
	t = pr->tbl;
	gen = t ? (int)t->generation : 0;
	n = t ? RTE_MIN(n_ids, t->n_ids) : 0;
	for (w = 0; t && w < t->n_rows; w++) {
		const uint64_t *row = t->ctr + (size_t)w * t->stride;

		for (i = 0; i < n; i++) {
			pkts[i] += __atomic_load_n(&row[2 * i], __ATOMIC_RELAXED);
			bytes[i] += __atomic_load_n(&row[2 * i + 1], __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&pr->lock);
	return gen;
}

int pd_policy_info(struct pd_pipeline *p, int stage, struct pd_policy_info *out)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	const struct pol_table *t;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&pr->lock);
	t = pr->tbl;
	out->generation = pr->generation;
	out->build_ns = pr->build_ns;
	out->publish_ns = pr->publish_ns;
	if (t) {
		out->n_rules4 = t->n4;
		out->n_rules6 = t->n6;
		out->n_ids = t->n_ids;
		out->default_allow = t->default_allow;
	}
	out->conntrack_stage = pr->ct_stage;
	pthread_mutex_unlock(&pr->lock);
	return 0;
}

static int policy_init(struct pd_stage *st)
{
	struct policy_priv *pr = st->priv;
	int rc;

	pr->ct_stage = -1;
	if ((rc = pthread_mutex_init(&pr->lock, NULL)) != 0)
		return PD_ERR(rc, "stage '%s': cannot create its lock", st->name);
	return 0;
}

static void policy_fini(struct pd_stage *st)
{
	struct policy_priv *pr = st->priv;

	table_free(pr->tbl);
	pr->tbl = NULL;
	rte_ring_free(pr->deny_ring);
	pr->deny_ring = NULL;
	pthread_mutex_destroy(&pr->lock);
}

/* ---- the fast path ------------------------------------------------------- */

/* Ports of TCP and UDP (parse checked their headers) and SCTP; 0 for later
 * fragments and everything else. */
static inline uint32_t key_ports(const struct rte_mbuf *mb,
				 const struct pd_meta *m)
{
	uint32_t ports = 0;

	if (m->l4_off == 0 || (m->flags & PD_META_FRAG))
		return 0;
	switch (m->l4_proto) {
	case IPPROTO_SCTP:
		if (rte_pktmbuf_data_len(mb) < (uint32_t)m->l4_off + 4)
			return 0;
		/* fall through */
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		memcpy(&ports, rte_pktmbuf_mtod_offset(mb, const uint8_t *,
						       m->l4_off), 4);
		break;
	default:
		break;
	}
	return ports;
}

/* A new packet the policy lets through: confirm its flow, then pass it. */
static inline void pol_pass_new(struct pd_stage *st, struct pd_worker *w,
				struct pd_stage *ct, struct rte_mbuf *mb,
				uint32_t tag)
{
	if (ct) {
		int rc = pd_conntrack_confirm(ct, w, mb, tag);

		if (rc < 0) {
			pd_drop(w, st, rc == -ENOSPC ? POL_FLOW_FULL : POL_CT_ERROR,
				mb);
			return;
		}
	}
	pd_emit(w, st, PD_POLICY_NEXT, mb);
}

/* Before a deny: a flow opened earlier in this very burst lets it pass. */
static inline bool pol_stateful_late(struct pd_stage *st, struct pd_worker *w,
				     struct pd_stage *ct, struct rte_mbuf *mb)
{
	if (!ct || !pd_conntrack_recheck || pd_conntrack_recheck(ct, w, mb) < 0)
		return false;
	w->ctr[st->ctr_extra + POL_X_STATEFUL]++;
	pd_emit(w, st, PD_POLICY_NEXT, mb);
	return true;
}

/* The flow log's deny record of `mb` (deny path only, while the log runs). */
static __rte_noinline __rte_unused void pol_deny_log(struct policy_priv *pr,
					struct rte_mbuf *mb, unsigned reason,
					uint32_t rule)
{
	struct rte_ring *r = __atomic_load_n(&pr->deny_ring, __ATOMIC_ACQUIRE);
	const struct pd_meta *m = pd_meta(mb);
	const uint8_t *l3;
	struct pd_deny_rec d;
	uint32_t ports;

	if (!r)
		return;
	memset(&d, 0, sizeof(d));
	l3 = rte_pktmbuf_mtod_offset(mb, const uint8_t *, m->l3_off);
	if (m->l3 == PD_L3_IPV4) {
		d.family = 4;
		memcpy(d.src, l3 + 12, 4);
		memcpy(d.dst, l3 + 16, 4);
	} else {
		d.family = 6;
		memcpy(d.src, l3 + 8, 16);
		memcpy(d.dst, l3 + 24, 16);
	}
	d.proto = m->l4_proto;
	ports = key_ports(mb, m);    /* sport, dport as on the wire */
	d.sport = rte_be_to_cpu_16((uint16_t)(ports & 0xffff));
	d.dport = rte_be_to_cpu_16((uint16_t)(ports >> 16));
	d.reason = (uint16_t)reason;
	d.rule = rule;
	d.len = rte_pktmbuf_pkt_len(mb);
	d.tsc = rte_rdtsc();
	if (rte_ring_mp_enqueue_elem(r, &d, sizeof(d)) != 0)
		__atomic_fetch_add(&pr->deny_lost, 1, __ATOMIC_RELAXED);
}

/* off: one load of a pointer next to the table's, on the deny path only
 * (nothing at all with -Dobs=false) */
#ifndef PD_NO_OBS
#define POL_DENY_LOG(st, mb, why, rule) do {				\
	struct policy_priv *pr_ = (st)->priv;				\
	if (unlikely(__atomic_load_n(&pr_->deny_ring, __ATOMIC_RELAXED)))	\
		pol_deny_log(pr_, (mb), (why), (rule));			\
} while (0)
#else
#define POL_DENY_LOG(st, mb, why, rule) do { } while (0)
#endif

static inline void pol_verdict(struct pd_stage *st, struct pd_worker *w,
			       struct pd_stage *ct, uint64_t *row,
			       int default_allow, struct rte_mbuf *mb,
			       uint32_t res)
{
	uint32_t id;

	if (res == 0) {
		pd_trace_hit(w, st, mb, PD_TRACE_RULE, UINT32_MAX);
		if (default_allow) {
			w->ctr[st->ctr_extra + POL_X_DEFAULT_ALLOW]++;
			pol_pass_new(st, w, ct, mb, PD_POLICY_TAG_DEFAULT);
		} else if (!pol_stateful_late(st, w, ct, mb)) {
			POL_DENY_LOG(st, mb, POL_DEFAULT_DENY, UINT32_MAX);
			pd_drop(w, st, POL_DEFAULT_DENY, mb);
		}
		return;
	}
	res--;
	id = res >> 1;
	pd_trace_hit(w, st, mb, PD_TRACE_RULE, id);
	if (!(res & 1) && pol_stateful_late(st, w, ct, mb))
		return;  /* not this rule's hit: its flow was allowed */
	row[2 * id]++;
	row[2 * id + 1] += rte_pktmbuf_pkt_len(mb);
	if (res & 1) {
		pol_pass_new(st, w, ct, mb, id);
	} else {
		POL_DENY_LOG(st, mb, POL_POLICY_DENY, id);
		pd_drop(w, st, POL_POLICY_DENY, mb);
	}
}

/*
 * Measured (benchmarks/policy_apply.py --cycles, 10k rules shaped as
 * pydp.policy emits them, SSE classify on this 2-CPU VM): the stage adds
 * 55-65 cycles per packet to parse -> forward (71 -> 125 on-CPU cycles).
 */
static void policy_process(struct pd_stage *st, struct pd_worker *w,
			   struct rte_mbuf **pkts, uint16_t n)
{
	struct policy_priv *pr = st->priv;
	const struct pol_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	struct pd_stage *ct = pr->ct;
	struct rte_mbuf *v4[PD_BURST * 2], *v6[PD_BURST * 2];
	struct pol_key4 k4[PD_BURST * 2];
	struct pol_key6 k6[PD_BURST * 2];
	const uint8_t *d4[PD_BURST * 2], *d6[PD_BURST * 2];
	uint32_t r4[PD_BURST * 2], r6[PD_BURST * 2];
	uint64_t *row = NULL;
	int def = 0;
	uint16_t i, n4 = 0, n6 = 0;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *mb = pkts[i];
		const struct pd_meta *m = pd_meta(mb);
		const uint8_t *l3;

		if (m->l3 != PD_L3_IPV4 && m->l3 != PD_L3_IPV6) {
			pd_emit(w, st, PD_POLICY_OTHER, mb);
			continue;
		}
		if (ct && m->aux != 0) {
			/* a flow conntrack knows: it was allowed when it began */
			pd_trace_hit(w, st, mb, PD_TRACE_FLOW, m->aux - 1);
			w->ctr[st->ctr_extra + POL_X_STATEFUL]++;
			pd_emit(w, st, PD_POLICY_NEXT, mb);
			continue;
		}
		l3 = rte_pktmbuf_mtod_offset(mb, const uint8_t *, m->l3_off);
		if (m->l3 == PD_L3_IPV4) {
			struct pol_key4 *k = &k4[n4];

			k->proto = m->l4_proto;
			memset(k->pad, 0, sizeof(k->pad));
			memcpy(k->addr, l3 + 12, 8);
			k->ports = key_ports(mb, m);
			d4[n4] = &k->proto;
			v4[n4++] = mb;
		} else {
			struct pol_key6 *k = &k6[n6];

			k->proto = m->l4_proto;
			memset(k->pad, 0, sizeof(k->pad));
			memcpy(k->addr, l3 + 8, 32);
			k->ports = key_ports(mb, m);
			d6[n6] = &k->proto;
			v6[n6++] = mb;
		}
	}
	if (n4 + n6 == 0)
		return;
	if (t) {
		def = t->default_allow;
		if (t->ctr)
			row = t->ctr + (size_t)w->slot * t->stride;
	}
	if (n4) {
		if (t && t->acl4)
			rte_acl_classify(t->acl4, d4, r4, n4, 1);
		else
			memset(r4, 0, n4 * sizeof(r4[0]));
		for (i = 0; i < n4; i++)
			pol_verdict(st, w, ct, row, def, v4[i], r4[i]);
	}
	if (n6) {
		if (t && t->acl6)
			rte_acl_classify(t->acl6, d6, r6, n6, 1);
		else
			memset(r6, 0, n6 * sizeof(r6[0]));
		for (i = 0; i < n6; i++)
			pol_verdict(st, w, ct, row, def, v6[i], r6[i]);
	}
}

/* ---- flow log of denies (control) ------------------------------------------ */
static void deny_ring_free(void *r)
{
	rte_ring_free(r);
}

int pd_policy_deny_log(struct pd_pipeline *p, int stage, int on)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	struct rte_ring *r;
	char name[RTE_RING_NAMESIZE];

	if (!st)
		return -EINVAL;
	pr = st->priv;
	pthread_mutex_lock(&pr->lock);
	if (on && !pr->deny_ring) {
		snprintf(name, sizeof(name), "pddeny%u",
			 __atomic_fetch_add(&pol_seq, 1, __ATOMIC_RELAXED));
		r = rte_ring_create_elem(name, sizeof(struct pd_deny_rec), 8192,
					 SOCKET_ID_ANY, RING_F_SC_DEQ);
		if (!r) {
			pthread_mutex_unlock(&pr->lock);
			return PD_ERR(rte_errno ? rte_errno : ENOMEM, "stage '%s': "
				      "cannot create the deny log ring: %s", st->name,
				      rte_strerror(rte_errno));
		}
		__atomic_store_n(&pr->deny_ring, r, __ATOMIC_RELEASE);
	} else if (!on && pr->deny_ring) {
		pd_rcu_swap(p, (void **)&pr->deny_ring, NULL, deny_ring_free);
	}
	pthread_mutex_unlock(&pr->lock);
	return 0;
}

int pd_policy_deny_read(struct pd_pipeline *p, int stage, struct pd_deny_rec *out,
			unsigned max, uint64_t *lost)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	unsigned n = 0;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	pthread_mutex_lock(&pr->lock);
	if (pr->deny_ring)
		n = rte_ring_sc_dequeue_burst_elem(pr->deny_ring, out, sizeof(*out),
						   max, NULL);
	if (lost)
		*lost = __atomic_exchange_n(&pr->deny_lost, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&pr->lock);
	return (int)n;
}

const struct pd_stage_ops pd_stage_policy = {
	.type = "policy",
	.edges = pol_edges,
	.drops = pol_drops,
	.extra = pol_extra,
	.needs_next = true,
	.priv_size = sizeof(struct policy_priv),
	.init = policy_init,
	.fini = policy_fini,
	.process = policy_process,
};
