// Batched matmul C[b] = op(A[b]) · op(B[b]), op = optional transpose given as a flag (never a copy).
// One kernel template (matmulKernel) with two strategies for its inner loop; the engine picks one per adapter
// (defaultTile(), refined by kernels/matmul-tune.ts; bench/matmul-ladder.ts shows the steps and their speed,
// bench/results/matmul-notes.md the measurements behind the choices):
// - 'tiled': a workgroup computes a BM x BN tile of C through BK-deep slabs of A and B staged in workgroup
//   memory (as vec4 rows), each thread a TM x 4 register block. Portable: any adapter, no optional features.
// - 'broadcast': for CPU adapters (lavapipe). There a storage-buffer or workgroup load whose address is not a
//   compile-time constant becomes a per-lane scalar loop with a bounds check, while arithmetic is one
//   instruction for all 8 (or 16) lanes, so loads per multiply-add decide the speed.
//   One subgroup (one SIMD group of SG lanes) computes TM rows x 4·SG columns: each lane owns 4 columns (one
//   vec4 of B per k) and all TM rows; the rows of A are loaded cooperatively, one vec4 per lane, and handed to
//   every lane with subgroupBroadcast (a register shuffle, no memory). Per 4 k's: TM/SG + 4 vec4 loads for
//   16·TM multiply-adds per lane. Operands whose rows are multiples of 64 floats are read from rgba32float
//   storage textures (see operandTexture), which lavapipe fetches with vector loads.
// Both unroll their inner loop at generation time (WGSL loops are costly on llvmpipe) and take shapes as
// uniforms; vec4 loads are used where the contiguous dimension is a multiple of 4, scalar loads otherwise.
// The choice (tile, tile order, texture cache size) is a per-device record (engine/tuning.ts, matmulTuning());
// a call may override any part of it with `{ tuning: {...} }`.

import { gpu, onRelease } from '../engine/device.ts';
import { operandTexture, operandTextureStats, fitsOperandTexture } from '../engine/textures.ts';
import { kernel, type Kernel, type KernelArg } from '../engine/kernel.ts';
import { tuningFor } from '../engine/tuning.ts';
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
// accumulators; faster than that on lavapipe (bench/results/matmul-notes.md, rungs 'TM=32 +textures' and
// 'TM=16 CB=2 +textures' of npm run bench:ladder)
export const BROADCAST_TILE: BroadcastTile = { kind: 'broadcast', TM: 16, CB: 2, textures: true };

// Groups of 8 row tiles: consecutive workgroups share B's column panel while the group's A panels stay in
// cache; faster than column tiles first once the operands outgrow the caches (bench/results/matmul-notes.md)
export const DEFAULT_MATMUL_GROUP = 8;

/** The per-device matmul choice: what matmulRaw uses unless a call overrides it. */
export interface MatmulTuning {
  /** the kernel strategy and its tile */
  tile: MatmulTile;
  /** the broadcast kernel's tile order (see BroadcastVariant.group) */
  group: number;
  /** cap of the operand-texture cache in bytes, applied when a texture is added; least recently used go first */
  textureCacheBytes: number;
}

export interface MatmulOptions {
  /** overrides of this device's record (matmulTuning()) for this call and its backward */
  tuning?: Partial<MatmulTuning>;
}

/** The family name of the matmul record in engine/tuning.ts (kernels/matmul-tune.ts writes it). */
export const MATMUL_TUNING = 'matmul';

/** This device's matmul choice, with `overrides` applied: defaultMatmulTuning() until a tuner writes another. */
export function matmulTuning(overrides?: Partial<MatmulTuning>): MatmulTuning {
  return tuningFor(MATMUL_TUNING, defaultMatmulTuning, overrides);
}

/** The record for this adapter before any tuning. */
export function defaultMatmulTuning(): MatmulTuning {
  return { tile: defaultTile(), group: DEFAULT_MATMUL_GROUP, textureCacheBytes: 256 * 2 ** 20 };
}

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

