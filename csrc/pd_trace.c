/* SPDX-License-Identifier: BSD-3-Clause
 * pd_trace.c - packet trace, as VPP's: the next N packets that match a
 * filter, the stages each went through, its verdict and its table hits.
 *
 * Off, the worker loop pays one relaxed load and one predictable branch per
 * rx burst (p->obs_armed, in pd_pipeline.c). Armed, the burst comes here:
 *
 * - rx: the filter (a pcap-filter expression compiled by libpcap and
 *   converted to eBPF by rte_bpf_convert, JIT-run by rte_bpf) picks the
 *   packets; each takes a record from the worker's preallocated ring while
 *   the shared count lasts, with the first PD_TRACE_SNAP bytes of the frame.
 * - stages: pd_obs_burst walks the stages as run_stages does, but a traced
 *   packet gets a process() call of its own (untraced neighbours are still
 *   processed in runs, in order). Before that call the tx and drop buffers
 *   are flushed, so afterwards the one packet shows up in exactly the buffer
 *   its verdict put it in: a later stage's input (emit, edge named), a
 *   port's tx buffer (tx), or the drop buffer with the reason whose counter
 *   moved (drop). Nothing in the verdict helpers changes, nothing is stored
 *   in the mbuf, and parse resetting pd_meta.flags does not matter.
 * - hits: stages call pd_trace_hit() (pd_internal.h), which only acts while
 *   w->trace_cur is set, i.e. inside that one-packet call.
 *
 * Records are published per worker with a release store of `done` at the
 * end of the burst; the control thread copies them out (pd_trace_read).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <pcap/pcap.h>
#include <rte_bpf.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "pd_internal.h"

struct pd_trace_ring {
	struct pd_trace_rec *rec;      /* `count` records */
	uint32_t head;                 /* worker: records taken */
	uint32_t done;                 /* worker -> control (release): finished */
	uint32_t read;                 /* control: copied out so far */
} __rte_cache_aligned;

struct pd_trace {
	int64_t remaining;             /* packets still to trace (atomic) */
	uint64_t seq;                  /* match order over all workers (atomic) */
	unsigned count;
	struct rte_bpf *bpf;           /* NULL: every packet matches */
	struct pd_trace_ring ring[PD_MAX_WORKERS];
};

static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- filters: pcap-filter -> classic BPF (libpcap) -> eBPF (rte_bpf) ---- */
int pd_bpf_compile(const char *expr, struct rte_bpf **out)
{
	struct bpf_program prog;
	struct rte_bpf_prm *prm;
	pcap_t *pc;
	int rc;

	*out = NULL;
	if (!expr || !*expr)
		return 0;
	pc = pcap_open_dead(DLT_EN10MB, 65535);
	if (!pc)
		return PD_ERR(ENOMEM, "filter: libpcap is out of memory");
	if (pcap_compile(pc, &prog, expr, 1, PCAP_NETMASK_UNKNOWN) != 0) {
		rc = PD_ERR(EINVAL, "filter '%s': %s", expr, pcap_geterr(pc));
		pcap_close(pc);
		return rc;
	}
	prm = rte_bpf_convert(&prog);
	pcap_freecode(&prog);
	pcap_close(pc);
	if (!prm)
		return PD_ERR(rte_errno ? rte_errno : EINVAL, "filter '%s': cannot "
			      "convert to eBPF: %s", expr, rte_strerror(rte_errno));
	*out = rte_bpf_load(prm);
	rc = rte_errno;
	rte_free(prm);
	if (!*out)
		return PD_ERR(rc ? rc : EINVAL, "filter '%s': rte_bpf refused it: %s",
			      expr, rte_strerror(rc));
	return 0;
}

int pd_filter_check(const char *filter)
{
	struct rte_bpf *bpf;
	int rc = pd_bpf_compile(filter, &bpf);

	if (bpf)
		rte_bpf_destroy(bpf);
	return rc;
}

void pd_bpf_match(const struct rte_bpf *bpf, struct rte_mbuf **pkts,
		  uint16_t n, uint64_t *rc)
{
	struct rte_bpf_jit jit;
	uint16_t i;

	if (!bpf) {
		for (i = 0; i < n; i++)
			rc[i] = 1;
		return;
	}
	if (rte_bpf_get_jit(bpf, &jit) == 0 && jit.func) {
		for (i = 0; i < n; i++)
			rc[i] = jit.func(pkts[i]);
		return;
	}
	rte_bpf_exec_burst(bpf, (void **)pkts, rc, n);
}

