#!/usr/bin/env bash
# Sustained single-job submits over HTTP: wrk posting `noop` jobs to /v1/jobs on a release
# build of the server with its default settings (in-memory queue), in consecutive rounds.
# Prints, per round: requests/s, latency p50/p90/p99/max (wrk --latency), non-2xx answers and
# the server's resident memory at the end of the round.
#
#   benches/http/sustained.sh [ROUNDS=8] [SECONDS=15] [CONNECTIONS=64]
#
# Needs `wrk` (apt-get install wrk). Extra JOBYARD_* variables in the environment reach the
# server, e.g. JOBYARD_RETENTION_MAX_JOBS=50000 benches/http/sustained.sh.
set -euo pipefail
ROUNDS=${1:-8}
SECS=${2:-15}
CONNS=${3:-64}
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp)
SCRIPT=$(mktemp --suffix=.lua)
cat > "$SCRIPT" <<'LUA'
wrk.method = "POST"
wrk.body = '{"kind":"noop"}'
wrk.headers["Content-Type"] = "application/json"
LUA
JOBYARD_ADDR=127.0.0.1:$PORT RUST_LOG=warn target/release/jobyard serve >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$SCRIPT" "$LOG"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done
printf '%-6s %10s %9s %9s %9s %9s %8s %9s\n' round 'req/s' p50 p90 p99 max non-2xx 'RSS MiB'
for r in $(seq "$ROUNDS"); do
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$SCRIPT" "http://127.0.0.1:$PORT/v1/jobs")
  rss=$(awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$PID/status")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p90=$(awk '$1=="90%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  max=$(awk '$1=="Latency"{print $4; exit}' <<<"$out")
  bad=$(awk '/Non-2xx/{print $5}' <<<"$out")
  printf '%-6s %10s %9s %9s %9s %9s %8s %9s\n' "$r" "$rps" "$p50" "$p90" "$p99" "$max" "${bad:-0}" "$rss"
done
echo "stats: $(curl -s "http://127.0.0.1:$PORT/v1/stats" | head -c 300)"
grep -E 'ERROR|panicked' "$LOG" | head -5 || true
