#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Measures MTP on the real dataplane next to raw dpdk-testpmd on the same
# virtual device (net_memif between two processes) and the same CPUs, in
# one run, and prints the table with the ratios (docs/BENCHMARKS.md).
#   receiver: CPU 0 (testpmd rxonly | mtp-perf --mode rx, busy worker)
#   sender:   CPU 1 (testpmd txonly | mtp-perf --mode tx, busy worker)
# Usage: tools/bench/dataplane-pairs.sh [SECONDS]   (default 8 per point; root)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
perf=build/tools/mtp-perf/mtp-perf
[ -x "$perf" ] || { echo "dataplane-pairs: build first (ninja -C build)" >&2; exit 1; }
work=$(mktemp -d /tmp/mtp-pairs.XXXX)
# testpmd leaves its EAL runtime directories behind; mtp-perf removes its own.
trap 'rm -rf "$work" /var/run/dpdk/pairs-tprx /var/run/dpdk/pairs-tptx "$sock"' EXIT
sock=/run/mtp-pairs.sock

write_cfg() {  # name id role cpu [peer]
  cat > "$work/$1.yaml" <<YAML
node: {name: $1, id: $2}
ports:
  - {name: m0, device: "net_memif0,role=$3,id=0,socket=$sock,socket-abstract=no", mac: "02:00:00:00:0d:0$2", addresses: [10.96.0.$2/24]}
lcores: {control: 0, workers: [1], cpus: {0: $4, 1: $4}}
memory: {hugepages: false, size_mb: 1024, mbufs: 65535}
eal: {file_prefix: pairs-$1}
app: {socket: /run/mtpd/pairs-$1.sock}
YAML
  [ $# -ge 5 ] && printf 'peers:\n  - {id: %s, ip: 10.96.0.%s, mac: "02:00:00:00:0d:0%s"}\n' "$5" "$5" "$5" >> "$work/$1.yaml"
  return 0
}
write_cfg rx 2 server 0
write_cfg tx 1 client 1 2

testpmd_pps() {  # frame bytes -> median Rx-pps of the receiver over the run
  local len=$1
  rm -f "$sock"
  timeout -s INT $((secs + 4)) dpdk-testpmd --lcores=0@0,1@0 --no-huge -m 1024 --no-pci --file-prefix pairs-tprx \
    --vdev=net_memif0,role=server,socket=$sock,socket-abstract=no -- --forward-mode=rxonly --stats-period 1 \
    --total-num-mbufs=65536 > "$work/tprx.log" 2>&1 &
  local rxpid=$!
  sleep 2
  timeout -s INT "$secs" dpdk-testpmd --lcores=0@1,1@1 --no-huge -m 1024 --no-pci --file-prefix pairs-tptx \
    --vdev=net_memif0,role=client,socket=$sock,socket-abstract=no -- --forward-mode=txonly --txpkts="$len" \
    --stats-period 1 --total-num-mbufs=65536 > "$work/tptx.log" 2>&1 || true
  wait "$rxpid" || true
  grep -E 'Rx-pps' "$work/tprx.log" | awk '{print $2}' | grep -v '^0$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]+0}'
}

mtp_rate() {  # message bytes -> "msgs_per_s gbit_per_s" of stable (acknowledged) data
  local size=$1
  rm -f "$sock"
  "$perf" --config "$work/rx.yaml" --mode rx --idle busy --seconds $((secs + 6)) > "$work/mrx.log" 2>&1 &
  local rxpid=$!
  sleep 2
  "$perf" --config "$work/tx.yaml" --mode tx --idle busy --members 2 --size "$size" --bytes 1000000000000 \
    --seconds "$secs" > "$work/mtx.log" 2>&1
  kill -TERM "$rxpid" 2>/dev/null || true
  wait "$rxpid" || true
  grep -q '"verify_errors":0' "$work/mrx.log" || { echo "dataplane-pairs: the sink saw bad bytes" >&2; exit 1; }
  sed -n 's/^MTP_PERF_SUMMARY //p' "$work/mtx.log" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["msgs_per_s"], d["gbit_per_s"])'
}

printf '| message | MTP reliable msgs/s | MTP goodput Gbit/s | testpmd frames/s, best of 3 (same frame size) | testpmd Gbit/s of payload | MTP / testpmd |\n|---|---|---|---|---|---|\n'
for size in 64 1400; do
  # One MTP frame carries at least this message: Ethernet+IPv4+UDP (42), MTP
  # header and CRC (28), STREAM frame header (about 10).
  frame=$((size + 80))
  read -r msgs gbit < <(mtp_rate "$size")
  # testpmd over memif is bimodal here (some runs several times faster than
  # others): the limit is the best of three.
  pps=0
  for _ in 1 2 3; do
    p=$(testpmd_pps "$frame")
    [ "$p" -gt "$pps" ] && pps=$p
  done
  raw_gbit=$(/usr/bin/python3 -c "print(f'{$pps * $size * 8 / 1e9:.2f}')")
  ratio=$(/usr/bin/python3 -c "print(f'{$gbit / max($pps * $size * 8 / 1e9, 1e-9):.3f}')")
  printf '| %s B | %.0f | %.2f | %s | %s | %s |\n' "$size" "$msgs" "$gbit" "$pps" "$raw_gbit" "$ratio"
done
