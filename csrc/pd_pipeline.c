/* SPDX-License-Identifier: BSD-3-Clause
 * pd_pipeline.c - the pipeline: a graph of stages, its counters, and the
 * worker loop that runs it to completion on each worker lcore.
 *
 * Runner: a plain array of stages in topological order, each with an input
 * buffer. A worker takes one rx burst, puts it in the input of its first
 * stage, then walks the array once: a stage that has packets processes its
 * whole buffer and emits each packet to the input of a later stage, to a
 * port's tx buffer, or to the drop buffer with a counted reason. Because
 * edges only point forward, one pass finishes the burst. rte_graph was the
 * other candidate; see docs/architecture.md for why we run this one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_prefetch.h>

#include "pd_internal.h"
#include "stages/stages.h"

static const struct pd_stage_ops *const stage_types[] = {
	&pd_stage_parse, &pd_stage_forward, &pd_stage_l3route,
	&pd_stage_count, &pd_stage_mirror, &pd_stage_drop,
	&pd_stage_policy, &pd_stage_conntrack,
	&pd_stage_esp_encrypt, &pd_stage_esp_decrypt,
	&pd_stage_lb,
	NULL,
};

static const struct pd_stage_ops *stage_type(const char *type)
{
	unsigned i;

	for (i = 0; stage_types[i]; i++)
		if (strcmp(stage_types[i]->type, type) == 0)
			return stage_types[i];
	return NULL;
}

static unsigned count_names(const char *const *names)
{
	unsigned n = 0;

	while (names && names[n])
		n++;
	return n;
}

int pd_stage_type_known(const char *type)
{
	return stage_type(type) != NULL;
}

const char *pd_stage_type_edge(const char *type, unsigned i)
{
	const struct pd_stage_ops *ops = stage_type(type);

	if (!ops || i >= count_names(ops->edges))
		return NULL;
	return ops->edges[i];
}

const char *pd_stage_type_drop(const char *type, unsigned i)
{
	const struct pd_stage_ops *ops = stage_type(type);

	if (!ops || i >= count_names(ops->drops))
		return NULL;
	return ops->drops[i];
}

int pd_pipeline_new(const char *name, struct pd_pipeline **out)
{
	struct pd_pipeline *p;

	if (!pd_eal_ready())
		return PD_ERR(ENODEV, "EAL is not running");
	p = rte_zmalloc("pd_pipeline", sizeof(*p), RTE_CACHE_LINE_SIZE);
	if (!p)
		return PD_ERR(ENOMEM, "out of memory for pipeline '%s'", name);
	snprintf(p->name, sizeof(p->name), "%s", name);
	*out = p;
	return 0;
}

void pd_pipeline_free(struct pd_pipeline *p)
{
	unsigned i;

	if (!p)
		return;
	if (p->running)
		pd_pipeline_stop(p);
	pd_obs_free(p);   /* trace and capture, if any */
	for (i = 0; i < p->n_stages; i++) {
		struct pd_stage *st = &p->stages[i];

		if (st->ops->fini)
			st->ops->fini(st);
		rte_free(st->priv);
	}
	for (i = 0; i < p->n_ports; i++)
		pd_source_free(p->ports[i].src);
	for (i = 0; i < p->n_workers; i++)
		rte_free(p->workers[i]);
	rte_free(p->qs);
	rte_free(p->ctr);
	free(p->ctr_names);
	rte_free(p);
}

int pd_port_idx_check(struct pd_pipeline *p, int port)
{
	if (port < 0 || port >= p->n_ports)
		return PD_ERR(EINVAL, "pipeline '%s' has no port index %d", p->name,
			      port);
	return 0;
}

int pd_pipeline_add_port(struct pd_pipeline *p, const char *name,
			 uint16_t port_id)
{
	struct pd_pport *pp;
	struct rte_eth_dev_info info;
	int rc;

	if (p->built)
		return PD_ERR(EBUSY, "pipeline '%s' is already built", p->name);
	if (p->n_ports >= PD_MAX_PORTS)
		return PD_ERR(ENOSPC, "pipeline '%s': more than %d ports", p->name,
			      PD_MAX_PORTS);
	if (!rte_eth_dev_is_valid_port(port_id))
		return PD_ERR(ENODEV, "port '%s': DPDK port %u does not exist", name,
			      port_id);
	rc = rte_eth_dev_info_get(port_id, &info);
	if (rc < 0)
		return PD_ERR(-rc, "port '%s': cannot read device info", name);
	pp = &p->ports[p->n_ports];
	snprintf(pp->name, sizeof(pp->name), "%s", name);
	pp->port_id = port_id;
	pp->n_rxq = info.nb_rx_queues;
	pp->n_txq = info.nb_tx_queues;
	pp->input = -2;
	pp->bare_out = -1;
	rte_eth_macaddr_get(port_id, &pp->mac);
	return p->n_ports++;
}

