// Would the engine's matmul serve a narrow conv as an im2col GEMM? Times matmul at the GEMM's shape,
// [N*H*W, 9*C] x [9*C, K], against conv2dRaw on the layer itself (3x3, stride 1, padding 1, N x H x H x C -> K),
// alternately. The im2col copy is not counted: if the GEMM alone loses, the path loses.
// Not a test; the answer on lavapipe is in bench/results/lavapipe-probes-session13.md (section 3).
// Usage: npx tsx bench/im2col-probe.ts [N] [H] [C] [K] [rounds]   (default 64 28 16 16 5: the default model's narrow layer)

import { getDevice, releaseDevice, gpu, tensor, matmul, sync, type Tensor } from '../nn/index.ts';
import { conv2dRaw } from '../kernels/conv2d.ts';
import { uniformArray } from '../engine/random.ts';
import { median } from './harness.ts';

const [N, H, C, K, rounds] = [64, 28, 16, 16, 5].map((d, i) => Number(process.argv[2 + i] ?? d));
await getDevice();
const rows = N * H * H;
const x = tensor(uniformArray(rows * C, 1), [N, H, H, C]);
const w = tensor(uniformArray(9 * C * K, 2), [3, 3, C, K]);
const cols = tensor(uniformArray(rows * 9 * C, 3), [rows, 9 * C]); // stands in for the im2col copy of x
const w2 = w.reshape([9 * C, K]);

async function ms(op: () => Tensor, reps: number): Promise<number> {
  const s = performance.now();
  for (let i = 0; i < reps; i++) op().dispose();
  await sync();
  return (performance.now() - s) / reps;
}
const arms = { gemm: () => matmul(cols, w2), conv: () => conv2dRaw(x, w, null, { padding: 1 }) };
for (const op of Object.values(arms)) await ms(op, 1); // compiles
const times: Record<string, number[]> = { gemm: [], conv: [] };
for (let r = 0; r < rounds; r++) for (const [name, op] of Object.entries(arms)) times[name].push(await ms(op, 3));
const [gemm, conv] = [median(times.gemm), median(times.conv)];
const gflops = (t: number) => ((2 * rows * 9 * C * K) / t / 1e6).toFixed(1);
console.log(`${gpu('im2col-probe').info.description}; ${N}x${H}x${H}x${C} -> ${K}, 3x3, forward; GEMM [${rows}, ${9 * C}] x [${9 * C}, ${K}]`);
console.log(`matmul ${gemm.toFixed(1)} ms (${gflops(gemm)} GFLOPS), conv2dRaw ${conv.toFixed(1)} ms (${gflops(conv)} GFLOPS): matmul/conv ${(gemm / conv).toFixed(2)} (medians of ${rounds} alternating rounds of 3)`);
for (const t of [x, w, cols, w2]) t.dispose();
releaseDevice();
