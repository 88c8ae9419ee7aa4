#!/usr/bin/env bash
# Two builds of orgd compared on one machine in one run: `GET /api/organization` on SQLite
# (or PostgreSQL), the two binaries alternating round by round so that a busy machine slows
# both alike.
# Usage: bench/paired.sh OLD_BIN NEW_BIN   (e.g. a release build of an older commit vs this one)
# Knobs: BENCH_ROUNDS (default 5), BENCH_DURATION (s per round and binary, default 5),
# BENCH_CONNECTIONS (32), BENCH_THREADS (2); BENCH_BACKEND=postgres serves each binary from
# its own schema of BENCH_DATABASE_URL (default TEST_DATABASE_URL) instead of SQLite.
set -euo pipefail
OLD="${1:?old binary}"; NEW="${2:?new binary}"
ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-5}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
BACKEND="${BENCH_BACKEND:-sqlite}"
PG_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
[ "$BACKEND" = sqlite ] || [ -n "$PG_URL" ] || { echo "BENCH_BACKEND=postgres needs BENCH_DATABASE_URL" >&2; exit 2; }
WORK="$(mktemp -d)"
PIDS=()
SCHEMAS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  for s in "${SCHEMAS[@]:-}"; do
    [ -n "$s" ] && psql "$PG_URL" -qc "SET client_min_messages = warning; DROP SCHEMA $s CASCADE" >/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# database_url NAME: sets DB to where NAME keeps its data (a schema of its own on PostgreSQL).
database_url() {
  if [ "$BACKEND" = sqlite ]; then DB="sqlite://$WORK/$1/orgd.db?mode=rwc"; return; fi
  local schema="paired_$1_$(hex 4)"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  SCHEMAS+=("$schema")
  DB=$(schema_url "$PG_URL" "$schema")
}

# start NAME BIN: serves NAME, signs up an organization; sets URL and TOKEN.
start() {
  local name="$1" bin="$2"
  mkdir -p "$WORK/$name"
  database_url "$name"
  env RUST_LOG=info ORGD_RATE_LIMIT_PER_MINUTE=1000000000 ORGD_INGEST_RATE_LIMIT_PER_MINUTE=1000000000 \
    DATABASE_URL="$DB" \
    "$bin" serve --bind 127.0.0.1:0 --data-dir "$WORK/$name" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=("$!")
  URL=""
  for _ in $(seq 1 500); do
    URL=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$WORK/$name.out" 2>/dev/null | head -n1)
    [ -n "$URL" ] && break
    sleep 0.01
  done
  [ -n "$URL" ] || { cat "$WORK/$name.err" >&2; exit 1; }
  TOKEN=$(curl -sf "$URL/api/auth/signup" -H 'content-type: application/json' \
    -d "{\"email\":\"$name@example.com\",\"password\":\"Bench-Password-1!\",\"name\":\"Bench\",\"organizationName\":\"Bench $name\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
}

start old "$OLD"; OLD_URL="$URL"; OLD_TOKEN="$TOKEN"
start new "$NEW"; NEW_URL="$URL"; NEW_TOKEN="$TOKEN"

rps() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer $2" "$1/api/organization" |
    tee -a "$WORK/wrk.log" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non-2xx" > "/dev/stderr"; exit 1}'
}

echo "round	old req/s	new req/s	new/old"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so neither always gets the warmer (or busier) slot.
  if [ $((round % 2)) -eq 1 ]; then o=$(rps "$OLD_URL" "$OLD_TOKEN"); n=$(rps "$NEW_URL" "$NEW_TOKEN")
  else n=$(rps "$NEW_URL" "$NEW_TOKEN"); o=$(rps "$OLD_URL" "$OLD_TOKEN"); fi
  echo "$round	$o	$n	$(python3 -c "print(f'{$n/$o*100:.1f} %')")"
  echo "$o $n" >> "$WORK/pairs"
done
python3 - "$WORK/pairs" <<'PY'
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
old = statistics.median(p[0] for p in pairs); new = statistics.median(p[1] for p in pairs)
ratio = statistics.median(p[1] / p[0] for p in pairs)
print(f"median: old {old:,.0f} req/s, new {new:,.0f} req/s; median of per-round ratios new/old {ratio*100:.1f} %")
PY