/* ---- the fast path (armed only) ------------------------------------------- */
struct obs_tp {
	struct rte_mbuf *m;
	struct pd_trace_rec *r;
};

static inline void ev_add(struct pd_trace_rec *r, uint8_t kind, unsigned stage,
			  unsigned arg, uint32_t value)
{
	struct pd_trace_event *e;

	if (r->n_events >= PD_TRACE_EVENTS) {
		r->lost_events++;
		return;
	}
	e = &r->ev[r->n_events++];
	e->kind = kind;
	e->stage = (uint8_t)stage;
	e->arg = (uint16_t)arg;
	e->value = value;
	e->tsc = rte_rdtsc();
}

void pd_trace_hit_slow(struct pd_worker *w, struct pd_stage *st, unsigned kind,
		       uint32_t id)
{
	ev_add(w->trace_cur, PD_TRACE_EV_HIT, (unsigned)(st - st->pl->stages),
	       kind, id);
}

static unsigned trace_rx(struct pd_worker *w, struct pd_trace *t,
			 const struct pd_rxq *q, struct rte_mbuf **pkts,
			 uint16_t n, struct obs_tp *tp)
{
	struct pd_trace_ring *rg = &t->ring[w->slot];
	uint64_t rc[2 * PD_BURST];
	uint64_t now = rte_rdtsc();
	unsigned ntp = 0;
	uint16_t i;

	n = RTE_MIN(n, (uint16_t)(2 * PD_BURST));
	pd_bpf_match(t->bpf, pkts, n, rc);
	for (i = 0; i < n; i++) {
		struct pd_trace_rec *r;
		const void *d;
		uint32_t len;

		if (!rc[i])
			continue;
		if (rg->head >= t->count ||
		    __atomic_fetch_sub(&t->remaining, 1, __ATOMIC_RELAXED) <= 0) {
			/* the count is used up: back to the plain loop */
			__atomic_fetch_and(&w->pl->obs_armed, ~PD_OBS_TRACE,
					   __ATOMIC_RELAXED);
			break;
		}
		r = &rg->rec[rg->head++];
		len = rte_pktmbuf_pkt_len(pkts[i]);
		r->seq = __atomic_fetch_add(&t->seq, 1, __ATOMIC_RELAXED);
		r->tsc = now;
		r->pkt_len = len;
		r->snap_len = (uint16_t)RTE_MIN(len, (uint32_t)PD_TRACE_SNAP);
		r->in_port = q->port_idx;
		r->queue = q->queue;
		r->worker = w->slot;
		r->n_events = 0;
		r->lost_events = 0;
		d = rte_pktmbuf_read(pkts[i], 0, r->snap_len, r->data);
		if (d && d != r->data)
			memcpy(r->data, d, r->snap_len);
		tp[ntp].m = pkts[i];
		tp[ntp++].r = r;
	}
	return ntp;
}

static inline void obs_process(struct pd_stage *st, struct pd_worker *w,
			       struct rte_mbuf **pkts, uint16_t n, bool timed)
{
	uint64_t t0;

	if (!timed) {
		st->ops->process(st, w, pkts, n);
		return;
	}
	t0 = rte_rdtsc();
	st->ops->process(st, w, pkts, n);
	w->ctr[st->ctr_cycles] += rte_rdtsc() - t0;
}

static int edge_to(const struct pd_stage *st, unsigned j)
{
	unsigned e;

	for (e = 0; e < PD_MAX_EDGES && st->ops->edges && st->ops->edges[e]; e++)
		if (st->next[e] == (int16_t)j)
			return (int)e;
	return 0;
}

/* One traced packet through stage i alone: read its verdict off the buffers. */
static void obs_one(struct pd_worker *w, struct pd_stage *st, unsigned i,
		    struct obs_tp *tp, bool timed)
{
	struct pd_pipeline *p = w->pl;
	struct pd_trace_rec *r = tp->r;
	struct rte_mbuf *m = tp->m;
	uint16_t in_n[PD_MAX_STAGES];
	uint64_t d0[64];
	unsigned j, k, port, verdicts = 0, nd = RTE_MIN(st->n_drops, 64);

