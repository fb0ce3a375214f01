/* SPDX-License-Identifier: BSD-3-Clause
 * pd_capture.c - capture to pcapng from a running pipeline, with rte_pcapng.
 *
 * Workers copy (rte_pcapng_copy, into a capture pool of their own) what a
 * port receives (in pd_obs_burst, so generated traffic counts too) and
 * sends (an ethdev tx callback on each of the port's tx queues), or what
 * enters a stage, and enqueue the copies on a ring. The control thread
 * drains the ring into the file (pd_capture_poll: rte_pcapng_write_packets)
 * and frees them. A full ring or an empty pool loses the copy, never the
 * packet, and is counted (`dropped`). Off, it costs what trace costs: one
 * branch per burst (p->obs_armed); the ethdev tx callback exists only while
 * a port capture runs.
 *
 * rte_pcapng of DPDK 22.11 writes one interface block per ethdev port at
 * open time (in RTE_ETH_FOREACH_DEV order) and takes the interface index as
 * "port_id" in rte_pcapng_copy: ifidx[] maps pipeline ports to that order,
 * which differs from the port id once ports have come and gone.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_bpf.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_pcapng.h>
#include <rte_ring.h>

#include "pd_internal.h"

#define CAP_RING 4096
#define CAP_POOL 8191
#define CAP_DEFAULT_SNAP 9216

struct cap_wctr {
	uint64_t dropped;
} __rte_cache_aligned;

struct pd_capture;

/* what the tx callback gets: lives in the capture, freed after the grace
 * period that follows the callbacks' removal */
struct cap_cb_arg {
	struct pd_pipeline *p;
	struct pd_capture *c;
};

struct pd_capture {
	int16_t port;                  /* pipeline port index, or -1 */
	int16_t stage;                 /* stage index, or -1 */
	int active;                    /* workers copy while 1 (atomic) */
	int counted;                   /* a count was given */
	uint32_t snaplen;
	int64_t remaining;             /* atomic */
	struct rte_bpf *bpf;
	struct rte_mempool *mp;
	struct rte_ring *ring;
	rte_pcapng_t *pcapng;
	uint64_t written;
	uint64_t base_ns;              /* wall clock at start ... */
	uint64_t base_tsc;             /* ... and the TSC then */
	uint64_t tsc_hz;
	uint16_t ifidx[PD_MAX_PORTS];
	const struct rte_eth_rxtx_callback *txcb[PD_MAX_WORKERS];
	uint16_t n_txcb;
	struct cap_cb_arg cb;
	struct cap_wctr wctr[PD_MAX_WORKERS];
};

static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Timestamps. rte_pcapng of 22.11 converts TSC to wall time with constants
 * taken in a constructor, before the EAL knows the TSC rate, so its stamps
 * land centuries off. We write the enhanced packet block's timestamp (ns,
 * the resolution rte_pcapng declares) ourselves from our own base.
 */
static inline void cap_stamp(const struct pd_capture *c, struct rte_mbuf *m,
			     uint64_t tsc)
{
	uint32_t *epb = rte_pktmbuf_mtod(m, uint32_t *);
	uint64_t ns = c->base_ns + (uint64_t)((unsigned __int128)(tsc - c->base_tsc)
					      * 1000000000u / c->tsc_hz);

	/* block type, length, interface id, timestamp high, timestamp low */
	epb[3] = (uint32_t)(ns >> 32);
	epb[4] = (uint32_t)ns;
}
static unsigned cap_seq;

/* Worker: copy the matching packets of one burst. port_idx < 0: the
 * interface is each packet's input port. */
