#!/usr/bin/env bash
# Makes sure this machine can run WebGPU through Dawn, installing what is missing where it can.
# Dawn needs a Vulkan driver; without a GPU that is Mesa's lavapipe. Debian bookworm's own Mesa 22 is
# rejected by Dawn (it lacks shaderUniform*ArrayDynamicIndexing), so Mesa 25 comes from bookworm-backports.
# Usage: bash engine/setup.sh [--data] [--torch] [--bench] [--browser]   (installed package: npx byol setup [flags])
#   --data     also install Debian's dataset-fashion-mnist (the default training data)
#   --torch    also install python3-torch (to regenerate PyTorch fixtures)
#   --bench    also install python3-torch (about 1 GB) for the bench's PyTorch peer of the BYOL step rows
#              (bench/peer-torch.py); npm run bench runs without it and names the missing peer
#   --browser  also install Debian's chromium (for npm run test:browser)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

want_data=0; want_torch=0; want_browser=0
for a in "$@"; do
  case "$a" in
    --data) want_data=1 ;;
    --torch|--bench) want_torch=1 ;;
    --browser) want_browser=1 ;;
    *) echo "setup: unknown flag $a" >&2; exit 2 ;;
  esac
done

is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_update() { [ $apt_updated = 1 ] || { apt-get update -qq; apt_updated=1; }; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

have_adapter() {
  (cd "$here" && node engine/probe-adapter.mjs) >/dev/null 2>&1
}

is_debian_bookworm() { grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; }

install_lavapipe() {
  if ! is_root; then
    echo "setup: no WebGPU adapter found and not root. Run as root:" >&2
    echo "  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list" >&2
    echo "  apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1" >&2
    exit 1
  fi
  if is_debian_bookworm; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list
    fi
    apt_updated=0; apt_update
    echo "setup: installing Mesa (lavapipe) from bookworm-backports"
    apt_install -t bookworm-backports mesa-vulkan-drivers libvulkan1
  else
    apt_update
    echo "setup: installing mesa-vulkan-drivers and libvulkan1"
    apt_install mesa-vulkan-drivers libvulkan1
  fi
}

# the repository's node_modules, or wherever npm put the dependencies of an installed byol-webgpu
if ! (cd "$here" && node --input-type=module -e "import.meta.resolve('webgpu')") >/dev/null 2>&1; then
  echo "setup: the npm package webgpu is not installed; run 'npm ci' (in this repository) or 'npm install byol-webgpu' first" >&2
  exit 1
fi

if have_adapter; then
  echo "setup: WebGPU adapter found"
else
  install_lavapipe
  if ! have_adapter; then
    echo "setup: still no WebGPU adapter after installing Mesa; details:" >&2
    (cd "$here" && node engine/probe-adapter.mjs) >&2 || true
    exit 1
  fi
  echo "setup: WebGPU adapter found"
fi

need_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
install_pkgs() {
  local missing=()
  for p in "$@"; do need_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} = 0 ] && return 0
  if ! is_root; then echo "setup: please install: apt-get install ${missing[*]}" >&2; exit 1; fi
  apt_update; echo "setup: installing ${missing[*]}"; apt_install "${missing[@]}"
}
[ $want_data = 1 ] && install_pkgs dataset-fashion-mnist
[ $want_torch = 1 ] && install_pkgs python3-torch
[ $want_browser = 1 ] && install_pkgs chromium
exit 0
