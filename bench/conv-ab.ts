// Interleaved A/B of conv2d tunings on one layer: forward, dx and dW each, every configuration timed in turn
// (rotating which goes first), 10 rounds; prints each one's median and the median of its per-round ratio to the
// first configuration, which cancels most of the load drift of a shared machine. Not a test.
// Usage: npx tsx bench/conv-ab.ts N,H,C 'JSON list of ConvTuningOverrides'   (3x3, stride 1, padding 1, Cin = Cout = C)
//   e.g. npx tsx bench/conv-ab.ts 128,28,16 '[{"tiles":{"narrowRows":0}},{"tiles":{"narrowRows":16}}]'

import { getDevice, releaseDevice, sync } from '../nn/index.ts';
import type { ConvTuningOverrides } from '../kernels/conv2d.ts';
import { convLayer } from './cases/conv-layer.ts';
import { median } from './harness.ts';

const [N, H, C] = (process.argv[2] ?? '128,28,16').split(',').map(Number);
const configs: ConvTuningOverrides[] = JSON.parse(process.argv[3] ?? '[{}]');
const ctx = await getDevice();
console.log(`device: ${ctx.info.description}; layer ${N}x${H}x${H}x${C}, 3x3`);
const layer = convLayer(N, H, C, () => Math.random() - 0.5);

for (const [name, op] of Object.entries(layer.ops)) {
  const run = async (tuning: ConvTuningOverrides) => {
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) op(tuning).dispose();
    await sync();
    return (performance.now() - t0) / 3;
  };
  for (const c of configs) await run(c); // compiles
  const t: number[][] = configs.map(() => []);
  for (let round = 0; round < 10; round++) {
    for (let k = 0; k < configs.length; k++) {
      const j = (k + round) % configs.length;
      t[j].push(await run(configs[j]));
    }
  }
  const ratio = (j: number) => median(t[j].map((v, i) => v / t[0][i])).toFixed(3);
  console.log(`${name}: ${configs.map((c, j) => `${JSON.stringify(c)} ${median(t[j]).toFixed(1)} ms (${ratio(j)})`).join(' | ')}`);
}
layer.dispose();
releaseDevice();
