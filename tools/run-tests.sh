#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Every test, from a fresh Debian 12 machine, as root: installs what is
# missing, reserves hugepages, builds, then runs the unit suites and the
# engine's simulator properties (meson test), the libFuzzer targets for a bounded time (clang build), and the
# end-to-end dts suites with real daemons (pytest). Exits non-zero on the
# first failing stage. FUZZ_SECONDS (default 20) bounds each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "run-tests: run as root (DPDK and namespaces need it)" >&2; exit 1; }
fuzz_seconds=${FUZZ_SECONDS:-20}

stage() { printf '\n=== %s\n' "$*"; }

stage "dependencies"
bash tools/install-deps.sh
bash tools/setup-hugepages.sh 256

stage "build (release, gcc)"
[ -f build/build.ninja ] || meson setup build
ninja -C build

# The simulator runs seeds 0-15 and a window of 8 that rotates with the
# commit, so each commit tries seeds none before it tried (docs/testing.md).
commit=$(git rev-parse --short=8 HEAD 2>/dev/null || echo 0)
rotating=$(( (16#${commit} % 1000000) + 1000 ))
export MTP_SIM_SEEDS="0-15,${rotating}-$((rotating + 7))"

stage "unit tests and simulator properties (seeds ${MTP_SIM_SEEDS}; soak: MTP_SIM_SEEDS=0-4999 build/tests/sim/sim_test)"
meson test -C build --suite unit --suite sim --print-errorlogs

stage "clang build with ASan + UBSan: unit and simulator suites, then fuzz targets, ${fuzz_seconds} s each"
[ -f build-fuzz/build.ninja ] || CXX=clang++ meson setup build-fuzz -Dfuzz=true
meson configure build-fuzz -Dfuzz_seconds="$fuzz_seconds"
ninja -C build-fuzz
meson test -C build-fuzz --suite unit --suite sim --print-errorlogs
meson test -C build-fuzz --suite fuzz --print-errorlogs

stage "dts: end-to-end suites with real daemons"
/usr/bin/python3 -m pytest dts -v
