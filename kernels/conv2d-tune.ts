// Per-adapter choice of the conv2d kernels: time a few candidate tunings (the subgroup kernels, the portable
// ones, the workgroup-tiled implicit GEMM with a few tile shapes) once on representative layers, forward + dx +
// dW, and keep the fastest, cached per adapter (engine/tuning.ts: in memory, in Node a JSON file, in browsers
// localStorage). Optional: without it conv2d uses defaultConvTuning(). As tuneMatmul does, the adapter's default
// is kept unless a candidate beats it clearly, here on every tuning layer, so the choice is never a bet that one
// layer's gain pays for another's loss. A candidate whose outputs disagree with the default's is never chosen.
// Where the choice is the tiled kernel, which can run a batchNorm as the prologue of its forward and dW, the
// prologue is measured too: batchNorm -> conv on the same layers, forward and backward, on and off, with the same
// rule (keep bnPrologueDefault() unless the other setting wins on every layer).
//
//   import { tuneConv } from 'byol-webgpu';
//   const r = await tuneConv();   // { name, choice: ConvTuning, source: 'measured' | 'cache' | 'memory', ms, timings }

import { gpu } from '../engine/device.ts';
import { normalizedError } from '../engine/ref.ts';
import { sync } from '../engine/recorder.ts';
import { tensor, tidy, type Tensor } from '../engine/tensor.ts';
import { backward } from '../engine/tape.ts';
import { setDeviceTuning, tuneCachePath, readTuneCache, writeTuneCache } from '../engine/tuning.ts';
import { uniformArray } from '../engine/random.ts';
import {
  conv2dRaw, conv2dBackwardInput, conv2dBackwardWeight, convOutSize, convSubgroupWidth, defaultConvTuning, DEFAULT_TILED_TILES,
  tiledEpilogueFits, bnPrologueDefault, type ConvGeom, type ConvTuning, type TiledTiles,
} from './conv2d.ts';
import { batchNormConv2d } from './batchnorm-conv.ts';

/** Bump when the kernels change so that cached choices are measured again. */
const KERNEL_VERSION = 4; // 4: a tiled choice carries a measured bnPrologue; 3: dW fetches U = 2 pixel steps before their products

export interface ConvTuneResult {
  /** the candidate's name (convTuningName) */
  name: string;
  choice: ConvTuning;
  /** measured now, read from the cache, or already tuned in this process */
  source: 'measured' | 'cache' | 'memory';
  /** time tuneConv() took, ms */
  ms: number;
  /** per candidate, ms of fwd + dx + dW on each tuning layer (measured runs only); Infinity = rejected or not reached */
  timings: { name: string; ms: number[] }[];
  /**
   * Where the choice is the tiled kernel (measured runs only): ms of batchNorm -> conv, forward and backward, on
   * each tuning layer with the batchNorm as the conv's prologue and without; `choice.bnPrologue` holds the pick.
   */
  prologue?: { on: number[]; off: number[] };
}

/** A tuning layer: [N, H, Cin, Cout], 3x3, stride 1, padding 1. */
export type ConvTuneLayer = readonly [number, number, number, number];

export interface ConvTuneOptions {
  /** measure even if a cached choice exists */
  force?: boolean;
  /** install the choice as this device's conv2d record (default true); false only reports it */
  apply?: boolean;
  /**
   * The layers timed (default: a wide one shaped like the bench's conv rows, at a smaller batch, and a narrow one
   * like the default encoder's 16-channel stage).
   */
  layers?: ConvTuneLayer[];
  /** stop trying further candidates after this long, ms (default 120000: on lavapipe each candidate compiles several pipelines, seconds each) */
  budgetMs?: number;
  /** Node: the cache file, or null for none (default: $BYOL_WEBGPU_CACHE_DIR or os.tmpdir(), byol-webgpu/conv2d-tune.json) */
  cacheFile?: string | null;
  /** candidate tunings; the first is the one to beat (default: candidatesFor this adapter) */
  candidates?: ConvTuning[];
}

export const DEFAULT_TUNE_LAYERS: ConvTuneLayer[] = [
  [8, 32, 64, 64],
  [16, 28, 16, 16],
];

/** Keep the default unless a candidate takes at most this fraction of its time on every layer. */
export const SWITCH_MARGIN = 0.85;

