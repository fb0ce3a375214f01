/* SPDX-License-Identifier: BSD-3-Clause
 * esp_decrypt.c - the inbound ESP stage: SA by SPI, rte_ipsec tunnel-mode
 * decapsulation with anti-replay, then the inner packet's check against
 * its SA's selectors; per SA group of a burst.
 *
 * In: parsed packets (a parse stage before). Out on `next`: the inner
 * packet behind a new Ethernet header (MACs zero: the following forward or
 * l3route stage writes them), parsed again so pd_meta describes it.
 * Drops, each counted (and per SA where there is one):
 *   not-esp            not IPv4/IPv6 protocol 50 (or a fragment of it)
 *   unknown-spi        no SA of this stage has the SPI
 *   tunnel-mismatch    the outer addresses are not the SA's tunnel ones
 *   malformed          ESP too short or misaligned, bad padding or trailer
 *   replayed           sequence number already seen inside the window
 *   out-of-window      sequence number behind the window (or 0)
 *   auth-failed        the ICV did not verify (tampered or wrong key)
 *   selector-mismatch  decrypted, but the inner packet is not the SA's traffic
 *   inner-malformed    decrypted, but the inner packet does not parse
 *   sa-expired         the SA's hard lifetime is over
 *   crypto-error       the crypto device failed otherwise
 *
 * rte_ipsec gives a failed packet no reason. The stage tells them apart:
 * lengths are checked before rte_ipsec sees a packet (malformed), and so
 * is the sequence number, against the stage's own replay window (see
 * win_check: rte_ipsec 22.11's window misses half the replays), which says
 * replayed or out-of-window. What rte_ipsec_pkt_process refuses carries
 * RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED when the ICV failed (auth-failed);
 * otherwise it is a duplicate of a packet of the same burst (replayed) or
 * bad padding/next header (malformed). The replay state of an inbound SA
 * has one writer: with more than one worker, one SA's packets must reach
 * one rx queue (RSS on the outer addresses does that).
 */
#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_ip.h>

#include "esp_sa.h"
#include "esp_decrypt.h"

#define X_DEC_DROPS(_) \
	_(NOT_ESP, "not-esp") \
	_(UNKNOWN_SPI, "unknown-spi") \
	_(TUNNEL, "tunnel-mismatch") \
	_(MALFORMED, "malformed") \
	_(REPLAYED, "replayed") \
	_(WINDOW, "out-of-window") \
	_(AUTH, "auth-failed") \
	_(SELECTOR, "selector-mismatch") \
	_(INNER, "inner-malformed") \
	_(EXPIRED, "sa-expired") \
	_(CRYPTO, "crypto-error")
enum {
#define _E(id, s) DEC_##id,
	X_DEC_DROPS(_E)
#undef _E
};
static const char *const dec_drops[] = {
#define _S(id, s) s,
	X_DEC_DROPS(_S)
#undef _S
	NULL,
};
static const char *const dec_edges[] = { "next", NULL };

/* ESP header + IV + ICV around the ciphertext */
#define DEC_OVERHEAD (8 + 8 + 16)

static int dec_init(struct pd_stage *st)
{
	return esp_stage_init(st, PD_ESP_DIR_IN);
}