int pd_pipeline_add_stage(struct pd_pipeline *p, const char *type,
			  const char *name)
{
	const struct pd_stage_ops *ops = stage_type(type);
	struct pd_stage *st;
	int rc, e;

	if (p->built)
		return PD_ERR(EBUSY, "pipeline '%s' is already built", p->name);
	if (!ops)
		return PD_ERR(ENOENT, "stage '%s': unknown type '%s'", name, type);
	if (p->n_stages >= PD_MAX_STAGES)
		return PD_ERR(ENOSPC, "pipeline '%s': more than %d stages", p->name,
			      PD_MAX_STAGES);
	st = &p->stages[p->n_stages];
	memset(st, 0, sizeof(*st));
	st->ops = ops;
	st->pl = p;
	snprintf(st->name, sizeof(st->name), "%s", name);
	for (e = 0; e < PD_MAX_EDGES; e++)
		st->next[e] = -1;
	if (ops->priv_size) {
		st->priv = rte_zmalloc("pd_stage", ops->priv_size, RTE_CACHE_LINE_SIZE);
		if (!st->priv)
			return PD_ERR(ENOMEM, "stage '%s': out of memory", name);
	}
	if (ops->init && (rc = ops->init(st)) < 0) {
		rte_free(st->priv);
		return rc;
	}
	return p->n_stages++;
}

int pd_pipeline_link(struct pd_pipeline *p, int stage, int edge, int next)
{
	struct pd_stage *st;

	if (p->built)
		return PD_ERR(EBUSY, "pipeline '%s' is already built", p->name);
	if (stage < 0 || stage >= p->n_stages || next < 0 || next >= p->n_stages)
		return PD_ERR(EINVAL, "link %d -> %d: no such stage", stage, next);
	st = &p->stages[stage];
	if (edge < 0 || (unsigned)edge >= count_names(st->ops->edges))
		return PD_ERR(EINVAL, "stage '%s' has no edge %d", st->name, edge);
	if (next <= stage)
		return PD_ERR(EINVAL, "link '%s' -> '%s' points backwards: stages "
			      "must be added in topological order", st->name,
			      p->stages[next].name);
	st->next[edge] = (int16_t)next;
	return 0;
}

int pd_pipeline_set_input(struct pd_pipeline *p, int port, int stage)
{
	int rc;

	if ((rc = pd_port_idx_check(p, port)) < 0)
		return rc;
	if (stage < -1 || stage >= p->n_stages)
		return PD_ERR(EINVAL, "port '%s': no stage %d", p->ports[port].name,
			      stage);
	p->ports[port].input = (int16_t)stage;
	return 0;
}

int pd_pipeline_set_bare(struct pd_pipeline *p, int in_port, int out_port)
{
	int rc;

	if ((rc = pd_port_idx_check(p, in_port)) < 0 ||
	    (rc = pd_port_idx_check(p, out_port)) < 0)
		return rc;
	p->ports[in_port].input = -1;
	p->ports[in_port].bare_out = (int16_t)out_port;
	return 0;
}

struct pd_stage *pd_stage_get(struct pd_pipeline *p, int stage,
			      const char *type)
{
	if (stage < 0 || stage >= p->n_stages) {
		PD_ERR(EINVAL, "pipeline '%s' has no stage %d", p->name, stage);
		return NULL;
	}
	if (type && strcmp(p->stages[stage].ops->type, type) != 0) {
		PD_ERR(EINVAL, "stage '%s' is a %s, not a %s", p->stages[stage].name,
		       p->stages[stage].ops->type, type);
		return NULL;
	}
	return &p->stages[stage];
}

/* ---- counters ----------------------------------------------------------- */
static int ctr_add(struct pd_pipeline *p, unsigned *cap, const char *fmt, ...)
	__rte_format_printf(3, 4);

