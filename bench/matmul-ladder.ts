// The matmul kernel ladder: each rung adds one idea to the one before, is checked against a float64 CPU product
// on 256x256 BEFORE it is timed, and reports GFLOPS (2·M·N·K per op) at the size given.
//   1 naive           one thread per output, k loop in WGSL, scalar loads
//   2 tiled           16x16 tiles of A and B staged in workgroup memory, one output per thread, slab unrolled
//   3 tiled+reg       engine 'tiled' kernel with scalar loads: 64x64 tile, BK=16, each thread a 4x4 register block
//   4 tiled+reg+vec4  the same with vec4 global loads (A along k, B along n) into the workgroup tiles (engine
//                     'tiled' kernel as it runs where the contiguous dimension % 4 == 0; the default on GPUs)
//   5 broadcast TM=SG engine 'broadcast' kernel: no workgroup memory; a subgroup of SG lanes (8, or 16 with
//                     512-bit lavapipe) owns SG rows x 4·SG columns, A rows loaded one vec4 per lane and shared
//                     with subgroupBroadcast
//   6 broadcast TM=32 the same with 32 rows per subgroup: fewer loads per multiply-add
//   7 +textures       the same reading A and B from rgba32float storage textures (copied per call): lavapipe
//                     fetches a texel for all lanes with vector loads, not a scalar loop
//   8 +textures TM=16 half the rows: fewer accumulators, faster to compile
//   9 TM=16 CB=2      16 rows x 2 column quads per lane: as many accumulators as TM=32, half the broadcasts
//                     per multiply-add, twice B's loads (engine default)
//  10 column-first    the default walking its tiles column by column instead of in groups of 8 row tiles
// On lavapipe every load whose address is not a compile-time constant is a per-lane scalar loop with a bounds
// check, so the rungs that cut loads per FMA win; workgroup memory saves little there and barriers cost.
// Usage: npx tsx bench/matmul-ladder.ts [--size N] [--quick] [--peer]   (N a multiple of 64; default 1024)

import { cpus } from 'node:os';
import { getDevice, releaseDevice, tensor, empty, sync, type Tensor } from '../nn/index.ts';
import { kernel, type Kernel } from '../engine/kernel.ts';
import { lavapipeConfig } from '../engine/lavapipe.ts';
import { matmulRaw, matmulKernel, broadcastLanes, tileName, DEFAULT_TILE, type BroadcastTile } from '../kernels/matmul.ts';
import { measureInterleaved, localSide, cpuModel, loadAverage, ForeignCpu, fmtMs, fmtRate, markdownTable } from './harness.ts';
import { randomData, normalizedDiff } from './case.ts';
import { peerProcess } from './peer.ts';
import { allCases } from './cases/index.ts';

const originalEnv = { ...process.env }; // before our engine sets driver options: the peer runs with defaults

interface Rung {
  name: string;
  /** why the rung cannot run here, or null */
  unavailable?: () => string | null;
  /** records C = A·B for square n (a multiple of 64) and returns C */
  run: (a: Tensor, b: Tensor, n: number) => Tensor;
}

/** Launches a ladder kernel over square n x n operands; the engine kernels take the same uniforms (batch strides 0). */
function own(make: () => Kernel, per: [number, number]) {
  return (a: Tensor, b: Tensor, n: number) => {
    const c = empty([n, n]);
    make().launch({ M: n, N: n, K: n, batchA: 0, batchB: 0, batchC: 0, A: a, B: b, C: c }, [n / per[0], n / per[1], 1]);
    return c;
  };
}

const operands = { A: 'read f32', B: 'read f32', C: 'rw f32' } as const;
const shapes = { M: 'u32', N: 'u32', K: 'u32' } as const;

const naive = () =>
  kernel('ladder|naive', () => ({
    name: 'ladder naive',
    uniforms: shapes,
    bindings: operands,
    workgroupSize: [8, 8],
    body: `
  let n = gid.x; let m = gid.y;
  if (m >= p.M || n >= p.N) { return; }
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) { acc = fma(A[m * p.K + k], B[k * p.N + n], acc); }
  C[m * p.N + n] = acc;`,
  }));

