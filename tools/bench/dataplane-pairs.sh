#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Every dataplane benchmark pair of docs/BENCHMARKS.md, each measured in
# one run next to its baseline on the same virtual device and CPUs, printed
# as markdown tables with the ratios.
#
#   memif     mtp-perf reliable tx -> rx  vs  dpdk-testpmd txonly -> rxonly
#             (net_memif between two processes), 64 B and 1400 B messages
#   afxdp     the same over net_af_xdp on a veth pair (two namespaces), 1400 B
#   fanout    mtp-perf 1 -> 3 (three memif links, three receivers) vs 1 -> 1,
#             1400 B: what the unicast copies cost the sender; and testpmd
#             txonly -> rxonly on the same 1 or 3 ports
#   security  sealed vs plaintext: mtp-perf reliable tx -> rx with security
#             required (handshake, AES-256-GCM on every packet) next to the
#             same with security plaintext, alternating, on the same ports
#             and CPUs: 64 B and 1400 B over memif and af_xdp; and
#             handshakes per second on one core (tools/bench/handshake_bench)
#   rtt       round trips, 64 B: mtp-perf pingpong <-> echo, mtp-perf
#             udp-ping (raw UDP, no MTP) <-> dpdk-testpmd macswap, and kernel
#             UDP (sockperf ping-pong), over af_xdp on one veth pair; the two
#             DPDK ones over memif too
#
# Receivers run on CPU 0 and senders on CPU 1, busy polling (fan-out: the
# three receivers share CPU 0 with adaptive idle). These shared machines
# are noisy and testpmd over memif is bimodal, so every throughput is the
# best of three runs and every round trip the best p50 of three, for MTP
# and its baseline alike, alternating.
# Usage: tools/bench/dataplane-pairs.sh [SECONDS] [memif|afxdp|fanout|security|rtt ...]
#        (default 8 s per point, every pair; root; build first)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
shift || true
pairs=${*:-memif afxdp fanout security rtt}
perf=$PWD/build/tools/mtp-perf/mtp-perf
netns=$PWD/tools/mtp-netns
[ -x "$perf" ] || { echo "dataplane-pairs: build first (ninja -C build)" >&2; exit 1; }
work=$(mktemp -d /tmp/mtp-pairs.XXXX)
ns=mtpb   # namespaces mtpb1, mtpb2 on one veth pair
sock=/run/mtp-pairs
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$netns" destroy --prefix "$ns" >/dev/null 2>&1 || true
  # testpmd leaves its EAL runtime directories behind; mtp-perf removes its own.
  rm -rf "$work" /var/run/dpdk/pairs-tp* $sock-*.sock
}
trap cleanup EXIT

py() { /usr/bin/python3 -c "$1"; }
summary() { sed -n 's/^MTP_PERF_SUMMARY //p' "$1" | py "import json,sys; d=json.load(sys.stdin); print($2)"; }
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; return 1; }

memif() {  # k role -> a memif device on socket k
  echo "net_memif$1,role=$2,id=0,socket=$sock-$1.sock,socket-abstract=no"
}

# Security of the configs write_cfg writes: plaintext (every pair but
# `security`), or sealed with the key pairs keys_up made (node<id>.key).
sec=plaintext
keys_up() {
  local mtpd=$PWD/build/dataplane/mtpd id
  for id in 1 2 3 4; do
    [ -f "$work/node$id.key" ] || "$mtpd" keygen "$work/node$id.key" > "$work/node$id.pub"
  done
}

# write_cfg name id cpu idle "port-device..." ["peer-id..."]: one port per
# device, m<k> = 10.96.<k>.<id>/24, peers at 10.96.<k>.<peer>.
write_cfg() {
  local name=$1 id=$2 cpu=$3 idle=$4 devs=$5 peers=${6:-} k=0
  {
    echo "node: {name: $name, id: $id}"
    echo "ports:"
    for d in $devs; do
      echo "  - {name: m$k, device: \"$d\", addresses: [10.96.$k.$id/24]}"
      k=$((k + 1))
    done
    echo "lcores: {control: 0, workers: [1], cpus: {0: $cpu, 1: $cpu}}"
    echo "memory: {hugepages: false, size_mb: 1024, mbufs: 65535}"
    echo "idle: {policy: $idle}"
    echo "eal: {file_prefix: pairs-$name}"
    echo "app: {socket: /run/mtpd/pairs-$name.sock}"
    if [ "$sec" = sealed ]; then
      echo "security: {mode: required, key_file: $work/node$id.key}"
    else
      echo "security: {mode: plaintext}"
    fi
    if [ -n "$peers" ]; then
      echo "peers:"
      k=0
      for p in $peers; do
        echo "  - {id: $p, ip: 10.96.$k.$p, port: m$k, public_key_file: $work/node$p.pub}"
        k=$((k + 1))
      done
    fi
  } > "$work/$name.yaml"
}

