/* SPDX-License-Identifier: BSD-3-Clause
 * conntrack.c - the flow table: rte_hash on the normalised 5-tuple, an
 * array of flows indexed by the hash's key position, ageing from the
 * control thread with QSBR-deferred slot reuse.
 *
 * Design notes (see conntrack.h for the interface):
 *
 * - Index = rte_hash key position. Workers insert concurrently (each
 *   rte_hash write under ct_wlock), and rte_hash has no "add if absent"
 *   with data: rte_hash_add_key_data() on a key another worker has just
 *   added overwrites its data, so two workers creating the two directions
 *   of one flow at once would each take an index from a private allocator
 *   and one would be lost for good. rte_hash_add_key_with_hash() is
 *   idempotent instead: both get the same position. So the position is
 *   the flow index, rte_hash_lookup_bulk() (positions) replaces
 *   rte_hash_lookup_bulk_data(), and the flow word's compare-and-swap from
 *   PD_CT_FREE decides which of the two initialises the flow.
 *
 * - Capacity. The hash is single-writer (no MULTI_WRITER_ADD, so no
 *   per-lcore caches of free key slots): it hands out exactly its entries'
 *   positions, flows[] has that many (128 bytes each) and `used` enforces
 *   the configured capacity exactly. EXT_TABLE lets the hash hold all
 *   `capacity` keys whatever their buckets, so a cuckoo failure never
 *   shows up as table-full early.
 *
 * - Locks. Lookups take none (RW_CONCURRENCY_LF). Every write to the hash
 *   (a worker's add or eviction delete, the control thread's delete and
 *   free of a position) holds ct_wlock, one exchange: only packets that
 *   create a flow ever wait, and only for one other insert or delete.
 *   (rte_hash's own MULTI_WRITER_ADD lock costs four atomic operations per
 *   add and was 9 % of the new-flow rate.)
 *
 * - Deletion and reuse. The control thread marks a flow PD_CT_DEAD,
 *   deletes its key, and queues the slot on an rte_rcu_qsbr defer queue on
 *   the pipeline's QSBR variable (p->qs). When every worker has passed a
 *   quiescent point the slot's counters are zeroed, its state set to
 *   PD_CT_FREE and only then rte_hash_free_key_with_position() lets the
 *   hash hand it out again. The queue reclaims in batches while the scan
 *   runs, and expire ends with one grace period, so the slots it frees are
 *   free when it returns. The hash's integrated RCU
 *   (rte_hash_rcu_qsbr_add) would give its callback the key's data, not
 *   its position, and would free the position itself, leaving no point at
 *   which to reset the flow between the grace period and reuse; hence our
 *   own queue on the same QSBR variable.
 *
 * - Ageing runs on the control thread only (pd_conntrack_expire, called
 *   periodically by Python), never in a worker: a deletion takes the hash
 *   writer lock and walks buckets, the defer queue is single-threaded, and
 *   the control lcore is otherwise idle while the workers' CPU is not. A
 *   worker never waits for ageing except for one delete's hold of the
 *   writer lock when it inserts.
 *
 * - Per-flow counters. The two directions of a flow may land on different
 *   workers (RSS is not symmetric), so counters are added atomically when
 *   the pipeline runs more than one worker, with plain adds otherwise.
 *
 * - NAT (issue 4): the lb stage adds each translated flow's reply tuple as
 *   a second key; its slot is an alias (PD_CT_ALIAS, tag = the flow). A
 *   lookup follows it. Alias and flow die together (ct_kill), and share
 *   the defer queue; alias slots are not counted in `used` (CT_NODEC).
 *
 * - Eviction (full: evict) runs in the worker that needs room: ct_evict
 *   kills the victim like the expiry does, frees its `used` place at once
 *   and queues its slots on an MP/SC ring that the next expire feeds to
 *   the defer queue (a worker cannot wait for a grace period).
 *
 * Measured (pydp.bench, 10000 UDP flows, all hits, 64-byte frames, one
 * worker, hugepages, on-CPU cycles per packet, a shared 2-CPU VM, so +-15%):
 * parse + conntrack + forward 134, parse + forward 64-67: about 70 cycles
 * per packet for the key, the bulk lookup and the flow update.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_icmp.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <rte_tcp.h>

#include "conntrack.h"

#define X_CT_DROPS(_) \
	_(TABLE_FULL, "table-full")
enum {
#define _E(id, s) CT_DROP_##id,
	X_CT_DROPS(_E)
#undef _E
};
static const char *const ct_drops[] = {
#define _S(id, s) s,
	X_CT_DROPS(_S)
#undef _S
	NULL,
};

/* extra counters: flows created here (auto or confirm), IP packets that
 * left without a flow (confirm mode misses), packets without an IP header */
enum { CT_X_CREATED = 0, CT_X_NO_FLOW, CT_X_NOT_IP, CT_X_EVICTED };
static const char *const ct_extra[] = { "created", "no_flow", "not_ip", "evicted",
					NULL };
static const char *const ct_edges[] = { "next", NULL };

#define CT_MAX_CAPACITY (1u << 24)
#define CT_RECLAIM_BATCH 32
#define CT_NODEC 0x80000000u      /* defer-queue element: not counted in `used` */
#define CT_EVICT_SAMPLE 8u        /* live flows compared per eviction */
#define CT_EVICT_MAX_SCAN 8192u   /* slots read per eviction at most */
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129

/* 0: take tcp_other's value (close: at most 10 s of it) */
static const uint32_t ct_default_timeouts_ms[PD_CT_N_TIMEOUTS] = {
	[PD_CT_TIMEOUT_TCP_ESTABLISHED] = 300000,
	[PD_CT_TIMEOUT_TCP_OTHER] = 30000,
	[PD_CT_TIMEOUT_UDP] = 30000,
	[PD_CT_TIMEOUT_ICMP] = 10000,
};
static const char *const ct_timeout_names[PD_CT_N_TIMEOUTS_ALL] = {
	"tcp_established", "tcp_other", "udp", "icmp", "tcp_syn_sent",
	"tcp_syn_recv", "tcp_fin_wait", "tcp_time_wait", "tcp_close",
};

static unsigned ct_seq;

/*
 * The hash key: family, protocol, then the lower (address, port) end and
 * the higher one, so both directions give the same key. 48 bytes, a size
 * rte_hash compares with vector instructions (rte_hash_k48_cmp_eq) rather
 * than memcmp. Addresses are raw bytes (IPv4 in the first 4); the order
 * only has to be total, so they compare as two host-order integers.
 */
struct ct_key {
	uint8_t family;
	uint8_t proto;
	uint16_t zone;          /* 0; room for per-VRF or per-tenant tables */
	uint16_t port_lo;       /* network order */
	uint16_t port_hi;
	uint64_t lo[2];
	uint64_t hi[2];
	uint64_t pad;
};
_Static_assert(sizeof(struct ct_key) == 48, "ct_key must stay 48 bytes");
_Static_assert(sizeof(union pd_flow_word) == 8, "flow word is one CAS");
_Static_assert(sizeof(struct pd_flow) == 2 * RTE_CACHE_LINE_SIZE,
	       "pd_flow is two cache lines");

/* Fill `k`; returns 1 if (s, sp) is the higher end (the key is swapped). */
static inline int ct_key_set(struct ct_key *k, uint8_t family, uint8_t proto,
			     const uint64_t s[2], const uint64_t d[2],
			     uint16_t sp, uint16_t dp)
{
	int sw = s[0] != d[0] ? s[0] > d[0] :
		 s[1] != d[1] ? s[1] > d[1] : sp > dp;

	k->family = family;
	k->proto = proto;
	k->zone = 0;
	k->pad = 0;
	if (!sw) {
		k->port_lo = sp;
		k->port_hi = dp;
		k->lo[0] = s[0];
		k->lo[1] = s[1];
		k->hi[0] = d[0];
		k->hi[1] = d[1];
	} else {
		k->port_lo = dp;
		k->port_hi = sp;
		k->lo[0] = d[0];
		k->lo[1] = d[1];
		k->hi[0] = s[0];
		k->hi[1] = s[1];
	}
	return sw;
}

