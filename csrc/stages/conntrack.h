/* SPDX-License-Identifier: BSD-3-Clause
 * conntrack.h - the conntrack stage: the project's one flow table.
 *
 * One rte_hash keyed by the normalised 5-tuple (the lower (address, port)
 * first), so both directions of a connection find the same entry; IPv4 and
 * IPv6 share the table. The value is a flow index into an array of struct
 * pd_flow. For every packet the stage sets pd_meta(m)->aux = index + 1 (0:
 * no flow) and PD_META_REPLY when the packet goes against the flow's
 * original direction. Needs parse first; non-IP packets pass with aux 0.
 *
 * Mode "auto" creates a flow for every new packet (table full: drop
 * "table-full"). Mode "confirm" only looks up; a later stage (policy)
 * creates flows with pd_conntrack_confirm().
 *
 * Other stages (policy, load balancer, NAT) read the flow of a packet with
 * pd_conntrack_flow() and keep their per-flow state in the tag (policy: the
 * rule id) or in fields of struct pd_flow (lb: the backend id, the SNAT
 * port, and a second key - the translated reply tuple - in the same hash,
 * an alias entry that leads to the flow: pd_conntrack_alias()).
 *
 * TCP flows follow a state machine (SYN_SENT as PD_CT_NEW, SYN_RECV,
 * ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE as PD_CT_CLOSING), each state
 * with its timeout. A full table drops new flows ("table-full") or, with
 * evict, takes out the least recently used of a sample (see ct_evict).
 */
#ifndef PD_STAGE_CONNTRACK_H
#define PD_STAGE_CONNTRACK_H
#include <pthread.h>

#include "stages.h"

struct rte_hash;
struct rte_rcu_qsbr_dq;

/* Slot states besides the public ones of pd_api.h (PD_CT_NEW ...
 * PD_CT_TIME_WAIT: the flow states of the TCP state machine). */
#define PD_CT_FREE 0          /* slot not in use */
#define PD_CT_ALIAS 0xfe      /* a flow's reply-tuple entry (NAT): tag = flow index */
#define PD_CT_DEAD 0xff       /* expired, key deleted, slot in its grace period */

static inline bool pd_ct_live(uint8_t state)
{
	return state != PD_CT_FREE && state < PD_CT_ALIAS;
}

/* pd_flow_word.flags */
#define PD_FLOW_ORIG_HI 0x01  /* the original source is the key's higher end */
#define PD_FLOW_BUSY 0x02     /* just created: the cold half is being written */
#define PD_FLOW_FIN_ORIG 0x04 /* TCP: a FIN went in the original direction */
#define PD_FLOW_FIN_REPLY 0x08 /* TCP: a FIN went in the reply direction */

/*
 * State, flags, generation and tag share one 64-bit word and change only
 * with a compare-and-swap of the whole word. Whoever wins the creation CAS
 * publishes the original direction and the tag in the same instant, so a
 * worker that meets the flow a moment later (the other direction on another
 * worker) never sees a half-made flow.
 */
union pd_flow_word {
	uint64_t u64;
	struct {
		uint8_t state;     /* PD_CT_* */
		uint8_t flags;     /* PD_FLOW_* */
		uint16_t gen;      /* + 1 each time the slot gets a new flow */
		uint32_t tag;      /* free for other stages: rule id, backend id */
	};
};

/*
 * One flow: 128 bytes, two cache lines. The first holds what every packet
 * touches; the second what is written once at creation (and what NAT will
 * add: the translated tuple).
 */
struct pd_flow {
	/* hot: read and written per packet */
	union pd_flow_word w;
	uint64_t last_tsc;             /* last packet, either direction */
	uint64_t packets[2];           /* [0] original direction, [1] reply */
	uint64_t bytes[2];             /* frame bytes */
	uint32_t lb;                   /* load balancer: backend id + 1, 0 none */
	uint32_t alias;                /* reply-tuple entry index + 1, 0 none */
	uint16_t snat_port;            /* lb SNAT: source port towards the backend */
	uint16_t pad1;
	uint32_t pad2;
	/* cold: set by the creator while PD_FLOW_BUSY is set. In an alias
	 * entry (PD_CT_ALIAS) the tuple is the reply tuple, i.e. the translated
	 * one: src = the backend, dst = the client (or the SNAT address). */
	uint64_t first_tsc;
	uint8_t family;                /* 4 or 6 */
	uint8_t proto;
	uint16_t sport;                /* original direction, network order */
	uint16_t dport;
	uint8_t src[16];               /* IPv4: first 4 bytes, rest 0 */
	uint8_t dst[16];
} __rte_cache_aligned;

/*
 * The stage's private state. Other stages use `flows` (through
 * pd_conntrack_flow()); the rest belongs to conntrack.c.
 */
