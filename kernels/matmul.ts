// Batched matmul C[b] = op(A[b]) · op(B[b]), op = optional transpose given as a flag (never a copy).
// Two kernel families; the engine picks one per adapter (defaultTile(), refined by kernels/matmul-tune.ts;
// bench/matmul-ladder.ts shows the steps and their speed):
// - 'tiled': a workgroup computes a BM x BN tile of C through BK-deep slabs of A and B staged in workgroup
//   memory (as vec4 rows), each thread a TM x 4 register block. Portable: any adapter, no optional features.
// - 'broadcast': for CPU adapters (lavapipe). There a storage-buffer or workgroup load whose address is not a
//   compile-time constant becomes a per-lane scalar loop with a bounds check (~14 instructions per float),
//   while arithmetic is one instruction for all 8 (or 16) lanes, so loads per multiply-add decide the speed.
//   One subgroup (one SIMD group of SG lanes) computes TM rows x 4·SG columns: each lane owns 4 columns (one
//   vec4 of B per k) and all TM rows; the rows of A are loaded cooperatively, one vec4 per lane, and handed to
//   every lane with subgroupBroadcast (a register shuffle, no memory). Per 4 k's: TM/SG + 4 vec4 loads for
//   16·TM multiply-adds per lane. Operands whose rows are multiples of 64 floats are read from rgba32float
//   storage textures (see operandTexture), which lavapipe fetches with vector loads.
// Both unroll their inner loop at generation time (WGSL loops are costly on llvmpipe) and take shapes as
// uniforms; vec4 loads are used where the contiguous dimension is a multiple of 4, scalar loads otherwise.

import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { gpu, onRelease } from '../engine/device.ts';
import { launch, u32s, encoderForCopy, recorderStats, type KernelSpec, type LaunchArg } from '../engine/recorder.ts';
import { Tensor, empty, fmtShape, type Shape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { sumToShape } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

export interface TiledTile {
  kind?: 'tiled';
  BM: number; // rows of C per workgroup
  BN: number; // columns of C per workgroup (4 per thread)
  BK: number; // depth of one slab
  TM: number; // rows per thread
}

export interface BroadcastTile {
  kind: 'broadcast';
  TM: number; // rows of C per subgroup: a multiple of 4 and of the subgroup size
  /** column quads per lane (default 1): 2 halves the broadcasts per multiply-add and doubles B's loads */
  CB?: number;
  /** read A and B through rgba32float storage textures where the shapes allow (see operandTexture) */
  textures?: boolean;
}

export type MatmulTile = TiledTile | BroadcastTile;

export const DEFAULT_TILE: TiledTile = { BM: 64, BN: 64, BK: 16, TM: 4 };
// 16 rows x 2 column quads per lane: half the broadcasts per multiply-add of TM=32 with one quad, for as many
// accumulators; 1.1-1.45x faster than that on lavapipe (rungs 'TM=32 +textures' and 'TM=16 CB=2 +textures' of
// npm run bench:ladder)
export const BROADCAST_TILE: BroadcastTile = { kind: 'broadcast', TM: 16, CB: 2, textures: true };

export function tileName(t: MatmulTile): string {
  return t.kind === 'broadcast' ? `broadcast TM=${t.TM}${(t.CB ?? 1) > 1 ? ` CB=${t.CB}` : ''}${t.textures ? ' +textures' : ''}` : `tiled ${t.BM}x${t.BN}x${t.BK} TM=${t.TM}`;
}

/**
 * The subgroup size the broadcast kernel is generated for, or 0 where it cannot run: the device needs the
 * 'subgroups' feature and a fixed subgroup size (min = max), since the kernel maps lanes to columns by index.
 */
export function broadcastLanes(): number {
  const ctx = gpu('matmul');
  if (!ctx.hasSubgroups) return 0;
  const info = ctx.adapter.info as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number };
  const lo = info.subgroupMinSize ?? 0;
  const hi = info.subgroupMaxSize ?? 0;
  return lo > 0 && lo === hi && lo <= 64 ? lo : 0;
}

/** The tile for this adapter before any tuning: broadcast on CPU adapters that allow it, tiled elsewhere. */
export function defaultTile(): MatmulTile {
  const ctx = gpu('matmul');
  const cpuLike = ctx.info.isFallback || ctx.info.architecture === 'software' || /llvmpipe|lavapipe|swiftshader/i.test(ctx.info.description);
  const sg = broadcastLanes();
  return cpuLike && sg && BROADCAST_TILE.TM % sg === 0 ? BROADCAST_TILE : DEFAULT_TILE;
}

