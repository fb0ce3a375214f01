#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# run.sh - build and run aead_floor.c (see its header): per-message AEAD cost
# of each crypto library here against `openssl speed -evp`'s update loop.
#   bash benchmarks/aead_floor/run.sh [--json]
# libsodium and libgcrypt rows are -1 when their -dev packages are missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OUT:-$here/build}
mkdir -p "$out"
libs="-lIPSec_MB -lcrypto"
[ -e /usr/include/sodium.h ] && libs="$libs -lsodium"
[ -e /usr/include/gcrypt.h ] && libs="$libs -lgcrypt"
# shellcheck disable=SC2086
${CC:-cc} -O2 -Wall -Wextra -Werror -o "$out/aead_floor" "$here/aead_floor.c" $libs
exec "$out/aead_floor" "$@"
