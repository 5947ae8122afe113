#!/usr/bin/env bash
# launch-guest.sh — boots the VMPI test guest (scripts/guest/build.sh) under QEMU 10, TCG.
#
#   qemu-configs/launch-guest.sh [options] [-- extra qemu args]
#     --vmpi SOCKET        add a VMPI device whose vhost-user backend listens on SOCKET (repeatable;
#                          the guest sees them as /dev/vmpi0, /dev/vmpi1, … in this order)
#     --run SCRIPT         run SCRIPT in the guest as /etc/vmpi-run.sh, then power off; the console
#                          shows "VMPI-GUEST-EXIT <rc>" and this script exits with <rc>
#     --initrd-append FILE append another (gzip or plain newc) cpio archive to the initramfs
#     --kernel FILE        kernel image (default .cache/guest/vmlinuz)
#     --initrd FILE        initramfs (default .cache/guest/initramfs.cpio.gz)
#     --node               boot the Node guest instead: .cache/guest/initramfs-node.cpio.gz
#                          (scripts/guest/build-node.sh; node + the project in /opt/vmpi)
#     --mem SIZE           guest RAM (default 512M); it is a shared memfd, as vhost-user needs
#     --smp N              vCPUs (default 1)
#     --append ARGS        extra kernel command line (e.g. vmpi_agent, vmpi_noload)
#     --serial-file FILE   console to FILE instead of stdio
#     --name NAME          QEMU -name (shows in ps)
#     --allow-reboot       let a guest reboot restart it (default: a reboot ends QEMU, -no-reboot)
#     --dry-run            print the QEMU command instead of running it
#   Environment: QEMU (default qemu-system-x86_64), VMPI_GUEST_DIR (default <repo>/.cache/guest).
#
# Without --run the guest starts a shell on the console (stdio). Exit from QEMU: Ctrl-A X, or
# `poweroff -f` in the guest. The backend must be listening on each SOCKET before the launch:
# QEMU is the vhost-user client and does not wait or reconnect (docs/DEVICE.md).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST=${VMPI_GUEST_DIR:-$REPO/.cache/guest}
QEMU=${QEMU:-qemu-system-x86_64}
mem=512M smp=1 append="" run="" serial="stdio" name="vmpi-guest" dry=0 noreboot=-no-reboot
socks=() appends=() extra=()
kernel="$GUEST/vmlinuz" initrd="$GUEST/initramfs.cpio.gz"

die() { echo "launch-guest: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --vmpi) socks+=("$2"); shift 2 ;;
    --run) run=$2; shift 2 ;;
    --initrd-append) appends+=("$2"); shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --node) initrd="$GUEST/initramfs-node.cpio.gz"; shift ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --append) append="$append $2"; shift 2 ;;
    --serial-file) serial="file:$2"; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --allow-reboot) noreboot=""; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -f "$kernel" ] && [ -f "$initrd" ] || die "no guest image $initrd: run scripts/guest/build.sh (build-node.sh for --node)"

tmp=""
cleanup() { [ -n "$tmp" ] && rm -rf "$tmp"; return 0; }
trap cleanup EXIT
if [ -n "$run" ] || [ ${#appends[@]} -gt 0 ]; then
  # -initrd takes one file: concatenate the archives (the kernel unpacks them in order,
  # later files overriding earlier ones).
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmpi-guest.XXXXXX")
  cp "$initrd" "$tmp/initrd"
  if [ -n "$run" ]; then
    [ -f "$run" ] || die "--run: no such file $run"
    mkdir -p "$tmp/extra/etc"
    install -m 0755 "$run" "$tmp/extra/etc/vmpi-run.sh"
    (cd "$tmp/extra" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
      | gzip -n >> "$tmp/initrd"
  fi
  for a in "${appends[@]}"; do cat "$a" >> "$tmp/initrd"; done
  initrd="$tmp/initrd"
fi

cmd=("$QEMU" -name "$name"
  -machine q35,accel=tcg,memory-backend=mem
  -object "memory-backend-memfd,id=mem,size=$mem,share=on"
  -m "$mem" -smp "$smp"
  -nodefaults -nographic -display none ${noreboot:+"$noreboot"}
  -serial "$serial"
  -kernel "$kernel" -initrd "$initrd"
  -append "console=ttyS0 quiet panic=-1 $append")
i=0
for s in "${socks[@]}"; do
  cmd+=(-chardev "socket,id=vmpi$i,path=$s" -device "vhost-user-gpio-pci,chardev=vmpi$i,id=vmpi$i")
  i=$((i + 1))
done
cmd+=("${extra[@]}")

if [ "$dry" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi

if [ -z "$run" ]; then
  "${cmd[@]}"
  exit $?
fi

# --run: pass the console through and exit with the guest script's status.
out="$tmp/console"
if [ "$serial" = stdio ]; then
  set +e
  "${cmd[@]}" </dev/null | tee "$out"
  qrc=${PIPESTATUS[0]}
  set -e
else
  set +e; "${cmd[@]}" </dev/null; qrc=$?; set -e
  out=${serial#file:}
fi
rc=$(tr -d '\r' < "$out" | sed -nE 's/^VMPI-GUEST-EXIT ([0-9]+)$/\1/p' | tail -n1)
if [ -z "$rc" ]; then
  echo "launch-guest: guest did not report VMPI-GUEST-EXIT (qemu status $qrc)" >&2
  exit 125
fi
exit "$rc"
