#!/usr/bin/env bash
# Runs the test suite and the full benchmark on an NVIDIA GPU, and writes what they print to bench/results/:
#   gpu-<device>.json       the bench rows (bench/run.ts --json)
#   gpu-<device>.md         device, driver, test summary, the bench's tables and the reduction paths
#   gpu-<device>-tests.txt  the test run's full output
# For a Debian (or Ubuntu) machine where the NVIDIA driver is already installed (nvidia-smi works). It installs
# the Vulkan loader (libvulkan1) when missing, makes sure Vulkan finds NVIDIA's driver (writing the ICD file
# where a container runtime mounted the driver's libraries without it), points Dawn at that driver only (so
# that a Mesa lavapipe on the same machine is never picked), installs the node packages (npm ci), then runs
# `tsx test/run.ts` and `tsx bench/run.ts`.
# Usage: bash engine/gpu-check.sh [--no-npm-ci] [--skip-tests] [--skip-bench] [--quick]
#   --no-npm-ci   keep node_modules as it is (default: npm ci)
#   --quick       the quick bench (fewer samples, no fullOnly rows) instead of the full one
# Containers: the NVIDIA container runtime mounts the Vulkan part of the driver (libGLX_nvidia.so.0) only with
# NVIDIA_DRIVER_CAPABILITIES containing 'graphics' (or 'all'); with 'compute,utility' alone Vulkan sees no GPU.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

npm_ci=1; tests=1; bench=1; quick=()
for a in "$@"; do
  case "$a" in
    --no-npm-ci) npm_ci=0 ;;
    --skip-tests) tests=0 ;;
    --skip-bench) bench=0 ;;
    --quick) quick=(--quick) ;;
    *) echo "gpu-check: unknown flag $a (see the header of engine/gpu-check.sh)" >&2; exit 2 ;;
  esac
done

die() { echo "gpu-check: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_install() {
  is_root || die "please install as root: apt-get install $*"
  [ $apt_updated = 1 ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- the GPU and its driver ----
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs the NVIDIA driver installed"
gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)"
[ -n "$gpu_name" ] || die "nvidia-smi lists no GPU"
slug="$(printf '%s' "$gpu_name" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')"
echo "gpu-check: $gpu_name (driver $driver) -> bench/results/gpu-$slug.*"

# ---- Vulkan: the loader, and NVIDIA's ICD ----
. "$here/engine/nvidia-vulkan.sh"
if ! shared_libs | grep -q 'libvulkan\.so\.1'; then
  echo "gpu-check: installing the Vulkan loader (libvulkan1)"
  apt_install libvulkan1
fi
icd="$(nvidia_vulkan_icd)" || die "no NVIDIA Vulkan driver found"
# only NVIDIA's driver: Dawn would otherwise also see lavapipe where Mesa is installed
export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"

# ---- Node and the packages ----
command -v node >/dev/null || die "Node.js 20 or later is needed (e.g. from https://deb.nodesource.com or nvm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js 20 or later is needed, found $(node --version)"
if [ $npm_ci = 1 ]; then
  echo "gpu-check: npm ci"
  npm ci --no-audit --no-fund
fi
[ -d node_modules/webgpu ] || die "node_modules/webgpu missing (run without --no-npm-ci)"

adapter="$(node engine/probe-adapter.mjs)" || die "Dawn finds no WebGPU adapter through $icd (is the driver's Vulkan part installed?)"
echo "gpu-check: adapter $adapter"
case "$(printf '%s' "$adapter" | tr '[:upper:]' '[:lower:]')" in
  *nvidia*) ;;
  *) die "the adapter is not NVIDIA's: $adapter" ;;
esac

# ---- tests and bench ----
mkdir -p bench/results
tests_txt="bench/results/gpu-$slug-tests.txt"
json="bench/results/gpu-$slug.json"
md="bench/results/gpu-$slug.md"
status=0
test_summary="not run (--skip-tests)"
if [ $tests = 1 ]; then
  echo "gpu-check: tests -> $tests_txt"
  set +e
  npx tsx test/run.ts 2>&1 | tee "$tests_txt"
  test_rc=${PIPESTATUS[0]}
  set -e
  test_summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tests_txt" | tail -n1 || true)"
  [ -n "$test_summary" ] || test_summary="no summary line (exit status $test_rc)"
  [ "$test_rc" = 0 ] || status=1
fi
bench_out="$(mktemp)"
if [ $bench = 1 ]; then
  echo "gpu-check: bench -> $json, $md"
  set +e
  npx tsx bench/run.ts "${quick[@]}" --json "$json" 2>&1 | tee "$bench_out"
  bench_rc=${PIPESTATUS[0]}
  # every reduction path beside the device default (the GPU record has not been measured yet)
  echo "gpu-check: reduction paths (bench/reduce-quick.ts)" | tee -a "$bench_out"
  npx tsx bench/reduce-quick.ts 32,64,128,256 2>&1 | tee -a "$bench_out"
  [ "${PIPESTATUS[0]}" = 0 ] || bench_rc=1
  set -e
  [ "$bench_rc" = 0 ] || status=1
fi
{
  echo "# GPU check: $gpu_name"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- driver $driver; Vulkan ICD $icd; Node $(node --version)"
  echo "- adapter: \`$adapter\`"
  echo "- tests: $test_summary (full output: \`$(basename "$tests_txt")\`)"
  echo
  if [ $bench = 1 ]; then
    echo "## bench/run.ts ${quick[*]}"
    echo
    cat "$bench_out"
  fi
} >"$md"
rm -f "$bench_out"
echo "gpu-check: wrote $md$([ $bench = 1 ] && echo ", $json")"
exit $status
