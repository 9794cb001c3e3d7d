#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs every Debian 12 package that building, testing and running mtpd
# needs. Idempotent: packages already present are left alone, and apt is not
# touched at all when nothing is missing. Run as root.
set -euo pipefail

packages=(
  # build; clang provides /usr/bin/clang++ (clang-14 has only clang++-14),
  # which run-tests.sh uses for the fuzz build; libclang-rt-14-dev: libFuzzer
  build-essential pkg-config meson ninja-build clang clang-14 libclang-rt-14-dev
  # libraries (pkg-config unless noted)
  libdpdk-dev dpdk dpdk-dev libyaml-cpp-dev libgtest-dev libgmock-dev
  libbenchmark-dev libbpf-dev libxdp-dev libssl-dev
  libipsec-mb-dev   # no .pc file: found with cc.find_library
  libnuma-dev libpcap-dev libelf-dev zlib1g-dev
  # run and test
  iproute2 nftables procps kmod python3 python3-pytest python3-scapy python3-yaml
  # measure
  sockperf iperf3 valgrind
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${#missing[@]} packages"
