/* SPDX-License-Identifier: BSD-3-Clause
 * lb.c - services, backends, Maglev / smooth WRR / least-connections, NAT.
 *
 * See lb.h for the semantics. Layout:
 * - The pool (priv->pool[id]) holds what a flow needs to be translated for
 *   its whole life: service VIP and port, backend address and port, SNAT
 *   address. Entries are immutable while in use; the live count (conns, a
 *   gauge least-connections reads and conntrack's release hook lowers from
 *   whatever thread expires the flow) sits beside them, updated atomically.
 * - Traffic counters (packets, bytes, flows assigned) are per worker: row
 *   `slot` of priv->wc, one struct lb_wctr per backend id, plain adds, no
 *   atomics; Python sums the rows (pd_lb_counters: a numpy view).
 * - The table (RCU-published, rebuilt whole by every commit as the policy
 *   stage does) holds the services: an rte_hash on (family, proto, port,
 *   VIP) -> service, and per service the backend ids, weights, states and,
 *   for Maglev, the lookup table; for WRR a row of current weights per
 *   worker (each worker runs its own smooth sequence: no shared writes).
 * - Only a flow's first packet looks a service up; every later packet reads
 *   its backend id from the flow (pd_flow.lb, in the flow's hot cache line)
 *   and the pool entry (cache-resident).
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

#include "conntrack.h"
#include "lb.h"

#define X_LB_DROPS(_) \
	_(NO_BACKEND, "no-backend") \
	_(NO_FLOW, "no-flow") \
	_(NAT_FULL, "nat-table-full") \
	_(NAT_CONFLICT, "nat-conflict") \
	_(SNAT_EXHAUSTED, "snat-ports-exhausted")
enum {
#define _E(id, s) LB_DROP_##id,
	X_LB_DROPS(_E)
#undef _E
};
static const char *const lb_drops[] = {
#define _S(id, s) s,
	X_LB_DROPS(_S)
#undef _S
	NULL,
};
enum { LB_X_NEW = 0, LB_X_DNAT, LB_X_UNNAT, LB_X_PASS };
static const char *const lb_extra[] = { "new_flows", "dnat", "reverse_nat",
					"passed", NULL };
static const char *const lb_edges[] = { "next", NULL };

#define LB_GONE 0x80000000u      /* pd_flow.lb: the flow left the table */
#define LB_SNAT_TRIES 16

/* ---- the pool: what flows keep ----------------------------------------- */
struct lb_pool_ent {
	uint8_t family;
	uint8_t proto;
	uint8_t snat;
	uint8_t in_use;
	uint16_t port;          /* backend, network order */
	uint16_t vport;         /* service, network order */
	uint8_t addr[16];
	uint8_t vip[16];
	uint8_t snat_addr[16];
	uint32_t mark;          /* commit number that last referenced it */
	uint16_t dnat_ip;       /* checksum change vip -> addr, folded (nat_dnat) */
	uint16_t dnat_l4;       /* the same and vport -> port, folded */
};

struct lb_count {
	int32_t conns;          /* live flows (may dip below 0 for an instant) */
	uint32_t pad;
};

/* one worker's counters of one backend id (pd_lb_counters) */
struct lb_wctr {
	uint64_t packets;       /* client -> backend (DNAT) and replies (un-NAT) */
	uint64_t bytes;
	uint64_t assigned;      /* flows given to the backend */
	uint64_t pad;
};

/* ---- the published table ------------------------------------------------ */
struct lb_key {
	uint8_t family;
	uint8_t proto;
	uint16_t port;          /* network order */
	uint8_t vip[16];
	uint8_t pad[12];
};

struct lb_svc {
	uint8_t algo;
	uint8_t snat;
	uint16_t vport;         /* network order */
	uint32_t n;             /* backends */
	uint32_t n_elig;        /* weight > 0 and up */
	uint32_t m;             /* Maglev table size */
	uint32_t *ids;          /* pool ids [n] */
	uint32_t *weight;       /* [n] */
	uint8_t *state;         /* [n] */
	uint32_t *elig;         /* indexes into ids of the eligible ones [n_elig] */
	int32_t *maglev;        /* [m]: pool id, -1 none */
	int64_t *wrr;           /* rows x (n_elig + 1): current weights, rotor */
	uint32_t wrr_stride;
	int64_t total;          /* sum of eligible weights */
};

struct lb_table {
	struct rte_hash *h;     /* lb_key -> service index */
	uint32_t n;
	uint32_t rows;
	struct lb_svc *svcs;
	uint64_t generation;
};

struct lb_priv {
	struct lb_table *tbl;   /* RCU-published */
	struct pd_stage *ct;
	int ct_stage;
	struct lb_pool_ent *pool;
	struct lb_count *cnt;
	struct lb_wctr *wc;     /* [wc_rows][PD_LB_MAX_BACKENDS], row = worker slot */
	uint32_t wc_rows;
	uint32_t commits;
	uint32_t pool_hi;       /* pool ids in use are below this */
	pthread_mutex_t lock;   /* control path */
};

static unsigned lb_seq;

/* ---- hashing ------------------------------------------------------------ */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* The Maglev bucket hash of a flow (its original direction). The tuple is
 * copied to an aligned buffer: rte_hash_crc reads 8 bytes at a time. */
static inline uint32_t lb_flow_hash(uint8_t proto, const uint8_t *src,
				    const uint8_t *dst, uint16_t sport,
				    uint16_t dport)
{
	uint64_t t[5];

	memcpy(&t[0], src, 16);
	memcpy(&t[2], dst, 16);
	t[4] = (uint64_t)proto << 32 | (uint32_t)sport << 16 | dport;
	/* CRC is linear: mix it, or neighbouring ports land in regular strides */
	return (uint32_t)(mix64(rte_hash_crc(t, sizeof(t), 0)) >> 32);
}

/* The permutation key of a backend: stable whatever else the service has. */
static uint64_t lb_backend_key(const uint8_t *addr, uint16_t port)
{
	uint64_t a[2];

	memcpy(a, addr, 16);
	return mix64(a[0] ^ mix64(a[1] ^ ((uint64_t)port << 48 | 0x9e37)));
}

/* ---- Maglev (Eisenbud et al., NSDI 2016), weighted ------------------------ */

/* The fill loop, on a table of `T` (uint16_t when the backend indexes fit:
 * half the bytes, so a 655373-entry table stays in L2 far longer). */
