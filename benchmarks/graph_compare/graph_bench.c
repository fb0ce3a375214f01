/* SPDX-License-Identifier: BSD-3-Clause
 * graph_bench.c - pydp's array runner against DPDK's rte_graph on the same
 * parse + forward pipeline, on one worker lcore (see README.md).
 *
 *   graph_bench EAL-ARGS -- [--secs S] [--warmup S] [--rounds R]
 *                           [--pool-cache N] [--modes M,...]
 *
 * Port 0 is the input (net_pcap, infinite_rx=1), port 1 the sink (net_null).
 * Every pipeline parses with pydp's pd_parse_raw (IPv4 checksum verified, the
 * parse stage's default), drops malformed packets with a counted reason,
 * rewrites src/dst MAC and sends to port 1. Modes:
 *   bare       rx_burst -> tx_burst, 32 at a time (the baseline)
 *   pdbare     pydp's own bare rx->tx path (pd_pipeline_set_bare: the
 *              runner's port counters, no stage): pydp bench's baseline
 *   array      pydp's real runner and stages (csrc/ linked in), pd_* C API
 *   array-min  a minimal copy of that runner's structure without pydp's
 *              counters and RCU: the structure alone
 *   graph      rte_graph: lib/node's ethdev_rx-0-0 (RTE_GRAPH_BURST_SIZE,
 *              256 in Debian) -> pd_parse -> pd_fwd -> ethdev_tx-1 (+pkt_drop)
 *   graphN     the same with our own rx source node polling N at a time
 *              (graph32: pydp's burst) and no software ptype callback
 *   ...-nostats  a graph mode walked without the per-node rdtsc stats
 *              that Debian's RTE_LIBRTE_GRAPH_STATS=1 compiles in
 * Each run is a fresh child process (fork before rte_eal_init), so no rx
 * callback, pool or node clone of one mode can bias the next. Modes
 * alternate round by round; the median run of each is reported.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_graph.h>
#include <rte_graph_worker.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_node_eth_api.h>

#include "pd_internal.h"
#include "stages/stages.h"

#define BURST PD_BURST
#define MAX_MODES 8
#define MAX_ROUNDS 15
#define MAX_TRIES 8

static unsigned max_tries = MAX_TRIES;  /* --tries */

static const struct rte_ether_addr SRC_MAC = {{ 0x02, 0, 0, 0, 0xaa, 0x01 }};
static const struct rte_ether_addr DST_MAC = {{ 0x02, 0, 0, 0, 0xbb, 0x02 }};
static const uint16_t IN_PORT = 0, OUT_PORT = 1;

/* wall: Mpps, TSC cycles per packet; cpu: the same per second/cycle of CPU
 * time the worker thread got (differs when the CPU is shared) */
enum metric { MPPS, CYC, CPU_MPPS, CPU_CYC, N_METRIC };

struct result {
	int ok;
	int huge;
	double v[4];    /* enum metric */
	uint64_t pkts, rx_total, tx_total, parse_drops, tsc_hz;
	char err[160];
};

static volatile int running;
static unsigned pool_cache = 256;  /* pydp's default (pydp/mempool.py) */
static int verify_cksum = 1;      /* pydp's parse default */
static unsigned bad_cksum_rc;     /* drop reason of "bad-ipv4-checksum", + 1 */
static uint64_t parse_drops[32];  /* per reason, this benchmark's one worker */

/* pydp's parse_process (csrc/stages/parse.c) for one packet: 0, or the
 * drop reason + 1 (counted by the caller) */
static inline int parse_one(struct rte_mbuf *mb)
{
	int verify = verify_cksum, rc;

	if (mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_GOOD)
		verify = 0;
	rc = pd_parse_raw(rte_pktmbuf_mtod(mb, const uint8_t *),
			  rte_pktmbuf_data_len(mb), verify, pd_meta(mb));
	if (unlikely(rc == 0 && (mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK)
		     == RTE_MBUF_F_RX_IP_CKSUM_BAD && verify_cksum))
		rc = (int)bad_cksum_rc;
	return rc;
}

static inline void rewrite_macs(struct rte_mbuf *m)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);

	rte_ether_addr_copy(&SRC_MAC, &eh->src_addr);
	rte_ether_addr_copy(&DST_MAC, &eh->dst_addr);
}