/** Whether `other` takes at most SWITCH_MARGIN of `base`'s time on every layer: the one rule for any switch. */
function beatsOnEveryLayer(other: number[], base: number[]): boolean {
  return other.every((v, i) => v <= base[i] * SWITCH_MARGIN);
}

export function convTuningName(t: ConvTuning): string {
  if (t.variant === 'tiled') {
    const { TM, TN, TK, RM, CQ } = t.tiled;
    return `tiled ${TM}x${TN}x${TK} r${RM}c${CQ}${t.bnPrologue === undefined ? '' : t.bnPrologue ? ' +bn-prologue' : ' -bn-prologue'}`;
  }
  const { RB, CB, RQ, dwCB, U, narrowRows } = t.tiles;
  return `${t.variant} RB${RB} CB${CB} RQ${RQ} dwCB${dwCB} U${U} narrow${narrowRows}${t.textures ? ' +textures' : ''}`;
}

const TILED_CANDIDATES: TiledTiles[] = [
  DEFAULT_TILED_TILES,
  // tfjs-backend-webgpu's vec4 conv2d_mm: 8x8 invocations of 4x4 outputs, 32 deep
  { TM: 32, TN: 32, TK: 32, RM: 4, CQ: 1 },
  { TM: 32, TN: 32, TK: 16, RM: 4, CQ: 1 },
  // shallow steps for the narrow layers (8-16 channels per tap)
  { TM: 64, TN: 32, TK: 8, RM: 4, CQ: 2 },
];

/**
 * The tunings worth timing here: the default first, the other lane kernels, the tiled kernel at a few tiles. A
 * tile whose epilogue reduction does not fit beside it in workgroup memory is left out where the default tile's
 * does: it would lose the forward's moments and dx's batchNorm sums, passes over memory that the tuning layers'
 * timings do not see.
 */
export function candidatesFor(): ConvTuning[] {
  const def = defaultConvTuning();
  const out: ConvTuning[] = [def];
  const add = (t: ConvTuning) => {
    if (!out.some((o) => convTuningName(o) === convTuningName(t))) out.push(t);
  };
  const sg = convSubgroupWidth();
  // the lane kernels with their operands in storage buffers and in operand textures
  for (const textures of [!!def.textures, !def.textures]) {
    if (sg) {
      add({ ...def, variant: 'subgroups', textures });
      if (sg <= 8) add({ ...def, variant: 'subgroups', textures, tiles: { ...def.tiles, narrowRows: 0 } });
    }
    add({ ...def, variant: 'portable', textures });
  }
  const roomy = tiledEpilogueFits(DEFAULT_TILED_TILES);
  for (const tiled of TILED_CANDIDATES) if (!roomy || tiledEpilogueFits(tiled)) add({ ...def, variant: 'tiled', tiled });
  return out;
}

let tunedFor: { key: string; result: ConvTuneResult } | null = null;

function adapterKey(): string {
  const { info } = gpu('tuneConv');
  return `v${KERNEL_VERSION}|${info.vendor}|${info.architecture}|${info.description}|sg${convSubgroupWidth()}`;
}

function install(r: ConvTuneResult, apply: boolean | undefined): void {
  if (apply !== false) setDeviceTuning('conv2d', r.choice);
}

// ---- measuring ---------------------------------------------------------------------------------------

interface Layer {
  g: ConvGeom;
  x: Tensor;
  w: Tensor;
  dy: Tensor;
}

function makeLayer([N, H, C, K]: ConvTuneLayer, seed: number): Layer {
  const OH = convOutSize(H, 3, 1, 1);
  const g: ConvGeom = { N, H, W: H, Cin: C, KH: 3, KW: 3, Cout: K, stride: 1, pad: 1, OH, OW: OH };
  const rand = (shape: number[], s: number) => tensor(uniformArray(shape.reduce((a, b) => a * b, 1), seed + s), shape);
  return { g, x: rand([N, H, H, C], 1), w: rand([3, 3, C, K], 2), dy: rand([N, OH, OH, K], 3) };
}

/** fwd, dx and dW of one layer under one tuning. */
function runOnce(l: Layer, t: ConvTuning): Tensor[] {
  const opts = { stride: 1, padding: 1, tuning: t };
  return [conv2dRaw(l.x, l.w, null, opts), conv2dBackwardInput(l.dy, l.w, l.g, opts), conv2dBackwardWeight(l.x, l.dy, l.g, opts)];
}

