/* SPDX-License-Identifier: BSD-3-Clause
 * pd_port.c - ports opened from DPDK devargs, with hotplug.
 *
 * Any devargs DPDK accepts are probed with rte_dev_probe(): a PCI address of
 * a NIC bound to vfio-pci/uio, or a vdev (net_null, net_pcap, net_af_packet,
 * net_tap, net_memif...). net_ring ports are made with rte_eth_from_rings()
 * on rings this file owns, one rx and one tx ring per queue, so Python can
 * inject packets "as if received" and capture what the port transmits.
 * A plain `net_ringX` devargs therefore gives a real net_ring PMD port whose
 * rings we can reach; `net_ringX,queues=N` asks for N queue pairs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ring.h>

#include "pd_internal.h"

#define PD_RING_SIZE 16384

struct pd_ring_port {
	uint16_t n;
	struct rte_ring *rx[PD_MAX_RXQ];
	struct rte_ring *tx[PD_MAX_RXQ];
};

static struct pd_ring_port *ring_ports[RTE_MAX_ETHPORTS];
static unsigned ring_seq;

static int port_check(uint16_t port_id)
{
	if (!pd_eal_ready())
		return PD_ERR(ENODEV, "EAL is not running");
	if (!rte_eth_dev_is_valid_port(port_id))
		return PD_ERR(ENODEV, "port %u does not exist", port_id);
	return 0;
}

static void ring_port_free(struct pd_ring_port *rp)
{
	unsigned q;

	if (!rp)
		return;
	for (q = 0; q < rp->n; q++) {
		struct rte_mbuf *m;

		/* free whatever is still queued so no mbuf leaks */
		while (rp->rx[q] && rte_ring_dequeue(rp->rx[q], (void **)&m) == 0)
			rte_pktmbuf_free(m);
		while (rp->tx[q] && rte_ring_dequeue(rp->tx[q], (void **)&m) == 0)
			rte_pktmbuf_free(m);
		rte_ring_free(rp->rx[q]);
		rte_ring_free(rp->tx[q]);
	}
	free(rp);
}

