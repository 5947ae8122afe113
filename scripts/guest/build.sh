#!/usr/bin/env bash
# build.sh — builds everything the VMPI test guest needs, idempotently:
#   .cache/guest/vmlinuz              Debian 12's current kernel (scripts/guest/fetch-kernel.sh)
#   .cache/guest/vmpi.ko              guest-driver/ built against that kernel's headers
#   .cache/guest/vmpi-perf            guest-driver/tools/vmpi-perf.c, static
#   .cache/guest/udp-goodput          guest-driver/tools/udp-goodput.c, static (bench/fig4a; the
#                                     host side runs the same binary)
#   .cache/guest/initramfs.cpio.gz    busybox + virtio modules + vmpi.ko + vmpi-perf + udp-goodput
#                                     + /init, and the NIC modules of NET_MODULES (not loaded at
#                                     boot: /etc/vmpi-net-modules lists them in load order),
#                                     and virtio_console for the virtio-serial series (likewise,
#                                     /etc/vmpi-serial-modules)
#   .cache/guest/vmpi-shutdown-check  guest-driver/tools/vmpi-shutdown-check.c, static (also in
#                                     the initramfs; test/vmpi-qemu.test.ts)
#   .cache/guest/vmpi-batch-check     guest-driver/tools/vmpi-batch-check.c, static (likewise)
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
# NIC drivers for bench/fig4a (virtio-net-pci and e1000 guests), copied with their dependencies
# but left for the guest to insmod (in the order of /etc/vmpi-net-modules).
NET_MODULES=(virtio_net e1000)
# virtio-serial for bench/fig4a's virtio-serial series, the same way (/etc/vmpi-serial-modules).
SERIAL_MODULES=(virtio_console)

inputs=("$DRV/vmpi.c" "$DRV/vmpi_uapi.h" "$DRV/Kbuild" "$DRV/tools/vmpi-perf.c"
        "$DRV/tools/udp-goodput.c" "$DRV/tools/perf-common.h" "$DRV/tools/vmpi-shutdown-check.c"
        "$DRV/tools/vmpi-batch-check.c" "$REPO/scripts/guest/build.sh" "$REPO/scripts/guest/init")
hash=$( { echo "$rel ${WANT_MODULES[*]} net: ${NET_MODULES[*]} serial: ${SERIAL_MODULES[*]}"; sha256sum "${inputs[@]}" | cut -d' ' -f1;
          sha256sum /bin/busybox | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
stamp="$CACHE/build.hash"
outs=("$CACHE/vmlinuz" "$CACHE/initramfs.cpio.gz" "$CACHE/vmpi.ko" "$CACHE/vmpi-perf" "$CACHE/udp-goodput"
      "$CACHE/vmpi-shutdown-check" "$CACHE/vmpi-batch-check")
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
log "building udp-goodput (static)"
gcc -static -O2 -Wall -Wextra -I"$DRV" -o "$CACHE/udp-goodput" "$DRV/tools/udp-goodput.c"
log "building vmpi-shutdown-check (static)"
gcc -static -O2 -Wall -Wextra -I"$DRV" -o "$CACHE/vmpi-shutdown-check" "$DRV/tools/vmpi-shutdown-check.c"
log "building vmpi-batch-check (static)"
gcc -static -O2 -Wall -Wextra -I"$DRV" -o "$CACHE/vmpi-batch-check" "$DRV/tools/vmpi-batch-check.c"

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
boot_count=${#order[@]}
for m in "${NET_MODULES[@]}"; do add_mod "$m"; done
net_count=${#order[@]}
for m in "${SERIAL_MODULES[@]}"; do add_mod "$m"; done
serial_order=("${order[@]:$net_count}")
net_order=("${order[@]:$boot_count:$((net_count - boot_count))}")
order=("${order[@]:0:$boot_count}")
log "NIC modules (loaded on demand): ${net_order[*]}"
log "virtio-serial modules (loaded on demand): ${serial_order[*]}"

# --- initramfs ---
STAGE="$BUILD/initramfs"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib/modules}
cp /bin/busybox "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
install -m 0755 "$REPO/scripts/guest/init" "$STAGE/init"
install -m 0755 "$CACHE/vmpi-perf" "$STAGE/bin/vmpi-perf"
install -m 0755 "$CACHE/udp-goodput" "$STAGE/bin/udp-goodput"
install -m 0755 "$CACHE/vmpi-shutdown-check" "$STAGE/bin/vmpi-shutdown-check"
install -m 0755 "$CACHE/vmpi-batch-check" "$STAGE/bin/vmpi-batch-check"
cp "$CACHE/vmpi.ko" "$STAGE/lib/modules/vmpi.ko"
for m in "${order[@]}" "${net_order[@]}" "${serial_order[@]}"; do
  f=$(modpath "$m")
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$STAGE/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$STAGE/lib/modules/$m.ko" ;;
    *) cp "$f" "$STAGE/lib/modules/$m.ko" ;;
  esac
done
printf '%s\n' "${order[@]}" > "$STAGE/etc/vmpi-modules"
printf '%s\n' "${net_order[@]}" > "$STAGE/etc/vmpi-net-modules"
printf '%s\n' "${serial_order[@]}" > "$STAGE/etc/vmpi-serial-modules"
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
