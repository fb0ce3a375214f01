/* SPDX-License-Identifier: BSD-3-Clause
 * esp_sa.c - SAs, the SPD and the crypto devices of the ESP stages
 * (control path), and the lookaside crypto helper (fast path).
 * See esp_sa.h for the design.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <rte_cryptodev.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_malloc.h>

#include "esp_sa.h"

static const char *const sa_drop_names[ESP_SD_N + 1] = {
	"replayed", "out-of-window", "auth-failed", "selector-mismatch",
	"malformed", "sa-expired", "seq-exhausted", "crypto-error", NULL,
};

const char *pd_esp_sa_drop_name(unsigned i)
{
	return i < ESP_SD_N ? sa_drop_names[i] : NULL;
}

/* ---- crypto devices: probed once per process, never removed ------------- */
#define IV_OFFSET (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))
#define SESS_POOL_SIZE (2 * PD_ESP_MAX_SA)

static const char *const dev_names[] = {
	[PD_ESP_DEV_AESNI_GCM] = "crypto_aesni_gcm_pd",
	[PD_ESP_DEV_AESNI_MB] = "crypto_aesni_mb_pd",
	[PD_ESP_DEV_CHACHA] = "crypto_chacha20_poly1305_pd",
	[PD_ESP_DEV_OPENSSL] = "crypto_openssl_pd",
};
#define N_DEVS 5
static int dev_ids[N_DEVS] = { -1, -1, -1, -1, -1 };
static bool devs_probed;
static struct rte_mempool *sess_pool;
static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;

static int dev_start(const char *name, uint16_t nqp)
{
	struct rte_cryptodev_config conf = { .socket_id = (int)rte_socket_id(),
					     .nb_queue_pairs = nqp };
	struct rte_cryptodev_qp_conf qc = { .nb_descriptors = 4 * PD_BURST };
	int id, rc;
	uint16_t q;

	id = rte_cryptodev_get_dev_id(name);
	if (id < 0) {
		rc = rte_dev_probe(name);
		if (rc < 0)
			return rc;
		id = rte_cryptodev_get_dev_id(name);
		if (id < 0)
			return -ENODEV;
	}
	if ((rc = rte_cryptodev_configure((uint8_t)id, &conf)) < 0)
		return rc;
	for (q = 0; q < nqp; q++)
		if ((rc = rte_cryptodev_queue_pair_setup((uint8_t)id, q, &qc,
							  conf.socket_id)) < 0)
			return rc;
	if ((rc = rte_cryptodev_start((uint8_t)id)) < 0)
		return rc;
	return id;
}

/* Probe every candidate once (the session pool's element must fit the
 * largest private session of them all). */
static int devs_init(void)
{
	unsigned i, sz = 0;
	int rc = 0;

	pthread_mutex_lock(&dev_lock);
	if (devs_probed)
		goto out;
	for (i = 1; i < N_DEVS; i++) {
		dev_ids[i] = dev_start(dev_names[i], 1);
		if (dev_ids[i] >= 0)
			sz = RTE_MAX(sz, rte_cryptodev_sym_get_private_session_size(
					     (uint8_t)dev_ids[i]));
	}
	if (sz == 0) {
		rc = PD_ERR(ENODEV, "esp: no crypto PMD could be started (crypto_aesni_gcm, "
			    "crypto_aesni_mb, crypto_chacha20_poly1305, crypto_openssl)");
		goto out;
	}
	sess_pool = rte_cryptodev_sym_session_pool_create("pd_esp_sess", SESS_POOL_SIZE,
							  sz, 0, 0, SOCKET_ID_ANY);
	if (!sess_pool) {
		rc = PD_ERR(ENOMEM, "esp: cannot create the crypto session pool: %s",
			    rte_strerror(rte_errno));
		goto out;
	}
	devs_probed = true;
out:
	pthread_mutex_unlock(&dev_lock);
	return rc;
}

static bool dev_has_aead(int id, enum rte_crypto_aead_algorithm algo,
			 unsigned key_len)
{
	struct rte_cryptodev_sym_capability_idx idx = {
		.type = RTE_CRYPTO_SYM_XFORM_AEAD, .algo.aead = algo };
	const struct rte_cryptodev_symmetric_capability *cap;

	if (id < 0)
		return false;
	cap = rte_cryptodev_sym_capability_get((uint8_t)id, &idx);
	return cap && rte_cryptodev_sym_capability_check_aead(cap, (uint16_t)key_len,
		16, 8, 12) == 0;
}

