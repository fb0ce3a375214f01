/* SPDX-License-Identifier: BSD-3-Clause
 * esp_encrypt.c - the outbound ESP stage: SPD lookup, then rte_ipsec
 * tunnel-mode encapsulation, per SA group of a burst.
 *
 * In: parsed IPv4/IPv6 packets (a parse stage before). The SPD (esp_sa.h)
 * picks the SA by the inner 5-tuple, newest SA first. Out on `next`: the
 * ESP packet with a new Ethernet header (MACs zero: the following forward
 * or l3route stage writes them) and the outer IPv4/IPv6 header from the
 * SA's template; pd_meta describes the outer packet. Drops: not-ip, no-sa
 * (no selector matched), sa-expired (hard lifetime), seq-exhausted (no
 * sequence number left: rekey), no-room (not enough head/tailroom for the
 * ESP overhead, or a chained mbuf), crypto-error.
 */
#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_ip.h>

#include "esp_sa.h"
#include "esp_encrypt.h"

#define X_ENC_DROPS(_) \
	_(NOT_IP, "not-ip") \
	_(NO_SA, "no-sa") \
	_(EXPIRED, "sa-expired") \
	_(SEQ, "seq-exhausted") \
	_(NO_ROOM, "no-room") \
	_(CRYPTO, "crypto-error")
enum {
#define _E(id, s) ENC_##id,
	X_ENC_DROPS(_E)
#undef _E
};
static const char *const enc_drops[] = {
#define _S(id, s) s,
	X_ENC_DROPS(_S)
#undef _S
	NULL,
};
static const char *const enc_edges[] = { "next", NULL };

/* ESP overhead past the inner packet: header, IV, at most 3 pad bytes,
 * pad length and next header, ICV, and the ESN high bits while hashing */
#define ENC_HEADROOM (40 + 8 + 8)
#define ENC_TAILROOM (3 + 2 + 16 + 4)

static int enc_init(struct pd_stage *st)
{
	return esp_stage_init(st, PD_ESP_DIR_OUT);
}