#define MAGLEV_FILL(T, EMPTY) do {					\
	T *tab = (T *)scratch;						\
	for (i = 0; i < m; i++)						\
		tab[i] = (EMPTY);					\
	for (;;) {							\
		for (i = 0; i < n; i++) {				\
			if (weights[i] == 0)				\
				continue;				\
			credit[i] += weights[i];			\
			while (credit[i] >= wmax) {			\
				uint32_t c = next[i];			\
									\
				credit[i] -= wmax;			\
				while (tab[c] != (EMPTY)) {		\
					c += skip[i];			\
					if (c >= m)			\
						c -= m;			\
				}					\
				tab[c] = (T)i;				\
				c += skip[i];				\
				next[i] = c >= m ? c - m : c;		\
				if (++filled == m)			\
					goto filled_##T;		\
			}						\
		}							\
	}								\
filled_##T:								\
	for (i = 0; i < m; i++)						\
		table[i] = tab[i] == (EMPTY) ? -1 : (int32_t)tab[i];	\
} while (0)

/*
 * Every backend walks its own permutation of the table (offset, skip from
 * its key) and takes the next free entry on its turn. Weighted: on each
 * round a backend earns its weight in credit and takes one turn per
 * `wmax` credit, so the entries it ends with are proportional to its weight.
 * Returns the CPU time of the build (this thread's, in ns: on a shared
 * machine wall time also counts other processes' time slices).
 * Measured (benchmarks/lb_bench.py): N = 1000, M = 65537 about 1.3 ms.
 */
