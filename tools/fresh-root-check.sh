#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Proves the README's two commands on a fresh Debian 12 root: debootstraps
# bookworm (minbase) once, then for every run lays an empty writable layer
# over it (overlayfs), clones the repository's HEAD into /root/mtpd and runs,
# chrooted there, `bash tools/quickstart.sh` and then `bash tools/run-tests.sh`,
# printing each one's exit status and elapsed time. Run as root on a Debian
# host; only committed code is tested (see --with).
#
#   tools/fresh-root-check.sh [--fresh] [--repo DIR] [--with FILE]... [ROOTDIR]
#
#   ROOTDIR     default /var/tmp/mtpd-fresh-root; holds base/ (debootstrap,
#               reused), upper/ (this run's changes: packages, build trees;
#               kept for inspection, wiped when the next run starts), root/
#               (the merged view, mounted only while a run lasts) and logs/
#   --fresh     debootstrap base/ again even if a complete one exists
#   --repo DIR  the repository to clone (default: the one holding this script)
#   --with FILE also copy the working tree's FILE (a path in the repository)
#               over the clone, to try an uncommitted change; repeatable
#   FUZZ_SECONDS  passed to run-tests.sh (its default: 20 s per fuzz target)
#   MIRROR, SUITE, VARIANT  debootstrap's (http://deb.debian.org/debian,
#               bookworm, minbase)
#
# The run lives in its own mount and PID namespaces, so nothing it mounts
# (proc, sys, dev, dev/pts, run, hugetlbfs, ip netns, the overlay) is visible
# outside it and nothing it starts outlives it: when the namespace's first
# process exits the kernel kills every other one, and the mounts go with the
# last process. The cleanup still unmounts and kills explicitly (by PID,
# never by name) and then checks the host: no mount under ROOTDIR, no process
# rooted there, the host's `ip netns list` as before. Not isolated: the
# network namespace (apt needs the host's network; every test puts its
# devices in namespaces of its own) and the kernel's hugepage pool
# (setup-hugepages.sh raises vm.nr_hugepages and, as on any machine, leaves it).
set -euo pipefail

self=$(readlink -f "$0")

# ---------------------------------------------------------------- inside ---
# Runs as PID 1 of the new PID namespace, in the new mount namespace, before
# and around the chroot. Arguments come in the environment (FRC_*).
inner() {
  local root=$FRC_DIR/root logs=$FRC_DIR/logs
  # PID 1 gets only the signals it handles; cleanup kills what is left.
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap inner_cleanup EXIT

  mount -t overlay overlay -o "lowerdir=$FRC_DIR/base,upperdir=$FRC_DIR/upper,workdir=$FRC_DIR/work" "$root"
  mount -t proc proc "$root/proc"                  # this PID namespace's processes only
  mount --rbind /sys "$root/sys"                   # with /sys/fs/bpf etc. if the host has them
  mount --make-rslave "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  if mountpoint -q /dev/hugepages; then
    # A hugetlbfs of its own (the pool is shared, the files are not), as a
    # freshly booted systemd machine has: the host's DPDK files stay apart.
    mount -t hugetlbfs -o pagesize=2M nodev "$root/dev/hugepages"
  fi                                               # else setup-hugepages.sh mounts one
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"  # /run/netns, /run/dpdk: the run's own
  mkdir -p "$root/run/lock"

  cp /etc/resolv.conf "$root/etc/resolv.conf"
  [ -e "$root/etc/hosts" ] || cp /etc/hosts "$root/etc/hosts"
  # The host's Debian apt sources (only those: third-party ones need keys the
  # root lacks); without any, debootstrap's own sources.list stays.
  local f copied=0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -Eq '^[^#]*(deb|URIs:).*debian\.org' "$f" || continue
    [ "$f" = /etc/apt/sources.list ] && { cp "$f" "$root/etc/apt/sources.list"; copied=1; continue; }
    [ $copied = 1 ] || { rm -f "$root/etc/apt/sources.list"; copied=1; }
    cp "$f" "$root/etc/apt/sources.list.d/"
  done
  # Package scripts do not start services inside a chroot.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"

  git -c advice.detachedHead=false clone -q --no-hardlinks "$FRC_REPO" "$root/root/mtpd"
  local w
  for w in $FRC_WITH; do
    cp "$FRC_REPO/$w" "$root/root/mtpd/$w"
  done
  echo "fresh-root-check: /root/mtpd is $FRC_REPO at $(git -C "$root/root/mtpd" log -1 --format='%h %s')"
  [ -z "$FRC_WITH" ] || git -C "$root/root/mtpd" status --short | sed 's/^/fresh-root-check:   uncommitted, from the working tree: /'

  local results=() rc=0 name cmd t0 t1 s
  for name in quickstart run-tests; do
    cmd="bash tools/$name.sh"
    printf '\nfresh-root-check: ===== %s  (chroot %s, cd /root/mtpd)\n' "$cmd" "$root"
    t0=$(date +%s)
    # In the background so that a signal reaches the trap at once; a clean
    # environment, as a root login on the fresh machine would have.
    ( set -o pipefail
      chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        ${FUZZ_SECONDS:+FUZZ_SECONDS=$FUZZ_SECONDS} \
        ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
        /bin/bash -c "cd /root/mtpd && $cmd" </dev/null 2>&1 | tee "$logs/$name.log" ) &
    s=0; wait $! || s=$?
    t1=$(date +%s)
    results+=("$(printf '%-11s %s (exit %d) in %dm%02ds' "$name" "$([ $s -eq 0 ] && echo PASS || echo FAIL)" \
      "$s" $(((t1 - t0) / 60)) $(((t1 - t0) % 60)))")
    printf 'fresh-root-check: ===== %s\n' "${results[-1]}"
    [ $s -eq 0 ] || rc=1
  done

  echo
  echo "fresh-root-check: left behind inside the root after both commands (expected: nothing):"
  local left
  left=$(chroot "$root" ip netns list 2>/dev/null || true)
  [ -z "$left" ] || echo "$left" | sed 's/^/fresh-root-check:   netns /'
  for f in "$root"/proc/[0-9]*; do
    [ "${f##*/}" = 1 ] || echo "fresh-root-check:   process ${f##*/} $(tr '\0' ' ' 2>/dev/null < "$f/cmdline")"
  done
  ls "$root/dev/hugepages" 2>/dev/null | sed 's/^/fresh-root-check:   hugepage file /' || true
  ls "$root/run/dpdk" 2>/dev/null | sed 's/^/fresh-root-check:   dpdk runtime dir /' || true
  echo
  for s in "${results[@]}"; do echo "fresh-root-check: $s"; done
  return $rc
}

