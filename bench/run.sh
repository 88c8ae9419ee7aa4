#!/usr/bin/env bash
# orgd's benchmark: throughput, latency and memory as ratios to a bare axum handler, measured
# on this machine in this run. Usage: bench/run.sh   (see bench/README.md for the knobs)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
EXECUTIONS="${BENCH_EXECUTIONS:-1000000}"
REPORT_FILES="${BENCH_REPORT_FILES:-100000}"
PG_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
. bench/lib.sh

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
echo "building (release)…" >&2
cargo build --release --quiet --bin orgd --example bench-baseline --example bench-seed
BIN=target/release
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

now_ms() { date +%s%3N; }

# start NAME CMD... : starts a server, waits for its "listening on" line, sets URL and PID.
start() {
  local name="$1"; shift
  local out="$WORK/$name.out"
  local t0; t0=$(now_ms)
  "$@" > "$out" 2> "$WORK/$name.err" &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 500); do
    URL=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$out" | head -n1)
    [ -n "$URL" ] && break
    sleep 0.01
  done
  [ -n "$URL" ] || { cat "$WORK/$name.err" >&2; exit 1; }
  until curl -sf -o /dev/null "$URL/health" || curl -s -o /dev/null -w '%{http_code}' "$URL/api/organization" | grep -q 200; do sleep 0.005; done
  START_MS=$(( $(now_ms) - t0 ))
}

# measure LABEL PID URL [wrk args...]
measure() {
  local label="$1" pid="$2" url="$3"; shift 3
  local out; out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  printf '%s\t%s\t%s\n' "$label" "$rss" "$(echo "$out" | tr '\n' '|')" >> "$RESULTS"
  echo "$out" | grep -q "Non-2xx" && { echo "$label: non-2xx answers:" >&2; echo "$out" >&2; exit 1; } || true
}

start baseline "$BIN/examples/bench-baseline" 127.0.0.1:0
BASE_PID="$PID" BASE_URL="$URL"

bench_backend() {
  local backend="$1" db_url="$2"
  local data="$WORK/data-$backend"; mkdir -p "$data"
  serve_orgd() {
    start "orgd-$backend" env RUST_LOG=info ORGD_RATE_LIMIT_PER_MINUTE=1000000000 \
      ORGD_INGEST_RATE_LIMIT_PER_MINUTE=1000000000 DATABASE_URL="$db_url" \
      "$BIN/orgd" serve --bind 127.0.0.1:0 --data-dir "$data"
  }
  # The first start creates the schema (every migration); a cold start is any later one,
  # as when an instance restarts or another joins. Both are shown; the second one serves.
  serve_orgd
  printf '%s\t%s\t%s\n' "orgd first start, empty database, to first answer ($backend)" "-" "startup=$START_MS" >> "$RESULTS"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  serve_orgd
  local pid="$PID" url="$URL"
  printf '%s\t%s\t%s\n' "orgd cold start to first answer ($backend)" "-" "startup=$START_MS" >> "$RESULTS"
  read -r _ small < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Bench Small")
  echo "seeding $EXECUTIONS executions and $REPORT_FILES report files ($backend)…" >&2
  read -r _ big < <("$BIN/examples/bench-seed" "$db_url" "$JWT_SECRET" "Bench Big" --executions "$EXECUTIONS" --report-files "$REPORT_FILES")
  # The yardstick is measured again just before each backend's targets: on a shared machine
  # its speed drifts within minutes, and each ratio is taken against the one measured beside it.
  measure "baseline GET (constant JSON)" "$BASE_PID" "$BASE_URL/api/organization"
  measure "GET /api/organization ($backend)" "$pid" "$url/api/organization" -H "Authorization: Bearer $small"
  measure "GET /usage, empty org ($backend)" "$pid" "$url/api/organization/usage" -H "Authorization: Bearer $small"
  measure "GET /usage, $EXECUTIONS runs + $REPORT_FILES files ($backend)" "$pid" "$url/api/organization/usage" -H "Authorization: Bearer $big"
  cat > "$WORK/patch.lua" <<LUA
n = 0
request = function()
  n = n + 1
  return wrk.format("PATCH", nil, {["Authorization"] = "Bearer $small", ["Content-Type"] = "application/json"}, '{"name":"Bench ' .. n .. '"}')
end
LUA
  measure "PATCH /api/organization + audit ($backend)" "$pid" "$url/api/organization" -s "$WORK/patch.lua"
}

bench_backend sqlite "sqlite://$WORK/bench.db?mode=rwc"
if [ -n "$PG_URL" ]; then
  schema="bench_$(hex 6)"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  bench_backend postgres "$(schema_url "$PG_URL" "$schema")" || true
  psql "$PG_URL" -qc "DROP SCHEMA $schema CASCADE" >/dev/null || true
fi

python3 - "$RESULTS" "$DURATION" "$CONNECTIONS" <<'PY'
import re, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
base = None
print(f"wrk: {sys.argv[2]} s per target, {sys.argv[3]} connections, loopback\n")
print(f"| target | req/s | p50 ms | p99 ms | peak RSS MiB | vs baseline |")
print(f"|---|---:|---:|---:|---:|---:|")
for label, rss, out in rows:
    if out.startswith("startup="):
        print(f"| {label} | | | | | {out.split('=')[1]} ms |")
        continue
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    p50 = ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"99%\s+(\S+)", out).group(1))
    if label.startswith("baseline"):
        base = rps
    print(f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {int(rss)/1024:.1f} | {rps/base*100:.0f} % |")
PY
