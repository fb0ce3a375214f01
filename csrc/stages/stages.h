/* SPDX-License-Identifier: BSD-3-Clause
 * stages.h - the stage types the runner knows. One file per stage.
 */
#ifndef PD_STAGES_H
#define PD_STAGES_H
#include "../pd_internal.h"

extern const struct pd_stage_ops pd_stage_parse;
extern const struct pd_stage_ops pd_stage_forward;
extern const struct pd_stage_ops pd_stage_l3route;
extern const struct pd_stage_ops pd_stage_count;
extern const struct pd_stage_ops pd_stage_mirror;
extern const struct pd_stage_ops pd_stage_drop;
extern const struct pd_stage_ops pd_stage_conntrack;
extern const struct pd_stage_ops pd_stage_policy;
extern const struct pd_stage_ops pd_stage_esp_encrypt;
extern const struct pd_stage_ops pd_stage_esp_decrypt;
extern const struct pd_stage_ops pd_stage_lb;

/* byte-wise big-endian reads: safe on any alignment (UBSan-clean) */
static inline uint16_t pd_rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* A 32-bit ones'-complement sum folded to 16 bits: two folds are enough
 * (0xffffffff -> 0x1fffe -> 0xffff). */
static inline uint16_t pd_cksum_fold(uint32_t s)
{
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)((s & 0xffff) + (s >> 16));
}

/* RFC 1624 incremental checksum update for a 16-bit field change */
static inline uint16_t pd_cksum_adjust(uint16_t cksum, uint16_t old_v,
				       uint16_t new_v)
{
	return (uint16_t)~pd_cksum_fold((uint16_t)~cksum + (uint16_t)~old_v + new_v);
}
#endif