static const char *const cipher_names[] = { "aes-gcm-128", "aes-gcm-256",
					    "chacha20-poly1305" };

/* The device for a cipher: the stage's choice, or the fastest that has it. */
static int dev_pick(const struct pd_stage *st, int pref, uint8_t cipher,
		    enum rte_crypto_aead_algorithm algo, unsigned key_len)
{
	static const int order_gcm[] = { PD_ESP_DEV_AESNI_GCM, PD_ESP_DEV_AESNI_MB,
					 PD_ESP_DEV_OPENSSL, 0 };
	/* crypto_chacha20_poly1305 (DPDK 22.11) fails every CPU-crypto op here
	 * (the same SA on crypto_aesni_mb interoperates with scapy); run
	 * lookaside it works but costs more (benchmarks/esp_bench.py: 752
	 * against 496 cycles per 64-byte packet): auto takes crypto_aesni_mb,
	 * `crypto: chacha20_poly1305` selects it lookaside */
	static const int order_chacha[] = { PD_ESP_DEV_AESNI_MB, PD_ESP_DEV_OPENSSL, 0 };
	const int *o;

	if (pref != PD_ESP_DEV_AUTO) {
		if (!dev_has_aead(dev_ids[pref], algo, key_len))
			return PD_ERR(ENOTSUP, "stage '%s': crypto: %s cannot do %s",
				      st->name, dev_names[pref], cipher_names[cipher]);
		return pref;
	}
	for (o = cipher == PD_ESP_CHACHA20_POLY1305 ? order_chacha : order_gcm; *o; o++)
		if (dev_has_aead(dev_ids[*o], algo, key_len))
			return *o;
	return PD_ERR(ENOTSUP, "stage '%s': crypto: no crypto device can do %s",
		      st->name, cipher_names[cipher]);
}

/* ---- lookaside (crypto_openssl): its own device per stage --------------- */
static unsigned la_seq;

/* lookaside drivers: openssl (no CPU crypto) and chacha20_poly1305 (its
 * CPU-crypto path fails in 22.11, its queue pairs work) */
static bool dev_lookaside(int di)
{
	return di == PD_ESP_DEV_OPENSSL || di == PD_ESP_DEV_CHACHA;
}

static int la_setup(struct pd_stage *st, struct esp_priv *pr, int di)
{
	char name[64];
	unsigned w;
	int id;

	if (pr->la_dev >= 0) {
		if (pr->la_drv != di)
			return PD_ERR(ENOTSUP, "stage '%s': crypto: one lookaside device per "
				      "stage (it has %s)", st->name, dev_names[pr->la_drv]);
		return 0;
	}
	snprintf(name, sizeof(name), "%sla%u", dev_names[di], la_seq++);
	pr->la_nqp = 8;
	id = dev_start(name, pr->la_nqp);
	if (id < 0)
		return PD_ERR(-id, "stage '%s': cannot start %s", st->name, name);
	if (rte_cryptodev_sym_get_private_session_size((uint8_t)id) >
	    sess_pool->elt_size)
		return PD_ERR(ENOMEM, "stage '%s': session pool too small", st->name);
	snprintf(name, sizeof(name), "pd_esp_ops%u", la_seq++);
	pr->la_pool = rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC,
						PD_MAX_WORKERS * 2 * PD_BURST, 0, 16,
						SOCKET_ID_ANY);
	if (!pr->la_pool)
		return PD_ERR(ENOMEM, "stage '%s': cannot create crypto ops", st->name);
	for (w = 0; w < PD_MAX_WORKERS; w++)
		if (rte_crypto_op_bulk_alloc(pr->la_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC,
					     pr->la_ops[w], 2 * PD_BURST) != 2 * PD_BURST)
			return PD_ERR(ENOMEM, "stage '%s': cannot allocate crypto ops",
				      st->name);
	pr->la_dev = id;
	pr->la_drv = di;
	return 0;
}

uint16_t esp_lookaside(struct esp_priv *pr, struct esp_sa *sa,
		       struct pd_worker *w, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_crypto_op **cop = pr->la_ops[w->slot];
	struct rte_crypto_op *done[2 * PD_BURST];
	uint16_t k, e, d = 0, i;

	if (unlikely(w->slot >= pr->la_nqp))
		return 0;
	k = rte_ipsec_pkt_crypto_prepare(&sa->ss, mb, cop, n);
	e = rte_cryptodev_enqueue_burst(sa->dev_id, w->slot, cop, k);
	/* software PMDs finish within the enqueue or the first dequeue; what
	 * was enqueued must come back before its mbufs can be touched again */
	while (d < e)
		d = (uint16_t)(d + rte_cryptodev_dequeue_burst(sa->dev_id, w->slot,
							      done + d, e - d));
	/* ops of a software PMD come back in order; the failed ones are marked
	 * for rte_ipsec_pkt_process as hardware would mark them */
	for (i = 0; i < d; i++) {
		mb[i] = done[i]->sym->m_src;
		if (done[i]->status != RTE_CRYPTO_OP_STATUS_SUCCESS)
			mb[i]->ol_flags |= RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED;
	}
	return d;
}

