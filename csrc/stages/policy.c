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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include "conntrack.h"
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
	_(REVOKED, "revoked") \
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

/*
 * ---- the two-level lookup ------------------------------------------------
 *
 * rte_acl_build costs about 16 microseconds per rule on this VM whatever the
 * field layout (measured with a harness on 10k/100k-rule sets: proto, src,
 * dst, ports 124-142 ms for 8k IPv4 rules; dst before src 128-131 ms; one
 * 4-byte port range 144-160 ms; ports before addresses 183 ms; max_size set
 * 125-147 ms; 2, 4, 16 contexts built separately 124, 120, 95 ms in total
 * but 105, 197, 603 cycles per classify instead of 43). The build is linear
 * in the rules, so the only lever is fewer rules. A policy's rules are
 * cross products (every source prefix of a selector x every destination
 * prefix x every port entry), so the commit numbers the policy's prefixes
 * instead of matching addresses in the ACL:
 *
 * - every distinct prefix of a family is a node of the prefix tree (a
 *   virtual /0 root per family); a pre-order walk gives each node a class
 *   number, and the subtree of a node is the interval [pre, end] of class
 *   numbers. Siblings are visited in the order the rules first name them,
 *   so the prefixes of one selector are neighbours and their intervals
 *   merge into one.
 * - per packet, rte_lpm (IPv4) / rte_lpm6 (IPv6) maps each address to the
 *   class of its most specific prefix (the family's root class if none);
 *   address a is in prefix P exactly when class(a) is in P's interval, so the
 *   verdict is the same as matching prefixes.
 * - the ACL (one context for both families) matches proto, the source and
 *   destination class ranges and the ports. Rules that differ only in
 *   adjacent class intervals are merged first: a selector-to-selector rule
 *   becomes one ACL rule per port entry instead of |src| x |dst| of them.
 */
struct pol_key {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t cls[2];        /* src, dst class, network byte order */
	uint32_t ports;         /* sport, dport as on the wire */
};

enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, F_NUM };
RTE_ACL_RULE_DEF(pol_rule, F_NUM);

/* The first field is one byte (rte_acl requires it); the others are read
 * four bytes at a time, one input_index per 4-byte group: the two ports
 * share one. */
#define FDEF(t, sz, f, in, mb, x) { .type = RTE_ACL_FIELD_TYPE_##t, \
	.size = (sz), .field_index = (f), .input_index = (in), \
	.offset = offsetof(struct pol_key, mb) + (x) }
static const struct rte_acl_field_def pol_defs[F_NUM] = {
	FDEF(BITMASK, 1, F_PROTO, 0, proto, 0),
	FDEF(RANGE, 4, F_SRC, 1, cls, 0),
	FDEF(RANGE, 4, F_DST, 2, cls, 4),
	FDEF(RANGE, 2, F_SPORT, 3, ports, 0),
	FDEF(RANGE, 2, F_DPORT, 3, ports, 2),
};

/* ---- the published table ------------------------------------------------ */

/*
 * One built rte_acl context and the merged rules it was built from. A commit
 * whose merged rules of a family equal the published table's (byte for byte)
 * shares that context instead of building it again: a change to IPv6 rules
 * only does not rebuild IPv4, and the reverse (each family numbers its
 * classes from 1, so one family's prefixes never renumber the other's).
 * Shared by at most the published table and the one being built; counted
 * and freed on the control thread only.
 */
struct pol_mrule;
struct pol_acl {
	struct rte_acl_ctx *ctx;
	struct pol_mrule *m;
	unsigned n;
	bool addr_form;
	unsigned refs;
};

struct pol_table {
	struct rte_acl_ctx *acl4;   /* NULL: no IPv4 rule */
	struct rte_acl_ctx *acl6;   /* NULL: no IPv6 rule */
	bool v4_addr;               /* acl4 matches addresses, not classes */
	struct pol_acl *own[2];     /* [0] IPv4, [1] IPv6: what acl4 / acl6 belong to */
	uint32_t acl_built, acl_reused;  /* families built / shared by this commit */
	struct rte_lpm *lpm4;       /* NULL: no IPv4 prefix; owned by policy_priv */
	struct rte_lpm6 *lpm6;      /* NULL: no IPv6 prefix; owned by policy_priv */
	int8_t slot[2];             /* [0] IPv4, [1] IPv6: lpm slot used, -1: none */
	uint32_t root4, root6;      /* class of an address in no prefix (0: no rule) */
	int default_allow;
	uint32_t n_ids;
	uint32_t n4, n6;            /* rules as committed */
	uint32_t n_acl;             /* ACL rules after the merge */
	uint32_t n_classes;
	uint32_t n_rows;            /* worker rows in ctr */
	uint32_t stride;            /* uint64 per row: 2 * n_ids, cache-line padded */
	uint64_t generation;
	uint64_t *ctr;              /* row w: [2 id] packets, [2 id + 1] bytes */
};

/*
 * One family's prefix table, kept from commit to commit: rte_lpm and
 * rte_lpm6 are DIR-24-8, 64 MiB each, and creating (zeroing, faulting in)
 * and freeing (rte_free zeroes too) them took 60-90 ms of a 10k-rule commit.
 * Two per family: the published table reads one, the next commit updates the
 * other by the difference between what it holds and what the new policy
 * needs (rte_lpm_add on a held prefix replaces its class).
 */
struct pol_pfx;
struct pol_lpm {
	struct rte_lpm *lpm4;
	struct rte_lpm6 *lpm6;
	uint32_t max_rules, tbl8s;  /* its capacity */
	struct pol_pfx *held;       /* the prefixes it maps now, sorted */
	unsigned n_held;
	bool dirty;                 /* a failed update: rebuild from empty */
};