/*
 * The key of a parsed packet. Returns 1 or 0 (swapped or not), -1 if it
 * has no IP header. *tcp_flags gets the TCP flags (0 for other protocols).
 * Ports: TCP, UDP, SCTP, UDP-Lite, DCCP; ICMP and ICMPv6 echo use the
 * identifier as both ports; anything else, and non-first fragments, 0.
 */
static inline int ct_key_from_pkt(struct rte_mbuf *m, const struct pd_meta *md,
				  struct ct_key *k, uint8_t *tcp_flags)
{
	uint64_t s[2] = { 0, 0 }, d[2] = { 0, 0 };
	uint16_t sp = 0, dp = 0;
	const uint8_t *l3, *l4;
	uint8_t family;
	uint32_t avail;

	*tcp_flags = 0;
	l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, md->l3_off);
	if (md->l3 == PD_L3_IPV4) {
		memcpy(s, l3 + 12, 4);
		memcpy(d, l3 + 16, 4);
		family = 4;
	} else if (md->l3 == PD_L3_IPV6) {
		memcpy(s, l3 + 8, 16);
		memcpy(d, l3 + 24, 16);
		family = 6;
	} else {
		return -1;
	}
	if (md->l4_off && !(md->flags & PD_META_FRAG)) {
		l4 = rte_pktmbuf_mtod_offset(m, const uint8_t *, md->l4_off);
		avail = rte_pktmbuf_data_len(m) - md->l4_off;
		switch (md->l4_proto) {
		case IPPROTO_TCP:       /* parse checked 20 bytes */
			*tcp_flags = l4[13];
			/* fall through */
		case IPPROTO_UDP:       /* parse checked 8 bytes */
			memcpy(&sp, l4, 2);
			memcpy(&dp, l4 + 2, 2);
			break;
		case IPPROTO_SCTP:
		case IPPROTO_UDPLITE:
		case IPPROTO_DCCP:
			if (avail >= 4) {
				memcpy(&sp, l4, 2);
				memcpy(&dp, l4 + 2, 2);
			}
			break;
		case IPPROTO_ICMP:      /* parse checked 8 bytes */
			if (l4[0] == RTE_IP_ICMP_ECHO_REQUEST ||
			    l4[0] == RTE_IP_ICMP_ECHO_REPLY) {
				memcpy(&sp, l4 + 4, 2);
				dp = sp;
			}
			break;
		case IPPROTO_ICMPV6:
			if ((l4[0] == ICMP6_ECHO_REQUEST ||
			     l4[0] == ICMP6_ECHO_REPLY) && avail >= 6) {
				memcpy(&sp, l4 + 4, 2);
				dp = sp;
			}
			break;
		default:
			break;
		}
	}
	return ct_key_set(k, family, md->l4_proto, s, d, sp, dp);
}

/*
 * The key's signature: what rte_hash_hash() gives with the hash's
 * hash_func (rte_hash_crc) and init_val (0), see pd_conntrack_configure;
 * inlined with the length known, rather than two indirect calls into
 * librte_hash per packet. lb_bench, 1M established flows, same runs,
 * medians of 3: whole worker loop 259 -> 246 cycles per packet on CPU
 * time (stages' TSC in the least preempted run: 215).
 */
static inline hash_sig_t ct_sig(const struct ct_key *k)
{
	return rte_hash_crc(k, sizeof(*k), 0);
}

/* The key of a flow, from its original-direction tuple. */
static void ct_key_from_flow(const struct pd_flow *f, struct ct_key *k)
{
	uint64_t s[2], d[2];

	memcpy(s, f->src, 16);
	memcpy(d, f->dst, 16);
	ct_key_set(k, f->family, f->proto, s, d, f->sport, f->dport);
}

static inline unsigned ct_timeout_idx(uint8_t proto, uint8_t state)
{
	static const uint8_t tcp[] = {
		[PD_CT_NEW] = PD_CT_TIMEOUT_TCP_SYN_SENT,
		[PD_CT_ESTABLISHED] = PD_CT_TIMEOUT_TCP_ESTABLISHED,
		[PD_CT_CLOSING] = PD_CT_TIMEOUT_TCP_CLOSE,
		[PD_CT_SYN_RECV] = PD_CT_TIMEOUT_TCP_SYN_RECV,
		[PD_CT_FIN_WAIT] = PD_CT_TIMEOUT_TCP_FIN_WAIT,
		[PD_CT_TIME_WAIT] = PD_CT_TIMEOUT_TCP_TIME_WAIT,
	};

	switch (proto) {
	case IPPROTO_TCP:
		return state < RTE_DIM(tcp) ? tcp[state] : PD_CT_TIMEOUT_TCP_OTHER;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return PD_CT_TIMEOUT_ICMP;
	default:                /* UDP and every other protocol */
		return PD_CT_TIMEOUT_UDP;
	}
}

static inline uint64_t ct_tsc_to_ms(uint64_t t, uint64_t hz)
{
	return t / hz * 1000 + t % hz * 1000 / hz;
}

static inline uint64_t ct_ms_to_tsc(uint64_t ms, uint64_t hz)
{
	return ms / 1000 * hz + ms % 1000 * hz / 1000;
}

/* ---- the fast path -------------------------------------------------------- */

static inline union pd_flow_word ct_word(const struct pd_flow *f)
{
	union pd_flow_word v;

	v.u64 = __atomic_load_n(&f->w.u64, __ATOMIC_ACQUIRE);
	return v;
}

static inline void ct_add(uint64_t *c, uint64_t v, bool mt)
{
	if (mt)
		__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
	else
		__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v,
				 __ATOMIC_RELAXED);
}

/*
 * The hash's writer lock: every rte_hash write (add, delete, free of a
 * position) from any worker or the control thread holds it; lookups never
 * do (RW_CONCURRENCY_LF). rte_hash's own (MULTI_WRITER_ADD) is an rwlock
 * taken twice per add (the search, then the insert): four atomic
 * read-modify-writes plus its per-lcore slot caches. This one is one
 * exchange and a plain release store (rte_spinlock_unlock is an xchg on
 * x86). lb_bench, 1M new flows (two adds each), same runs, medians of 3:
 * 1.68 -> 1.83 M new flows per CPU-second.
 */
static inline void ct_wlock(struct pd_ct *c)
{
	while (__atomic_exchange_n(&c->wlock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&c->wlock, __ATOMIC_RELAXED))
			rte_pause();
}

static inline void ct_wunlock(struct pd_ct *c)
{
	__atomic_store_n(&c->wlock, 0, __ATOMIC_RELEASE);
}

