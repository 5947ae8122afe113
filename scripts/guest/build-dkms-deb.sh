#!/usr/bin/env bash
# build-dkms-deb.sh — builds vmpi-dkms_<version>_all.deb, the guest driver as a DKMS package, so
# that a VM's vmpi.ko is rebuilt for every kernel it installs (a module built once for one kernel
# is lost on the next kernel upgrade).
#
#   scripts/guest/build-dkms-deb.sh [OUTDIR]      (default .cache/dkms); prints the .deb's path
#
# Contents: /usr/src/vmpi-<version>/ (vmpi.c, vmpi_uapi.h, Kbuild, dkms.conf), the modprobe.d
# file /etc/modprobe.d/vmpi.conf (guest-driver/vmpi-modprobe.conf: keeps gpio_virtio off the
# device) as a conffile, and maintainer scripts: postinst runs dkms add, then dkms install (build
# + install + depmod) for every kernel whose headers are installed; prerm runs dkms remove.
# <version> is package.json's. Needs dpkg-deb only (no debhelper); the build is reproducible
# (SOURCE_DATE_EPOCH: the last commit's time, else 0).
#
# In the VM (Debian/Ubuntu): apt-get install linux-headers-$(uname -r) ./vmpi-dkms_*_all.deb
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DRV="$REPO/guest-driver"
OUT=${1:-$REPO/.cache/dkms}
log() { printf '[dkms-deb] %s\n' "$*" >&2; }

version=$(sed -nE 's/^ *"version": *"([^"]+)".*/\1/p' "$REPO/package.json" | head -n1)
[ -n "$version" ] || { log "cannot read the version from package.json"; exit 1; }
name=vmpi
pkg=vmpi-dkms
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}

mkdir -p "$OUT"
stage=$(mktemp -d "${TMPDIR:-/tmp}/vmpi-dkms-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
src="$root/usr/src/$name-$version"
install -d -m 0755 "$src" "$root/etc/modprobe.d" "$root/usr/share/doc/$pkg" "$root/DEBIAN"
install -m 0644 "$DRV/vmpi.c" "$DRV/vmpi_uapi.h" "$DRV/Kbuild" "$src/"
sed -E "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$version\"/" "$DRV/dkms.conf" > "$src/dkms.conf"
chmod 0644 "$src/dkms.conf"
grep -q "^PACKAGE_VERSION=\"$version\"$" "$src/dkms.conf" || { log "dkms.conf has no PACKAGE_VERSION line"; exit 1; }
install -m 0644 "$DRV/vmpi-modprobe.conf" "$root/etc/modprobe.d/vmpi.conf"
cat > "$root/usr/share/doc/$pkg/README" <<DOC
vmpi-dkms $version: the VMPI guest driver (vmpi.ko) built by DKMS for each installed kernel.
Sources: /usr/src/$name-$version. /etc/modprobe.d/vmpi.conf keeps gpio_virtio (the other
driver of virtio device id 41) from claiming the VMPI device. Kernel headers must be installed
for a kernel to get the module (linux-headers-<release>); dkms status shows what is built.
DOC
chmod 0644 "$root/usr/share/doc/$pkg/README"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CTL
Package: $pkg
Version: $version
Architecture: all
Maintainer: vmpi maintainers <root@localhost>
Depends: dkms (>= 2.8), kmod
Recommends: linux-headers-generic | linux-headers-amd64
Section: kernel
Priority: optional
Installed-Size: $size
Description: VMPI guest driver (DKMS)
 The Linux driver for the VMPI device (virtio device id 41, on QEMU the
 vhost-user-gpio-pci carrier of the vmpi back-end): /dev/vmpiN for the shim
 DIF for hypervisors. DKMS rebuilds it for every kernel installed later.
 Ships /etc/modprobe.d/vmpi.conf, which blacklists gpio_virtio.
CTL
echo /etc/modprobe.d/vmpi.conf > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<POST
#!/bin/sh
set -e
NAME=$name
VERSION=$version
case "\$1" in
configure)
	if [ -z "\$(dkms status -m \$NAME -v \$VERSION 2>/dev/null)" ]; then
		dkms add -m \$NAME -v \$VERSION
	fi
	# Every kernel with headers (a kernel installed later: dkms' own kernel hook, AUTOINSTALL).
	for dir in /lib/modules/*; do
		[ -d "\$dir" ] || continue
		k=\${dir##*/}
		if [ ! -e "\$dir/build" ]; then
			echo "vmpi-dkms: no headers for kernel \$k (install linux-headers-\$k), vmpi.ko not built for it" >&2
			continue
		fi
		dkms install -m \$NAME -v \$VERSION -k "\$k" ||
			echo "vmpi-dkms: building vmpi.ko for \$k failed; see /var/lib/dkms/\$NAME/\$VERSION/build/make.log" >&2
	done
	;;
esac
exit 0
POST
cat > "$root/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
NAME=$name
VERSION=$version
case "\$1" in
remove|upgrade|deconfigure)
	if [ -n "\$(dkms status -m \$NAME -v \$VERSION 2>/dev/null)" ]; then
		dkms remove -m \$NAME -v \$VERSION --all || true
	fi
	;;
esac
exit 0
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
sh -n "$root/DEBIAN/postinst" && sh -n "$root/DEBIAN/prerm"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb="$OUT/${pkg}_${version}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "built $deb"
echo "$deb"