static int probe_ring(const char *devargs, uint16_t *port_id)
{
	char name[PD_NAME_LEN];
	const char *comma = strchr(devargs, ',');
	unsigned nq = 1, q;
	struct pd_ring_port *rp;
	int rc;
	size_t len = comma ? (size_t)(comma - devargs) : strlen(devargs);

	if (len >= sizeof(name))
		return PD_ERR(EINVAL, "devargs '%s': device name too long", devargs);
	memcpy(name, devargs, len);
	name[len] = '\0';
	if (comma) {
		char *end;
		unsigned long v;

		if (strncmp(comma + 1, "queues=", 7) != 0)
			return PD_ERR(EINVAL, "devargs '%s': net_ring takes only "
				      "'queues=N' (got '%s')", devargs, comma + 1);
		v = strtoul(comma + 8, &end, 10);
		if (*end != '\0' || v < 1 || v > PD_MAX_RXQ)
			return PD_ERR(EINVAL, "devargs '%s': queues must be 1..%d",
				      devargs, PD_MAX_RXQ);
		nq = (unsigned)v;
	}
	if (rte_eth_dev_get_port_by_name(name, port_id) == 0)
		return PD_ERR(EEXIST, "port '%s' is already open", name);
	rp = calloc(1, sizeof(*rp));
	if (!rp)
		return PD_ERR(ENOMEM, "out of memory");
	rp->n = (uint16_t)nq;
	for (q = 0; q < nq; q++) {
		char rn[RTE_RING_NAMESIZE];

		snprintf(rn, sizeof(rn), "pdr%u", ring_seq++);
		rp->rx[q] = rte_ring_create(rn, PD_RING_SIZE, (int)rte_socket_id(),
					    RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(rn, sizeof(rn), "pdr%u", ring_seq++);
		rp->tx[q] = rte_ring_create(rn, PD_RING_SIZE, (int)rte_socket_id(),
					    RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!rp->rx[q] || !rp->tx[q]) {
			rc = PD_ERR(rte_errno, "devargs '%s': cannot create rings: %s",
				    devargs, rte_strerror(rte_errno));
			ring_port_free(rp);
			return rc;
		}
	}
	rc = rte_eth_from_rings(name, rp->rx, nq, rp->tx, nq, rte_socket_id());
	if (rc < 0) {
		rc = PD_ERR(rte_errno, "devargs '%s': net_ring failed: %s", devargs,
			    rte_strerror(rte_errno));
		ring_port_free(rp);
		return rc;
	}
	*port_id = (uint16_t)rc;
	ring_ports[*port_id] = rp;
	return 0;
}

int pd_port_probe(const char *devargs, uint16_t *port_id)
{
	char name[RTE_DEV_NAME_MAX_LEN];
	struct rte_devargs da;
	int rc;

	if (!pd_eal_ready())
		return PD_ERR(ENODEV, "EAL is not running");
	if (!devargs || !*devargs)
		return PD_ERR(EINVAL, "empty devargs");
	if (strncmp(devargs, "net_ring", 8) == 0 && !strstr(devargs, "nodeaction"))
		return probe_ring(devargs, port_id);

	memset(&da, 0, sizeof(da));
	rc = rte_devargs_parse(&da, devargs);
	if (rc < 0)
		return PD_ERR(EINVAL, "devargs '%s' cannot be parsed: %s", devargs,
			      rte_strerror(-rc));
	snprintf(name, sizeof(name), "%s", da.name);
	rte_devargs_reset(&da);

	if (rte_eth_dev_get_port_by_name(name, port_id) == 0)
		return PD_ERR(EEXIST, "port '%s' is already open", name);
	rc = rte_dev_probe(devargs);
	if (rc < 0 && rc != -EEXIST)
		return PD_ERR(-rc, "devargs '%s': probe failed: %s (check the "
			      "driver name and its arguments)", devargs,
			      rte_strerror(-rc));
	if (rte_eth_dev_get_port_by_name(name, port_id) != 0) {
		/* a PCI name may be spelt without the domain */
		uint16_t pid;

		RTE_ETH_FOREACH_DEV(pid) {
			struct rte_eth_dev_info info;

			if (rte_eth_dev_info_get(pid, &info) == 0 &&
			    strstr(rte_dev_name(info.device), name)) {
				*port_id = pid;
				return 0;
			}
		}
		return PD_ERR(ENODEV, "devargs '%s': probed but no ethdev port "
			      "named '%s' appeared (not a network device?)",
			      devargs, name);
	}
	return 0;
}

int pd_port_configure(uint16_t port_id, const struct pd_port_conf *c,
		      struct pd_pool *pool)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	uint16_t nrx = c->rx_desc, ntx = c->tx_desc, q;
	int rc, sock;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_dev_info_get(port_id, &info);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: cannot read device info", port_id);
	if (c->n_rxq < 1 || c->n_rxq > info.max_rx_queues)
		return PD_ERR(EINVAL, "port %u (%s): %u rx queues requested, the "
			      "device supports 1..%u", port_id, info.driver_name,
			      c->n_rxq, info.max_rx_queues);
	if (c->n_txq < 1 || c->n_txq > info.max_tx_queues)
		return PD_ERR(EINVAL, "port %u (%s): %u tx queues requested, the "
			      "device supports 1..%u", port_id, info.driver_name,
			      c->n_txq, info.max_tx_queues);
	memset(&conf, 0, sizeof(conf));
	if (c->n_rxq > 1 && info.flow_type_rss_offloads) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads &
			(RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
	}
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
	rc = rte_eth_dev_configure(port_id, c->n_rxq, c->n_txq, &conf);
	if (rc < 0)
		return PD_ERR(-rc, "port %u (%s): configure failed: %s", port_id,
			      info.driver_name, rte_strerror(-rc));
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &nrx, &ntx);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: descriptor counts rejected", port_id);
	sock = rte_eth_dev_socket_id(port_id);
	if (sock < 0)
		sock = (int)rte_socket_id();
	for (q = 0; q < c->n_rxq; q++) {
		rc = rte_eth_rx_queue_setup(port_id, q, nrx, (unsigned)sock, NULL,
					    pd_pool_mp(pool));
		if (rc < 0)
			return PD_ERR(-rc, "port %u: rx queue %u setup failed: %s",
				      port_id, q, rte_strerror(-rc));
	}
	for (q = 0; q < c->n_txq; q++) {
		rc = rte_eth_tx_queue_setup(port_id, q, ntx, (unsigned)sock, NULL);
		if (rc < 0)
			return PD_ERR(-rc, "port %u: tx queue %u setup failed: %s",
				      port_id, q, rte_strerror(-rc));
	}
	if (c->promisc)
		rte_eth_promiscuous_enable(port_id);  /* not every PMD can */
	return 0;
}

