// The selection and vote of a weighted k-nearest-neighbour classifier, one workgroup per query row of a
// similarity matrix [R, N]: an exact radix select of the k-th largest similarity (four 8-bit histogram passes
// over order-preserving u32 keys of the floats, in workgroup memory; it stops early once the remaining bin is
// taken whole), then a vote that sums exp((s - s_max) / T) per class over the selected neighbours, then the
// argmax. Only the predicted class of each row leaves the kernel; nothing of the N-wide rows is read back.
// Ties at the k-th similarity are broken by train index (lower first), so exactly k neighbours vote.
// Not differentiable (a classifier for evaluation).

import { launch, params, type KernelSpec } from '../engine/recorder.ts';
import { Tensor, empty, fmtShape } from '../engine/tensor.ts';
import { needsGrad } from '../engine/tape.ts';

const WG = 256;
/** Classes summed per pass over a row (registers per invocation); more classes take more passes. */
const CLASS_BLOCK = 16;

let cached: KernelSpec | null = null;

function scan(dir: 'suffix' | 'prefix'): string {
  // inclusive Hillis-Steele scan of scanBuf over the 256 invocations, unrolled
  let s = '';
  for (let d = 1; d < WG; d *= 2) {
    const cond = dir === 'suffix' ? `t + ${d}u < ${WG}u` : `t >= ${d}u`;
    const at = dir === 'suffix' ? `t + ${d}u` : `t - ${d}u`;
    s += `  { var v = 0u; if (${cond}) { v = scanBuf[${at}]; } workgroupBarrier(); scanBuf[t] += v; workgroupBarrier(); }\n`;
  }
  return s;
}

function voteSpec(): KernelSpec {
  if (cached) return cached;
  const B = CLASS_BLOCK;
  const accs = [...Array(B).keys()];
  const code = `
struct P { n: u32, k: u32, rowOffset: u32, classes: u32, invT: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> sims: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> preds: array<i32>;

const ALL = 0xffffffffu;
var<workgroup> hist: array<atomic<u32>, ${WG}>;
var<workgroup> scanBuf: array<u32, ${WG}>;
var<workgroup> pick: vec4<u32>;
var<workgroup> maxKey: atomic<u32>;
var<workgroup> part: array<f32, ${B * WG}>;

// order-preserving map of f32 bits to u32: negative floats reversed below the positive ones
fn keyOf(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn valueOf(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let row = wid.x;
  let base = row * p.n;
  if (t == 0u) { atomicStore(&maxKey, 0u); }

  // ---- radix select: the bin holding the k-th largest key, 8 bits at a time from the top ----
  var prefix = 0u;   // the decided high bits of the k-th key
  var hiMask = 0u;   // which bits are decided
  var need = p.k;    // neighbours still to take from inside the current bin
  var tieNeed = ALL; // how many keys equal to prefix to take (ALL: every one)
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    atomicStore(&hist[t], 0u);
    workgroupBarrier();
    var mk = 0u;
    for (var i = t; i < p.n; i += ${WG}u) {
      let key = keyOf(sims[base + i]);
      mk = max(mk, key);
      if ((key & hiMask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
    }
    if (round == 0u) { atomicMax(&maxKey, mk); }
    workgroupBarrier();
    let h = atomicLoad(&hist[t]);
    scanBuf[t] = h;
    workgroupBarrier();
${scan('suffix')}    // scanBuf[t]: keys in bins >= t; exactly one bin has >= need at or above it and < need above it
    let ge = scanBuf[t];
    if (ge >= need && ge - h < need) { pick = vec4<u32>(t, ge - h, h, 0u); }
    let pk = workgroupUniformLoad(&pick);
    need -= pk.y;
    prefix |= pk.x << shift;
    hiMask |= 255u << shift;
    if (pk.z == need) { break; } // the whole bin is taken: every key >= prefix is a neighbour
    if (round == 3u) { tieNeed = need; } // prefix is the exact k-th key; take only 'need' of its copies
  }
  let tau = prefix;

  // ---- vote over contiguous index ranges (so ties can be ranked by index) ----
  let len = (p.n + ${WG - 1}u) / ${WG}u;
  let lo = min(t * len, p.n);
  let hi = min(lo + len, p.n);
  var tieBase = 0u;
  if (tieNeed != ALL) {
    var c = 0u;
    for (var i = lo; i < hi; i++) { if (keyOf(sims[base + i]) == tau) { c++; } }
    scanBuf[t] = c;
    workgroupBarrier();
${scan('prefix')}    tieBase = scanBuf[t] - c;
  }
  // the top similarity scales the weights: exp((s - s_max) / T) has the ratios of exp(s / T) without overflow
  let vmax = valueOf(atomicLoad(&maxKey));
  var bestScore = -1.0;
  var bestClass = 0u;
  for (var c0 = 0u; c0 < p.classes; c0 += ${B}u) {
    ${accs.map((j) => `var a${j} = 0.0;`).join(' ')}
    var ties = tieBase;
    for (var i = lo; i < hi; i++) {
      let v = sims[base + i];
      let key = keyOf(v);
      var take = key > tau;
      if (key == tau) { take = ties < tieNeed; ties++; }
      if (take) {
        let w = exp((v - vmax) * p.invT);
        let l = labels[i] - i32(c0);
        ${accs.map((j) => `a${j} += select(0.0, w, l == ${j});`).join(' ')}
      }
    }
    ${accs.map((j) => `part[${j * WG}u + t] = a${j};`).join(' ')}
    workgroupBarrier();
    // fixed summation order (deterministic): 16 partial sums of 16 per class, then the 16 partials
    let cls = t / 16u;
    let seg = cls * ${WG}u + (t % 16u) * 16u;
    var s = 0.0;
    for (var u = 0u; u < 16u; u++) { s += part[seg + u]; }
    workgroupBarrier();
    part[t] = s;
    workgroupBarrier();
    if (t == 0u) {
      for (var j = 0u; j < ${B}u; j++) {
        if (c0 + j >= p.classes) { break; }
        var sc = 0.0;
        for (var q = 0u; q < 16u; q++) { sc += part[j * 16u + q]; }
        if (sc > bestScore) { bestScore = sc; bestClass = c0 + j; }
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) { preds[p.rowOffset + row] = i32(bestClass); }
}`;
  cached = { name: 'knnVote', code, bindings: ['uniform', 'read', 'read', 'rw'] };
  return cached;
}

