// Batched matmul C[b] = op(A[b]) · op(B[b]), op = optional transpose given as a flag (never a copy).
// Tiled: a workgroup computes a BM x BN tile of C through BK-deep slabs of A and B staged in workgroup memory
// (as vec4 rows), each thread a TM x 4 register block; the slab loop body is unrolled at generation time
// because WGSL loops are costly on llvmpipe. Shapes that are multiples of the tile skip the bounds checks.

import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { launch, u32s, type KernelSpec } from '../engine/recorder.ts';
import { Tensor, empty, fmtShape, type Shape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { sumToShape } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

export interface MatmulTile {
  BM: number; // rows of C per workgroup
  BN: number; // columns of C per workgroup (4 per thread)
  BK: number; // depth of one slab
  TM: number; // rows per thread
}

export const DEFAULT_TILE: MatmulTile = { BM: 64, BN: 64, BK: 16, TM: 4 };

const specs = new Map<string, KernelSpec>();

export function matmulSpec(transA: boolean, transB: boolean, aligned: boolean, tile: MatmulTile = DEFAULT_TILE): KernelSpec {
  const { BM, BN, BK, TM } = tile;
  const key = `${transA}${transB}${aligned}${BM}_${BN}_${BK}_${TM}`;
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
  const loads = (what: 'A' | 'B', vecs: number, rowsPerK: number) => {
    let out = '';
    for (let e = 0; e < Math.ceil(vecs / threads); e++) {
      const guard = (e + 1) * threads > vecs ? `if (tid + ${e * threads}u < ${vecs}u) ` : '';
      out += `    ${guard}{ let e = tid + ${e * threads}u; let kk = e / ${rowsPerK / 4}u; let q = (e % ${rowsPerK / 4}u) * 4u;\n`;
      out += what === 'A'
        ? `      As[e] = vec4<f32>(loadA(m0 + q, k0 + kk), loadA(m0 + q + 1u, k0 + kk), loadA(m0 + q + 2u, k0 + kk), loadA(m0 + q + 3u, k0 + kk)); }\n`
        : `      Bs[e] = vec4<f32>(loadB(k0 + kk, n0 + q), loadB(k0 + kk, n0 + q + 1u), loadB(k0 + kk, n0 + q + 2u), loadB(k0 + kk, n0 + q + 3u)); }\n`;
    }
    return out;
  };
  const code = wgsl`
struct P { M: u32, N: u32, K: u32, batchA: u32, batchB: u32, batchC: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
var<workgroup> As: array<vec4<f32>, ${aVecs}>;
var<workgroup> Bs: array<vec4<f32>, ${bVecs}>;
var<private> aOff: u32;
var<private> bOff: u32;

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
${loads('A', aVecs, BM)}${loads('B', bVecs, BN)}    workgroupBarrier();
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

let tileChoice: MatmulTile = DEFAULT_TILE;
/** Chosen by the tuner (bench/ and engine/tune.ts) per adapter; DEFAULT_TILE until then. */
export function setMatmulTile(t: MatmulTile): void {
  tileChoice = t;
}
export function matmulTile(): MatmulTile {
  return tileChoice;
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
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false, tile = tileChoice): Tensor {
  const { batch, M, N, K, outShape } = dims(a, b, transA, transB);
  if (batch > 65535) throw new Error(`matmul: batch ${batch} exceeds 65535 (A ${fmtShape(a.shape)}, B ${fmtShape(b.shape)})`);
  const c = empty(outShape, 'f32', 'matmul');
  if (c.size === 0) return c;
  const aligned = M % tile.BM === 0 && N % tile.BN === 0 && K % tile.BK === 0;
  const spec = matmulSpec(transA, transB, aligned, tile);
  const u = u32s(M, N, K, a.rank === 3 ? M * K : 0, b.rank === 3 ? K * N : 0, M * N);
  launch(spec, [u, a.binding('matmul'), b.binding('matmul'), c.binding('matmul')], [Math.ceil(N / tile.BN), Math.ceil(M / tile.BM), batch]);
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