struct policy_priv {
	struct pol_table *tbl;      /* RCU-published */
	struct pol_lpm lpm[2][2];   /* [family 4, 6][slot] */
	struct pd_stage *ct;        /* conntrack stage, NULL: stateless */
	int ct_stage;
	pthread_mutex_t lock;       /* control path: commit's swap vs counter reads */
	uint64_t generation;
	uint64_t build_ns;
	uint64_t publish_ns;
	struct rte_ring *deny_ring; /* flow log of denies: NULL off (RCU-published) */
	uint64_t deny_lost;         /* records the full ring refused (atomic) */
	uint64_t revalidate_ns;
	uint64_t revoked;           /* flows the last commit cut */
	uint64_t revalidated;       /* flows the last commit looked at */
};

static unsigned pol_seq;   /* rte_acl / rte_lpm names must be unique */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pol_acl_put(struct pol_acl *a)
{
	if (!a || --a->refs > 0)
		return;
	rte_acl_free(a->ctx);
	free(a->m);
	free(a);
}

static void table_free(void *arg)
{
	struct pol_table *t = arg;

	if (!t)
		return;
	pol_acl_put(t->own[0]);
	pol_acl_put(t->own[1]);
	rte_free(t->ctr);
	rte_free(t);
}

/* ---- control: validation ------------------------------------------------- */
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

/* ---- control: the prefix tree and its classes ---------------------------- */
struct pol_pfx {
	uint8_t addr[16];       /* network order, bits past depth cleared */
	uint8_t depth;          /* 1..128: /0 is the family's root */
	uint32_t rank;          /* first mention: rule index * 2 + side */
	uint32_t parent;        /* index in the sorted array, UINT32_MAX: root */
	uint32_t pre, end;      /* class interval of its subtree */
};

static void pfx_mask(uint8_t *out, const uint8_t *a, unsigned depth, unsigned len)
{
	unsigned i;

	for (i = 0; i < len; i++) {
		unsigned bits = depth > 8 * i ? RTE_MIN(depth - 8 * i, 8u) : 0;

		out[i] = bits ? a[i] & (uint8_t)(0xff << (8 - bits)) : 0;
	}
	for (; i < 16; i++)
		out[i] = 0;
}