/** Wall time of one launch until the device is idle, its outputs released. */
async function timeOnce(launch: () => Tensor | Tensor[]): Promise<number> {
  const s = performance.now();
  const out = launch();
  for (const y of Array.isArray(out) ? out : [out]) y.dispose();
  await sync();
  return performance.now() - s;
}

/**
 * Lowers best[arm][layer] to the fastest of `rounds` more runs of each arm on each layer, round-robin so that load
 * from other processes spreads over all arms. Arms that `runs` rejects are skipped; stops early when `more` says so.
 */
async function bestOfRounds(
  best: number[][], rounds: number, launch: (arm: number, layer: number) => Tensor | Tensor[],
  runs: (arm: number) => boolean = () => true, more: () => boolean = () => true,
): Promise<void> {
  for (let round = 0; round < rounds && more(); round++) {
    for (let arm = 0; arm < best.length; arm++) {
      if (!runs(arm)) continue;
      for (let i = 0; i < best[arm].length; i++) best[arm][i] = Math.min(best[arm][i], await timeOnce(() => launch(arm, i)));
    }
  }
}

/**
 * Compiles each candidate and checks its outputs against the first candidate's, then times them in rounds,
 * round-robin so that load from other processes spreads over all of them; a candidate's time per layer is its
 * best run. Candidates not reached within the budget stay Infinity (the first is always reached).
 */
async function measure(candidates: ConvTuning[], shapes: ConvTuneLayer[], budgetMs: number): Promise<number[][]> {
  const layers = shapes.map((s, i) => makeLayer(s, 1000 * i));
  const t0 = performance.now();
  const ms = candidates.map(() => shapes.map(() => Infinity));
  const ok = candidates.map(() => false);
  const reference: Float32Array[][] = [];
  try {
    for (let c = 0; c < candidates.length; c++) {
      if (c > 0 && performance.now() - t0 > budgetMs / 2) break; // keep half the budget for timing
      let good = true;
      for (let i = 0; i < layers.length && good; i++) {
        let outs: Tensor[];
        try {
          outs = runOnce(layers[i], candidates[c]); // compiles
        } catch {
          good = false; // does not fit this device
          break;
        }
        const got = await Promise.all(outs.map((y) => y.toArray() as Promise<Float32Array>));
        outs.forEach((y) => y.dispose());
        if (c === 0) reference.push(got);
        else if (got.some((v, k) => normalizedError(v, reference[i][k]) > 1e-4)) good = false;
        if (good) ms[c][i] = await timeOnce(() => runOnce(layers[i], candidates[c]));
      }
      ok[c] = good;
    }
    await bestOfRounds(ms, 3, (c, i) => runOnce(layers[i], candidates[c]), (c) => ok[c], () => performance.now() - t0 < budgetMs);
  } finally {
    for (const l of layers) [l.x, l.w, l.dy].forEach((t) => t.dispose());
  }
  return ms;
}

/** The batchNorm of the prologue measurement: training, with its ReLU, two groups (BYOL's two views). */
const PROLOGUE_BN = { training: true, relu: true, groups: 2 } as const;

/**
 * batchNorm -> conv on each layer, forward and backward, with `t`'s tiled kernels and the batchNorm as the conv's
 * prologue and not, timed in rounds like the candidates; both must give the same output. Returns the best ms of each
 * setting per layer, or null where the two disagree or a layer cannot take the prologue (odd batch).
 */
async function measurePrologue(t: ConvTuning, shapes: ConvTuneLayer[], rounds: number): Promise<{ on: number[]; off: number[] } | null> {
  if (shapes.some(([N]) => N % PROLOGUE_BN.groups !== 0)) return null;
  const layers = shapes.map(([N, H, C, K], i) => {
    const seed = 5000 + 1000 * i;
    const leaf = (shape: number[], s: number, lo = -1, hi = 1) => tensor(uniformArray(shape.reduce((a, b) => a * b, 1), seed + s, lo, hi), shape, { requiresGrad: true });
    return { x: leaf([N, H, H, C], 1), gamma: leaf([C], 2, 0.5, 1.5), beta: leaf([C], 3, -0.5, 0.5), w: leaf([3, 3, C, K], 4, -0.3, 0.3), dy: tensor(uniformArray(N * H * H * K, seed + 5), [N, H, H, K]) };
  });
  type L = (typeof layers)[number];
  const run = (l: L, bnPrologue: boolean): Tensor => {
    const y = tidy(() => batchNormConv2d(l.x, l.gamma, l.beta, null, PROLOGUE_BN, l.w, null, { padding: 1, tuning: { ...t, bnPrologue } }));
    backward(y, l.dy);
    for (const v of [l.x, l.gamma, l.beta, l.w]) {
      v.grad?.dispose();
      v.grad = null;
    }
    return y;
  };
  const best = [true, false].map(() => shapes.map(() => Infinity)); // [on, off] per layer
  try {
    for (const l of layers) {
      const outs = [true, false].map((on) => run(l, on)); // compiles
      const [a, b] = await Promise.all(outs.map((y) => y.toArray() as Promise<Float32Array>));
      outs.forEach((y) => y.dispose());
      if (normalizedError(a, b) > 1e-4) return null;
    }
    await bestOfRounds(best, rounds, (arm, i) => run(layers[i], arm === 0));
  } finally {
    for (const l of layers) [l.x, l.gamma, l.beta, l.w, l.dy].forEach((v) => v.dispose());
  }
  return { on: best[0], off: best[1] };
}

