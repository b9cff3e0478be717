#!/usr/bin/env bash
# Interleaved throughput runs of a few loadbench servers started once, each with its own
# flags: for taking a cost apart by hand (for example keygate with and without the audit trail,
# with a sink that keeps nothing, or with an idle thread). Prints one line per round with each
# server's req/s; the servers run pinned to core 0, wrk to core 1, as in loadbench.
#
#   cargo build --release -p keygate-loadbench
#   bench/http/scripts/interleave.sh [-r ROUNDS] [-d SECS] NAME=VARIANT[:SERVER FLAGS] ...
#
# e.g. bench/http/scripts/interleave.sh plain=axum-plain kg=axum-keygate \
#        null="axum-keygate:--audit null --audit-core 1" \
#        sqlite="axum-keygate:--audit sqlite --audit-core 1"
#
# EXE_NAME=PATH runs server NAME from another build (e.g. a copy of an earlier commit's
# target/release/loadbench), for comparing two builds in the same rounds:
#   EXE_old=/tmp/loadbench.old bench/http/scripts/interleave.sh old=axum-keygate new=axum-keygate
#
# Traffic goes to 127.0.0.1 only; every run is bounded (wrk -d) and the servers are stopped at
# the end (or on Ctrl-C). Needs taskset, wrk and curl.
set -euo pipefail
rounds=6
duration=5
while getopts "r:d:" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    d) duration=$OPTARG ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,20p' "$0"; exit 2; }
root=$(cd "$(dirname "$0")/../../.." && pwd)
exe=$root/target/release/loadbench
script=$root/bench/http/wrk/keys.lua
[ -x "$exe" ] || { echo "build first: cargo build --release -p keygate-loadbench" >&2; exit 1; }
scratch=$(mktemp -d)
chmod 700 "$scratch"
names=()
lines=()
pids=()
ports=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap stop EXIT
port=$((20000 + RANDOM % 20000))
for spec in "$@"; do
  name=${spec%%=*}
  rest=${spec#*=}
  variant=${rest%%:*}
  flags=""
  [ "$rest" != "$variant" ] && flags=${rest#*:}
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "$name: a name is letters, digits and _" >&2; exit 2; }
  port=$((port + 1))
  own="EXE_$name"
  server_exe=${!own:-$exe}
  [ -x "$server_exe" ] || { echo "$own=$server_exe: not an executable" >&2; exit 1; }
  # shellcheck disable=SC2086 # the flags are words on purpose
  taskset -c 0 "$server_exe" serve "$variant" --port "$port" --keys-file "$scratch/$name.keys" $flags \
    > "$scratch/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  ports+=("$port")
done
for i in "${!names[@]}"; do
  for _ in $(seq 1 600); do
    if [ -s "$scratch/${names[$i]}.keys" ] && curl -s -o /dev/null "http://127.0.0.1:${ports[$i]}/hello"; then
      break
    fi
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$scratch/${names[$i]}.log" >&2; exit 1; }
    sleep 0.2
  done
done
load() { # PORT NAME SECONDS: req/s
  taskset -c 1 wrk -t1 -c32 "-d$3s" --timeout 10s -s "$script" "http://127.0.0.1:$1/hello" \
    -- "$scratch/$2.keys" | sed -n 's/.*LOADBENCH requests=\([0-9]*\) duration_us=\([0-9]*\).*/\1 \2/p' \
    | awk '{ printf "%.0f", $1 / $2 * 1e6 }'
}
for i in "${!names[@]}"; do load "${ports[$i]}" "${names[$i]}" 2 > /dev/null; done
for round in $(seq 1 "$rounds"); do
  line="round $round"
  order=("${!names[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=($(printf '%s\n' "${order[@]}" | tac))
  fi
  for i in "${order[@]}"; do
    line="$line ${names[$i]}=$(load "${ports[$i]}" "${names[$i]}" "$duration")"
  done
  echo "$line"
  lines+=("$line")
done
# Per server, the median over rounds of its req/s over the first server's (paired by round).
printf '%s\n' "${lines[@]}" | awk '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    for (f = 3; f <= NF; f++) { split($f, kv, "="); v[NR, kv[1]] = kv[2]; if (NR == 1) names[++k] = kv[1] }
  }
  END {
    base = names[1]
    for (i = 2; i <= k; i++) {
      for (r = 1; r <= NR; r++) ratio[r] = v[r, names[i]] / v[r, base]
      printf "%s / %s: median %.3f over %d rounds\n", names[i], base, median(ratio, NR), NR
    }
  }'