const specs = new Map<string, KernelSpec>();

/**
 * The tiled kernel. vecA / vecB: the operand is read as vec4 (same conditions as the broadcast kernel: the
 * contiguous dimension % 4 == 0); along the slab's rows it goes to workgroup memory as is, along k it is
 * scattered into the 4 rows of the slab.
 */
export function matmulSpec(transA: boolean, transB: boolean, aligned: boolean, tile: TiledTile = DEFAULT_TILE, vecA = false, vecB = false): KernelSpec {
  const { BM, BN, BK, TM } = tile;
  const key = `tiled${transA}${transB}${aligned}${vecA}${vecB}${BM}_${BN}_${BK}_${TM}`;
  let s = specs.get(key);
  if (s) return s;
  const WX = BN / 4; // threads along n
  const WY = BM / TM; // threads along m
  const threads = WX * WY;
  const aVecs = (BM * BK) / 4; // vec4 (4 consecutive m) per slab
  const bVecs = (BN * BK) / 4;
  const accs = [...Array(TM).keys()];
  let inner = '';
  for (let kk = 0; kk < BK; kk++) {
    inner += `    { let bv = Bs[${kk * (BN / 4)}u + tx];\n`;
    for (let q = 0; q < TM / 4; q++) {
      inner += `      let a${q} = As[${kk * (BM / 4)}u + ty * ${TM / 4}u + ${q}u];\n`;
      for (let c = 0; c < 4; c++) inner += `      acc${q * 4 + c} += a${q}.${'xyzw'[c]} * bv;\n`;
    }
    inner += '    }\n';
  }
  // slab element e of As / Bs is [kk][4 consecutive rows q..q+3]; `vec` reads 4 floats at once: along the rows
  // (transposed A, plain B) straight into e, or along k (plain A, transposed B) scattered into 4 slab rows
  const loads = (what: 'A' | 'B', vecs: number, rowsPerK: number, vec: boolean, alongK: boolean) => {
    let out = '';
    const S = what === 'A' ? 'As' : 'Bs';
    const at = what === 'A' ? (r: string, k: string) => `loadA(m0 + ${r}, k0 + ${k})` : (r: string, k: string) => `loadB(k0 + ${k}, n0 + ${r})`;
    const at4 = what === 'A' ? (r: string, k: string) => `loadA4(m0 + ${r}, k0 + ${k})` : (r: string, k: string) => `loadB4(k0 + ${k}, n0 + ${r})`;
    for (let e = 0; e < Math.ceil(vecs / threads); e++) {
      const guard = (e + 1) * threads > vecs ? `if (tid + ${e * threads}u < ${vecs}u) ` : '';
      if (vec && alongK) {
        out += `    ${guard}{ let e = tid + ${e * threads}u; let r = e / ${BK / 4}u; let j = (e % ${BK / 4}u) * 4u; let v = ${at4('r', 'j')};\n`;
        for (let c = 0; c < 4; c++) out += `      ${S}[(j + ${c}u) * ${rowsPerK / 4}u + r / 4u][r % 4u] = v.${'xyzw'[c]};\n`;
        out += '    }\n';
      } else {
        out += `    ${guard}{ let e = tid + ${e * threads}u; let kk = e / ${rowsPerK / 4}u; let q = (e % ${rowsPerK / 4}u) * 4u;\n`;
        out += vec
          ? `      ${S}[e] = ${at4('q', 'kk')}; }\n`
          : `      ${S}[e] = vec4<f32>(${[0, 1, 2, 3].map((c) => at(`q + ${c}u`, 'kk')).join(', ')}); }\n`;
      }
    }
    return out;
  };
  const code = wgsl`
struct P { M: u32, N: u32, K: u32, batchA: u32, batchB: u32, batchC: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<${vecA ? 'vec4<f32>' : 'f32'}>;
@group(0) @binding(2) var<storage, read> B: array<${vecB ? 'vec4<f32>' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
var<workgroup> As: array<vec4<f32>, ${aVecs}>;
var<workgroup> Bs: array<vec4<f32>, ${bVecs}>;
var<private> aOff: u32;
var<private> bOff: u32;

#if ${vecA}
// A[m..m+3, k] (transposed) or A[m, k..k+3]; the start is a multiple of 4, so one bound covers all four
fn loadA4(m: u32, k: u32) -> vec4<f32> {
#if ${!aligned}
  if (m >= p.M || k >= p.K) { return vec4<f32>(0.0); }
#endif
#if ${transA}
  return A[(aOff + k * p.M + m) / 4u];
#else
  return A[(aOff + m * p.K + k) / 4u];
#endif
}
#else
fn loadA(m: u32, k: u32) -> f32 {
#if ${!aligned}
  if (m >= p.M || k >= p.K) { return 0.0; }
#endif
#if ${transA}
  return A[aOff + k * p.M + m];
#else
  return A[aOff + m * p.K + k];
#endif
}
#endif

#if ${vecB}
// B[k, n..n+3] or B[k..k+3, n] (transposed)
fn loadB4(k: u32, n: u32) -> vec4<f32> {
#if ${!aligned}
  if (k >= p.K || n >= p.N) { return vec4<f32>(0.0); }
#endif
#if ${transB}
  return B[(bOff + n * p.K + k) / 4u];
#else
  return B[(bOff + k * p.N + n) / 4u];
#endif
}
#else
fn loadB(k: u32, n: u32) -> f32 {
#if ${!aligned}
  if (k >= p.K || n >= p.N) { return 0.0; }
#endif
#if ${transB}
  return B[bOff + n * p.K + k];
#else
  return B[bOff + k * p.N + n];
#endif
}
#endif

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tx = lid.x;
  let ty = lid.y;
  let tid = ty * ${WX}u + tx;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  aOff = wid.z * p.batchA;
  bOff = wid.z * p.batchB;
  let cOff = wid.z * p.batchC;
  ${accs.map((i) => `var acc${i} = vec4<f32>(0.0);`).join(' ')}
  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
${loads('A', aVecs, BM, vecA, !transA)}${loads('B', bVecs, BN, vecB, transB)}    workgroupBarrier();
${inner}    workgroupBarrier();
  }
  let n = n0 + tx * 4u;
  ${accs
    .map((i) => {
      const m = `m0 + ty * ${TM}u + ${i}u`;
      if (aligned) return `C[cOff + (${m}) * p.N + n] = acc${i}.x; C[cOff + (${m}) * p.N + n + 1u] = acc${i}.y; C[cOff + (${m}) * p.N + n + 2u] = acc${i}.z; C[cOff + (${m}) * p.N + n + 3u] = acc${i}.w;`;
      return `{ let m = ${m}; if (m < p.M) { let r = cOff + m * p.N; let v = acc${i};
    if (n < p.N) { C[r + n] = v.x; } if (n + 1u < p.N) { C[r + n + 1u] = v.y; } if (n + 2u < p.N) { C[r + n + 2u] = v.z; } if (n + 3u < p.N) { C[r + n + 3u] = v.w; } } }`;
    })
    .join('\n  ')}
}`;
  s = { name: 'matmul', code, bindings: ['uniform', 'read', 'read', 'rw'] };
  specs.set(key, s);
  return s;
}