/* Reserve up to n sequence numbers of an SA (and its packet limit). */
static uint16_t enc_reserve(struct esp_sa *sa, uint16_t n)
{
	uint64_t cur = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED), k;

	do {
		/* rte_ipsec refuses a burst whose last number would reach seq_max */
		k = cur < sa->seq_max ? RTE_MIN((uint64_t)n, sa->seq_max - cur) : 0;
		if (k == 0)
			return 0;
	} while (!__atomic_compare_exchange_n(&sa->seq, &cur, cur + k, false,
					      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return (uint16_t)k;
}

static void enc_group(struct pd_stage *st, struct pd_worker *w,
		      struct esp_priv *pr, struct esp_sa *sa,
		      struct rte_mbuf **mb, uint16_t n, uint64_t now)
{
	const unsigned l4 = sa->outer_family == 4 ? 14 + 20 : 14 + 40;
	uint16_t i, k, good, ok;
	uint64_t bytes = 0;

	esp_trace_sa(w, st, sa, mb, n);
	if (unlikely(esp_sa_expired(sa, w->pl->n_workers, now))) {
		for (i = 0; i < n; i++)
			pd_drop(w, st, ENC_EXPIRED, mb[i]);
		esp_sa_drop(sa, w->slot, ESP_SD_EXPIRED, n);
		return;
	}
	/* what cannot take the ESP overhead goes last, out of the SA's way */
	for (i = 0, k = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		if (unlikely(m->nb_segs != 1 || rte_pktmbuf_headroom(m) < ENC_HEADROOM ||
			     rte_pktmbuf_tailroom(m) < ENC_TAILROOM)) {
			pd_drop(w, st, ENC_NO_ROOM, m);
			esp_sa_drop(sa, w->slot, ESP_SD_CRYPTO, 1);
			continue;
		}
		m->l2_len = pd_meta(m)->l3_off;
		mb[k++] = m;
	}
	n = k;
	if (n == 0)
		return;
	if (sa->hard_packets) {
		uint64_t pk = esp_sa_sum(sa, w->pl->n_workers, 0);
		uint64_t left = pk < sa->hard_packets ? sa->hard_packets - pk : 0;

		if (left < n) {
			for (i = (uint16_t)left; i < n; i++)
				pd_drop(w, st, ENC_EXPIRED, mb[i]);
			esp_sa_drop(sa, w->slot, ESP_SD_EXPIRED, n - left);
			n = (uint16_t)left;
		}
	}
	k = enc_reserve(sa, n);
	if (unlikely(k < n)) {
		for (i = k; i < n; i++)
			pd_drop(w, st, ENC_SEQ, mb[i]);
		esp_sa_drop(sa, w->slot, ESP_SD_SEQ, n - k);
	}
	if (k == 0)
		return;
	for (i = 0; i < k; i++)
		bytes += rte_pktmbuf_pkt_len(mb[i]) - mb[i]->l2_len;
	good = esp_crypt(pr, sa, w, mb, k);
	ok = good ? rte_ipsec_pkt_process(&sa->ss, mb, good) : 0;
	for (i = ok; i < k; i++)
		pd_drop(w, st, ENC_CRYPTO, mb[i]);
	if (k > ok)
		esp_sa_drop(sa, w->slot, ESP_SD_CRYPTO, k - ok);
	for (i = 0; i < ok; i++) {
		struct rte_mbuf *m = mb[i];
		uint8_t *d = rte_pktmbuf_mtod(m, uint8_t *);
		struct pd_meta *md = pd_meta(m);

		if (sa->outer_family == 4) {
			struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(d + 14);

			esp_outer_cksum(sa, ip);
			md->l3 = PD_L3_IPV4;
		} else {
			md->l3 = PD_L3_IPV6;
		}
		md->l3_off = 14;
		md->l4_off = (uint16_t)l4;
		md->l4_proto = IPPROTO_ESP;
		md->flags = 0;
		md->aux = 0;
		m->ol_flags &= ~RTE_MBUF_F_TX_OFFLOAD_MASK;
		pd_emit(w, st, 0, m);
	}
	/* packets: encrypted; bytes: the inner IP bytes handed to rte_ipsec */
	esp_sa_count(sa, w->slot, ok, bytes);
}

static void enc_process(struct pd_stage *st, struct pd_worker *w,
			struct rte_mbuf **pkts, uint16_t n)
{
	struct esp_priv *pr = st->priv;
	const struct esp_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	struct rte_mbuf *grp[2 * PD_BURST];
	struct esp_sa *sa_of[2 * PD_BURST];
	int16_t idx[2 * PD_BURST];
	uint64_t now = rte_rdtsc();
	uint16_t i, g;
	int16_t k;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		const struct pd_meta *md = pd_meta(m);
		const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
		uint32_t a[4], b[4], iplen;
		uint16_t sp, dp;
		uint8_t fam;
		int e;

		idx[i] = -1;
		if (unlikely(md->l3 != PD_L3_IPV4 && md->l3 != PD_L3_IPV6)) {
			pd_drop(w, st, ENC_NOT_IP, m);
			continue;
		}
		fam = esp_pkt_tuple(d, md, a, b, &sp, &dp);
		e = t ? esp_sel_find(&t->spd[0].sel, t->n_spd, fam, a, b, md->l4_proto,
				     sp, dp, sizeof(t->spd[0])) : -1;
		if (unlikely(e < 0)) {
			pd_drop(w, st, ENC_NO_SA, m);
			continue;
		}
		/* Ethernet padding is not the packet: protect the IP length only */
		iplen = esp_ip_len(d, md);
		if (unlikely(rte_pktmbuf_pkt_len(m) > md->l3_off + iplen))
			rte_pktmbuf_trim(m, (uint16_t)(rte_pktmbuf_pkt_len(m) - md->l3_off -
						       iplen));
		sa_of[i] = t->spd[e].sa;
		idx[i] = 0;
	}
	/* group key: the first packet of the same SA (an SA's packets may match
	 * different selectors of it) */
	for (i = 0; i < n; i++) {
		uint16_t j;

		if (idx[i] < 0)
			continue;
		idx[i] = (int16_t)i;
		for (j = 0; j < i; j++)
			if (idx[j] == (int16_t)j && sa_of[j] == sa_of[i]) {
				idx[i] = (int16_t)j;
				break;
			}
	}
	ESP_FOR_EACH_GROUP(idx, pkts, n, grp, g, k,
			   enc_group(st, w, pr, sa_of[k], grp, g, now));
}

const struct pd_stage_ops pd_stage_esp_encrypt = {
	.type = "esp_encrypt",
	.edges = enc_edges,
	.drops = enc_drops,
	.needs_next = true,
	.priv_size = sizeof(struct esp_priv),
	.init = enc_init,
	.fini = esp_stage_fini,
	.process = enc_process,
};
