/* SPDX-License-Identifier: BSD-3-Clause
 * lb.h - the lb stage: service load balancing with DNAT, behind conntrack.
 *
 * A service is (VIP, port, protocol) -> backends with weights, one of three
 * algorithms each: smooth weighted round-robin (nginx's), weighted Maglev
 * (prime table, 65537 by default) and weighted least-connections (from the
 * live connection counts conntrack keeps with this stage's release hook).
 *
 * The first packet of a flow to a VIP picks a backend; its id goes in the
 * flow (pd_flow.lb) and the flow keeps it for its whole life, whatever
 * later commits change (weights, drain, remove). The stage then gives the
 * flow its reply-tuple entry in the conntrack table (pd_conntrack_alias),
 * so replies from the backend find the flow; every packet is translated
 * with incremental checksum updates (RFC 1624): DNAT (and SNAT) on the way
 * in, the reverse on the way back. Edge: next. Packets that are not for a
 * service, and replies of flows that are not translated, pass unchanged.
 *
 * Backend ids name an immutable (service, backend address, port, SNAT)
 * record in a pool: a commit keeps the id of every backend it keeps, and an
 * id is only freed when no table has it and no flow uses it.
 */
#ifndef PD_STAGE_LB_H
#define PD_STAGE_LB_H
#include "stages.h"

#define PD_LB_DEFAULT_TABLE 65537

#endif
