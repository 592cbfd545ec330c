import { getDevice, tensor, sync } from '../nn/index.ts';
import { conv2dRaw } from '../kernels/conv2d.ts';
import { median } from './harness.ts';
await getDevice();
const rand = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
for (const [N, H, C] of [[128, 28, 16], [128, 14, 32], [128, 7, 64], [128, 4, 128]]) {
  const x = tensor(rand(N * H * H * C), [N, H, H, C]);
  const w = tensor(rand(9 * C * C), [3, 3, C, C]);
  const run = async (m: boolean) => { const t0 = performance.now(); for (let i = 0; i < 3; i++) conv2dRaw(x, w, null, { padding: 1, moments: m }).dispose(); await sync(); return (performance.now() - t0) / 3; };
  await run(true); await run(false);
  const r: number[] = []; const on: number[] = []; const off: number[] = [];
  for (let i = 0; i < 12; i++) { const a = await run(true); const b = await run(false); on.push(a); off.push(b); r.push(a / b); }
  console.log(`${N}x${H}x${H}x${C}: on ${median(on).toFixed(2)} off ${median(off).toFixed(2)} ms; on/off median ${median(r).toFixed(3)}`);
}
