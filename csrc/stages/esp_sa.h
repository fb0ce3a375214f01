/* SPDX-License-Identifier: BSD-3-Clause
 * esp_sa.h - the SA table shared by the esp_encrypt and esp_decrypt stages.
 *
 * An SA is one rte_ipsec_sa (DPDK's ESP framing: header, IV, padding,
 * trailer, ICV, anti-replay window, ESN) plus one rte_cryptodev symmetric
 * session (the AEAD cipher) on a software crypto PMD, bound together in an
 * rte_ipsec_session. pydp writes no ESP framing and no crypto of its own.
 *
 * Crypto device: RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO on the ipsec_mb PMDs
 * (crypto_aesni_gcm for AES-GCM, crypto_aesni_mb for ChaCha20-Poly1305 and
 * as the second choice for AES-GCM): synchronous, on the worker's own core,
 * with no queue pair, no crypto op and no mempool get per packet, so a
 * worker shares nothing with another. crypto_openssl (no CPU crypto) is the
 * fallback, run lookaside through one queue pair per worker of a device of
 * the stage's own, with crypto ops allocated once when the stage gets its
 * first SA; crypto_chacha20_poly1305 runs the same way when chosen (its
 * CPU-crypto path fails in 22.11, see dev_pick).
 *
 * Table: immutable once published (pd_rcu_swap). It lists the stage's SAs
 * (newest first; inbound also sorted by SPI for a binary search) and, for
 * outbound, the SPD: every SA's selectors, newest SA first, first match
 * wins. So an SA added with the same selectors as an older one takes its
 * traffic at once (one pointer store), while the older one, still in the
 * table, keeps decrypting until it is removed: a rekey loses no packet.
 * The SPD is a linear first-match array, not rte_acl: a mesh node has a
 * few selectors per peer (PD_ESP_MAX_SEL per SA), a masked compare of one
 * to four words per entry is cheaper than an rte_acl classify call at that
 * size, and an SA add or remove (a rekey) must not cost an ACL build.
 *
 * SA objects live across tables; a remove publishes a table without the
 * SA, waits for the grace period (inside pd_rcu_swap), then destroys the
 * session (the PMD clears its key schedule), wipes the SA with
 * explicit_bzero and frees it.
 *
 * Counters of an SA (packets, bytes, drops by reason) are per worker: row
 * w->slot of sa->wc, plain adds once per SA group per burst, summed by the
 * control path (pd_esp_sa_list) or by Python (pd_esp_sa_counters). The
 * outbound sequence space is reserved with one CAS per group, so sequence
 * exhaustion is exact; a packet or byte limit sums the workers' rows (only
 * when the SA has one), exact with one worker per SA (RSS sends an SA's
 * tunnel to one queue), at most a burst per worker over otherwise.
 */
#ifndef PD_STAGE_ESP_SA_H
#define PD_STAGE_ESP_SA_H
#include <pthread.h>
#include <string.h>

#include <rte_ip.h>
#include <rte_ipsec.h>

#include "stages.h"

/* per-SA drop reasons (also stage drop reasons of the same names) */
enum {
	ESP_SD_REPLAYED = 0, ESP_SD_WINDOW, ESP_SD_AUTH, ESP_SD_SELECTOR,
	ESP_SD_MALFORMED, ESP_SD_EXPIRED, ESP_SD_SEQ, ESP_SD_CRYPTO,
	ESP_SD_N
};

/* replay bitmap: 64-bit blocks, a power of two above window / 64 */
#define ESP_RWIN_BLOCKS 128

struct esp_sel {
	uint8_t family;
	uint8_t proto;
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
	uint32_t src[4], smask[4];    /* network order, masked */
	uint32_t dst[4], dmask[4];
};

struct esp_sa {
	struct rte_ipsec_session ss;  /* first: cache aligned */
	struct rte_ipsec_sa *isa;
	void *cs;                     /* cryptodev session */
	uint8_t dev_id;
	uint8_t cpu;                  /* 1: CPU crypto, 0: lookaside */
	uint8_t dir, cipher, outer_family, inner_family, esn, ttl;
	uint32_t spi;
	uint32_t win;
	uint32_t iv_len;              /* ESP header + IV in front of the payload */
	uint8_t tun_src[16], tun_dst[16];
	/* outer IPv4 header: rte_raw_cksum() (16-bit words as they lie in
	 * memory) of its template, TOS, total length, id and checksum 0; see
	 * esp_outer_cksum() */
	uint32_t tun_sum;
	uint64_t seq_max;             /* UINT32_MAX or UINT64_MAX */
	uint64_t seq_margin;
	uint64_t soft_bytes, hard_bytes, soft_packets, hard_packets;
	uint64_t t_add, soft_tsc, hard_tsc;   /* TSC; UINT64_MAX: none */
	const char *dev_name;
	unsigned n_sel;
	struct esp_sel sel[PD_ESP_MAX_SEL];
	/* written by workers (relaxed atomics) */
	uint64_t seq __rte_cache_aligned;     /* out: next to send; in: highest authenticated */
	/* per worker (row = w->slot), plain adds by that worker only */
	struct esp_sa_wctr {
		uint64_t packets;
		uint64_t bytes;
		uint64_t drops[ESP_SD_N];
	} __rte_cache_aligned wc[PD_MAX_WORKERS];
	/* inbound anti-replay bitmap (RFC 6479), one writer: see esp_decrypt.c */
	uint32_t rwin_mask;                   /* blocks - 1 */
	uint64_t rwin[ESP_RWIN_BLOCKS] __rte_cache_aligned;
};

