#!/usr/bin/env bash
# A 3-member etcd cluster on 127.0.0.1, to compare Shoal with (docs/performance.md).
#
#   scripts/etcd-cluster.sh start DIR          start e1..e3 (fresh data in DIR/e1.data ...)
#   scripts/etcd-cluster.sh stop DIR           stop what `start` started (by pid, SIGTERM then SIGKILL)
#   scripts/etcd-cluster.sh kill DIR WHO       SIGKILL one member: e1|e2|e3|leader|follower
#   scripts/etcd-cluster.sh endpoints          print the client URLs, comma-separated
#
# Uses Debian's etcd-server package (etcd 3.4), installed with apt-get when `etcd` is missing
# (as root). Members listen for clients on 127.0.0.1:12379/22379/32379 and for peers on
# 12380/22380/32380, with etcd's defaults otherwise: every write is fsync'd to the WAL of a
# majority before it is acknowledged, reads (ranges) are linearizable. Logs in DIR/eN.log, pids
# in DIR/pids. Only processes this script started (pid from DIR/pids, command line naming DIR)
# are ever signalled.
set -euo pipefail

MEMBERS=(e1 e2 e3)
CLIENT_PORTS=(12379 22379 32379)
PEER_PORTS=(12380 22380 32380)

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

endpoints() {
  local out=() i
  for i in 0 1 2; do out+=("http://127.0.0.1:${CLIENT_PORTS[$i]}"); done
  (IFS=,; echo "${out[*]}")
}

ensure_etcd() {
  if command -v etcd >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "etcd is not installed: apt-get install etcd-server (as root), then run this again" >&2
    exit 1
  fi
  echo "installing Debian's etcd-server ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2
}

# Whether pid $1 is alive and is an etcd whose command line names directory $2.
ours() {
  local pid=$1 dir=$2 cmdline
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  case "$cmdline" in *etcd*"--data-dir $dir/"*) return 0 ;; *) return 1 ;; esac
}

start() {
  local dir=$1 cluster="" i name
  ensure_etcd
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pids" ]; then
    while read -r pid name; do
      if ours "$pid" "$dir"; then
        echo "an etcd cluster from this script already runs in $dir (member $name, pid $pid): stop it first" >&2
        exit 1
      fi
    done <"$dir/pids"
  fi
  : >"$dir/pids"
  for i in 0 1 2; do
    cluster+="${cluster:+,}${MEMBERS[$i]}=http://127.0.0.1:${PEER_PORTS[$i]}"
  done
  for i in 0 1 2; do
    name=${MEMBERS[$i]}
    rm -rf "${dir:?}/$name.data"
    etcd --name "$name" \
      --data-dir "$dir/$name.data" \
      --listen-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
      --initial-cluster "$cluster" \
      --initial-cluster-token shoal-bench \
      --initial-cluster-state new \
      >"$dir/$name.log" 2>&1 </dev/null &
    echo "$! $name" >>"$dir/pids"
  done
  for i in 0 1 2; do
    local url="http://127.0.0.1:${CLIENT_PORTS[$i]}/health" tries=0
    until curl -fs "$url" 2>/dev/null | grep -q '"health":"true"'; do
      tries=$((tries + 1))
      if [ "$tries" -gt 150 ]; then
        echo "${MEMBERS[$i]} is not healthy after 30 s; see $dir/${MEMBERS[$i]}.log" >&2
        stop "$dir"
        exit 1
      fi
      sleep 0.2
    done
  done
  echo "etcd $(etcd --version | sed -n 's/^etcd Version: //p'): 3 members healthy, data and logs in $dir" >&2
  echo "export ETCD_ENDPOINTS=$(endpoints)"
}

stop() {
  local dir=$1 pid name left
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/pids" ] || { echo "no $dir/pids: nothing to stop" >&2; return 0; }
  while read -r pid name; do
    if ours "$pid" "$dir"; then kill -TERM "$pid"; fi
  done <"$dir/pids"
  for _ in $(seq 100); do
    left=0
    while read -r pid name; do
      if ours "$pid" "$dir"; then left=1; fi
    done <"$dir/pids"
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  while read -r pid name; do
    if ours "$pid" "$dir"; then
      echo "$name (pid $pid) did not stop within 10 s: SIGKILL" >&2
      kill -KILL "$pid"
    fi
  done <"$dir/pids"
  rm -f "$dir/pids"
  echo "etcd stopped" >&2
}

# The member name of the current leader, from the maintenance status of each endpoint.
leader_name() {
  local i status member leader
  for i in 0 1 2; do
    status=$(curl -fs -X POST -d '{}' "http://127.0.0.1:${CLIENT_PORTS[$i]}/v3/maintenance/status" 2>/dev/null) || continue
    member=$(echo "$status" | grep -o '"member_id":"[0-9]*"' | grep -o '[0-9]*')
    leader=$(echo "$status" | grep -o '"leader":"[0-9]*"' | grep -o '[0-9]*')
    if [ -n "$member" ] && [ "$member" = "$leader" ]; then
      echo "${MEMBERS[$i]}"
      return 0
    fi
  done
  return 1
}

kill_member() {
  local dir=$1 who=$2 pid name target
  dir=$(cd "$dir" && pwd)
  case "$who" in
    leader) target=$(leader_name) || { echo "no leader found" >&2; exit 1; } ;;
    follower)
      local leader
      leader=$(leader_name) || { echo "no leader found" >&2; exit 1; }
      for name in "${MEMBERS[@]}"; do [ "$name" != "$leader" ] && { target=$name; break; }; done ;;
    e1 | e2 | e3) target=$who ;;
    *) usage ;;
  esac
  while read -r pid name; do
    if [ "$name" = "$target" ] && ours "$pid" "$dir"; then
      kill -KILL "$pid"
      echo "SIGKILL to etcd member $name (pid $pid)" >&2
      return 0
    fi
  done <"$dir/pids"
  echo "member $target is not running" >&2
  exit 1
}

case "${1:-}" in
  start) [ $# -eq 2 ] || usage; start "$2" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  kill) [ $# -eq 3 ] || usage; kill_member "$2" "$3" ;;
  endpoints) endpoints ;;
  *) usage ;;
esac
