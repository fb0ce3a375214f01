#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# run.sh - build graph_bench, make the input pcaps, run the comparison.
#
#   bash benchmarks/graph_compare/run.sh [WHAT] [SECS] [ROUNDS]
#
# WHAT: huge | nohuge | both (default) - the main table under hugepages
#       (1024 x 2 MiB reserved, hugetlbfs at /dev/hugepages) and/or
#       --no-huge -m 1024;
#       burst - rte_graph with its rx burst at 32/64/128/256 (hugepages);
#       mixed - the main modes on a pcap where 1 packet in 10 has a bad
#       IPv4 checksum (parse drops it: mixed per-packet verdicts);
#       cache - burst 32 against 256 with the mempool cache at 512
#       instead of pydp's default 256 (hugepages).
# SECS per run (default 10), ROUNDS (default 3). Needs root and scapy.
# Tables go to stdout and build/results-WHAT.txt.
# MODES overrides the mode list of huge/nohuge/both.
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

# 10,000 UDP flows (source address and port vary), 64-byte frames on the
# wire: 60 bytes in the pcap, FCS not included (RFC 2544, as pydp.bench).
# $2 = N > 0: every Nth packet gets a bad IPv4 checksum.
mkpcap() {
	[ -s "$1" ] || python3 - "$1" "$2" <<'PY'
import sys
from scapy.all import Ether, IP, UDP, Raw, wrpcap
bad = int(sys.argv[2])
pkts = []
for i in range(10000):
    p = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
         / IP(src=f"172.16.{i >> 8}.{i & 255}", dst="10.0.2.1", ttl=64,
              chksum=0x1234 if bad and i % bad == bad - 1 else None)
         / UDP(sport=1024 + i, dport=5001))
    p = p / Raw(b"\x00" * (60 - len(p)))
    assert len(p) == 60
    pkts.append(p)
wrpcap(sys.argv[1], pkts)
PY
}
mkpcap "$pcap" 0

eal=(-l 0,1 --log-level=4 --no-pci
	--vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1"
	--vdev "net_null0,no-rx=1")
huge=(--file-prefix graphbench)
app=()

run() {
	local name=$1 m=$2
	shift 2
	echo "=== $name: $bin ${eal[*]} $* -- --secs $secs --rounds $rounds --modes $m ${app[*]}"
	"$bin" "${eal[@]}" "$@" -- --secs "$secs" --rounds "$rounds" --modes "$m" \
		"${app[@]}" | tee "$out/results-$name.txt"
}

case $what in
huge | both | burst | mixed | cache)
	echo 1024 >/proc/sys/vm/nr_hugepages
	;;
esac
case $what in
huge | both)
	run huge "$modes" "${huge[@]}"
	;;&
nohuge | both)
	run nohuge "$modes" --no-huge -m 1024
	;;
burst)
	run burst bare,graph32,graph64,graph128,graph256,graph "${huge[@]}"
	;;
mixed)
	mkpcap "$out/flows10k-64B-10pct-bad.pcap" 10
	eal[5]="net_pcap0,rx_pcap=$out/flows10k-64B-10pct-bad.pcap,infinite_rx=1"
	run mixed bare,array,array-min,graph,graph32 "${huge[@]}"
	;;
cache)
	app=(--pool-cache 512)
	run cache bare,array,graph32,graph256,graph "${huge[@]}"
	;;
huge) ;;
*)
	echo "usage: $0 [huge|nohuge|both|burst|mixed|cache] [SECS] [ROUNDS]" >&2
	exit 2
	;;
esac
