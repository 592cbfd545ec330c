import { getDevice, releaseDevice, tensor, sync } from '../engine/index.ts';
import { matmulRaw, type MatmulTile } from '../kernels/matmul.ts';
await getDevice();
const [M, K, N] = (process.argv[2] ?? '1024,1024,1024').split(',').map(Number);
const n = Math.cbrt(M * K * N);
const tiles: MatmulTile[] = [
  { kind: 'broadcast', TM: 32, textures: true },
  { kind: 'broadcast', TM: 16, CB: 2, textures: true },
  { kind: 'broadcast', TM: 16, CB: 2, textures: false },
];
const a = tensor(Float32Array.from({ length: M * K }, () => Math.random()), [M, K]);
const b = tensor(Float32Array.from({ length: K * N }, () => Math.random()), [K, N]);
const res = tiles.map(() => [] as number[]);
for (let rep = 0; rep < 4; rep++) {
  for (const [i, t] of tiles.entries()) {
    matmulRaw(a, b, false, false, t).dispose(); await sync();
    const t0 = performance.now();
    for (let k = 0; k < 3; k++) matmulRaw(a, b, false, false, t).dispose();
    await sync();
    res[i].push((performance.now() - t0) / 3);
  }
}
const med = (x: number[]) => x.sort((p, q) => p - q)[x.length >> 1];
tiles.forEach((t, i) => console.log(JSON.stringify(t), med(res[i]).toFixed(1), 'ms', (2 * n ** 3 / med(res[i]) / 1e6).toFixed(1), 'GFLOPS'));
releaseDevice();
