/* SPDX-License-Identifier: BSD-3-Clause
 * drop.h - the drop stage: every packet is dropped with reason "drop-stage".
 */
#ifndef PD_STAGE_DROP_H
#define PD_STAGE_DROP_H
#include "stages.h"
#endif