/** Which loads a broadcast kernel uses; every flag is a property of the shapes, checked by the launcher. */
export interface BroadcastVariant {
  transA: boolean;
  transB: boolean;
  /** A read as vec4: along k (K % 4 == 0) or, transposed, along m (M % 4 == 0) */
  vecA: boolean;
  /** B read as vec4: along n (N % 4 == 0) or, transposed, along k (K % 4 == 0) */
  vecB: boolean;
  /** C written as vec4 (N % 4 == 0) */
  vecC: boolean;
  /** A / B read from an rgba32float storage texture holding the same vec4s (implies vecA / vecB) */
  texA: boolean;
  texB: boolean;
  /** K % 4 != 0: a guarded tail step after the 4-deep main loop */
  raggedK: boolean;
  TM: number;
  SG: number;
  CB: number;
  /**
   * Tile order: 0 = workgroup x walks the column tiles; G > 0 = a 1-D grid in groups of G row tiles, walking the
   * group's rows first (consecutive workgroups share B's column panel, the group's A panels stay in cache).
   */
  group?: number;
}

// 8: on an idle lavapipe 1.2x faster than column tiles first at 2048³ and the same at 1024³; with another process
// sharing the caches, 1.2x at 1024³ too (npm run bench:ladder -- --size N, rungs 'TM=16 CB=2 +textures' and
// '... column-first')
export const DEFAULT_MATMUL_GROUP = 8;
let matmulGroup = DEFAULT_MATMUL_GROUP;
/** For benchmarks: the tile order of the broadcast kernel (see BroadcastVariant.group). */
export function setMatmulGroup(g: number): void {
  matmulGroup = g;
}