static int ctr_add(struct pd_pipeline *p, unsigned *cap, const char *fmt, ...)
{
	va_list ap;

	if (p->n_ctr == *cap) {
		unsigned ncap = *cap ? *cap * 2 : 64;
		void *n = realloc(p->ctr_names, ncap * sizeof(*p->ctr_names));

		if (!n)
			return PD_ERR(ENOMEM, "out of memory");
		p->ctr_names = n;
		*cap = ncap;
	}
	va_start(ap, fmt);
	vsnprintf(p->ctr_names[p->n_ctr], sizeof(p->ctr_names[0]), fmt, ap);
	va_end(ap);
	return (int)p->n_ctr++;
}

static int build_counters(struct pd_pipeline *p)
{
	unsigned cap = 0, i, k;
	int rc = 0;

	p->n_ctr = 0;
	for (i = 0; i < p->n_ports; i++) {
		static const char *const pn[PD_PCTR_N] = {
			"rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
			"drop/tx_full" };

		p->ports[i].ctr = (uint16_t)p->n_ctr;
		for (k = 0; k < PD_PCTR_N; k++)
			if ((rc = ctr_add(p, &cap, "port/%s/%s", p->ports[i].name,
					  pn[k])) < 0)
				return rc;
	}
	for (i = 0; i < p->n_stages; i++) {
		struct pd_stage *st = &p->stages[i];
		const struct pd_stage_ops *ops = st->ops;

		st->ctr_in = (uint16_t)p->n_ctr;
		if ((rc = ctr_add(p, &cap, "stage/%s/in", st->name)) < 0)
			return rc;
		st->ctr_drop = (uint16_t)p->n_ctr;
		st->n_drops = (uint16_t)count_names(ops->drops);
		for (k = 0; k < st->n_drops; k++)
			if ((rc = ctr_add(p, &cap, "stage/%s/drop/%s", st->name,
					  ops->drops[k])) < 0)
				return rc;
		st->ctr_extra = (uint16_t)p->n_ctr;
		for (k = 0; ops->extra && ops->extra[k]; k++)
			if ((rc = ctr_add(p, &cap, "stage/%s/%s", st->name,
					  ops->extra[k])) < 0)
				return rc;
		st->ctr_cycles = (uint16_t)p->n_ctr;
		if ((rc = ctr_add(p, &cap, "stage/%s/cycles", st->name)) < 0)
			return rc;
	}
	/* one cache-line multiple per worker row: no false sharing */
	p->stride = RTE_ALIGN_CEIL(p->n_ctr, RTE_CACHE_LINE_SIZE / sizeof(uint64_t));
	p->ctr = rte_zmalloc("pd_ctr", (size_t)p->stride * p->n_workers *
			     sizeof(uint64_t), RTE_CACHE_LINE_SIZE);
	if (!p->ctr)
		return PD_ERR(ENOMEM, "out of memory for counters");
	return 0;
}