/* Take one of the `capacity` flow places; false if the table is full. */
static inline bool ct_reserve(struct pd_ct *c)
{
	if (__atomic_load_n(&c->used, __ATOMIC_RELAXED) >= c->capacity)
		return false;
	if (__atomic_fetch_add(&c->used, 1, __ATOMIC_RELAXED) >= c->capacity) {
		__atomic_fetch_sub(&c->used, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

/*
 * The TCP state machine (and UDP/ICMP's two states): the state after a
 * packet with TCP flags `tf` in direction `reply`. *flags records which
 * directions have sent a FIN.
 *
 *   NEW (SYN sent) --SYN+ACK reply--> SYN_RECV --ACK orig--> ESTABLISHED
 *   NEW --any non-SYN reply--> ESTABLISHED (a flow picked up mid-stream)
 *   any but CLOSE --FIN--> FIN_WAIT --FIN the other way--> TIME_WAIT
 *   any --RST--> CLOSE (PD_CT_CLOSING), which nothing leaves
 * Other protocols: NEW --first reply--> ESTABLISHED.
 */
static inline uint8_t ct_next_state(uint8_t proto, uint8_t st, uint8_t *flags,
				    unsigned reply, uint8_t tf)
{
	const uint8_t both = PD_FLOW_FIN_ORIG | PD_FLOW_FIN_REPLY;

	if (proto != IPPROTO_TCP)
		return reply && st == PD_CT_NEW ? PD_CT_ESTABLISHED : st;
	if (tf & RTE_TCP_RST_FLAG)
		return PD_CT_CLOSING;
	if (st == PD_CT_CLOSING)
		return st;
	if (tf & RTE_TCP_FIN_FLAG) {
		*flags |= reply ? PD_FLOW_FIN_REPLY : PD_FLOW_FIN_ORIG;
		return (*flags & both) == both ? PD_CT_TIME_WAIT : PD_CT_FIN_WAIT;
	}
	switch (st) {
	case PD_CT_NEW:
		if (!reply)
			return st;
		if (tf & RTE_TCP_SYN_FLAG)
			return (tf & RTE_TCP_ACK_FLAG) ? PD_CT_SYN_RECV : st;
		return PD_CT_ESTABLISHED;
	case PD_CT_SYN_RECV:
		if (!reply && (tf & RTE_TCP_ACK_FLAG) && !(tf & RTE_TCP_SYN_FLAG))
			return PD_CT_ESTABLISHED;
		return st;
	default:
		return st;
	}
}

/*
 * Count a packet of `len` bytes in flow `f` (direction `reply`, word `v`
 * as last read) and move the flow's state (ct_next_state). The new state
 * is computed from the word the compare-and-swap saw, so two workers
 * racing on the two directions both get their transition; nothing leaves
 * DEAD, so a worker racing with the expiry cannot revive a deleted flow.
 * Packets that change nothing (most) do no atomic operation on the word.
 */
static inline void ct_track(struct pd_flow *f, union pd_flow_word v,
			    uint8_t proto, unsigned reply, uint8_t tcp_flags,
			    uint32_t len, uint64_t now, bool mt)
{
	ct_add(&f->packets[reply], 1, mt);
	ct_add(&f->bytes[reply], len, mt);
	if (__atomic_load_n(&f->last_tsc, __ATOMIC_RELAXED) != now)
		__atomic_store_n(&f->last_tsc, now, __ATOMIC_RELAXED);
	for (;;) {
		union pd_flow_word n = v;

		if (!pd_ct_live(v.state))
			return;
		n.state = ct_next_state(proto, v.state, &n.flags, reply, tcp_flags);
		if (n.u64 == v.u64)
			return;
		if (__atomic_compare_exchange_n(&f->w.u64, &v.u64, n.u64, false,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return;
	}
}

/* ---- taking flows out: expiry (control thread) and eviction (workers) ---- */

/* Kill alias entry `pos`: DEAD, key deleted. False if it is not a live
 * alias (someone else killed it). The caller defers the slot. */
static bool ct_alias_kill(struct pd_ct *c, uint32_t pos)
{
	struct pd_flow *a = &c->flows[pos];
	union pd_flow_word v, d;
	struct ct_key key;

	v.u64 = __atomic_load_n(&a->w.u64, __ATOMIC_ACQUIRE);
	do {
		if (v.state != PD_CT_ALIAS || (v.flags & PD_FLOW_BUSY))
			return false;
		d = v;
		d.state = PD_CT_DEAD;
	} while (!__atomic_compare_exchange_n(&a->w.u64, &v.u64, d.u64, false,
					      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
	ct_key_from_flow(a, &key);
	ct_wlock(c);
	rte_hash_del_key(c->h, &key);
	ct_wunlock(c);
	return true;
}

/*
 * Take flow `pos` (word `v` as last read) out of the table: DEAD, the
 * release hook, its alias, its key. Returns 0 (*alias_pos: the alias slot
 * to defer too, or UINT32_MAX), -EAGAIN if the flow changed meanwhile, or
 * -EIO if its key was not at this slot (the slot is then lost, logged).
 */
static int ct_kill(struct pd_ct *c, uint32_t pos, union pd_flow_word v,
		   uint32_t *alias_pos)
{
	struct pd_flow *f = &c->flows[pos];
	union pd_flow_word d = v;
	struct ct_key key;
	uint32_t a;
	int32_t ret;

	*alias_pos = UINT32_MAX;
	d.state = PD_CT_DEAD;    /* workers can no longer change it */
	if (!__atomic_compare_exchange_n(&f->w.u64, &v.u64, d.u64, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return -EAGAIN;
	if (c->release)
		c->release(c->release_arg, f);
	a = __atomic_load_n(&f->alias, __ATOMIC_ACQUIRE);
	if (a && ct_alias_kill(c, a - 1))
		*alias_pos = a - 1;
	ct_key_from_flow(f, &key);
	ct_wlock(c);
	ret = rte_hash_del_key(c->h, &key);
	ct_wunlock(c);
	if (ret != (int32_t)pos) {
		RTE_LOG(ERR, USER1, "conntrack: flow %u: delete returned %d\n",
			pos, ret);
		return -EIO;
	}
	return 0;
}

/* A worker hands a slot it took out to the control thread (which defers
 * it past a grace period). The ring holds every slot: it never fills. */
static inline void ct_evq_push(struct pd_ct *c, uint32_t elem)
{
	if (rte_ring_mp_enqueue_elem(c->evq, &elem, sizeof(elem)) != 0)
		RTE_LOG(ERR, USER1, "conntrack: eviction queue full, slot %u lost\n",
			elem & ~CT_NODEC);
}

/*
 * Table full, eviction on: take out the least recently used of a sample of
 * CT_EVICT_SAMPLE live flows (an approximate LRU, as Redis does; closing
 * flows - CLOSE and TIME_WAIT - go first). The sample continues where the
 * previous one stopped, reading at most CT_EVICT_MAX_SCAN slots. Runs in the
 * worker: no wait but rte_hash's writer lock for the deletes, like an
 * insert. Returns true if a flow left (its `used` place is free at once).
 */
static bool ct_evict(struct pd_ct *c, struct pd_worker *w, struct pd_stage *st)
{
	uint32_t n = c->n_slots, want = RTE_MIN(CT_EVICT_SAMPLE, c->capacity);
	uint32_t lim = RTE_MIN(n, CT_EVICT_MAX_SCAN), i, k, found = 0;
	uint32_t best = UINT32_MAX, alias_pos;
	uint64_t best_tsc = UINT64_MAX;
	union pd_flow_word bv = { .u64 = 0 };
	int attempt;

	for (attempt = 0; attempt < 4; attempt++) {
		i = __atomic_load_n(&c->evict_cursor, __ATOMIC_RELAXED) % n;
		found = 0;
		best = UINT32_MAX;
		best_tsc = UINT64_MAX;
		for (k = 0; k < lim && found < want; k++, i = i + 1 == n ? 0 : i + 1) {
			const struct pd_flow *f = &c->flows[i];
			union pd_flow_word v = ct_word(f);
			uint64_t t;

			if (!pd_ct_live(v.state) || (v.flags & PD_FLOW_BUSY))
				continue;
			found++;
			t = (v.state == PD_CT_CLOSING || v.state == PD_CT_TIME_WAIT) ? 0 :
			    __atomic_load_n(&f->last_tsc, __ATOMIC_RELAXED);
			if (t < best_tsc) {
				best_tsc = t;
				best = i;
				bv = v;
			}
		}
		__atomic_store_n(&c->evict_cursor, i, __ATOMIC_RELAXED);
		if (best == UINT32_MAX)
			continue;        /* none in this window: the next one */
		if (ct_kill(c, best, bv, &alias_pos) == 0) {
			__atomic_fetch_sub(&c->used, 1, __ATOMIC_RELEASE);
			ct_evq_push(c, best | CT_NODEC);
			if (alias_pos != UINT32_MAX)
				ct_evq_push(c, alias_pos | CT_NODEC);
			w->ctr[st->ctr_extra + CT_X_EVICTED]++;
			return true;
		}
	}
	return false;
}

/* The cold half of a new flow (or alias) from its key. */
static inline void ct_fill(struct pd_flow *f, const struct ct_key *k, int sw,
			   uint64_t now)
{
	f->first_tsc = now;
	__atomic_store_n(&f->last_tsc, now, __ATOMIC_RELAXED);
	f->family = k->family;
	f->proto = k->proto;
	f->sport = sw ? k->port_hi : k->port_lo;
	f->dport = sw ? k->port_lo : k->port_hi;
	memcpy(f->src, sw ? k->hi : k->lo, 16);
	memcpy(f->dst, sw ? k->lo : k->hi, 16);
}

/*
 * Find or create the flow of key `k` (`sw`: the packet's source is the
 * key's higher end). Returns the flow index with its word in *v, or
 * -ENOSPC. If another worker creates the same flow at the same time, both
 * get the same position from rte_hash and one wins the CAS from
 * PD_CT_FREE; the loser uses the winner's flow (and tag).
 */
static int ct_create(struct pd_ct *c, struct pd_worker *w, struct pd_stage *st,
		     const struct ct_key *k, hash_sig_t sig, int sw, uint32_t tag,
		     uint64_t now, union pd_flow_word *v)
{
	union pd_flow_word o, n, busy = { .u64 = 0 };
	struct pd_flow *f;
	int32_t pos;

	/*
	 * No lookup first: rte_hash_add_key_with_hash() finds a key that is
	 * already there (created earlier in this burst, or by another worker)
	 * before it takes a free slot, and returns its position; the CAS below
	 * then finds the flow made. Saves a lookup per new flow. Only a full
	 * table looks first, so that an existing flow is neither refused nor
	 * the reason for an eviction.
	 */
	if (!ct_reserve(c)) {
		pos = rte_hash_lookup_with_hash(c->h, k, sig);
		if (pos >= 0) {
			*v = ct_word(&c->flows[pos]);
			if (v->state != PD_CT_FREE)
				return pos;
		}
		if (!c->evict || !ct_evict(c, w, st) || !ct_reserve(c))
			return -ENOSPC;
	}
	ct_wlock(c);
	pos = rte_hash_add_key_with_hash(c->h, k, sig);
	ct_wunlock(c);
	if (pos < 0) {
		__atomic_fetch_sub(&c->used, 1, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	f = &c->flows[pos];
	o = ct_word(f);
	if (o.state == PD_CT_FREE && w->pl->n_workers == 1) {
		/*
		 * One worker: nobody else creates flows, and the control thread
		 * leaves FREE slots alone, so the slot is ours: fill it, then
		 * publish the word with one release store (no CAS, no BUSY
		 * phase). With the alias's the same (pd_conntrack_alias):
		 * lb_bench, same runs, medians of 3: 1.76 -> 1.92 M new flows
		 * per CPU-second (~1480 -> ~1350 TSC cycles per new flow, worker loop).
		 */
		n.u64 = 0;
		n.state = PD_CT_NEW;
		n.flags = sw ? PD_FLOW_ORIG_HI : 0;
		n.gen = (uint16_t)(o.gen + 1);
		n.tag = tag;
		ct_fill(f, k, sw, now);
		__atomic_store_n(&f->w.u64, n.u64, __ATOMIC_RELEASE);
		w->ctr[st->ctr_extra + CT_X_CREATED]++;
		*v = n;
		return pos;
	}
	while (o.state == PD_CT_FREE) {
		n.u64 = 0;
		n.state = PD_CT_NEW;
		n.flags = PD_FLOW_BUSY | (sw ? PD_FLOW_ORIG_HI : 0);
		n.gen = (uint16_t)(o.gen + 1);
		n.tag = tag;
		if (!__atomic_compare_exchange_n(&f->w.u64, &o.u64, n.u64, false,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			continue;
		/* ours: write the cold half, then drop BUSY */
		ct_fill(f, k, sw, now);
		busy.flags = PD_FLOW_BUSY;
		__atomic_fetch_and(&f->w.u64, ~busy.u64, __ATOMIC_RELEASE);
		w->ctr[st->ctr_extra + CT_X_CREATED]++;
		n.flags &= (uint8_t)~PD_FLOW_BUSY;
		*v = n;
		return pos;
	}
	/* another worker made it (or it is being deleted): use that one */
	__atomic_fetch_sub(&c->used, 1, __ATOMIC_RELAXED);
	*v = o;
	return pos;
}

static inline void ct_mark(struct rte_mbuf *m, int32_t pos, unsigned reply,
			   bool nat)
{
	struct pd_meta *md = pd_meta(m);

	md->aux = (uint32_t)pos + 1;
	if (reply)
		md->flags |= PD_META_REPLY;
	if (nat)
		md->flags |= PD_META_NAT;
}

/*
 * Slot *p (word *v) was found for a packet whose source is the key's
 * higher end if `sw`. An alias entry stands for its flow: follow it (the
 * flow cannot be reused before this burst ends: its slot waits for a grace
 * period). Sets the packet's direction; returns whether it came by alias.
 */
static inline bool ct_resolve(const struct pd_ct *c, int32_t *p,
			      union pd_flow_word *v, int sw, unsigned *reply)
{
	if (unlikely(v->state == PD_CT_ALIAS)) {
		unsigned hi = !!(v->flags & PD_FLOW_ORIG_HI);

		*p = (int32_t)v->tag;
		*v = ct_word(&c->flows[*p]);
		/* the alias's orientation is the reply direction's */
		*reply = 1u ^ ((unsigned)sw ^ hi);
		return true;
	}
	*reply = (unsigned)sw ^ !!(v->flags & PD_FLOW_ORIG_HI);
	return false;
}

/* One lookup burst: n <= RTE_HASH_LOOKUP_BULK_MAX. Verdicts in packet order. */
static void ct_burst(struct pd_stage *st, struct pd_ct *c, struct pd_worker *w,
		     struct rte_mbuf **pkts, uint16_t n, uint64_t now, bool mt)
{
	struct ct_key keys[RTE_HASH_LOOKUP_BULK_MAX];
	const void *kp[RTE_HASH_LOOKUP_BULK_MAX];
	int32_t pos[RTE_HASH_LOOKUP_BULK_MAX];
	int8_t kidx[RTE_HASH_LOOKUP_BULK_MAX];
	uint8_t sw[RTE_HASH_LOOKUP_BULK_MAX], tf[RTE_HASH_LOOKUP_BULK_MAX];
	hash_sig_t sig[RTE_HASH_LOOKUP_BULK_MAX];
	uint16_t i, nk = 0, not_ip = 0, no_flow = 0;

	for (i = 0; i < n; i++) {
		struct pd_meta *md = pd_meta(pkts[i]);
		int r;

		md->aux = 0;
		md->flags &= (uint16_t)~(PD_META_REPLY | PD_META_NAT);
		r = ct_key_from_pkt(pkts[i], md, &keys[nk], &tf[nk]);
		if (r < 0) {
			kidx[i] = -1;
			continue;
		}
		sw[nk] = (uint8_t)r;
		kp[nk] = &keys[nk];
		kidx[i] = (int8_t)nk++;
	}
	if (nk) {
		/* our own signatures: a new flow's insert reuses its own */
		for (i = 0; i < nk; i++)
			sig[i] = ct_sig(&keys[i]);
		rte_hash_lookup_with_hash_bulk(c->h, kp, sig, nk, pos);
		for (i = 0; i < nk; i++)
			if (pos[i] >= 0)
				rte_prefetch0(&c->flows[pos[i]]);
	}
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		union pd_flow_word v;
		int k = kidx[i];
		int32_t p;
		unsigned reply = 0;
		bool nat = false;

		if (k < 0) {
			not_ip++;
			pd_emit(w, st, 0, m);
			continue;
		}
		p = pos[k];
		if (p >= 0) {
			v = ct_word(&c->flows[p]);
			nat = ct_resolve(c, &p, &v, sw[k], &reply);
			if (!pd_ct_live(v.state))
				p = -1;  /* being created or expired: as a miss */
		}
		if (p < 0) {
			if (c->confirm) {
				no_flow++;
				pd_emit(w, st, 0, m);
				continue;
			}
			p = ct_create(c, w, st, &keys[k], sig[k], sw[k], 0, now, &v);
			if (p < 0) {
				pd_drop(w, st, CT_DROP_TABLE_FULL, m);
				continue;
			}
			nat = ct_resolve(c, &p, &v, sw[k], &reply);
			pd_trace_hit(w, st, m, PD_TRACE_FLOW_NEW, (uint32_t)p);
		} else {
			pd_trace_hit(w, st, m, PD_TRACE_FLOW, (uint32_t)p);
		}
		ct_track(&c->flows[p], v, keys[k].proto, reply, tf[k],
			 rte_pktmbuf_pkt_len(m), now, mt);
		ct_mark(m, p, reply, nat);
		pd_emit(w, st, 0, m);
	}
	w->ctr[st->ctr_extra + CT_X_NOT_IP] += not_ip;
	w->ctr[st->ctr_extra + CT_X_NO_FLOW] += no_flow;
}

static void ct_process(struct pd_stage *st, struct pd_worker *w,
		       struct rte_mbuf **pkts, uint16_t n)
{
	struct pd_ct *c = st->priv;
	uint64_t now = rte_rdtsc();
	bool mt = w->pl->n_workers > 1;
	uint16_t i, chunk;

	if (!c->h) {
		/* never configured: track nothing, pass everything */
		for (i = 0; i < n; i++) {
			pd_meta(pkts[i])->aux = 0;
			pd_meta(pkts[i])->flags &=
				(uint16_t)~(PD_META_REPLY | PD_META_NAT);
			pd_emit(w, st, 0, pkts[i]);
		}
		w->ctr[st->ctr_extra + CT_X_NO_FLOW] += n;
		return;
	}
	for (i = 0; i < n; i += chunk) {
		chunk = (uint16_t)RTE_MIN(n - i, RTE_HASH_LOOKUP_BULK_MAX);
		ct_burst(st, c, w, pkts + i, chunk, now, mt);
	}
}

/* Count one packet on the flow at slot p (an alias is followed) and mark
 * it (aux, reply flag): returns the flow index. */
static int ct_hit_one(struct pd_ct *c, struct pd_worker *w, struct rte_mbuf *m,
		      int p, union pd_flow_word v, int sw, uint8_t proto,
		      uint8_t tf)
{
	unsigned reply;
	int32_t q = p;
	bool nat = ct_resolve(c, &q, &v, sw, &reply);

	ct_track(&c->flows[q], v, proto, reply, tf, rte_pktmbuf_pkt_len(m),
		 rte_rdtsc(), w->pl->n_workers > 1);
	pd_meta(m)->flags &= (uint16_t)~(PD_META_REPLY | PD_META_NAT);
	ct_mark(m, q, reply, nat);
	return q;
}

int pd_conntrack_confirm(struct pd_stage *ct, struct pd_worker *w,
			 struct rte_mbuf *m, uint32_t tag)
{
	struct pd_ct *c = ct->priv;
	union pd_flow_word v;
	struct ct_key k;
	uint8_t tf;
	int sw, p;

	if (!c->h)
		return -EINVAL;
	sw = ct_key_from_pkt(m, pd_meta(m), &k, &tf);
	if (sw < 0)
		return -EINVAL;
	p = ct_create(c, w, ct, &k, ct_sig(&k), sw, tag,
		      rte_rdtsc(), &v);
	if (p < 0)
		return p;
	pd_trace_hit(w, ct, m, PD_TRACE_FLOW_NEW, (uint32_t)p);
	return ct_hit_one(c, w, m, p, v, sw, k.proto, tf);
}

/*
 * Look one packet up again. The stage looks a whole burst up before a later
 * stage confirms any flow, so a reply that travels in the same burst as the
 * packet that opened its flow (a replayed capture, a fast local peer) missed
 * it. The policy stage calls this before it drops a packet it would deny.
 */
int pd_conntrack_recheck(struct pd_stage *ct, struct pd_worker *w,
			 struct rte_mbuf *m)
{
	struct pd_ct *c = ct->priv;
	union pd_flow_word v;
	struct ct_key k;
	uint8_t tf;
	int sw, p;

	if (!c->h)
		return -EINVAL;
	sw = ct_key_from_pkt(m, pd_meta(m), &k, &tf);
	if (sw < 0)
		return -EINVAL;
	p = rte_hash_lookup(c->h, &k);
	if (p < 0)
		return -ENOENT;
	v = ct_word(&c->flows[p]);
	if (v.state == PD_CT_ALIAS) {
		int32_t q = (int32_t)v.tag;

		if (!pd_ct_live(ct_word(&c->flows[q]).state))
			return -ENOENT;
	} else if (!pd_ct_live(v.state)) {
		return -ENOENT;
	}
	pd_trace_hit(w, ct, m, PD_TRACE_FLOW, (uint32_t)p);
	return ct_hit_one(c, w, m, p, v, sw, k.proto, tf);
}

/* ---- control -------------------------------------------------------------- */

struct pd_stage *pd_conntrack_find(struct pd_pipeline *p, int stage)
{
	return pd_stage_get(p, stage, "conntrack");
}

static struct pd_ct *ct_get(struct pd_pipeline *p, int stage, bool configured)
{
	struct pd_stage *st = pd_stage_get(p, stage, "conntrack");
	struct pd_ct *c;

	if (!st)
		return NULL;
	c = st->priv;
	if (configured && !c->h) {
		PD_ERR(EINVAL, "stage '%s': conntrack is not configured "
		       "(pd_conntrack_config)", st->name);
		return NULL;
	}
	return c;
}

/*
 * Defer-queue callback, and the direct path when no worker can hold the
 * slot: runs after the grace period of slot *e. Resets the flow, then lets
 * rte_hash hand the position out again. Control thread, ctl held.
 */
static void ct_slot_free(void *arg, void *e, unsigned int n)
{
	struct pd_ct *c = arg;
	uint32_t pos;
	struct pd_flow *f;
	union pd_flow_word v;

	uint32_t elem;

	RTE_SET_USED(n);
	memcpy(&elem, e, sizeof(elem));
	pos = elem & ~CT_NODEC;
	f = &c->flows[pos];
	v.u64 = f->w.u64;
	f->packets[0] = f->packets[1] = 0;
	f->bytes[0] = f->bytes[1] = 0;
	f->lb = 0;
	f->alias = 0;
	f->snat_port = 0;
	v.state = PD_CT_FREE;
	v.flags = 0;
	v.tag = 0;                       /* gen stays: the next flow bumps it */
	__atomic_store_n(&f->w.u64, v.u64, __ATOMIC_RELEASE);
	if (c->h) {
		ct_wlock(c);
		rte_hash_free_key_with_position(c->h, (int32_t)pos);
		ct_wunlock(c);
	}
	if (elem & CT_NODEC)
		return;                  /* an alias, or evicted: not in `used` */
	__atomic_store_n(&c->pending, c->pending - 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&c->used, 1, __ATOMIC_RELEASE);
}

static void ct_table_free(struct pd_ct *c)
{
	if (c->dq) {
		/* workers are stopped (offline), so every grace period is over;
		 * the callbacks only do bookkeeping once the hash is going */
		struct rte_hash *h = c->h;

		c->h = NULL;
		if (rte_rcu_qsbr_dq_delete(c->dq) != 0)
			RTE_LOG(ERR, USER1, "conntrack: defer queue not freed: %s\n",
				rte_strerror(rte_errno));
		c->h = h;
		c->dq = NULL;
	}
	rte_ring_free(c->evq);
	c->evq = NULL;
	rte_hash_free(c->h);
	rte_free(c->flows);
	c->h = NULL;
	c->flows = NULL;
	c->n_slots = 0;
	c->used = 0;
	c->pending = 0;
	c->cursor = 0;
	c->evict_cursor = 0;
}

int pd_conntrack_config(struct pd_pipeline *p, int stage, unsigned capacity,
			int confirm_mode, const uint32_t *timeouts_ms)
{
	struct pd_ct_conf conf;
	struct pd_stage *st = pd_stage_get(p, stage, "conntrack");
	unsigned i;

	if (!st)
		return -EINVAL;
	memset(&conf, 0, sizeof(conf));
	conf.capacity = capacity;
	conf.confirm = confirm_mode;
	if (!timeouts_ms)
		timeouts_ms = ct_default_timeouts_ms;
	for (i = 0; i < PD_CT_N_TIMEOUTS; i++) {
		if (timeouts_ms[i] == 0)
			return PD_ERR(EINVAL, "stage '%s': timeout %s must be at "
				      "least 1 ms", st->name, ct_timeout_names[i]);
		conf.timeouts_ms[i] = timeouts_ms[i];
	}
	return pd_conntrack_configure(p, stage, &conf);
}

int pd_conntrack_configure(struct pd_pipeline *p, int stage,
			   const struct pd_ct_conf *conf)
{
	struct pd_stage *st = pd_stage_get(p, stage, "conntrack");
	struct rte_hash_parameters hp;
	char name[RTE_HASH_NAMESIZE];
	uint64_t hz = rte_get_tsc_hz();
	uint32_t ms[PD_CT_N_TIMEOUTS_ALL];
	unsigned i, capacity, entries;
	int confirm_mode;
	struct pd_ct *c;
	int32_t max_id;

	if (!st)
		return -EINVAL;
	c = st->priv;
	if (!conf)
		return PD_ERR(EINVAL, "stage '%s': no configuration", st->name);
	capacity = conf->capacity;
	confirm_mode = conf->confirm;
	if (p->built)
		return PD_ERR(EBUSY, "stage '%s': conntrack is configured before "
			      "the pipeline is built", st->name);
	if (capacity < 1 || capacity > CT_MAX_CAPACITY)
		return PD_ERR(EINVAL, "stage '%s': capacity %u (1..%u allowed)",
			      st->name, capacity, CT_MAX_CAPACITY);
	if (confirm_mode != 0 && confirm_mode != 1)
		return PD_ERR(EINVAL, "stage '%s': confirm_mode must be 0 or 1",
			      st->name);
	if (conf->evict != 0 && conf->evict != 1)
		return PD_ERR(EINVAL, "stage '%s': evict must be 0 or 1", st->name);
	if (conf->nat != 0 && conf->nat != 1)
		return PD_ERR(EINVAL, "stage '%s': nat must be 0 or 1", st->name);
	for (i = 0; i < PD_CT_N_TIMEOUTS_ALL; i++)
		ms[i] = conf->timeouts_ms[i];
	for (i = 0; i < PD_CT_N_TIMEOUTS; i++)
		if (ms[i] == 0)
			ms[i] = ct_default_timeouts_ms[i];
	/* the TCP states not named take tcp_other (close: at most 10 s);
	 * SYN_RECV too: a handshake the client never completes (a SYN flood
	 * with spoofed sources) must not hold its slot for the established
	 * timeout (Linux: 60 s for SYN_RECV, 5 days established) */
	for (i = PD_CT_N_TIMEOUTS; i < PD_CT_N_TIMEOUTS_ALL; i++)
		if (ms[i] == 0)
			ms[i] = i == PD_CT_TIMEOUT_TCP_CLOSE ?
				RTE_MIN(ms[PD_CT_TIMEOUT_TCP_OTHER], 10000u) :
				ms[PD_CT_TIMEOUT_TCP_OTHER];
	ct_table_free(c);
	/* room for: the flows, a reply-tuple entry each with NAT, and the
	 * evicted slots waiting for the control thread to recycle them */
	entries = capacity * (conf->nat ? 2u : 1u) +
		  (conf->evict ? capacity / 4 + 256 : 0);

	snprintf(name, sizeof(name), "pdct%u",
		 __atomic_fetch_add(&ct_seq, 1, __ATOMIC_RELAXED));
	memset(&hp, 0, sizeof(hp));
	hp.name = name;
	hp.entries = RTE_MAX(entries, 8u);    /* rte_hash: one bucket at least */
	hp.key_len = sizeof(struct ct_key);
	hp.hash_func = rte_hash_crc;        /* and init_val 0: ct_sig() */
	hp.socket_id = (int)rte_socket_id();
	/* single-writer rte_hash: writers serialise on ct_wlock */
	hp.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF |
			RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
	c->h = rte_hash_create(&hp);
	if (!c->h)
		return PD_ERR(rte_errno ? rte_errno : ENOMEM, "stage '%s': cannot "
			      "create the flow hash (%u entries): %s", st->name,
			      capacity, rte_strerror(rte_errno));
	max_id = rte_hash_max_key_id(c->h);
	c->n_slots = (uint32_t)max_id + 1;
	c->flows = rte_zmalloc_socket("pd_flows",
				      (size_t)c->n_slots * sizeof(struct pd_flow),
				      RTE_CACHE_LINE_SIZE, (int)rte_socket_id());
	if (!c->flows) {
		ct_table_free(c);
		return PD_ERR(ENOMEM, "stage '%s': out of memory for %u flows",
			      st->name, capacity);
	}
	snprintf(name, sizeof(name), "pdctev%u",
		 __atomic_fetch_add(&ct_seq, 1, __ATOMIC_RELAXED));
	c->evq = rte_ring_create_elem(name, sizeof(uint32_t),
				      rte_align32pow2(c->n_slots + 1),
				      (int)rte_socket_id(), RING_F_SC_DEQ);
	if (!c->evq) {
		ct_table_free(c);
		return PD_ERR(ENOMEM, "stage '%s': out of memory for the eviction "
			      "queue: %s", st->name, rte_strerror(rte_errno));
	}
	c->capacity = capacity;
	c->confirm = confirm_mode;
	c->evict = conf->evict;
	for (i = 0; i < PD_CT_N_TIMEOUTS_ALL; i++)
		c->timeout_tsc[i] = ct_ms_to_tsc(ms[i], hz);
	return 0;
}

void pd_conntrack_set_release(struct pd_stage *ct,
			      void (*fn)(void *arg, const struct pd_flow *f),
			      void *arg)
{
	struct pd_ct *c = ct->priv;

	c->release_arg = arg;
	c->release = fn;
}

void pd_conntrack_alias_warm(struct pd_stage *ct, const struct pd_ct_rtuple *r,
			     unsigned n)
{
	struct pd_ct *c = ct->priv;
	struct ct_key k[RTE_HASH_LOOKUP_BULK_MAX];
	const void *kp[RTE_HASH_LOOKUP_BULK_MAX];
	hash_sig_t sig[RTE_HASH_LOOKUP_BULK_MAX];
	int32_t pos[RTE_HASH_LOOKUP_BULK_MAX];
	unsigned i;

	n = RTE_MIN(n, (unsigned)RTE_HASH_LOOKUP_BULK_MAX);
	for (i = 0; i < n; i++) {
		const struct pd_flow *f = &c->flows[r[i].flow];
		uint64_t s[2], d[2];

		memcpy(s, r[i].rsrc, 16);
		memcpy(d, r[i].rdst, 16);
		ct_key_set(&k[i], f->family, f->proto, s, d, r[i].rsport,
			   r[i].rdport);
		sig[i] = ct_sig(&k[i]);
		kp[i] = &k[i];
	}
	if (n)
		rte_hash_lookup_with_hash_bulk(c->h, kp, sig, n, pos);
}

int pd_conntrack_alias(struct pd_stage *ct, struct pd_worker *w, uint32_t flow,
		       uint16_t gen, const uint8_t *rsrc, const uint8_t *rdst,
		       uint16_t rsport, uint16_t rdport)
{
	struct pd_ct *c = ct->priv;
	struct pd_flow *f = &c->flows[flow], *a;
	union pd_flow_word o, n, busy = { .u64 = 0 };
	uint64_t s[2], d[2];
	struct ct_key k;
	hash_sig_t sig;
	int32_t pos;
	int sw;

	memcpy(s, rsrc, 16);
	memcpy(d, rdst, 16);
	sw = ct_key_set(&k, f->family, f->proto, s, d, rsport, rdport);
	sig = ct_sig(&k);
	/* an existing key (ours, or another flow's) comes back as it is */
	ct_wlock(c);
	pos = rte_hash_add_key_with_hash(c->h, &k, sig);
	ct_wunlock(c);
	if (pos < 0)
		return -ENOSPC;
	a = &c->flows[pos];
	o = ct_word(a);
	if (o.state == PD_CT_FREE && w && w->pl->n_workers == 1) {
		/* one worker: the slot is ours (see ct_create) */
		n.u64 = 0;
		n.state = PD_CT_ALIAS;
		n.flags = sw ? PD_FLOW_ORIG_HI : 0;
		n.gen = (uint16_t)(o.gen + 1);
		n.tag = flow;
		ct_fill(a, &k, sw, rte_rdtsc());
		__atomic_store_n(&a->w.u64, n.u64, __ATOMIC_RELEASE);
		goto published;
	}
	for (;;) {
		if (o.state != PD_CT_FREE)
			return o.state == PD_CT_ALIAS && o.tag == flow ? 0 : -EEXIST;
		n.u64 = 0;
		n.state = PD_CT_ALIAS;
		n.flags = PD_FLOW_BUSY | (sw ? PD_FLOW_ORIG_HI : 0);
		n.gen = (uint16_t)(o.gen + 1);
		n.tag = flow;
		if (__atomic_compare_exchange_n(&a->w.u64, &o.u64, n.u64, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			break;
	}
	ct_fill(a, &k, sw, rte_rdtsc());
	busy.flags = PD_FLOW_BUSY;
	__atomic_fetch_and(&a->w.u64, ~busy.u64, __ATOMIC_RELEASE);
published:
	__atomic_store_n(&f->alias, (uint32_t)pos + 1, __ATOMIC_RELEASE);
	/* the flow may have left meanwhile, before it could see its alias:
	 * then nobody else takes the alias out */
	o = ct_word(f);
	if (!pd_ct_live(o.state) || o.gen != gen) {
		if (ct_alias_kill(c, (uint32_t)pos))
			ct_evq_push(c, (uint32_t)pos | CT_NODEC);
		return -ESTALE;
	}
	return 0;
}

/*
 * The control thread gets an lcore id (the main lcore has one; another
 * Python thread registers once and keeps it for the life of the process).
 * The hash needed it while it kept per-lcore caches of free key slots
 * (MULTI_WRITER_ADD); the single-writer hash no longer does, and the
 * registration stays as it was: harmless, and DPDK APIs that expect an
 * lcore id keep working from this thread.
 */
static int ct_ctl_thread(void)
{
	if (rte_lcore_id() != LCORE_ID_ANY)
		return 0;
	if (rte_thread_register() < 0)
		return PD_ERR(rte_errno, "conntrack: cannot give this thread an "
			      "lcore id: %s", rte_strerror(rte_errno));
	return 0;
}

static int ct_dq_create(struct pd_ct *c, struct rte_rcu_qsbr *qs)
{
	struct rte_rcu_qsbr_dq_parameters dp;
	char name[RTE_RCU_QSBR_DQ_NAMESIZE];

	snprintf(name, sizeof(name), "pdctq%u",
		 __atomic_fetch_add(&ct_seq, 1, __ATOMIC_RELAXED));
	memset(&dp, 0, sizeof(dp));
	dp.name = name;
	dp.flags = RTE_RCU_QSBR_DQ_MT_UNSAFE;    /* ctl serialises */
	dp.size = c->n_slots;                    /* never full */
	dp.esize = sizeof(uint32_t);
	dp.trigger_reclaim_limit = CT_RECLAIM_BATCH;
	dp.max_reclaim_size = CT_RECLAIM_BATCH;
	dp.free_fn = ct_slot_free;
	dp.p = c;
	dp.v = qs;
	c->dq = rte_rcu_qsbr_dq_create(&dp);
	if (!c->dq)
		return PD_ERR(rte_errno ? rte_errno : ENOMEM, "conntrack: cannot "
			      "create the RCU defer queue: %s",
			      rte_strerror(rte_errno));
	return 0;
}

/* Hand slot element `pos` (key already deleted; CT_NODEC: not counted in
 * `used`) to the grace period. */
static void ct_defer(struct pd_pipeline *p, struct pd_ct *c, uint32_t pos)
{
	if (!(pos & CT_NODEC))
		__atomic_store_n(&c->pending, c->pending + 1, __ATOMIC_RELAXED);
	if (!c->dq) {
		/* not built: no worker ever ran, nobody can hold the slot */
		ct_slot_free(c, &pos, 1);
		return;
	}
	if (rte_rcu_qsbr_dq_enqueue(c->dq, &pos) != 0) {
		/* cannot happen (the queue holds every slot); still correct */
		rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
		ct_slot_free(c, &pos, 1);
	}
}

static void ct_reclaim(struct pd_ct *c)
{
	if (c->dq)
		rte_rcu_qsbr_dq_reclaim(c->dq, UINT32_MAX, NULL, NULL, NULL);
}

static void ct_rec_fill(const struct pd_ct *c, const struct pd_flow *f,
			uint32_t i, union pd_flow_word v, uint64_t now,
			uint64_t hz, struct pd_flow_rec *r);

/* Slots the workers took out (evicted flows, orphaned aliases) go to the
 * grace period like expired ones. Returns how many. */
static unsigned ct_drain_evq(struct pd_pipeline *p, struct pd_ct *c)
{
	uint32_t e[64];
	unsigned n, i, total = 0;

	while ((n = rte_ring_sc_dequeue_burst_elem(c->evq, e, sizeof(e[0]),
						   RTE_DIM(e), NULL)) > 0) {
		for (i = 0; i < n; i++)
			ct_defer(p, c, e[i]);
		total += n;
	}
	return total;
}

int pd_conntrack_expire(struct pd_pipeline *p, int stage, unsigned max_scan)
{
	return pd_conntrack_expire_log(p, stage, max_scan, NULL, 0, NULL);
}

int pd_conntrack_expire_log(struct pd_pipeline *p, int stage, unsigned max_scan,
			    struct pd_flow_rec *out, unsigned max,
			    unsigned *n_out)
{
	struct pd_ct *c = ct_get(p, stage, true);
	uint64_t hz = rte_get_tsc_hz();
	unsigned n_rec = 0;
	uint64_t now;
	unsigned k, n, drained;
	int rc, expired = 0;

	if (!c)
		return -EINVAL;
	if ((rc = ct_ctl_thread()) < 0)
		return rc;
	pthread_mutex_lock(&c->ctl);
	if (!c->dq && p->qs && (rc = ct_dq_create(c, p->qs)) < 0)
		goto out;
	ct_reclaim(c);
	drained = ct_drain_evq(p, c);
	now = rte_rdtsc();
	n = (max_scan == 0 || max_scan > c->n_slots) ? c->n_slots : max_scan;
	for (k = 0; k < n; k++) {
		uint32_t i = c->cursor;
		struct pd_flow *f = &c->flows[i];
		union pd_flow_word v;
		uint32_t alias_pos;
		uint64_t last;

		if (++c->cursor == c->n_slots)
			c->cursor = 0;
		v = ct_word(f);
		if (!pd_ct_live(v.state) || (v.flags & PD_FLOW_BUSY))
			continue;
		last = __atomic_load_n(&f->last_tsc, __ATOMIC_RELAXED);
		if (now < last || now - last <
		    c->timeout_tsc[ct_timeout_idx(f->proto, v.state)])
			continue;
		/* -EAGAIN: it just moved, look again next time; -EIO: the
		 * key is not at this slot: never free a slot we cannot
		 * account for, it stays DEAD (lost, logged) */
		rc = ct_kill(c, i, v, &alias_pos);
		if (alias_pos != UINT32_MAX)
			ct_defer(p, c, alias_pos | CT_NODEC);
		if (rc < 0)
			continue;
		/* the flow log's end record: the flow as it was deleted */
		if (out && n_rec < max)
			ct_rec_fill(c, f, i, v, now, hz, &out[n_rec++]);
		ct_defer(p, c, i);
		expired++;
		if (out && n_rec >= max)
			break;       /* the caller's buffer is full: next call */
	}
	/* One grace period, as pd_rcu_swap waits: when this returns, every
	 * slot freed here can take a new flow. Only this thread waits (about
	 * one worker loop; nothing if the workers are stopped). */
	if ((c->pending || drained) && p->qs) {
		rte_rcu_qsbr_synchronize(p->qs, RTE_QSBR_THRID_INVALID);
		ct_reclaim(c);
	}
	rc = expired;
out:
	pthread_mutex_unlock(&c->ctl);
	if (n_out)
		*n_out = n_rec;
	return rc;
}

/* The three states the first flow table showed (pd_flow_rec.state). */
static uint8_t ct_coarse_state(uint8_t st)
{
	switch (st) {
	case PD_CT_SYN_RECV:
		return PD_CT_ESTABLISHED;
	case PD_CT_FIN_WAIT:
	case PD_CT_TIME_WAIT:
		return PD_CT_CLOSING;
	default:
		return st;
	}
}

/* The translated tuple, towards the backend: the alias's, reversed. */
static void ct_dump_nat(const struct pd_ct *c, const struct pd_flow *f,
			struct pd_flow_rec *r)
{
	uint32_t a = __atomic_load_n(&f->alias, __ATOMIC_ACQUIRE);
	const struct pd_flow *e;
	union pd_flow_word v;

	memset(r->nat_src, 0, 16);
	memset(r->nat_dst, 0, 16);
	r->nat_sport = r->nat_dport = 0;
	if (!a || a > c->n_slots)
		return;
	e = &c->flows[a - 1];
	v = ct_word(e);
	if (v.state != PD_CT_ALIAS || (v.flags & PD_FLOW_BUSY))
		return;
	memcpy(r->nat_src, e->dst, 16);
	memcpy(r->nat_dst, e->src, 16);
	r->nat_sport = rte_be_to_cpu_16(e->dport);
	r->nat_dport = rte_be_to_cpu_16(e->sport);
}

/* One flow as a pd_flow_rec, with the state word `v` read before. */
static void ct_rec_fill(const struct pd_ct *c, const struct pd_flow *f,
			uint32_t i, union pd_flow_word v, uint64_t now,
			uint64_t hz, struct pd_flow_rec *r)
{
	uint64_t first = f->first_tsc;
	uint64_t last = __atomic_load_n(&f->last_tsc, __ATOMIC_RELAXED);

	r->family = f->family;
	r->proto = f->proto;
	r->sport = rte_be_to_cpu_16(f->sport);
	r->dport = rte_be_to_cpu_16(f->dport);
	memcpy(r->src, f->src, 16);
	memcpy(r->dst, f->dst, 16);
	r->index = i;
	r->packets_orig = __atomic_load_n(&f->packets[0], __ATOMIC_RELAXED);
	r->packets_reply = __atomic_load_n(&f->packets[1], __ATOMIC_RELAXED);
	r->bytes_orig = __atomic_load_n(&f->bytes[0], __ATOMIC_RELAXED);
	r->bytes_reply = __atomic_load_n(&f->bytes[1], __ATOMIC_RELAXED);
	r->age_ms = now > first ? ct_tsc_to_ms(now - first, hz) : 0;
	r->idle_ms = now > last ? ct_tsc_to_ms(now - last, hz) : 0;
	r->lb = __atomic_load_n(&f->lb, __ATOMIC_ACQUIRE);
	ct_dump_nat(c, f, r);
	r->tcp_state = v.state;
	r->state = ct_coarse_state(v.state);
	r->tag = v.tag;
}

int pd_conntrack_dump(struct pd_pipeline *p, int stage, struct pd_flow_rec *out,
		      unsigned max)
{
	struct pd_ct *c = ct_get(p, stage, true);
	uint64_t now, hz = rte_get_tsc_hz();
	unsigned k = 0;
	uint32_t i;

	if (!c)
		return -EINVAL;
	if (!out && max)
		return PD_ERR(EINVAL, "conntrack dump: no output buffer");
	now = rte_rdtsc();
	for (i = 0; i < c->n_slots && k < max; i++) {
		const struct pd_flow *f = &c->flows[i];
		struct pd_flow_rec *r = &out[k];
		union pd_flow_word v = ct_word(f), v2;

		if (!pd_ct_live(v.state) || (v.flags & PD_FLOW_BUSY))
			continue;
		ct_rec_fill(c, f, i, v, now, hz, r);
		/* seqlock-style: keep the record only if the slot still holds
		 * the same flow after the copy */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		v2 = ct_word(f);
		if (v2.gen != v.gen || !pd_ct_live(v2.state) ||
		    (v2.flags & PD_FLOW_BUSY))
			continue;
		r->tcp_state = v2.state;
		r->state = ct_coarse_state(v2.state);
		r->tag = v2.tag;
		k++;
	}
	return (int)k;
}

int pd_conntrack_count(struct pd_pipeline *p, int stage)
{
	struct pd_ct *c = ct_get(p, stage, true);
	uint32_t used, pending;

	if (!c)
		return -EINVAL;
	used = __atomic_load_n(&c->used, __ATOMIC_ACQUIRE);
	pending = __atomic_load_n(&c->pending, __ATOMIC_RELAXED);
	return used > pending ? (int)(used - pending) : 0;
}

static int ct_init(struct pd_stage *st)
{
	struct pd_ct *c = st->priv;
	int rc = pthread_mutex_init(&c->ctl, NULL);

	if (rc)
		return PD_ERR(rc, "stage '%s': cannot create its mutex", st->name);
	return 0;
}

static void ct_fini(struct pd_stage *st)
{
	struct pd_ct *c = st->priv;

	ct_table_free(c);
	pthread_mutex_destroy(&c->ctl);
}

const struct pd_stage_ops pd_stage_conntrack = {
	.type = "conntrack",
	.edges = ct_edges,
	.drops = ct_drops,
	.extra = ct_extra,
	.needs_next = true,
	.priv_size = sizeof(struct pd_ct),
	.init = ct_init,
	.fini = ct_fini,
	.process = ct_process,
};