export function broadcastSpec(v: BroadcastVariant): KernelSpec {
  const { transA, transB, vecA, vecB, vecC, texA, texB, raggedK, TM, SG, CB } = v;
  const cbs = [...Array(CB).keys()];
  const W = 4 * SG * CB; // columns of C per subgroup
  if ((texA && !vecA) || (texB && !vecB) || ((texA || texB) && raggedK)) throw new Error('matmul: texture operands need vec4 shapes and K % 4 == 0');
  const key = `broadcast${JSON.stringify(v)}`;
  let s = specs.get(key);
  if (s) return s;
  if (TM % SG !== 0 || TM % 4 !== 0) throw new Error(`matmul: broadcast tile TM=${TM} must be a multiple of 4 and of the subgroup size ${SG}`);
  const G = TM / SG; // A loads per 4-deep step, one vec4 per lane each
  const TQ = TM / 4; // quads of rows (transposed, vectorized A)
  const rows = [...Array(TM).keys()];
  const quad = [0, 1, 2, 3];
  const xyzw = 'xyzw';
  const vecMode = (vec: boolean) => (vec ? 'vec4<f32>' : 'f32');
  // a(i, kk): A[m0 + i, k + kk], the same in every lane
  let aVal: (i: number, kk: number) => string;
  let loadA = '';
  if (vecA && transA) {
    // A is [K, M]: the TM x 4 block is TQ quads of 4 rows for each of the 4 k's; lane l of load g holds
    // quad e % TQ of k + e / TQ, e = g·SG + l
    for (let g = 0; g < G; g++) loadA += texA ? `    let la${g} = textureLoad(A, vec2<u32>(aq${g}, k + ak${g}));\n` : `    let la${g} = A[aOff4 + (k + ak${g}) * M4 + aq${g}];\n`;
    for (let e = 0; e < TM; e++) loadA += `    let t${e} = subgroupBroadcast(la${Math.floor(e / SG)}, ${e % SG}u);\n`;
    aVal = (i, kk) => `t${kk * TQ + (i >> 2)}.${xyzw[i & 3]}`;
  } else {
    // lane l of load g holds row g·SG + l for the 4 k's
    for (let g = 0; g < G; g++) {
      if (texA) loadA += `    let la${g} = textureLoad(A, vec2<u32>(kb, ra${g}));\n`;
      else if (vecA) loadA += `    let la${g} = A[aOff4 + ra${g} * K4 + kb];\n`;
      else if (transA) loadA += `    let la${g} = vec4<f32>(${quad.map((kk) => `A[aOff + (k + ${kk}u) * M + ra${g}]`).join(', ')});\n`;
      else loadA += `    let la${g} = vec4<f32>(${quad.map((kk) => `A[aOff + ra${g} * K + k + ${kk}u]`).join(', ')});\n`;
    }
    for (const i of rows) loadA += `    let a${i} = subgroupBroadcast(la${Math.floor(i / SG)}, ${i % SG}u);\n`;
    aVal = (i, kk) => `a${i}.${xyzw[kk]}`;
  }
  // b{kk}_{cb}: this lane's 4 columns of quad cb (columns n + cb·4·SG ..) of B at row k + kk
  let loadB = '';
  for (const cb of cbs) {
    if (vecB && transB) {
      for (const c of quad) loadB += texB ? `    let tb${c}_${cb} = textureLoad(B, vec2<u32>(kb, cn${c}_${cb}));\n` : `    let tb${c}_${cb} = B[bOff4 + cn${c}_${cb} * K4 + kb];\n`;
      for (const kk of quad) loadB += `    let b${kk}_${cb} = vec4<f32>(${quad.map((c) => `tb${c}_${cb}.${xyzw[kk]}`).join(', ')});\n`;
    } else {
      for (const kk of quad) {
        if (texB) loadB += `    let b${kk}_${cb} = textureLoad(B, vec2<u32>(nq_${cb}, k + ${kk}u));\n`;
        else if (vecB) loadB += `    let b${kk}_${cb} = B[bOff4 + (k + ${kk}u) * N4 + nq_${cb}];\n`;
        else if (transB) loadB += `    let b${kk}_${cb} = vec4<f32>(${quad.map((c) => `B[bOff + cn${c}_${cb} * K + k + ${kk}u]`).join(', ')});\n`;
        else loadB += `    let b${kk}_${cb} = vec4<f32>(${quad.map((c) => `B[bOff + (k + ${kk}u) * N + cn${c}_${cb}]`).join(', ')});\n`;
      }
    }
  }
  // one write per accumulator per step: inside a loop every write to a var costs a masked blend, a load and a
  // store on llvmpipe, so the 4 k's are chained in one expression (same order of additions as 4 writes)
  const chain = (i: number, val: (i: number, kk: number) => string) =>
    cbs.map((cb) => `    acc${i}_${cb} = ${quad.reduce((inner, kk) => `fma(vec4<f32>(${val(i, kk)}), b${kk}_${cb}, ${inner})`, `acc${i}_${cb}`)};\n`).join('');
  let fmas = '';
  for (const i of rows) fmas += chain(i, aVal);
  // the ragged-K tail reads scalars with k guarded (zeros past K on both sides, so garbage never meets a product)
  let tail = '';
  if (raggedK) {
    const kIdx = (kk: number) => `min(k + ${kk}u, K - 1u)`;
    const aIdx = (g: number, kk: number) => (transA ? `aOff + ${kIdx(kk)} * M + ra${g}` : `aOff + ra${g} * K + ${kIdx(kk)}`);
    const bIdx = (c: number, kk: number, cb: number) => (transB ? `bOff + cn${c}_${cb} * K + ${kIdx(kk)}` : `bOff + ${kIdx(kk)} * N + cn${c}_${cb}`);
    for (let g = 0; g < G; g++) tail += `    let la${g} = vec4<f32>(${quad.map((kk) => `select(0.0, readA(${aIdx(g, kk)}), k + ${kk}u < K)`).join(', ')});\n`;
    for (const i of rows) tail += `    let a${i} = subgroupBroadcast(la${Math.floor(i / SG)}, ${i % SG}u);\n`;
    for (const cb of cbs) {
      for (const kk of quad) tail += `    let b${kk}_${cb} = vec4<f32>(${quad.map((c) => `select(0.0, readB(${bIdx(c, kk, cb)}), k + ${kk}u < K)`).join(', ')});\n`;
    }
    for (const i of rows) tail += chain(i, (r, kk) => `a${r}.${xyzw[kk]}`);
  }
  // the TM rows are stored by a loop, not unrolled: a vec4 store is a long per-lane sequence on llvmpipe, and TM
  // copies of it cost seconds of shader compilation for a part that runs once per subgroup
  let store = '';
  for (const cb of cbs) {
    store += `  {\n  let n = n_${cb};\n  var rowsOut: array<vec4<f32>, ${TM}>;\n`;
    for (const i of rows) store += `  rowsOut[${i}] = acc${i}_${cb};\n`;
    store += `  for (var i = 0u; i < ${TM}u; i++) {\n    let m = m0 + i;\n    if (m >= M) { break; }\n    let v = rowsOut[i];\n`;
    if (vecC) store += `    if (n < N) { C[cOff4 + m * N4 + n / 4u] = v; }\n`;
    else store += `    let r = cOff + m * N;\n   ${quad.map((c) => ` if (n + ${c}u < N) { C[r + n + ${c}u] = v.${xyzw[c]}; }`).join('')}\n`;
    store += '  }\n  }\n';
  }
  const GM = v.group ?? 0;
  const code = wgsl`enable subgroups;
struct P { M: u32, N: u32, K: u32, batchA: u32, batchB: u32, batchC: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var${texA ? ' A: texture_storage_2d<rgba32float, read>' : `<storage, read> A: array<${vecMode(vecA)}>`};
@group(0) @binding(2) var${texB ? ' B: texture_storage_2d<rgba32float, read>' : `<storage, read> B: array<${vecMode(vecB)}>`};
@group(0) @binding(3) var<storage, read_write> C: array<${vecMode(vecC)}>;

#if ${raggedK}
fn readA(i: u32) -> f32 {
#if ${vecA}
  return A[i / 4u][i % 4u];
#else
  return A[i];
#endif
}

fn readB(i: u32) -> f32 {
#if ${vecB}
  return B[i / 4u][i % 4u];
#else
  return B[i];
#endif
}
#endif

@compute @workgroup_size(${SG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = p.M; let N = p.N; let K = p.K;
  let M4 = M / 4u; let N4 = N / 4u; let K4 = K / 4u;
  let lane = lid.x;
#if ${GM > 0}
  let nRow = (M + ${TM - 1}u) / ${TM}u;
  let nCol = (N + ${W - 1}u) / ${W}u;
  let perGroup = ${GM}u * nCol;
  let first = (wid.x / perGroup) * ${GM}u;
  let inGroup = wid.x % perGroup;
  let gm = min(nRow - first, ${GM}u);
  let m0 = (first + inGroup % gm) * ${TM}u;
  let n = (inGroup / gm) * ${W}u + lane * 4u;
#else
  let m0 = wid.y * ${TM}u;
  let n = wid.x * ${W}u + lane * 4u;
#endif
  let aOff = wid.z * p.batchA; let bOff = wid.z * p.batchB; let cOff = wid.z * p.batchC;
  let aOff4 = aOff / 4u; let bOff4 = bOff / 4u; let cOff4 = cOff / 4u;
  // rows and columns this lane loads, clamped into the matrix: values past M or N only reach accumulators
  // that are never stored
  ${[...Array(G).keys()].map((g) => `let ra${g} = min(m0 + ${g * SG}u + lane, M - 1u);`).join(' ')}
  ${vecA && transA ? [...Array(G).keys()].map((g) => `let ak${g} = (${g * SG}u + lane) / ${TQ}u; let aq${g} = min(m0 / 4u + (${g * SG}u + lane) % ${TQ}u, M4 - 1u);`).join(' ') : ''}
  ${cbs.map((cb) => `let n_${cb} = n + ${cb * 4 * SG}u; ${quad.map((c) => `let cn${c}_${cb} = min(n_${cb} + ${c}u, N - 1u);`).join(' ')} let nq_${cb} = min(n_${cb}, N - 4u) / 4u;`).join('\n  ')}
  ${rows.map((i) => cbs.map((cb) => `var acc${i}_${cb} = vec4<f32>(0.0);`).join(' ')).join(' ')}
  for (var kb = 0u; kb < K4; kb++) {
    let k = kb * 4u;
${loadA}${loadB}${fmas}  }
#if ${raggedK}
  {
    let k = K4 * 4u;
${tail}  }
#endif
${store}}`;
  s = { name: 'matmul', code, bindings: ['uniform', texA ? 'texture' : 'read', texB ? 'texture' : 'read', 'rw'] };
  specs.set(key, s);
  return s;
}

