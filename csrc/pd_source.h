/* SPDX-License-Identifier: BSD-3-Clause
 * pd_source.h - the template traffic source (TRex-style): templates built
 * by scapy in Python, per-packet field variation in C at full speed.
 */
#ifndef PD_SOURCE_H
#define PD_SOURCE_H
#include "pd_internal.h"
#endif
