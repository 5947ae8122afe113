#!/usr/bin/env bash
# build-node.sh — the opt-in Node guest image, idempotently:
#   .cache/guest/initramfs-node.cpio.gz   the base initramfs (scripts/guest/build.sh, built first)
#                                         + /usr/bin/node (stripped) and the shared libraries ldd
#                                         lists, at their paths
#                                         + the project in /opt/vmpi: dist/ (tsc -p
#                                         tsconfig.build.json), build/Release/vmpi_native.node,
#                                         package.json and the production node_modules
# Boot it with `qemu-configs/launch-guest.sh --node`; in the guest:
#   node /opt/vmpi/dist/src/cli.js ...   or   import '/opt/vmpi/dist/src/vmpi/guest-port.js'
# Nothing is rebuilt when the inputs (base initramfs, node and its libraries, the addon, package
# files, sources, this script) hash the same as last time; FORCE=1 rebuilds. The base build stays
# as it was (this script only reads its output). Needs the addon built (`npx node-gyp rebuild`).
# Type errors reported by tsc are warnings (the JavaScript is emitted anyway) unless STRICT_TSC=1.
set -euo pipefail

log() { printf '[guest-build-node] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$REPO/.cache/guest"
BUILD="$CACHE/build"
BASE="$CACHE/initramfs.cpio.gz"
OUT="$CACHE/initramfs-node.cpio.gz"
ADDON="$REPO/build/Release/vmpi_native.node"
# Build-time only packages that `npm ls --omit=dev` still lists (headers for node-gyp).
SKIP_PACKAGES=(node-addon-api)

"$REPO/scripts/guest/build.sh"
[ -f "$BASE" ] || die "no base initramfs $BASE"
[ -f "$ADDON" ] || die "native addon $ADDON missing: run \`npx node-gyp rebuild\` first"
NODE=$(readlink -f "$(command -v node)") || die "node not found"

# Shared libraries at the paths ldd gives (the dynamic loader by its absolute path).
mapfile -t LIBS < <(ldd "$NODE" | awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }')
[ ${#LIBS[@]} -gt 0 ] || die "ldd listed no libraries for $NODE"
# Production dependencies, relative to the repo (the first line is the project itself).
mapfile -t DEPS < <(cd "$REPO" && npm ls --omit=dev --parseable --all 2>/dev/null | tail -n +2 \
  | sed "s|^$REPO/||" | LC_ALL=C sort -u)
[ ${#DEPS[@]} -gt 0 ] || die "npm ls --omit=dev listed no dependencies: run npm ci"

srcs=$(cd "$REPO" && find src test/frontend bench -type f 2>/dev/null | LC_ALL=C sort)
hash=$( { node --version; echo "${LIBS[*]}"; echo "${DEPS[*]}";
          sha256sum "$BASE" "$NODE" "$ADDON" "${LIBS[@]}" "${BASH_SOURCE[0]}" | cut -d' ' -f1;
          cd "$REPO" && sha256sum package.json package-lock.json tsconfig.json tsconfig.build.json scripts/build.sh $srcs; } \
        | sha256sum | cut -d' ' -f1)
stamp="$CACHE/build-node.hash"
if [ "${FORCE:-0}" != 1 ] && [ -f "$OUT" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  log "up to date ($OUT, $(du -h "$OUT" | cut -f1))"
  exit 0
fi
rm -f "$stamp"

STAGE="$BUILD/initramfs-node"
rm -rf "$STAGE"
mkdir -p "$STAGE"
(cd "$STAGE" && gzip -dc "$BASE" | cpio -idm --quiet --no-absolute-filenames)

# --- node and its libraries ---
mkdir -p "$STAGE/usr/bin"
strip --strip-all -o "$STAGE/usr/bin/node" "$NODE" 2>/dev/null || cp "$NODE" "$STAGE/usr/bin/node"
chmod 0755 "$STAGE/usr/bin/node"
for lib in "${LIBS[@]}"; do
  mkdir -p "$STAGE$(dirname "$lib")"
  cp -L "$lib" "$STAGE$lib"
done
log "node $(node --version) + ${#LIBS[@]} libraries: ${LIBS[*]}"

# --- the project in /opt/vmpi ---
APP="$STAGE/opt/vmpi"
mkdir -p "$APP/build/Release"
log "compiling TypeScript (tsconfig.build.json) into the image"
set +e
(cd "$REPO" && bash scripts/build.sh "$APP/dist" --declaration false --sourceMap false) > "$BUILD/node-tsc.log" 2>&1
tscrc=$?
set -e
if [ $tscrc -ne 0 ]; then
  grep -v '^npm warn' "$BUILD/node-tsc.log" | head -20 >&2 || true
  [ "${STRICT_TSC:-0}" = 1 ] && die "tsc failed (STRICT_TSC=1)"
  log "WARNING: tsc reported errors (full log $BUILD/node-tsc.log); using the JavaScript it emitted"
fi
for f in src/vmpi/guest-port.js src/sys/native.js src/cli.js; do
  [ -f "$APP/dist/$f" ] || die "tsc did not emit dist/$f (see $BUILD/node-tsc.log)"
done
install -m 0755 "$ADDON" "$APP/build/Release/vmpi_native.node"
cp "$REPO/package.json" "$APP/package.json"
copied=()
for d in "${DEPS[@]}"; do
  name=${d##*node_modules/}
  skip=0
  for s in "${SKIP_PACKAGES[@]}"; do [ "$d" = "node_modules/$s" ] && skip=1; done
  for c in "${copied[@]}"; do case "$d" in "$c"/*) skip=1 ;; esac; done   # inside a copied package
  [ "$skip" = 1 ] && continue
  [ -d "$REPO/$d" ] || die "dependency $name is not installed ($d): run npm ci"
  mkdir -p "$APP/$(dirname "$d")"
  cp -a "$REPO/$d" "$APP/$d"
  copied+=("$d")
done
# Not needed at run time.
find "$APP/node_modules" \( -name '*.md' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
  -o -name '*.map' -o -name '*.ts' -o -name LICENSE.md \) -type f -delete
log "/opt/vmpi: dist $(du -sh "$APP/dist" | cut -f1), node_modules $(du -sh "$APP/node_modules" | cut -f1) (${#copied[@]} packages)"

# Reproducible archive: sorted names, fixed mtimes, root ownership.
find "$STAGE" -exec touch -h -d @0 {} +
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort \
   | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -6n > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$hash" > "$stamp"
log "done: $OUT ($(du -h "$OUT" | cut -f1); unpacked $(du -sh "$STAGE" | cut -f1))"
