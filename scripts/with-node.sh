#!/usr/bin/env bash
# with-node.sh — runs a command with the supported Node first on PATH (scripts/node-env.sh), for
# the npm scripts that start after bootstrap.sh in the same line (demo, benches).
set -euo pipefail
. "$(dirname "$0")/node-env.sh"
exec "$@"