# testpmd NAME CPU SECONDS NETNS VDEV... -- TESTPMD-ARGS: runs to its end.
testpmd() {
  local name=$1 cpu=$2 t=$3 where=$4
  shift 4
  local vdevs=()
  while [ "$1" != "--" ]; do vdevs+=("--vdev=$1"); shift; done
  shift
  local run=()
  [ "$where" != "-" ] && run=(ip netns exec "$where")
  # testpmd with several memif ports sometimes crashes on its way out,
  # after its statistics are written; the subshell keeps the shell's
  # "Segmentation fault" report out of the table.
  (timeout -s INT "$t" "${run[@]}" dpdk-testpmd --lcores="0@$cpu,1@$cpu" --no-huge -m 1024 --no-pci \
    --file-prefix "pairs-tp$name" "${vdevs[@]}" -- --stats-period 1 --total-num-mbufs=65536 "$@" \
    > "$work/tp$name.log" 2>&1) 2>/dev/null || true
}

median_rx_pps() {  # testpmd log [ports] -> median non-zero Rx-pps, summed over the ports of each period
  local ports=${2:-1}
  grep -E 'Rx-pps' "$1" | awk -v n="$ports" '{s += $2} NR % n == 0 {print s; s = 0}' | grep -v '^0$' | sort -n |
    awk '{a[NR]=$1} END {print a[int((NR+1)/2)]+0}'
}

# ---- throughput: MTP reliable tx -> rx vs testpmd txonly -> rxonly ----------

tput_table_head() {
  printf '| message | MTP reliable msgs/s | MTP goodput Gbit/s | testpmd frames/s (same frame size) | testpmd Gbit/s of payload | MTP / testpmd |\n|---|---|---|---|---|---|\n'
}

# mtp_tput RX-NS TX-NS SIZE -> "msgs/s Gbit/s" of one mtp-perf tx -> rx run
# with the configs written last.
mtp_tput() {
  local rxns=$1 txns=$2 size=$3 rxrun=() txrun=()
  [ "$rxns" != "-" ] && rxrun=(ip netns exec "$rxns")
  [ "$txns" != "-" ] && txrun=(ip netns exec "$txns")
  rm -f $sock-*.sock
  "${rxrun[@]}" "$perf" --config "$work/rx.yaml" --mode rx --seconds $((secs + 6)) > "$work/mrx.log" 2>&1 &
  local rxpid=$!
  sleep 2
  "${txrun[@]}" "$perf" --config "$work/tx.yaml" --mode tx --members 2 --size "$size" --bytes 1000000000000 \
    --seconds "$secs" > "$work/mtx.log" 2>&1
  kill -TERM "$rxpid" 2>/dev/null || true
  wait "$rxpid" || true
  grep -q '"verify_errors":0' "$work/mrx.log" || { echo "dataplane-pairs: the sink saw bad bytes" >&2; exit 1; }
  summary "$work/mtx.log" 'd["msgs_per_s"], d["gbit_per_s"]'
}

# tput_pair LABEL SIZE TRIES RX-NS TX-NS RX-DEV TX-DEV
tput_pair() {
  local label=$1 size=$2 tries=$3 rxns=$4 txns=$5 rxdev=$6 txdev=$7
  write_cfg rx 2 0 busy "$rxdev"
  write_cfg tx 1 1 busy "$txdev" 2
  local msgs=0 gbit=0 m g
  for _ in $(seq "$tries"); do
    read -r m g < <(mtp_tput "$rxns" "$txns" "$size")
    if py "import sys; sys.exit(0 if $g > $gbit else 1)"; then msgs=$m gbit=$g; fi
  done
  # One MTP frame carries at least this message: Ethernet+IPv4+UDP (42), MTP
  # header and CRC (28), STREAM frame header (about 10).
  local frame=$((size + 80)) pps=0 p
  for _ in $(seq "$tries"); do
    rm -f $sock-*.sock
    testpmd rx 0 $((secs + 6)) "$rxns" "$rxdev" -- --forward-mode=rxonly &
    local tpid=$!
    sleep 2
    testpmd tx 1 $((secs + 2)) "$txns" "$txdev" -- --forward-mode=txonly --txpkts="$frame"
    wait "$tpid" || true
    p=$(median_rx_pps "$work/tprx.log")
    if [ "$p" -gt "$pps" ]; then pps=$p; fi
  done
  local raw_gbit ratio
  raw_gbit=$(py "print(f'{$pps * $size * 8 / 1e9:.2f}')")
  ratio=$(py "print(f'{$gbit / max($pps * $size * 8 / 1e9, 1e-9):.3f}')")
  printf '| %s B %s | %.0f | %.2f | %s | %s | %s |\n' "$size" "$label" "$msgs" "$gbit" "$pps" "$raw_gbit" "$ratio"
}

