#!/usr/bin/env bash
# GET /api/organization/usage latency: an empty organization vs one with 1,000,000 executions
# and 100,000 report files (seeded in the database, not through HTTP). Sequential requests on
# one kept-alive connection, alternating rounds so both see the same machine; prints median
# and p90 per organization and the ratio. Usage: bench/usage.sh
# Knobs: BENCH_EXECUTIONS, BENCH_REPORT_FILES, BENCH_REQUESTS (per round), BENCH_ROUNDS,
# BENCH_DATABASE_URL / TEST_DATABASE_URL (adds a PostgreSQL run).
set -euo pipefail
cd "$(dirname "$0")/.."

EXECUTIONS="${BENCH_EXECUTIONS:-1000000}"
REPORT_FILES="${BENCH_REPORT_FILES:-100000}"
REQUESTS="${BENCH_REQUESTS:-200}"
ROUNDS="${BENCH_ROUNDS:-5}"
PG_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
. bench/lib.sh

echo "building (release)…" >&2
cargo build --release --quiet --bin orgd --example bench-seed
BIN=target/release
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
  env RUST_LOG=warn ORGD_RATE_LIMIT_PER_MINUTE=1000000000 DATABASE_URL="$db_url" \
    "$BIN/orgd" serve --bind 127.0.0.1:0 --data-dir "$data" > "$WORK/orgd.out" 2> "$WORK/orgd.err" &
  PID=$!
  local url=""
  for _ in $(seq 1 500); do
    url=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$WORK/orgd.out" | head -n1)
    [ -n "$url" ] && break
    sleep 0.01
  done
  [ -n "$url" ] || { cat "$WORK/orgd.err" >&2; exit 1; }
  read -r _ empty < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Bench Empty")
  echo "seeding $EXECUTIONS executions and $REPORT_FILES report files ($backend)…" >&2
  read -r _ big < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Bench Big" \
    --executions "$EXECUTIONS" --report-files "$REPORT_FILES")
  # Let autovacuum's work on the fresh million rows not land inside the measurement.
  if [ "$backend" = postgres ]; then psql "$db_url" -qc "VACUUM ANALYZE"; fi
  echo "big organization's usage: $(curl -s -H "Authorization: Bearer $big" "$url/api/organization/usage")" >&2
  : > "$WORK/empty.txt"; : > "$WORK/big.txt"
  timings "$url/api/organization/usage" "$empty" /dev/null   # warm-up
  timings "$url/api/organization/usage" "$big" /dev/null
  for _ in $(seq 1 "$ROUNDS"); do
    timings "$url/api/organization/usage" "$empty" "$WORK/empty.txt"
    timings "$url/api/organization/usage" "$big" "$WORK/big.txt"
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  python3 - "$backend" "$WORK/empty.txt" "$WORK/big.txt" <<'PY'
import statistics, sys
backend, empty, big = sys.argv[1], *[[float(l) * 1000 for l in open(p) if l.strip()] for p in sys.argv[2:]]
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))]
e, b = statistics.median(empty), statistics.median(big)
print(f"{backend}: empty org median {e:.3f} ms p90 {q(empty, .9):.3f} ms ({len(empty)} requests); "
      f"1M runs + 100k files median {b:.3f} ms p90 {q(big, .9):.3f} ms ({len(big)} requests); "
      f"ratio {b / e:.3f}")
PY
}

bench_backend sqlite "sqlite://$WORK/bench.db?mode=rwc"
if [ -n "$PG_URL" ]; then
  schema="bench_$(hex 6)"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  bench_backend postgres "$(schema_url "$PG_URL" "$schema")" || true
  psql "$PG_URL" -qc "DROP SCHEMA $schema CASCADE" >/dev/null || true
fi