int64_t pd_maglev_build(const uint64_t *keys, const uint32_t *weights,
			unsigned n, uint32_t m, int32_t *table)
{
	struct timespec t0, t1;
	uint32_t *next = NULL, *skip = NULL, wmax = 0, filled = 0, i;
	uint64_t *credit = NULL;
	void *scratch = NULL;
	bool small = n < UINT16_MAX;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	if (m < 2 || !table)
		return PD_ERR(EINVAL, "maglev: table size %u (a prime >= 2)", m);
	for (i = 0; i < n; i++)
		wmax = RTE_MAX(wmax, weights[i]);
	if (n == 0 || wmax == 0) {
		for (i = 0; i < m; i++)
			table[i] = -1;
		goto done;
	}
	next = malloc(n * sizeof(*next));
	skip = malloc(n * sizeof(*skip));
	credit = calloc(n, sizeof(*credit));
	scratch = small ? malloc((size_t)m * sizeof(uint16_t)) : NULL;
	if (!next || !skip || !credit || (small && !scratch)) {
		free(next);
		free(skip);
		free(credit);
		free(scratch);
		return PD_ERR(ENOMEM, "maglev: out of memory for %u backends", n);
	}
	if (!small)
		scratch = table;
	for (i = 0; i < n; i++) {
		uint64_t h = mix64(keys[i]);

		next[i] = (uint32_t)(h % m);                        /* offset */
		skip[i] = (uint32_t)(mix64(h ^ 0x5bd1e995ull) % (m - 1)) + 1;
	}
	if (small)
		MAGLEV_FILL(uint16_t, UINT16_MAX);
	else
		MAGLEV_FILL(int32_t, -1);
	if (small)
		free(scratch);
done:
	free(next);
	free(skip);
	free(credit);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	return (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 +
	       (t1.tv_nsec - t0.tv_nsec);
}

static bool is_prime(uint32_t m)
{
	uint32_t d;

	if (m < 2)
		return false;
	for (d = 2; (uint64_t)d * d <= m; d++)
		if (m % d == 0)
			return false;
	return true;
}

/* ---- control: validation ----------------------------------------------- */
static void svc_key(const struct pd_lb_service *s, struct lb_key *k)
{
	memset(k, 0, sizeof(*k));
	k->family = s->family;
	k->proto = s->proto;
	k->port = rte_cpu_to_be_16(s->port);
	memcpy(k->vip, s->vip, s->family == 4 ? 4 : 16);
}

static int svc_check(const struct pd_stage *st, const struct pd_lb_service *s,
		     unsigned i, unsigned n_bks)
{
	if (s->family != 4 && s->family != 6)
		return PD_ERR(EINVAL, "stage '%s': service %u: family: %u is neither "
			      "4 nor 6", st->name, i, s->family);
	if (s->proto != IPPROTO_TCP && s->proto != IPPROTO_UDP)
		return PD_ERR(EINVAL, "stage '%s': service %u: proto: %u is neither "
			      "6 (tcp) nor 17 (udp)", st->name, i, s->proto);
	if (s->port == 0)
		return PD_ERR(EINVAL, "stage '%s': service %u: port: 0", st->name, i);
	if (s->algo > PD_LB_LEASTCONN)
		return PD_ERR(EINVAL, "stage '%s': service %u: algo: %u unknown",
			      st->name, i, s->algo);
	if (s->snat > 1)
		return PD_ERR(EINVAL, "stage '%s': service %u: snat: %u is neither "
			      "0 nor 1", st->name, i, s->snat);
	if (s->algo == PD_LB_MAGLEV && s->table_size &&
	    (s->table_size > PD_LB_MAX_TABLE || !is_prime(s->table_size)))
		return PD_ERR(EINVAL, "stage '%s': service %u: table_size: %u is not "
			      "a prime up to %u", st->name, i, s->table_size,
			      PD_LB_MAX_TABLE);
	if ((uint64_t)s->first + s->n > n_bks)
		return PD_ERR(EINVAL, "stage '%s': service %u: backends %u..%u past "
			      "the %u given", st->name, i, s->first,
			      s->first + s->n, n_bks);
	return 0;
}

static int bk_check(const struct pd_stage *st, const struct pd_lb_backend *b,
		    unsigned i)
{
	if (b->weight > PD_LB_MAX_WEIGHT)
		return PD_ERR(EINVAL, "stage '%s': backend %u: weight: %u is above "
			      "%u", st->name, i, b->weight, PD_LB_MAX_WEIGHT);
	if (b->state > PD_LB_DOWN)
		return PD_ERR(EINVAL, "stage '%s': backend %u: state: %u unknown",
			      st->name, i, b->state);
	if (b->port == 0)
		return PD_ERR(EINVAL, "stage '%s': backend %u: port: 0", st->name, i);
	return 0;
}

/* The pool id of backend `b` of service `s`, or -1 if it has none yet. */
/* Replace `len` bytes at `field` with `val`, folding the change into the
 * checksum at `ck` (RFC 1624: HC' = ~(~HC + ~m + m')). */
static inline uint32_t cks_diff(uint32_t acc, const uint8_t *old,
				const uint8_t *new_v, unsigned len)
{
	unsigned i;

	for (i = 0; i < len; i += 2)
		acc += (uint16_t)~pd_rd16(old + i) + pd_rd16(new_v + i);
	return acc;
}

static inline void cks_apply(uint8_t *ck, uint32_t acc, bool udp)
{
	uint16_t r;

	if (udp && pd_rd16(ck) == 0)
		return;  /* IPv4 UDP without a checksum stays without */
	r = (uint16_t)~pd_cksum_fold((uint32_t)(uint16_t)~pd_rd16(ck) + acc);
	if (udp && r == 0)
		r = 0xffff;
	ck[0] = (uint8_t)(r >> 8);
	ck[1] = (uint8_t)r;
}

static int32_t pool_find(const struct lb_priv *pr, const struct pd_lb_service *s,
			 const struct pd_lb_backend *b)
{
	uint16_t port = rte_cpu_to_be_16(b->port);
	uint16_t vport = rte_cpu_to_be_16(s->port);
	unsigned alen = s->family == 4 ? 4 : 16;
	uint32_t i;

	for (i = 0; i < pr->pool_hi; i++) {
		const struct lb_pool_ent *e = &pr->pool[i];

		if (!e->in_use || e->family != s->family || e->proto != s->proto ||
		    e->port != port || e->vport != vport || e->snat != s->snat ||
		    memcmp(e->addr, b->addr, alen) || memcmp(e->vip, s->vip, alen) ||
		    (s->snat && memcmp(e->snat_addr, s->snat_addr, alen)))
			continue;
		return (int32_t)i;
	}
	return -1;
}

static int32_t pool_alloc(struct lb_priv *pr, const struct pd_lb_service *s,
			  const struct pd_lb_backend *b)
{
	unsigned alen = s->family == 4 ? 4 : 16;
	uint32_t i, r, acc;

	for (i = 0; i < PD_LB_MAX_BACKENDS; i++) {
		struct lb_pool_ent *e = &pr->pool[i];

		if (e->in_use || __atomic_load_n(&pr->cnt[i].conns, __ATOMIC_ACQUIRE))
			continue;
		memset(e, 0, sizeof(*e));
		e->family = s->family;
		e->proto = s->proto;
		e->snat = s->snat;
		e->port = rte_cpu_to_be_16(b->port);
		e->vport = rte_cpu_to_be_16(s->port);
		memcpy(e->addr, b->addr, alen);
		memcpy(e->vip, s->vip, alen);
		if (s->snat)
			memcpy(e->snat_addr, s->snat_addr, alen);
		/* a fresh id: its counters start at 0 (no worker writes them:
		 * no flow and no published table has the id) */
		for (r = 0; r < pr->wc_rows; r++)
			memset(&pr->wc[(size_t)r * PD_LB_MAX_BACKENDS + i], 0,
			       sizeof(*pr->wc));
		acc = cks_diff(0, e->vip, e->addr, alen);
		e->dnat_ip = pd_cksum_fold(acc);
		e->dnat_l4 = pd_cksum_fold(cks_diff(acc, (const uint8_t *)&e->vport,
					       (const uint8_t *)&e->port, 2));
		e->in_use = 1;
		pr->pool_hi = RTE_MAX(pr->pool_hi, i + 1);
		return (int32_t)i;
	}
	return -1;
}

/* ---- control: building a table ----------------------------------------- */
static void svc_free(struct lb_svc *s)
{
	free(s->ids);
	free(s->weight);
	free(s->state);
	free(s->elig);
	rte_free(s->maglev);
	rte_free(s->wrr);
}

static void table_free(void *arg)
{
	struct lb_table *t = arg;
	uint32_t i;

	if (!t)
		return;
	for (i = 0; t->svcs && i < t->n; i++)
		svc_free(&t->svcs[i]);
	free(t->svcs);
	rte_hash_free(t->h);
	rte_free(t);
}

/* Eligible backends and their Maglev table; `ids` already set. */
static int svc_build(const struct pd_stage *st, struct lb_svc *o,
		     const struct pd_lb_service *s,
		     const struct pd_lb_backend *bks, uint32_t rows)
{
	const struct pd_lb_backend *b = &bks[s->first];
	uint64_t *keys = NULL;
	uint32_t *w = NULL, i;
	int rc = 0;

	o->algo = s->algo;
	o->snat = s->snat;
	o->vport = rte_cpu_to_be_16(s->port);
	o->n = s->n;
	o->weight = calloc(s->n + 1, sizeof(*o->weight));
	o->state = calloc(s->n + 1, 1);
	o->elig = calloc(s->n + 1, sizeof(*o->elig));
	if (!o->weight || !o->state || !o->elig)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	for (i = 0; i < s->n; i++) {
		o->weight[i] = b[i].weight;
		o->state[i] = b[i].state;
		if (b[i].weight > 0 && b[i].state == PD_LB_UP) {
			o->elig[o->n_elig++] = i;
			o->total += b[i].weight;
		}
	}
	if (s->algo == PD_LB_MAGLEV) {
		o->m = s->table_size ? s->table_size : PD_LB_DEFAULT_TABLE;
		o->maglev = rte_malloc("pd_lb_maglev", (size_t)o->m * sizeof(int32_t),
				       RTE_CACHE_LINE_SIZE);
		keys = malloc((s->n + 1) * sizeof(*keys));
		w = calloc(s->n + 1, sizeof(*w));
		if (!o->maglev || !keys || !w) {
			rc = PD_ERR(ENOMEM, "stage '%s': out of memory for a Maglev "
				    "table of %u", st->name, o->m);
			goto out;
		}
		for (i = 0; i < s->n; i++) {
			keys[i] = lb_backend_key(b[i].addr, b[i].port);
			w[i] = (b[i].state == PD_LB_UP) ? b[i].weight : 0;
		}
		if (pd_maglev_build(keys, w, s->n, o->m, o->maglev) < 0) {
			rc = -ENOMEM;
			goto out;
		}
		for (i = 0; i < o->m; i++)   /* backend index -> pool id */
			if (o->maglev[i] >= 0)
				o->maglev[i] = (int32_t)o->ids[o->maglev[i]];
	} else {
		o->wrr_stride = RTE_ALIGN_CEIL(o->n_elig + 1, 8);
		o->wrr = rte_zmalloc("pd_lb_wrr", (size_t)rows * o->wrr_stride *
				     sizeof(int64_t), RTE_CACHE_LINE_SIZE);
		if (!o->wrr) {
			rc = PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
			goto out;
		}
	}
out:
	free(keys);
	free(w);
	return rc;
}

/*
 * Build a complete table for svcs/bks. With `assign` the backends get pool
 * ids (new ones allocated, bks[i].id filled); without, ids not yet in the
 * pool get distinct negative placeholders (previews).
 */
static int table_build(struct pd_stage *st, struct lb_priv *pr, uint32_t rows,
		       const struct pd_lb_service *svcs, unsigned n_svcs,
		       struct pd_lb_backend *bks, unsigned n_bks, bool assign,
		       struct lb_table **out)
{
	struct rte_hash_parameters hp;
	char name[RTE_HASH_NAMESIZE];
	struct lb_table *t;
	unsigned i, j;
	int rc;

	if (n_svcs > PD_LB_MAX_SERVICES)
		return PD_ERR(EINVAL, "stage '%s': %u services (at most %u)", st->name,
			      n_svcs, PD_LB_MAX_SERVICES);
	if (n_bks > PD_LB_MAX_BACKENDS)
		return PD_ERR(EINVAL, "stage '%s': %u backends (at most %u)", st->name,
			      n_bks, PD_LB_MAX_BACKENDS);
	if ((n_svcs && !svcs) || (n_bks && !bks))
		return PD_ERR(EINVAL, "stage '%s': no array", st->name);
	for (i = 0; i < n_svcs; i++)
		if ((rc = svc_check(st, &svcs[i], i, n_bks)) < 0)
			return rc;
	for (i = 0; i < n_bks; i++)
		if ((rc = bk_check(st, &bks[i], i)) < 0)
			return rc;
	t = rte_zmalloc("pd_lb", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (!t)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	t->rows = rows;
	t->svcs = calloc(n_svcs + 1, sizeof(*t->svcs));
	if (!t->svcs) {
		rc = PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
		goto fail;
	}
	snprintf(name, sizeof(name), "pdlb%u",
		 __atomic_fetch_add(&lb_seq, 1, __ATOMIC_RELAXED));
	memset(&hp, 0, sizeof(hp));
	hp.name = name;
	hp.entries = RTE_MAX(n_svcs * 2, 16u);
	hp.key_len = sizeof(struct lb_key);
	hp.hash_func = rte_hash_crc;
	hp.socket_id = (int)rte_socket_id();
	t->h = rte_hash_create(&hp);
	if (!t->h) {
		rc = PD_ERR(ENOMEM, "stage '%s': cannot create the service hash: %s",
			    st->name, rte_strerror(rte_errno));
		goto fail;
	}
	for (i = 0; i < n_svcs; i++) {
		const struct pd_lb_service *s = &svcs[i];
		struct lb_svc *o = &t->svcs[i];
		struct lb_key k;

		svc_key(s, &k);
		if (rte_hash_lookup(t->h, &k) >= 0) {
			rc = PD_ERR(EEXIST, "stage '%s': service %u: the same VIP, port "
				    "and proto as an earlier one", st->name, i);
			goto fail;
		}
		t->n = i + 1;
		o->ids = calloc(s->n + 1, sizeof(*o->ids));
		if (!o->ids) {
			rc = PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
			goto fail;
		}
		for (j = 0; j < s->n; j++) {
			struct pd_lb_backend *b = &bks[s->first + j];
			int32_t id = pool_find(pr, s, b);

			if (id < 0 && assign)
				id = pool_alloc(pr, s, b);
			if (id < 0 && assign) {
				rc = PD_ERR(ENOSPC, "stage '%s': no free backend id "
					    "(%u in use)", st->name, PD_LB_MAX_BACKENDS);
				goto fail;
			}
			if (assign) {
				pr->pool[id].mark = pr->commits + 1;
				b->id = id;
			}
			/* a preview's new backend: an id no flow has */
			o->ids[j] = id >= 0 ? (uint32_t)id :
				    PD_LB_MAX_BACKENDS + s->first + j;
		}
		if ((rc = svc_build(st, o, s, bks, rows)) < 0)
			goto fail;
		rc = rte_hash_add_key_data(t->h, &k, (void *)(uintptr_t)i);
		if (rc < 0) {
			rc = PD_ERR(-rc, "stage '%s': service %u: cannot add: %s",
				    st->name, i, rte_strerror(-rc));
			goto fail;
		}
	}
	t->n = n_svcs;
	*out = t;
	return 0;
fail:
	table_free(t);
	return rc;
}

static void lb_release(void *arg, const struct pd_flow *f);

static struct pd_stage *lb_get(struct pd_pipeline *p, int stage)
{
	return pd_stage_get(p, stage, "lb");
}

int pd_lb_config(struct pd_pipeline *p, int stage, int conntrack_stage)
{
	struct pd_stage *st = lb_get(p, stage), *ct;
	struct lb_priv *pr;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (p->built)
		return PD_ERR(EBUSY, "stage '%s': link conntrack before the pipeline "
			      "is built", st->name);
	if (conntrack_stage < 0 || conntrack_stage >= stage)
		return PD_ERR(EINVAL, "stage '%s': conntrack stage %d must come "
			      "before it", st->name, conntrack_stage);
	ct = pd_conntrack_find(p, conntrack_stage);
	if (!ct)
		return -EINVAL;
	if (!((struct pd_ct *)ct->priv)->h)
		return PD_ERR(EINVAL, "stage '%s': conntrack stage '%s' is not "
			      "configured", st->name, ct->name);
	pr->ct = ct;
	pr->ct_stage = conntrack_stage;
	pd_conntrack_set_release(ct, lb_release, pr);
	return 0;
}

/* conntrack's release hook: a flow left the table (expired or evicted) */
static void lb_release(void *arg, const struct pd_flow *f)
{
	struct lb_priv *pr = arg;
	uint32_t old = __atomic_fetch_or((uint32_t *)&f->lb, LB_GONE,
					 __ATOMIC_ACQ_REL);

	if (old && !(old & LB_GONE) && old <= PD_LB_MAX_BACKENDS)
		__atomic_fetch_sub(&pr->cnt[old - 1].conns, 1, __ATOMIC_RELEASE);
}

static uint32_t rows_of(const struct pd_pipeline *p)
{
	return p->built ? p->n_workers : rte_lcore_count();
}

int pd_lb_commit(struct pd_pipeline *p, int stage,
		 const struct pd_lb_service *svcs, unsigned n_svcs,
		 struct pd_lb_backend *bks, unsigned n_bks)
{
	struct pd_stage *st = lb_get(p, stage);
	struct lb_priv *pr;
	struct lb_table *t = NULL;
	uint32_t i;
	int rc;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (!pr->ct)
		return PD_ERR(EINVAL, "stage '%s': no conntrack stage linked "
			      "(pd_lb_config)", st->name);
	pthread_mutex_lock(&pr->lock);
	rc = table_build(st, pr, rows_of(p), svcs, n_svcs, bks, n_bks, true, &t);
	if (rc < 0)
		goto out;
	pr->commits++;
	t->generation = pr->commits;
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	/* after the grace period no worker picks an id the new table lacks:
	 * those no flow uses any more are free */
	for (i = 0; i < pr->pool_hi; i++) {
		struct lb_pool_ent *e = &pr->pool[i];

		if (e->in_use && e->mark != pr->commits &&
		    __atomic_load_n(&pr->cnt[i].conns, __ATOMIC_ACQUIRE) <= 0)
			e->in_use = 0;
	}
	rc = 0;
out:
	pthread_mutex_unlock(&pr->lock);
	return rc;
}

/* The backend a new flow of `o` with bucket hash `h` would get in a
 * Maglev service, -1 none. */
static inline int32_t maglev_pick(const struct lb_svc *o, uint32_t h)
{
	return o->m ? o->maglev[h % o->m] : -1;
}

static bool svc_eligible(const struct lb_svc *o, uint32_t id)
{
	uint32_t i;

	for (i = 0; i < o->n_elig; i++)
		if (o->ids[o->elig[i]] == id)
			return true;
	return false;
}

int pd_lb_preview(struct pd_pipeline *p, int stage,
		  const struct pd_lb_service *svcs, unsigned n_svcs,
		  const struct pd_lb_backend *bks, unsigned n_bks,
		  struct pd_lb_change *out)
{
	struct pd_stage *st = lb_get(p, stage);
	struct pd_lb_backend *copy = NULL;
	struct lb_table *t = NULL, *cur;
	struct lb_priv *pr;
	const struct pd_ct *c;
	uint32_t i, j;
	int rc;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (!pr->ct)
		return PD_ERR(EINVAL, "stage '%s': no conntrack stage linked",
			      st->name);
	if (n_svcs && !out)
		return PD_ERR(EINVAL, "stage '%s': no output array", st->name);
	copy = calloc(n_bks + 1, sizeof(*copy));
	if (!copy)
		return PD_ERR(ENOMEM, "stage '%s': out of memory", st->name);
	if (n_bks)
		memcpy(copy, bks, n_bks * sizeof(*copy));
	pthread_mutex_lock(&pr->lock);
	rc = table_build(st, pr, 1, svcs, n_svcs, copy, n_bks, false, &t);
	if (rc < 0)
		goto out;
	cur = pr->tbl;
	c = pr->ct->priv;
	for (i = 0; i < n_svcs; i++) {
		struct pd_lb_change *ch = &out[i];
		const struct lb_svc *o = &t->svcs[i], *old = NULL;
		struct lb_key k;
		void *data;

		memset(ch, 0, sizeof(*ch));
		svc_key(&svcs[i], &k);
		if (cur && rte_hash_lookup_data(cur->h, &k, &data) >= 0)
			old = &cur->svcs[(uintptr_t)data];
		if (o->algo == PD_LB_MAGLEV) {
			ch->buckets = o->m;
			for (j = 0; j < o->m; j++)
				if (!old || old->m != o->m ||
				    old->maglev[j] != o->maglev[j])
					ch->buckets_moved++;
		}
		/* the live flows of this service */
		for (j = 0; c->flows && j < c->n_slots; j++) {
			const struct pd_flow *f = &c->flows[j];
			union pd_flow_word v;
			uint32_t lb, id;
			const struct lb_pool_ent *e;

			v.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
			lb = __atomic_load_n(&f->lb, __ATOMIC_ACQUIRE);
			if (!pd_ct_live(v.state) || (v.flags & PD_FLOW_BUSY) ||
			    !lb || (lb & LB_GONE) || lb > PD_LB_MAX_BACKENDS)
				continue;
			id = lb - 1;
			e = &pr->pool[id];
			if (e->family != k.family || e->proto != k.proto ||
			    e->vport != k.port || memcmp(e->vip, k.vip, 16))
				continue;
			ch->flows++;
			if (!svc_eligible(o, id))
				ch->flows_lost_backend++;
			if (o->algo == PD_LB_MAGLEV) {
				uint32_t h = lb_flow_hash(f->proto, f->src, f->dst,
							  f->sport, f->dport);

				if (maglev_pick(o, h) != (int32_t)id)
					ch->flows_moved++;
			} else if (!svc_eligible(o, id)) {
				ch->flows_moved++;
			}
		}
	}
	rc = 0;
out:
	pthread_mutex_unlock(&pr->lock);
	table_free(t);
	free(copy);
	return rc;
}

int pd_lb_backend_stats(struct pd_pipeline *p, int stage, const int32_t *ids,
			unsigned n, struct pd_lb_bstats *out)
{
	struct pd_stage *st = lb_get(p, stage);
	struct lb_priv *pr;
	unsigned i, r;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (n && (!ids || !out))
		return PD_ERR(EINVAL, "stage '%s': no arrays", st->name);
	for (i = 0; i < n; i++) {
		int32_t id = ids[i];
		int32_t c;

		if (id < 0 || id >= PD_LB_MAX_BACKENDS)
			return PD_ERR(EINVAL, "stage '%s': backend id %d out of range",
				      st->name, id);
		c = __atomic_load_n(&pr->cnt[id].conns, __ATOMIC_ACQUIRE);
		out[i].conns = c > 0 ? (uint64_t)c : 0;
		out[i].assigned = 0;
		for (r = 0; r < pr->wc_rows; r++)
			out[i].assigned += __atomic_load_n(
				&pr->wc[(size_t)r * PD_LB_MAX_BACKENDS + id].assigned,
				__ATOMIC_RELAXED);
	}
	return 0;
}

int pd_lb_counters(struct pd_pipeline *p, int stage, uint64_t **base,
		   unsigned *rows)
{
	struct pd_stage *st = lb_get(p, stage);
	struct lb_priv *pr;

	if (!st)
		return -EINVAL;
	pr = st->priv;
	if (!base || !rows)
		return PD_ERR(EINVAL, "stage '%s': no output pointers", st->name);
	*base = (uint64_t *)pr->wc;
	*rows = pr->wc_rows;
	return 0;
}

/* ---- the fast path ------------------------------------------------------- */

/*
 * Rewrite the source (which = 0) or destination (1) address and port of a
 * parsed TCP/UDP packet, with incremental IPv4 header and L4 checksum
 * updates (the L4 checksum covers the addresses through the pseudo-header).
 */
static inline void nat_rewrite(uint8_t *l3, uint8_t *l4, bool v6, uint8_t proto,
			       int which, const uint8_t *addr, uint16_t port_be)
{
	unsigned alen = v6 ? 16 : 4;
	uint8_t *a = l3 + (v6 ? (which ? 24 : 8) : (which ? 16 : 12));
	uint8_t *pt = l4 + (which ? 2 : 0);
	uint8_t *ck = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	uint32_t acc;

	acc = cks_diff(0, a, addr, alen);
	if (!v6)
		cks_apply(l3 + 10, acc, false);
	acc = cks_diff(acc, pt, (const uint8_t *)&port_be, 2);
	cks_apply(ck, acc, proto == IPPROTO_UDP && !v6);
	memcpy(a, addr, alen);
	memcpy(pt, &port_be, 2);
}

/*
 * DNAT of a packet in a flow's original direction: its destination is the
 * service's VIP and port (the flow's key says so, and the flow got its
 * backend from the service of that destination), so the address part of
 * the checksum change is the pool entry's, computed once (dnat_ip, and
 * dnat_l4 with the port's too, both folded).
 * lb_bench (IPv4, 1M established flows, 3 runs each way): 245 -> 245 CPU
 * cycles per packet, within the noise; fewer instructions, more for IPv6.
 * Both deltas precomputed and folded, two folds per checksum instead of
 * three (pd_cksum_fold): lb_bench, 3 alternating runs each way on a loaded VM
 * (load 4 on 2 CPUs), lb stage TSC cycles/pkt 54.3 / 68.6 / 38.3 (median
 * 54.3) -> 42.9 / 59.0 / 28.6 (median 42.9), lower in every pair.
 */
static inline void nat_dnat(uint8_t *l3, uint8_t *l4, bool v6, uint8_t proto,
			    const struct lb_pool_ent *e)
{
	uint8_t *ck = l4 + (proto == IPPROTO_TCP ? 16 : 6);

	if (!v6)
		cks_apply(l3 + 10, e->dnat_ip, false);
	cks_apply(ck, e->dnat_l4, proto == IPPROTO_UDP && !v6);
	memcpy(l3 + (v6 ? 24 : 16), e->addr, v6 ? 16 : 4);
	memcpy(l4 + 2, &e->port, 2);
}

/* Smooth weighted round-robin (nginx): per worker row. */
static inline int32_t wrr_pick(struct lb_svc *o, uint16_t row)
{
	int64_t *cur = o->wrr + (size_t)row * o->wrr_stride;
	uint32_t i, best = 0;
	int64_t bw = INT64_MIN;

	for (i = 0; i < o->n_elig; i++) {
		cur[i] += o->weight[o->elig[i]];
		if (cur[i] > bw) {
			bw = cur[i];
			best = i;
		}
	}
	cur[best] -= o->total;
	return (int32_t)o->ids[o->elig[best]];
}

/* Weighted least-connections: the least conns / weight, ties rotating. */
static inline int32_t lc_pick(struct lb_svc *o, const struct lb_count *cnt,
			      uint16_t row)
{
	int64_t *rot = o->wrr + (size_t)row * o->wrr_stride + o->n_elig;
	uint32_t i, k, start = (uint32_t)((*rot)++ % o->n_elig), best = 0;
	int64_t bc = 0, bw = 0;

	for (k = 0; k < o->n_elig; k++) {
		uint32_t e;
		int64_t cn, w;

		i = start + k;
		if (i >= o->n_elig)
			i -= o->n_elig;
		e = o->elig[i];
		cn = RTE_MAX(__atomic_load_n(&cnt[o->ids[e]].conns,
					     __ATOMIC_RELAXED), 0);
		w = o->weight[e];
		if (k == 0 || cn * bw < bc * w) {
			bc = cn;
			bw = w;
			best = e;
		}
	}
	return (int32_t)o->ids[best];
}

/* The backend for a new flow `f` (its cold half: the original tuple). */
static inline int32_t lb_pick(struct lb_svc *o, const struct lb_count *cnt,
			      uint16_t row, const struct pd_flow *f)
{
	if (o->n_elig == 0)
		return -1;
	switch (o->algo) {
	case PD_LB_MAGLEV:
		return maglev_pick(o, lb_flow_hash(f->proto, f->src, f->dst,
						   f->sport, f->dport));
	case PD_LB_WRR:
		return wrr_pick(o, row);
	default:
		return lc_pick(o, cnt, row);
	}
}

/*
 * A new flow's reply-tuple entry. Without SNAT the reply comes from the
 * backend to the client; with SNAT to the SNAT address, on a port chosen
 * so that the reply tuple is unique (the client's own port first).
 */
static inline int lb_alias(struct lb_priv *pr, struct pd_worker *w,
			   struct pd_flow *f, uint32_t flow, uint16_t gen,
			   const struct lb_pool_ent *e, unsigned *reason)
{
	uint16_t port = f->sport, cport = rte_be_to_cpu_16(f->sport);
	uint32_t h;
	int i, rc;

	if (!e->snat) {
		rc = pd_conntrack_alias(pr->ct, w, flow, gen, e->addr, f->src,
					e->port, f->sport);
		*reason = rc == -ENOSPC ? LB_DROP_NAT_FULL : LB_DROP_NAT_CONFLICT;
		return rc == -ESTALE ? 0 : rc;
	}
	h = lb_flow_hash(f->proto, f->src, f->dst, f->sport, f->dport);
	for (i = 0; i < LB_SNAT_TRIES; i++) {
		rc = pd_conntrack_alias(pr->ct, w, flow, gen, e->addr, e->snat_addr,
					e->port, port);
		if (rc == 0 || rc == -ESTALE) {
			f->snat_port = port;
			return 0;
		}
		if (rc == -ENOSPC) {
			*reason = LB_DROP_NAT_FULL;
			return rc;
		}
		/* taken: another port from 1024..65535 */
		cport = (uint16_t)(1024 + (h + (uint32_t)i * 40503u) % 64512u);
		port = rte_cpu_to_be_16(cport);
	}
	*reason = LB_DROP_SNAT_EXHAUSTED;
	return -EEXIST;
}

/* The previous new flow's service lookup (lb_choose): a burst of new
 * flows mostly goes to one VIP, and a 32-byte compare is cheaper than the
 * hash and its lookup: lb_bench, same runs, medians of 3, 1.91 -> 1.96 M
 * new flows per CPU-second (~1360 -> ~1330 TSC cycles each). */
struct lb_memo {
	struct lb_key k;
	int rc;                 /* 1: none yet, 0 found, -1 not a service */
	void *data;
};

#define LB_CH_PASS (-2)     /* lb_choose: not for a service */

#define LB_CH_LATER (-3)    /* lb_choose(ahead): left to the packet's turn */
#define LB_CH_EST (-4)      /* lb_prepick: a flow with a backend, no NAT/reply flag */

/* A new flow's first packet to us (l3/l4: its headers): the backend its
 * service picks, -1 if the service has none, LB_CH_PASS if no service.
 * `ahead` (lb_prepick): only Maglev picks, a pure function of the flow;
 * WRR and least-connections advance state, so a second packet of the same
 * new flow in the burst must not pick again: LB_CH_LATER. */
static inline int32_t lb_choose(struct lb_priv *pr, const struct lb_table *t,
				struct lb_memo *mo, struct pd_worker *w,
				const struct pd_flow *f, const uint8_t *l3,
				const uint8_t *l4, bool v6, uint8_t proto,
				bool ahead)
{
	struct lb_svc *o;
	struct lb_key k;

	memset(&k, 0, sizeof(k));
	k.family = v6 ? 6 : 4;
	k.proto = proto;
	memcpy(&k.port, l4 + 2, 2);
	memcpy(k.vip, l3 + (v6 ? 24 : 16), v6 ? 16 : 4);
	if (mo->rc == 1 || memcmp(&k, &mo->k, sizeof(k)) != 0) {
		mo->k = k;
		mo->rc = rte_hash_lookup_data(t->h, &k, &mo->data) < 0 ? -1 : 0;
	}
	if (mo->rc < 0)
		return LB_CH_PASS;
	o = &t->svcs[(uintptr_t)mo->data];
	if (ahead && o->algo != PD_LB_MAGLEV)
		return LB_CH_LATER;
	return lb_pick(o, pr->cnt, w->slot, f);
}

/* The reply tuple lb_alias() will add first for flow `flow` on backend e. */
static inline void lb_rtuple(const struct pd_flow *f, uint32_t flow,
			     const struct lb_pool_ent *e, struct pd_ct_rtuple *r)
{
	r->flow = flow;
	r->rsrc = e->addr;
	r->rdst = e->snat ? e->snat_addr : f->src;
	r->rsport = e->port;
	r->rdport = f->sport;
}

#define LB_WARM_MAX 64      /* packets of a burst looked at ahead */

/*
 * Before the packets: pick the backends of the new flows among the first
 * LB_WARM_MAX packets and warm their reply tuples' hash buckets in one
 * bulk lookup, so that the alias inserts find them in cache instead of
 * missing on two buckets each, one flow after the other. lb_bench, same
 * runs, medians of 3: 2.09 -> 2.75 M new flows per CPU-second (~1240 ->
 * ~950 TSC cycles per new flow, worker loop); established packets pay the
 * look at f->lb, +3 CPU cycles per packet (242 -> 245, within the noise).
 */
static void lb_prepick(struct lb_priv *pr, const struct lb_table *t,
		       const struct pd_ct *c, struct lb_memo *mo,
		       struct pd_worker *w, struct rte_mbuf **pkts, uint16_t n,
		       int32_t *pick)
{
	struct pd_ct_rtuple r[LB_WARM_MAX];
	unsigned nr = 0;
	uint16_t i;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		struct pd_meta *md = pd_meta(m);
		const struct pd_flow *f;
		int32_t id;

		pick[i] = LB_CH_LATER;
		if ((md->l3 != PD_L3_IPV4 && md->l3 != PD_L3_IPV6) ||
		    !md->l4_off || (md->flags & (PD_META_FRAG | PD_META_NAT |
						 PD_META_REPLY)) ||
		    (md->l4_proto != IPPROTO_TCP && md->l4_proto != IPPROTO_UDP) ||
		    !md->aux)
			continue;
		f = &c->flows[md->aux - 1];
		if (__atomic_load_n(&f->lb, __ATOMIC_ACQUIRE)) {
			pick[i] = LB_CH_EST;
			continue;
		}
		id = lb_choose(pr, t, mo, w, f,
			       rte_pktmbuf_mtod_offset(m, uint8_t *, md->l3_off),
			       rte_pktmbuf_mtod_offset(m, uint8_t *, md->l4_off),
			       md->l3 == PD_L3_IPV6, md->l4_proto, true);
		pick[i] = id;
		if (id >= 0)
			lb_rtuple(f, md->aux - 1, &pr->pool[id], &r[nr++]);
	}
	if (nr > 1)
		pd_conntrack_alias_warm(pr->ct, r, nr);
}

static void lb_process(struct pd_stage *st, struct pd_worker *w,
		       struct rte_mbuf **pkts, uint16_t n)
{
	struct lb_priv *pr = st->priv;
	struct lb_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	const struct pd_ct *c = pr->ct ? pr->ct->priv : NULL;
	uint64_t n_new = 0, n_dnat = 0, n_unnat = 0, n_pass = 0;
	/* this worker's row of per-backend counters (lb_init: a row per
	 * lcore; a slot past them, which cannot happen, counts nothing) */
	struct lb_wctr *wc = likely(w->slot < pr->wc_rows) ?
		pr->wc + (size_t)w->slot * PD_LB_MAX_BACKENDS : NULL;
	struct lb_memo mo = { .rc = 1 };
	int32_t pick[LB_WARM_MAX];
	uint16_t i, nw = RTE_MIN(n, LB_WARM_MAX);

	if (t && c)
		lb_prepick(pr, t, c, &mo, w, pkts, nw, pick);
	else
		for (i = 0; i < nw; i++)
			pick[i] = LB_CH_LATER;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		struct pd_meta *md = pd_meta(m);
		const struct lb_pool_ent *e;
		struct pd_flow *f;
		uint8_t *l3, *l4;
		uint32_t lb;
		bool v6;

		if (i < nw && pick[i] == LB_CH_EST) {
			/* lb_prepick checked the packet and saw a backend: the
			 * else branch below with its entry made, without the
			 * checks again; anything else takes the full path.
			 * lb_bench, 6 alternating runs each way on a loaded VM:
			 * lb stage TSC cycles/pkt median 39.5 -> 37.3, lower in
			 * 5 of the 6 pairs (least preempted runs 29.0 -> 28.4) */
			f = &c->flows[md->aux - 1];
			lb = __atomic_load_n(&f->lb, __ATOMIC_ACQUIRE) & ~LB_GONE;
			if (likely(lb - 1 < PD_LB_MAX_BACKENDS &&
				   __atomic_load_n(&f->alias, __ATOMIC_ACQUIRE))) {
				v6 = md->l3 == PD_L3_IPV6;
				l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, md->l3_off);
				l4 = rte_pktmbuf_mtod_offset(m, uint8_t *, md->l4_off);
				e = &pr->pool[lb - 1];
				goto dnat;
			}
		}
		if ((md->l3 != PD_L3_IPV4 && md->l3 != PD_L3_IPV6) ||
		    !md->l4_off || (md->flags & PD_META_FRAG) ||
		    (md->l4_proto != IPPROTO_TCP && md->l4_proto != IPPROTO_UDP) ||
		    !c || !md->aux) {
			n_pass++;
			pd_emit(w, st, 0, m);
			continue;
		}
		f = &c->flows[md->aux - 1];
		v6 = md->l3 == PD_L3_IPV6;
		l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, md->l3_off);
		l4 = rte_pktmbuf_mtod_offset(m, uint8_t *, md->l4_off);
		lb = __atomic_load_n(&f->lb, __ATOMIC_ACQUIRE) & ~LB_GONE;
		if (md->flags & PD_META_NAT) {
			/* a reply by the translated tuple: back to VIP -> client */
			if (!lb || lb > PD_LB_MAX_BACKENDS) {
				n_pass++;
				pd_emit(w, st, 0, m);
				continue;
			}
			e = &pr->pool[lb - 1];
			pd_trace_hit(w, st, m, PD_TRACE_BACKEND, lb - 1);
			if (likely(wc != NULL)) {
				wc[lb - 1].packets++;
				wc[lb - 1].bytes += rte_pktmbuf_pkt_len(m);
			}
			nat_rewrite(l3, l4, v6, md->l4_proto, 0, e->vip, e->vport);
			if (e->snat)
				nat_rewrite(l3, l4, v6, md->l4_proto, 1, f->src,
					    f->sport);
			n_unnat++;
			pd_emit(w, st, 0, m);
			continue;
		}
		if (md->flags & PD_META_REPLY) {
			n_pass++;
			pd_emit(w, st, 0, m);
			continue;
		}
		if (!lb) {
			/* a flow's first packet to us: is it for a service? */
			union pd_flow_word v;
			int32_t id;
			uint32_t zero = 0;
			unsigned reason = 0;

			if (!t) {
				n_pass++;
				pd_emit(w, st, 0, m);
				continue;
			}
			id = i < nw && pick[i] != LB_CH_LATER &&
			     pick[i] != LB_CH_EST ? pick[i] :
			     lb_choose(pr, t, &mo, w, f, l3, l4, v6, md->l4_proto,
				       false);
			if (id == LB_CH_PASS) {
				n_pass++;
				pd_emit(w, st, 0, m);
				continue;
			}
			/* a traced packet comes alone (its own one-packet call),
			 * so the memo holds its own service */
			if (mo.rc == 0)
				pd_trace_hit(w, st, m, PD_TRACE_SERVICE,
					     (uint32_t)(uintptr_t)mo.data);
			if (id < 0) {
				pd_drop(w, st, LB_DROP_NO_BACKEND, m);
				continue;
			}
			v.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
			if (__atomic_compare_exchange_n(&f->lb, &zero, (uint32_t)id + 1,
							false, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE)) {
				__atomic_fetch_add(&pr->cnt[id].conns, 1,
						   __ATOMIC_RELEASE);
				if (likely(wc != NULL))
					wc[id].assigned++;
				n_new++;
				lb = (uint32_t)id + 1;
			} else {
				lb = zero & ~LB_GONE;  /* another worker chose */
				if (!lb) {             /* or the flow just left */
					pd_drop(w, st, LB_DROP_NO_FLOW, m);
					continue;
				}
			}
			e = &pr->pool[lb - 1];
			if (lb_alias(pr, w, f, md->aux - 1, v.gen, e, &reason) < 0) {
				pd_drop(w, st, reason, m);
				continue;
			}
		} else {
			if (lb > PD_LB_MAX_BACKENDS) {
				n_pass++;
				pd_emit(w, st, 0, m);
				continue;
			}
			e = &pr->pool[lb - 1];
			if (unlikely(!__atomic_load_n(&f->alias, __ATOMIC_ACQUIRE))) {
				/* its entry could not be made before: again */
				union pd_flow_word v;
				unsigned reason = 0;

				v.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
				if (pd_ct_live(v.state) &&
				    lb_alias(pr, w, f, md->aux - 1, v.gen, e,
					     &reason) < 0) {
					pd_drop(w, st, reason, m);
					continue;
				}
			}
		}
