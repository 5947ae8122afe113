#!/usr/bin/env bash
# test.sh — the README's test command: installs what is missing (bootstrap.sh), type-checks,
# lints (`npm run lint`: dependency-cruiser layering rules + ESLint), then runs every tap test,
# including the ones that boot TCG guests under QEMU 10, and ends with the failures (if any) and one
# "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests also drive libvirt and dkms: setup-system.sh installs them only when asked.
VMPI_TEST_TOOLS=1 bash scripts/bootstrap.sh
. scripts/node-env.sh
echo "[test] type-check" >&2
npx --no-install tsc -p tsconfig.json --noEmit
echo "[test] lint" >&2
npm run --silent lint
echo "[test] tap" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
npx --no-install tap "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -n1 || true)
total=$(sed -nE 's/.*total: ([0-9]+).*/\1/p' <<<"$summary")
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
skip=$(sed -nE 's/.*skip: ([0-9]+).*/\1/p' <<<"$summary")
# The failures again at the end, where a CI log cut to its tail still shows them: each failed
# assertion with the lines of its diagnosis (bounded), then the failed test files.
if grep -qE '^\s*not ok ' "$log"; then
  echo "[test] failures:"
  grep -nE -A14 '^\s+not ok ' "$log" | head -n 200 || true
  echo "[test] failed files:"
  grep -E '^not ok ' "$log" | head -n 50 || true
fi
if [ -n "$total" ]; then
  echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
fi
exit "$rc"
