/* SPDX-License-Identifier: BSD-3-Clause
 * policy.h - the policy stage: zero-trust allow/deny on the 5-tuple,
 * compiled to rte_acl and published with RCU. Needs parse first.
 *
 * Edges: next (allowed), other (not IPv4/IPv6: ARP, LLDP...; defaults to
 * next, so a firewall never drops ARP silently: link `other` to a drop
 * stage to refuse it). Drops: policy-deny (a deny rule matched),
 * default-deny (no rule matched and the default is deny, or no policy was
 * committed yet), revoked (a packet of a flow a later commit no longer
 * allows), flow-table-full and conntrack-error (see below). Extra
 * counters: stateful (passed as part of a flow conntrack already knows),
 * default-allow (no rule matched, passed by default_allow).
 *
 * Rules (struct pd_acl_rule in pd_api.h): the highest priority wins; on a
 * tie deny wins (internal priority = 2 * priority + 1 + is_deny). Among
 * rules of the same priority and action the verdict is the same but which
 * rule id is counted is up to rte_acl. Address bits past the depth are
 * ignored. Ports are read for TCP, UDP and SCTP packets that carry their
 * header (unfragmented, or a first fragment); for anything else (ICMP,
 * later fragments, no L4 header) they are 0, so only a rule whose port
 * ranges include 0 matches such a packet.
 *
 * A commit builds a complete table aside: the policy's prefixes numbered
 * as address classes (a prefix tree in pre-order: a prefix's subtree is an
 * interval), prefix tables mapping an address to its class (rte_lpm,
 * rte_lpm6), the rules merged over adjacent class intervals, one rte_acl
 * context per family (IPv4 keeps addresses when the merge does not halve
 * its rules), and per-worker rows of per-rule-id packet and byte counters.
 * See policy.c for the measurements behind this. The verdict of a match is
 * encoded in the ACL userdata itself ((id << 1 | allow) + 1). On any error
 * the old table stays in force. Counters belong to a table: a commit starts
 * a new generation from zero. After the publish the commit re-checks every
 * live flow of the linked conntrack stage against the new table and marks
 * the ones it no longer allows REVOKED (see pol_revalidate).
 *
 * Stateful link to conntrack (optional, pd_policy_config): conntrack runs
 * before policy and sets pd_meta(m)->aux = flow index + 1 for packets of
 * known flows. Such packets pass without an ACL lookup. A new packet the
 * policy allows is confirmed into the flow table with
 * pd_conntrack_confirm(ct, w, m, tag), tag = the rule id, or
 * PD_POLICY_TAG_DEFAULT when it passed by default_allow; -ENOSPC drops it as
 * flow-table-full, any other error as conntrack-error. The two conntrack
 * functions are weak references: when conntrack.c is not linked in,
 * pd_policy_config(..., conntrack_stage >= 0) fails with -ENOTSUP and the
 * stage runs stateless. Two rules the C link cannot check, and
 * pydp.stages.Policy does: every path into the policy stage passes the
 * conntrack stage (else aux is stale), and conntrack runs in confirm mode
 * (in auto mode it creates a flow for every first packet, which would then
 * pass here as a known flow).
 */
#ifndef PD_STAGE_POLICY_H
#define PD_STAGE_POLICY_H
#include "stages.h"

/* conntrack tag of a flow passed by the default policy (no rule matched) */
#define PD_POLICY_TAG_DEFAULT UINT32_MAX
/* conntrack tag of a flow a later commit no longer allows (its packets are
 * dropped as "revoked" until a commit allows it again) */
#define PD_POLICY_TAG_REVOKED (UINT32_MAX - 1)

enum pd_policy_edge { PD_POLICY_NEXT = 0, PD_POLICY_OTHER };
#endif
