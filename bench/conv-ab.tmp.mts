import { getDevice, tensor, sync } from '../nn/index.ts';
import { conv2dRaw, conv2dBackwardInput, conv2dBackwardWeight, type ConvTuningOverrides } from '../kernels/conv2d.ts';
import { median } from './harness.ts';
await getDevice();
const rand = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
const [N, H, C] = JSON.parse(process.argv[2]);
const cfgs: ConvTuningOverrides[] = JSON.parse(process.argv[3]);
const x = tensor(rand(N * H * H * C), [N, H, H, C]);
const w = tensor(rand(9 * C * C), [3, 3, C, C]);
const dy = tensor(rand(N * H * H * C), [N, H, H, C]);
const g = { N, H, W: H, Cin: C, KH: 3, KW: 3, Cout: C, stride: 1, pad: 1, OH: H, OW: H };
for (const dir of ['fwd', 'dx', 'dW']) {
  const run = async (tuning: ConvTuningOverrides) => { const t0 = performance.now(); for (let i = 0; i < 3; i++) (dir === 'fwd' ? conv2dRaw(x, w, null, { padding: 1, tuning }) : dir === 'dx' ? conv2dBackwardInput(dy, w, g, { tuning }) : conv2dBackwardWeight(x, dy, g, { tuning })).dispose(); await sync(); return (performance.now() - t0) / 3; };
  for (const c of cfgs) await run(c);
  const t: number[][] = cfgs.map(() => []);
  for (let i = 0; i < 10; i++) for (let k = 0; k < cfgs.length; k++) { const j = (k + i) % cfgs.length; t[j].push(await run(cfgs[j])); }
  const r = (j: number) => median(t[j].map((v, i) => v / t[0][i])).toFixed(3);
  console.log(`${dir} ${N}x${H}x${H}x${C}: ${cfgs.map((c, j) => `${JSON.stringify(c.tiles ?? {})} ${median(t[j]).toFixed(1)} ms (${r(j)})`).join(' | ')}`);
}
