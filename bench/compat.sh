#!/usr/bin/env bash
# GET /api/analytics/kpis and GET /api/executions/grouped latency against the size of the
# history: an empty organization, a small one (500 runs in 10 groups: the grouped view's first
# page is already full, 10 groups × 50 runs) and a big one (1,000,000 runs in 1,000 groups),
# seeded in the database, not through HTTP. Sequential requests on one kept-alive connection,
# alternating rounds so all see the same machine; prints median and p90 per organization and
# the ratios big/empty (KPIs) and big/small (grouped: same page, different history).
# Usage: bench/compat.sh
# Knobs: BENCH_EXECUTIONS, BENCH_GROUPS, BENCH_REQUESTS (per round), BENCH_ROUNDS,
# BENCH_DATABASE_URL / TEST_DATABASE_URL (adds a PostgreSQL run), BENCH_PROFILE (`release`,
# default, or `debug` to reuse the test build: dependencies are optimised in dev builds too,
# and the comparison is a ratio within one build).
set -euo pipefail
cd "$(dirname "$0")/.."

EXECUTIONS="${BENCH_EXECUTIONS:-1000000}"
RUN_GROUPS="${BENCH_GROUPS:-1000}"
REQUESTS="${BENCH_REQUESTS:-100}"
ROUNDS="${BENCH_ROUNDS:-5}"
PG_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
. bench/lib.sh

PROFILE="${BENCH_PROFILE:-release}"
echo "building ($PROFILE)…" >&2
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin orgd --example bench-seed
  BIN=target/release
else
  cargo build --quiet --bin orgd --example bench-seed
  BIN=target/debug
fi
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# timings URL TOKEN OUT: REQUESTS sequential GETs on one connection, one time_total per line.
timings() {
  local config="$WORK/curl.cfg"
  : > "$config"
  for _ in $(seq 1 "$REQUESTS"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$1" >> "$config"; done
  curl -s --fail -H "Authorization: Bearer $2" -w '%{time_total}\n' -K "$config" >> "$3"
}

bench_backend() {
  local backend="$1" db_url="$2"
  local data="$WORK/data-$backend"; mkdir -p "$data"
  env RUST_LOG=warn ORGD_RATE_LIMIT_PER_MINUTE=1000000000 ORGD_INGEST_RATE_LIMIT_PER_MINUTE=1000000000 \
    DATABASE_URL="$db_url" \
    "$BIN/orgd" serve --bind 127.0.0.1:0 --data-dir "$data" > "$WORK/orgd.out" 2> "$WORK/orgd.err" &
  PID=$!
  local url=""
  for _ in $(seq 1 500); do
    url=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$WORK/orgd.out" | head -n1)
    [ -n "$url" ] && break
    sleep 0.01
  done
  [ -n "$url" ] || { cat "$WORK/orgd.err" >&2; exit 1; }
  local empty small big started
  read -r _ empty < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Compat Empty")
  read -r _ small < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Compat Small" \
    --executions 500 --groups 10)
  echo "seeding $EXECUTIONS executions in $RUN_GROUPS groups ($backend)…" >&2
  started=$(date +%s)
  read -r _ big < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Compat Big" \
    --executions "$EXECUTIONS" --groups "$RUN_GROUPS")
  echo "seeded in $(( $(date +%s) - started )) s" >&2
  if [ "$backend" = postgres ]; then psql "$db_url" -qc "VACUUM ANALYZE"; fi
  echo "big organization's KPIs: $(curl -s -H "Authorization: Bearer $big" "$url/api/analytics/kpis")" >&2
  echo "big organization's first group: $(curl -s -H "Authorization: Bearer $big" "$url/api/executions/grouped?limit=1" | head -c 300)…" >&2
  for route in "/api/analytics/kpis" "/api/executions/grouped"; do
    local name; name=$(basename "$route")
    for org in empty small big; do : > "$WORK/$name-$org.txt"; done
    for token in "$empty" "$small" "$big"; do timings "$url$route" "$token" /dev/null; done   # warm-up
    for _ in $(seq 1 "$ROUNDS"); do
      timings "$url$route" "$empty" "$WORK/$name-empty.txt"
      timings "$url$route" "$small" "$WORK/$name-small.txt"
      timings "$url$route" "$big" "$WORK/$name-big.txt"
    done
    python3 - "$backend" "$route" "$WORK/$name-empty.txt" "$WORK/$name-small.txt" "$WORK/$name-big.txt" <<'PY'
import statistics, sys
backend, route, *paths = sys.argv[1:]
empty, small, big = [[float(l) * 1000 for l in open(p) if l.strip()] for p in paths]
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))]
e, s, b = statistics.median(empty), statistics.median(small), statistics.median(big)
print(f"{backend} {route}: empty median {e:.3f} ms p90 {q(empty, .9):.3f}; "
      f"500 runs median {s:.3f} ms p90 {q(small, .9):.3f}; "
      f"1M runs median {b:.3f} ms p90 {q(big, .9):.3f} ({len(big)} requests each); "
      f"big/empty {b / e:.3f}, big/small {b / s:.3f}")
PY
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

bench_backend sqlite "sqlite://$WORK/bench.db?mode=rwc"
if [ -n "$PG_URL" ]; then
  schema="bench_$(hex 6)"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  bench_backend postgres "$(schema_url "$PG_URL" "$schema")" || true
  psql "$PG_URL" -qc "DROP SCHEMA $schema CASCADE" >/dev/null || true
fi