veth_up() {
  "$netns" create --nodes 2 --pairs --prefix "$ns" --subnet 10.96.0 >/dev/null
}
afxdp_dev() { echo "net_af_xdp$1,iface=eth0,start_queue=0,queue_count=1"; }

if [[ " $pairs " == *" memif "* ]]; then
  echo "### memif: MTP reliable tx -> rx vs testpmd txonly -> rxonly (each best of 3)"
  tput_table_head
  for size in 64 1400; do tput_pair "(memif)" "$size" 3 - - "$(memif 0 server)" "$(memif 0 client)"; done
  echo
fi

if [[ " $pairs " == *" afxdp "* ]]; then
  echo "### af_xdp on a veth pair: MTP reliable tx -> rx vs testpmd txonly -> rxonly (each best of 3)"
  veth_up
  tput_table_head
  tput_pair "(af_xdp)" 1400 3 "${ns}2" "${ns}1" "$(afxdp_dev 0)" "$(afxdp_dev 0)"
  "$netns" destroy --prefix "$ns" >/dev/null
  echo
fi

# ---- security: sealed next to plaintext --------------------------------------

# security_pair LABEL SIZE TRIES RX-NS TX-NS RX-DEV TX-DEV: plaintext and
# sealed alternating, the best of TRIES each.
security_pair() {
  local label=$1 size=$2 tries=$3 rxns=$4 txns=$5 rxdev=$6 txdev=$7
  local pm=0 pg=0 sm=0 sg=0 m g
  for _ in $(seq "$tries"); do
    for sec in plaintext sealed; do
      # Sealed, the receiver names the sender too: the peer it accepts.
      write_cfg rx 2 0 busy "$rxdev" 1
      write_cfg tx 1 1 busy "$txdev" 2
      read -r m g < <(mtp_tput "$rxns" "$txns" "$size")
      if [ $sec = sealed ]; then
        grep -q "security required" "$work/mtx.log" ||
          { echo "dataplane-pairs: the sealed run was not secured" >&2; exit 1; }
        if py "import sys; sys.exit(0 if $g > $sg else 1)"; then sm=$m sg=$g; fi
      else
        if py "import sys; sys.exit(0 if $g > $pg else 1)"; then pm=$m pg=$g; fi
      fi
    done
  done
  sec=plaintext
  printf '| %s B %s | %.0f | %.2f | %.0f | %.2f | %s | %s |\n' "$size" "$label" "$pm" "$pg" "$sm" "$sg" \
    "$(py "print(f'{$sm / max($pm, 1e-9):.3f}')")" "$(py "print(f'{$sg / max($pg, 1e-9):.3f}')")"
}