static int pfx_cmp(const void *a, const void *b)
{
	const struct pol_pfx *x = a, *y = b;
	int c = memcmp(x->addr, y->addr, 16);

	if (c)
		return c;
	if (x->depth != y->depth)
		return x->depth < y->depth ? -1 : 1;
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* does prefix p contain prefix q (q at least as long)? */
static bool pfx_contains(const struct pol_pfx *p, const struct pol_pfx *q)
{
	uint8_t m[16];

	if (q->depth < p->depth)
		return false;
	pfx_mask(m, q->addr, p->depth, 16);
	return memcmp(m, p->addr, 16) == 0;
}

/* sort key for the walk: children of one parent together, by rank */
static const struct pol_pfx *walk_base;
static int walk_cmp(const void *a, const void *b)
{
	const struct pol_pfx *x = &walk_base[*(const uint32_t *)a];
	const struct pol_pfx *y = &walk_base[*(const uint32_t *)b];
	uint64_t kx = (uint64_t)(x->parent + 1) << 32 | x->rank;
	uint64_t ky = (uint64_t)(y->parent + 1) << 32 | y->rank;

	return kx < ky ? -1 : kx > ky;
}

/*
 * The classes of one family: sort and dedupe its prefixes, link each to its
 * nearest enclosing prefix, then walk the tree in pre-order (children by
 * first mention) from class *next on. The root gets the first class.
 */
static int pfx_classes(struct pol_pfx *v, unsigned *np, uint32_t *next,
		       uint32_t *root, uint32_t *root_end)
{
	unsigned n = *np, i, k, top = 0, root_cnt = 0;
	uint32_t *order, *stack, *first, *cnt, *pos;
	int rc = -ENOMEM;

	qsort(v, n, sizeof(*v), pfx_cmp);
	for (i = 0, k = 0; i < n; i++) {   /* dedupe: the first (lowest rank) stays */
		if (k && v[k - 1].depth == v[i].depth &&
		    memcmp(v[k - 1].addr, v[i].addr, 16) == 0)
			continue;
		v[k++] = v[i];
	}
	n = *np = k;
	order = malloc((n + 1) * sizeof(*order));
	stack = malloc((n + 1) * sizeof(*stack));
	first = calloc(n + 1, sizeof(*first));
	cnt = calloc(n + 1, sizeof(*cnt));
	pos = malloc((n + 1) * sizeof(*pos));
	if (!order || !stack || !first || !cnt || !pos)
		goto out;
	for (i = 0; i < n; i++) {   /* sorted by address, shorter first: a stack */
		while (top && !pfx_contains(&v[stack[top - 1]], &v[i]))
			top--;
		v[i].parent = top ? stack[top - 1] : UINT32_MAX;
		stack[top++] = i;
		order[i] = i;
	}
	walk_base = v;   /* control thread only, under the caller's commit */
	qsort(order, n, sizeof(*order), walk_cmp);
	for (i = 0; i < n; i++) {
		uint32_t par = v[order[i]].parent;

		if (par == UINT32_MAX) {
			root_cnt++;
			continue;
		}
		if (cnt[par]++ == 0)
			first[par] = i;
	}
	*root = (*next)++;
	/* pre-order walk; the root's children are order[0 .. root_cnt) */
	for (k = 0; k < root_cnt; k++) {
		top = 0;
		v[order[k]].pre = (*next)++;
		stack[top] = order[k];
		pos[top++] = 0;
		while (top) {
			uint32_t y = stack[top - 1];

			if (pos[top - 1] < cnt[y]) {
				uint32_t c = order[first[y] + pos[top - 1]++];

				v[c].pre = (*next)++;
				stack[top] = c;
				pos[top++] = 0;
			} else {
				v[y].end = *next - 1;
				top--;
			}
		}
	}
	*root_end = *next - 1;
	rc = 0;
out:
	free(order);
	free(stack);
	free(first);
	free(cnt);
	free(pos);
	return rc;
}

/* one ACL rule in class form, before and after the merge */
struct pol_mrule {
	uint32_t userdata, priority;
	uint32_t lo[2], hi[2];  /* src, dst class intervals */
	uint16_t sp_lo, sp_hi, dp_lo, dp_hi;
	uint8_t proto;
	uint32_t id;            /* a rule id, for messages */
};

static pthread_mutex_t pol_build_lock = PTHREAD_MUTEX_INITIALIZER; /* qsort keys */
static int merge_side;

static int mrule_cmp(const void *a, const void *b)
{
	const struct pol_mrule *x = a, *y = b;
	int s = merge_side, o = !s;

#define CMP(f) do { if (x->f != y->f) return x->f < y->f ? -1 : 1; } while (0)
	CMP(userdata);
	CMP(priority);
	CMP(proto);
	CMP(sp_lo);
	CMP(sp_hi);
	CMP(dp_lo);
	CMP(dp_hi);
	CMP(lo[o]);
	CMP(hi[o]);
	CMP(lo[s]);
	CMP(hi[s]);
#undef CMP
	return 0;
}

/* Merge rules equal but for overlapping or adjacent intervals on `side`. */
static unsigned mrule_merge(struct pol_mrule *m, unsigned n, int side)
{
	unsigned i, k = 0;
	int o = !side;

	merge_side = side;
	qsort(m, n, sizeof(*m), mrule_cmp);
	for (i = 0; i < n; i++) {
		struct pol_mrule *c = k ? &m[k - 1] : NULL;

		if (c && c->userdata == m[i].userdata && c->priority == m[i].priority &&
		    c->proto == m[i].proto && c->sp_lo == m[i].sp_lo &&
		    c->sp_hi == m[i].sp_hi && c->dp_lo == m[i].dp_lo &&
		    c->dp_hi == m[i].dp_hi && c->lo[o] == m[i].lo[o] &&
		    c->hi[o] == m[i].hi[o] && m[i].lo[side] <= c->hi[side] + 1) {
			c->hi[side] = RTE_MAX(c->hi[side], m[i].hi[side]);
			continue;
		}
		m[k++] = m[i];
	}
	return k;
}

/* the class interval of a rule's prefix (depth 0: the family's root) */
static int pfx_find_cmp(const void *key, const void *elem)
{
	const struct pol_pfx *x = key, *y = elem;
	int c = memcmp(x->addr, y->addr, 16);

	if (c)
		return c;
	return x->depth < y->depth ? -1 : x->depth > y->depth;
}

struct pol_fam {
	struct pol_pfx *v;
	unsigned n;
	uint32_t root, root_end;
};

static void pfx_interval(const struct pol_fam *f, const uint8_t *addr,
			 unsigned depth, unsigned len, uint32_t *lo, uint32_t *hi)
{
	struct pol_pfx key;
	const struct pol_pfx *e;

	if (depth == 0) {
		*lo = f->root;
		*hi = f->root_end;
		return;
	}
	pfx_mask(key.addr, addr, depth, len);
	key.depth = (uint8_t)depth;
	e = bsearch(&key, f->v, f->n, sizeof(*f->v), pfx_find_cmp);
	*lo = e ? e->pre : 0;   /* always found: every prefix was collected */
	*hi = e ? e->end : 0;
}

static int memcmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* the tbl8 groups rte_lpm6 needs: distinct /24, /32 .. /120 heads of longer prefixes */
static unsigned lpm6_tbl8s(const struct pol_pfx *v, unsigned n)
{
	uint8_t (*h)[16] = malloc((n + 1) * 16);
	unsigned L, i, k, total = 16;

	if (!h)
		return 16 * n + 16;
	for (L = 24; L < 128; L += 8) {
		for (i = 0, k = 0; i < n; i++)
			if (v[i].depth > L)
				pfx_mask(h[k++], v[i].addr, L, 16);
		if (k == 0)
			break;
		qsort(h, k, 16, memcmp16);
		total++;
		for (i = 1; i < k; i++)
			total += memcmp(h[i - 1], h[i], 16) != 0;
	}
	free(h);
	return total;
}

static void lpm_release(struct pol_lpm *L)
{
	rte_lpm_free(L->lpm4);
	rte_lpm6_free(L->lpm6);
	free(L->held);
	memset(L, 0, sizeof(*L));
}

static int lpm_put(struct pol_lpm *L, uint8_t family, const struct pol_pfx *x)
{
	if (family == 4) {
		uint32_t a = ((uint32_t)x->addr[0] << 24) | ((uint32_t)x->addr[1] << 16) |
			     ((uint32_t)x->addr[2] << 8) | x->addr[3];

		return rte_lpm_add(L->lpm4, a, x->depth, x->pre);
	}
	return rte_lpm6_add(L->lpm6, x->addr, x->depth, x->pre);
}

static int lpm_del(struct pol_lpm *L, uint8_t family, const struct pol_pfx *x)
{
	if (family == 4) {
		uint32_t a = ((uint32_t)x->addr[0] << 24) | ((uint32_t)x->addr[1] << 16) |
			     ((uint32_t)x->addr[2] << 8) | x->addr[3];

		return rte_lpm_delete(L->lpm4, a, x->depth);
	}
	return rte_lpm6_delete(L->lpm6, x->addr, x->depth);
}

/*
 * Make the spare prefix table of `family` map f's prefixes to their classes:
 * create it (capacity twice the need) if it is missing or too small, else
 * delete what the new policy no longer has and add what is new or renumbered.
 */
static int lpm_sync(const struct pd_stage *st, struct pol_table *t,
		    uint8_t family, const struct pol_fam *f)
{
	struct policy_priv *pr = st->priv;
	int fi = family == 6, slot;
	struct pol_lpm *L;
	unsigned need8 = 1, i, j, attempt;
	char name[RTE_LPM_NAMESIZE];
	int rc = 0;

	slot = pr->tbl && pr->tbl->slot[fi] == 0 ? 1 : 0;
	L = &pr->lpm[fi][slot];
	if (family == 4) {
		for (i = 0; i < f->n; i++)
			need8 += f->v[i].depth > 24;
	} else {
		need8 = lpm6_tbl8s(f->v, f->n);
	}
	for (attempt = 0; attempt < 2; attempt++) {
		if (!(L->lpm4 || L->lpm6) || f->n > L->max_rules || need8 > L->tbl8s ||
		    L->dirty) {
			uint32_t mr = RTE_MAX(2 * f->n, 64u), t8 = RTE_MAX(2 * need8, 64u);

			lpm_release(L);
			snprintf(name, sizeof(name), "pdpl%u_%u", family,
				 __atomic_fetch_add(&pol_seq, 1, __ATOMIC_RELAXED));
			if (family == 4) {
				struct rte_lpm_config c = { .max_rules = mr,
							    .number_tbl8s = t8 };

				L->lpm4 = rte_lpm_create(name, (int)rte_socket_id(), &c);
			} else {
				struct rte_lpm6_config c = { .max_rules = mr,
							     .number_tbl8s = t8 };

				L->lpm6 = rte_lpm6_create(name, (int)rte_socket_id(), &c);
			}
			if (!L->lpm4 && !L->lpm6)
				return PD_ERR(rte_errno ? rte_errno : ENOMEM, "stage '%s': "
					      "cannot create the %s prefix table (%u "
					      "prefixes): %s", st->name,
					      family_name(family), f->n,
					      rte_strerror(rte_errno));
			L->max_rules = mr;
			L->tbl8s = t8;
		}
		L->dirty = true;   /* until the update below completes */
		for (i = 0, j = 0, rc = 0; rc >= 0 && (i < L->n_held || j < f->n);) {
			int c = i == L->n_held ? 1 : j == f->n ? -1 :
				pfx_find_cmp(&L->held[i], &f->v[j]);

			if (c < 0) {
				rc = lpm_del(L, family, &L->held[i++]);
			} else if (c > 0) {
				rc = lpm_put(L, family, &f->v[j++]);
			} else {
				if (L->held[i].pre != f->v[j].pre)
					rc = lpm_put(L, family, &f->v[j]);
				i++;
				j++;
			}
		}
		if (rc >= 0)
			break;
		/* full (tbl8 groups of a layout we did not foresee): start over */
		free(L->held);
		L->held = NULL;
		L->n_held = 0;
		L->tbl8s *= 2;
		L->max_rules = 0;
	}
	if (rc < 0)
		return PD_ERR(-rc, "stage '%s': %s prefix table: %s", st->name,
			      family_name(family), rte_strerror(-rc));
	free(L->held);
	L->held = malloc((f->n + 1) * sizeof(*L->held));
	if (!L->held) {
		L->n_held = 0;
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	}
	memcpy(L->held, f->v, f->n * sizeof(*f->v));
	L->n_held = f->n;
	L->dirty = false;
	t->slot[fi] = (int8_t)slot;
	if (family == 4)
		t->lpm4 = L->lpm4;
	else
		t->lpm6 = L->lpm6;
	return 0;
}

/* Collect one family's prefixes (src and dst of its rules) and number them. */
static int family_build(const struct pd_stage *st,
			const struct pd_acl_rule *rules, unsigned n_rules,
			uint8_t family, struct pol_fam *f, uint32_t *next)
{
	unsigned len = family == 4 ? 4 : 16, i, k = 0;
	int rc;

	f->v = malloc((2 * (size_t)n_rules + 1) * sizeof(*f->v));
	if (!f->v)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	for (i = 0; i < n_rules; i++) {
		const struct pd_acl_rule *r = &rules[i];

		if (r->family != family)
			continue;
		if (r->src_depth) {
			pfx_mask(f->v[k].addr, r->src, r->src_depth, len);
			f->v[k].depth = r->src_depth;
			f->v[k++].rank = 2 * i;
		}
		if (r->dst_depth) {
			pfx_mask(f->v[k].addr, r->dst, r->dst_depth, len);
			f->v[k].depth = r->dst_depth;
			f->v[k++].rank = 2 * i + 1;
		}
	}
	f->n = k;
	if ((rc = pfx_classes(f->v, &f->n, next, &f->root, &f->root_end)) < 0)
		return PD_ERR(-rc, "stage '%s': out of memory", st->name);
	if (f->n == 0)
		return 0;
	if (f->root_end >= (family == 4 ? 1u << 24 : 1u << 21))
		return PD_ERR(E2BIG, "stage '%s': %u address classes: the %s prefix "
			      "table holds at most %u", st->name, f->root_end,
			      family_name(family), (family == 4 ? 1u << 24 : 1u << 21) - 1);
	return 0;
}

/* 32 bits of an address in host order, bits past `depth` cleared */
static uint32_t addr_word(const uint8_t *a, unsigned depth)
{
	uint32_t v = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) |
		     ((uint32_t)a[2] << 8) | a[3];

	return depth == 0 ? 0 : depth >= 32 ? v : v & ~(UINT32_MAX >> depth);
}

