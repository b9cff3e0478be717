#!/usr/bin/env bash
# The multi-instance demo: two instances of one service on one PostgreSQL and one Redis.
# Creates a key with the CLI, shows its rate limit shared across both instances, revokes it
# with the CLI and shows both instances refuse it (and how long that took).
#
#   examples/multi-instance/run.sh            # changes reach the instances by PostgreSQL NOTIFY
#   examples/multi-instance/run.sh redis      # ... by Redis pub/sub (the CLI publishes)
#
# Needs PostgreSQL and Redis running (defaults: the ones of this project's machines, see
# DESIGN.md); override with KEYGATE_DATABASE_URL / KEYGATE_REDIS_URL. Sends traffic to
# 127.0.0.1 only, and stops both instances when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

channel="${1:-postgres}"
case "$channel" in postgres | redis) ;; *) echo "usage: $0 [postgres|redis]" >&2; exit 2 ;; esac

export KEYGATE_DATABASE_URL="${KEYGATE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export KEYGATE_REDIS_URL="${KEYGATE_REDIS_URL:-redis://127.0.0.1:6379}"
# A demo pepper, the same for both instances and the CLI. Use your own secret in production.
export KEYGATE_PEPPER="${KEYGATE_PEPPER:-1:multi-instance-demo-pepper-not-a-secret-0123456789}"
export KEYGATE_PREFIX="${KEYGATE_PREFIX:-kg}"
export KEYGATE_INVALIDATION="$channel"
export KEYGATE_ACTOR="${KEYGATE_ACTOR:-multi-instance-demo}"
export RUST_LOG="${RUST_LOG:-warn}"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

step "building the CLI and the service"
cargo build -q -p keygate-cli -p example-multi-instance
bin=target/debug
logs="$(mktemp -d)"

step "starting instances a (:3001) and b (:3002), invalidation by $channel"
"$bin/example-multi-instance" 3001 a >"$logs/a.log" 2>&1 &
pid_a=$!
"$bin/example-multi-instance" 3002 b >"$logs/b.log" 2>&1 &
pid_b=$!
trap 'kill $pid_a $pid_b 2>/dev/null; wait 2>/dev/null; echo "logs: $logs"' EXIT

for port in 3001 3002; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null | grep -q '"invalidation_subscribed":true' && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '"invalidation_subscribed":true' ||
    fail "instance on :$port did not start or subscribe (see $logs)"
  echo "  :$port $(curl -fsS "http://127.0.0.1:$port/healthz")"
done

step "creating a key limited to 10/1m with the CLI"
created="$("$bin/keygate" create --name "multi-instance demo" --rate 10/1m --json)"
key="$(printf '%s' "$created" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')"
id="$(printf '%s' "$created" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')"
[ -n "$key" ] && [ -n "$id" ] || fail "could not read the created key"
echo "  key id $id (the key itself is in \$key; it is not printed)"

status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$1/hello"; }

step "12 requests, alternating between the instances: 10 allowed in total, not 20"
allowed=0
limited=0
for i in $(seq 1 12); do
  port=$((3001 + i % 2))
  code="$(status $port)"
  echo "  request $i -> :$port $code"
  case "$code" in 200) allowed=$((allowed + 1)) ;; 429) limited=$((limited + 1)) ;; esac
done
[ "$allowed" -eq 10 ] && [ "$limited" -eq 2 ] || fail "expected 10 × 200 and 2 × 429, got $allowed and $limited"
echo "  shared limit holds: $allowed allowed, $limited refused with 429"

step "revoking the key with the CLI; both instances must refuse it"
started="$(date +%s%N)"
"$bin/keygate" revoke "$id" >/dev/null
for port in 3001 3002; do
  for _ in $(seq 1 1000); do
    [ "$(status $port)" = 401 ] && break
  done
  [ "$(status $port)" = 401 ] || fail ":$port still accepts the revoked key"
  echo "  :$port refuses it $(( ($(date +%s%N) - started) / 1000000 )) ms after the CLI started the revoke"
done

step "done: limit shared, revoke seen by both instances"
