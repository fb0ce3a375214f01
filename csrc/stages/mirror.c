/* SPDX-License-Identifier: BSD-3-Clause
 * mirror.c - copy to a port, pass the original on.
 *
 * A deep copy (rte_pktmbuf_copy), not a clone: later stages may rewrite the
 * original's headers and the mirror must show the packet as it was here.
 */
#include "mirror.h"

struct mirror_priv {
	int port;
};

static const char *const mirror_edges[] = { "next", NULL };
static const char *const mirror_extra[] = { "copies", "copy_failed", NULL };

static int mirror_init(struct pd_stage *st)
{
	((struct mirror_priv *)st->priv)->port = -1;
	return 0;
}

int pd_mirror_config(struct pd_pipeline *p, int stage, int port)
{
	struct pd_stage *st = pd_stage_get(p, stage, "mirror");
	int rc;

	if (!st)
		return -EINVAL;
	if ((rc = pd_port_idx_check(p, port)) < 0)
		return rc;
	((struct mirror_priv *)st->priv)->port = port;
	return 0;
}

static void mirror_process(struct pd_stage *st, struct pd_worker *w,
			   struct rte_mbuf **pkts, uint16_t n)
{
	const struct mirror_priv *mp = st->priv;
	uint16_t i, copies = 0;

	for (i = 0; i < n; i++) {
		if (likely(mp->port >= 0)) {
			struct rte_mbuf *c = rte_pktmbuf_copy(pkts[i], pkts[i]->pool,
							      0, UINT32_MAX);
			if (c) {
				pd_tx(w, (uint16_t)mp->port, c);
				copies++;
			}
		}
		pd_emit(w, st, 0, pkts[i]);
	}
	w->ctr[st->ctr_extra] += copies;
	w->ctr[st->ctr_extra + 1] += (mp->port >= 0) ? (uint16_t)(n - copies) : 0;
}

const struct pd_stage_ops pd_stage_mirror = {
	.type = "mirror",
	.edges = mirror_edges,
	.extra = mirror_extra,
	.needs_next = true,
	.priv_size = sizeof(struct mirror_priv),
	.init = mirror_init,
	.process = mirror_process,
};