/* ---- SA create / destroy ------------------------------------------------- */
static void sa_destroy(struct esp_sa *sa)
{
	if (!sa)
		return;
	if (sa->cs)
		rte_cryptodev_sym_session_free(sa->dev_id, sa->cs);
	if (sa->isa) {
		rte_ipsec_sa_fini(sa->isa);   /* clears it, salt included */
		rte_free(sa->isa);
	}
	explicit_bzero(sa, sizeof(*sa));
	rte_free(sa);
}

static void mask_words(const uint8_t *a, unsigned depth, unsigned nw,
		       uint32_t *net, uint32_t *mask)
{
	unsigned k;

	for (k = 0; k < 4; k++) {
		uint32_t v = 0, m;
		unsigned bits = depth > 32 * k ? RTE_MIN(depth - 32 * k, 32u) : 0;

		if (k < nw)
			memcpy(&v, a + 4 * k, 4);
		m = bits == 0 ? 0 : rte_cpu_to_be_32(~0u << (32 - bits));
		mask[k] = k < nw ? m : 0;
		net[k] = v & mask[k];
	}
}

static int sel_check(const struct pd_stage *st, uint32_t spi, unsigned i,
		     const struct pd_esp_sel *s, uint8_t family)
{
	unsigned max = s->family == 4 ? 32 : 128;

	if (s->family != 4 && s->family != 6)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: selectors[%u]: family %u is "
			      "neither 4 nor 6", st->name, spi, i, s->family);
	if (s->family != family)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: selectors: IPv4 and IPv6 mixed "
			      "(an SA carries one inner family)", st->name, spi);
	if (s->src_depth > max || s->dst_depth > max)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: selectors[%u]: prefix length "
			      "above /%u", st->name, spi, i, max);
	if (s->sport_lo > s->sport_hi || s->dport_lo > s->dport_hi)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: selectors[%u]: empty port "
			      "range", st->name, spi, i);
	return 0;
}

static uint64_t ms_to_tsc(uint64_t now, uint64_t ms)
{
	if (ms == 0)
		return UINT64_MAX;
	return now + ms * (rte_get_tsc_hz() / 1000);
}