/** Throws unless this device can run the tile: the error names the tile and what it needs. */
export function checkTile(t: MatmulTile, op = 'matmul'): void {
  const int = (x: number | undefined) => Number.isInteger(x) && x! > 0;
  if (t.kind === 'broadcast') {
    const sg = broadcastLanes();
    if (!sg) throw new Error(`${op}: ${tileName(t)} needs the 'subgroups' feature with a fixed subgroup size, which this device lacks`);
    if (!int(t.TM) || t.TM % sg !== 0 || t.TM % 4 !== 0) throw new Error(`${op}: ${tileName(t)}: TM must be a multiple of 4 and of the subgroup size ${sg}`);
    if (t.CB !== undefined && !(Number.isInteger(t.CB) && t.CB >= 1 && t.CB <= 4)) throw new Error(`${op}: ${tileName(t)}: CB must be 1, 2, 3 or 4`);
  } else {
    const { BM, BN, BK, TM } = t;
    if (![BM, BN, BK, TM].every(int) || TM % 4 !== 0 || BM % TM !== 0 || BN % 4 !== 0 || BK % 4 !== 0) {
      throw new Error(`${op}: ${tileName(t)}: TM, BN and BK must be multiples of 4 and BM a multiple of TM`);
    }
  }
}

// ---- the kernel template -------------------------------------------------------------------------------

/** How the operands are read; every flag is a property of the shapes, checked by the launcher. */
interface Operands {
  transA: boolean;
  transB: boolean;
  /** A read as vec4: along k (K % 4 == 0) or, transposed, along m (M % 4 == 0) */
  vecA: boolean;
  /** B read as vec4: along n (N % 4 == 0) or, transposed, along k (K % 4 == 0) */
  vecB: boolean;
}

export interface TiledVariant extends Operands {
  kind: 'tiled';
  /** M, N and K are multiples of BM, BN and BK: no bounds checks */
  aligned: boolean;
  BM: number;
  BN: number;
  BK: number;
  TM: number;
}

