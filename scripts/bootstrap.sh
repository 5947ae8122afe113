#!/usr/bin/env bash
# bootstrap.sh — everything a fresh Debian 12 machine needs before vmpi runs, idempotently:
# system packages (scripts/setup-system.sh), a supported Node (scripts/setup-node.sh: the active
# LTS when the system's is older), npm dependencies and the native addon (npm ci),
# the TypeScript build, and the guest artefacts (kernel, module, initramfs: scripts/guest/build.sh;
# the same plus Node and this project: scripts/guest/build-node.sh) and, for the tests
# (VMPI_TEST_TOOLS=1), the Debian rootfs that systemd runs in (scripts/systemd-rootfs.sh).
# Used by `npm test` and `npm run demo`; quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[bootstrap] %s\n' "$*" >&2; }

bash scripts/setup-system.sh
bash scripts/setup-node.sh
. scripts/node-env.sh
log "node $(node --version) ($(command -v node)), headers for node-gyp: ${npm_config_nodedir:-none found}"

# The addon is rebuilt when its sources change or when the Node that loads it has another ABI.
abi="$(node -p 'process.versions.modules') $(node --version)"
abi_stamp=build/Release/.node-abi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  # npm ci's install script has just built the addon with this node and these headers.
  [ -f build/Release/vmpi_native.node ] && echo "$abi" > "$abi_stamp"
fi
if [ ! -f build/Release/vmpi_native.node ] || [ "$(cat "$abi_stamp" 2>/dev/null)" != "$abi" ] \
   || [ -n "$(find addon binding.gyp -newer build/Release/vmpi_native.node 2>/dev/null | head -n1)" ]; then
  log "building the native addon for node $abi"
  npx --no-install node-gyp rebuild --loglevel=warn >/dev/null
  echo "$abi" > "$abi_stamp"
fi
log "building TypeScript"
bash scripts/build.sh

if [ "${VMPI_SKIP_GUEST:-0}" != 1 ]; then
  bash scripts/guest/build.sh
  # The guest image with Node and this project (dist/), for the TypeScript stack in the VM.
  STRICT_TSC=1 bash scripts/guest/build-node.sh
fi
if [ "${VMPI_TEST_TOOLS:-0}" = 1 ]; then
  # The rootfs for the tests that run a real systemd as PID 1 of a namespace (about 40 s once).
  bash scripts/systemd-rootfs.sh
fi