/* The rules of one family in class form (classes: intervals) or, for IPv4
 * only, in address form (lo = address in host order, hi = depth). */
static void mrules_of(struct pol_mrule *m, unsigned *nm,
		      const struct pd_acl_rule *rules, unsigned n_rules,
		      uint8_t family, const struct pol_fam *f, bool addr_form)
{
	unsigned len = family == 4 ? 4 : 16, i, k = 0;

	for (i = 0; i < n_rules; i++) {
		const struct pd_acl_rule *r = &rules[i];
		struct pol_mrule *x = &m[k];

		if (r->family != family)
			continue;
		/* deny wins a tie: its internal priority is one above an allow's */
		x->priority = 2 * r->priority + 1 + (r->action == 0);
		x->userdata = (r->id << 1 | r->action) + 1;
		x->id = r->id;
		x->proto = r->proto;
		x->sp_lo = r->sport_lo;
		x->sp_hi = r->sport_hi;
		x->dp_lo = r->dport_lo;
		x->dp_hi = r->dport_hi;
		if (addr_form) {
			x->lo[0] = addr_word(r->src, r->src_depth);
			x->hi[0] = r->src_depth;
			x->lo[1] = addr_word(r->dst, r->dst_depth);
			x->hi[1] = r->dst_depth;
		} else {
			pfx_interval(f, r->src, r->src_depth, len, &x->lo[0], &x->hi[0]);
			pfx_interval(f, r->dst, r->dst_depth, len, &x->lo[1], &x->hi[1]);
		}
		k++;
	}
	*nm = k;
}

