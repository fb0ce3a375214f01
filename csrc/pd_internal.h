/* SPDX-License-Identifier: BSD-3-Clause
 * pd_internal.h - shared internals of the pydp core: error helpers, the
 * per-packet metadata, the worker context and the stage interface.
 */
#ifndef PD_INTERNAL_H
#define PD_INTERNAL_H

#include <errno.h>
#include <string.h>
#include <stdint.h>
#include <stdbool.h>

#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_rcu_qsbr.h>

#include "pd_api.h"

/* ---- errors: every control function leaves a message and returns -errno */
int pd_err(int err, const char *fmt, ...) __rte_format_printf(2, 3);
#define PD_ERR(e, ...) pd_err((e), __VA_ARGS__)

/* ---- per-packet metadata (an mbuf dynamic field) ----------------------- */
enum pd_l3 { PD_L3_NONE = 0, PD_L3_IPV4, PD_L3_IPV6, PD_L3_ARP, PD_L3_OTHER };

struct pd_meta {
	uint16_t in_port;     /* pipeline port index it came in on */
	uint16_t l3_off;      /* offset of the L3 header */
	uint16_t l4_off;      /* offset of the L4 header, 0 if none */
	uint8_t l3;           /* enum pd_l3 */
	uint8_t l4_proto;     /* IPPROTO_*, 0 if none */
	uint16_t flags;
	uint16_t pad;
	uint32_t aux;         /* free for stages (flow id, rule id...) */
};
#define PD_META_FRAG 0x1      /* non-first IP fragment: no L4 header */
#define PD_META_REPLY 0x2     /* conntrack: against the flow's original direction */
#define PD_META_NAT 0x4       /* conntrack: found by the flow's translated reply tuple */

extern int pd_meta_offset;
static inline struct pd_meta *pd_meta(struct rte_mbuf *m)
{
	return RTE_MBUF_DYNFIELD(m, pd_meta_offset, struct pd_meta *);
}

/* ---- the stage interface ---------------------------------------------- */
struct pd_stage;
struct pd_worker;

typedef void (*pd_stage_process_fn)(struct pd_stage *st, struct pd_worker *w,
				    struct rte_mbuf **pkts, uint16_t n);

/*
 * A stage type is described once. Edge 0 is always "next". Drop reasons and
 * extra counters are named here so Python, the CLI and metrics show the
 * same names the C code counts.
 */
struct pd_stage_ops {
	const char *type;
	const char *const *edges;      /* NULL-terminated; [0] = "next" */
	const char *const *drops;      /* NULL-terminated drop reasons */
	const char *const *extra;      /* NULL-terminated extra counters */
	bool needs_next;               /* edge 0 must be linked */
	size_t priv_size;
	int (*init)(struct pd_stage *st);
	void (*fini)(struct pd_stage *st);
	pd_stage_process_fn process;
};

struct pd_pipeline;

struct pd_stage {
	const struct pd_stage_ops *ops;
	struct pd_pipeline *pl;
	char name[PD_NAME_LEN];
	int16_t next[PD_MAX_EDGES];    /* stage index per edge, -1 unlinked */
	uint16_t ctr_in;               /* counter indices */
	uint16_t ctr_drop;             /* first drop reason counter */
	uint16_t ctr_extra;            /* first extra counter */
	uint16_t ctr_cycles;           /* TSC cycles in process() (stage_cycles on) */
	uint16_t n_drops;
	void *priv;                    /* stage state, ops->priv_size bytes */
};

/* one packet buffer: a stage's input queue or a port's tx queue */
struct pd_buf {
	uint16_t n;
	struct rte_mbuf *pkts[2 * PD_BURST];
};

struct pd_rxq {
	uint16_t port_idx;     /* pipeline port index */
	uint16_t port_id;      /* DPDK port id */
	uint16_t queue;
	int16_t stage;         /* first stage, or -1 for bare forwarding */
	int16_t bare_out;      /* bare: pipeline port index to send to */
	struct pd_source *src; /* non-NULL: generate instead of rx */
};

struct pd_trace_rec;

struct pd_worker {
	/* hot, written per burst */
	uint64_t *ctr;                     /* this worker's counter row */
	struct pd_pipeline *pl;
	uint16_t slot;                     /* worker index, = tx queue */
	uint16_t n_rxq;
	unsigned lcore;
	/* observability (pd_trace.c): the record of the one traced packet a
	 * stage is processing right now, NULL otherwise (pd_trace_hit) */
	struct pd_trace_rec *trace_cur;
	struct rte_mbuf *trace_m;
	struct pd_rxq rxq[PD_MAX_RXQ];
	struct pd_buf drop;
	struct pd_buf tx[PD_MAX_PORTS];
	struct pd_buf in[PD_MAX_STAGES];
} __rte_cache_aligned;