if [[ " $pairs " == *" security "* ]]; then
  keys_up
  echo "### sealed vs plaintext: mtp-perf reliable tx -> rx, security required vs plaintext, same ports and CPUs (each best of 3, alternating)"
  printf '| message | plaintext msgs/s | plaintext Gbit/s | sealed msgs/s | sealed Gbit/s | sealed / plaintext msgs | sealed / plaintext Gbit/s |\n|---|---|---|---|---|---|---|\n'
  for size in 64 1400; do security_pair "(memif)" "$size" 3 - - "$(memif 0 server)" "$(memif 0 client)"; done
  veth_up
  for size in 64 1400; do security_pair "(af_xdp)" "$size" 3 "${ns}2" "${ns}1" "$(afxdp_dev 0)" "$(afxdp_dev 0)"; done
  "$netns" destroy --prefix "$ns" >/dev/null
  echo
  echo "### handshakes on one core (tools/bench/handshake_bench, CPU 1)"
  printf '| what | per second |\n|---|---|\n'
  taskset -c 1 "$PWD/build/tools/bench/handshake_bench" --benchmark_filter='full_handshake|responder_only|responder_precomputed_ss|drop_bad_mac1|drop_bad_mac2' \
    --benchmark_format=json 2>/dev/null | py "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    per_s = {'ns': 1e9, 'us': 1e6, 'ms': 1e3, 's': 1}[b['time_unit']] / b['real_time']
    print(f\"| {b['name']} | {per_s:,.0f} |\")"
  echo
fi

# ---- fan-out: 1 -> 3 against 1 -> 1 -----------------------------------------

if [[ " $pairs " == *" fanout "* ]]; then
  echo "### fan-out over memif, 1400 B: MTP 1 -> 3 (three unicast copies) vs 1 -> 1 and vs testpmd txonly on 1 or 3 ports, same sender CPU (each best of 3)"
  printf '| group | MTP goodput to each member, Gbit/s | wire rate of the sender, Gbit/s | per-member goodput / 1 -> 1 | testpmd frames/s per port | testpmd Gbit/s of payload per port | MTP / testpmd |\n|---|---|---|---|---|---|---|\n'
  base=0
  for n in 1 3; do
    gbit=0
    for _ in 1 2 3; do
    devs="" rxpids=()
    rm -f $sock-*.sock
    for k in $(seq 0 $((n - 1))); do
      write_cfg "rx$k" $((2 + k)) 0 adaptive "$(memif "$k" server)"
      # Receiver k sits on link k: its port is m0 there, so fix its subnet.
      sed -i "s/10.96.0.$((2 + k))/10.96.$k.$((2 + k))/" "$work/rx$k.yaml"
      "$perf" --config "$work/rx$k.yaml" --mode rx --seconds $((secs + 6)) > "$work/mrx$k.log" 2>&1 &
      rxpids+=($!)
      devs="$devs $(memif "$k" client)"
    done
    members=$(seq -s, 2 $((n + 1)))
    write_cfg tx 1 1 busy "$devs" "$(seq -s' ' 2 $((n + 1)))"
    for k in $(seq 0 $((n - 1))); do wait_sock "$sock-$k.sock"; done
    sleep 1
    "$perf" --config "$work/tx.yaml" --mode fanout --members "$members" --size 1400 --bytes 1000000000000 \
      --seconds "$secs" > "$work/mtx.log" 2>&1
    for p in "${rxpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" || true; done
    for k in $(seq 0 $((n - 1))); do
      grep -q '"verify_errors":0' "$work/mrx$k.log" || { echo "dataplane-pairs: receiver $k saw bad bytes" >&2; exit 1; }
    done
    g=$(summary "$work/mtx.log" 'd["gbit_per_s"]')
    if py "import sys; sys.exit(0 if $g > $gbit else 1)"; then gbit=$g; fi
    done
    [ "$n" -eq 1 ] && base=$gbit
    # The raw limit: testpmd txonly on n memif ports from one core, one
    # rxonly process with the n server ports.
    rxdevs=() txdevs=()
    for k in $(seq 0 $((n - 1))); do rxdevs+=("$(memif "$k" server)"); txdevs+=("$(memif "$k" client)"); done
    pps=0
    for _ in 1 2 3; do
      rm -f $sock-*.sock
      testpmd rx 0 $((secs + 6)) - "${rxdevs[@]}" -- --forward-mode=rxonly --port-topology=loop &
      tpid=$!
      sleep 2
      testpmd tx 1 $((secs + 2)) - "${txdevs[@]}" -- --forward-mode=txonly --port-topology=loop --txpkts=1480
      wait "$tpid" || true
      p=$(( $(median_rx_pps "$work/tprx.log" "$n") / n ))
      if [ "$p" -gt "$pps" ]; then pps=$p; fi
    done
    wire=$(py "print(f'{$gbit * $n * 1480 / 1400:.2f}')")
    printf '| 1 -> %s | %.2f | %s | %s | %s | %s | %s |\n' "$n" "$gbit" "$wire" \
      "$(py "print(f'{$gbit / max($base, 1e-9):.3f}')")" "$pps" "$(py "print(f'{$pps * 1400 * 8 / 1e9:.2f}')")" \
      "$(py "print(f'{$gbit / max($pps * 1400 * 8 / 1e9, 1e-9):.3f}')")"
  done
  echo
fi

# ---- round trips --------------------------------------------------------------

rtt_row() {  # label, MTP log, raw log, kernel p50 us (or -)
  read -r m50 m99 m999 < <(summary "$2" 'd["rtt_p50_us"], d["rtt_p99_us"], d["rtt_p999_us"]')
  read -r r50 r99 r999 < <(summary "$3" 'd["rtt_p50_us"], d["rtt_p99_us"], d["rtt_p999_us"]')
  local k=$4 kr="-"
  [ "$k" != "-" ] && kr=$(py "print(f'{$m50 / $k:.3f}')")
  printf '| %s | %s / %s / %s | %s / %s / %s | %s | %s | %s |\n' "$1" "$m50" "$m99" "$m999" "$r50" "$r99" "$r999" \
    "$(py "print(f'{$m50 / max($r50, 1e-9):.2f}')")" "$k" "$kr"
}

# rtt_dpdk RX-NS TX-NS RX-DEV TX-DEV: MTP pingpong <-> echo, then udp-ping <->
# testpmd macswap, three times alternating; keeps the run with the best p50
# of each in mping.log and mraw.log.
rtt_dpdk() {
  local rxns=$1 txns=$2 rxdev=$3 txdev=$4 rxrun=() txrun=() pid
  [ "$rxns" != "-" ] && rxrun=(ip netns exec "$rxns")
  [ "$txns" != "-" ] && txrun=(ip netns exec "$txns")
  write_cfg rx 2 0 busy "$rxdev"
  write_cfg tx 1 1 busy "$txdev" 2
  rm -f "$work/mping.log" "$work/mraw.log"
  for _ in 1 2 3; do
    rm -f $sock-*.sock
    "${rxrun[@]}" "$perf" --config "$work/rx.yaml" --mode echo --seconds $((secs + 6)) > "$work/mecho.log" 2>&1 &
    pid=$!
    sleep 2
    "${txrun[@]}" "$perf" --config "$work/tx.yaml" --mode pingpong --members 2 --size 64 --seconds "$secs" \
      > "$work/mping.try" 2>&1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    keep_best "$work/mping.try" "$work/mping.log"
    # The raw reflector takes the receiver's place: same device, same CPU.
    rm -f $sock-*.sock
    testpmd refl 0 $((secs + 6)) "$rxns" "$rxdev" -- --forward-mode=macswap &
    pid=$!
    sleep 3
    "${txrun[@]}" "$perf" --config "$work/tx.yaml" --mode udp-ping --members 2 --size 64 --seconds "$secs" \
      > "$work/mraw.try" 2>&1
    wait "$pid" || true
    keep_best "$work/mraw.try" "$work/mraw.log"
  done
}

keep_best() {  # try, best: keeps the log whose p50 is lower (and that has one)
  local t b
  t=$(summary "$1" 'd["rtt_p50_us"] if d["round_trips"] else 1e9')
  b=1e9
  [ -f "$2" ] && b=$(summary "$2" 'd["rtt_p50_us"] if d["round_trips"] else 1e9')
  if py "import sys; sys.exit(0 if $t < $b else 1)"; then cp "$1" "$2"; fi
}

if [[ " $pairs " == *" rtt "* ]]; then
  echo "### round trips, 64 B: MTP ping-pong vs raw UDP against testpmd macswap vs kernel UDP (sockperf); best p50 of 3"
  printf '| path | MTP RTT p50 / p99 / p99.9 us | raw DPDK RTT p50 / p99 / p99.9 us | MTP / raw (p50) | kernel UDP RTT p50 us | MTP / kernel (p50) |\n|---|---|---|---|---|---|\n'
  rtt_dpdk - - "$(memif 0 server)" "$(memif 0 client)"
  rtt_row "memif" "$work/mping.log" "$work/mraw.log" -
  veth_up
  # Kernel UDP first, while no XDP program holds the interfaces. sockperf
  # reports half the round trip: doubled here.
  ip netns exec "${ns}2" taskset -c 0 sockperf server -i 10.96.0.2 -p 11111 > "$work/sps.log" 2>&1 &
  spid=$!
  bg+=("$spid")
  sleep 1
  ip netns exec "${ns}1" taskset -c 1 sockperf ping-pong -i 10.96.0.2 -p 11111 -t "$secs" -m 64 > "$work/spc.log" 2>&1
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  k50=$(awk '/percentile 50.000/ {printf "%.2f", $NF * 2}' "$work/spc.log")
  rtt_dpdk "${ns}2" "${ns}1" "$(afxdp_dev 0)" "$(afxdp_dev 0)"
  rtt_row "af_xdp on veth" "$work/mping.log" "$work/mraw.log" "$k50"
  "$netns" destroy --prefix "$ns" >/dev/null
fi
