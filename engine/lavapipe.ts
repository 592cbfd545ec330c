// Settings for Mesa's lavapipe (the CPU Vulkan driver Dawn uses when there is no GPU), applied in Node before
// Dawn loads the driver. Other drivers ignore them.
//
// lavapipe runs 8 invocations per SIMD instruction by default, even on CPUs with AVX-512. With
// LP_NATIVE_VECTOR_WIDTH=512 it runs 16 (subgroup size 16). Kernels bound by instruction count rather than FMA
// throughput (broadcast matmul) nearly halve their time; kernels bound by per-lane loads (the narrow convolutions
// that dominate the default BYOL step) get slower, since each such load costs twice as much per instruction.
// So it is opt-in, for matmul-heavy work. The measurements: bench/results/lavapipe-width.md.
// Mesa's on-disk shader cache does not key its texture-fetch functions by this width (a 512-wide process reads
// 256-wide ones and gets zeros), so every non-default width keeps its own cache directory.


import { nodeModule } from './node-module.ts';

export interface LavapipeConfig {
  /** the SIMD width this process asked lavapipe for, or null where it left the driver's default */
  vectorWidth: number | null;
  /** why */
  note: string;
}

let applied: LavapipeConfig | null = null;

/** Chooses lavapipe's SIMD width for this process; call before the first webgpu create(). Idempotent. */
export async function configureLavapipe(): Promise<LavapipeConfig> {
  if (applied) return applied;
  const env = process.env;
  const fs = await nodeModule('node:fs');
  const path = await nodeModule('node:path');
  const os = await nodeModule('node:os');
  let width: number | null = null;
  let why: string;
  if (env.LP_NATIVE_VECTOR_WIDTH) {
    width = Number(env.LP_NATIVE_VECTOR_WIDTH);
    why = `LP_NATIVE_VECTOR_WIDTH=${width} set by the user`;
  } else {
    let flags = '';
    try {
      flags = /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    } catch {
      // not Linux: keep the driver's default
    }
    why = /\bavx512f\b/.test(flags)
      ? 'lavapipe default width (LP_NATIVE_VECTOR_WIDTH=512 would speed matmul up ~2x on this AVX-512 CPU, but slows the narrow conv2d layers of a BYOL step)'
      : 'lavapipe default width';
  }
  // any width other than the default gets a shader cache of its own, also when the user chose it
  if (width !== null && width !== 256) {
    const base = env.MESA_SHADER_CACHE_DIR || env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
    env.MESA_SHADER_CACHE_DIR = path.join(base, `byol-webgpu-lp${width}`);
    why += `, shader cache ${env.MESA_SHADER_CACHE_DIR}`;
  }
  applied = { vectorWidth: width, note: why };
  return applied;
}

/** What configureLavapipe() did in this process (null before it ran). */
export function lavapipeConfig(): LavapipeConfig | null {
  return applied;
}