struct esp_table {
	unsigned n_sa;
	unsigned n_spd;
	struct esp_sa **sa;           /* newest first */
	struct esp_sa **by_spi;       /* sorted by SPI */
	struct esp_spd {
		struct esp_sel sel;
		struct esp_sa *sa;
	} *spd;                       /* outbound: newest SA's selectors first */
};

struct esp_priv {
	struct esp_table *tbl;        /* RCU-published */
	pthread_mutex_t lock;         /* control path only */
	int dir;                      /* PD_ESP_DIR_OUT for esp_encrypt */
	int dev_pref;                 /* PD_ESP_DEV_* */
	/* lookaside (crypto_openssl): one queue pair per worker */
	int la_dev;                   /* -1 none */
	int la_drv;                   /* PD_ESP_DEV_* of la_dev */
	uint16_t la_nqp;
	struct rte_mempool *la_pool;
	struct rte_crypto_op *la_ops[PD_MAX_WORKERS][2 * PD_BURST];
};

int esp_stage_init(struct pd_stage *st, int dir);
void esp_stage_fini(struct pd_stage *st);

/* ---- fast-path helpers -------------------------------------------------- */
/*
 * The outer IPv4 checksum of a packet rte_ipsec has just framed: the
 * template's sum plus the three fields rte_ipsec wrote (TOS byte, total
 * length, id), each read back with the width it was stored with, so the
 * loads are forwarded from the stores. rte_ipv4_cksum() over the fresh
 * header read it 16 bytes at a time across those small stores and stalled
 * on store forwarding: it was a quarter of the encrypt stage's own time.
 * Sums of 16-bit words are byte-order independent: everything here is in
 * memory order, and so is the stored result.
 */
static inline void esp_outer_cksum(const struct esp_sa *sa, struct rte_ipv4_hdr *ip)
{
	uint16_t tot, id, ck;
	uint32_t s;

	memcpy(&tot, &ip->total_length, 2);
	memcpy(&id, &ip->packet_id, 2);
	s = sa->tun_sum + tot + id;
	/* the TOS byte is the second byte of the first word */
	s += RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ?
		(uint32_t)ip->type_of_service << 8 : ip->type_of_service;
	ck = (uint16_t)~pd_cksum_fold(s);
	memcpy(&ip->hdr_checksum, &ck, 2);
}

/* packets (what 0) or bytes (what 1) of an SA, summed over `rows` rows */
static inline uint64_t esp_sa_sum(const struct esp_sa *sa, unsigned rows,
				  unsigned what)
{
	uint64_t s = 0;
	unsigned r;

	for (r = 0; r < rows && r < PD_MAX_WORKERS; r++)
		s += __atomic_load_n(what ? &sa->wc[r].bytes : &sa->wc[r].packets,
				     __ATOMIC_RELAXED);
	return s;
}

static inline bool esp_sa_expired(const struct esp_sa *sa, unsigned rows,
				  uint64_t now)
{
	return now >= sa->hard_tsc ||
		(sa->hard_packets && esp_sa_sum(sa, rows, 0) >= sa->hard_packets) ||
		(sa->hard_bytes && esp_sa_sum(sa, rows, 1) >= sa->hard_bytes);
}

static inline void esp_sa_count(struct esp_sa *sa, uint16_t slot, uint64_t pkts,
				uint64_t bytes)
{
	struct esp_sa_wctr *c = &sa->wc[slot];

	/* one writer per row; relaxed stores so the control path's loads
	 * are not torn */
	__atomic_store_n(&c->packets, c->packets + pkts, __ATOMIC_RELAXED);
	__atomic_store_n(&c->bytes, c->bytes + bytes, __ATOMIC_RELAXED);
}

