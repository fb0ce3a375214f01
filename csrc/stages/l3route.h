/* SPDX-License-Identifier: BSD-3-Clause
 * l3route.h - the l3route stage: longest-prefix match for IPv4 (rte_lpm)
 * and IPv6 (rte_lpm6). A next hop names a port and the MACs to write. TTL /
 * hop limit is decremented (IPv4 checksum updated incrementally, RFC 1624);
 * a packet that would expire is dropped as ttl-exceeded. Needs parse first.
 * The whole table set is rebuilt and swapped under RCU on every commit.
 */
#ifndef PD_STAGE_L3ROUTE_H
#define PD_STAGE_L3ROUTE_H
#include "stages.h"
#endif
