#!/usr/bin/env bash
# Packs what a GPU machine with no network and no Node needs for engine/device-check.sh (the machines of the
# device tool, /work/.library/device: x86-64, root, no package registry) into .devpack/ (git-ignored):
#   node.xz               this machine's Node binary (Node's official builds need only glibc and libstdc++)
#   node_modules.tar.xz   node_modules for linux-x64 only: no other platforms' Dawn, source maps or minified copies
#   debs/                 the Vulkan loader (libvulkan1) from Debian's archive
# and checks that it fits the tool's 64 MiB (with the tracked files). Run it after npm ci, on x86-64; then
#   run({ carry: ['.devpack'], timeout_s: 600, command: 'bash engine/device-check.sh' })
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "device-pack: $*" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || die "the device machines are x86-64; pack on one (this is $(uname -m))"
[ -d node_modules/webgpu/dist/linux-x64 ] || die "node_modules/webgpu missing: run npm ci first"
node_bin="$(command -v node)" || die "node not found"
rm -rf .devpack
mkdir -p .devpack/debs
echo "device-pack: node $("$node_bin" --version) from $node_bin"
xz -T0 -6 -c "$node_bin" >.devpack/node.xz
echo "device-pack: node_modules"
tar -cf - \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='*.map' --exclude='*.min.js' --exclude='*.html' --exclude='*.fesm.js' --exclude='*.es2017.js' --exclude='miniprogram' \
  --exclude='node_modules/@tensorflow/*/src' \
  node_modules | xz -T0 -6 >.devpack/node_modules.tar.xz
echo "device-pack: the Vulkan loader"
(cd .devpack/debs && { apt-get download libvulkan1 2>/dev/null || { apt-get update -qq && apt-get download libvulkan1; }; }) >/dev/null
ls .devpack/debs/libvulkan1_*.deb >/dev/null || die "could not download libvulkan1"
pack=$(du -sb .devpack | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "device-pack: .devpack $((pack / 1048576)) MiB + tracked files $((tree / 1048576)) MiB of the tool's 64 MiB"
[ $((pack + tree)) -lt "$limit" ] || die "too large for the device tool's 64 MiB"
