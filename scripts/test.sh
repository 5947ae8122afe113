#!/usr/bin/env bash
# test.sh — the README's test command: installs what is missing (bootstrap.sh), type-checks,
# then runs every tap test, including the ones that boot TCG guests under QEMU 10.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "[test] type-check" >&2
npx --no-install tsc -p tsconfig.json --noEmit
echo "[test] tap" >&2
exec npx --no-install tap "$@"
