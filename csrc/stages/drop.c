/* SPDX-License-Identifier: BSD-3-Clause
 * drop.c - drops the whole burst through the one drop path.
 */
#include "drop.h"

static const char *const drop_edges[] = { "next", NULL };
static const char *const drop_drops[] = { "drop-stage", NULL };

static void drop_process(struct pd_stage *st, struct pd_worker *w,
			 struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t i;

	for (i = 0; i < n; i++)
		pd_drop(w, st, 0, pkts[i]);
}

const struct pd_stage_ops pd_stage_drop = {
	.type = "drop",
	.edges = drop_edges,
	.drops = drop_drops,
	.process = drop_process,
};
