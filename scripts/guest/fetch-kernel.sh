#!/usr/bin/env bash
# fetch-kernel.sh — fetches the guest kernel (Debian 12's current linux-image-amd64) and the
# headers needed to build guest-driver/ out of tree, without installing anything system-wide.
#
# Idempotent: the kernel version is resolved from what apt offers *now* (the linux-image-amd64
# metapackage's candidate dependency; it moves with security updates). If that version is already
# extracted under .cache/guest/root/ nothing is downloaded.
#
# Result:
#   .cache/guest/debs/*.deb                    the downloaded packages
#   .cache/guest/root/                         all of them extracted with dpkg-deb -x
#   .cache/guest/root/usr/src/linux-headers-<ver>-amd64   KERNELSRC for `make -C … M=… modules`
#   .cache/guest/kernel-version                <ver>-amd64 (the release string, as `uname -r`)
#   .cache/guest/kernel-src                    absolute path of the KERNELSRC above
#
# Debian's headers tree is split: linux-headers-<ver>-amd64 holds the config and generated files;
# its Makefile includes /usr/src/linux-headers-<abi>-common/Makefile by absolute path, which is
# rewritten here to point inside the cache (any absolute symlinks in the trees are rewritten too;
# in 6.1.0-56 the scripts/ and tools/ links to linux-kbuild-6.1 are already relative).
# The compiler package (linux-compiler-gcc-12-x86) is only a dependency on gcc-12, which
# build-essential already brings, so it is not fetched.
set -euo pipefail

log() { printf '[fetch-kernel] %s\n' "$*" >&2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$REPO/.cache/guest"
DEBS="$CACHE/debs"
ROOT="$CACHE/root"
mkdir -p "$DEBS"

# linux-image-amd64 Depends: linux-image-6.1.0-NN-amd64 (the candidate version, i.e. bookworm /
# bookworm-security, not backports, which has priority 100).
img=$(apt-cache depends linux-image-amd64 2>/dev/null \
  | sed -nE 's/^ *Depends: (linux-image-[0-9][^ ]*-amd64)$/\1/p' | head -n1)
if [ -z "$img" ]; then
  log "cannot resolve the kernel from apt-cache depends linux-image-amd64 (apt-get update needed?)"
  exit 1
fi
rel=${img#linux-image-}          # 6.1.0-56-amd64
abi=${rel%-amd64}                # 6.1.0-56
major=$(echo "$abi" | cut -d. -f1-2)   # 6.1
pkgs=("linux-image-$rel" "linux-headers-$rel" "linux-headers-$abi-common" "linux-kbuild-$major")

KSRC="$ROOT/usr/src/linux-headers-$rel"
stamp="$ROOT/.complete-$rel"
# (The headers Makefile holds the absolute cache path: a moved checkout re-extracts.)
if [ -f "$stamp" ] && [ -d "$KSRC" ] && [ -f "$CACHE/kernel-version" ] \
   && [ "$(cat "$CACHE/kernel-version")" = "$rel" ] \
   && grep -q "^include $ROOT/usr/src/" "$KSRC/Makefile"; then
  log "kernel $rel already fetched"
  echo "$rel"
  exit 0
fi

log "kernel release $rel; downloading ${pkgs[*]}"
for p in "${pkgs[@]}"; do
  if ! ls "$DEBS/${p}_"*.deb >/dev/null 2>&1; then
    # apt-get download writes into the current directory; as root apt drops privileges to _apt,
    # which must be able to write there, so download into a scratch dir first.
    tmp=$(mktemp -d); chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -q "$p" </dev/null >/dev/null)
    mv "$tmp"/*.deb "$DEBS/"; rm -rf "$tmp"
  fi
done

# A different (older) kernel may have been extracted before: start the tree afresh.
rm -rf "$ROOT"; mkdir -p "$ROOT"
for p in "${pkgs[@]}"; do
  deb=$(ls -t "$DEBS/${p}_"*.deb | head -n1)
  log "extracting $(basename "$deb")"
  dpkg-deb -x "$deb" "$ROOT"
done

# Rewrite absolute symlinks (e.g. scripts -> /usr/lib/linux-kbuild-6.1/scripts) so they resolve
# inside $ROOT. Only links inside the headers and kbuild trees matter for the build.
fix_links() {
  find "$1" -type l 2>/dev/null | while read -r l; do
    t=$(readlink "$l")
    case "$t" in
      /*) if [ -e "$ROOT$t" ] || [ -L "$ROOT$t" ]; then
            ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$ROOT$t")" "$l"
          fi ;;
    esac
  done
}
fix_links "$ROOT/usr/src"
fix_links "$ROOT/usr/lib/linux-kbuild-$major"
fix_links "$ROOT/lib/modules/$rel"
# The flavour Makefile is `include /usr/src/linux-headers-<abi>-common/Makefile`: make it point
# into the cache too.
sed -i -E "s#^include /usr/src/#include $ROOT/usr/src/#" "$KSRC/Makefile"

if [ ! -f "$KSRC/Makefile" ] || [ ! -e "$KSRC/scripts/Makefile.build" ] || [ ! -f "$ROOT/boot/vmlinuz-$rel" ]; then
  log "extracted tree looks incomplete ($KSRC)"; exit 1
fi

echo "$rel" > "$CACHE/kernel-version"
echo "$KSRC" > "$CACHE/kernel-src"
touch "$stamp"
log "kernel $rel ready; KERNELSRC=$KSRC"
echo "$rel"