dnat:
		/* client -> VIP becomes (SNAT ->) backend */
		pd_trace_hit(w, st, m, PD_TRACE_BACKEND, lb - 1);
		if (likely(wc != NULL)) {
			wc[lb - 1].packets++;
			wc[lb - 1].bytes += rte_pktmbuf_pkt_len(m);
		}
		nat_dnat(l3, l4, v6, md->l4_proto, e);
		if (e->snat)
			nat_rewrite(l3, l4, v6, md->l4_proto, 0, e->snat_addr,
				    f->snat_port);
		n_dnat++;
		pd_emit(w, st, 0, m);
	}
	w->ctr[st->ctr_extra + LB_X_NEW] += n_new;
	w->ctr[st->ctr_extra + LB_X_DNAT] += n_dnat;
	w->ctr[st->ctr_extra + LB_X_UNNAT] += n_unnat;
	w->ctr[st->ctr_extra + LB_X_PASS] += n_pass;
}

static int lb_init(struct pd_stage *st)
{
	struct lb_priv *pr = st->priv;
	int rc;

	pr->ct_stage = -1;
	pr->pool = rte_zmalloc("pd_lb_pool", PD_LB_MAX_BACKENDS * sizeof(*pr->pool),
			       RTE_CACHE_LINE_SIZE);
	pr->cnt = rte_zmalloc("pd_lb_cnt", PD_LB_MAX_BACKENDS * sizeof(*pr->cnt),
			      RTE_CACHE_LINE_SIZE);
	/* a counter row per lcore: workers run on lcores, slot < n_workers */
	pr->wc_rows = RTE_MIN(rte_lcore_count(), (unsigned)PD_MAX_WORKERS);
	pr->wc = rte_zmalloc("pd_lb_wctr", (size_t)pr->wc_rows *
			     PD_LB_MAX_BACKENDS * sizeof(*pr->wc),
			     RTE_CACHE_LINE_SIZE);
	if (!pr->pool || !pr->cnt || !pr->wc) {
		rte_free(pr->pool);
		rte_free(pr->cnt);
		rte_free(pr->wc);
		pr->pool = NULL;
		pr->cnt = NULL;
		pr->wc = NULL;
		return PD_ERR(ENOMEM, "stage '%s': out of memory for the backend "
			      "pool", st->name);
	}
	if ((rc = pthread_mutex_init(&pr->lock, NULL)) != 0)
		return PD_ERR(rc, "stage '%s': cannot create its lock", st->name);
	return 0;
}

static void lb_fini(struct pd_stage *st)
{
	struct lb_priv *pr = st->priv;

	table_free(pr->tbl);
	pr->tbl = NULL;
	rte_free(pr->pool);
	rte_free(pr->cnt);
	rte_free(pr->wc);
	pthread_mutex_destroy(&pr->lock);
}

const struct pd_stage_ops pd_stage_lb = {
	.type = "lb",
	.edges = lb_edges,
	.drops = lb_drops,
	.extra = lb_extra,
	.needs_next = true,
	.priv_size = sizeof(struct lb_priv),
	.init = lb_init,
	.fini = lb_fini,
	.process = lb_process,
};
