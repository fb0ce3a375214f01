/* SPDX-License-Identifier: BSD-3-Clause
 * pd_eal.c - EAL start-up (once per process), lcores, mbuf pools.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include "pd_internal.h"

int pd_meta_offset = -1;
static int pd_eal_state;  /* 0 never tried, 1 up, -errno failed */
static int pd_huge;

int pd_eal_init(int argc, char **argv)
{
	static const struct rte_mbuf_dynfield meta_desc = {
		.name = "pydp_meta",
		.size = sizeof(struct pd_meta),
		.align = __alignof__(struct pd_meta),
	};
	int i, rc;

	if (pd_eal_state == 1)
		return PD_ERR(EALREADY, "EAL is already running in this process");
	if (pd_eal_state < 0)
		return PD_ERR(pd_eal_state, "EAL failed to start earlier in this "
			      "process and cannot start twice");
	pd_huge = 1;
	for (i = 0; i < argc; i++)
		if (strcmp(argv[i], "--no-huge") == 0)
			pd_huge = 0;
	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		pd_eal_state = -rte_errno;
		return PD_ERR(rte_errno, "rte_eal_init failed: %s",
			      rte_strerror(rte_errno));
	}
	pd_meta_offset = rte_mbuf_dynfield_register(&meta_desc);
	if (pd_meta_offset < 0) {
		pd_eal_state = -rte_errno;
		return PD_ERR(rte_errno, "cannot register the mbuf metadata field: %s",
			      rte_strerror(rte_errno));
	}
	pd_eal_state = 1;
	return 0;
}

/* Send DPDK's own log lines to a file (NULL: back to stderr), so a CLI
 * user sees one clear error line instead of the drivers' chatter. */
int pd_log_to_file(const char *path)
{
	static FILE *log_file;
	FILE *f = NULL;

	if (path) {
		f = fopen(path, "a");
		if (!f)
			return PD_ERR(errno, "cannot open log file %s: %s", path,
				      strerror(errno));
		setvbuf(f, NULL, _IOLBF, 0);
	}
	if (rte_openlog_stream(f) < 0) {
		if (f)
			fclose(f);
		return PD_ERR(EINVAL, "cannot redirect the DPDK log");
	}
	if (log_file)
		fclose(log_file);
	log_file = f;
	return 0;
}

int pd_eal_ready(void)
{
	return pd_eal_state == 1;
}

int pd_eal_hugepages(void)
{
	return pd_eal_state == 1 && pd_huge;
}

unsigned pd_lcore_count(void)
{
	return RTE_MAX_LCORE;
}

int pd_lcore_role(unsigned lcore)
{
	if (pd_eal_state != 1 || lcore >= RTE_MAX_LCORE ||
	    !rte_lcore_is_enabled(lcore))
		return 0;
	return lcore == rte_get_main_lcore() ? 1 : 2;
}

unsigned pd_main_lcore(void)
{
	return rte_get_main_lcore();
}

uint64_t pd_tsc_hz(void)
{
	return rte_get_tsc_hz();
}

uint64_t pd_tsc(void)
{
	return rte_rdtsc();
}

/* ---- mbuf pools --------------------------------------------------------- */
struct pd_pool {
	struct rte_mempool *mp;
};

int pd_pool_create(const char *name, unsigned n_mbufs, unsigned cache,
		   unsigned data_room, struct pd_pool **out)
{
	struct pd_pool *pool;

	if (pd_eal_state != 1)
		return PD_ERR(ENODEV, "EAL is not running");
	if (n_mbufs < 64)
		return PD_ERR(EINVAL, "pool '%s': n_mbufs %u is below 64", name, n_mbufs);
	if (cache > RTE_MEMPOOL_CACHE_MAX_SIZE)
		return PD_ERR(EINVAL, "pool '%s': cache %u above %u", name, cache,
			      RTE_MEMPOOL_CACHE_MAX_SIZE);
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return PD_ERR(ENOMEM, "out of memory");
	pool->mp = rte_pktmbuf_pool_create(name, n_mbufs, cache, 0,
					   data_room + RTE_PKTMBUF_HEADROOM,
					   (int)rte_socket_id());
	if (!pool->mp) {
		int e = rte_errno;
		free(pool);
		return PD_ERR(e, "cannot create mbuf pool '%s' of %u mbufs: %s",
			      name, n_mbufs, rte_strerror(e));
	}
	*out = pool;
	return 0;
}

void pd_pool_free(struct pd_pool *pool)
{
	if (!pool)
		return;
	rte_mempool_free(pool->mp);
	free(pool);
}

unsigned pd_pool_avail(const struct pd_pool *pool)
{
	return rte_mempool_avail_count(pool->mp);
}

unsigned pd_pool_size(const struct pd_pool *pool)
{
	return pool->mp->size;
}

struct rte_mempool *pd_pool_mp(struct pd_pool *pool)
{
	return pool->mp;
}