static void cap_copy(struct pd_pipeline *p, struct pd_capture *c, unsigned slot,
		     int port_idx, uint32_t queue, struct rte_mbuf **pkts,
		     uint16_t n, enum rte_pcapng_direction dir)
{
	struct rte_mbuf *cp[2 * PD_BURST];
	uint64_t rc[2 * PD_BURST];
	uint64_t now;
	unsigned i, k = 0, e;

	if (!__atomic_load_n(&c->active, __ATOMIC_RELAXED))
		return;
	n = RTE_MIN(n, (uint16_t)(2 * PD_BURST));
	pd_bpf_match(c->bpf, pkts, n, rc);
	now = rte_get_tsc_cycles();
	for (i = 0; i < n; i++) {
		unsigned ifp;

		if (!rc[i])
			continue;
		if (c->counted) {
			int64_t r = __atomic_fetch_sub(&c->remaining, 1,
						       __ATOMIC_RELAXED);

			if (r <= 0)
				break;
			if (r == 1) {
				/* the last one: back to the plain loop after it */
				__atomic_store_n(&c->active, 0, __ATOMIC_RELAXED);
				__atomic_fetch_and(&p->obs_armed, ~PD_OBS_CAPTURE,
						   __ATOMIC_RELAXED);
			}
		}
		ifp = port_idx >= 0 ? (unsigned)port_idx : pd_meta(pkts[i])->in_port;
		cp[k] = rte_pcapng_copy(c->ifidx[ifp < PD_MAX_PORTS ? ifp : 0],
					queue, pkts[i], c->mp, c->snaplen, now, dir);
		if (cp[k])
			cap_stamp(c, cp[k++], now);
		else
			c->wctr[slot].dropped++;
	}
	if (!k)
		return;
	e = rte_ring_mp_enqueue_burst(c->ring, (void **)cp, k, NULL);
	if (e < k) {
		c->wctr[slot].dropped += k - e;
		rte_pktmbuf_free_bulk(cp + e, k - e);
	}
}

void pd_capture_rx(struct pd_worker *w, uint16_t port_idx, uint16_t queue,
		   struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_capture *c = __atomic_load_n(&w->pl->cap, __ATOMIC_ACQUIRE);

	if (c && c->port == (int16_t)port_idx)
		cap_copy(w->pl, c, w->slot, port_idx, queue, pkts, n,
			 RTE_PCAPNG_DIRECTION_IN);
}

void pd_capture_stage(struct pd_worker *w, unsigned stage,
		      struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_capture *c = __atomic_load_n(&w->pl->cap, __ATOMIC_ACQUIRE);

	if (c && c->stage == (int16_t)stage)
		cap_copy(w->pl, c, w->slot, -1, 0, pkts, n,
			 RTE_PCAPNG_DIRECTION_UNKNOWN);
}


/* ethdev tx callback: runs in rte_eth_tx_burst on the worker that owns
 * tx queue `queue` (= its slot) */
static uint16_t cap_tx_cb(uint16_t port_id, uint16_t queue,
			  struct rte_mbuf **pkts, uint16_t n, void *arg)
{
	struct cap_cb_arg *a = arg;
	uint16_t i;

	RTE_SET_USED(port_id);
	for (i = 0; i < n; i += 2 * PD_BURST)
		cap_copy(a->p, a->c, queue < PD_MAX_WORKERS ? queue : 0, a->c->port,
			 queue, pkts + i, (uint16_t)RTE_MIN(n - i, 2 * PD_BURST),
			 RTE_PCAPNG_DIRECTION_OUT);
	return n;
}

static void cap_free(struct pd_capture *c)
{
	if (!c)
		return;
	if (c->pcapng)
		rte_pcapng_close(c->pcapng);
	rte_ring_free(c->ring);
	rte_mempool_free(c->mp);
	if (c->bpf)
		rte_bpf_destroy(c->bpf);
	rte_free(c);
}

static void cap_drain(struct pd_capture *c)
{
	struct rte_mbuf *pkts[64];
	unsigned n;

	while ((n = rte_ring_sc_dequeue_burst(c->ring, (void **)pkts, 64, NULL))) {
		if (rte_pcapng_write_packets(c->pcapng, pkts, (uint16_t)n) >= 0)
			c->written += n;
		else
			c->wctr[0].dropped += n;   /* write error: lost, counted */
		rte_pktmbuf_free_bulk(pkts, n);
	}
}

static void cap_info(const struct pd_capture *c, unsigned n_workers,
		     struct pd_capture_info *info)
{
	unsigned w;
	int64_t r;