struct pd_pport {
	char name[PD_NAME_LEN];
	uint16_t port_id;
	uint16_t n_rxq;
	uint16_t n_txq;
	int16_t input;          /* stage fed by this port's rx, -1 none, -2 unset */
	int16_t bare_out;
	uint16_t ctr;           /* rx_packets, rx_bytes, tx_packets, tx_bytes, drop tx_full */
	struct pd_source *src;
	struct rte_ether_addr mac;
};

enum { PD_PCTR_RX = 0, PD_PCTR_RX_BYTES, PD_PCTR_TX, PD_PCTR_TX_BYTES,
       PD_PCTR_TX_FULL, PD_PCTR_N };

struct pd_pipeline {
	char name[PD_NAME_LEN];
	uint16_t n_ports;
	uint16_t n_stages;
	uint16_t n_workers;
	bool built;
	struct pd_pport ports[PD_MAX_PORTS];
	struct pd_stage stages[PD_MAX_STAGES];
	struct pd_worker *workers[PD_MAX_WORKERS];
	struct pd_pool *pool;
	struct rte_rcu_qsbr *qs;
	/* counters: n_workers rows of `stride` uint64 */
	uint64_t *ctr;
	unsigned n_ctr;
	unsigned stride;
	char (*ctr_names)[96];
	volatile int running;
	int stage_cycles;       /* time each stage: relaxed atomic, read per burst */
	int launched;
	/* observability (pd_trace.c, pd_capture.c): PD_OBS_* bits, relaxed
	 * atomic, read once per burst by the worker loop */
	int obs_armed;
	struct pd_trace *trace;
	struct pd_capture *cap;
};

/* PD_OBS_TRACE, PD_OBS_CAPTURE: pd_api.h */

/* ---- fast-path helpers used by every stage ----------------------------- */

/* Send a packet on along edge `edge` of stage `st`. */
static inline void pd_emit(struct pd_worker *w, struct pd_stage *st,
			   unsigned edge, struct rte_mbuf *m)
{
	struct pd_buf *b = &w->in[st->next[edge]];
	b->pkts[b->n++] = m;
}

void pd_tx_flush(struct pd_worker *w, uint16_t port_idx);
/* Transmit `n` packets from `pkts` on `port_idx` now (counted; what the
 * queue refuses is freed and counted as drop/tx_full): pd_tx_flush() on an
 * array the caller owns. */
void pd_tx_send(struct pd_worker *w, uint16_t port_idx, struct rte_mbuf **pkts,
		uint16_t n);

/* Queue a packet for transmission on pipeline port `port_idx`. */
static inline void pd_tx(struct pd_worker *w, uint16_t port_idx,
			 struct rte_mbuf *m)
{
	struct pd_buf *b = &w->tx[port_idx];
	b->pkts[b->n++] = m;
	if (unlikely(b->n >= PD_BURST))
		pd_tx_flush(w, port_idx);
}

/* Queue `n` packets for transmission on `port_idx`: the same flushes as
 * n calls of pd_tx(), without reloading the buffer per packet. Whole
 * bursts (PD_BURST packets) meeting an empty tx buffer are sent straight
 * from `pkts`, with no copy: the usual case when every packet of an rx
 * burst takes the same edge. forward.yaml: 303.6 -> 300.9 instructions/pkt
 * (callgrind, benchmarks/graph_compare/insn.sh). */
static inline void pd_tx_bulk(struct pd_worker *w, uint16_t port_idx,
			      struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_buf *b = &w->tx[port_idx];

	/* PD_BURST at a time, as the buffered path sends: some PMDs take no
	 * more per call, and what a PMD refuses counts as drop/tx_full */
	while (b->n == 0 && n >= PD_BURST) {
		pd_tx_send(w, port_idx, pkts, PD_BURST);
		pkts += PD_BURST;
		n = (uint16_t)(n - PD_BURST);
	}
	while (n) {
		uint16_t k = b->n, c;

		if (unlikely(k >= PD_BURST)) {
			pd_tx_flush(w, port_idx);
			continue;
		}
		c = RTE_MIN(n, (uint16_t)(PD_BURST - k));
		memcpy(&b->pkts[k], pkts, c * sizeof(pkts[0]));
		b->n = (uint16_t)(k + c);
		pkts += c;
		n = (uint16_t)(n - c);
		if (b->n >= PD_BURST)
			pd_tx_flush(w, port_idx);
	}
}

void pd_drop_flush(struct pd_worker *w);

