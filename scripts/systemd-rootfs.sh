#!/usr/bin/env bash
# systemd-rootfs.sh — builds, idempotently, the Debian 12 (bookworm) root filesystem in which the
# tests run a real systemd as PID 1 of a PID namespace (test/helpers/systemd.ts): minbase plus
# systemd, systemd-sysv, dbus and libatomic1, in .cache/systemd-rootfs.
# Owns: that directory only. It is built in a temporary directory beside it and renamed into
# place when debootstrap succeeded, so a half-built rootfs is never used; a second run does
# nothing (FORCE=1 rebuilds). The mirror is the first one of the machine's own apt sources, so no
# mirror host is written here. Needs debootstrap (scripts/setup-system.sh with VMPI_TEST_TOOLS=1)
# and root.
set -euo pipefail

log() { printf '[systemd-rootfs] %s\n' "$*" >&2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="$REPO/.cache"
ROOTFS="$CACHE/systemd-rootfs"
SUITE=bookworm
# libatomic1: the Node the tests bind-mount in links it (everything else it needs is in minbase).
INCLUDE=systemd,systemd-sysv,dbus,libatomic1
# What the rootfs was built from; a change of it rebuilds.
want="$SUITE minbase $INCLUDE"

if [ "${FORCE:-0}" != 1 ] && [ -x "$ROOTFS/lib/systemd/systemd" ] && [ "$(cat "$ROOTFS/.vmpi-rootfs" 2>/dev/null)" = "$want" ]; then
  log "up to date ($want)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then log "debootstrap needs root"; exit 1; fi
command -v debootstrap >/dev/null || { log "debootstrap is missing: run VMPI_TEST_TOOLS=1 scripts/setup-system.sh"; exit 1; }

mirror=""
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [ -f "$f" ] || continue
  mirror=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+bookworm([[:space:]].*)?$/\2/p' "$f" \
           | grep -v -- '-security' | head -n1)
  [ -n "$mirror" ] && break
done
[ -n "$mirror" ] || { log "no Debian mirror found in the apt sources; set MIRROR"; exit 1; }
mirror=${MIRROR:-$mirror}

mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/systemd-rootfs.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
  tail -n 20 "$tmp.log" >&2; rm -f "$tmp.log"
  log "debootstrap failed"; exit 1
fi
rm -f "$tmp.log"
rm -rf "$tmp/var/cache/apt/archives/"*.deb
echo "$want" > "$tmp/.vmpi-rootfs"
rm -rf "$ROOTFS"
mv "$tmp" "$ROOTFS"
trap - EXIT
log "built in $(( $(date +%s) - start )) s ($(du -sh "$ROOTFS" | cut -f1))"