int pd_port_start(uint16_t port_id)
{
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_dev_start(port_id);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: start failed: %s", port_id,
			      rte_strerror(-rc));
	return 0;
}

int pd_port_stop(uint16_t port_id)
{
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_dev_stop(port_id);
	if (rc < 0 && rc != -EBUSY)
		return PD_ERR(-rc, "port %u: stop failed: %s", port_id,
			      rte_strerror(-rc));
	return 0;
}

int pd_port_remove(uint16_t port_id)
{
	struct rte_eth_dev_info info;
	struct pd_ring_port *rp;
	char name[RTE_ETH_NAME_MAX_LEN];
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_dev_info_get(port_id, &info);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: cannot read device info", port_id);
	rte_eth_dev_get_name_by_port(port_id, name);
	rte_eth_dev_stop(port_id);
	rp = ring_ports[port_id];
	if (rp) {
		rte_eth_dev_close(port_id);
		rc = rte_vdev_uninit(name);
		ring_ports[port_id] = NULL;
		ring_port_free(rp);
	} else {
		rc = rte_dev_remove(info.device);
		if (rc < 0)   /* some PMDs want the port closed first */
			rc = rte_eth_dev_close(port_id);
	}
	if (rc < 0)
		return PD_ERR(-rc, "port %u (%s): remove failed: %s", port_id, name,
			      rte_strerror(-rc));
	return 0;
}

int pd_port_info(uint16_t port_id, struct pd_port_info *out)
{
	struct rte_eth_dev_info info;
	struct rte_eth_link link;
	struct rte_ether_addr mac;
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_dev_info_get(port_id, &info);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: cannot read device info", port_id);
	memset(out, 0, sizeof(*out));
	rte_eth_dev_get_name_by_port(port_id, out->name);
	snprintf(out->driver, sizeof(out->driver), "%s", info.driver_name);
	if (rte_eth_macaddr_get(port_id, &mac) == 0)
		memcpy(out->mac, mac.addr_bytes, 6);
	out->max_rxq = info.max_rx_queues;
	out->max_txq = info.max_tx_queues;
	out->n_rxq = info.nb_rx_queues;
	out->n_txq = info.nb_tx_queues;
	out->rss_offloads = info.flow_type_rss_offloads;
	if (rte_eth_link_get_nowait(port_id, &link) == 0) {
		out->link_up = link.link_status;
		out->link_speed = link.link_speed;
	}
	out->is_ring = ring_ports[port_id] != NULL;
	return 0;
}

int pd_port_hwstats(uint16_t port_id, struct pd_port_hwstats *out)
{
	struct rte_eth_stats st;
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	rc = rte_eth_stats_get(port_id, &st);
	if (rc < 0)
		return PD_ERR(-rc, "port %u: cannot read stats", port_id);
	out->ipackets = st.ipackets;
	out->opackets = st.opackets;
	out->ibytes = st.ibytes;
	out->obytes = st.obytes;
	out->imissed = st.imissed;
	out->ierrors = st.ierrors;
	out->oerrors = st.oerrors;
	out->rx_nombuf = st.rx_nombuf;
	return 0;
}