	if (!info)
		return;
	memset(info, 0, sizeof(*info));
	info->written = c->written;
	for (w = 0; w < n_workers; w++)
		info->dropped += __atomic_load_n(&c->wctr[w].dropped, __ATOMIC_RELAXED);
	r = __atomic_load_n(&c->remaining, __ATOMIC_RELAXED);
	info->remaining = c->counted && r > 0 ? (uint64_t)r : 0;
	info->active = __atomic_load_n(&c->active, __ATOMIC_RELAXED);
}

int pd_capture_start(struct pd_pipeline *p, const char *path, int port,
		     int stage, unsigned count, unsigned snaplen,
		     const char *filter)
{
	struct pd_capture *c;
	char name[RTE_MEMPOOL_NAMESIZE], comment[256];
	uint16_t pid, k = 0;
	unsigned i, w, seq;
	uint32_t room;
	int fd, rc;

#ifdef PD_NO_OBS
	return PD_ERR(ENOTSUP, "this pydp is built without capture (-Dobs=false)");
#endif
	if (!p->built)
		return PD_ERR(EINVAL, "pipeline '%s' is not built", p->name);
	if ((port < 0) == (stage < 0))
		return PD_ERR(EINVAL, "capture: give a port or a stage (one of them)");
	if (port >= 0 && (rc = pd_port_idx_check(p, port)) < 0)
		return rc;
	if (stage >= 0 && stage >= p->n_stages)
		return PD_ERR(EINVAL, "capture: pipeline '%s' has no stage %d",
			      p->name, stage);
	pthread_mutex_lock(&cap_lock);
	if (p->cap) {
		pthread_mutex_unlock(&cap_lock);
		return PD_ERR(EBUSY, "pipeline '%s': a capture is already running "
			      "(one at a time)", p->name);
	}
	c = rte_zmalloc("pd_capture", sizeof(*c), RTE_CACHE_LINE_SIZE);
	if (!c) {
		rc = PD_ERR(ENOMEM, "capture: out of memory");
		goto fail;
	}
	c->port = (int16_t)port;
	c->stage = (int16_t)stage;
	c->counted = count > 0;
	c->remaining = count;
	c->snaplen = snaplen ? snaplen : CAP_DEFAULT_SNAP;
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		c->base_tsc = rte_get_tsc_cycles();
		c->base_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		c->tsc_hz = rte_get_tsc_hz() ? rte_get_tsc_hz() : 1;
	}
	if ((rc = pd_bpf_compile(filter, &c->bpf)) < 0)
		goto fail;
	seq = __atomic_fetch_add(&cap_seq, 1, __ATOMIC_RELAXED);
	snprintf(name, sizeof(name), "pdcap%u", seq);
	/* copies of longer frames chain segments (rte_pktmbuf_copy) */
	room = rte_pcapng_mbuf_size(RTE_MIN(c->snaplen, 2048u));
	c->mp = rte_pktmbuf_pool_create(name, CAP_POOL, 128, 0, (uint16_t)room,
					SOCKET_ID_ANY);
	if (!c->mp) {
		rc = PD_ERR(rte_errno ? rte_errno : ENOMEM, "capture: cannot create "
			    "its mbuf pool: %s", rte_strerror(rte_errno));
		goto fail;
	}
	snprintf(name, sizeof(name), "pdcapr%u", seq);
	c->ring = rte_ring_create(name, CAP_RING, SOCKET_ID_ANY, RING_F_SC_DEQ);
	if (!c->ring) {
		rc = PD_ERR(rte_errno ? rte_errno : ENOMEM, "capture: cannot create "
			    "its ring: %s", rte_strerror(rte_errno));
		goto fail;
	}
	/* interface blocks are written in RTE_ETH_FOREACH_DEV order */
	RTE_ETH_FOREACH_DEV(pid) {
		for (i = 0; i < p->n_ports; i++)
			if (p->ports[i].port_id == pid)
				c->ifidx[i] = k;
		k++;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		rc = PD_ERR(errno, "capture: %s: %s", path, strerror(errno));
		goto fail;
	}
	if (port >= 0)
		snprintf(comment, sizeof(comment), "pydp pipeline '%s', port '%s'",
			 p->name, p->ports[port].name);
	else
		snprintf(comment, sizeof(comment), "pydp pipeline '%s', input of "
			 "stage '%s'", p->name, p->stages[stage].name);
	c->pcapng = rte_pcapng_fdopen(fd, "Linux", NULL, "pydp", comment);
	if (!c->pcapng) {
		rc = PD_ERR(rte_errno ? rte_errno : EIO, "capture: %s: %s", path,
			    rte_strerror(rte_errno));
		close(fd);
		goto fail;
	}
	c->active = 1;
	if (port >= 0) {
		struct cap_cb_arg *a = &c->cb;

		a->p = p;
		a->c = c;
		for (w = 0; w < p->n_workers; w++) {
			c->txcb[w] = rte_eth_add_tx_callback(p->ports[port].port_id,
							     (uint16_t)w, cap_tx_cb, a);
			if (!c->txcb[w]) {
				rc = PD_ERR(rte_errno ? rte_errno : ENOTSUP, "capture: "
					    "port '%s': cannot add a tx callback: %s",
					    p->ports[port].name, rte_strerror(rte_errno));
				for (i = 0; i < w; i++)
					rte_eth_remove_tx_callback(p->ports[port].port_id,
								   (uint16_t)i, c->txcb[i]);
				if (p->qs)
					rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
				for (i = 0; i < w; i++)
					rte_free((void *)(uintptr_t)c->txcb[i]);
				goto fail;
			}
			c->n_txcb++;
		}
	}
	__atomic_store_n(&p->cap, c, __ATOMIC_RELEASE);
	__atomic_fetch_or(&p->obs_armed, PD_OBS_CAPTURE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&cap_lock);
	return 0;