static int sa_create(struct pd_stage *st, struct esp_priv *pr,
		     const struct pd_esp_sa_conf *c, const struct pd_esp_sel *sels,
		     unsigned n_sel, struct esp_sa **out)
{
	static const struct { enum rte_crypto_aead_algorithm algo; unsigned klen; }
	ciphers[] = {
		[PD_ESP_AES_GCM_128] = { RTE_CRYPTO_AEAD_AES_GCM, 16 },
		[PD_ESP_AES_GCM_256] = { RTE_CRYPTO_AEAD_AES_GCM, 32 },
		[PD_ESP_CHACHA20_POLY1305] = { RTE_CRYPTO_AEAD_CHACHA20_POLY1305, 32 },
	};
	struct rte_crypto_sym_xform xf;
	struct rte_ipsec_sa_prm prm;
	uint8_t hdr[14 + 40];
	struct esp_sa *sa = NULL;
	unsigned klen, i, alen = c->outer_family == 4 ? 4 : 16;
	int rc, di, sz;

	memset(&xf, 0, sizeof(xf));
	memset(&prm, 0, sizeof(prm));
	if (c->dir != pr->dir)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: direction: %s is a %s stage",
			      st->name, c->spi, st->name,
			      pr->dir == PD_ESP_DIR_OUT ? "an outbound (esp_encrypt)"
			      : "an inbound (esp_decrypt)");
	if (c->cipher > PD_ESP_CHACHA20_POLY1305)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: cipher: unknown (%u)", st->name,
			      c->spi, c->cipher);
	klen = ciphers[c->cipher].klen;
	if (c->key_len != klen + 4)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: key: %u bytes, this cipher needs "
			      "%u (%u-byte key + 4-byte salt)", st->name, c->spi,
			      c->key_len, klen + 4, klen);
	if (c->spi < 256)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: spi: 0-255 are reserved "
			      "(RFC 4303)", st->name, c->spi);
	if (c->outer_family != 4 && c->outer_family != 6)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: tunnel_src: family %u is neither "
			      "4 nor 6", st->name, c->spi, c->outer_family);
	if (c->replay_window > PD_ESP_MAX_WINDOW)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: replay_window: %u is above %u",
			      st->name, c->spi, c->replay_window, PD_ESP_MAX_WINDOW);
	if (n_sel == 0 || n_sel > PD_ESP_MAX_SEL)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: selectors: %u given, 1..%u "
			      "allowed", st->name, c->spi, n_sel, PD_ESP_MAX_SEL);
	for (i = 0; i < n_sel; i++)
		if ((rc = sel_check(st, c->spi, i, &sels[i], sels[0].family)) < 0)
			return rc;
	if (!c->esn && c->initial_seq > UINT32_MAX)
		return PD_ERR(EINVAL, "stage '%s': SA %#x: initial_seq: above 2^32-1 "
			      "without esn", st->name, c->spi);
	if ((rc = devs_init()) < 0)
		return rc;
	di = dev_pick(st, pr->dev_pref, c->cipher, ciphers[c->cipher].algo, klen);
	if (di < 0)
		return di;
	if (dev_lookaside(di) && (rc = la_setup(st, pr, di)) < 0)
		return rc;

	sa = rte_zmalloc("pd_esp_sa", sizeof(*sa), RTE_CACHE_LINE_SIZE);
	if (!sa)
		return PD_ERR(ENOMEM, "stage '%s': out of memory for SA", st->name);
	sa->spi = c->spi;
	sa->dir = c->dir;
	sa->cipher = c->cipher;
	sa->outer_family = c->outer_family;
	sa->inner_family = sels[0].family;
	sa->esn = c->esn ? 1 : 0;
	sa->ttl = c->ttl ? c->ttl : 64;
	/* rte_ipsec keeps a window of at least 64 with ESN */
	sa->win = c->esn ? RTE_MAX(c->replay_window, 64u) : c->replay_window;
	sa->iv_len = 8 + 8;
	sa->rwin_mask = (uint32_t)rte_align32pow2(sa->win / 64 + 1) - 1;
	memcpy(sa->tun_src, c->tun_src, 16);
	memcpy(sa->tun_dst, c->tun_dst, 16);
	sa->seq_max = c->esn ? UINT64_MAX : UINT32_MAX;
	sa->seq_margin = c->seq_margin ? c->seq_margin
		: (c->esn ? (1ull << 60) : (1ull << 28));
	sa->soft_bytes = c->soft_bytes;
	sa->hard_bytes = c->hard_bytes;
	sa->soft_packets = c->soft_packets;
	sa->hard_packets = c->hard_packets;
	sa->t_add = rte_get_tsc_cycles();
	sa->soft_tsc = ms_to_tsc(sa->t_add, c->soft_ms);
	sa->hard_tsc = ms_to_tsc(sa->t_add, c->hard_ms);
	sa->n_sel = n_sel;
	for (i = 0; i < n_sel; i++) {
		const struct pd_esp_sel *s = &sels[i];
		struct esp_sel *e = &sa->sel[i];
		unsigned nw = s->family == 4 ? 1 : 4;

		e->family = s->family;
		e->proto = s->proto;
		e->sport_lo = s->sport_lo;
		e->sport_hi = s->sport_hi;
		e->dport_lo = s->dport_lo;
		e->dport_hi = s->dport_hi;
		mask_words(s->src, s->src_depth, nw, e->src, e->smask);
		mask_words(s->dst, s->dst_depth, nw, e->dst, e->dmask);
	}
	/* out: the first packet's sequence number; in: the window's top */
	sa->seq = c->dir == PD_ESP_DIR_OUT ? RTE_MAX(c->initial_seq, (uint64_t)1)
		: c->initial_seq;

	/* the AEAD session: the key goes straight from the caller into it */
	sa->dev_id = (uint8_t)(dev_lookaside(di) ? pr->la_dev : dev_ids[di]);
	sa->dev_name = dev_names[di];
	sa->cpu = !dev_lookaside(di);
	xf.type = RTE_CRYPTO_SYM_XFORM_AEAD;
	xf.aead.op = c->dir == PD_ESP_DIR_OUT ? RTE_CRYPTO_AEAD_OP_ENCRYPT
		: RTE_CRYPTO_AEAD_OP_DECRYPT;
	xf.aead.algo = ciphers[c->cipher].algo;
	xf.aead.key.data = c->key;
	xf.aead.key.length = (uint16_t)klen;
	xf.aead.iv.offset = IV_OFFSET;
	xf.aead.iv.length = 12;
	xf.aead.digest_length = 16;
	xf.aead.aad_length = (uint16_t)(c->esn ? 12 : 8);
	sa->cs = rte_cryptodev_sym_session_create(sa->dev_id, &xf, sess_pool);
	if (!sa->cs) {
		rc = PD_ERR(rte_errno ? rte_errno : EINVAL, "stage '%s': SA %#x: %s refused "
			    "the session: %s", st->name, c->spi, sa->dev_name,
			    rte_strerror(rte_errno));
		goto fail;
	}

	/* the rte_ipsec SA: ESP tunnel, the outer header as a template */
	prm.flags = c->dir == PD_ESP_DIR_OUT ? RTE_IPSEC_SAFLAG_SQN_ATOM : 0;
	prm.ipsec_xform.spi = c->spi;
	memcpy(&prm.ipsec_xform.salt, c->key + klen, 4);
	prm.ipsec_xform.options.esn = sa->esn;
	/* RFC 4301 5.1.2.1: encap copies the inner DSCP to the outer header
	 * (decap leaves the inner one alone); ECN as RFC 6040: copied out, a
	 * CE mark of the outer header carried in on decap (esp_decrypt fixes
	 * the inner IPv4 checksum rte_ipsec leaves stale then) */
	prm.ipsec_xform.options.copy_dscp = c->dir == PD_ESP_DIR_OUT;
	prm.ipsec_xform.options.ecn = 1;
	prm.ipsec_xform.direction = c->dir == PD_ESP_DIR_OUT ?
		RTE_SECURITY_IPSEC_SA_DIR_EGRESS : RTE_SECURITY_IPSEC_SA_DIR_INGRESS;
	prm.ipsec_xform.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
	prm.ipsec_xform.mode = RTE_SECURITY_IPSEC_SA_MODE_TUNNEL;
	prm.ipsec_xform.tunnel.type = c->outer_family == 4 ?
		RTE_SECURITY_IPSEC_TUNNEL_IPV4 : RTE_SECURITY_IPSEC_TUNNEL_IPV6;
	prm.ipsec_xform.replay_win_sz = c->replay_window;
	prm.ipsec_xform.esn.value = sa->seq;
	prm.crypto_xform = &xf;
	prm.tun.next_proto = sa->inner_family == 4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	memset(hdr, 0, sizeof(hdr));
	if (c->outer_family == 4) {
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(hdr + 14);

		hdr[12] = 0x08;
		hdr[13] = 0x00;
		ip->version_ihl = 0x45;
		ip->time_to_live = sa->ttl;
		ip->next_proto_id = IPPROTO_ESP;
		memcpy(&ip->src_addr, c->tun_src, alen);
		memcpy(&ip->dst_addr, c->tun_dst, alen);
		prm.tun.hdr_len = 14 + 20;
		/* TOS, length, id and checksum are 0 here */
		sa->tun_sum = rte_raw_cksum(ip, 20);
	} else {
		struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(hdr + 14);

		hdr[12] = 0x86;
		hdr[13] = 0xdd;
		ip->vtc_flow = rte_cpu_to_be_32(6u << 28);
		ip->proto = IPPROTO_ESP;
		ip->hop_limits = sa->ttl;
		memcpy(ip->src_addr, c->tun_src, alen);
		memcpy(ip->dst_addr, c->tun_dst, alen);
		prm.tun.hdr_len = 14 + 40;
	}
	prm.tun.hdr_l3_off = 14;
	prm.tun.hdr = hdr;
	sz = rte_ipsec_sa_size(&prm);
	if (sz < 0) {
		rc = PD_ERR(-sz, "stage '%s': SA %#x: rte_ipsec refused the parameters",
			    st->name, c->spi);
		goto fail;
	}
	sa->isa = rte_zmalloc("pd_esp_isa", (size_t)sz, RTE_CACHE_LINE_SIZE);
	if (!sa->isa) {
		rc = PD_ERR(ENOMEM, "stage '%s': out of memory for SA", st->name);
		goto fail;
	}
	rc = rte_ipsec_sa_init(sa->isa, &prm, (uint32_t)sz);
	if (rc < 0) {
		rc = PD_ERR(-rc, "stage '%s': SA %#x: rte_ipsec_sa_init failed", st->name,
			    c->spi);
		goto fail;
	}
	sa->ss.sa = sa->isa;
	sa->ss.type = sa->cpu ? RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO
		: RTE_SECURITY_ACTION_TYPE_NONE;
	sa->ss.crypto.ses = sa->cs;
	sa->ss.crypto.dev_id = sa->dev_id;
	rc = rte_ipsec_session_prepare(&sa->ss);
	if (rc < 0) {
		rc = PD_ERR(-rc, "stage '%s': SA %#x: rte_ipsec_session_prepare failed",
			    st->name, c->spi);
		goto fail;
	}
	explicit_bzero(&xf, sizeof(xf));
	explicit_bzero(&prm, sizeof(prm));
	*out = sa;
	return 0;
