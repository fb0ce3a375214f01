/* SPDX-License-Identifier: BSD-3-Clause
 * pd_error.c - the last error message of the calling thread.
 */
#include <stdarg.h>
#include <stdio.h>

#include "pd_internal.h"

static __thread char pd_errbuf[512];

int pd_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(pd_errbuf, sizeof(pd_errbuf), fmt, ap);
	va_end(ap);
	return err > 0 ? -err : err;
}

const char *pd_last_error(void)
{
	return pd_errbuf;
}