static inline void esp_sa_drop(struct esp_sa *sa, uint16_t slot, unsigned r,
			       uint64_t n)
{
	struct esp_sa_wctr *c = &sa->wc[slot];

	__atomic_store_n(&c->drops[r], c->drops[r] + n, __ATOMIC_RELAXED);
}

/* Note the SA in the trace record of a traced packet among mb[0..n):
 * one never-taken branch per SA group when no packet is traced. */
static inline void esp_trace_sa(struct pd_worker *w, struct pd_stage *st,
				const struct esp_sa *sa, struct rte_mbuf **mb,
				uint16_t n)
{
	uint16_t i;

	if (likely(w->trace_cur == NULL))
		return;
	for (i = 0; i < n; i++)
		pd_trace_hit(w, st, mb[i], PD_TRACE_SA, sa->spi);
}

/* The first of n selectors an inner packet matches (addresses as 32-bit
 * words in network order, a[0] alone for IPv4), or -1. */
static inline int esp_sel_find(const struct esp_sel *s, unsigned n, uint8_t family,
			       const uint32_t *a, const uint32_t *b, uint8_t proto,
			       uint16_t sport, uint16_t dport, size_t stride)
{
	const unsigned nw = family == 4 ? 1 : 4;
	unsigned i, k;

	for (i = 0; i < n; i++, s = (const struct esp_sel *)((const char *)s + stride)) {
		bool ok = s->family == family && (s->proto == 0 || s->proto == proto) &&
			sport >= s->sport_lo && sport <= s->sport_hi &&
			dport >= s->dport_lo && dport <= s->dport_hi;

		for (k = 0; ok && k < nw; k++)
			ok = (a[k] & s->smask[k]) == s->src[k] &&
				(b[k] & s->dmask[k]) == s->dst[k];
		if (ok)
			return (int)i;
	}
	return -1;
}

/* The 5-tuple fields of a parsed packet for selector matching: the
 * addresses copied into words (any alignment), ports 0 unless TCP, UDP or
 * SCTP with its header. */
static inline uint8_t esp_pkt_tuple(const uint8_t *d, const struct pd_meta *m,
				    uint32_t *a, uint32_t *b, uint16_t *sport,
				    uint16_t *dport)
{
	const uint8_t *l3 = d + m->l3_off;
	uint8_t family;

	if (m->l3 == PD_L3_IPV4) {
		family = 4;
		memcpy(a, l3 + 12, 4);
		memcpy(b, l3 + 16, 4);
	} else {
		family = 6;
		memcpy(a, l3 + 8, 16);
		memcpy(b, l3 + 24, 16);
	}
	*sport = *dport = 0;
	if (m->l4_off && !(m->flags & PD_META_FRAG) &&
	    (m->l4_proto == IPPROTO_TCP || m->l4_proto == IPPROTO_UDP ||
	     m->l4_proto == IPPROTO_SCTP)) {
		*sport = pd_rd16(d + m->l4_off);
		*dport = pd_rd16(d + m->l4_off + 2);
	}
	return family;
}

/* The IP length of a parsed packet from its header (IPv6: 40 + payload). */
static inline uint32_t esp_ip_len(const uint8_t *d, const struct pd_meta *m)
{
	const uint8_t *l3 = d + m->l3_off;

	return m->l3 == PD_L3_IPV4 ? pd_rd16(l3 + 2) : 40u + pd_rd16(l3 + 4);
}

/* Prepare + crypto for n packets of one SA; the good ones come first, in
 * order, and the count is returned (what rte_ipsec_pkt_process takes). */
uint16_t esp_lookaside(struct esp_priv *pr, struct esp_sa *sa,
		       struct pd_worker *w, struct rte_mbuf **mb, uint16_t n);

static inline uint16_t esp_crypt(struct esp_priv *pr, struct esp_sa *sa,
				 struct pd_worker *w, struct rte_mbuf **mb,
				 uint16_t n)
{
	if (likely(sa->cpu))
		return rte_ipsec_pkt_cpu_prepare(&sa->ss, mb, n);
	return esp_lookaside(pr, sa, w, mb, n);
}

/* Group the packets of a burst by SA: idx[i] is an SA's position in the
 * table or -1 (already handled); calls fn for each SA with its packets in
 * arrival order. */
#define ESP_FOR_EACH_GROUP(idx, pkts, n, grp, g, k, BODY) do { \
	uint16_t _i, _j; \
	for (_i = 0; _i < (n); _i++) { \
		if ((idx)[_i] < 0) \
			continue; \
		(k) = (idx)[_i]; \
		(g) = 0; \
		for (_j = _i; _j < (n); _j++) \
			if ((idx)[_j] == (k)) { \
				(grp)[(g)++] = (pkts)[_j]; \
				(idx)[_j] = -1; \
			} \
		BODY; \
	} \
} while (0)

#endif