fail:
	explicit_bzero(&xf, sizeof(xf));
	explicit_bzero(&prm, sizeof(prm));
	sa_destroy(sa);
	return rc;
}

/* ---- tables ------------------------------------------------------------- */
static void table_free(void *arg)
{
	rte_free(arg);   /* one block; the SAs are owned elsewhere */
}

static int spi_cmp(const void *a, const void *b)
{
	uint32_t x = (*(struct esp_sa *const *)a)->spi;
	uint32_t y = (*(struct esp_sa *const *)b)->spi;

	return x < y ? -1 : x > y;
}

/* A table of `sas` (newest first), in one block. */
static struct esp_table *table_build(struct esp_sa **sas, unsigned n)
{
	struct esp_table *t;
	unsigned i, k, n_spd = 0;
	size_t sz;

	for (i = 0; i < n; i++)
		n_spd += sas[i]->n_sel;
	sz = sizeof(*t) + 2 * (n + 1) * sizeof(void *) +
		(n_spd + 1) * sizeof(struct esp_spd);
	t = rte_zmalloc("pd_esp_table", sz, RTE_CACHE_LINE_SIZE);
	if (!t)
		return NULL;
	t->n_sa = n;
	t->n_spd = n_spd;
	t->spd = (struct esp_spd *)(t + 1);
	t->sa = (struct esp_sa **)(t->spd + n_spd + 1);
	t->by_spi = t->sa + n + 1;
	memcpy(t->sa, sas, n * sizeof(*sas));
	memcpy(t->by_spi, sas, n * sizeof(*sas));
	qsort(t->by_spi, n, sizeof(*sas), spi_cmp);
	for (i = 0, n_spd = 0; i < n; i++)
		for (k = 0; k < sas[i]->n_sel; k++) {
			t->spd[n_spd].sel = sas[i]->sel[k];
			t->spd[n_spd++].sa = sas[i];
		}
	return t;
}

