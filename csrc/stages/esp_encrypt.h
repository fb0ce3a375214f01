/* SPDX-License-Identifier: BSD-3-Clause
 * esp_encrypt.h - the outbound ESP stage (see esp_encrypt.c, esp_sa.h).
 */
#ifndef PD_STAGE_ESP_ENCRYPT_H
#define PD_STAGE_ESP_ENCRYPT_H
#include "stages.h"
#endif