export interface KnnVoteOptions {
  k: number;
  temperature: number;
  numClasses: number;
}

/**
 * For each row of `sims` [R, N] (similarities of R queries to N references), the class with the largest sum
 * of exp(s / T) over its k most similar references; `labels` [N] i32 are the references' classes (labels
 * outside 0..numClasses-1 do not vote). Writes the R predictions into `into.preds` from row `into.offset`
 * when given (returns that tensor), else into a new [R] i32 tensor.
 */
export function knnVote(sims: Tensor, labels: Tensor, o: KnnVoteOptions, into?: { preds: Tensor; offset: number }): Tensor {
  const op = 'knnVote';
  sims.assertLive(op);
  labels.assertLive(op);
  if (sims.dtype !== 'f32' || sims.rank !== 2) throw new Error(`${op}: similarities must be f32 [R, N], got ${sims.dtype} ${fmtShape(sims.shape)}`);
  const [R, N] = sims.shape;
  if (labels.dtype !== 'i32' || labels.rank !== 1 || labels.size !== N) {
    throw new Error(`${op}: labels must be i32 [${N}] (one per column of similarities ${fmtShape(sims.shape)}), got ${labels.dtype} ${fmtShape(labels.shape)}`);
  }
  if (!Number.isInteger(o.k) || o.k < 1 || o.k > N) throw new Error(`${op}: k must be an integer in 1..${N} (the number of references), got ${o.k}`);
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) throw new Error(`${op}: temperature must be a positive number, got ${o.temperature}`);
  if (!Number.isInteger(o.numClasses) || o.numClasses < 1) throw new Error(`${op}: numClasses must be a positive integer, got ${o.numClasses}`);
  if (needsGrad(sims)) throw new Error(`${op}: not differentiable; call it under noGrad() or on a detached tensor`);
  if (R > 65535) throw new Error(`${op}: ${R} rows exceed 65535 per dispatch; split the queries`);
  let preds: Tensor;
  let offset = 0;
  if (into) {
    preds = into.preds;
    offset = into.offset;
    preds.assertLive(op);
    if (preds.dtype !== 'i32' || preds.rank !== 1 || !Number.isInteger(offset) || offset < 0 || offset + R > preds.size) {
      throw new Error(`${op}: cannot write ${R} predictions at ${offset} into ${preds.dtype} ${fmtShape(preds.shape)}`);
    }
  } else preds = empty([R], 'i32', op);
  if (R === 0) return preds;
  launch(voteSpec(), [params({ u: N }, { u: o.k }, { u: offset }, { u: o.numClasses }, 1 / o.temperature), sims.binding(op), labels.binding(op), preds.binding(op)], [R]);
  return preds;
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  /**
   * Class scores [R, numClasses] of the weighted kNN vote on a row-major similarity matrix [R, N]: the k
   * largest similarities (ties by lower index), each adding exp((s - s_max) / T) to its class.
   */
  knnScores(sims: ArrayLike<number>, R: number, N: number, labels: ArrayLike<number>, k: number, T: number, numClasses: number): Float64Array {
    const out = new Float64Array(R * numClasses);
    const order = new Array<number>(N);
    for (let r = 0; r < R; r++) {
      const s = (j: number) => sims[r * N + j];
      for (let j = 0; j < N; j++) order[j] = j;
      order.sort((a, b) => s(b) - s(a) || a - b);
      const top = s(order[0]);
      for (let q = 0; q < k; q++) {
        const l = labels[order[q]];
        if (l >= 0 && l < numClasses) out[r * numClasses + l] += Math.exp((s(order[q]) - top) / T);
      }
    }
    return out;
  },
  /** Row-wise argmax (ties by lower index) of a row-major [R, C] matrix. */
  argmaxRows(x: ArrayLike<number>, R: number, C: number): Int32Array {
    const out = new Int32Array(R);
    for (let r = 0; r < R; r++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (x[r * C + c] > x[r * C + best]) best = c;
      out[r] = best;
    }
    return out;
  },
};
