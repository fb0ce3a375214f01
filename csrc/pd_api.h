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
	uint32_t n_acl;       /* rte_acl rules after the class merge (policy.c) */
	uint32_t n_classes;   /* address classes (prefixes + one root per family) */
	uint64_t revalidate_ns;      /* last commit: walk of the flow table */
	uint64_t flows_revalidated;  /* live flows the last commit looked at */
	uint64_t flows_revoked;      /* of those, no longer allowed */
	uint32_t acl_built;   /* families whose rte_acl context the last commit built */
	uint32_t acl_reused;  /* families whose rules were unchanged: context shared */
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

/* ---- observability: packet trace and capture ---- */
/* See csrc/pd_trace.c, csrc/pd_capture.c and docs/architecture.md. */
#define PD_TRACE_SNAP 128       /* bytes of each traced packet kept, from rx */
#define PD_TRACE_EVENTS 24      /* events per record (more: lost_events) */
#define PD_TRACE_MAX 4096       /* packets per trace session */
/* pd_trace_event.kind */
#define PD_TRACE_EV_STAGE 1     /* entered stage `stage` */
#define PD_TRACE_EV_EMIT 2      /* `stage` sent it along edge `arg` to stage `value` */
#define PD_TRACE_EV_TX 3        /* `stage` queued it for tx on pipeline port `arg` */
#define PD_TRACE_EV_DROP 4      /* `stage` dropped it with drop reason `arg` */
#define PD_TRACE_EV_HIT 5       /* table hit in `stage`: kind `arg`, id `value` */
#define PD_TRACE_EV_COPY 6      /* `stage` sent a copy to port `arg` (value 0) or stage `value`-1 */
#define PD_TRACE_EV_HELD 7      /* `stage` kept it (no verdict in this burst) */
/* pd_trace_event.arg of PD_TRACE_EV_HIT: what table hit (pd_trace_hit) */
#define PD_TRACE_RULE 1         /* policy rule id; 4294967295 = the default */
#define PD_TRACE_FLOW 2         /* conntrack flow index (pd_flow_rec.index) */
#define PD_TRACE_FLOW_NEW 3     /* a flow created for this packet */
#define PD_TRACE_BACKEND 4      /* load balancer backend id */
#define PD_TRACE_SERVICE 5      /* load balancer service id */
#define PD_TRACE_SA 6           /* IPsec SA id */
#define PD_TRACE_ROUTE 7        /* route next hop */
struct pd_trace_event {
	uint8_t kind;
	uint8_t stage;
	uint16_t arg;
	uint32_t value;
	uint64_t tsc;
};
struct pd_trace_rec {
	uint64_t seq;           /* order of matching, over all workers */
	uint64_t tsc;           /* at rx */
	uint32_t pkt_len;       /* frame length at rx */
	uint16_t snap_len;      /* bytes in data[] */
	uint16_t in_port;       /* pipeline port index */
	uint16_t queue;
	uint16_t worker;
	uint16_t n_events;
	uint16_t lost_events;
	struct pd_trace_event ev[PD_TRACE_EVENTS];
	uint8_t data[PD_TRACE_SNAP];
};
/* Trace the next `count` packets matching `filter` (a pcap-filter
 * expression as tcpdump takes, NULL or "" for all) from the next burst on;
 * replaces a trace in progress. */
int pd_trace_start(struct pd_pipeline *p, unsigned count, const char *filter);
/* pd_conntrack_expire that also copies each expired flow, as it was when it
 * was deleted, into out[] (at most max; the scan stops when out is full) and
 * sets *n_out: the flow log's end records. */
int pd_conntrack_expire_log(struct pd_pipeline *p, int stage, unsigned max_scan,
			    struct pd_flow_rec *out, unsigned max,
			    unsigned *n_out);

/* Denied packets of a policy stage, for the flow log (pydp.flowlog): a
 * ring the stage fills on its deny path while the log is on. 56 bytes. */