inner_cleanup() {
  local rc=$? root=$FRC_DIR/root
  trap - EXIT INT TERM
  set +e
  # Every other process of this PID namespace was started by this run.
  kill -TERM -1 2>/dev/null || true
  sleep 1
  kill -KILL -1 2>/dev/null || true
  while wait -n 2>/dev/null; do :; done
  umount -R "$root" 2>/dev/null || umount -R -l "$root" 2>/dev/null || true
  exit $rc
}

if [ "${1:-}" = --inner ]; then
  inner
  exit $?
fi

# --------------------------------------------------------------- outside ---
usage() { sed -n '3,22p' "$self" | sed 's/^# \{0,1\}//'; exit 2; }

dir=/var/tmp/mtpd-fresh-root
repo=$(cd "$(dirname "$self")/.." && pwd)
fresh=no
with=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=yes; shift ;;
    --repo) repo=$(cd "$2" && pwd); shift 2 ;;
    --with) with+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    -*) echo "fresh-root-check: unknown option '$1'" >&2; usage ;;
    *) dir=$1; shift ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-root-check: run as root" >&2; exit 1; }
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
dir=${dir%/}
[ "$dir" != "" ] && [ "$dir" != / ] || { echo "fresh-root-check: refusing root directory '$dir'" >&2; exit 2; }
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || { echo "fresh-root-check: $repo is not a git repository" >&2; exit 2; }
for w in "${with[@]}"; do
  case "$w" in /*|*..*|*' '*) echo "fresh-root-check: --with takes a path inside the repository: '$w'" >&2; exit 2 ;; esac
  [ -f "$repo/$w" ] || { echo "fresh-root-check: --with $w: no such file in $repo" >&2; exit 2; }
done
mirror=${MIRROR:-http://deb.debian.org/debian}
suite=${SUITE:-bookworm}
variant=${VARIANT:-minbase}

mounts_under() {  # mount points at or below $1 in this mount namespace
  awk -v d="$1" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print p }' /proc/self/mountinfo
}
procs_under() {  # PIDs whose root directory is at or below $1 (one find, no fork per process)
  find /proc -mindepth 2 -maxdepth 2 -name root \( -lname "$1" -o -lname "$1/*" \) 2>/dev/null | cut -d/ -f3
  return 0  # find fails when a process vanishes under it
}
is_inner() {  # $1 is (still) this run's namespace PID 1, not a reused PID
  [ -n "$1" ] && tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -qF -- "$self --inner"
}
inner_of() {  # the child of unshare $1 that is the namespace's PID 1
  local p st ppid
  for p in /proc/[0-9]*; do
    read -r st < "$p/stat" 2>/dev/null || continue
    read -r _ ppid _ <<< "${st##*) }"  # past "pid (comm) ": state ppid ...
    [ "$ppid" = "$1" ] && is_inner "${p#/proc/}" && { echo "${p#/proc/}"; return 0; }
  done
  return 0
}
mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock -n 9 || { echo "fresh-root-check: another run holds $dir/.lock" >&2; exit 1; }
if [ -n "$(mounts_under "$dir")" ] || [ -n "$(procs_under "$dir")" ]; then
  echo "fresh-root-check: $dir is still in use (mounts: $(mounts_under "$dir" | tr '\n' ' ')processes: $(procs_under "$dir" | tr '\n' ' '))" >&2
  exit 1
fi

netns_before=$(ip netns list 2>/dev/null | awk '{print $1}' | sort || true)
hugedir_before=$([ -e /dev/hugepages ] && echo yes || echo no)
nr_hugepages_before=$(cat /proc/sys/vm/nr_hugepages)
child=""
inner_pid=""

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e  # the cleanup runs to its end whatever fails
  # unshare blocks SIGINT and SIGTERM while it waits: signal the namespace's
  # PID 1, whose trap ends the run (and unshare with it).
  if is_inner "$inner_pid"; then
    echo "fresh-root-check: stopping the run (its PID 1 is $inner_pid)" >&2
    kill -TERM "$inner_pid" 2>/dev/null || true
  fi
  local deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    [ -z "$(procs_under "$dir/root")" ] && ! is_inner "$inner_pid" && break
    sleep 0.5
  done
  if is_inner "$inner_pid"; then
    echo "fresh-root-check: killing the run's PID 1 ($inner_pid)" >&2; kill -KILL "$inner_pid" 2>/dev/null || true
  fi
  for p in $(procs_under "$dir/root"); do
    echo "fresh-root-check: killing left-over PID $p ($(tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline"))" >&2
    kill -KILL "$p" 2>/dev/null || true
  done
  for p in $(mounts_under "$dir" | sort -r); do
    echo "fresh-root-check: unmounting left-over $p" >&2
    umount -l "$p" 2>/dev/null || true
  done
  if [ "$hugedir_before" = no ] && [ -d /dev/hugepages ] && ! mountpoint -q /dev/hugepages \
     && [ -z "$(ls -A /dev/hugepages)" ]; then
    rmdir /dev/hugepages  # made by setup-hugepages.sh through the bind-mounted /dev
  fi
  local netns_after mounts procs
  netns_after=$(ip netns list 2>/dev/null | awk '{print $1}' | sort || true)
  mounts=$(mounts_under "$dir" | tr '\n' ' ')
  procs=$(procs_under "$dir" | tr '\n' ' ')
  echo "fresh-root-check: host after the run: mounts under $dir: ${mounts:-none}; processes rooted there: ${procs:-none};" \
       "ip netns list: $([ "$netns_after" = "$netns_before" ] && echo "unchanged" || echo "CHANGED: before [$netns_before] after [$netns_after]");" \
       "vm.nr_hugepages: $nr_hugepages_before -> $(cat /proc/sys/vm/nr_hugepages)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v debootstrap >/dev/null || {
  echo "fresh-root-check: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

if [ "$fresh" = yes ] || [ ! -e "$dir/base/.mtpd-fresh-root-complete" ]; then
  rm -rf "$dir/base"
  echo "fresh-root-check: debootstrap --variant=$variant $suite $dir/base $mirror"
  t0=$(date +%s)
  debootstrap --variant="$variant" "$suite" "$dir/base" "$mirror" > "$dir/debootstrap.log" 2>&1 ||
    { tail -20 "$dir/debootstrap.log" >&2; echo "fresh-root-check: debootstrap failed (log: $dir/debootstrap.log)" >&2; exit 1; }
  date -u +%FT%TZ > "$dir/base/.mtpd-fresh-root-complete"
  echo "fresh-root-check: debootstrap took $(mmss $(($(date +%s) - t0)))"
else
  echo "fresh-root-check: reusing the $suite root made $(cat "$dir/base/.mtpd-fresh-root-complete") ($dir/base; --fresh to remake)"
fi

rm -rf "$dir/upper" "$dir/work" "$dir/logs"
mkdir -p "$dir/upper" "$dir/work" "$dir/root" "$dir/logs"

export FRC_DIR=$dir FRC_REPO=$repo FRC_WITH="${with[*]}"
[ -z "${FUZZ_SECONDS:-}" ] || export FUZZ_SECONDS
t0=$(date +%s)
unshare --mount --pid --fork --propagation private --kill-child=SIGTERM -- /bin/bash "$self" --inner \
  > >(tee "$dir/logs/fresh-root-check.log") 2>&1 &
child=$!
for _ in $(seq 50); do
  inner_pid=$(inner_of "$child")
  [ -n "$inner_pid" ] && break
  kill -0 "$child" 2>/dev/null || break
  sleep 0.1
done
rc=0; wait "$child" || rc=$?
child=""
sleep 0.5   # let tee drain
echo "fresh-root-check: total $(mmss $(($(date +%s) - t0))) (logs: $dir/logs/; the run's files stay in $dir/upper until the next run)"
exit $rc