const tiledOneOutput = () =>
  kernel('ladder|tiled', () => {
    let inner = '';
    for (let kk = 0; kk < 16; kk++) inner += `    acc = fma(As[ty * 16u + ${kk}u], Bs[${kk * 16}u + tx], acc);\n`;
    return {
      name: 'ladder tiled',
      uniforms: shapes,
      bindings: operands,
      workgroupSize: [16, 16],
      header: `
var<workgroup> As: array<f32, 256>;
var<workgroup> Bs: array<f32, 256>;`,
      body: `
  let tx = lid.x; let ty = lid.y;
  let m = wid.y * 16u + ty; let n = wid.x * 16u + tx;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.K; k0 += 16u) {
    As[ty * 16u + tx] = A[m * p.K + k0 + tx];
    Bs[ty * 16u + tx] = B[(k0 + ty) * p.N + n];
    workgroupBarrier();
${inner}    workgroupBarrier();
  }
  C[m * p.N + n] = acc;`,
    };
  });

/** The engine's tiled kernel with scalar loads, as it runs where no contiguous dimension is a multiple of 4. */
const tiledScalar = () => matmulKernel({ kind: 'tiled', transA: false, transB: false, vecA: false, vecB: false, aligned: true, ...DEFAULT_TILE });

function broadcastRung(TM: number, textures = false, CB = 1): Rung {
  const tile: BroadcastTile = { kind: 'broadcast', TM, textures, ...(CB > 1 ? { CB } : {}) };
  return {
    name: tileName(tile),
    unavailable: () => (broadcastLanes() ? (TM % broadcastLanes() ? `TM=${TM} is not a multiple of the subgroup size` : null) : 'needs subgroups with a fixed size'),
    // the engine's own launch, texture copies included
    run: (a, b) => matmulRaw(a, b, false, false, { tuning: { tile } }),
  };
}

/** The rungs; broadcast depths follow the subgroup size (8 lanes, or 16 with LP_NATIVE_VECTOR_WIDTH=512). */
function makeRungs(): Rung[] {
  const sg = broadcastLanes() || 8;
  const all: Rung[] = [
    { name: 'naive', run: own(naive, [8, 8]) },
    { name: 'tiled', run: own(tiledOneOutput, [16, 16]) },
    { name: 'tiled+reg', run: own(tiledScalar, [64, 64]) },
    { name: 'tiled+reg+vec4', run: (a, b) => matmulRaw(a, b, false, false, { tuning: { tile: DEFAULT_TILE } }) },
    broadcastRung(sg),
    broadcastRung(32),
    broadcastRung(32, true),
    ...(16 % sg === 0 ? [broadcastRung(16, true), broadcastRung(16, true, 2), columnFirstRung(16, 2)] : []),
    ...(process.env.LADDER_EXTRA_TM ?? '').split(',').filter(Boolean).map((x) => broadcastRung(parseInt(x, 10), x.endsWith('t'))),
  ];
  return all.filter((r) => !process.env.LADDER_ONLY || r.name.includes(process.env.LADDER_ONLY));
}

/** The same tile walked column by column instead of in groups of row tiles (tile order 0). */
function columnFirstRung(TM: number, CB: number): Rung {
  const r = broadcastRung(TM, true, CB);
  const tile: BroadcastTile = { kind: 'broadcast', TM, textures: true, CB };
  return { ...r, name: `${r.name} column-first`, run: (a, b) => matmulRaw(a, b, false, false, { tuning: { tile, group: 0 } }) };
}

function cpuProduct(a: Float32Array, b: Float32Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      for (let j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
    }
  return c;
}

// ---- main --------------------------------------------------------------------------------------------

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const sizeArg = argv.indexOf('--size');
const n = sizeArg >= 0 ? Number(argv[sizeArg + 1]) : quick ? 512 : 1024;
if (!(n >= 64 && n % 64 === 0)) throw new Error(`matmul-ladder: --size must be a multiple of 64, got ${argv[sizeArg + 1]}`);
const ctx = await getDevice();
const rungs = makeRungs();
console.log(`# matmul ladder, ${n}x${n}x${n} f32`);
console.log(`CPU: ${await cpuModel()}, ${cpus().length} cores; adapter: ${ctx.info.description || ctx.info.vendor}; subgroup size: ${broadcastLanes() || 'n/a'}`);
console.log(`lavapipe: ${lavapipeConfig()?.note ?? 'not configured'}`);
console.log(`load average before: ${loadAverage()}; per-op wall-clock time of k ops back to back + one sync\n`);