// ---- operand textures ----------------------------------------------------------------------------------
// lavapipe fetches an rgba32float storage-texture texel for 8 lanes with 8 vector loads and a transpose, while a
// storage-buffer vec4 costs a bounds-checked scalar loop over lanes and components: about half the instructions
// per step of the broadcast kernel (bench/matmul-ladder.ts). So that kernel copies each operand whose rows are
// whole multiples of 256 bytes (copyBufferToTexture's row pitch) into a texture kept per (operand, size). The
// copy and the reads are recorded in order in the one command encoder, so the next matmul may reuse the texture.

interface OperandTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  bytes: number;
}
const textures = new Map<string, OperandTexture>(); // in least-recently-used order
let textureBytes = 0;
const retired: { texture: GPUTexture; submits: number }[] = [];
let textureCacheBytes = 256 * 2 ** 20;
const TEXTURE_USAGE = 0x08 | 0x02; // STORAGE_BINDING | COPY_DST

function operandTexture(slot: 'A' | 'B', t: Tensor, rows: number, cols: number): GPUTextureView {
  const submits = recorderStats().submits;
  // an evicted texture may still be read by recorded commands: destroy it once those were submitted
  while (retired.length && retired[0].submits < submits) retired.shift()!.texture.destroy();
  const key = `${slot}${rows}x${cols}`;
  let e = textures.get(key);
  if (e) textures.delete(key);
  else {
    const texture = gpu('matmul').device.createTexture({ label: `matmul ${slot} [${rows}, ${cols}]`, size: [cols / 4, rows], format: 'rgba32float', usage: TEXTURE_USAGE });
    e = { texture, view: texture.createView(), bytes: rows * cols * 4 };
    textureBytes += e.bytes;
  }
  trimTextures(textureCacheBytes - e.bytes, submits); // e is out of the map here: the others make room for it
  textures.set(key, e);
  encoderForCopy().copyBufferToTexture({ buffer: t.storage.buffer, offset: t.byteOffset, bytesPerRow: cols * 4, rowsPerImage: rows }, { texture: e.texture }, [cols / 4, rows]);
  return e.view;
}

