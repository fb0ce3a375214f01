#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# run.sh - build the parser fuzzer and run it for a bounded time (CI).
#
#   bash fuzz/run.sh [SECONDS]        (default 60)
#
# Builds fuzz/fuzz_parse.c + csrc/stages/parse.c + csrc/pd_error.c with
# clang's libFuzzer, ASan and UBSan (no EAL, no meson), seeds a corpus with
# fuzz/corpus.py (scapy) and fuzzes for SECONDS. Exits non-zero if libFuzzer
# finds a crash, a sanitizer report, an invariant violation, a timeout or an
# OOM; the reproducer's path is printed (reproduce with: $BIN <file>).
#
# Environment:
#   FUZZ_OUT   output directory (default: a new mktemp -d directory); holds
#              the binary, corpus/, seeds/, artifacts/ and fuzz.log
#   CC         compiler (default: clang)
#   PYTHON     python with scapy (default: python3)
#   FUZZ_ARGS  extra libFuzzer arguments
# Installs nothing.
set -euo pipefail

secs=${1:-60}
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cc=${CC:-clang}
py=${PYTHON:-python3}

die() {
	echo "fuzz/run.sh: error: $*" >&2
	exit 2
}

command -v "$cc" >/dev/null 2>&1 ||
	die "'$cc' not found: libFuzzer needs clang (Debian: apt-get install clang libclang-rt-dev, or set CC)"
"$cc" --version 2>/dev/null | grep -qi clang ||
	die "'$cc' is not clang: libFuzzer (-fsanitize=fuzzer) needs clang"
command -v pkg-config >/dev/null 2>&1 || die "pkg-config not found"
dpdk_cflags=$(pkg-config --cflags libdpdk 2>/dev/null) ||
	die "pkg-config cannot find libdpdk (DPDK development headers)"
command -v "$py" >/dev/null 2>&1 || die "'$py' not found"

out=${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/pydp-fuzz.XXXXXX")}
mkdir -p "$out/corpus" "$out/seeds" "$out/artifacts"
bin=$out/fuzz_parse
log=$out/fuzz.log
start=$(date +%s)

echo "== build $bin"
# Same warnings as the core build, so the harness stays -Werror clean.
"$cc" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-g -O1 -Wall -Wextra -Werror -DPD_FUZZ $dpdk_cflags \
	-I"$root/csrc" \
	"$here/fuzz_parse.c" "$root/csrc/stages/parse.c" "$root/csrc/pd_error.c" \
	-o "$bin" ||
	die "build failed (see the compiler output above; the libFuzzer runtime is in Debian's libclang-rt-dev)"

echo "== seed corpus $out/seeds"
"$py" "$here/corpus.py" "$out/seeds" || die "corpus generation failed (is scapy installed?)"

echo "== fuzz for ${secs}s (log: $log)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
# corpus/ first: new inputs go there, seeds/ is only read.
# shellcheck disable=SC2086
"$bin" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -seed=1 \
	-max_len=4096 -print_final_stats=1 \
	-artifact_prefix="$out/artifacts/" ${FUZZ_ARGS:-} \
	"$out/corpus" "$out/seeds" >"$log" 2>&1 || rc=$?

grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done [0-9]+ runs)' \
	"$log" || true
echo "== elapsed $(($(date +%s) - start))s, libFuzzer exit $rc"

mapfile -t found < <(find "$out/artifacts" -type f | sort)
if [ "$rc" -ne 0 ] || [ "${#found[@]}" -ne 0 ]; then
	echo "---- last 60 lines of $log" >&2
	tail -n 60 "$log" >&2
	echo "----" >&2
	echo "FUZZ FAILURE (exit $rc). Reproducer(s):" >&2
	for f in "${found[@]}"; do
		echo "  $f" >&2
	done
	echo "Reproduce: $bin <file>" >&2
	exit 1
fi
echo "OK: no crash in ${secs}s; output in $out"
