# Sourced by engine/gpu-check.sh and engine/device-check.sh: nvidia_vulkan_icd prints the Vulkan manifest (ICD
# file) of NVIDIA's driver, writing one where the driver's library is there without it (typical in containers),
# or returns 1 with the reason on stderr. The caller exports VK_DRIVER_FILES and VK_ICD_FILENAMES to it so that
# Dawn sees NVIDIA's driver only (never a Mesa lavapipe on the same machine).
shared_libs() { ldconfig -p 2>/dev/null || /sbin/ldconfig -p; }
nvidia_vulkan_icd() {
  local f
  for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json; do
    [ -f "$f" ] && { printf '%s\n' "$f"; return 0; }
  done
  if ! shared_libs | grep -q 'libGLX_nvidia\.so\.0'; then
    echo "no Vulkan driver of NVIDIA's (neither nvidia_icd.json nor libGLX_nvidia.so.0); in a container set NVIDIA_DRIVER_CAPABILITIES=all (or add 'graphics')" >&2
    return 1
  fi
  f="${TMPDIR:-/tmp}/byol-webgpu-nvidia_icd.json"
  printf '{ "file_format_version": "1.0.0", "ICD": { "library_path": "libGLX_nvidia.so.0", "api_version": "1.3.0" } }\n' >"$f"
  echo "wrote $f (the driver ships none here)" >&2
  printf '%s\n' "$f"
}
