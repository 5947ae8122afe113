#!/usr/bin/env bash
# test.sh — the README's test command: installs what is missing (bootstrap.sh), type-checks,
# lints (`npm run lint`: dependency-cruiser layering rules + ESLint), then runs every tap test,
# including the ones that boot TCG guests under QEMU 10, and ends with one "N passed, N failed" line.
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
if [ -n "$total" ]; then
  echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
fi
exit "$rc"
