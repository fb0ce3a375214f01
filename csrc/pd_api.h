/* SPDX-License-Identifier: BSD-3-Clause
 * pd_api.h - the public C API of the pydp core.
 *
 * This header is read twice: by the C compiler, and by cffi as its cdef
 * (pydp/_ffi_build.py strips the preprocessor lines). Keep it plain C
 * declarations: no inline code, no macros beyond integer constants.
 *
 * Every control function returns 0 (or a non-negative value) on success and
 * -errno on failure, leaving a message for pd_last_error().
 */
#ifndef PD_API_H
#define PD_API_H
#include <stdint.h>
#include <stddef.h>

#define PD_BURST 32
#define PD_MAX_PORTS 32
#define PD_MAX_STAGES 32
#define PD_MAX_EDGES 8
#define PD_MAX_WORKERS 16
#define PD_MAX_RXQ 64
#define PD_NAME_LEN 64

/* ---- errors ---------------------------------------------------------- */
const char *pd_last_error(void);

/* ---- EAL ------------------------------------------------------------- */
int pd_eal_init(int argc, char **argv);
int pd_log_to_file(const char *path);
int pd_eal_ready(void);
int pd_eal_hugepages(void);
unsigned pd_lcore_count(void);
int pd_lcore_role(unsigned lcore);   /* 0 off, 1 main, 2 worker */
unsigned pd_main_lcore(void);
uint64_t pd_tsc_hz(void);
uint64_t pd_tsc(void);

/* ---- mbuf pools ------------------------------------------------------- */
struct pd_pool;
int pd_pool_create(const char *name, unsigned n_mbufs, unsigned cache,
		   unsigned data_room, struct pd_pool **out);
void pd_pool_free(struct pd_pool *pool);
unsigned pd_pool_avail(const struct pd_pool *pool);
unsigned pd_pool_size(const struct pd_pool *pool);

/* ---- ports ------------------------------------------------------------ */
struct pd_port_conf {
	uint16_t n_rxq;
	uint16_t n_txq;
	uint16_t rx_desc;
	uint16_t tx_desc;
	int promisc;
};

struct pd_port_info {
	char name[PD_NAME_LEN];
	char driver[PD_NAME_LEN];
	uint8_t mac[6];
	uint16_t max_rxq;
	uint16_t max_txq;
	uint16_t n_rxq;
	uint16_t n_txq;
	uint64_t rss_offloads;
	int link_up;
	uint32_t link_speed;
	int is_ring;          /* rings reachable for inject/capture */
};

struct pd_port_hwstats {
	uint64_t ipackets;
	uint64_t opackets;
	uint64_t ibytes;
	uint64_t obytes;
	uint64_t imissed;
	uint64_t ierrors;
	uint64_t oerrors;
	uint64_t rx_nombuf;
};

int pd_port_probe(const char *devargs, uint16_t *port_id);
int pd_port_configure(uint16_t port_id, const struct pd_port_conf *conf,
		      struct pd_pool *pool);
int pd_port_start(uint16_t port_id);
int pd_port_stop(uint16_t port_id);
int pd_port_remove(uint16_t port_id);
int pd_port_info(uint16_t port_id, struct pd_port_info *out);
int pd_port_hwstats(uint16_t port_id, struct pd_port_hwstats *out);
int pd_port_inject(uint16_t port_id, uint16_t queue, struct pd_pool *pool,
		   const uint8_t *data, const uint32_t *lens, unsigned n);
int pd_port_capture(uint16_t port_id, uint16_t queue, uint8_t *buf,
		    uint32_t slot, uint32_t *lens, unsigned max);
int pd_port_pending(uint16_t port_id, int tx_side);
int pd_port_count(void);

/* ---- pipelines ---------------------------------------------------------- */
struct pd_pipeline;

int pd_pipeline_new(const char *name, struct pd_pipeline **out);
void pd_pipeline_free(struct pd_pipeline *p);
int pd_pipeline_add_port(struct pd_pipeline *p, const char *name,
			 uint16_t port_id);
int pd_pipeline_add_stage(struct pd_pipeline *p, const char *type,
			  const char *name);
int pd_pipeline_link(struct pd_pipeline *p, int stage, int edge, int next);
int pd_pipeline_set_input(struct pd_pipeline *p, int port, int stage);
int pd_pipeline_set_bare(struct pd_pipeline *p, int in_port, int out_port);
int pd_pipeline_build(struct pd_pipeline *p, struct pd_pool *pool,
		      const unsigned *lcores, unsigned n_workers);