/**
 * Whether to run the batchNorm as the conv's prologue, from its timings: the adapter's default
 * (bnPrologueDefault()) unless the other setting takes at most SWITCH_MARGIN of the default's time on every layer.
 */
export function choosePrologue(defaultOn: boolean, ms: { on: number[]; off: number[] }): boolean {
  const [mine, other] = defaultOn ? [ms.on, ms.off] : [ms.off, ms.on];
  return beatsOnEveryLayer(other, mine) ? !defaultOn : defaultOn;
}

/** Picks the conv2d kernels for this adapter (measuring at most once per adapter) and installs them. */
export async function tuneConv(opts: ConvTuneOptions = {}): Promise<ConvTuneResult> {
  const t0 = performance.now();
  const key = adapterKey();
  const own = !opts.candidates && !opts.layers;
  if (!opts.force && own && tunedFor?.key === key) {
    const r = { ...tunedFor.result, source: 'memory' as const, ms: performance.now() - t0 };
    install(r, opts.apply);
    return r;
  }
  const where = await tuneCachePath('conv2d-tune', opts.cacheFile);
  const cache = await readTuneCache<{ name: string; choice: ConvTuning; ms: number[]; date: string }>(where);
  const hit = cache[key];
  if (!opts.force && own && hit) {
    const r: ConvTuneResult = { name: hit.name, choice: hit.choice, source: 'cache', ms: performance.now() - t0, timings: [] };
    tunedFor = { key, result: r };
    install(r, opts.apply);
    return r;
  }
  const candidates = opts.candidates ?? candidatesFor();
  if (candidates.length === 0) throw new Error('tuneConv: no candidate tunings');
  const ms = await measure(candidates, opts.layers ?? DEFAULT_TUNE_LAYERS, opts.budgetMs ?? 120000);
  if (!ms[0].every(Number.isFinite)) throw new Error(`tuneConv: the default candidate (${convTuningName(candidates[0])}) failed to run`);
  // the best candidate that beats the default by the margin on every layer, by total time
  let best = 0;
  const total = (c: number) => ms[c].reduce((a, b) => a + b, 0);
  for (let c = 1; c < candidates.length; c++) {
    if (beatsOnEveryLayer(ms[c], ms[0]) && total(c) < total(best)) best = c;
  }
  let choice = candidates[best];
  let prologue: { on: number[]; off: number[] } | undefined;
  if (choice.variant === 'tiled') {
    const p = await measurePrologue(choice, opts.layers ?? DEFAULT_TUNE_LAYERS, 3);
    if (p) {
      prologue = p;
      choice = { ...choice, bnPrologue: choosePrologue(choice.bnPrologue ?? bnPrologueDefault(), p) };
    }
  }
  const result: ConvTuneResult = {
    name: convTuningName(choice),
    choice,
    source: 'measured',
    ms: performance.now() - t0,
    timings: candidates.map((c, i) => ({ name: convTuningName(c), ms: ms[i] })),
    ...(prologue ? { prologue } : {}),
  };
  if (own) {
    cache[key] = { name: result.name, choice: result.choice, ms: ms[best], date: new Date().toISOString() };
    await writeTuneCache(where, cache);
    tunedFor = { key, result };
  }
  install(result, opts.apply);
  return result;
}

/** Forgets the in-process choice (tests). */
export function clearConvTuneMemo(): void {
  tunedFor = null;
}
