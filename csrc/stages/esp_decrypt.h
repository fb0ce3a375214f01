/* SPDX-License-Identifier: BSD-3-Clause
 * esp_decrypt.h - the inbound ESP stage (see esp_decrypt.c, esp_sa.h).
 */
#ifndef PD_STAGE_ESP_DECRYPT_H
#define PD_STAGE_ESP_DECRYPT_H
#include "stages.h"
#endif