int pd_pipeline_start(struct pd_pipeline *p);
int pd_pipeline_stop(struct pd_pipeline *p);
int pd_pipeline_running(const struct pd_pipeline *p);
uint64_t *pd_pipeline_counters(struct pd_pipeline *p, unsigned *rows,
			       unsigned *stride);
unsigned pd_pipeline_n_counters(const struct pd_pipeline *p);
const char *pd_pipeline_counter_name(const struct pd_pipeline *p, unsigned i);
/* Count TSC cycles per stage in stage/<s>/cycles (default off; any time, even
 * while running). Returns the previous setting, 0 or 1. */
int pd_pipeline_set_stage_cycles(struct pd_pipeline *p, int on);

/* stage types: names of edges, drop reasons and extra counters */
int pd_stage_type_known(const char *type);
const char *pd_stage_type_edge(const char *type, unsigned i);
const char *pd_stage_type_drop(const char *type, unsigned i);

/* ---- stage configuration ----------------------------------------------- */
int pd_parse_config(struct pd_pipeline *p, int stage, int verify_cksum);
int pd_forward_config(struct pd_pipeline *p, int stage, int port,
		      const uint8_t *src_mac, const uint8_t *dst_mac, int keep_src);
int pd_mirror_config(struct pd_pipeline *p, int stage, int port);

struct pd_route {
	uint8_t family;     /* 4 or 6 */
	uint8_t depth;
	uint8_t addr[16];   /* network byte order */
	uint32_t nexthop;
};
struct pd_nexthop {
	int port;
	uint8_t dst_mac[6];
	uint8_t src_mac[6];
	int has_src_mac;
};
int pd_l3route_commit(struct pd_pipeline *p, int stage,
		      const struct pd_route *routes, unsigned n_routes,
		      const struct pd_nexthop *nhs, unsigned n_nhs);

/* ---- template traffic source -------------------------------------------- */
struct pd_source_var {
	uint16_t tmpl;      /* template index */
	uint16_t offset;    /* byte offset in the packet */
	uint8_t width;      /* 1, 2 or 4 bytes, big endian */
	uint8_t random;     /* 0: step through [min,max]; 1: uniform random */
	uint32_t min;
	uint32_t max;
	uint32_t step;
};
struct pd_source_tmpl {
	uint16_t len;
	uint16_t l3_off;    /* 0: no IPv4/IPv6 header to fix */
	uint16_t l4_off;
	uint8_t ip_ver;
	uint8_t l4_proto;   /* 6/17: recompute checksum */
};
int pd_pipeline_set_source(struct pd_pipeline *p, int port,
			   const uint8_t *data,
			   const struct pd_source_tmpl *tmpls, unsigned n_tmpl,
			   const struct pd_source_var *vars, unsigned n_vars,
			   uint64_t rate_pps, uint64_t count);
int pd_pipeline_source_done(const struct pd_pipeline *p);

/* ---- fuzzing / tests: run the parse logic on one buffer ------------------ */
int pd_parse_buffer(const uint8_t *data, uint32_t len, int verify_cksum,
		    uint16_t *l3_off, uint16_t *l4_off, uint8_t *l4_proto);

/* ---- policy ---- */
/* Zero-trust 5-tuple policy (rte_acl), see csrc/stages/policy.h. */
#define PD_POLICY_MAX_PRIORITY 268435454
#define PD_POLICY_MAX_RULES 4194304
#define PD_POLICY_MAX_IDS 16777216
struct pd_acl_rule {
	uint32_t id;          /* policy rule index: counters are per id */
	uint32_t priority;    /* higher wins; on a tie deny wins */
	uint8_t family;       /* 4 or 6 */
	uint8_t proto;        /* 0 = any */
	uint8_t src_depth;
	uint8_t dst_depth;
	uint8_t src[16];      /* network byte order */
	uint8_t dst[16];
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
	uint8_t action;       /* 0 deny, 1 allow */
};
struct pd_policy_info {
	uint64_t generation;  /* commits so far; 0 = none (everything IP is default-deny) */
	uint64_t build_ns;    /* last commit: validate + compile both families */
	uint64_t publish_ns;  /* last commit: RCU swap, grace period, free of the old table */
	uint32_t n_rules4;
	uint32_t n_rules6;
	uint32_t n_ids;
	int32_t default_allow;
	int32_t conntrack_stage;  /* -1: stateless */
};
/* Build a complete new table and publish it; on error the old one stays. */
int pd_policy_commit(struct pd_pipeline *p, int stage,
		     const struct pd_acl_rule *rules, unsigned n_rules,
		     unsigned n_ids, int default_allow);
