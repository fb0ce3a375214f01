/* SPDX-License-Identifier: BSD-3-Clause
 * count.h - the count stage: counts packets and bytes, passes them on.
 */
#ifndef PD_STAGE_COUNT_H
#define PD_STAGE_COUNT_H
#include "stages.h"
#endif
