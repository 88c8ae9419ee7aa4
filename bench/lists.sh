#!/usr/bin/env bash
# First pages of the lists for a small organization vs one with a long history: one connection,
# sequential requests (wrk -c1), rounds alternating between the two organizations, medians of
# the mean latency. Usage: bench/lists.sh   (knobs: BENCH_EXECUTIONS, default 1,000,000;
# BENCH_ROUNDS, default 3; BENCH_DURATION s per round, default 2; PostgreSQL too when
# BENCH_DATABASE_URL or TEST_DATABASE_URL is set)
set -euo pipefail
cd "$(dirname "$0")/.."

EXECUTIONS="${BENCH_EXECUTIONS:-1000000}"
ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-2}"
PG_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
. bench/lib.sh

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
echo "building (release)…" >&2
cargo build --release --quiet --bin orgd --example bench-seed
BIN=target/release
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# mean latency in ms of PATH with TOKEN over one round
mean_ms() {
  wrk -t1 -c1 -d"${DURATION}s" -H "Authorization: Bearer $2" "$URL$1" |
    awk '/Latency/ { v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+/, "", v);
          print (u=="us" ? v/1000 : (u=="s" ? v*1000 : v)) }'
}

bench_backend() {
  local backend="$1" db_url="$2"
  RUST_LOG=warn ORGD_RATE_LIMIT_PER_MINUTE=1000000000 ORGD_INGEST_RATE_LIMIT_PER_MINUTE=1000000000 \
    DATABASE_URL="$db_url" "$BIN/orgd" serve --bind 127.0.0.1:0 --data-dir "$WORK/data-$backend" \
    > "$WORK/$backend.out" 2> "$WORK/$backend.err" &
  PID=$!
  URL=""
  for _ in $(seq 1 500); do
    URL=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$WORK/$backend.out" | head -n1)
    [ -n "$URL" ] && break
    sleep 0.01
  done
  [ -n "$URL" ] || { cat "$WORK/$backend.err" >&2; exit 1; }
  read -r _ small < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Lists Small" --executions 50)
  echo "seeding $EXECUTIONS executions ($backend)…" >&2
  read -r _ big < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Lists Big" --executions "$EXECUTIONS")
  for path in "/api/executions?limit=25" "/api/executions?limit=25&status=PASSED" \
              "/api/executions?limit=25&status=FAILED,PASSED" "/api/users" \
              "/api/organization/audit-logs"; do
    local s=() b=()
    for _ in $(seq 1 "$ROUNDS"); do
      s+=("$(mean_ms "$path" "$small")"); b+=("$(mean_ms "$path" "$big")")
    done
    python3 - "$backend" "$path" "${s[*]}" "${b[*]}" <<'PY'
import statistics, sys
backend, path, s, b = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
ms, mb = statistics.median(map(float, s)), statistics.median(map(float, b))
print(f"| {path} ({backend}) | {ms:.2f} | {mb:.2f} | {mb/ms:.2f} |")
PY
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

echo "| first page | 50 runs ms | $EXECUTIONS runs ms | ratio |"
echo "|---|---:|---:|---:|"
bench_backend sqlite "sqlite://$WORK/lists.db?mode=rwc"
if [ -n "$PG_URL" ]; then
  schema="bench_$(hex 6)"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  bench_backend postgres "$(schema_url "$PG_URL" "$schema")" || true
  psql "$PG_URL" -qc "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
fi