/* ---- mode a: bare ------------------------------------------------------ */
static int bare_main(void *arg)
{
	struct rte_mbuf *pkts[BURST];
	uint16_t n, sent;

	(void)arg;
	while (running) {
		n = rte_eth_rx_burst(IN_PORT, 0, pkts, BURST);
		if (n == 0)
			continue;
		sent = rte_eth_tx_burst(OUT_PORT, 0, pkts, n);
		if (unlikely(sent < n))
			rte_pktmbuf_free_bulk(pkts + sent, n - sent);
	}
	return 0;
}

/* ---- mode array-min: pd_pipeline.c's runner structure alone ------------- */
/* worker_main + run_stages + pd_emit/pd_tx/pd_drop without what pydp adds
 * around them (port/stage counters, byte sums, in_port, RCU quiescent) */
static struct {
	struct { uint16_t n; struct rte_mbuf *pkts[2 * BURST]; } in[2], tx, drop;
} mw __rte_cache_aligned;
typedef void (*stage_fn)(struct rte_mbuf **pkts, uint16_t n);

static void mini_tx_flush(void)
{
	uint16_t sent = rte_eth_tx_burst(OUT_PORT, 0, mw.tx.pkts, mw.tx.n);

	if (unlikely(sent < mw.tx.n))
		rte_pktmbuf_free_bulk(mw.tx.pkts + sent, mw.tx.n - sent);
	mw.tx.n = 0;
}

static void mini_drop_flush(void)
{
	rte_pktmbuf_free_bulk(mw.drop.pkts, mw.drop.n);
	mw.drop.n = 0;
}

static void mini_parse(struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
		if (likely((rc = parse_one(pkts[i])) == 0)) {
			mw.in[1].pkts[mw.in[1].n++] = pkts[i];     /* pd_emit */
			continue;
		}
		parse_drops[rc - 1]++;                             /* pd_drop */
		mw.drop.pkts[mw.drop.n++] = pkts[i];
		if (unlikely(mw.drop.n >= BURST))
			mini_drop_flush();
	}
}

static void mini_fwd(struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t i;

	for (i = 0; i < n; i++) {
		rewrite_macs(pkts[i]);
		mw.tx.pkts[mw.tx.n++] = pkts[i];                   /* pd_tx */
		if (unlikely(mw.tx.n >= BURST))
			mini_tx_flush();
	}
}

static stage_fn mini_stages[] = { mini_parse, mini_fwd };

static int mini_main(void *arg)
{
	unsigned s;
	uint16_t n;

	(void)arg;
	while (running) {
		n = rte_eth_rx_burst(IN_PORT, 0, mw.in[0].pkts, BURST);
		if (n) {
			mw.in[0].n = n;
			for (s = 0; s < RTE_DIM(mini_stages); s++) {
				n = mw.in[s].n;
				if (n == 0)
					continue;
				mw.in[s].n = 0;
				mini_stages[s](mw.in[s].pkts, n);
			}
			if (mw.drop.n)
				mini_drop_flush();
		}
		if (mw.tx.n)
			mini_tx_flush();
	}
	return 0;
}

/* ---- mode c: rte_graph nodes ------------------------------------------- */
enum { PARSE_NEXT_FWD = 0, PARSE_NEXT_DROP };

/* pydp's parse_process (csrc/stages/parse.c) as a graph node: same checks,
 * same metadata, same per-reason drop counters; lib/node's speculative
 * enqueue (all to pd_fwd: move the whole stream, no copy). */
static uint16_t pd_parse_process(struct rte_graph *graph, struct rte_node *node,
				 void **objs, uint16_t n)
{
	void **from = objs, **to_next;
	uint16_t i, held = 0, last_spec = 0;

	to_next = rte_node_next_stream_get(graph, node, PARSE_NEXT_FWD, n);
	for (i = 0; i < n; i++) {
		struct rte_mbuf *mb = objs[i];
		int rc;

		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod((struct rte_mbuf *)objs[i + 1],
						       void *));
		rc = parse_one(mb);
		if (likely(rc == 0)) {
			last_spec++;
			continue;
		}
		parse_drops[rc - 1]++;
		/* copy what was speculated right so far, then divert this one */
		memcpy(to_next, from, last_spec * sizeof(*from));
		to_next += last_spec;
		held += last_spec;
		from += last_spec + 1;
		last_spec = 0;
		rte_node_enqueue_x1(graph, node, PARSE_NEXT_DROP, mb);
	}
	if (likely(last_spec == n)) {
		rte_node_next_stream_move(graph, node, PARSE_NEXT_FWD);
		return n;
	}
	memcpy(to_next, from, last_spec * sizeof(*from));
	held += last_spec;
	rte_node_next_stream_put(graph, node, PARSE_NEXT_FWD, held);
	return n;
}