/** Evicts least recently used textures until those in the map take at most `limit` bytes. */
function trimTextures(limit: number, submits = recorderStats().submits): void {
  let inMap = 0;
  for (const e of textures.values()) inMap += e.bytes;
  for (const [k, old] of textures) {
    if (inMap <= limit) break;
    textures.delete(k);
    inMap -= old.bytes;
    textureBytes -= old.bytes;
    retired.push({ texture: old.texture, submits });
  }
}

/** Textures the broadcast kernel keeps for its operands (memory accounting). */
export function matmulTextureStats(): { textures: number; bytes: number } {
  return { textures: textures.size, bytes: textureBytes };
}

/** Caps the memory of the operand-texture cache (default 256 MiB); least recently used textures go first. */
export function setMatmulTextureCacheBytes(bytes: number): void {
  textureCacheBytes = bytes;
  trimTextures(bytes);
}

let tileChoice: MatmulTile | null = null;
onRelease(() => {
  tileChoice = null; // the next device may be another adapter
  textures.clear(); // destroyed with the device
  textureBytes = 0;
  retired.length = 0;
});

/** Sets the tile every matmul uses from now on (kernels/matmul-tune.ts calls this with the fastest one it measured). */
export function setMatmulTile(t: MatmulTile): void {
  if (t.kind === 'broadcast') {
    const sg = broadcastLanes();
    if (!sg) throw new Error(`setMatmulTile: ${tileName(t)} needs the 'subgroups' feature with a fixed subgroup size, which this device lacks`);
    if (t.TM % sg !== 0 || t.TM % 4 !== 0) throw new Error(`setMatmulTile: ${tileName(t)}: TM must be a multiple of 4 and of the subgroup size ${sg}`);
    if (t.CB !== undefined && !(Number.isInteger(t.CB) && t.CB >= 1 && t.CB <= 4)) throw new Error(`setMatmulTile: ${tileName(t)}: CB must be 1, 2, 3 or 4`);
  }
  tileChoice = t;
}

