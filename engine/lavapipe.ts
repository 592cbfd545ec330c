// Settings for Mesa's lavapipe (the CPU Vulkan driver Dawn uses when there is no GPU), applied in Node before
// Dawn loads the driver. Other drivers ignore them.
//
// lavapipe runs 8 invocations per SIMD instruction by default, even on CPUs with AVX-512. With
// LP_NATIVE_VECTOR_WIDTH=512 it runs 16 (subgroup size 16). Kernels bound by instruction count rather than FMA
// throughput (broadcast matmul) nearly halve their time; kernels bound by per-lane loads (the narrow convolutions
// that dominate the default BYOL step) get slower, since each such load costs twice as much per instruction.
// So the default stays 8 lanes, and the choice is made by timing the whole BYOL step at both widths
// (`npx tsx bench/lane-width.ts`), which writes it to a cache this file reads at start. The measurements:
// bench/results/lavapipe-width.md.
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

/**
 * Where bench/lane-width.ts writes its measured choice ({ [cpu model]: { width, ... } }): beside the tuners'
 * caches (engine/tuning.ts's convention, which this file cannot import: the device imports it).
 */
export async function lavapipeWidthCachePath(): Promise<string> {
  const os = await nodeModule('node:os');
  const path = await nodeModule('node:path');
  return path.join(process.env.BYOL_WEBGPU_CACHE_DIR || path.join(os.tmpdir(), 'byol-webgpu'), 'lavapipe-width.json');
}

/** The CPU's model name (lavapipe-width.json's key: a measured width holds for the CPU it was measured on). Node only. */
export async function cpuModel(): Promise<string> {
  const fs = await nodeModule('node:fs');
  const os = await nodeModule('node:os');
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown CPU';
}

/** Chooses lavapipe's SIMD width for this process; call before the first webgpu create(). Idempotent. */
export async function configureLavapipe(): Promise<LavapipeConfig> {
  if (applied) return applied;
  const env = process.env;
  const fs = await nodeModule('node:fs');
  const path = await nodeModule('node:path');
  const os = await nodeModule('node:os');
  let width: number | null = null;
  let why: string;
  let measured: { width?: number; stepMs?: Record<string, number[]> } | undefined;
  try {
    measured = JSON.parse(fs.readFileSync(await lavapipeWidthCachePath(), 'utf8'))[await cpuModel()];
  } catch {
    // no measurement yet
  }
  if (env.LP_NATIVE_VECTOR_WIDTH) {
    width = Number(env.LP_NATIVE_VECTOR_WIDTH);
    why = `LP_NATIVE_VECTOR_WIDTH=${width} set by the user`;
  } else if (measured && (measured.width === 256 || measured.width === 512)) {
    width = measured.width;
    // the driver reads the variable when it loads, so the measured width reaches it through the environment
    if (width !== 256) env.LP_NATIVE_VECTOR_WIDTH = String(width);
    else width = null;
    why = `${measured.width / 32} lanes, measured fastest for the BYOL step by bench/lane-width.ts (${await lavapipeWidthCachePath()})`;
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