export interface BroadcastVariant extends Operands {
  kind: 'broadcast';
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

export type MatmulVariant = TiledVariant | BroadcastVariant;

/** The uniforms of every variant: shapes and the batch strides (0 for an operand shared by every batch). */
const UNIFORMS = { M: 'u32', N: 'u32', K: 'u32', batchA: 'u32', batchB: 'u32', batchC: 'u32' } as const;

const elem = (vec: boolean) => (vec ? 'vec4<f32>' : 'f32');
const xyzw = 'xyzw';
const quad = [0, 1, 2, 3];
const range = (n: number) => [...Array(n).keys()];

/**
 * The matmul kernel of one variant. One declaration for all: the uniforms, the operand bindings (buffers of
 * f32 or vec4, or textures) and C; the strategy fills the workgroup size, the module-scope helpers and the body.
 */
export function matmulKernel(v: MatmulVariant): Kernel {
  return kernel(`matmul|${JSON.stringify(v, Object.keys(v).sort())}`, () => {
    const slots = v.kind === 'broadcast' ? broadcastSlots(v) : tiledSlots(v);
    const texA = v.kind === 'broadcast' && v.texA;
    const texB = v.kind === 'broadcast' && v.texB;
    return {
      name: 'matmul',
      uniforms: UNIFORMS,
      bindings: {
        A: texA ? 'texture' : `read ${elem(v.vecA)}`,
        B: texB ? 'texture' : `read ${elem(v.vecB)}`,
        C: `rw ${elem(v.kind === 'broadcast' && v.vecC)}`,
      },
      enable: v.kind === 'broadcast' ? ['subgroups'] : [],
      ...slots,
    };
  });
}

interface Slots {
  workgroupSize: readonly [number, number?];
  header: string;
  body: string;
}

/**
 * The tiled strategy. A vec4 operand goes to workgroup memory as is along the slab's rows (transposed A, plain
 * B), or along k (plain A, transposed B) scattered into 4 rows of the slab.
 */
function tiledSlots(v: TiledVariant): Slots {
  const { transA, transB, aligned, vecA, vecB, BM, BN, BK, TM } = v;
  const WX = BN / 4; // threads along n
  const WY = BM / TM; // threads along m
  const threads = WX * WY;
  const aVecs = (BM * BK) / 4; // vec4 (4 consecutive m) per slab
  const bVecs = (BN * BK) / 4;
  const accs = range(TM);
  let inner = '';
  for (let kk = 0; kk < BK; kk++) {
    inner += `    { let bv = Bs[${kk * (BN / 4)}u + tx];\n`;
    for (let q = 0; q < TM / 4; q++) {
      inner += `      let a${q} = As[${kk * (BM / 4)}u + ty * ${TM / 4}u + ${q}u];\n`;
      for (let c = 0; c < 4; c++) inner += `      acc${q * 4 + c} += a${q}.${xyzw[c]} * bv;\n`;
    }
    inner += '    }\n';
  }
  // slab element e of As / Bs is [kk][4 consecutive rows q..q+3]; `vec` reads 4 floats at once: along the rows
  // straight into e, or along k scattered into 4 slab rows
  const loads = (what: 'A' | 'B', vecs: number, rowsPerK: number, vec: boolean, alongK: boolean) => {
    let out = '';
    const S = what === 'A' ? 'As' : 'Bs';
    const at = what === 'A' ? (r: string, k: string) => `loadA(m0 + ${r}, k0 + ${k})` : (r: string, k: string) => `loadB(k0 + ${k}, n0 + ${r})`;
    const at4 = what === 'A' ? (r: string, k: string) => `loadA4(m0 + ${r}, k0 + ${k})` : (r: string, k: string) => `loadB4(k0 + ${k}, n0 + ${r})`;
    for (let e = 0; e < Math.ceil(vecs / threads); e++) {
      const guard = (e + 1) * threads > vecs ? `if (tid + ${e * threads}u < ${vecs}u) ` : '';
      if (vec && alongK) {
        out += `    ${guard}{ let e = tid + ${e * threads}u; let r = e / ${BK / 4}u; let j = (e % ${BK / 4}u) * 4u; let v = ${at4('r', 'j')};\n`;
        for (let c = 0; c < 4; c++) out += `      ${S}[(j + ${c}u) * ${rowsPerK / 4}u + r / 4u][r % 4u] = v.${xyzw[c]};\n`;
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
  // loadA(m, k) / loadB(k, n): element of op(A) / op(B), 0 outside the matrix unless aligned; the vec4 forms
  // (loadA4 / loadB4) read 4 consecutive elements along the stored rows from a multiple of 4, so one bound
  // covers all four
  const loadFn = (X: 'A' | 'B', vec: boolean) => {
    const [r, c, R, Cn, trans, off] = X === 'A' ? ['m', 'k', 'p.M', 'p.K', transA, 'aOff'] as const : ['k', 'n', 'p.K', 'p.N', transB, 'bOff'] as const;
    const index = `${off} + ${trans ? `${c} * ${R} + ${r}` : `${r} * ${Cn} + ${c}`}`;
    const guard = aligned ? '' : `  if (${r} >= ${R} || ${c} >= ${Cn}) { return ${vec ? 'vec4<f32>(0.0)' : '0.0'}; }\n`;
    return `fn load${X}${vec ? '4' : ''}(${r}: u32, ${c}: u32) -> ${elem(vec)} {\n${guard}  return ${X}[${vec ? `(${index}) / 4u` : index}];\n}`;
  };
  const header = `
var<workgroup> As: array<vec4<f32>, ${aVecs}>;
var<workgroup> Bs: array<vec4<f32>, ${bVecs}>;
var<private> aOff: u32;
var<private> bOff: u32;
${loadFn('A', vecA)}
${loadFn('B', vecB)}`;
  const store = accs.map((i) => {
    const m = `m0 + ty * ${TM}u + ${i}u`;
    if (aligned) return `C[cOff + (${m}) * p.N + n] = acc${i}.x; C[cOff + (${m}) * p.N + n + 1u] = acc${i}.y; C[cOff + (${m}) * p.N + n + 2u] = acc${i}.z; C[cOff + (${m}) * p.N + n + 3u] = acc${i}.w;`;
    return `{ let m = ${m}; if (m < p.M) { let r = cOff + m * p.N; let v = acc${i};
    if (n < p.N) { C[r + n] = v.x; } if (n + 1u < p.N) { C[r + n + 1u] = v.y; } if (n + 2u < p.N) { C[r + n + 2u] = v.z; } if (n + 3u < p.N) { C[r + n + 3u] = v.w; } } }`;
  });
  const body = `
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
  ${store.join('\n  ')}`;
  return { workgroupSize: [WX, WY], header, body };
}

/** The broadcast strategy (see the top of this file). */
function broadcastSlots(v: BroadcastVariant): Slots {
  const { transA, transB, vecA, vecB, vecC, texA, texB, raggedK, TM, SG, CB } = v;
  if ((texA && !vecA) || (texB && !vecB) || ((texA || texB) && raggedK)) throw new Error('matmul: texture operands need vec4 shapes and K % 4 == 0');
  if (TM % SG !== 0 || TM % 4 !== 0) throw new Error(`matmul: broadcast tile TM=${TM} must be a multiple of 4 and of the subgroup size ${SG}`);
  const cbs = range(CB);
  const W = 4 * SG * CB; // columns of C per subgroup
  const G = TM / SG; // A loads per 4-deep step, one vec4 per lane each
  const TQ = TM / 4; // quads of rows (transposed, vectorized A)
  const rows = range(TM);
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
    tail = `  {\n    let k = K4 * 4u;\n${tail}  }\n`;
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
  // the tail reads single floats of a vec4 binding by index
  const read = (X: 'A' | 'B', vec: boolean) => `fn read${X}(i: u32) -> f32 {\n  return ${vec ? `${X}[i / 4u][i % 4u]` : `${X}[i]`};\n}`;
  const header = raggedK ? `${read('A', vecA)}\n\n${read('B', vecB)}` : '';
  const tileOrigin = GM > 0
    ? `  let nRow = (M + ${TM - 1}u) / ${TM}u;
  let nCol = (N + ${W - 1}u) / ${W}u;
  let perGroup = ${GM}u * nCol;
  let first = (wid.x / perGroup) * ${GM}u;
  let inGroup = wid.x % perGroup;
  let gm = min(nRow - first, ${GM}u);
  let m0 = (first + inGroup % gm) * ${TM}u;
  let n = (inGroup / gm) * ${W}u + lane * 4u;`
    : `  let m0 = wid.y * ${TM}u;
  let n = wid.x * ${W}u + lane * 4u;`;
  const body = `
  let M = p.M; let N = p.N; let K = p.K;
  let M4 = M / 4u; let N4 = N / 4u; let K4 = K / 4u;
  let lane = lid.x;
${tileOrigin}
  let aOff = wid.z * p.batchA; let bOff = wid.z * p.batchB; let cOff = wid.z * p.batchC;
  let aOff4 = aOff / 4u; let bOff4 = bOff / 4u; let cOff4 = cOff / 4u;
  // rows and columns this lane loads, clamped into the matrix: values past M or N only reach accumulators
  // that are never stored
  ${range(G).map((g) => `let ra${g} = min(m0 + ${g * SG}u + lane, M - 1u);`).join(' ')}
  ${vecA && transA ? range(G).map((g) => `let ak${g} = (${g * SG}u + lane) / ${TQ}u; let aq${g} = min(m0 / 4u + (${g * SG}u + lane) % ${TQ}u, M4 - 1u);`).join(' ') : ''}
  ${cbs.map((cb) => `let n_${cb} = n + ${cb * 4 * SG}u; ${quad.map((c) => `let cn${c}_${cb} = min(n_${cb} + ${c}u, N - 1u);`).join(' ')} let nq_${cb} = min(n_${cb}, N - 4u) / 4u;`).join('\n  ')}
  ${rows.map((i) => cbs.map((cb) => `var acc${i}_${cb} = vec4<f32>(0.0);`).join(' ')).join(' ')}
  for (var kb = 0u; kb < K4; kb++) {
    let k = kb * 4u;
${loadA}${loadB}${fmas}  }
${tail}${store}`;
  return { workgroupSize: [SG], header, body };
}

// ---- operand textures: engine/textures.ts ----------------------------------------------------------------

/** Textures kept for kernel operands (memory accounting; matmul's and conv2d's share one cache). */
export const matmulTextureStats = operandTextureStats;

// ---- the op --------------------------------------------------------------------------------------------

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

/** The raw kernel launch (no tape), with this device's matmulTuning() and the call's overrides. */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false, opts: MatmulOptions = {}): Tensor {
  const { batch, M, N, K, outShape } = dims(a, b, transA, transB);
  if (batch > 65535) throw new Error(`matmul: batch ${batch} exceeds 65535 (A ${fmtShape(a.shape)}, B ${fmtShape(b.shape)})`);
  const tuning = matmulTuning(opts.tuning);
  const tile = tuning.tile;
  checkTile(tile);
  if (!(Number.isInteger(tuning.group) && tuning.group >= 0)) throw new Error(`matmul: tuning.group must be an integer >= 0 (0 = column tiles first), got ${tuning.group}`);
  if (!(tuning.textureCacheBytes >= 0)) throw new Error(`matmul: tuning.textureCacheBytes must be a number >= 0, got ${tuning.textureCacheBytes}`);
  const c = empty(outShape, 'f32', 'matmul');
  if (c.size === 0) return c;
  const args: Record<string, KernelArg> = { M, N, K, batchA: a.rank === 3 ? M * K : 0, batchB: b.rank === 3 ? K * N : 0, batchC: M * N, A: a, B: b, C: c };
  // vec4 bindings need whole vec4s: K > 0 (else A and B are empty) and the contiguous dimension % 4 == 0
  const vecA = K > 0 && (transA ? M % 4 === 0 : K % 4 === 0);
  const vecB = K > 0 && (transB ? K % 4 === 0 : N % 4 === 0);
  if (tile.kind === 'broadcast') {
    const SG = broadcastLanes();
    // a texture holds one 2-D operand as stored ([rows, cols]); rows of whole 256-byte multiples, no K tail
    const texOk = (t: Tensor) => !!tile.textures && t.rank === 2 && K % 4 === 0 && fitsOperandTexture(t.shape[0], t.shape[1]);
    const texA = vecA && texOk(a);
    const texB = vecB && texOk(b);
    if (texA) args.A = operandTexture('matmul A', a, a.shape[0], a.shape[1], tuning.textureCacheBytes);
    if (texB) args.B = operandTexture('matmul B', b, b.shape[0], b.shape[1], tuning.textureCacheBytes);
    const nRow = Math.ceil(M / tile.TM);
    const CB = tile.CB ?? 1;
    const nCol = Math.ceil(N / (4 * SG * CB));
    // grouped order needs the tiles in one grid dimension
    const group = nRow * nCol <= gpu('matmul').device.limits.maxComputeWorkgroupsPerDimension ? tuning.group : 0;
    const k = matmulKernel({ kind: 'broadcast', transA, transB, vecA, vecB, vecC: N % 4 === 0, texA, texB, raggedK: K % 4 !== 0, TM: tile.TM, SG, CB, group });
    k.launch(args, group ? [nRow * nCol, 1, batch] : [nCol, nRow, batch]);
  } else {
    const { BM, BN, BK, TM } = tile;
    const aligned = M % BM === 0 && N % BN === 0 && K % BK === 0;
    matmulKernel({ kind: 'tiled', transA, transB, vecA, vecB, aligned, BM, BN, BK, TM }).launch(args, [Math.ceil(N / BN), Math.ceil(M / BM), batch]);
  }
  return c;
}

/**
 * C = op(A) · op(B) with op(X) = Xᵀ (last two axes) when the flag is set. A and B are [M,K]/[K,N] or batched
 * [b,M,K]/[b,K,N]; a 2-D operand is shared by every batch. `opts.tuning` overrides this device's choice of
 * kernel for this product and its gradients.
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false, opts: MatmulOptions = {}): Tensor {
  const c = matmulRaw(a, b, transA, transB, opts);
  if (needsGrad(a, b)) {
    record('matmul', [a, b], c, (dc, [sa, sb]) => {
      // dA = dC · op(B)ᵀ (or its transpose), dB = op(A)ᵀ · dC (or its transpose)
      let da: Tensor | null = null;
      let db: Tensor | null = null;
      if (a.requiresGrad) da = transA ? matmulRaw(sb, dc, transB, true, opts) : matmulRaw(dc, sb, false, !transB, opts);
      if (b.requiresGrad) db = transB ? matmulRaw(dc, sa, true, transA, opts) : matmulRaw(sa, dc, !transA, false, opts);
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