/** The tile in use: the one set, else defaultTile() for this adapter. */
export function matmulTile(): MatmulTile {
  return (tileChoice ??= defaultTile());
}

interface MatmulDims {
  batch: number;
  M: number;
  N: number;
  K: number;
  outShape: number[];
}

function dims(a: Tensor, b: Tensor, transA: boolean, transB: boolean): MatmulDims {
  const op = 'matmul';
  a.assertLive(op);
  b.assertLive(op);
  const desc = () => `A ${fmtShape(a.shape)}${transA ? 'ᵀ' : ''} · B ${fmtShape(b.shape)}${transB ? 'ᵀ' : ''}`;
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new Error(`${op}: expected f32 tensors, got ${a.dtype} and ${b.dtype} (${desc()})`);
  if (a.rank < 2 || a.rank > 3 || b.rank < 2 || b.rank > 3) throw new Error(`${op}: expected 2-D or 3-D (batched) operands, got ${desc()}`);
  const [M, Ka] = transA ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : [a.shape[a.rank - 2], a.shape[a.rank - 1]];
  const [Kb, N] = transB ? [b.shape[b.rank - 1], b.shape[b.rank - 2]] : [b.shape[b.rank - 2], b.shape[b.rank - 1]];
  if (Ka !== Kb) throw new Error(`${op}: inner dimensions differ (${Ka} vs ${Kb}) in ${desc()}`);
  const ba = a.rank === 3 ? a.shape[0] : 1;
  const bb = b.rank === 3 ? b.shape[0] : 1;
  if (a.rank === 3 && b.rank === 3 && ba !== bb) throw new Error(`${op}: batch sizes differ (${ba} vs ${bb}) in ${desc()}`);
  // a 2-D operand is shared by every batch of the other, including an empty batch
  const batch = a.rank === 3 ? ba : bb;
  const outShape = a.rank === 3 || b.rank === 3 ? [batch, M, N] : [M, N];
  return { batch, M, N, K: Ka, outShape };
}

/** The raw kernel launch (no tape). */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false, tile: MatmulTile = matmulTile()): Tensor {
  const { batch, M, N, K, outShape } = dims(a, b, transA, transB);
  if (batch > 65535) throw new Error(`matmul: batch ${batch} exceeds 65535 (A ${fmtShape(a.shape)}, B ${fmtShape(b.shape)})`);
  const c = empty(outShape, 'f32', 'matmul');
  if (c.size === 0) return c;
  const u = u32s(M, N, K, a.rank === 3 ? M * K : 0, b.rank === 3 ? K * N : 0, M * N);
  const args: LaunchArg[] = [u, a.binding('matmul'), b.binding('matmul'), c.binding('matmul')];
  if (tile.kind === 'broadcast') {
    const SG = broadcastLanes();
    // vec4 bindings need whole vec4s: K > 0 (else A and B are empty) and the contiguous dimension % 4 == 0
    const vecA = K > 0 && (transA ? M % 4 === 0 : K % 4 === 0);
    const vecB = K > 0 && (transB ? K % 4 === 0 : N % 4 === 0);
    // a texture holds one 2-D operand as stored ([rows, cols]); rows of whole 256-byte multiples, no K tail
    const maxDim = gpu('matmul').device.limits.maxTextureDimension2D;
    const texOk = (t: Tensor) => !!tile.textures && t.rank === 2 && K % 4 === 0 && t.shape[1] % 64 === 0 && t.shape[1] / 4 <= maxDim && t.shape[0] <= maxDim;
    const texA = vecA && texOk(a);
    const texB = vecB && texOk(b);
    if (texA) args[1] = operandTexture('A', a, a.shape[0], a.shape[1]);
    if (texB) args[2] = operandTexture('B', b, b.shape[0], b.shape[1]);
    const nRow = Math.ceil(M / tile.TM);
    const CB = tile.CB ?? 1;
    const nCol = Math.ceil(N / (4 * SG * CB));
    // grouped order needs the tiles in one grid dimension
    const group = nRow * nCol <= gpu('matmul').device.limits.maxComputeWorkgroupsPerDimension ? matmulGroup : 0;
    const spec = broadcastSpec({ transA, transB, vecA, vecB, vecC: N % 4 === 0, texA, texB, raggedK: K % 4 !== 0, TM: tile.TM, SG, CB, group });
    launch(spec, args, group ? [nRow * nCol, 1, batch] : [nCol, nRow, batch]);
  } else {
    const aligned = M % tile.BM === 0 && N % tile.BN === 0 && K % tile.BK === 0;
    const vecA = K > 0 && (transA ? M % 4 === 0 : K % 4 === 0);
    const vecB = K > 0 && (transB ? K % 4 === 0 : N % 4 === 0);
    launch(matmulSpec(transA, transB, aligned, tile, vecA, vecB), args, [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), batch]);
  }
  return c;
}