struct pd_deny_rec {
	uint8_t family;         /* 4 or 6 */
	uint8_t proto;
	uint16_t reason;        /* the stage's drop reason (policy-deny, default-deny) */
	uint16_t sport;         /* host order; 0 without TCP/UDP/SCTP ports */
	uint16_t dport;
	uint32_t rule;          /* rule id; 4294967295: the default */
	uint32_t len;           /* frame bytes */
	uint8_t src[16];        /* network order; IPv4 in the first 4 */
	uint8_t dst[16];
	uint64_t tsc;
};
/* on 1: create the ring (8192 records) and start filling it; 0: stop, free. */
int pd_policy_deny_log(struct pd_pipeline *p, int stage, int on);
/* Take up to max records; returns how many. *lost (if not NULL): records the
 * full ring refused since the last call. */
int pd_policy_deny_read(struct pd_pipeline *p, int stage, struct pd_deny_rec *out,
			unsigned max, uint64_t *lost);

/* Copy finished records not read before (up to max); returns how many. */
int pd_trace_read(struct pd_pipeline *p, struct pd_trace_rec *out, unsigned max);
/* Packets still to match (0: the trace is complete or none is running). */
int pd_trace_remaining(struct pd_pipeline *p);
/* Disarm and free the trace (unread records are lost). */
int pd_trace_stop(struct pd_pipeline *p);
/* The PD_OBS_* bits the worker loop sees (0: trace and capture cost one
 * branch per burst); a used-up count clears its bit. */
#define PD_OBS_TRACE 1
#define PD_OBS_CAPTURE 2
int pd_obs_armed(const struct pd_pipeline *p);
/* 0 if `filter` compiles, else -EINVAL with the compiler's message. */
int pd_filter_check(const char *filter);

struct pd_capture_info {
	uint64_t written;       /* packets written to the file */
	uint64_t dropped;       /* copies lost: capture ring full or pool empty */
	uint64_t remaining;     /* packets still to capture (count given) */
	int32_t active;         /* 1 while workers still copy */
	int32_t leaked;         /* after stop: copies not back in the capture pool (0) */
};
/* Capture to `path` (pcapng) what pipeline port `port` receives and sends
 * (stage -1), or what enters stage `stage` (port -1); count 0: until
 * stopped; snaplen 0: whole frames; filter as pd_trace_start. */
int pd_capture_start(struct pd_pipeline *p, const char *path, int port,
		     int stage, unsigned count, unsigned snaplen,
		     const char *filter);
/* Control thread: write what the workers copied; fills *info. */
int pd_capture_poll(struct pd_pipeline *p, struct pd_capture_info *info);
/* Disarm, write the rest and the statistics block, close the file. */
int pd_capture_stop(struct pd_pipeline *p, struct pd_capture_info *info);
/* ---- esp ---- */
/* IPsec ESP tunnel mode (RFC 4303) on rte_ipsec + rte_cryptodev, see
 * csrc/stages/esp_sa.h. Keys never leave C except into the crypto session;
 * nothing here reads a key back. */
