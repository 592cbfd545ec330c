// The selection and vote of a weighted k-nearest-neighbour classifier, one workgroup per query row of a
// similarity matrix [R, N]. Selection is an exact radix select of the k-th largest similarity over
// order-preserving u32 keys of the floats (8-bit histograms in workgroup memory, stopping once the remaining bin
// is taken whole). To touch each row few times, it first selects on a 1-in-16 sample of the row a key that at
// least ~2k keys of the row should exceed, collects the keys at or above it into workgroup memory in one pass,
// and selects among those; when that cannot work (k large, a sample unlike the row, too many equal keys) it
// falls back to histogram passes over the whole row. Then one pass sums exp((s - s_max) / T) per class over the
// selected neighbours, and the argmax is written. Only the predictions leave the kernel.
// Ties at the k-th similarity go to the lower train index, so exactly k neighbours vote; the sums are in a fixed
// order, so results are deterministic. Not differentiable (a classifier for evaluation).

import { gpu } from '../engine/device.ts';
import { kernel, type Kernel } from '../engine/kernel.ts';
import { Tensor, empty, fmtShape } from '../engine/tensor.ts';
import { needsGrad } from '../engine/tape.ts';

const WG = 256;
/** One element in SAMPLE_STRIDE is in the sample. */
const SAMPLE_STRIDE = 16;

/**
 * Workgroup memory plan: `block` classes summed per pass over a row (registers per invocation and block x 1 KiB
 * of partial sums; more classes take more passes) and `cap` candidate keys for the sampled fast path. The large
 * plan needs ~26 KiB (lavapipe and most adapters give 32 KiB), the small one ~14 KiB (WebGPU guarantees 16 KiB).
 */
interface Plan {
  block: number;
  cap: number;
}
const LARGE: Plan = { block: 16, cap: 2048 };
const SMALL: Plan = { block: 8, cap: 1024 };

function planBytes(pl: Plan): number {
  return 4 * (2 * WG + pl.cap + pl.block * WG) + 64;
}

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

/**
 * The sample rank for the fast path, or 0 for none: the sample's r-th largest key should have about
 * SAMPLE_STRIDE * r >= k keys of the row above it (r is k / stride plus three standard deviations and a margin),
 * and those must fit in the candidate buffer (cap keys) with room to spare.
 */
export function sampleRank(n: number, k: number, cap: number): number {
  const sampled = Math.ceil(n / SAMPLE_STRIDE);
  const r = Math.ceil(k / SAMPLE_STRIDE) + Math.ceil(3 * Math.sqrt(k / SAMPLE_STRIDE)) + 4;
  const expected = (r * n) / sampled;
  return r <= sampled && expected <= cap / 2 ? r : 0;
}

