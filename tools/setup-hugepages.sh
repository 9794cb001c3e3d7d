#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Reserves 2 MiB hugepages and mounts hugetlbfs, idempotently, and says what
# it did. Usage: tools/setup-hugepages.sh [PAGES]   (default 256 = 512 MiB)
# Never lowers a reservation that is already larger. Run as root.
set -euo pipefail

want=${1:-256}
case "$want" in ''|*[!0-9]*) echo "setup-hugepages: PAGES must be a number, got '$want'" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "setup-hugepages: run as root" >&2; exit 1; }

nr=/proc/sys/vm/nr_hugepages
have=$(cat "$nr")
if [ "$have" -ge "$want" ]; then
  echo "setup-hugepages: $have pages already reserved (wanted $want)"
else
  echo "$want" > "$nr"
  got=$(cat "$nr")
  if [ "$got" -lt "$want" ]; then
    echo "setup-hugepages: asked for $want pages, the kernel gave $got (memory fragmented?)" >&2
  fi
  echo "setup-hugepages: reserved $got pages (was $have)"
fi

if mountpoint -q /dev/hugepages; then
  echo "setup-hugepages: hugetlbfs already mounted at /dev/hugepages"
else
  mkdir -p /dev/hugepages
  mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
  echo "setup-hugepages: mounted hugetlbfs at /dev/hugepages"
fi
grep -E '^HugePages_(Total|Free)' /proc/meminfo | sed 's/^/setup-hugepages: /'