static struct esp_priv *esp_get(struct pd_pipeline *p, int stage,
				struct pd_stage **stp)
{
	struct pd_stage *st = pd_stage_get(p, stage, NULL);

	if (!st)
		return NULL;
	if (strcmp(st->ops->type, "esp_encrypt") && strcmp(st->ops->type, "esp_decrypt")) {
		PD_ERR(EINVAL, "stage '%s' is a %s, not an ESP stage", st->name,
		       st->ops->type);
		return NULL;
	}
	*stp = st;
	return st->priv;
}

int pd_esp_config(struct pd_pipeline *p, int stage, int dev)
{
	struct pd_stage *st;
	struct esp_priv *pr = esp_get(p, stage, &st);

	if (!pr)
		return -EINVAL;
	if (dev < PD_ESP_DEV_AUTO || dev > PD_ESP_DEV_OPENSSL)
		return PD_ERR(EINVAL, "stage '%s': crypto: unknown device %d", st->name, dev);
	pr->dev_pref = dev;
	return 0;
}

int pd_esp_sa_add(struct pd_pipeline *p, int stage, const struct pd_esp_sa_conf *c,
		  const struct pd_esp_sel *sels, unsigned n_sel)
{
	struct esp_sa *tmp[PD_ESP_MAX_SA];
	struct pd_stage *st;
	struct esp_priv *pr = esp_get(p, stage, &st);
	struct esp_table *old, *t;
	struct esp_sa *sa = NULL;
	unsigned i, n;
	int rc;

	if (!pr)
		return -EINVAL;
	pthread_mutex_lock(&pr->lock);
	old = pr->tbl;
	n = old ? old->n_sa : 0;
	for (i = 0; i < n; i++)
		if (old->sa[i]->spi == c->spi) {
			rc = PD_ERR(EEXIST, "stage '%s': SA %#x: spi: already in use",
				    st->name, c->spi);
			goto out;
		}
	if (n >= PD_ESP_MAX_SA) {
		rc = PD_ERR(ENOSPC, "stage '%s': more than %u SAs", st->name, PD_ESP_MAX_SA);
		goto out;
	}
	if ((rc = sa_create(st, pr, c, sels, n_sel, &sa)) < 0)
		goto out;
	tmp[0] = sa;
	for (i = 0; i < n; i++)
		tmp[i + 1] = old->sa[i];
	t = table_build(tmp, n + 1);
	if (!t) {
		sa_destroy(sa);
		rc = PD_ERR(ENOMEM, "stage '%s': out of memory for the SA table", st->name);
		goto out;
	}
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	rc = 0;
out:
	pthread_mutex_unlock(&pr->lock);
	return rc;
}

