/* SPDX-License-Identifier: BSD-3-Clause
 * mirror.h - the mirror stage: a full copy of each packet goes out of one
 * port; the original goes on to next. A copy that cannot be made (pool
 * empty) is counted in copy_failed; the original is never harmed.
 */
#ifndef PD_STAGE_MIRROR_H
#define PD_STAGE_MIRROR_H
#include "stages.h"
#endif