	for (port = 0; port < p->n_ports; port++)
		if (w->tx[port].n)
			pd_tx_flush(w, (uint16_t)port);
	if (w->drop.n)
		pd_drop_flush(w);
	for (j = i + 1; j < p->n_stages; j++)
		in_n[j] = w->in[j].n;
	for (k = 0; k < nd; k++)
		d0[k] = w->ctr[st->ctr_drop + k];
	ev_add(r, PD_TRACE_EV_STAGE, i, 0, 0);
	w->trace_cur = r;
	w->trace_m = m;
	obs_process(st, w, &m, 1, timed);
	w->trace_cur = NULL;
	w->trace_m = NULL;
	for (j = i + 1; j < p->n_stages; j++)
		for (k = in_n[j]; k < w->in[j].n; k++) {
			if (w->in[j].pkts[k] == m) {
				ev_add(r, PD_TRACE_EV_EMIT, i, (unsigned)edge_to(st, j), j);
				verdicts++;
			} else {
				ev_add(r, PD_TRACE_EV_COPY, i, 0, j + 1);
			}
		}
	for (port = 0; port < p->n_ports; port++)
		for (k = 0; k < w->tx[port].n; k++) {
			if (w->tx[port].pkts[k] == m) {
				ev_add(r, PD_TRACE_EV_TX, i, port, 0);
				verdicts++;
				tp->m = NULL;   /* gone: never match a reused mbuf */
			} else {
				ev_add(r, PD_TRACE_EV_COPY, i, port, 0);
			}
		}
	if (w->drop.n) {
		unsigned reason = 0;

		for (k = 0; k < nd; k++)
			if (w->ctr[st->ctr_drop + k] != d0[k]) {
				reason = k;
				break;
			}
		ev_add(r, PD_TRACE_EV_DROP, i, reason, 0);
		verdicts++;
		tp->m = NULL;
	}
	if (!verdicts)
		ev_add(r, PD_TRACE_EV_HELD, i, 0, 0);
}

static void obs_stage_traced(struct pd_worker *w, struct pd_stage *st,
			     unsigned i, struct rte_mbuf **pkts, uint16_t n,
			     struct obs_tp *tp, unsigned ntp, bool timed)
{
	uint16_t s = 0, k;
	unsigned t;

	for (k = 0; k < n; k++) {
		for (t = 0; t < ntp; t++)
			if (tp[t].m == pkts[k])
				break;
		if (t == ntp)
			continue;
		if (k > s)
			obs_process(st, w, pkts + s, (uint16_t)(k - s), timed);
		obs_one(w, st, i, &tp[t], timed);
		s = (uint16_t)(k + 1);
	}
	if (n > s)
		obs_process(st, w, pkts + s, (uint16_t)(n - s), timed);
}

void pd_obs_burst(struct pd_worker *w, unsigned first, const struct pd_rxq *q)
{
	struct pd_pipeline *p = w->pl;
	int armed = __atomic_load_n(&p->obs_armed, __ATOMIC_ACQUIRE);
	struct pd_trace *t = (armed & PD_OBS_TRACE) ?
		__atomic_load_n(&p->trace, __ATOMIC_ACQUIRE) : NULL;
	bool cap = armed & PD_OBS_CAPTURE;
	bool timed = __atomic_load_n(&p->stage_cycles, __ATOMIC_RELAXED);
	struct obs_tp tp[2 * PD_BURST];
	struct pd_buf *b0 = &w->in[first];
	unsigned i, ntp = 0;

	if (cap)
		pd_capture_rx(w, q->port_idx, q->queue, b0->pkts, b0->n);
	if (t)
		ntp = trace_rx(w, t, q, b0->pkts, b0->n, tp);
	for (i = first; i < p->n_stages; i++) {
		struct pd_buf *b = &w->in[i];
		struct pd_stage *st;
		uint16_t n = b->n;

		if (n == 0)
			continue;
		st = &p->stages[i];
		b->n = 0;
		w->ctr[st->ctr_in] += n;
		if (cap)
			pd_capture_stage(w, i, b->pkts, n);
		if (ntp)
			obs_stage_traced(w, st, i, b->pkts, n, tp, ntp, timed);
		else
			obs_process(st, w, b->pkts, n, timed);
	}
	if (ntp) {
		struct pd_trace_ring *rg = &t->ring[w->slot];

		__atomic_store_n(&rg->done, rg->head, __ATOMIC_RELEASE);
	}
}

