// Chooses lavapipe's SIMD width (8 or 16 lanes) by timing the whole BYOL training step at each, in child processes
// (the width is fixed when Dawn loads the driver), alternating the two so that both see the same machine, and
// writes the choice where engine/lavapipe.ts reads it at the next start: $BYOL_WEBGPU_CACHE_DIR or
// os.tmpdir()/byol-webgpu, file lavapipe-width.json, keyed by the CPU model. LP_NATIVE_VECTOR_WIDTH set by hand
// still wins. Usage: npx tsx bench/lane-width.ts [--rounds 2] [--steps 3] [--old] [--dry-run]

import { lavapipeWidthCachePath, cpuModel } from '../engine/lavapipe.ts';
import { timeStepInChild } from './step-child.ts';

const argv = process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const WIDTHS = [256, 512] as const; // lavapipe's LP_NATIVE_VECTOR_WIDTH: 8 and 16 f32 lanes

const rounds = arg('--rounds', 2);
const samples = new Map<number, number[]>(WIDTHS.map((w) => [w, []]));
for (let r = 0; r < rounds; r++) {
  for (const width of r % 2 ? [...WIDTHS].reverse() : WIDTHS) {
    const { ms } = timeStepInChild({ LP_NATIVE_VECTOR_WIDTH: String(width) }, { steps: arg('--steps', 3), old: argv.includes('--old') }, `lane-width at LP_NATIVE_VECTOR_WIDTH=${width}`);
    samples.get(width)!.push(ms);
    console.log(`round ${r + 1}: ${width / 32} lanes, ${ms.toFixed(0)} ms per step`);
  }
}
const best = (w: number) => Math.min(...samples.get(w)!);
const choice = best(512) < best(256) ? 512 : 256;
const result = { width: choice, lanes: choice / 32, stepMs: Object.fromEntries(WIDTHS.map((w) => [w / 32, samples.get(w)])), shape: argv.includes('--old') ? 'old' : 'train', at: new Date().toISOString() };
console.log(`fastest step: ${best(256).toFixed(0)} ms at 8 lanes, ${best(512).toFixed(0)} ms at 16 lanes -> ${choice / 32} lanes`);
if (argv.includes('--dry-run')) process.exit(0);
const file = await lavapipeWidthCachePath();
const fs = await import('node:fs');
const path = await import('node:path');
let cache: Record<string, unknown> = {};
try {
  cache = JSON.parse(fs.readFileSync(file, 'utf8'));
} catch {
  // a first measurement
}
cache[await cpuModel()] = result;
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.writeFileSync(file, JSON.stringify(cache, null, 2) + '\n');
console.log(`wrote ${file}: processes on this CPU now start lavapipe at ${choice / 32} lanes unless LP_NATIVE_VECTOR_WIDTH is set`);
