#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# build.sh - build graph_bench: graph_bench.c + pydp's C core (csrc/, the
# real runner, parse and forward stages), linked against DPDK, rte_graph and
# rte_node (+ net_ring and bus_vdev, which pydp's pd_port.c uses).
#
#   bash benchmarks/graph_compare/build.sh   (-> build/graph_bench beside it)
#
# Environment: CC (default cc), OUT (output dir, default build/ beside this file)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/build}
mkdir -p "$out"
cc=${CC:-cc}
# the core's own flags (meson.build: warning_level=2, -Wshadow, -Wpointer-arith)
"$cc" -O3 -g -std=gnu11 -Wall -Wextra -Wshadow -Wpointer-arith -Werror \
	-DALLOW_EXPERIMENTAL_API -I"$root/csrc" \
	$(pkg-config --cflags libdpdk) \
	"$here/graph_bench.c" "$root"/csrc/*.c "$root"/csrc/stages/*.c \
	-o "$out/graph_bench" \
	$(pkg-config --libs libdpdk) -lrte_graph -lrte_node -lrte_net_ring -lrte_bus_vdev -lpcap
echo "$out/graph_bench"