/* Create and build one rte_acl context from m[0..n) (address or class form). */
static int acl_make(const struct pd_stage *st, const struct pol_mrule *m,
		    unsigned n, bool addr_form, uint8_t family,
		    struct rte_acl_ctx **out)
{
	struct rte_acl_param prm;
	struct rte_acl_config cfg;
	struct pol_rule *ar;
	char name[RTE_ACL_NAMESIZE];
	unsigned i;
	int rc;

	snprintf(name, sizeof(name), "pdpol%u_%u", family,
		 __atomic_fetch_add(&pol_seq, 1, __ATOMIC_RELAXED));
	memset(&prm, 0, sizeof(prm));
	prm.name = name;
	prm.socket_id = (int)rte_socket_id();
	prm.rule_size = RTE_ACL_RULE_SZ(F_NUM);
	prm.max_rule_num = n;
	*out = rte_acl_create(&prm);
	ar = calloc(n, sizeof(*ar));
	if (!*out || !ar) {
		free(ar);
		return PD_ERR(ENOMEM, "stage '%s': cannot create the %s ACL for %u "
			      "rules: out of memory", st->name, family_name(family), n);
	}
	for (i = 0; i < n; i++) {
		struct pol_rule *a = &ar[i];

		a->data.category_mask = 1;
		a->data.priority = m[i].priority;
		a->data.userdata = m[i].userdata;
		a->field[F_PROTO].value.u8 = m[i].proto;
		a->field[F_PROTO].mask_range.u8 = m[i].proto ? 0xff : 0;
		a->field[F_SRC].value.u32 = m[i].lo[0];
		a->field[F_SRC].mask_range.u32 = m[i].hi[0];
		a->field[F_DST].value.u32 = m[i].lo[1];
		a->field[F_DST].mask_range.u32 = m[i].hi[1];
		a->field[F_SPORT].value.u16 = m[i].sp_lo;
		a->field[F_SPORT].mask_range.u16 = m[i].sp_hi;
		a->field[F_DPORT].value.u16 = m[i].dp_lo;
		a->field[F_DPORT].mask_range.u16 = m[i].dp_hi;
	}
	rc = rte_acl_add_rules(*out, (const struct rte_acl_rule *)ar, n);
	free(ar);
	if (rc < 0)
		return PD_ERR(-rc, "stage '%s': %u %s rules refused by rte_acl: %s",
			      st->name, n, family_name(family), rte_strerror(-rc));
	memset(&cfg, 0, sizeof(cfg));
	cfg.num_categories = 1;
	cfg.num_fields = F_NUM;
	memcpy(cfg.defs, pol_defs, sizeof(pol_defs));
	if (addr_form)
		cfg.defs[F_SRC].type = cfg.defs[F_DST].type = RTE_ACL_FIELD_TYPE_MASK;
	rc = rte_acl_build(*out, &cfg);
	if (rc < 0)
		return PD_ERR(-rc, "stage '%s': cannot compile the %u %s rules: %s",
			      st->name, n, family_name(family), rte_strerror(-rc));
	return 0;
}

/*
 * Classes, merge, prefix tables, rte_acl: everything a commit builds. One
 * context per family: IPv6 always in class form (its 16-byte addresses
 * would make a 40-byte key); IPv4 in class form when the merge at least
 * halves its rules, else in address form (the key holds the addresses,
 * MASK fields, no rte_lpm lookup). Measured on 8k IPv4 rules where nothing
 * merges (benchmarks/policy_apply.py --shapes random): class form 300-580
 * ms, address form 57 ms: rte_acl builds dense RANGE fields slowly.
 * Caller holds pol_build_lock.
 */
/* The published table's context of family fi if it was built from the same
 * merged rules, else a new one; either way t->own[fi] holds a reference. */
static int acl_get(const struct pd_stage *st, struct pol_table *t, unsigned fi,
		   const struct pol_mrule *m, unsigned n, bool addr_form,
		   struct rte_acl_ctx **ctx)
{
	const struct policy_priv *pr = st->priv;
	struct pol_acl *old = pr->tbl ? pr->tbl->own[fi] : NULL, *a;
	int rc;

	if (old && old->n == n && old->addr_form == addr_form &&
	    memcmp(old->m, m, n * sizeof(*m)) == 0) {
		old->refs++;
		t->own[fi] = old;
		*ctx = old->ctx;
		t->acl_reused++;
		return 0;
	}
	a = calloc(1, sizeof(*a));
	if (!a || !(a->m = malloc((n + 1) * sizeof(*m)))) {
		free(a);
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	}
	memcpy(a->m, m, n * sizeof(*m));
	a->n = n;
	a->addr_form = addr_form;
	a->refs = 1;
	t->own[fi] = a;   /* freed with t, built or not */
	rc = acl_make(st, m, n, addr_form, fi ? 6 : 4, &a->ctx);
	if (rc == 0) {
		*ctx = a->ctx;
		t->acl_built++;
	}
	return rc;
}