static struct rte_node_register pd_parse_node = {
	.name = "pd_parse",
	.process = pd_parse_process,
	.nb_edges = 2,
	.next_nodes = { [PARSE_NEXT_FWD] = "pd_fwd",
			[PARSE_NEXT_DROP] = "pkt_drop" },
};
RTE_NODE_REGISTER(pd_parse_node);

/* pydp's forward_process: MAC rewrite, everything to one port's tx. */
static uint16_t pd_fwd_process(struct rte_graph *graph, struct rte_node *node,
			       void **objs, uint16_t n)
{
	uint16_t i;

	for (i = 0; i < n; i++)
		rewrite_macs(objs[i]);
	rte_node_next_stream_move(graph, node, 0);
	return n;
}

/* edge 0 is set at run time to "ethdev_tx-<OUT_PORT>" (a clone made by
 * rte_node_eth_config, which does not exist when constructors run) */
static struct rte_node_register pd_fwd_node = {
	.name = "pd_fwd",
	.process = pd_fwd_process,
	.nb_edges = 1,
	.next_nodes = { "pkt_drop" },
};
RTE_NODE_REGISTER(pd_fwd_node);

/* graphN's source: lib/node's ethdev_rx polling N at a time, without the
 * software ptype callback ethdev_rx installs on PMDs without ptype. */
static uint16_t own_rx_burst;
static uint16_t pd_rx_process(struct rte_graph *graph, struct rte_node *node,
			      void **objs, uint16_t n)
{
	uint16_t count;

	(void)objs;
	(void)n;
	count = rte_eth_rx_burst(IN_PORT, 0, (struct rte_mbuf **)node->objs,
				 own_rx_burst);
	if (!count)
		return 0;
	node->idx = count;
	rte_node_next_stream_move(graph, node, 0);
	return count;
}

static struct rte_node_register pd_rx_node = {
	.name = "pd_rx",
	.flags = RTE_NODE_SOURCE_F,
	.process = pd_rx_process,
	.nb_edges = 1,
	.next_nodes = { "pd_parse" },
};
RTE_NODE_REGISTER(pd_rx_node);

/* rte_graph_walk() minus the stats block (rdtsc x2 per node call). */
static inline void walk_nostats(struct rte_graph *graph)
{
	const rte_graph_off_t *cir_start = graph->cir_start;
	const rte_node_t mask = graph->cir_mask;
	uint32_t head = graph->head;
	struct rte_node *node;

	while (likely(head != graph->tail)) {
		node = RTE_PTR_ADD(graph, cir_start[(int32_t)head++]);
		rte_prefetch0(node->objs);
		node->process(graph, node, node->objs, node->idx);
		node->idx = 0;
		head = likely((int32_t)head > 0) ? head & mask : head;
	}
	graph->tail = 0;
}

static struct rte_graph *graph;
static int graph_stats;

static int graph_main(void *arg)
{
	(void)arg;
	if (graph_stats)
		while (running)
			rte_graph_walk(graph);
	else
		while (running)
			walk_nostats(graph);
	return 0;
}

/* rc: -errno, or 0 after a pd_* call (its message: pd_last_error) */
static int fail(struct result *r, const char *what, int rc)
{
	snprintf(r->err, sizeof(r->err), "%s: %s (%d)", what,
		 rc == 0 ? pd_last_error() : rte_strerror(-rc), rc);
	return -1;
}

