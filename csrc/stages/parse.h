/* SPDX-License-Identifier: BSD-3-Clause
 * parse.h - the parse stage: L2 to L4 header walk into struct pd_meta.
 * Edges: next (default), ipv4, ipv6, arp, other. Each unset edge uses next.
 */
#ifndef PD_STAGE_PARSE_H
#define PD_STAGE_PARSE_H
#include "stages.h"

enum pd_parse_edge {
	PD_PARSE_NEXT = 0, PD_PARSE_IPV4, PD_PARSE_IPV6, PD_PARSE_ARP,
	PD_PARSE_OTHER,
};
#endif