/*
 * Classes, merge, prefix tables, rte_acl: everything a commit builds. One
 * context per family: IPv6 always in class form (its 16-byte addresses
 * would make a 40-byte key); IPv4 in class form when the merge at least
 * halves its rules, else in address form (the key holds the addresses,
 * MASK fields, no rte_lpm lookup). Measured on 8k IPv4 rules where nothing
 * merges (benchmarks/policy_apply.py --shapes random): class form 300-580
 * ms, address form 57 ms: rte_acl builds dense RANGE fields slowly.
 * Caller holds pol_build_lock.
 */
static int table_build(const struct pd_stage *st, struct pol_table *t,
		       const struct pd_acl_rule *rules, unsigned n_rules)
{
	struct pol_fam f4 = { 0 }, f6 = { 0 };
	struct pol_mrule *m = NULL;
	uint32_t next4 = 1, next6 = 1;
	unsigned n;
	int rc = 0;

	/* zeroed: merged rule sets are compared byte for byte (acl_get) */
	m = calloc((size_t)n_rules + 1, sizeof(*m));
	if (!m)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	if (t->n6) {
		if ((rc = family_build(st, rules, n_rules, 6, &f6, &next6)) < 0)
			goto out;
		t->root6 = f6.root;
		mrules_of(m, &n, rules, n_rules, 6, &f6, false);
		n = mrule_merge(m, n, 0);
		n = mrule_merge(m, n, 1);
		t->n_acl += n;
		if (f6.n && (rc = lpm_sync(st, t, 6, &f6)) < 0)
			goto out;
		if ((rc = acl_get(st, t, 1, m, n, false, &t->acl6)) < 0)
			goto out;
	}
	if (t->n4) {
		memset(m, 0, ((size_t)n_rules + 1) * sizeof(*m));
		if ((rc = family_build(st, rules, n_rules, 4, &f4, &next4)) < 0)
			goto out;
		t->root4 = f4.root;
		mrules_of(m, &n, rules, n_rules, 4, &f4, false);
		n = mrule_merge(m, n, 0);
		n = mrule_merge(m, n, 1);
		t->v4_addr = 2 * n > t->n4;
		if (t->v4_addr) {
			memset(m, 0, ((size_t)n_rules + 1) * sizeof(*m));
			mrules_of(m, &n, rules, n_rules, 4, &f4, true);
		} else if (f4.n && (rc = lpm_sync(st, t, 4, &f4)) < 0) {
			goto out;
		}
		t->n_acl += n;
		if ((rc = acl_get(st, t, 0, m, n, t->v4_addr, &t->acl4)) < 0)
			goto out;
	}
	t->n_classes = (next4 - 1) + (next6 - 1);
out:
	free(m);
	free(f4.v);
	free(f6.v);
	return rc;
}

/* ---- revalidation: flows the new policy no longer allows ----------------- */

/* The class of one address (network order) in table t. */
static uint32_t addr_class(const struct pol_table *t, uint8_t family,
			   const uint8_t *a)
{
	if (family == 4) {
		uint32_t ip = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) |
			      ((uint32_t)a[2] << 8) | a[3], hop;

		if (t->lpm4 && rte_lpm_lookup(t->lpm4, ip, &hop) == 0)
			return hop;
		return t->root4;
	} else {
		uint32_t hop;

		if (t->lpm6 && rte_lpm6_lookup(t->lpm6, a, &hop) == 0)
			return hop;
		return t->root6;
	}
}

/* The tag a flow gets under table t: its allowing rule, DEFAULT or REVOKED. */
static uint32_t flow_verdict(const struct pol_table *t, const struct pd_flow *f)
{
	struct pol_key k;
	const uint8_t *d = &k.proto;
	uint32_t res = 0;

	const struct rte_acl_ctx *acl = f->family == 4 ? t->acl4 : t->acl6;

	memset(&k, 0, sizeof(k));
	k.proto = f->proto;
	if (f->family == 4 && t->v4_addr) {
		memcpy(&k.cls[0], f->src, 4);
		memcpy(&k.cls[1], f->dst, 4);
	} else {
		k.cls[0] = rte_cpu_to_be_32(addr_class(t, f->family, f->src));
		k.cls[1] = rte_cpu_to_be_32(addr_class(t, f->family, f->dst));
	}
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP ||
	    f->proto == IPPROTO_SCTP) {
		memcpy(&k.ports, &f->sport, 2);
		memcpy((uint8_t *)&k.ports + 2, &f->dport, 2);
	}
	if (acl)
		rte_acl_classify(acl, &d, &res, 1, 1);
	if (res == 0)
		return t->default_allow ? PD_POLICY_TAG_DEFAULT : PD_POLICY_TAG_REVOKED;
	res--;
	return (res & 1) ? res >> 1 : PD_POLICY_TAG_REVOKED;
}

/*
 * After a publish (the grace period is over, so no worker still decides
 * with the old table and no flow is being confirmed by it), walk the flow
 * table on the control thread and re-tag every live flow with what the new
 * table says about its original direction: its allowing rule id, DEFAULT,
 * or REVOKED. The fast path drops the packets of a REVOKED flow, either
 * direction, as "revoked"; a later commit that allows it again re-tags it.
 * The tag changes with a compare-and-swap on the flow word (pd_flow_set_tag),
 * so a worker updating the flow's state meanwhile loses nothing.
 * Measured: 0.15-0.21 microseconds per flow (65,534 flows: 10-14 ms, the
 * 10k-rule mesh policy, source traffic running).
 */