/**
 * C = op(A) · op(B) with op(X) = Xᵀ (last two axes) when the flag is set. A and B are [M,K]/[K,N] or batched
 * [b,M,K]/[b,K,N]; a 2-D operand is shared by every batch.
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const c = matmulRaw(a, b, transA, transB);
  if (needsGrad(a, b)) {
    record('matmul', [a, b], c, (dc, [sa, sb]) => {
      // dA = dC · op(B)ᵀ (or its transpose), dB = op(A)ᵀ · dC (or its transpose)
      let da: Tensor | null = null;
      let db: Tensor | null = null;
      if (a.requiresGrad) da = transA ? matmulRaw(sb, dc, transB, true) : matmulRaw(dc, sb, false, !transB);
      if (b.requiresGrad) db = transB ? matmulRaw(dc, sa, true, transA) : matmulRaw(sa, dc, !transA, false);
      return [da && reduceBatch(da, a.shape), db && reduceBatch(db, b.shape)];
    }, [a, b]);
  }
  return c;
}

function reduceBatch(g: Tensor, shape: Shape): Tensor {
  return g.rank === shape.length ? g : sumToShape(g, shape);
}

// ---- float64 reference --------------------------------------------------------------------------------

function at(x: Arr, batch: number, r: number, c: number, trans: boolean): number {
  const R = x.shape[x.shape.length - 2];
  const C = x.shape[x.shape.length - 1];
  const base = x.shape.length === 3 ? batch * R * C : 0;
  return trans ? x.data[base + c * C + r] : x.data[base + r * C + c];
}

export const ref = {
  matmul(a: Arr, b: Arr, transA = false, transB = false): Arr {
    const ra = a.shape.length, rb = b.shape.length;
    const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
    const K = transA ? a.shape[ra - 2] : a.shape[ra - 1];
    const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
    const batch = ra === 3 ? a.shape[0] : rb === 3 ? b.shape[0] : 1;
    const out = new Float64Array(batch * M * N);
    for (let z = 0; z < batch; z++)
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += at(a, z, i, k, transA) * at(b, z, k, j, transB);
          out[(z * M + i) * N + j] = s;
        }
    return { data: out, shape: ra === 3 || rb === 3 ? [batch, M, N] : [M, N] };
  },
  matmulBackward(a: Arr, b: Arr, dc: Arr, transA = false, transB = false): [Arr, Arr] {
    const ra = a.shape.length, rb = b.shape.length;
    const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
    const K = transA ? a.shape[ra - 2] : a.shape[ra - 1];
    const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
    const batch = dc.shape.length === 3 ? dc.shape[0] : 1;
    const da = new Float64Array(a.data.length);
    const db = new Float64Array(b.data.length);
    for (let z = 0; z < batch; z++)
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          const g = dc.data[(z * M + i) * N + j];
          for (let k = 0; k < K; k++) {
            const ai = (ra === 3 ? z * M * K : 0) + (transA ? k * M + i : i * K + k);
            const bi = (rb === 3 ? z * K * N : 0) + (transB ? j * K + k : k * N + j);
            da[ai] += g * b.data[bi];
            db[bi] += g * a.data[ai];
          }
        }
    return [{ data: da, shape: [...a.shape] }, { data: db, shape: [...b.shape] }];
  },
};
