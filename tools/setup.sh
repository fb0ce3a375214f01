#!/usr/bin/env bash
# pydp's one entry point on a fresh Debian 12 machine (run as root):
#   tools/setup.sh demo   install what is missing, then run the demo
#   tools/setup.sh test   install what is missing, then run every check:
#                         ruff, the -Werror build, pytest, pytest again on an
#                         ASan+UBSan build of the core, and the parser fuzzer
#   tools/setup.sh install  only install
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}

if [ "$(id -u)" != 0 ]; then
	echo "tools/setup.sh: run as root (DPDK needs hugepages and devices)" >&2
	exit 2
fi

APT_PKGS="libdpdk-dev dpdk pkg-config gcc clang libclang-rt-14-dev libpcap-dev
          iproute2 iputils-ping ethtool tshark graphviz curl python3-pip"
PIP_PKGS="meson-python>=0.15 meson>=1.1 ninja cffi>=1.15 numpy scapy pyyaml
          cryptography click pytest ruff prometheus_client"
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}

install() {
	local missing=""
	for p in $APT_PKGS; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "== apt: installing$missing"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
	fi
	echo "== pip: python packages"
	# shellcheck disable=SC2086
	$PY -m pip install -q $PIP_PKGS
	echo "== building pydp (C core with -Wall -Wextra -Werror, cffi module)"
	$PY -m pip install -q --no-build-isolation -e .
}

run_tests() {
	echo "== ruff"
	$PY -m ruff check .
	echo "== pytest (release build)"
	$PY -m pytest -q -p no:cacheprovider tests
	echo "== pytest on an ASan+UBSan build of the core"
	$PY -m pip install -q --no-build-isolation -e . \
		-Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
		-Csetup-args=-Dbuildtype=debugoptimized -Cbuild-dir=build/asan
	local rc=0
	LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$PY -m pytest -q -p no:cacheprovider -m "not nosan" tests || rc=$?
	echo "== restoring the release build"
	$PY -m pip install -q --no-build-isolation -e .
	[ "$rc" = 0 ] || { echo "ASan/UBSan run failed ($rc)"; exit "$rc"; }
	echo "== parser fuzzer (bounded)"
	bash fuzz/run.sh "${PYDP_FUZZ_SECONDS:-60}"
}

case "$mode" in
install) install ;;
demo) install; exec pydp demo --duration "${PYDP_DEMO_SECONDS:-10}" ;;
test) install; run_tests ;;
*) echo "usage: tools/setup.sh demo|test|install" >&2; exit 2 ;;
esac