int pd_pipeline_build(struct pd_pipeline *p, struct pd_pool *pool,
		      const unsigned *lcores, unsigned n_workers)
{
	unsigned i, w;
	size_t sz;
	int rc, e;

	if (p->built)
		return PD_ERR(EBUSY, "pipeline '%s' is already built", p->name);
	if (n_workers < 1 || n_workers > PD_MAX_WORKERS)
		return PD_ERR(EINVAL, "pipeline '%s': %u workers (1..%d allowed)",
			      p->name, n_workers, PD_MAX_WORKERS);
	for (w = 0; w < n_workers; w++) {
		if (pd_lcore_role(lcores[w]) != 2)
			return PD_ERR(EINVAL, "lcore %u is not a worker lcore of this "
				      "EAL (see --lcores)", lcores[w]);
		for (i = 0; i < w; i++)
			if (lcores[i] == lcores[w])
				return PD_ERR(EINVAL, "lcore %u listed twice", lcores[w]);
	}
	/* every stage that must pass packets on has somewhere to send them */
	for (i = 0; i < p->n_stages; i++) {
		struct pd_stage *st = &p->stages[i];

		if (st->ops->needs_next && st->next[0] < 0)
			return PD_ERR(EINVAL, "stage '%s' (%s) has no 'next'", st->name,
				      st->ops->type);
		for (e = 1; e < PD_MAX_EDGES; e++)
			if (st->next[e] < 0)
				st->next[e] = st->next[0];
	}
	for (i = 0; i < p->n_ports; i++) {
		struct pd_pport *pp = &p->ports[i];

		if (pp->input == -2)
			pp->input = p->n_stages ? 0 : -1;
		if (pp->n_txq < n_workers)
			return PD_ERR(EINVAL, "port '%s' has %u tx queues but the "
				      "pipeline runs %u workers (each needs its own)",
				      pp->name, pp->n_txq, n_workers);
	}
	p->n_workers = (uint16_t)n_workers;
	p->pool = pool;
	if ((rc = build_counters(p)) < 0)
		return rc;
	sz = rte_rcu_qsbr_get_memsize(n_workers);
	p->qs = rte_zmalloc("pd_qsbr", sz, RTE_CACHE_LINE_SIZE);
	if (!p->qs)
		return PD_ERR(ENOMEM, "out of memory for RCU state");
	rte_rcu_qsbr_init(p->qs, n_workers);
	for (w = 0; w < n_workers; w++) {
		struct pd_worker *wk = rte_zmalloc_socket("pd_worker", sizeof(*wk),
			RTE_CACHE_LINE_SIZE, (int)rte_lcore_to_socket_id(lcores[w]));

		if (!wk)
			return PD_ERR(ENOMEM, "out of memory for worker %u", w);
		wk->pl = p;
		wk->slot = (uint16_t)w;
		wk->lcore = lcores[w];
		wk->ctr = p->ctr + (size_t)w * p->stride;
		p->workers[w] = wk;
		rte_rcu_qsbr_thread_register(p->qs, w);
	}
	/* spread rx queues over workers: queue q of a port goes to worker q % n */
	for (i = 0; i < p->n_ports; i++) {
		struct pd_pport *pp = &p->ports[i];
		unsigned q, nq = pp->src ? 1 : pp->n_rxq;

		if (pp->input == -1 && pp->bare_out < 0)
			continue;  /* tx only */
		for (q = 0; q < nq; q++) {
			struct pd_worker *wk = p->workers[q % n_workers];
			struct pd_rxq *r;

			if (wk->n_rxq >= PD_MAX_RXQ)
				return PD_ERR(ENOSPC, "worker %u polls too many queues", q);
			r = &wk->rxq[wk->n_rxq++];
			r->port_idx = (uint16_t)i;
			r->port_id = pp->port_id;
			r->queue = (uint16_t)q;
			r->stage = pp->input;
			r->bare_out = pp->bare_out;
			r->src = pp->src;
		}
	}
	p->built = true;
	return 0;
}

uint64_t *pd_pipeline_counters(struct pd_pipeline *p, unsigned *rows,
			       unsigned *stride)
{
	*rows = p->n_workers;
	*stride = p->stride;
	return p->ctr;
}

unsigned pd_pipeline_n_counters(const struct pd_pipeline *p)
{
	return p->n_ctr;
}

const char *pd_pipeline_counter_name(const struct pd_pipeline *p, unsigned i)
{
	return i < p->n_ctr ? p->ctr_names[i] : NULL;
}

int pd_pipeline_set_stage_cycles(struct pd_pipeline *p, int on)
{
	/* workers pick it up at their next burst (relaxed: a burst or two
	 * timed or not around the switch is fine) */
	return __atomic_exchange_n(&p->stage_cycles, on ? 1 : 0, __ATOMIC_RELAXED);
}

/* ---- the fast path ------------------------------------------------------ */
void pd_drop_flush(struct pd_worker *w)
{
	rte_pktmbuf_free_bulk(w->drop.pkts, w->drop.n);
	w->drop.n = 0;
}

void pd_tx_send(struct pd_worker *w, uint16_t port_idx, struct rte_mbuf **pkts,
		uint16_t n)
{
	struct pd_pport *pp = &w->pl->ports[port_idx];
	uint16_t sent, i;
	uint64_t bytes = 0;

	for (i = 0; i < n; i++)
		bytes += rte_pktmbuf_pkt_len(pkts[i]);
	sent = rte_eth_tx_burst(pp->port_id, w->slot, pkts, n);
	if (unlikely(sent < n)) {
		/* what the queue refused is dropped and counted, as l3fwd does */
		for (i = sent; i < n; i++)
			bytes -= rte_pktmbuf_pkt_len(pkts[i]);
		w->ctr[pp->ctr + PD_PCTR_TX_FULL] += n - sent;
		rte_pktmbuf_free_bulk(pkts + sent, n - sent);
	}
	w->ctr[pp->ctr + PD_PCTR_TX] += sent;
	w->ctr[pp->ctr + PD_PCTR_TX_BYTES] += bytes;
}

