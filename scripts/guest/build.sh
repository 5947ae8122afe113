#!/usr/bin/env bash
# build.sh — builds everything the VMPI test guest needs, idempotently:
#   .cache/guest/vmlinuz              Debian 12's current kernel (scripts/guest/fetch-kernel.sh)
#   .cache/guest/vmpi.ko              guest-driver/ built against that kernel's headers
#   .cache/guest/vmpi-perf            guest-driver/tools/vmpi-perf.c, static
#   .cache/guest/initramfs.cpio.gz    busybox + virtio modules + vmpi.ko + vmpi-perf + /init
#   .cache/guest/kernel-version       the kernel release (uname -r in the guest)
# Nothing is rebuilt when the inputs (sources, this script, /init, kernel release, busybox)
# hash the same as last time; FORCE=1 rebuilds. Needs no stdin. Builds out of tree in
# .cache/guest/build/, so guest-driver/ stays clean.
set -euo pipefail

log() { printf '[guest-build] %s\n' "$*" >&2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$REPO/.cache/guest"
BUILD="$CACHE/build"
DRV="$REPO/guest-driver"

rel=$("$REPO/scripts/guest/fetch-kernel.sh")
KSRC=$(cat "$CACHE/kernel-src")
KROOT="$CACHE/root"
MODDIR="$KROOT/lib/modules/$rel"

# Modules the guest needs for a virtio-pci device (their dependencies are added below).
WANT_MODULES=(virtio_pci)

inputs=("$DRV/vmpi.c" "$DRV/vmpi_uapi.h" "$DRV/Kbuild" "$DRV/tools/vmpi-perf.c"
        "$REPO/scripts/guest/build.sh" "$REPO/scripts/guest/init")
hash=$( { echo "$rel ${WANT_MODULES[*]}"; sha256sum "${inputs[@]}" | cut -d' ' -f1;
          sha256sum /bin/busybox | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
stamp="$CACHE/build.hash"
outs=("$CACHE/vmlinuz" "$CACHE/initramfs.cpio.gz" "$CACHE/vmpi.ko" "$CACHE/vmpi-perf")
up_to_date=1
for o in "${outs[@]}"; do [ -f "$o" ] || up_to_date=0; done
if [ "${FORCE:-0}" != 1 ] && [ "$up_to_date" = 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  log "up to date (kernel $rel)"
  exit 0
fi
rm -f "$stamp"

# --- module, built from a copy of guest-driver/ ---
rm -rf "$BUILD/driver"; mkdir -p "$BUILD/driver"
cp "$DRV/vmpi.c" "$DRV/vmpi_uapi.h" "$DRV/Kbuild" "$BUILD/driver/"
log "building vmpi.ko against $rel"
make -s -C "$KSRC" M="$BUILD/driver" modules 2>&1 | tee "$BUILD/module-build.log" >&2
if grep -qi 'warning:' "$BUILD/module-build.log"; then
  log "WARNING: the module build printed warnings (see $BUILD/module-build.log)"
fi
[ -f "$BUILD/driver/vmpi.ko" ] || { log "vmpi.ko was not built"; exit 1; }
strip --strip-debug -o "$CACHE/vmpi.ko" "$BUILD/driver/vmpi.ko"

# --- vmpi-perf, static ---
log "building vmpi-perf (static)"
gcc -static -O2 -Wall -Wextra -I"$DRV" -o "$CACHE/vmpi-perf" "$DRV/tools/vmpi-perf.c"

# --- virtio modules in load order (dependencies first, from modinfo) ---
declare -A seen=()
order=()
modpath() { find "$MODDIR/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -n1; }
add_mod() {
  local m=${1//-/_} f d
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  f=$(modpath "$m")
  if [ -z "$f" ]; then
    grep -q "/$m.ko\$" "$MODDIR/modules.builtin" && return 0   # built in: nothing to load
    log "module $m not found for $rel"; exit 1
  fi
  for d in $(modinfo -F depends "$f" | tr ',' ' '); do add_mod "$d"; done
  order+=("$m")
}
for m in "${WANT_MODULES[@]}"; do add_mod "$m"; done
log "guest modules: ${order[*]} vmpi"

# --- initramfs ---
STAGE="$BUILD/initramfs"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib/modules}
cp /bin/busybox "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
install -m 0755 "$REPO/scripts/guest/init" "$STAGE/init"
install -m 0755 "$CACHE/vmpi-perf" "$STAGE/bin/vmpi-perf"
cp "$CACHE/vmpi.ko" "$STAGE/lib/modules/vmpi.ko"
for m in "${order[@]}"; do
  f=$(modpath "$m")
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$STAGE/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$STAGE/lib/modules/$m.ko" ;;
    *) cp "$f" "$STAGE/lib/modules/$m.ko" ;;
  esac
done
printf '%s\n' "${order[@]}" > "$STAGE/etc/vmpi-modules"
echo "$rel" > "$STAGE/etc/vmpi-kernel-version"
echo 'root:x:0:0:root:/root:/bin/sh' > "$STAGE/etc/passwd"

# Reproducible archive: sorted names, fixed mtimes, root ownership.
find "$STAGE" -exec touch -h -d @0 {} +
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort \
   | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n > "$CACHE/initramfs.cpio.gz.tmp"
mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
cp "$KROOT/boot/vmlinuz-$rel" "$CACHE/vmlinuz"

echo "$hash" > "$stamp"
log "done: $CACHE/vmlinuz, $CACHE/initramfs.cpio.gz ($(du -h "$CACHE/initramfs.cpio.gz" | cut -f1)), kernel $rel"