#define PD_ESP_AES_GCM_128 0
#define PD_ESP_AES_GCM_256 1
#define PD_ESP_CHACHA20_POLY1305 2
#define PD_ESP_DIR_OUT 0
#define PD_ESP_DIR_IN 1
#define PD_ESP_KEY_MAX 36
#define PD_ESP_MAX_SEL 64
#define PD_ESP_MAX_WINDOW 4096
#define PD_ESP_MAX_SA 1024
/* crypto device choice of a stage (pd_esp_config) */
#define PD_ESP_DEV_AUTO 0
#define PD_ESP_DEV_AESNI_GCM 1
#define PD_ESP_DEV_AESNI_MB 2
#define PD_ESP_DEV_CHACHA 3
#define PD_ESP_DEV_OPENSSL 4
/* state flags of pd_esp_sa_info.flags: lifetime limits crossed */
#define PD_ESP_F_SOFT_TIME 1
#define PD_ESP_F_SOFT_BYTES 2
#define PD_ESP_F_SOFT_PACKETS 4
#define PD_ESP_F_HARD_TIME 8
#define PD_ESP_F_HARD_BYTES 16
#define PD_ESP_F_HARD_PACKETS 32
#define PD_ESP_F_SEQ_NEAR 64      /* outbound: sequence number nearing exhaustion */
#define PD_ESP_F_SEQ_EXHAUSTED 128 /* outbound: no sequence number left */
#define PD_ESP_N_SA_DROPS 8
struct pd_esp_sel {
	uint8_t family;       /* 4 or 6 */
	uint8_t proto;        /* 0 = any */
	uint8_t src_depth;
	uint8_t dst_depth;
	uint8_t src[16];      /* network byte order */
	uint8_t dst[16];
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
};
struct pd_esp_sa_conf {
	uint32_t spi;
	uint8_t dir;          /* PD_ESP_DIR_OUT / PD_ESP_DIR_IN */
	uint8_t cipher;       /* PD_ESP_AES_GCM_128 ... */
	uint8_t key_len;      /* cipher key + 4-byte salt: 20 or 36 */
	uint8_t outer_family; /* 4 or 6 */
	uint8_t key[36];      /* the caller wipes its copy after the call */
	uint8_t tun_src[16];  /* outer addresses as on the wire for this direction */
	uint8_t tun_dst[16];
	uint32_t replay_window;   /* inbound, 0..PD_ESP_MAX_WINDOW */
	uint32_t esn;             /* 1: 64-bit extended sequence numbers */
	uint64_t initial_seq;     /* out: first sequence number sent (0 = 1); in: window top */
	uint64_t seq_margin;      /* PD_ESP_F_SEQ_NEAR when fewer are left; 0: default */
	uint64_t soft_bytes, hard_bytes, soft_packets, hard_packets;  /* 0 = none */
	uint64_t soft_ms, hard_ms;                                    /* 0 = none */
	uint8_t ttl;              /* outer TTL / hop limit, 0 = 64 */
};
struct pd_esp_sa_info {
	uint32_t spi;
	uint8_t dir;
	uint8_t cipher;
	uint8_t outer_family;
	uint8_t inner_family;
	uint8_t tun_src[16];
	uint8_t tun_dst[16];
	uint32_t replay_window;
	uint32_t esn;
	uint32_t flags;           /* PD_ESP_F_* */
	uint32_t n_sel;
	uint64_t packets;
	uint64_t bytes;           /* inner IP bytes */
	uint64_t seq;             /* out: last sequence number sent; in: highest authenticated */
	uint64_t age_ms;
	uint64_t drops[8];        /* PD_ESP_N_SA_DROPS, names: pd_esp_sa_drop_name */
	char crypto_dev[32];      /* the cryptodev the session lives on */
	char mode[16];            /* "cpu-crypto" or "lookaside" */
};
/* Stage options (before or after build): crypto device choice. */
int pd_esp_config(struct pd_pipeline *p, int stage, int dev);
/* Add an SA (esp_encrypt: outbound, esp_decrypt: inbound) with its
 * selectors; published with RCU. -EEXIST if the SPI is in use in the stage. */
int pd_esp_sa_add(struct pd_pipeline *p, int stage, const struct pd_esp_sa_conf *c,
		  const struct pd_esp_sel *sels, unsigned n_sel);
/* Remove an SA: unpublish (RCU grace period), then wipe and free it. */
int pd_esp_sa_remove(struct pd_pipeline *p, int stage, uint32_t spi);
/* Copy up to max SAs (newest first); returns how many the stage has. */
int pd_esp_sa_list(struct pd_pipeline *p, int stage, struct pd_esp_sa_info *out,
		   unsigned max);
const char *pd_esp_sa_drop_name(unsigned i);
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

/* ---- integration: per-worker counters of lb backends and ESP SAs ---- */
/* The lb stage's per-worker backend counters, zero-copy: *base points at
 * rows x PD_LB_MAX_BACKENDS x 4 uint64 (packets, bytes, flows assigned,
 * pad), row = worker slot; sum the rows. Valid while the pipeline lives. */
int pd_lb_counters(struct pd_pipeline *p, int stage, uint64_t **base,
		   unsigned *rows);
/* One SA's per-worker counters, copied: out[r * PD_ESP_SA_NCTR + k], k =
 * packets, bytes, then a drop count per pd_esp_sa_drop_name(i), for r <
 * max_rows. Returns the rows written (the pipeline's workers), -ENOENT if
 * the stage has no SA `spi`. */
#define PD_ESP_SA_NCTR 10
int pd_esp_sa_counters(struct pd_pipeline *p, int stage, uint32_t spi,
		       uint64_t *out, unsigned max_rows);