void pd_tx_flush(struct pd_worker *w, uint16_t port_idx)
{
	struct pd_buf *b = &w->tx[port_idx];

	if (b->n == 0)
		return;
	pd_tx_send(w, port_idx, b->pkts, b->n);
	b->n = 0;
}

/*
 * run_stages() with stage_cycles on: rte_rdtsc() around each process() call,
 * the difference added to stage/<s>/cycles. What a stage's pd_tx() flushes
 * is charged to that stage. Out of line so the untimed loop stays as it was.
 */
static __rte_noinline void run_stages_timed(struct pd_worker *w, unsigned first)
{
	struct pd_pipeline *p = w->pl;
	unsigned i;

	for (i = first; i < p->n_stages; i++) {
		struct pd_buf *b = &w->in[i];
		struct pd_stage *st;
		uint16_t n = b->n;
		uint64_t t0;

		if (n == 0)
			continue;
		st = &p->stages[i];
		b->n = 0;
		w->ctr[st->ctr_in] += n;
		t0 = rte_rdtsc();
		st->ops->process(st, w, b->pkts, n);
		w->ctr[st->ctr_cycles] += rte_rdtsc() - t0;
	}
}

/*
 * Cost of the stage_cycles switch: run_bench('pipelines/forward.yaml',
 * duration=1), cpu_cycles_per_packet, 5 runs each, the three builds
 * interleaved, shared 2-CPU box (the bare rx->tx loop moved 48.9..50.2
 * meanwhile):
 *   without the switch  median 68.6  min 66.0  (66.0 66.2 68.6 71.6 81.0)
 *   switch off          median 72.0  min 65.4  (65.4 65.6 72.0 72.7 75.0)
 *   switch on           median 70.8  min 64.4  (64.4 65.9 70.8 73.5 91.7)
 * All within the noise (+-5): off adds one load and one predictable branch
 * per burst (< 0.1 cycle/packet in theory); on adds two rdtsc per stage per
 * burst (~20-25 cycles each: ~3 cycles/packet for 2 stages, 32-packet
 * bursts). An earlier non-interleaved pair gave 65.6 without, 68.9 off.
 */
static void run_stages(struct pd_worker *w, unsigned first)
{
	struct pd_pipeline *p = w->pl;
	unsigned i;

	/* one relaxed load and one predictable branch per burst; no rdtsc */
	if (unlikely(__atomic_load_n(&p->stage_cycles, __ATOMIC_RELAXED))) {
		run_stages_timed(w, first);
		return;
	}
	for (i = first; i < p->n_stages; i++) {
		struct pd_buf *b = &w->in[i];
		struct pd_stage *st;
		uint16_t n = b->n;

		if (n == 0)
			continue;
		st = &p->stages[i];
		b->n = 0;
		w->ctr[st->ctr_in] += n;
		st->ops->process(st, w, b->pkts, n);
	}
}

static inline void rx_account(struct pd_worker *w, const struct pd_rxq *r,
			      struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_pport *pp = &w->pl->ports[r->port_idx];
	uint64_t bytes = 0;
	uint16_t i;

	for (i = 0; i < n; i++)
		bytes += rte_pktmbuf_pkt_len(pkts[i]);
	w->ctr[pp->ctr + PD_PCTR_RX] += n;
	w->ctr[pp->ctr + PD_PCTR_RX_BYTES] += bytes;
}

/* rx_account() that also stamps each packet's input port, in one pass */
static inline void rx_account_in(struct pd_worker *w, const struct pd_rxq *r,
				 struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_pport *pp = &w->pl->ports[r->port_idx];
	const uint16_t in_port = r->port_idx;
	const int moff = pd_meta_offset;
	uint64_t bytes = 0;
	uint16_t i;

	for (i = 0; i < n; i++) {
		bytes += rte_pktmbuf_pkt_len(pkts[i]);
		RTE_MBUF_DYNFIELD(pkts[i], moff, struct pd_meta *)->in_port = in_port;
	}
	w->ctr[pp->ctr + PD_PCTR_RX] += n;
	w->ctr[pp->ctr + PD_PCTR_RX_BYTES] += bytes;
}