/* Drop a packet with the stage's reason number `reason` (counted). */
static inline void pd_drop(struct pd_worker *w, struct pd_stage *st,
			   unsigned reason, struct rte_mbuf *m)
{
	w->ctr[st->ctr_drop + reason]++;
	w->drop.pkts[w->drop.n++] = m;
	if (unlikely(w->drop.n >= PD_BURST))
		pd_drop_flush(w);
}

/* ---- observability: packet trace and capture (pd_trace.c, pd_capture.c) --
 *
 * Off, they cost the worker loop one relaxed load and one predictable branch
 * per rx burst (p->obs_armed). Armed, the burst goes to pd_obs_burst()
 * instead of the plain stage walk: it captures, runs the trace filter, and
 * walks the stages itself, giving each traced packet a one-packet process()
 * call of its own so the verdict (emit, tx, drop and its reason) is read off
 * the buffers and counters that call changed: the verdict helpers above stay
 * untouched and nothing is stored in the mbuf.
 *
 * Table hits: a stage that looks a packet up in a table notes the hit with
 *
 *     pd_trace_hit(w, st, m, PD_TRACE_RULE, rule_id);   // or _FLOW, _FLOW_NEW,
 *                                                       // _BACKEND, _SERVICE, _SA
 *
 * right where it knows the id. It costs one load of a worker field in L1 and
 * one never-taken branch when the packet is not traced (w->trace_cur is set
 * only during the one-packet call of a traced packet). Kinds and the record
 * layout are in pd_api.h (struct pd_trace_rec).
 */
struct pd_trace;
struct pd_capture;
void pd_obs_burst(struct pd_worker *w, unsigned first, const struct pd_rxq *q);
void pd_trace_hit_slow(struct pd_worker *w, struct pd_stage *st, unsigned kind,
		       uint32_t id);

static inline void pd_trace_hit(struct pd_worker *w, struct pd_stage *st,
				struct rte_mbuf *m, unsigned kind, uint32_t id)
{
#ifndef PD_NO_OBS
	if (unlikely(w->trace_cur != NULL) && w->trace_m == m)
		pd_trace_hit_slow(w, st, kind, id);
#else
	RTE_SET_USED(w);
	RTE_SET_USED(st);
	RTE_SET_USED(m);
	RTE_SET_USED(kind);
	RTE_SET_USED(id);
#endif
}

/* pd_capture.c: the capture side of pd_obs_burst: what port `port_idx`
 * received, what enters stage `stage` (each a no-op unless it is the one
 * being captured). A port's tx side is captured by an ethdev tx callback. */
void pd_capture_rx(struct pd_worker *w, uint16_t port_idx, uint16_t queue,
		   struct rte_mbuf **pkts, uint16_t n);
void pd_capture_stage(struct pd_worker *w, unsigned stage,
		      struct rte_mbuf **pkts, uint16_t n);
/* free trace and capture state of a pipeline being freed */
void pd_obs_free(struct pd_pipeline *p);
/* pd_trace.c: a pcap-filter expression compiled to rte_bpf (NULL expr or ""
 * -> *out NULL: everything matches) */
struct rte_bpf;
int pd_bpf_compile(const char *expr, struct rte_bpf **out);
/* rc[i] = 1 if pkts[i] matches (all 1 when bpf is NULL) */
void pd_bpf_match(const struct rte_bpf *bpf, struct rte_mbuf **pkts,
		  uint16_t n, uint64_t *rc);

/* ---- shared control helpers -------------------------------------------- */
struct rte_mempool *pd_pool_mp(struct pd_pool *pool);
struct pd_stage *pd_stage_get(struct pd_pipeline *p, int stage,
			      const char *type);
int pd_port_idx_check(struct pd_pipeline *p, int port);
/* Publish a new table pointer and free the old one after an RCU grace
 * period: readers on the fast path never lock and never see a half-built
 * table. */
void pd_rcu_swap(struct pd_pipeline *p, void **slot, void *new_ptr,
		 void (*free_fn)(void *));

/* parse.c: the parse logic on a plain buffer, shared by the stage and the
 * fuzzer. Returns 0 or a positive drop reason (index + 1). */
int pd_parse_raw(const uint8_t *data, uint32_t len, int verify_cksum,
		 struct pd_meta *meta);
/* the same without the IPv4 fast path (the full walk alone): the fuzzer
 * checks that the two always agree */
int pd_parse_walk(const uint8_t *data, uint32_t len, int verify_cksum,
		  struct pd_meta *meta);

/* source.c */
struct pd_source;
uint16_t pd_source_burst(struct pd_source *s, struct rte_mempool *mp,
			 struct rte_mbuf **pkts, uint16_t n);
void pd_source_free(struct pd_source *s);

#endif /* PD_INTERNAL_H */
