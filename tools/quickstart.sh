#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# mtpd's main job in one command, on a fresh Debian 12 machine, as root:
# installs what is missing, builds, then
#   1. runs mtpd with its embedded default config (one net_tap port) in a
#      network namespace, sends it UDP datagrams from the kernel side and
#      shows its live counters over DPDK telemetry;
#   2. runs two daemons joined by net_memif that send each other frames,
#      and shows what each counted;
#   3. runs a secured, reliable MTP transfer of 256 MiB between two
#      daemons over memif (key pairs made by `mtpd keygen`, every packet
#      sealed), every byte checked at the receiver;
#   4. runs two daemons that serve applications and two applications
#      (file_sender, file_receiver of shm-api/examples, through libmtp)
#      that send an 8 MiB file from one to the other, checked by sha256;
# and stops everything with SIGTERM, leaving nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "quickstart: run as root (DPDK and namespaces need it)" >&2; exit 1; }
bash tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
MTPD=$PWD/build/dataplane/mtpd
NS=mtp-quickstart
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

wait_running() {  # log file, pid
  for _ in $(seq 200); do
    grep -q "mtpd: running:" "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$1"; echo "quickstart: mtpd exited early" >&2; exit 1; }
    sleep 0.1
  done
  cat "$1"; echo "quickstart: mtpd did not start" >&2; exit 1
}

stop() {  # pid, log file
  local t0 rc=0
  t0=$(date +%s%N)
  kill -TERM "$1"
  wait "$1" || rc=$?
  echo "--- stopped with SIGTERM: exit code $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms; final counters:"
  sed -n '/final counters/,/rx verdicts/p' "$2"
  [ "$rc" -eq 0 ] || exit 1
}

log=$(mktemp /tmp/mtpd-default.XXXX.log)
echo "=== 1. mtpd with the embedded default config, net_tap port mtp0 in namespace $NS"
ip netns add "$NS"
ip netns exec "$NS" "$MTPD" >"$log" 2>&1 &
pids=($!)
wait_running "$log" "${pids[0]}"
grep -E "^mtpd: (mtpd|port|running)" "$log"
ip -n "$NS" addr add 10.77.0.2/24 dev mtp0
ip -n "$NS" link set mtp0 up
# No static neighbour needed: mtpd answers ARP for its addresses.
echo "--- the kernel sends 100 UDP datagrams to the MTP port 7400 and 10 to port 9"
ip netns exec "$NS" bash -c 'for i in $(seq 100); do echo "datagram $i" > /dev/udp/10.77.0.1/7400; done;
                               for i in $(seq 10); do echo x > /dev/udp/10.77.0.1/9; done'
sleep 0.5
echo "--- live counters over DPDK telemetry (dpdk-telemetry.py -f mtpd-mtpd):"
printf '/mtp/rx_verdicts\n/mtp/workers\n' | dpdk-telemetry.py -f mtpd-mtpd 2>/dev/null | grep -E '^\{"/mtp' || true
stop "${pids[0]}" "$log"
pids=()
ip netns del "$NS"

echo
echo "=== 2. two daemons over net_memif, each sending 1000 frames/s to the other"
la=$(mktemp /tmp/mtpd-memif-a.XXXX.log); lb=$(mktemp /tmp/mtpd-memif-b.XXXX.log)
"$MTPD" --config config/examples/two-node-memif/node-a.yaml >"$la" 2>&1 &
pids=($!)
# a is the memif server: its socket must exist before the client starts.
wait_running "$la" "${pids[0]}"
"$MTPD" --config config/examples/two-node-memif/node-b.yaml >"$lb" 2>&1 &
pids+=($!)
wait_running "$lb" "${pids[1]}"
sleep 3
echo "--- node memif-b:"; stop "${pids[1]}" "$lb"
echo "--- node memif-a:"; stop "${pids[0]}" "$la"
pids=()

echo
echo "=== 3. a secured, reliable MTP transfer: 256 MiB from source to sink over memif, every byte verified"
# Each node's key pair (once), and the public halves the other names.
keys=/var/lib/mtpd/transfer-memif
mkdir -p -m 700 "$keys"
for n in source sink; do
  [ -f "$keys/$n.key" ] || "$MTPD" keygen "$keys/$n.key" >/dev/null
  "$MTPD" pubkey "$keys/$n.key" >"$keys/$n.pub"
done
echo "--- keys: source $(cat "$keys/source.pub"), sink $(cat "$keys/sink.pub") (mtpd keygen, $keys)"
ls_=$(mktemp /tmp/mtpd-sink.XXXX.log); lo=$(mktemp /tmp/mtpd-source.XXXX.log)
"$MTPD" --config config/examples/transfer-memif/sink.yaml >"$ls_" 2>&1 &
pids=($!)
wait_running "$ls_" "${pids[0]}"
"$MTPD" --config config/examples/transfer-memif/source.yaml >"$lo" 2>&1 &
pids+=($!)
wait_running "$lo" "${pids[1]}"
for _ in $(seq 600); do grep -q "bytes stable" "$lo" && break; sleep 0.1; done
grep -E "^mtpd: (source|sink)" "$lo" "$ls_" | sed 's/^[^:]*://'
printf '/mtp/workers\n' | dpdk-telemetry.py -f mtpd-sink 2>/dev/null |
  grep -oE '"(sink_(bytes|messages|verify_errors|order_errors)|handshakes_completed|packets_opened|auth_failed|replayed)": [0-9]+' |
  tr '\n' ' '; echo
echo "--- node source:"; stop "${pids[1]}" "$lo"
echo "--- node sink:"; stop "${pids[0]}" "$ls_"
pids=()

echo
echo "=== 4. two applications exchange a file through two daemons (libmtp, shm-api/examples)"
lc=$(mktemp /tmp/mtpd-apps-a.XXXX.log); ld=$(mktemp /tmp/mtpd-apps-b.XXXX.log)
file=$(mktemp /tmp/mtp-quickstart.XXXX.bin); rlog=$(mktemp /tmp/mtp-receiver.XXXX.log)
head -c 8M /dev/urandom >"$file"
sum=$(sha256sum "$file" | cut -d' ' -f1)
"$MTPD" --config config/examples/apps-memif/node-b.yaml >"$ld" 2>&1 &
pids=($!)
wait_running "$ld" "${pids[0]}"
"$MTPD" --config config/examples/apps-memif/node-a.yaml >"$lc" 2>&1 &
pids+=($!)
wait_running "$lc" "${pids[1]}"
EX=$PWD/build/shm-api/examples
"$EX/file_receiver" --socket /run/mtpd/apps-b.sock --expect-bytes 8388608 --sha256 "$sum" >"$rlog" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$rlog" && break; sleep 0.1; done
echo "--- file_sender on node a sends 8 MiB to member 2; file_receiver on node b checks its sha256"
"$EX/file_sender" --socket /run/mtpd/apps-a.sock --members 2 "$file"
wait "${pids[2]}" || { cat "$rlog"; echo "quickstart: the receiver failed" >&2; exit 1; }
cat "$rlog"
grep -E "^mtpd: application" "$lc" "$ld" | sed 's/^[^:]*://' | head -8
echo "--- node apps-a:"; stop "${pids[1]}" "$lc"
echo "--- node apps-b:"; stop "${pids[0]}" "$ld"
pids=()
rm -f "$log" "$la" "$lb" "$ls_" "$lo" "$lc" "$ld" "$file" "$rlog"
echo
echo "quickstart: done. Configs: config/examples/; operations: docs/operations.md; tests: tools/run-tests.sh"
