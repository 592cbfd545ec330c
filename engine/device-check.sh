#!/usr/bin/env bash
# On a GPU machine of the device tool (no network, no Node; see engine/device-pack.sh, which packs .devpack here
# beforehand): unpacks Node, node_modules and the Vulkan loader, points Dawn at NVIDIA's driver, then runs the GPU
# measurements the open issues wait for, each under its own time limit so that the whole fits one call, and writes
# what each printed to $OUT (or bench/results/device/ without it):
#   adapter.txt     the adapter Dawn found (it must be NVIDIA's)
#   tune-conv.txt   tuneConv's timings and choice, the batchNorm-prologue measurement included (issue 13)
#   fusion-ab.txt   the training step with and without each fusion (bn-prologue, moments, bn-sums), with bind
#                   groups reused or not, and with a submit every 24 dispatches: the host records a step in 20-25
#                   ms, which a GPU may wait on (issue 13)
#   profile.txt     where the step's time goes: each dispatch replayed alone (bench/step-profile.ts) and the host's
#                   recording of it (bench/host-profile.ts), which a GPU may wait on (issue 13)
#   bench.txt       the quick bench, and bench.json its rows (issue 15's GPU table)
#   tests.txt       the test suite (issue 15)
# Usage: bash engine/device-check.sh [--budget SECONDS] [--stages LIST] [--any-adapter]
#   --budget       seconds for everything (default 540, inside the tool's 600 per call); the stages share it in order
#   --stages       which stages, comma-separated (default tune-conv,fusion-ab,profile,bench,tests), e.g. tests alone in a
#                  second call
#   --any-adapter  whatever adapter Dawn finds, not only NVIDIA's: a dry run of the pack and the stages on this
#                  machine's lavapipe, at no device time
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
budget=540
stages=tune-conv,fusion-ab,profile,bench,tests
any=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) budget="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    --any-adapter) any=1; shift ;;
    *) echo "device-check: unknown flag $1 (see the header of engine/device-check.sh)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
out="${OUT:-$here/bench/results/device}"
mkdir -p "$out"
log() { echo "device-check: $*" | tee -a "$out/device-check.txt"; }
left() { echo $((budget - ($(date +%s) - start))); }

# ---- unpack ----
[ -f .devpack/node.xz ] || { log "no .devpack here: run engine/device-pack.sh beforehand and carry .devpack"; exit 1; }
# xz, or Python's lzma where the machine has no xz
unxz_to_stdout() { if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi; }
mkdir -p /tmp/byol-node/bin
unxz_to_stdout .devpack/node.xz >/tmp/byol-node/bin/node && chmod +x /tmp/byol-node/bin/node
export PATH="/tmp/byol-node/bin:$PATH" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
[ -d node_modules/webgpu ] || unxz_to_stdout .devpack/node_modules.tar.xz | tar -xf -
icd="(any adapter)"
if [ $any = 0 ]; then
  for f in .devpack/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
  . "$here/engine/nvidia-vulkan.sh"
  icd="$(nvidia_vulkan_icd)" || { log "no NVIDIA Vulkan driver"; exit 1; }
  export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
fi
# the bench's PyTorch peer: this machine's python3 where it has torch
command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null && export BYOL_PYTHON="$(command -v python3)"
log "node $(node --version), ICD $icd, $(left) s left"
node engine/probe-adapter.mjs >"$out/adapter.txt" 2>&1 || { log "Dawn finds no adapter"; cat "$out/adapter.txt"; exit 1; }
cat "$out/adapter.txt"
[ $any = 1 ] || grep -qi nvidia "$out/adapter.txt" || { log "the adapter is not NVIDIA's"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >>"$out/adapter.txt"

tsx=(node node_modules/tsx/dist/cli.mjs)
status=0
# stage NAME FILE SHARE COMMAND...: runs COMMAND for at most SHARE of the time left (a fraction), appending to FILE
stage() {
  local name=$1 file=$2 share=$3; shift 3
  local t; t=$(awk -v l="$(left)" -v s="$share" 'BEGIN { t = int(l * s); print (t < 10 ? 10 : t) }')
  log "$name: up to $t s"
  echo "== $name: $*" >>"$out/$file"
  timeout "$t" "$@" 2>&1 | grep -v 'artificially reduced' >>"$out/$file"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { status=1; log "$name: exit status $rc$([ "$rc" = 124 ] && echo ' (time limit)')"; }
}
wants() { case ",$stages," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if wants tune-conv; then
  stage tune-conv tune-conv.txt 0.15 "${tsx[@]}" bench/tune-conv.ts
  stage tune-conv-tiled tune-conv.txt 0.10 "${tsx[@]}" bench/tune-conv.ts --tiled
fi
if wants fusion-ab; then
  for what in bn-prologue moments bn-sums submit:24 bind-groups; do
    stage "fusion-ab $what" fusion-ab.txt 0.12 "${tsx[@]}" bench/step-fusion-ab.ts 20 --what "$what"
  done
fi
if wants profile; then
  stage step-profile profile.txt 0.08 env BY_SHAPE=1 "${tsx[@]}" bench/step-profile.ts 3
  stage host-profile profile.txt 0.08 "${tsx[@]}" bench/host-profile.ts 30
fi
wants bench && stage bench bench.txt "$(wants tests && echo 0.45 || echo 1.0)" "${tsx[@]}" bench/run.ts --quick --json "$out/bench.json"
wants tests && stage tests tests.txt 1.0 "${tsx[@]}" test/run.ts
log "done in $(($(date +%s) - start)) s$(wants tests && echo "; tests: $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/tests.txt" | tail -n1)")"
exit $status
