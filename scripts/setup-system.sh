#!/usr/bin/env bash
# setup-system.sh — installs the system packages vmpi needs on Debian 12, idempotently.
# Owns: apt sources for bookworm-backports (QEMU 10), build tools, busybox/cpio for guest
# initramfs, the guest kernel's build headers; with VMPI_TEST_TOOLS=1 (set by scripts/test.sh) also
# libvirt (test/libvirt-qemu.test.ts boots the shipped domain), dkms (test/guest-dkms.test.ts
# builds the guest driver's DKMS package), debootstrap (scripts/systemd-rootfs.sh builds the
# rootfs the tests run a real systemd in) and promtool (Debian's prometheus package), which the
# demo and a plain install do not need; with VMPI_BENCH_DPDK=1 dpdk-dev (bench:datapath's testpmd).
# Safe to run again: it only acts on what is missing.
set -euo pipefail

log() { printf '[setup-system] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need_update=0
BACKPORTS=/etc/apt/sources.list.d/vmpi-backports.sources
if [ ! -f "$BACKPORTS" ]; then
  # Derive the backports stanza from the first stanza of the distribution's own sources file,
  # so no mirror host is written here.
  src=/etc/apt/sources.list.d/debian.sources
  if [ ! -f "$src" ]; then
    log "cannot enable bookworm-backports: $src not found; add a bookworm-backports source by hand"; exit 1
  fi
  awk 'BEGIN{RS="";ORS="\n\n"} NR==1{print; exit}' "$src" \
    | sed -E 's/^Suites:.*/Suites: bookworm-backports/' | $SUDO tee "$BACKPORTS" >/dev/null
  log "enabled bookworm-backports in $BACKPORTS"
  need_update=1
fi

stamp=/var/lib/apt/periodic/vmpi-update-stamp
if [ "$need_update" = 1 ] || [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
  log "apt-get update"
  $SUDO apt-get update -qq
  $SUDO mkdir -p "$(dirname "$stamp")"; $SUDO touch "$stamp"
fi

# systemd (systemd-analyze) and libxml2-utils (xmllint) check the files in qemu-configs/.
# libvirt-daemon-system: libvirtd, virtlogd and virsh, without recommends (no dnsmasq, no
# firewall tools). On a host with systemd its services start as usual; in a container a
# policy-rc.d keeps them stopped and the libvirt test starts libvirtd itself. Debian defines
# libvirt's "default" network without autostart, so libvirtd creates no bridge. dkms: builds the
# guest driver's DKMS package in a test. debootstrap: the Debian rootfs in which tests run systemd
# as PID 1 of a PID namespace (fd store, Type=notify units). prometheus: Debian ships promtool only
# in the server's package; the tests need promtool (check metrics, check rules, test rules on
# qemu-configs/prometheus/).
pkgs=(build-essential python3 make g++ busybox-static cpio kmod iproute2 xz-utils zstd systemd libxml2-utils)
if [ "${VMPI_TEST_TOOLS:-0}" = 1 ]; then pkgs+=(libvirt-daemon-system dkms debootstrap prometheus); fi
# tmux: test/top-tmux.test.ts runs `vmpi top` in a detached tmux session, as a person would.
if [ "${VMPI_TEST_TOOLS:-0}" = 1 ]; then pkgs+=(tmux); fi
# strace: test/listen-atomic.test.ts holds a server between bind(2) and listen(2) (strace's syscall
# delay injection) to show a socket file is never there before it listens.
if [ "${VMPI_TEST_TOOLS:-0}" = 1 ]; then pkgs+=(strace); fi
# dpdk-dev: dpdk-testpmd, the comparison bench:datapath runs when it is on PATH. Opt-in with
# VMPI_BENCH_DPDK=1, not part of the test tools: no test needs it, and Debian 12 ships testpmd only
# in dpdk-dev, which pulls in every PMD and its -dev packages (about 160 MB installed, measured with
# apt-get install -s). The bench skips DPDK with a line saying so when testpmd is missing.
if [ "${VMPI_BENCH_DPDK:-0}" = 1 ]; then pkgs+=(dpdk-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only promtool was wanted: on a host with systemd the package also enabled and started a
  # Prometheus server listening on every address (port 9090). Stop the one this script installed.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    log "prometheus: only promtool is needed; disabling the server the package started"
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -nE 's/^QEMU emulator version ([0-9]+).*/\1/p'; }
if [ "$(qemu_major || true)" = "" ] || [ "$(qemu_major)" -lt 10 ]; then
  log "installing QEMU from bookworm-backports"
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi
log "QEMU: $(qemu-system-x86_64 --version | head -n1)"

# /dev/kvm as Debian's udev rule sets it (root:kvm 0660). Containers without udev leave it
# root-only; libvirt then finds KVM unusable for its QEMU user (libvirt-qemu, group kvm) while its
# cached QEMU capabilities say KVM, so it probes QEMU again on every lookup: `virsh define` took
# 55 s instead of 0.02 s here. TCG guests (<domain type='qemu'>) do not use /dev/kvm either way.
if [ "${VMPI_TEST_TOOLS:-0}" = 1 ] && [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c '%G:%a' /dev/kvm)" != "kvm:660" ]; then
  log "giving /dev/kvm to group kvm, mode 0660 (as udev does on Debian)"
  $SUDO chgrp kvm /dev/kvm && $SUDO chmod 0660 /dev/kvm
fi