static int graph_setup(unsigned lcore, struct result *r)
{
	struct rte_node_ethdev_config cfg[2] = {
		{ .port_id = IN_PORT, .num_rx_queues = 1, .num_tx_queues = 1 },
		{ .port_id = OUT_PORT, .num_rx_queues = 0, .num_tx_queues = 1 },
	};
	const char *pat[] = { own_rx_burst ? "pd_rx" : "ethdev_rx-0-0", "pd_parse",
			      "pd_fwd", NULL, "pkt_drop" };
	const char *edges[16];
	struct rte_graph_param gp = { 0 };
	char txname[RTE_NODE_NAMESIZE];
	const char *txp = txname;
	rte_node_t id;
	rte_edge_t ne, e;
	int rc;

	if ((rc = rte_node_eth_config(cfg, 2, 1)) < 0)
		return fail(r, "rte_node_eth_config", rc);
	snprintf(txname, sizeof(txname), "ethdev_tx-%u", OUT_PORT);
	pat[3] = txname;
	id = rte_node_from_name("pd_fwd");
	if (rte_node_edge_update(id, 0, &txp, 1) != 1)
		return fail(r, "pd_fwd edge to ethdev_tx", -ENOENT);
	if (!own_rx_burst) {
		/* every edge of the rx clone (pkt_cls, ip4_lookup...) -> pd_parse,
		 * so ip4_* nodes are neither pulled in nor initialised */
		id = rte_node_from_name(pat[0]);
		ne = rte_node_edge_count(id);
		for (e = 0; e < ne && e < RTE_DIM(edges); e++)
			edges[e] = "pd_parse";
		if (id == RTE_NODE_ID_INVALID ||
		    rte_node_edge_update(id, 0, edges, ne) != ne)
			return fail(r, "ethdev_rx edges to pd_parse", -ENOENT);
	}
	gp.socket_id = (int)rte_lcore_to_socket_id(lcore);
	gp.nb_node_patterns = RTE_DIM(pat);
	gp.node_patterns = pat;
	if (rte_graph_create("bench", &gp) == RTE_GRAPH_ID_INVALID)
		return fail(r, "rte_graph_create", -rte_errno);
	graph = rte_graph_lookup("bench");
	if (graph && getenv("GRAPH_BENCH_DUMP"))  /* check what the graph holds */
		rte_graph_dump(stdout, rte_graph_from_name("bench"));
	return graph ? 0 : fail(r, "rte_graph_lookup", -ENOENT);
}

/* ---- mode b: pydp's own runner ------------------------------------------ */
static struct pd_pipeline *array_setup(struct pd_pool *pool, unsigned lcore,
				       struct result *r)
{
	struct pd_pipeline *p;
	int in, out, ps, fs;

	if (pd_pipeline_new("bench", &p) < 0)
		return fail(r, "pd_pipeline_new", 0), NULL;
	if ((in = pd_pipeline_add_port(p, "in", IN_PORT)) < 0 ||
	    (out = pd_pipeline_add_port(p, "out", OUT_PORT)) < 0 ||
	    (ps = pd_pipeline_add_stage(p, "parse", "parse")) < 0 ||
	    (fs = pd_pipeline_add_stage(p, "forward", "fwd")) < 0 ||
	    pd_pipeline_link(p, ps, 0, fs) < 0 ||
	    pd_parse_config(p, ps, verify_cksum) < 0 ||
	    pd_forward_config(p, fs, out, SRC_MAC.addr_bytes,
			      DST_MAC.addr_bytes, 0) < 0 ||
	    pd_pipeline_set_input(p, in, ps) < 0 ||
	    pd_pipeline_set_input(p, out, -1) < 0 ||  /* tx only: not polled */
	    pd_pipeline_build(p, pool, &lcore, 1) < 0)
		return fail(r, "pydp pipeline", 0), NULL;
	return p;
}

/* ---- mode pdbare: pydp's bare rx->tx loop (pydp bench's baseline) -------- */
static struct pd_pipeline *pdbare_setup(struct pd_pool *pool, unsigned lcore,
					struct result *r)
{
	struct pd_pipeline *p;
	int in, out;

	if (pd_pipeline_new("bare", &p) < 0)
		return fail(r, "pd_pipeline_new", 0), NULL;
	if ((in = pd_pipeline_add_port(p, "in", IN_PORT)) < 0 ||
	    (out = pd_pipeline_add_port(p, "out", OUT_PORT)) < 0 ||
	    pd_pipeline_set_input(p, out, -1) < 0 ||
	    pd_pipeline_set_bare(p, in, out) < 0 ||
	    pd_pipeline_build(p, pool, &lcore, 1) < 0)
		return fail(r, "pydp bare pipeline", 0), NULL;
	return p;
}