static int pol_revalidate(struct pd_stage *st, struct pd_pipeline *p,
			  const struct pol_table *t)
{
	struct policy_priv *pr = st->priv;
	const struct pd_ct *c;
	uint64_t seen = 0, cut = 0;
	uint32_t i;

	RTE_SET_USED(p);
	pr->revoked = pr->revalidated = 0;
	if (!pr->ct || !pr->ct->priv)
		return 0;
	c = pr->ct->priv;
	for (i = 0; c->flows && i < c->n_slots; i++) {
		struct pd_flow *f = &c->flows[i];
		union pd_flow_word w;
		uint32_t tag;

		w.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
		if (!pd_ct_live(w.state) || (w.flags & PD_FLOW_BUSY))
			continue;
		seen++;
		tag = flow_verdict(t, f);
		if (tag == PD_POLICY_TAG_REVOKED)
			cut++;
		if (tag != w.tag)
			pd_flow_set_tag(f, w.gen, tag);
	}
	pr->revalidated = seen;
	pr->revoked = cut;
	return 0;
}

int pd_policy_commit(struct pd_pipeline *p, int stage,
		     const struct pd_acl_rule *rules, unsigned n_rules,
		     unsigned n_ids, int default_allow)
{
	struct pd_stage *st = pd_stage_get(p, stage, "policy");
	struct policy_priv *pr;
	struct pol_table *t;
	uint64_t t0, t1, t2, t3;
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
	t->slot[0] = t->slot[1] = -1;
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
	/* held to the end: the spare prefix tables are only spare until the publish */
	pthread_mutex_lock(&pol_build_lock);
	rc = table_build(st, t, rules, n_rules);
	if (rc < 0) {
		pthread_mutex_unlock(&pol_build_lock);
		goto fail;
	}
	t1 = now_ns();
	pthread_mutex_lock(&pr->lock);
	t->generation = ++pr->generation;
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	t2 = now_ns();
	rc = pol_revalidate(st, p, t);
	t3 = now_ns();
	pr->build_ns = t1 - t0;
	pr->publish_ns = t2 - t1;
	pr->revalidate_ns = t3 - t2;
	pthread_mutex_unlock(&pr->lock);
	pthread_mutex_unlock(&pol_build_lock);
	return rc < 0 ? rc : 0;
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
	out->revalidate_ns = pr->revalidate_ns;
	out->flows_revalidated = pr->revalidated;
	out->flows_revoked = pr->revoked;
	if (t) {
		out->acl_built = t->acl_built;
		out->acl_reused = t->acl_reused;
		out->n_acl = t->n_acl;
		out->n_classes = t->n_classes;
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
	unsigned i;

	table_free(pr->tbl);
	pr->tbl = NULL;
	rte_ring_free(pr->deny_ring);
	pr->deny_ring = NULL;
	for (i = 0; i < 4; i++)
		lpm_release(&pr->lpm[i / 2][i % 2]);
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

/* A new packet the policy lets through: confirm its flow, then pass it.
 * *fresh: a flow was confirmed in this burst (see pol_stateful_late). */
static inline void pol_pass_new(struct pd_stage *st, struct pd_worker *w,
				struct pd_stage *ct, struct rte_mbuf *mb,
				uint32_t tag, bool *fresh)
{
	if (ct) {
		int rc = pd_conntrack_confirm(ct, w, mb, tag);

		if (rc < 0) {
			pd_drop(w, st, rc == -ENOSPC ? POL_FLOW_FULL : POL_CT_ERROR,
				mb);
			return;
		}
		*fresh = true;
	}
	pd_emit(w, st, PD_POLICY_NEXT, mb);
}

/*
 * Before a deny: a flow opened earlier in this very burst lets it pass (a
 * reply in the same burst as its connection's first packet). Only worth a
 * second conntrack lookup when this burst confirmed a flow: without that
 * test every denied packet paid it (benchmarks/firewall.py, 10k rules, half
 * the flows denied: 177-181 cycles per packet before, 142-143 after). A
 * reply handled by another worker needs
 * no recheck: the first packet was confirmed before it was sent, so its
 * reply finds the flow in the conntrack stage.
 */
static inline bool pol_stateful_late(struct pd_stage *st, struct pd_worker *w,
				     struct pd_stage *ct, struct rte_mbuf *mb,
				     bool fresh)
{
	if (!fresh || !ct || !pd_conntrack_recheck ||
	    pd_conntrack_recheck(ct, w, mb) < 0)
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
			       uint32_t res, bool *fresh)
{
	uint32_t id;

	if (res == 0) {
		pd_trace_hit(w, st, mb, PD_TRACE_RULE, UINT32_MAX);
		if (default_allow) {
			w->ctr[st->ctr_extra + POL_X_DEFAULT_ALLOW]++;
			pol_pass_new(st, w, ct, mb, PD_POLICY_TAG_DEFAULT, fresh);
		} else if (!pol_stateful_late(st, w, ct, mb, *fresh)) {
			POL_DENY_LOG(st, mb, POL_DEFAULT_DENY, UINT32_MAX);
			pd_drop(w, st, POL_DEFAULT_DENY, mb);
		}
		return;
	}
	res--;
	id = res >> 1;
	pd_trace_hit(w, st, mb, PD_TRACE_RULE, id);
	if (!(res & 1) && pol_stateful_late(st, w, ct, mb, *fresh))
		return;  /* not this rule's hit: its flow was allowed */
	row[2 * id]++;
	row[2 * id + 1] += rte_pktmbuf_pkt_len(mb);
	if (res & 1) {
		pol_pass_new(st, w, ct, mb, id, fresh);
	} else {
		POL_DENY_LOG(st, mb, POL_POLICY_DENY, id);
		pd_drop(w, st, POL_POLICY_DENY, mb);
	}
}

/*
 * Per burst: the addresses of the packets without a flow go through one
 * bulk rte_lpm (IPv4) and one bulk rte_lpm6 (IPv6) lookup for their
 * classes, then all of them, both families, through one rte_acl_classify.
 * Measured (benchmarks/firewall.py, on-CPU, 10k mesh rules): parse ->
 * policy -> forward 127-129 cycles per packet against 61 for parse ->
 * forward; behind conntrack (known flows skip both lookups) the firewall
 * costs 140-149.
 */
static void policy_process(struct pd_stage *st, struct pd_worker *w,
			   struct rte_mbuf **pkts, uint16_t n)
{
	struct policy_priv *pr = st->priv;
	const struct pol_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	struct pd_stage *ct = pr->ct;
	struct rte_mbuf *v[PD_BURST * 2];
	struct pol_key k[PD_BURST * 2];
	const uint8_t *d[PD_BURST * 2];
	uint32_t r[PD_BURST * 2];
	uint32_t ip4[PD_BURST * 4], hop4[PD_BURST * 4];
	uint8_t ip6[PD_BURST * 4][RTE_LPM6_IPV6_ADDR_SIZE];
	int32_t hop6[PD_BURST * 4];
	uint16_t x4[PD_BURST * 2], x6[PD_BURST * 2];
	uint64_t *row = NULL;
	int def = 0;
	bool fresh = false;
	uint16_t i, nk = 0, n4 = 0, n6 = 0;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *mb = pkts[i];
		const struct pd_meta *m = pd_meta(mb);
		const uint8_t *l3;
		struct pol_key *kk;

		if (m->l3 != PD_L3_IPV4 && m->l3 != PD_L3_IPV6) {
			pd_emit(w, st, PD_POLICY_OTHER, mb);
			continue;
		}
		if (ct && m->aux != 0) {
			/* a flow conntrack knows: allowed when it began, unless a
			 * later commit revoked it (pol_revalidate) */
			const struct pd_flow *f = pd_conntrack_flow(ct, mb);

			pd_trace_hit(w, st, mb, PD_TRACE_FLOW, m->aux - 1);
			if (unlikely(__atomic_load_n(&f->w.tag, __ATOMIC_RELAXED) ==
				     PD_POLICY_TAG_REVOKED)) {
				pd_drop(w, st, POL_REVOKED, mb);
				continue;
			}
			w->ctr[st->ctr_extra + POL_X_STATEFUL]++;
			pd_emit(w, st, PD_POLICY_NEXT, mb);
			continue;
		}
		l3 = rte_pktmbuf_mtod_offset(mb, const uint8_t *, m->l3_off);
		kk = &k[nk];
		kk->proto = m->l4_proto;
		memset(kk->pad, 0, sizeof(kk->pad));
		kk->ports = key_ports(mb, m);
		if (m->l3 == PD_L3_IPV4) {
			uint32_t a[2];

			memcpy(a, l3 + 12, 8);
			ip4[2 * n4] = rte_be_to_cpu_32(a[0]);
			ip4[2 * n4 + 1] = rte_be_to_cpu_32(a[1]);
			x4[n4++] = nk;
		} else {
			memcpy(ip6[2 * n6], l3 + 8, 32);
			x6[n6++] = nk;
		}
		v[nk++] = mb;
	}
	if (nk == 0)
		return;
	if (t) {
		def = t->default_allow;
		if (t->ctr)
			row = t->ctr + (size_t)w->slot * t->stride;
	}
	if (n4) {
		if (t && t->acl4) {
			if (!t->v4_addr && t->lpm4)
				rte_lpm_lookup_bulk(t->lpm4, ip4, hop4, 2 * n4);
			for (i = 0; i < n4; i++) {
				struct pol_key *kk = &k[x4[i]];
				uint32_t s = ip4[2 * i], dd = ip4[2 * i + 1];

				if (!t->v4_addr) {
					s = t->lpm4 ? hop4[2 * i] : 0;
					dd = t->lpm4 ? hop4[2 * i + 1] : 0;
					s = (s & RTE_LPM_LOOKUP_SUCCESS) ?
						s & 0x00ffffff : t->root4;
					dd = (dd & RTE_LPM_LOOKUP_SUCCESS) ?
						dd & 0x00ffffff : t->root4;
				}
				kk->cls[0] = rte_cpu_to_be_32(s);
				kk->cls[1] = rte_cpu_to_be_32(dd);
				d[i] = &kk->proto;
			}
			rte_acl_classify(t->acl4, d, r, n4, 1);
		} else {
			memset(r, 0, n4 * sizeof(r[0]));
		}
		for (i = 0; i < n4; i++)
			pol_verdict(st, w, ct, row, def, v[x4[i]], r[i], &fresh);
	}
	if (n6) {
		if (t && t->acl6) {
			if (t->lpm6)
				rte_lpm6_lookup_bulk_func(t->lpm6, ip6, hop6, 2 * n6);
			for (i = 0; i < n6; i++) {
				struct pol_key *kk = &k[x6[i]];
				int32_t s = t->lpm6 ? hop6[2 * i] : -1;
				int32_t dd = t->lpm6 ? hop6[2 * i + 1] : -1;

				kk->cls[0] = rte_cpu_to_be_32(s >= 0 ? (uint32_t)s : t->root6);
				kk->cls[1] = rte_cpu_to_be_32(dd >= 0 ? (uint32_t)dd : t->root6);
				d[i] = &kk->proto;
			}
			rte_acl_classify(t->acl6, d, r, n6, 1);
		} else {
			memset(r, 0, n6 * sizeof(r[0]));
		}
		for (i = 0; i < n6; i++)
			pol_verdict(st, w, ct, row, def, v[x6[i]], r[i], &fresh);
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