/* Link a conntrack stage (-1: none); -ENOTSUP when conntrack is not built in. */
int pd_policy_config(struct pd_pipeline *p, int stage, int conntrack_stage);
/* Per-id packets and bytes of the current table, summed over workers;
 * returns its generation (0: none yet). Ids past the table's are 0. */
int pd_policy_counters(struct pd_pipeline *p, int stage, uint64_t *pkts,
		       uint64_t *bytes, unsigned n_ids);
int pd_policy_info(struct pd_pipeline *p, int stage, struct pd_policy_info *out);

/* ---- conntrack ---- */
/* The flow table stage, see csrc/stages/conntrack.h. */
#define PD_CT_NEW 1
#define PD_CT_ESTABLISHED 2
#define PD_CT_CLOSING 3
/* timeouts_ms[] of pd_conntrack_config, in this order */
#define PD_CT_TIMEOUT_TCP_ESTABLISHED 0
#define PD_CT_TIMEOUT_TCP_OTHER 1
#define PD_CT_TIMEOUT_UDP 2        /* also every protocol but TCP and ICMP */
#define PD_CT_TIMEOUT_ICMP 3       /* ICMP and ICMPv6 */
#define PD_CT_N_TIMEOUTS 4
/* One flow as pd_conntrack_dump copies it out (96 bytes, no padding). */
struct pd_flow_rec {
	uint8_t family;       /* 4 or 6 */
	uint8_t proto;
	uint8_t state;        /* PD_CT_NEW, PD_CT_ESTABLISHED, PD_CT_CLOSING */
	uint8_t tcp_state;    /* the precise state: PD_CT_NEW ... PD_CT_TIME_WAIT */
	uint16_t sport;       /* original direction, host order; ICMP echo: the id */
	uint16_t dport;
	uint8_t src[16];      /* original direction, network order; IPv4: first 4 */
	uint8_t dst[16];
	uint32_t tag;         /* set by the stage that confirmed the flow */
	uint32_t index;       /* flow index: pd_meta aux - 1 */
	uint64_t packets_orig;
	uint64_t packets_reply;
	uint64_t bytes_orig;
	uint64_t bytes_reply;
	uint64_t age_ms;      /* since the first packet */
	uint64_t idle_ms;     /* since the last packet */
	uint32_t lb;          /* load balancer: backend id + 1, 0 none */
	uint16_t nat_sport;   /* translated tuple (towards the backend), host order */
	uint16_t nat_dport;
	uint8_t nat_src[16];  /* all 0 when the flow is not translated */
	uint8_t nat_dst[16];
};
/* Create the table (before pd_pipeline_build): capacity flows at most;
 * confirm_mode 1: look up only, pd_conntrack_confirm creates; timeouts_ms:
 * PD_CT_N_TIMEOUTS values, NULL for 300 s, 30 s, 30 s, 10 s. */
int pd_conntrack_config(struct pd_pipeline *p, int stage, unsigned capacity,
			int confirm_mode, const uint32_t *timeouts_ms);
/* Age flows: scan max_scan slots (0: all) from where the last call
 * stopped and delete the idle ones. It waits one RCU grace period (as
 * pd_rcu_swap), so their slots take new flows when it returns. Returns how
 * many expired. Control thread; workers never wait for it. */
int pd_conntrack_expire(struct pd_pipeline *p, int stage, unsigned max_scan);
/* Copy up to max live flows into out; returns how many. */
int pd_conntrack_dump(struct pd_pipeline *p, int stage, struct pd_flow_rec *out,
		      unsigned max);
/* Live flows in the table. */
int pd_conntrack_count(struct pd_pipeline *p, int stage);

/* ---- conntrack: TCP state machine, eviction, NAT entries (issue 4) ---- */
/* Precise states (pd_flow_rec.tcp_state; state shows them as NEW,
 * ESTABLISHED (SYN_RECV too) or CLOSING (CLOSE, FIN_WAIT, TIME_WAIT)).
 * PD_CT_CLOSING is TCP's CLOSE: a RST was seen. */