/* ---- one run, in a child process ---------------------------------------- */
static uint64_t port_pkts(uint16_t port, int tx)
{
	struct rte_eth_stats st;

	if (rte_eth_stats_get(port, &st) != 0)
		return 0;
	return tx ? st.opackets : st.ipackets;
}

/* CPU time the worker thread really got (the machine may be shared) */
static clockid_t worker_clock;

static int note_thread(void *arg)
{
	(void)arg;
	return pthread_getcpuclockid(pthread_self(), &worker_clock);
}

static uint64_t worker_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(worker_clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int run_one(const char *mode, int argc, char **argv, double secs,
		   double warmup, struct result *r)
{
	struct pd_port_conf pc = { .n_rxq = 1, .n_txq = 1, .rx_desc = 1024,
				   .tx_desc = 1024, .promisc = 1 };
	int is_graph = strncmp(mode, "graph", 5) == 0;
	struct pd_pipeline *pl = NULL;
	struct pd_pool *pool;
	uint64_t t0, t1, n0, n1, c0, c1;
	unsigned lcore, i;
	int rc;

	if (pd_eal_init(argc, argv) < 0)
		return fail(r, "pd_eal_init", 0);
	r->huge = pd_eal_hugepages();
	r->tsc_hz = rte_get_tsc_hz();
	lcore = rte_get_next_lcore(-1, 1, 0);
	if (lcore >= RTE_MAX_LCORE)
		return fail(r, "need a worker lcore (-l 0,1)", -EINVAL);
	if (rte_eth_dev_count_avail() < 2)
		return fail(r, "need 2 ports (pcap input, null sink)", -ENODEV);
	for (i = 0; pd_stage_parse.drops[i]; i++)
		if (strcmp(pd_stage_parse.drops[i], "bad-ipv4-checksum") == 0)
			bad_cksum_rc = i + 1;
	/* pydp's sizing + the 10k mbufs net_pcap holds for infinite_rx */
	if (pd_pool_create("bench", 32768, pool_cache, 2048, &pool) < 0)
		return fail(r, "pool", 0);
	for (i = 0; i < 2; i++)
		if (pd_port_configure((uint16_t)i, &pc, pool) < 0 ||
		    pd_port_start((uint16_t)i) < 0)
			return fail(r, "port", 0);
	if (rte_eal_remote_launch(note_thread, NULL, lcore) < 0 ||
	    rte_eal_wait_lcore(lcore) != 0)
		return fail(r, "worker thread clock", -EBUSY);
	graph_stats = strstr(mode, "-nostats") == NULL;
	if (strcmp(mode, "array") == 0) {
		if (!(pl = array_setup(pool, lcore, r)))
			return -1;
	} else if (strcmp(mode, "pdbare") == 0) {
		if (!(pl = pdbare_setup(pool, lcore, r)))
			return -1;
	} else if (is_graph) {
		own_rx_burst = (uint16_t)atoi(mode + 5);
		if (own_rx_burst > RTE_GRAPH_BURST_SIZE)
			return fail(r, mode, -EINVAL);
		if (graph_setup(lcore, r) < 0)
			return -1;
	} else if (strcmp(mode, "bare") != 0 && strcmp(mode, "array-min") != 0) {
		return fail(r, mode, -EINVAL);
	}
	running = 1;
	rc = pl ? pd_pipeline_start(pl)
		: rte_eal_remote_launch(is_graph ? graph_main : strcmp(mode, "bare")
					? mini_main : bare_main, NULL, lcore);
	if (rc < 0)
		return fail(r, "launch", pl ? 0 : rc);
	usleep((useconds_t)(warmup * 1e6));
	n0 = port_pkts(OUT_PORT, 1), c0 = worker_cpu_ns(), t0 = rte_rdtsc();
	usleep((useconds_t)(secs * 1e6));
	n1 = port_pkts(OUT_PORT, 1), c1 = worker_cpu_ns(), t1 = rte_rdtsc();
	running = 0;
	if (pl)
		pd_pipeline_stop(pl);
	else
		rte_eal_wait_lcore(lcore);
	r->pkts = n1 - n0;
	r->v[MPPS] = (double)r->pkts * (double)r->tsc_hz / (double)(t1 - t0) / 1e6;
	r->v[CYC] = (double)(t1 - t0) / (double)RTE_MAX(r->pkts, 1u);
	r->v[CPU_MPPS] = (double)r->pkts / (double)RTE_MAX(c1 - c0, 1u) * 1e3;
	r->v[CPU_CYC] = (double)(c1 - c0) * 1e-9 * (double)r->tsc_hz /
		(double)RTE_MAX(r->pkts, 1u);
	r->rx_total = port_pkts(IN_PORT, 0);
	r->tx_total = port_pkts(OUT_PORT, 1);
	if (pl) {
		unsigned rows, stride, k;
		uint64_t *ctr = pd_pipeline_counters(pl, &rows, &stride);

		for (k = 0; k < pd_pipeline_n_counters(pl); k++)
			if (strstr(pd_pipeline_counter_name(pl, k), "stage/parse/drop/"))
				r->parse_drops += ctr[k];
	}
	for (i = 0; i < RTE_DIM(parse_drops); i++)
		r->parse_drops += parse_drops[i];
	r->ok = r->pkts > 0;
	if (!r->ok)
		snprintf(r->err, sizeof(r->err), "no packets forwarded");
	for (i = 0; i < 2; i++)
		rte_eth_dev_stop((uint16_t)i);
	rte_eal_cleanup();
	return 0;
}

static int spawn(const char *mode, int argc, char **argv, double secs,
		 double warmup, struct result *r)
{
	int fds[2], st;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	if (pipe(fds) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		run_one(mode, argc, argv, secs, warmup, r);
		fflush(NULL);
		if (write(fds[1], r, sizeof(*r)) != (ssize_t)sizeof(*r))
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], r, sizeof(*r)) != (ssize_t)sizeof(*r))
		snprintf(r->err, sizeof(r->err), "child died");
	close(fds[0]);
	waitpid(pid, &st, 0);
	return r->ok ? 0 : -1;
}

