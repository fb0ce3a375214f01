#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# run.sh - build graph_bench, make the input pcap, run the comparison.
#
#   bash benchmarks/graph_compare/run.sh [huge|nohuge|both] [SECS] [ROUNDS]
#
# Defaults: both, 10 s per run, 3 rounds. Needs root (hugepages), scapy.
# "huge" reserves 1024 x 2 MiB hugepages (hugetlbfs at /dev/hugepages).
# Output: a table per memory mode on stdout, also kept in build/results-*.txt.
# MODES overrides the mode list (default bare,array,array-min,graph,graph32,graph256,graph32-nostats).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
what=${1:-both}
secs=${2:-10}
rounds=${3:-3}
modes=${MODES:-bare,array,array-min,graph,graph32,graph256,graph32-nostats}
out=$here/build
bin=$out/graph_bench
pcap=$out/flows10k-64B.pcap

bash "$here/build.sh" >/dev/null

if [ ! -s "$pcap" ]; then
	# 10,000 UDP flows (source address and port vary), 64-byte frames on the
	# wire: 60 bytes in the pcap, the FCS not included (RFC 2544, as pydp.bench)
	python3 - "$pcap" <<'PY'
import sys
from scapy.all import Ether, IP, UDP, Raw, wrpcap
pkts = []
for i in range(10000):
    p = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
         / IP(src=f"172.16.{i >> 8}.{i & 255}", dst="10.0.2.1", ttl=64)
         / UDP(sport=1024 + i, dport=5001))
    p = p / Raw(b"\x00" * (60 - len(p)))
    assert len(p) == 60
    pkts.append(p)
wrpcap(sys.argv[1], pkts)
PY
fi

eal=(-l 0,1 --log-level=4 --no-pci
	--vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1"
	--vdev "net_null0,no-rx=1")

run() {
	local name=$1
	shift
	echo "=== $name: $bin ${eal[*]} $* -- --secs $secs --rounds $rounds --modes $modes"
	"$bin" "${eal[@]}" "$@" -- --secs "$secs" --rounds "$rounds" --modes "$modes" |
		tee "$out/results-$name.txt"
}

case $what in
huge | both)
	echo 1024 >/proc/sys/vm/nr_hugepages
	run huge --file-prefix graphbench
	;;
esac
case $what in
nohuge | both)
	run nohuge --no-huge -m 1024
	;;
esac
