/* SPDX-License-Identifier: BSD-3-Clause
 * forward.h - the forward stage: send every packet out of one port,
 * rewriting the source MAC (default: the port's own; or kept) and, if set, the
 * destination MAC. Terminal: it has no next edge.
 */
#ifndef PD_STAGE_FORWARD_H
#define PD_STAGE_FORWARD_H
#include "stages.h"
#endif