function voteKernel(pl: Plan): Kernel {
  const B = pl.block;
  const CAP = pl.cap;
  const G = WG / B; // invocations that add up one class's partial sums
  const accs = [...Array(B).keys()];
  return kernel(`knnVote|${B}|${CAP}`, () => ({
    name: 'knnVote',
    uniforms: { n: 'u32', k: 'u32', rowOffset: 'u32', classes: 'u32', invT: 'f32', sampleRank: 'u32' },
    bindings: { sims: 'read f32', labels: 'read i32', preds: 'rw i32' },
    workgroupSize: WG,
    header: `
const ALL = 0xffffffffu;
var<workgroup> hist: array<atomic<u32>, ${WG}>;
var<workgroup> scanBuf: array<u32, ${WG}>;
var<workgroup> pick: vec4<u32>;
var<workgroup> maxKey: atomic<u32>;
var<workgroup> candCount: atomic<u32>;
var<workgroup> candTotal: u32;
var<workgroup> cand: array<u32, ${CAP}>;
var<workgroup> part: array<f32, ${B * WG}>;
var<private> t: u32;
var<private> base: u32;

// order-preserving map of f32 bits to u32: negative floats reversed below the positive ones
fn keyOf(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn valueOf(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// Radix select of the need-th largest key among the candidates (fromCand) or every stride-th key of the row.
// Returns (tau, tieNeed): the neighbours are the keys > tau, and the first tieNeed (by index; ALL: every one)
// of the keys == tau. floorKey: no key below it is a candidate (the early exit must not reach below it).
fn radixSelect(stride: u32, fromCand: bool, count: u32, need0: u32, floorKey: u32) -> vec2<u32> {
  var prefix = 0u;   // the decided high bits of the selected key
  var hiMask = 0u;   // which bits are decided
  var need = need0;  // keys still to take from inside the current bin
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    atomicStore(&hist[t], 0u);
    workgroupBarrier();
    if (fromCand) {
      for (var i = t; i < count; i += ${WG}u) {
        let key = cand[i];
        if ((key & hiMask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
      }
    } else {
      var mk = 0u;
      for (var i = t * stride; i < p.n; i += ${WG}u * stride) {
        let key = keyOf(sims[base + i]);
        mk = max(mk, key);
        if ((key & hiMask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
      }
      if (round == 0u) { atomicMax(&maxKey, mk); }
    }
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
    if (pk.z == need) { return vec2<u32>(max(prefix, floorKey), ALL); } // the whole bin is taken
  }
  return vec2<u32>(prefix, need); // prefix is the exact key; take 'need' of its copies
}`,
    body: `
  t = li;
  let row = wid.x;
  base = row * p.n;
  if (t == 0u) {
    atomicStore(&maxKey, 0u);
    atomicStore(&candCount, 0u);
  }

  // ---- select ----
  var sel = vec2<u32>(0u, ALL);
  var selected = false;
  if (p.sampleRank > 0u) {
    let keyLo = radixSelect(${SAMPLE_STRIDE}u, false, 0u, p.sampleRank, 0u).x;
    var mk = 0u;
    for (var i = t; i < p.n; i += ${WG}u) {
      let key = keyOf(sims[base + i]);
      mk = max(mk, key);
      if (key >= keyLo) {
        let slot = atomicAdd(&candCount, 1u);
        if (slot < ${CAP}u) { cand[slot] = key; }
      }
    }
    atomicMax(&maxKey, mk);
    workgroupBarrier();
    if (t == 0u) { candTotal = atomicLoad(&candCount); }
    let total = workgroupUniformLoad(&candTotal);
    if (total >= p.k && total <= ${CAP}u) {
      sel = radixSelect(1u, true, total, p.k, keyLo);
      selected = true;
    }
  }
  if (!selected) { sel = radixSelect(1u, false, 0u, p.k, 0u); }
  let tau = sel.x;
  let tieNeed = sel.y;

  // ---- vote: interleaved over the row (contiguous loads), or, when only some of the keys equal to tau are
  // taken, over contiguous index ranges per invocation so that those ties can be ranked by index ----
  var first = t;
  var step = ${WG}u;
  var last = p.n;
  var tieBase = 0u;
  if (tieNeed != ALL) {
    let len = (p.n + ${WG - 1}u) / ${WG}u;
    first = min(t * len, p.n);
    step = 1u;
    last = min(first + len, p.n);
    var c = 0u;
    for (var i = first; i < last; i++) { if (keyOf(sims[base + i]) == tau) { c++; } }
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
    for (var i = first; i < last; i += step) {
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
    // fixed summation order (deterministic): per class ${G} partial sums of ${B} values each, then those ${G}
    let cls = t / ${G}u;
    let seg = cls * ${WG}u + (t % ${G}u) * ${B}u;
    var s = 0.0;
    for (var u = 0u; u < ${B}u; u++) { s += part[seg + u]; }
    workgroupBarrier();
    part[t] = s;
    workgroupBarrier();
    if (t == 0u) {
      for (var j = 0u; j < ${B}u; j++) {
        if (c0 + j >= p.classes) { break; }
        var sc = 0.0;
        for (var q = 0u; q < ${G}u; q++) { sc += part[j * ${G}u + q]; }
        if (sc > bestScore) { bestScore = sc; bestClass = c0 + j; }
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) { preds[p.rowOffset + row] = i32(bestClass); }`,
  }));
}

export interface KnnVoteOptions {
  k: number;
  temperature: number;
  numClasses: number;
  /** Workgroup memory to plan for (default: the device's maxComputeWorkgroupStorageSize). */
  workgroupBytes?: number;
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
    const got = `${labels.dtype} ${fmtShape(labels.shape)}`;
    throw new Error(`${op}: labels must be i32 [${N}] (one per column of similarities ${fmtShape(sims.shape)}), got ${got}`);
  }
  if (!Number.isInteger(o.k) || o.k < 1 || o.k > N) throw new Error(`${op}: k must be an integer in 1..${N} (the number of references), got ${o.k}`);
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) throw new Error(`${op}: temperature must be a positive number, got ${o.temperature}`);
  if (!Number.isInteger(o.numClasses) || o.numClasses < 1) throw new Error(`${op}: numClasses must be a positive integer, got ${o.numClasses}`);
  if (needsGrad(sims)) throw new Error(`${op}: not differentiable; call it under noGrad() or on a detached tensor`);
  if (R > 65535) throw new Error(`${op}: ${R} rows exceed 65535 per dispatch; split the queries`);
  const budget = Math.min(o.workgroupBytes ?? Infinity, gpu('knnVote').device.limits.maxComputeWorkgroupStorageSize);
  const plan = planBytes(LARGE) <= budget ? LARGE : SMALL;
  if (planBytes(plan) > budget) throw new Error(`${op}: needs ${planBytes(SMALL)} bytes of workgroup memory, the budget is ${budget}`);
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
  const uniforms = { n: N, k: o.k, rowOffset: offset, classes: o.numClasses, invT: 1 / o.temperature, sampleRank: sampleRank(N, o.k, plan.cap) };
  voteKernel(plan).launch({ ...uniforms, sims, labels, preds }, [R]);
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