fail:
	pthread_mutex_unlock(&cap_lock);
	cap_free(c);
	return rc;
}

int pd_capture_poll(struct pd_pipeline *p, struct pd_capture_info *info)
{
	struct pd_capture *c;

	pthread_mutex_lock(&cap_lock);
	c = p->cap;
	if (!c) {
		pthread_mutex_unlock(&cap_lock);
		return PD_ERR(ENOENT, "pipeline '%s': no capture running", p->name);
	}
	cap_drain(c);
	cap_info(c, p->n_workers, info);
	pthread_mutex_unlock(&cap_lock);
	return 0;
}

int pd_capture_stop(struct pd_pipeline *p, struct pd_capture_info *info)
{
	struct pd_capture *c;
	struct pd_capture_info ci;
	unsigned w;

	pthread_mutex_lock(&cap_lock);
	c = p->cap;
	if (!c) {
		pthread_mutex_unlock(&cap_lock);
		return PD_ERR(ENOENT, "pipeline '%s': no capture running", p->name);
	}
	__atomic_store_n(&c->active, 0, __ATOMIC_RELAXED);
	for (w = 0; w < c->n_txcb; w++)
		rte_eth_remove_tx_callback(p->ports[c->port].port_id, (uint16_t)w,
					   c->txcb[w]);
	/* no worker is in an armed burst or a tx callback after this */
	__atomic_fetch_and(&p->obs_armed, ~PD_OBS_CAPTURE, __ATOMIC_RELEASE);
	if (p->qs)
		rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
	p->cap = NULL;
	for (w = 0; w < c->n_txcb; w++)
		rte_free((void *)(uintptr_t)c->txcb[w]);
	cap_drain(c);
	cap_info(c, p->n_workers, &ci);
	ci.active = 0;
	/* every copy written and freed, or freed when lost: the pool is full */
	ci.leaked = (int32_t)(CAP_POOL - rte_mempool_avail_count(c->mp));
	rte_pcapng_write_stats(c->pcapng, c->port >= 0 ? c->ifidx[c->port] : 0,
			       "pydp capture", 0, 0, ci.written + ci.dropped,
			       ci.dropped);
	pthread_mutex_unlock(&cap_lock);
	if (info)
		*info = ci;
	cap_free(c);
	return 0;
}
