/* SPDX-License-Identifier: BSD-3-Clause
 * count.c - packet and byte counters per lcore; everything goes to next.
 */
#include "count.h"

static const char *const count_edges[] = { "next", NULL };
static const char *const count_extra[] = { "packets", "bytes", NULL };

static void count_process(struct pd_stage *st, struct pd_worker *w,
			  struct rte_mbuf **pkts, uint16_t n)
{
	uint64_t bytes = 0;
	uint16_t i;

	for (i = 0; i < n; i++) {
		bytes += rte_pktmbuf_pkt_len(pkts[i]);
		pd_emit(w, st, 0, pkts[i]);
	}
	w->ctr[st->ctr_extra] += n;
	w->ctr[st->ctr_extra + 1] += bytes;
}

const struct pd_stage_ops pd_stage_count = {
	.type = "count",
	.edges = count_edges,
	.extra = count_extra,
	.needs_next = true,
	.process = count_process,
};