static int worker_main(void *arg)
{
	struct pd_worker *w = arg;
	struct pd_pipeline *p = w->pl;
	struct rte_mempool *mp = pd_pool_mp(p->pool);
	unsigned r, port;

	rte_rcu_qsbr_thread_online(p->qs, w->slot);
	while (__atomic_load_n(&p->running, __ATOMIC_RELAXED)) {
		for (r = 0; r < w->n_rxq; r++) {
			const struct pd_rxq *q = &w->rxq[r];
			struct rte_mbuf **pkts;
			uint16_t n;

			if (q->bare_out >= 0) {
				/* the bare rx->tx loop, the benchmarks' baseline */
				struct pd_buf *tb = &w->tx[q->bare_out];

				n = rte_eth_rx_burst(q->port_id, q->queue,
						     tb->pkts + tb->n, PD_BURST);
				if (n == 0)
					continue;
				rx_account(w, q, tb->pkts + tb->n, n);
				tb->n += n;
				pd_tx_flush(w, (uint16_t)q->bare_out);
				continue;
			}
			pkts = w->in[q->stage].pkts;
			if (q->src)
				n = pd_source_burst(q->src, mp, pkts, PD_BURST);
			else
				n = rte_eth_rx_burst(q->port_id, q->queue, pkts,
						     PD_BURST);
			if (n == 0)
				continue;
			rx_account_in(w, q, pkts, n);
			w->in[q->stage].n = n;
#ifndef PD_NO_OBS
			/* observability (pd_trace.c): trace or capture armed?
			 * one relaxed load, one predictable branch per burst */
			if (unlikely(__atomic_load_n(&p->obs_armed,
						     __ATOMIC_RELAXED)))
				pd_obs_burst(w, (unsigned)q->stage, q);
			else
#endif
				run_stages(w, (unsigned)q->stage);
			if (w->drop.n)
				pd_drop_flush(w);
		}
		for (port = 0; port < p->n_ports; port++)
			pd_tx_flush(w, (uint16_t)port);
		rte_rcu_qsbr_quiescent(p->qs, w->slot);
	}
	for (port = 0; port < p->n_ports; port++)
		pd_tx_flush(w, (uint16_t)port);
	pd_drop_flush(w);
	rte_rcu_qsbr_thread_offline(p->qs, w->slot);
	return 0;
}

int pd_pipeline_start(struct pd_pipeline *p)
{
	unsigned w;
	int rc;

	if (!p->built)
		return PD_ERR(EINVAL, "pipeline '%s' is not built", p->name);
	if (p->running)
		return PD_ERR(EBUSY, "pipeline '%s' is already running", p->name);
	__atomic_store_n(&p->running, 1, __ATOMIC_RELEASE);
	for (w = 0; w < p->n_workers; w++) {
		rc = rte_eal_remote_launch(worker_main, p->workers[w],
					   p->workers[w]->lcore);
		if (rc < 0) {
			rc = PD_ERR(-rc, "lcore %u is busy (another pipeline runs on "
				    "it?)", p->workers[w]->lcore);
			p->launched = (int)w;
			pd_pipeline_stop(p);
			return rc;
		}
	}
	p->launched = p->n_workers;
	return 0;
}

int pd_pipeline_stop(struct pd_pipeline *p)
{
	int w;

	if (!p->running)
		return 0;
	__atomic_store_n(&p->running, 0, __ATOMIC_RELEASE);
	for (w = 0; w < p->launched; w++)
		rte_eal_wait_lcore(p->workers[w]->lcore);
	p->launched = 0;
	return 0;
}

int pd_pipeline_running(const struct pd_pipeline *p)
{
	return p->running;
}

/* ---- RCU table swap ----------------------------------------------------- */
void pd_rcu_swap(struct pd_pipeline *p, void **slot, void *new_ptr,
		 void (*free_fn)(void *))
{
	void *old = __atomic_exchange_n(slot, new_ptr, __ATOMIC_ACQ_REL);

	if (!old)
		return;
	/* workers that are offline (pipeline stopped, or not built) hold no
	 * reference; the others report a quiescent state every loop */
	if (p->qs)
		rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
	free_fn(old);
}
