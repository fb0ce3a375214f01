#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# insn.sh - instructions per packet of pydp's worker loop, under callgrind.
#
#   bash benchmarks/graph_compare/insn.sh [MODES] [SECS]
#
# MODES: comma-separated graph_bench modes (default pdbare,array: pydp's own
# bare rx->tx loop, i.e. `pydp bench`'s baseline, and the parse+forward
# pipeline on pydp's runner). SECS: seconds per run under valgrind (default 2).
#
# Instruction counts do not move when another process shares the CPU, so
# they are the noise-free figure beside the cycles of `pydp bench` (this VM
# has no PMU: `perf stat -e instructions` reports "not supported"). For each
# mode, graph_bench runs once in a fresh child under callgrind with
# collection on only inside the worker function (worker_main, bare_main,
# mini_main), so EAL start-up and the main thread are not counted; the
# collected Ir divided by every packet the sink got in that run (txtotal,
# warm-up included) is the figure (--tries 1: under valgrind the worker
# rarely gets 90 % of a CPU, and one run per mode is all that is needed). --no-huge: valgrind and hugetlbfs do not
# mix well, and instructions do not depend on the page size.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modes=${1:-pdbare,array}
secs=${2:-2}
out=$here/build
bin=$out/graph_bench
pcap=$out/flows10k-64B.pcap
command -v valgrind >/dev/null || { echo "insn.sh: needs valgrind" >&2; exit 1; }

bash "$here/build.sh" >/dev/null
[ -s "$pcap" ] || python3 - "$pcap" <<'PY'
import sys
from scapy.all import Ether, IP, UDP, Raw, wrpcap
pkts = []
for i in range(10000):
    p = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
         / IP(src=f"172.16.{i >> 8}.{i & 255}", dst="10.0.2.1", ttl=64)
         / UDP(sport=1024 + i, dport=5001))
    pkts.append(p / Raw(b"\x00" * (60 - len(p))))
wrpcap(sys.argv[1], pkts)
PY

tmp=$(mktemp -d /tmp/pydp-insn.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
printf '%-10s %14s %11s %9s\n' mode Ir packets Ir/pkt
IFS=, read -r -a list <<<"$modes"
for m in "${list[@]}"; do
	valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
		--toggle-collect=worker_main --toggle-collect=bare_main \
		--toggle-collect=mini_main \
		"$bin" -l 0,1 --log-level=4 --no-pci --no-huge -m 1024 \
		--file-prefix pydpinsn \
		--vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1" \
		--vdev "net_null0,no-rx=1" \
		-- --secs "$secs" --warmup 0.5 --rounds 1 --tries 1 --modes "$m" \
		>"$tmp/out.txt" 2>"$tmp/err.txt" || { cat "$tmp/err.txt" >&2; exit 1; }
	pkts=$(awk -v m="$m" '$1 == m && $2 == 1 { print $NF; exit }' "$tmp/out.txt")
	# the child that ran the worker is the one profile with events in it
	ir=$(grep -h '^summary:' "$tmp"/cg.* | awk '{ if ($2 > max) max = $2 } END { print max }')
	printf '%-10s %14s %11s %9.1f\n' "$m" "$ir" "$pkts" "$(echo "$ir / $pkts" | bc -l)"
	rm -f "$tmp"/cg.*
done
