#!/usr/bin/env bash
# build.sh — compile the TypeScript (tsconfig.build.json) into OUT (default dist/) and copy the
# non-TypeScript assets the code loads at run time (the .proto schemas) beside the JavaScript.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
shift || true
npx --no-install tsc -p tsconfig.build.json --outDir "$out" "$@"
find src -name '*.proto' -exec cp --parents {} "$out/" \;
