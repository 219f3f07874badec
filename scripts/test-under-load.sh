#!/usr/bin/env bash
# The suite, run N times back to back (default 3) while stress-ng keeps every core busy: the proof that the
# tests fail only for real reasons on a loaded machine (CONTRIBUTING.md § The test suite). Prints each run's
# totals and wall time, then one line per run, and keeps each run's whole output in a temp folder; exits
# non-zero when any run failed.
# Usage: scripts/test-under-load.sh [runs] [-- vitest args]
set -uo pipefail
runs=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
command -v stress-ng >/dev/null 2>&1 || {
  echo "stress-ng is missing: apt-get install stress-ng" >&2
  exit 2
}
cores=$(nproc)
stress-ng --cpu "$cores" --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null' EXIT
logs=$(mktemp -d "${TMPDIR:-/tmp}/ferry-loaded.XXXXXX")
summary=()
failed=0
for run in $(seq 1 "$runs"); do
  start=$(date +%s)
  npx vitest run "$@" >"$logs/run-$run.log" 2>&1
  status=$?
  out=$(cat "$logs/run-$run.log")
  wall=$(($(date +%s) - start))
  totals=$(printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^ +Tests ' | tail -1 | sed 's/^ *//')
  [ "$status" -eq 0 ] || {
    failed=1
    printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' FAIL |×' | head -20
  }
  summary+=("run $run/$runs under stress-ng --cpu $cores: ${totals:-no totals} (exit $status) in ${wall} s")
  echo "${summary[-1]}"
done
printf '%s\n' "${summary[@]}"
echo "full output of each run: $logs"
exit "$failed"