int pd_esp_sa_remove(struct pd_pipeline *p, int stage, uint32_t spi)
{
	struct esp_sa *tmp[PD_ESP_MAX_SA];
	struct pd_stage *st;
	struct esp_priv *pr = esp_get(p, stage, &st);
	struct esp_table *old, *t;
	struct esp_sa *gone = NULL;
	unsigned i, n = 0;
	int rc = 0;

	if (!pr)
		return -EINVAL;
	pthread_mutex_lock(&pr->lock);
	old = pr->tbl;
	for (i = 0; old && i < old->n_sa; i++) {
		if (old->sa[i]->spi == spi)
			gone = old->sa[i];
		else
			tmp[n++] = old->sa[i];
	}
	if (!gone) {
		rc = PD_ERR(ENOENT, "stage '%s': no SA with spi %#x", st->name, spi);
		goto out;
	}
	t = table_build(tmp, n);
	if (!t) {
		rc = PD_ERR(ENOMEM, "stage '%s': out of memory for the SA table", st->name);
		goto out;
	}
	/* returns after the grace period: no worker holds `gone` any more */
	pd_rcu_swap(p, (void **)&pr->tbl, t, table_free);
	sa_destroy(gone);
out:
	pthread_mutex_unlock(&pr->lock);
	return rc;
}

static uint32_t sa_flags(const struct esp_sa *sa, uint64_t now)
{
	uint64_t pk = esp_sa_sum(sa, PD_MAX_WORKERS, 0);
	uint64_t by = esp_sa_sum(sa, PD_MAX_WORKERS, 1);
	uint64_t seq = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED);
	uint32_t f = 0;

	if (now >= sa->soft_tsc)
		f |= PD_ESP_F_SOFT_TIME;
	if (now >= sa->hard_tsc)
		f |= PD_ESP_F_HARD_TIME;
	if (sa->soft_bytes && by >= sa->soft_bytes)
		f |= PD_ESP_F_SOFT_BYTES;
	if (sa->hard_bytes && by >= sa->hard_bytes)
		f |= PD_ESP_F_HARD_BYTES;
	if (sa->soft_packets && pk >= sa->soft_packets)
		f |= PD_ESP_F_SOFT_PACKETS;
	if (sa->hard_packets && pk >= sa->hard_packets)
		f |= PD_ESP_F_HARD_PACKETS;
	if (sa->dir == PD_ESP_DIR_OUT) {
		/* rte_ipsec sends sequence numbers up to seq_max - 1 */
		uint64_t left = seq < sa->seq_max ? sa->seq_max - seq : 0;

		if (left <= sa->seq_margin)
			f |= PD_ESP_F_SEQ_NEAR;
		if (left == 0)
			f |= PD_ESP_F_SEQ_EXHAUSTED;
	}
	return f;
}