/* ---- control ----------------------------------------------------------- */
static void trace_free(struct pd_trace *t)
{
	unsigned w;

	if (!t)
		return;
	for (w = 0; w < PD_MAX_WORKERS; w++)
		rte_free(t->ring[w].rec);
	if (t->bpf)
		rte_bpf_destroy(t->bpf);
	rte_free(t);
}

/* Clear `bit` and wait until no worker can still be in an armed burst. */
static void obs_disarm(struct pd_pipeline *p, int bit)
{
	__atomic_fetch_and(&p->obs_armed, ~bit, __ATOMIC_RELEASE);
	if (p->qs)
		rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
}

int pd_trace_start(struct pd_pipeline *p, unsigned count, const char *filter)
{
	struct pd_trace *t, *old;
	unsigned w;
	int rc;

#ifdef PD_NO_OBS
	(void)p;
	(void)count;
	(void)filter;
	return PD_ERR(ENOTSUP, "this pydp is built without trace (-Dobs=false)");
#endif
	if (!p->built)
		return PD_ERR(EINVAL, "pipeline '%s' is not built", p->name);
	if (count < 1 || count > PD_TRACE_MAX)
		return PD_ERR(EINVAL, "trace: count %u (1..%d allowed)", count,
			      PD_TRACE_MAX);
	t = rte_zmalloc("pd_trace", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (!t)
		return PD_ERR(ENOMEM, "trace: out of memory");
	for (w = 0; w < p->n_workers; w++) {
		t->ring[w].rec = rte_zmalloc("pd_trace_rec",
					     (size_t)count * sizeof(struct pd_trace_rec),
					     RTE_CACHE_LINE_SIZE);
		if (!t->ring[w].rec) {
			trace_free(t);
			return PD_ERR(ENOMEM, "trace: out of memory for %u records",
				      count);
		}
	}
	if ((rc = pd_bpf_compile(filter, &t->bpf)) < 0) {
		trace_free(t);
		return rc;
	}
	t->count = count;
	t->remaining = count;
	pthread_mutex_lock(&trace_lock);
	old = p->trace;
	obs_disarm(p, PD_OBS_TRACE);
	__atomic_store_n(&p->trace, t, __ATOMIC_RELEASE);
	__atomic_fetch_or(&p->obs_armed, PD_OBS_TRACE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&trace_lock);
	trace_free(old);
	return 0;
}

int pd_trace_read(struct pd_pipeline *p, struct pd_trace_rec *out, unsigned max)
{
	struct pd_trace *t;
	unsigned w, k = 0;

	pthread_mutex_lock(&trace_lock);
	t = p->trace;
	if (!t) {
		pthread_mutex_unlock(&trace_lock);
		return PD_ERR(ENOENT, "pipeline '%s': no trace (pd_trace_start)",
			      p->name);
	}
	for (w = 0; w < p->n_workers && k < max; w++) {
		struct pd_trace_ring *rg = &t->ring[w];
		uint32_t done = __atomic_load_n(&rg->done, __ATOMIC_ACQUIRE);

		while (rg->read < done && k < max)
			out[k++] = rg->rec[rg->read++];
	}
	pthread_mutex_unlock(&trace_lock);
	return (int)k;
}

int pd_trace_remaining(struct pd_pipeline *p)
{
	struct pd_trace *t;
	int64_t r;

	pthread_mutex_lock(&trace_lock);
	t = p->trace;
	r = t ? __atomic_load_n(&t->remaining, __ATOMIC_RELAXED) : 0;
	pthread_mutex_unlock(&trace_lock);
	return r > 0 ? (int)r : 0;
}

int pd_trace_stop(struct pd_pipeline *p)
{
	struct pd_trace *t;

	pthread_mutex_lock(&trace_lock);
	t = p->trace;
	obs_disarm(p, PD_OBS_TRACE);
	p->trace = NULL;
	pthread_mutex_unlock(&trace_lock);
	trace_free(t);
	return 0;
}

int pd_obs_armed(const struct pd_pipeline *p)
{
	return __atomic_load_n(&p->obs_armed, __ATOMIC_RELAXED);
}

void pd_obs_free(struct pd_pipeline *p)
{
	pd_trace_stop(p);
	if (p->cap)
		pd_capture_stop(p, NULL);
}