static int ring_queue(uint16_t port_id, uint16_t queue, struct pd_ring_port **rp)
{
	int rc;

	if ((rc = port_check(port_id)) < 0)
		return rc;
	*rp = ring_ports[port_id];
	if (!*rp)
		return PD_ERR(ENOTSUP, "port %u is not a net_ring port: inject and "
			      "capture need one (or use net_pcap files)", port_id);
	if (queue >= (*rp)->n)
		return PD_ERR(EINVAL, "port %u has %u queues, not %u", port_id,
			      (*rp)->n, queue + 1);
	return 0;
}

int pd_port_inject(uint16_t port_id, uint16_t queue, struct pd_pool *pool,
		   const uint8_t *data, const uint32_t *lens, unsigned n)
{
	struct rte_mbuf *pkts[PD_BURST];
	struct pd_ring_port *rp;
	unsigned done = 0, i, k, sent;
	size_t off = 0;
	int rc;

	if ((rc = ring_queue(port_id, queue, &rp)) < 0)
		return rc;
	for (i = 0; i < n; i++)
		if (lens[i] == 0 || lens[i] > (uint32_t)(rte_pktmbuf_data_room_size(
			pd_pool_mp(pool)) - RTE_PKTMBUF_HEADROOM))
			return PD_ERR(EINVAL, "packet %u: length %u does not fit one "
				      "mbuf", i, lens[i]);
	while (done < n) {
		unsigned b = RTE_MIN(n - done, (unsigned)PD_BURST);

		if (rte_pktmbuf_alloc_bulk(pd_pool_mp(pool), pkts, b) < 0)
			break;
		for (k = 0; k < b; k++) {
			uint32_t len = lens[done + k];
			char *p = rte_pktmbuf_append(pkts[k], (uint16_t)len);

			memcpy(p, data + off, len);
			off += len;
		}
		sent = rte_ring_enqueue_burst(rp->rx[queue], (void **)pkts, b, NULL);
		if (sent < b) {
			rte_pktmbuf_free_bulk(pkts + sent, b - sent);
			done += sent;
			break;
		}
		done += b;
	}
	return (int)done;
}

int pd_port_capture(uint16_t port_id, uint16_t queue, uint8_t *buf,
		    uint32_t slot, uint32_t *lens, unsigned max)
{
	struct rte_mbuf *pkts[PD_BURST];
	struct pd_ring_port *rp;
	unsigned got = 0, k, b;
	int rc;

	if ((rc = ring_queue(port_id, queue, &rp)) < 0)
		return rc;
	while (got < max) {
		b = rte_ring_dequeue_burst(rp->tx[queue], (void **)pkts,
					   RTE_MIN(max - got, (unsigned)PD_BURST), NULL);
		if (b == 0)
			break;
		for (k = 0; k < b; k++) {
			uint32_t len = rte_pktmbuf_pkt_len(pkts[k]);
			uint32_t cp = RTE_MIN(len, slot);
			const void *src = rte_pktmbuf_read(pkts[k], 0, cp,
							   buf + (size_t)(got + k) * slot);

			if (src != buf + (size_t)(got + k) * slot)
				memcpy(buf + (size_t)(got + k) * slot, src, cp);
			lens[got + k] = len;
		}
		rte_pktmbuf_free_bulk(pkts, b);
		got += b;
	}
	return (int)got;
}

int pd_port_pending(uint16_t port_id, int tx_side)
{
	struct pd_ring_port *rp;
	unsigned q, n = 0;
	int rc;

	if ((rc = ring_queue(port_id, 0, &rp)) < 0)
		return rc;
	for (q = 0; q < rp->n; q++)
		n += rte_ring_count(tx_side ? rp->tx[q] : rp->rx[q]);
	return (int)n;
}

int pd_port_count(void)
{
	return pd_eal_ready() ? rte_eth_dev_count_avail() : 0;
}