// correctness first, on 256x256, against a float64 CPU product
const cn = 256;
const ca = randomData(cn * cn, 11);
const cb = randomData(cn * cn, 12);
const want = cpuProduct(ca, cb, cn);
const [ta, tb] = [tensor(ca, [cn, cn]), tensor(cb, [cn, cn])];
const ok = new Map<string, string>();
for (const r of rungs) {
  const why = r.unavailable?.();
  if (why) {
    ok.set(r.name, `skipped: ${why}`);
    continue;
  }
  const c = r.run(ta, tb, cn);
  const err = normalizedDiff(await c.toArray(), want);
  c.dispose();
  ok.set(r.name, err <= 1e-5 ? 'ok' : `WRONG (normalized error ${err.toExponential(2)})`);
  console.log(`check ${r.name.padEnd(18)} ${ok.get(r.name)}${err <= 1e-5 ? ` (normalized error ${err.toExponential(1)})` : ''}`);
}
ta.dispose();
tb.dispose();
const failed = [...ok.values()].some((v) => v.startsWith('WRONG'));
console.log(failed ? '\nSOME RUNGS ARE WRONG: they are not timed.\n' : '\nall rungs match the CPU reference. Timing.\n');

const a = tensor(randomData(n * n, 1), [n, n]);
const b = tensor(randomData(n * n, 2), [n, n]);
const flops = 2 * n ** 3;
const cores = cpus().length;
const rows: string[][] = [];
for (const r of rungs) {
  if (ok.get(r.name) !== 'ok') {
    rows.push([r.name, ok.get(r.name)!, '-', '-', '-', '-']);
    continue;
  }
  const foreign = new ForeignCpu();
  const side = localSide(() => r.run(a, b, n).dispose(), sync);
  const [t] = await measureInterleaved([side], { samples: quick ? 3 : 5, targetMs: quick ? 100 : 200, minSamples: 1, budgetMs: quick ? 3000 : 8000 });
  const f = foreign.percent();
  rows.push([r.name, `${fmtMs(t.medianMs)} / ${fmtMs(t.minMs)}`, fmtRate(flops / t.medianMs / 1e6), fmtRate(flops / (t.cpuMs / cores) / 1e6), fmtMs(t.firstMs), f == null ? '-' : f.toFixed(0)]);
  console.log(`${r.name.padEnd(18)} ${fmtMs(t.medianMs).padStart(8)} ms  ${fmtRate(flops / t.medianMs / 1e6).padStart(6)} GFLOPS`);
}
a.dispose();
b.dispose();

if (argv.includes('--peer')) {
  // tfjs-backend-webgpu in a child process with the driver's defaults (bench/peer.ts), on the same-size case
  const index = allCases.findIndex((c) => c.name === 'matmul' && c.flops === flops);
  if (index < 0) console.log(`no matmul ${n}³ row in bench/cases for the peer`);
  else {
    const peer = await peerProcess(originalEnv);
    const pc = (await peer.setup(index, allCases[index], 5000))!;
    const foreign = new ForeignCpu();
    const cpu0 = peer.ownCpuMs();
    const [t] = await measureInterleaved([pc.side], { samples: 2, targetMs: 200, minSamples: 1, budgetMs: 5000 });
    const f = foreign.percent(peer.ownCpuMs() - cpu0);
    rows.push([peer.name, `${fmtMs(t.medianMs)} / ${fmtMs(t.minMs)}`, fmtRate(flops / t.medianMs / 1e6), fmtRate(flops / (t.cpuMs / cores) / 1e6), fmtMs(t.firstMs), f == null ? '-' : f.toFixed(0)]);
    await pc.dispose();
    peer.close();
  }
}

console.log(`\n${markdownTable(['rung', 'ms (median / min)', 'GFLOPS', `GFLOPS from CPU time (${cores} cores)`, 'first op incl. compile, ms', 'foreign CPU %'], rows)}\n`);
console.log(`load average after: ${loadAverage()}. "GFLOPS from CPU time" = 2n³ / (process CPU time per op / cores): what the rung would reach with the machine to itself.`);
releaseDevice();
process.exit(failed ? 1 : 0);