#define PD_CT_SYN_RECV 4
#define PD_CT_FIN_WAIT 5      /* a FIN one way */
#define PD_CT_TIME_WAIT 6     /* a FIN each way */
#define PD_CT_TIMEOUT_TCP_SYN_SENT 4
#define PD_CT_TIMEOUT_TCP_SYN_RECV 5
#define PD_CT_TIMEOUT_TCP_FIN_WAIT 6
#define PD_CT_TIMEOUT_TCP_TIME_WAIT 7
#define PD_CT_TIMEOUT_TCP_CLOSE 8
#define PD_CT_N_TIMEOUTS_ALL 9
struct pd_ct_conf {
	uint32_t capacity;
	int32_t confirm;      /* 1: look up only */
	int32_t evict;        /* 1: when full, evict the least recently used flow */
	int32_t nat;          /* 1: room for a reply-tuple entry per flow (lb NAT) */
	uint32_t timeouts_ms[PD_CT_N_TIMEOUTS_ALL];   /* 0: the default */
};
int pd_conntrack_configure(struct pd_pipeline *p, int stage,
			   const struct pd_ct_conf *conf);

/* ---- lb: services, backends, Maglev / weighted round-robin / least-conn ---- */
/* Service load balancing with DNAT (and optional SNAT), see csrc/stages/lb.h. */
#define PD_LB_WRR 0
#define PD_LB_MAGLEV 1
#define PD_LB_LEASTCONN 2
#define PD_LB_UP 0
#define PD_LB_DRAIN 1         /* no new flows; its flows finish */
#define PD_LB_DOWN 2          /* health: no new flows */
#define PD_LB_MAX_SERVICES 4096
#define PD_LB_MAX_BACKENDS 65536
#define PD_LB_MAX_WEIGHT 65535
#define PD_LB_MAX_TABLE 16777259
struct pd_lb_service {
	uint8_t family;       /* 4 or 6 */
	uint8_t proto;        /* 6 or 17 */
	uint16_t port;        /* host order */
	uint8_t vip[16];
	uint8_t algo;         /* PD_LB_* */
	uint8_t snat;         /* 1: source becomes snat_addr */
	uint16_t pad;
	uint8_t snat_addr[16];
	uint32_t table_size;  /* Maglev: a prime; 0 = 65537 */
	uint32_t first;       /* its backends: bks[first .. first + n) */
	uint32_t n;
};
struct pd_lb_backend {
	uint8_t addr[16];     /* same family as its service */
	uint16_t port;        /* host order */
	uint8_t state;        /* PD_LB_UP, PD_LB_DRAIN, PD_LB_DOWN */
	uint8_t pad;
	uint32_t weight;      /* 0 .. PD_LB_MAX_WEIGHT; 0 takes no new flows */
	int32_t id;           /* out: the backend id flows keep (pd_flow_rec.lb - 1) */
};
struct pd_lb_change {     /* per service, what a commit would change */
	uint32_t buckets;     /* Maglev table size, 0 for the other algorithms */
	uint32_t buckets_moved;
	uint32_t flows;       /* live flows of the service */
	uint32_t flows_moved; /* live flows whose bucket / backend would change:
			       * they stay on their backend (pinned) */
	uint32_t flows_lost_backend; /* live flows on a backend that goes away,
				      * drains or goes down: they finish there */
	uint32_t pad;
};
struct pd_lb_bstats {
	uint64_t conns;       /* live flows on the backend */
	uint64_t assigned;    /* flows ever given to it */
};
/* Link the conntrack stage (before pd_pipeline_build). */
int pd_lb_config(struct pd_pipeline *p, int stage, int conntrack_stage);
/* Validate, build and publish the services (and their backends' tables);
 * on error the old table stays. Fills bks[i].id. */
int pd_lb_commit(struct pd_pipeline *p, int stage,
		 const struct pd_lb_service *svcs, unsigned n_svcs,
		 struct pd_lb_backend *bks, unsigned n_bks);
/* What pd_lb_commit of the same arguments would move, without publishing:
 * out[i] for svcs[i]. */
int pd_lb_preview(struct pd_pipeline *p, int stage,
		  const struct pd_lb_service *svcs, unsigned n_svcs,
		  const struct pd_lb_backend *bks, unsigned n_bks,
		  struct pd_lb_change *out);
/* Live connections and assignments of backend ids ids[0..n). */
int pd_lb_backend_stats(struct pd_pipeline *p, int stage, const int32_t *ids,
			unsigned n, struct pd_lb_bstats *out);
/* Build a weighted Maglev table of size m (a prime) for n backends with
 * permutation keys `keys`; table[j] = backend index. Returns the build time
 * in nanoseconds (benchmarks, previews). */
int64_t pd_maglev_build(const uint64_t *keys, const uint32_t *weights,
			unsigned n, uint32_t m, int32_t *table);

#endif /* PD_API_H */