struct pd_ct {
	struct pd_flow *flows;         /* indexed by rte_hash key position */
	uint32_t n_slots;              /* entries in flows[] */
	uint32_t capacity;             /* live flows allowed */
	struct rte_hash *h;
	bool confirm;                  /* lookup only; pd_conntrack_confirm creates */
	bool evict;                    /* full: evict the least recently used flow */
	uint64_t timeout_tsc[PD_CT_N_TIMEOUTS_ALL];
	/* called when a flow leaves the table (expired: control thread;
	 * evicted: the worker), before its slot is reused: the lb stage
	 * keeps its live connection counts with it */
	void (*release)(void *arg, const struct pd_flow *f);
	void *release_arg;
	struct rte_ring *evq;          /* evicted slots for the control thread (MP/SC) */
	uint32_t evict_cursor;         /* where the next eviction sample starts */
	/* flows holding a slot (live, being created, or in their grace
	 * period): its own cache line, written when a flow comes or goes */
	uint32_t used __rte_cache_aligned;
	uint32_t wlock;                /* rte_hash writers (ct_wlock), 0 free */
	/* control side, serialised by ctl */
	pthread_mutex_t ctl __rte_cache_aligned;
	struct rte_rcu_qsbr_dq *dq;    /* deleted slots waiting for their grace period */
	uint32_t cursor;               /* where the next expiry scan starts */
	uint32_t pending;              /* counted slots in dq (they hold `used`) */
};

/* The flow of a packet the conntrack stage `ct` has seen, NULL if none. */
static inline struct pd_flow *pd_conntrack_flow(const struct pd_stage *ct,
						struct rte_mbuf *m)
{
	const struct pd_ct *c = ct->priv;
	uint32_t aux = pd_meta(m)->aux;

	return aux ? &c->flows[aux - 1] : NULL;
}

/*
 * Replace a flow's tag (e.g. a load balancer choosing a backend). Returns
 * false if the flow was deleted or its slot reused (gen changed) meanwhile.
 */
static inline bool pd_flow_set_tag(struct pd_flow *f, uint16_t gen,
				   uint32_t tag)
{
	union pd_flow_word o, n;

	o.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
	do {
		if (!pd_ct_live(o.state) || o.gen != gen)
			return false;
		n = o;
		n.tag = tag;
	} while (!__atomic_compare_exchange_n(&f->w.u64, &o.u64, n.u64, false,
					      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
	return true;
}

/*
 * Fast path, for the stage that decides whether a new flow may exist
 * (policy) behind a conntrack stage in confirm mode: create the flow of `m`
 * with `tag` (or find it, if another worker just created it: its tag is
 * kept), count `m` in it, set aux and PD_META_REPLY. Call it once, for a
 * packet the conntrack stage passed with aux 0.
 * Returns the flow index, -ENOSPC when the table is full (the caller drops
 * with its own reason) or -EINVAL for a packet without an IP header. No
 * error message: this runs per packet.
 */
int pd_conntrack_confirm(struct pd_stage *ct, struct pd_worker *w,
			 struct rte_mbuf *m, uint32_t tag);

/* Control path: stage index -> the conntrack stage, NULL (and a message)
 * if it is not one. */
struct pd_stage *pd_conntrack_find(struct pd_pipeline *p, int stage);
/* Look one packet up again (a flow confirmed earlier in the same burst):
 * flow index with aux set, or -ENOENT. */
int pd_conntrack_recheck(struct pd_stage *ct, struct pd_worker *w,
			 struct rte_mbuf *m);

/*
 * NAT (the lb stage): give flow `flow` (generation `gen`) its reply-tuple
 * entry, so that replies with the translated tuple (src = rsrc:rsport, dst
 * = rdst:rdport, network order, addresses 16 bytes) find the flow, marked
 * PD_META_REPLY | PD_META_NAT. Fast path. Returns 0, -EEXIST if that tuple
 * belongs to another flow (the caller picks another SNAT port), -ENOSPC if
 * the table is full, -ESTALE if the flow is gone.
 */
int pd_conntrack_alias(struct pd_stage *ct, struct pd_worker *w, uint32_t flow,
		       uint16_t gen, const uint8_t *rsrc, const uint8_t *rdst,
		       uint16_t rsport, uint16_t rdport);
/* A reply tuple, as pd_conntrack_alias() takes it, for the warm-up. */
struct pd_ct_rtuple {
	const uint8_t *rsrc, *rdst;
	uint16_t rsport, rdport;
	uint32_t flow;
};
/* Fast path: the lb stage's pd_conntrack_alias() calls for these n
 * tuples come next: fetch their hash buckets now, all at once (one bulk
 * lookup). Only a hint: it changes nothing. */
void pd_conntrack_alias_warm(struct pd_stage *ct, const struct pd_ct_rtuple *r,
			     unsigned n);
/* Control path: the function conntrack calls when a flow leaves the table. */
void pd_conntrack_set_release(struct pd_stage *ct,
			      void (*fn)(void *arg, const struct pd_flow *f),
			      void *arg);

#endif