static int sa_find(const struct esp_table *t, uint32_t spi)
{
	int lo = 0, hi = (int)t->n_sa - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		uint32_t s = t->by_spi[mid]->spi;

		if (s == spi)
			return mid;
		if (s < spi)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static inline uint32_t rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

/* The full sequence number rte_ipsec infers from the low 32 bits and the
 * window's top (RFC 4303 appendix A2.2); only used to name a drop. */
static uint64_t seq_full(const struct esp_sa *sa, uint64_t top, uint32_t low)
{
	uint32_t th = (uint32_t)(top >> 32), tl = (uint32_t)top;
	uint32_t w = sa->win, bl = tl - w + 1;

	if (!sa->esn)
		return low;
	if (tl >= w - 1)
		th += low < bl;
	else if (th != 0)
		th -= low >= bl;
	return ((uint64_t)th << 32) | low;
}

static void dec_drop(struct pd_stage *st, struct pd_worker *w, struct esp_sa *sa,
		     unsigned reason, unsigned sa_reason, struct rte_mbuf *m)
{
	pd_drop(w, st, reason, m);
	esp_sa_drop(sa, w->slot, sa_reason, 1);
}

/* ---- the anti-replay window (RFC 6479 bitmap) ---------------------------
 * rte_ipsec 22.11's own window records only half the sequence numbers:
 * esn_inb_update_sqn() keeps the bit mask in a uint32_t, so
 * `(uint64_t)1 << (sqn & 63)` is lost for (sqn & 63) >= 32, and such a
 * replay passes (measured: of 1..40, 32..40 replay undetected). rte_ipsec
 * keeps its window (it still rejects what is behind it, never a good
 * packet, and its top is what it rebuilds ESN high bits from); this one,
 * correct, decides. Window W covers [top - W + 1, top]. */
static inline unsigned win_check(const struct esp_sa *sa, uint64_t top, uint64_t s)
{
	if (s == 0)
		return DEC_WINDOW;
	if (sa->win == 0 || s > top)
		return 0;
	if (s + sa->win <= top)
		return DEC_WINDOW;
	if (sa->rwin[(s >> 6) & sa->rwin_mask] & (1ull << (s & 63)))
		return DEC_REPLAYED;
	return 0;
}

/* Record an authenticated s; false if it was seen (a duplicate in a burst). */
static inline bool win_update(struct esp_sa *sa, uint64_t *top, uint64_t s)
{
	uint64_t *blk;

	if (sa->win == 0) {
		if (s > *top)
			*top = s;
		return true;
	}
	if (s > *top) {
		uint64_t from = *top >> 6, to = s >> 6, b;

		if (to - from > sa->rwin_mask)
			from = to - sa->rwin_mask - 1;
		for (b = from + 1; b <= to; b++)
			sa->rwin[b & sa->rwin_mask] = 0;
		*top = s;
	} else if (s + sa->win <= *top) {
		return false;
	}
	blk = &sa->rwin[(s >> 6) & sa->rwin_mask];
	if (*blk & (1ull << (s & 63)))
		return false;
	*blk |= 1ull << (s & 63);
	return true;
}

static void dec_group(struct pd_stage *st, struct pd_worker *w,
		      struct esp_priv *pr, struct esp_sa *sa,
		      struct rte_mbuf **mb, uint16_t n, uint64_t now)
{
	const uint64_t top0 = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED);
	uint64_t top = top0, bytes = 0;
	uint16_t i, k, good, ok, passed = 0;

	esp_trace_sa(w, st, sa, mb, n);
	if (unlikely(esp_sa_expired(sa, w->pl->n_workers, now))) {
		for (i = 0; i < n; i++)
			pd_drop(w, st, DEC_EXPIRED, mb[i]);
		esp_sa_drop(sa, w->slot, ESP_SD_EXPIRED, n);
		return;
	}
	if (sa->hard_packets) {
		uint64_t pk = esp_sa_sum(sa, w->pl->n_workers, 0);
		uint64_t left = pk < sa->hard_packets ? sa->hard_packets - pk : 0;

		if (left < n) {
			for (i = (uint16_t)left; i < n; i++)
				pd_drop(w, st, DEC_EXPIRED, mb[i]);
			esp_sa_drop(sa, w->slot, ESP_SD_EXPIRED, n - left);
			n = (uint16_t)left;
		}
	}
	for (i = 0, k = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];
		struct pd_meta *md = pd_meta(m);
		uint32_t plen, clen;
		unsigned r;

		plen = rte_pktmbuf_pkt_len(m) - md->l4_off;
		clen = plen - DEC_OVERHEAD;
		if (unlikely(m->nb_segs != 1 || plen < DEC_OVERHEAD + 4 || (clen & 3) ||
			     rte_pktmbuf_tailroom(m) < 16)) {
			dec_drop(st, w, sa, DEC_MALFORMED, ESP_SD_MALFORMED, m);
			continue;
		}
		/* the low sequence number, kept: rte_ipsec moves the data */
		md->aux = rd32(rte_pktmbuf_mtod(m, const uint8_t *) + md->l4_off + 4);
		r = win_check(sa, top0, seq_full(sa, top0, md->aux));
		if (unlikely(r)) {
			dec_drop(st, w, sa, r, r == DEC_WINDOW ? ESP_SD_WINDOW : ESP_SD_REPLAYED, m);
			continue;
		}
		m->l2_len = md->l3_off;
		m->l3_len = (uint64_t)(md->l4_off - md->l3_off);
		m->ol_flags &= ~RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED;
		mb[k++] = m;
	}
	n = k;
	if (n == 0)
		return;
	good = esp_crypt(pr, sa, w, mb, n);
	/* refused before decryption (lengths and windows were checked) */
	for (i = good; i < n; i++)
		dec_drop(st, w, sa, DEC_MALFORMED, ESP_SD_MALFORMED, mb[i]);
	ok = good ? rte_ipsec_pkt_process(&sa->ss, mb, good) : 0;
	for (i = ok; i < good; i++) {
		struct rte_mbuf *m = mb[i];
		uint32_t low = pd_meta(m)->aux;
		uint16_t j;
		bool dup = false;

		if (m->ol_flags & RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED) {
			dec_drop(st, w, sa, DEC_AUTH, ESP_SD_AUTH, m);
			continue;
		}
		/* rte_ipsec's window refused a duplicate of this burst */
		for (j = 0; j < ok && !dup; j++)
			dup = pd_meta(mb[j])->aux == low;
		if (dup)
			dec_drop(st, w, sa, DEC_REPLAYED, ESP_SD_REPLAYED, m);
		else
			dec_drop(st, w, sa, DEC_MALFORMED, ESP_SD_MALFORMED, m);
	}
	for (i = 0; i < ok; i++) {
		struct rte_mbuf *m = mb[i];
		struct pd_meta *md = pd_meta(m);
		const uint16_t in_port = md->in_port;
		uint32_t a[4], b[4];
		uint16_t sp, dp;
		uint8_t fam, *d;

		/* authenticated: it moves the window (selector drops included) */
		if (unlikely(!win_update(sa, &top, seq_full(sa, top, md->aux)))) {
			dec_drop(st, w, sa, DEC_REPLAYED, ESP_SD_REPLAYED, m);
			continue;
		}
		d = (uint8_t *)rte_pktmbuf_prepend(m, 14);
		if (unlikely(!d)) {
			dec_drop(st, w, sa, DEC_CRYPTO, ESP_SD_CRYPTO, m);
			continue;
		}
		memset(d, 0, 12);
		d[12] = (d[14] >> 4) == 6 ? 0x86 : 0x08;
		d[13] = (d[14] >> 4) == 6 ? 0xdd : 0x00;
		if ((d[14] >> 4) == 4 && (d[15] & 3) == 3) {
			/* CE: rte_ipsec may have marked it without the checksum (the
			 * packet is authenticated: recomputing hides nothing) */
			struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(d + 14);

			if (rte_pktmbuf_data_len(m) >= 14 + 20 &&
			    (ip->version_ihl & 0xf) >= 5 &&
			    rte_pktmbuf_data_len(m) >= 14u + (ip->version_ihl & 0xf) * 4u) {
				ip->hdr_checksum = 0;
				ip->hdr_checksum = rte_ipv4_cksum(ip);
			}
		}
		if (unlikely(pd_parse_raw(d, rte_pktmbuf_data_len(m), 1, md) != 0 ||
			     (md->l3 != PD_L3_IPV4 && md->l3 != PD_L3_IPV6))) {
			md->in_port = in_port;
			dec_drop(st, w, sa, DEC_INNER, ESP_SD_MALFORMED, m);
			continue;
		}
		md->in_port = in_port;
		fam = esp_pkt_tuple(d, md, a, b, &sp, &dp);
		if (unlikely(esp_sel_find(sa->sel, sa->n_sel, fam, a, b, md->l4_proto,
					  sp, dp, sizeof(sa->sel[0])) < 0)) {
			dec_drop(st, w, sa, DEC_SELECTOR, ESP_SD_SELECTOR, m);
			continue;
		}
		m->ol_flags &= ~RTE_MBUF_F_TX_OFFLOAD_MASK;
		md->aux = 0;
		bytes += rte_pktmbuf_pkt_len(m) - 14;
		passed++;
		pd_emit(w, st, 0, m);
	}
	if (top != top0)
		__atomic_store_n(&sa->seq, top, __ATOMIC_RELAXED);
	esp_sa_count(sa, w->slot, passed, bytes);
}