int pd_esp_sa_list(struct pd_pipeline *p, int stage, struct pd_esp_sa_info *out,
		   unsigned max)
{
	struct pd_stage *st;
	struct esp_priv *pr = esp_get(p, stage, &st);
	uint64_t now = rte_get_tsc_cycles(), hz = rte_get_tsc_hz();
	struct esp_table *t;
	unsigned i, k, n, r;

	if (!pr)
		return -EINVAL;
	pthread_mutex_lock(&pr->lock);
	t = pr->tbl;
	n = t ? t->n_sa : 0;
	for (i = 0; i < n && i < max; i++) {
		const struct esp_sa *sa = t->sa[i];
		struct pd_esp_sa_info *o = &out[i];
		uint64_t seq = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED);

		memset(o, 0, sizeof(*o));
		o->spi = sa->spi;
		o->dir = sa->dir;
		o->cipher = sa->cipher;
		o->outer_family = sa->outer_family;
		o->inner_family = sa->inner_family;
		memcpy(o->tun_src, sa->tun_src, 16);
		memcpy(o->tun_dst, sa->tun_dst, 16);
		o->replay_window = sa->win;
		o->esn = sa->esn;
		o->flags = sa_flags(sa, now);
		o->n_sel = sa->n_sel;
		o->packets = esp_sa_sum(sa, PD_MAX_WORKERS, 0);
		o->bytes = esp_sa_sum(sa, PD_MAX_WORKERS, 1);
		o->seq = sa->dir == PD_ESP_DIR_OUT ? seq - 1 : seq;
		o->age_ms = (now - sa->t_add) * 1000 / hz;
		for (k = 0; k < ESP_SD_N; k++)
			for (r = 0; r < PD_MAX_WORKERS; r++)
				o->drops[k] += __atomic_load_n(&sa->wc[r].drops[k],
							       __ATOMIC_RELAXED);
		snprintf(o->crypto_dev, sizeof(o->crypto_dev), "%s", sa->dev_name);
		snprintf(o->mode, sizeof(o->mode), "%s", sa->cpu ? "cpu-crypto" : "lookaside");
	}
	pthread_mutex_unlock(&pr->lock);
	return (int)n;
}

_Static_assert(PD_ESP_SA_NCTR == 2 + ESP_SD_N, "PD_ESP_SA_NCTR: packets, bytes, drops");

int pd_esp_sa_counters(struct pd_pipeline *p, int stage, uint32_t spi,
		       uint64_t *out, unsigned max_rows)
{
	struct pd_stage *st;
	struct esp_priv *pr = esp_get(p, stage, &st);
	const struct esp_table *t;
	const struct esp_sa *sa = NULL;
	unsigned i, r, k, rows;

	if (!pr)
		return -EINVAL;
	if (!out && max_rows)
		return PD_ERR(EINVAL, "stage '%s': no output array", st->name);
	pthread_mutex_lock(&pr->lock);
	t = pr->tbl;
	for (i = 0; t && i < t->n_sa; i++)
		if (t->sa[i]->spi == spi) {
			sa = t->sa[i];
			break;
		}
	if (!sa) {
		pthread_mutex_unlock(&pr->lock);
		return PD_ERR(ENOENT, "stage '%s': no SA with SPI 0x%x", st->name, spi);
	}
	rows = p->built ? p->n_workers : PD_MAX_WORKERS;
	rows = RTE_MIN(rows, max_rows);
	rows = RTE_MIN(rows, (unsigned)PD_MAX_WORKERS);
	for (r = 0; r < rows; r++) {
		uint64_t *o = out + (size_t)r * PD_ESP_SA_NCTR;

		o[0] = __atomic_load_n(&sa->wc[r].packets, __ATOMIC_RELAXED);
		o[1] = __atomic_load_n(&sa->wc[r].bytes, __ATOMIC_RELAXED);
		for (k = 0; k < ESP_SD_N; k++)
			o[2 + k] = __atomic_load_n(&sa->wc[r].drops[k],
						   __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&pr->lock);
	return (int)rows;
}

/* ---- stage lifetime ------------------------------------------------------ */
int esp_stage_init(struct pd_stage *st, int dir)
{
	struct esp_priv *pr = st->priv;

	pr->dir = dir;
	pr->dev_pref = PD_ESP_DEV_AUTO;
	pr->la_dev = -1;
	pthread_mutex_init(&pr->lock, NULL);
	return 0;
}

void esp_stage_fini(struct pd_stage *st)
{
	struct esp_priv *pr = st->priv;
	struct esp_table *t = pr->tbl;
	unsigned i, w;

	/* the pipeline is stopped: no worker reads the table */
	if (t) {
		for (i = 0; i < t->n_sa; i++)
			sa_destroy(t->sa[i]);
		rte_free(t);
		pr->tbl = NULL;
	}
	if (pr->la_pool) {
		for (w = 0; w < PD_MAX_WORKERS; w++)
			for (i = 0; i < 2 * PD_BURST; i++)
				rte_crypto_op_free(pr->la_ops[w][i]);
		rte_mempool_free(pr->la_pool);
	}
	if (pr->la_dev >= 0) {
		struct rte_cryptodev_info info;

		rte_cryptodev_info_get((uint8_t)pr->la_dev, &info);
		rte_cryptodev_stop((uint8_t)pr->la_dev);
		rte_cryptodev_close((uint8_t)pr->la_dev);
		if (info.device)
			rte_dev_remove(info.device);
	}
	pthread_mutex_destroy(&pr->lock);
}