/* index of the median of v[0..n) (the lower one for an even n) */
static unsigned median_idx(const double *v, unsigned n)
{
	unsigned i, j, below, same;

	for (i = 0; i < n; i++) {
		for (j = 0, below = 0, same = 0; j < n; j++) {
			below += v[j] < v[i];
			same += v[j] == v[i] && j < i;
		}
		if (below + same == (n - 1) / 2)
			return i;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char modes_arg[256] = "bare,array,array-min,graph,graph32", *modes[MAX_MODES];
	double secs = 10, warmup = 1, res[MAX_MODES][N_METRIC][MAX_ROUNDS];
	double med[MAX_MODES][N_METRIC];
	unsigned used[MAX_MODES];
	unsigned rounds = 3, nm = 0, m, k, x, t;
	struct result r = { 0 };
	int eal_argc = argc, i, failed = 0;
	char *tok;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "--") == 0) {
			eal_argc = i;
			break;
		}
	for (i = eal_argc + 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--secs") == 0)
			secs = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--warmup") == 0)
			warmup = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--rounds") == 0)
			rounds = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--tries") == 0)
			max_tries = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--pool-cache") == 0)
			pool_cache = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--modes") == 0)
			snprintf(modes_arg, sizeof(modes_arg), "%s", argv[i + 1]);
		else
			break;
	}
	if (i < argc || secs <= 0 || warmup < 0 || rounds < 1 || rounds > MAX_ROUNDS ||
	    max_tries < 1 || max_tries > MAX_TRIES) {
		fprintf(stderr, "usage: %s EAL-ARGS -- [--secs S] [--warmup S] "
			"[--rounds 1..%d] [--pool-cache N]\n\t[--modes "
			"bare,array,array-min,graph,graphN[-nostats]]\n",
			argv[0], MAX_ROUNDS);
		return 2;
	}
	for (tok = strtok(modes_arg, ","); tok && nm < MAX_MODES; tok = strtok(NULL, ","))
		modes[nm++] = tok;
	/* txtotal: every packet the sink got in the run, warm-up included
	 * (divide callgrind's Ir of the worker function by it) */
	printf("%-16s %5s %8s %8s %8s %8s %6s %9s %11s\n", "mode", "round", "Mpps",
	       "cyc/pkt", "cpuMpps", "cpu-cyc", "cpu%", "drops", "txtotal");
	for (k = 0; k < rounds; k++)
		for (m = 0; m < nm; m++) {
			/* a run whose worker got < 90% of a CPU (another process on
			 * it) is repeated, a few times at most, after a pause */
			for (t = 0; t < max_tries; t++) {
				if (spawn(modes[m], eal_argc, argv, secs, warmup, &r) < 0) {
					fprintf(stderr, "%s: failed: %s\n", modes[m], r.err);
					failed = 1;
					break;
				}
				if (r.v[MPPS] >= 0.9 * r.v[CPU_MPPS] || t + 1 == max_tries)
					break;
				printf("%-16s %5u   (worker had %.0f%% of a CPU: again)\n",
				       modes[m], k + 1, 100 * r.v[MPPS] / r.v[CPU_MPPS]);
				fflush(stdout);
				sleep(15);
			}
			for (x = 0; x < N_METRIC; x++)
				res[m][x][k] = r.v[x];
			printf("%-16s %5u %8.3f %8.1f %8.3f %8.1f %6.1f %9" PRIu64
			       " %11" PRIu64 "%s\n",
			       modes[m], k + 1, r.v[MPPS], r.v[CYC], r.v[CPU_MPPS],
			       r.v[CPU_CYC], r.v[CPU_MPPS] > 0 ?
			       100 * r.v[MPPS] / r.v[CPU_MPPS] : 0, r.parse_drops,
			       r.tx_total,
			       r.rx_total - r.tx_total == r.parse_drops ? "" :
			       "  (rx - tx != drops!)");
			fflush(stdout);
		}
	/* medians over the runs that had >= 90% of a CPU, if there are any */
	for (m = 0; m < nm; m++) {
		unsigned nk = 0, all = 0;

		for (k = 0; k < rounds; k++)
			all += res[m][MPPS][k] < 0.9 * res[m][CPU_MPPS][k];
		for (k = 0; k < rounds; k++) {
			if (all < rounds && res[m][MPPS][k] < 0.9 * res[m][CPU_MPPS][k])
				continue;
			for (x = 0; x < N_METRIC; x++)
				res[m][x][nk] = res[m][x][k];
			nk++;
		}
		used[m] = nk;
		k = median_idx(res[m][MPPS], nk);     /* the median run, by Mpps */
		med[m][MPPS] = res[m][MPPS][k];
		med[m][CYC] = res[m][CYC][k];
		k = median_idx(res[m][CPU_MPPS], nk);
		med[m][CPU_MPPS] = res[m][CPU_MPPS][k];
		med[m][CPU_CYC] = res[m][CPU_CYC][k];
	}
	printf("\nmemory: %s, pool cache %u, TSC %.3f GHz, %.1f s per run after "
	       "%.1f s warm-up, median of %u rounds\n(runs with < 90%% of a CPU "
	       "left out when others exist; n = runs used)\n",
	       r.huge ? "hugepages" : "no-huge", pool_cache,
	       (double)r.tsc_hz / 1e9, secs, warmup, rounds);
	printf("%-16s %8s %8s %8s %8s %8s %8s %6s %2s\n", "mode", "Mpps",
	       "cyc/pkt", "cpuMpps", "cpu-cyc", "/bare", "cpu/bare", "mincpu", "n");
	for (m = 0; m < nm; m++) {
		double lo = 1;

		for (k = 0; k < used[m]; k++)
			lo = RTE_MIN(lo, res[m][MPPS][k] / res[m][CPU_MPPS][k]);
		printf("%-16s %8.3f %8.1f %8.3f %8.1f %8.3f %8.3f %5.0f%% %2u\n",
		       modes[m], med[m][MPPS], med[m][CYC], med[m][CPU_MPPS], med[m][CPU_CYC],
		       med[m][MPPS] / med[0][MPPS], med[m][CPU_MPPS] / med[0][CPU_MPPS],
		       100 * lo, used[m]);
	}
	if (strcmp(modes[0], "bare") != 0)
		printf("(ratios are to the first mode, %s)\n", modes[0]);
	return failed;
}