static void dec_process(struct pd_stage *st, struct pd_worker *w,
			struct rte_mbuf **pkts, uint16_t n)
{
	struct esp_priv *pr = st->priv;
	const struct esp_table *t = __atomic_load_n(&pr->tbl, __ATOMIC_ACQUIRE);
	struct rte_mbuf *grp[2 * PD_BURST];
	int16_t idx[2 * PD_BURST];
	uint64_t now = rte_rdtsc();
	uint16_t i, g;
	int16_t k;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		const struct pd_meta *md = pd_meta(m);
		const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
		const uint8_t *l3 = d + md->l3_off;
		const struct esp_sa *sa;
		uint32_t iplen;
		int s;

		idx[i] = -1;
		/* a fragment (first ones too: no reassembly here) is not ESP */
		if (unlikely((md->l3 != PD_L3_IPV4 && md->l3 != PD_L3_IPV6) ||
			     md->l4_proto != IPPROTO_ESP || md->l4_off == 0 ||
			     (md->flags & PD_META_FRAG) ||
			     (md->l3 == PD_L3_IPV4 && (pd_rd16(l3 + 6) & 0x3fff)) ||
			     rte_pktmbuf_data_len(m) < md->l4_off + 8u)) {
			pd_drop(w, st, DEC_NOT_ESP, m);
			continue;
		}
		/* Ethernet padding is not ESP: cut to the IP length */
		iplen = esp_ip_len(d, md);
		if (rte_pktmbuf_pkt_len(m) > md->l3_off + iplen)
			rte_pktmbuf_trim(m, (uint16_t)(rte_pktmbuf_pkt_len(m) -
						       md->l3_off - iplen));
		s = t ? sa_find(t, rd32(d + md->l4_off)) : -1;
		if (unlikely(s < 0)) {
			pd_drop(w, st, DEC_UNKNOWN_SPI, m);
			continue;
		}
		sa = t->by_spi[s];
		if (unlikely(sa->outer_family != (md->l3 == PD_L3_IPV4 ? 4 : 6) ||
			     (md->l3 == PD_L3_IPV4 ?
			      memcmp(l3 + 12, sa->tun_src, 4) || memcmp(l3 + 16, sa->tun_dst, 4) :
			      memcmp(l3 + 8, sa->tun_src, 16) ||
			      memcmp(l3 + 24, sa->tun_dst, 16)))) {
			pd_drop(w, st, DEC_TUNNEL, m);
			continue;
		}
		idx[i] = (int16_t)s;
	}
	ESP_FOR_EACH_GROUP(idx, pkts, n, grp, g, k,
			   dec_group(st, w, pr, t->by_spi[k], grp, g, now));
}

const struct pd_stage_ops pd_stage_esp_decrypt = {
	.type = "esp_decrypt",
	.edges = dec_edges,
	.drops = dec_drops,
	.needs_next = true,
	.priv_size = sizeof(struct esp_priv),
	.init = dec_init,
	.fini = esp_stage_fini,
	.process = dec_process,
};
