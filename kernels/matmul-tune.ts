// Per-adapter choice of the matmul tile: time a few candidate tiles once on a representative product and keep
// the fastest, cached per adapter (in memory; in Node in a JSON file under the OS temp folder; in browsers in
// localStorage), and write it into this device's matmul record (matmulTuning(), engine/tuning.ts). Optional:
// without it matmul uses defaultTile(), the usual winner for the adapter's kind.
// Every candidate computes the same sums (only the rounding can differ); a candidate whose output disagrees
// with the others' is never chosen.
//
//   import { tuneMatmul } from 'byol-webgpu';
//   const r = await tuneMatmul();   // { choice: { name, tile }, source: 'measured' | 'cache' | 'memory', ms, timings }

import { gpu } from '../engine/device.ts';
import { normalizedError } from '../engine/ref.ts';
import { sync } from '../engine/recorder.ts';
import { tensor } from '../engine/tensor.ts';
import { setDeviceTuning, tuneCachePath, readTuneCache, writeTuneCache } from '../engine/tuning.ts';
import { matmulRaw, matmulTuning, checkTile, broadcastLanes, tileName, defaultTile, DEFAULT_TILE, MATMUL_TUNING, type MatmulTile } from './matmul.ts';

import { uniformArray } from '../engine/random.ts';

/** Bump when kernels change so that cached choices are measured again. */
const KERNEL_VERSION = 5; // 5: broadcast tiles with 2 column quads per lane (CB)

export interface TuneResult {
  choice: { name: string; tile: MatmulTile };
  /** measured now, read from the cache file / localStorage, or already tuned in this process */
  source: 'measured' | 'cache' | 'memory';
  /** time tuneMatmul() took */
  ms: number;
  /** per-candidate ms per op on the tuning shape (measured runs only); Infinity = skipped or rejected */
  timings: { name: string; ms: number }[];
}

export interface TuneOptions {
  /** measure even if a cached choice exists */
  force?: boolean;
  /** side of the square product timed (default 512) */
  size?: number;
  /** stop trying further candidates after this long, ms (default 1500) */
  budgetMs?: number;
  /** Node: the cache file, or null for none (default: $BYOL_WEBGPU_CACHE_DIR or os.tmpdir(), byol-webgpu/tune.json) */
  cacheFile?: string | null;
  /** candidate tiles (default: candidatesFor this adapter) */
  candidates?: MatmulTile[];
}

let tunedFor: { key: string; result: TuneResult } | null = null;

function adapterKey(): string {
  const { info } = gpu();
  return `v${KERNEL_VERSION}|${info.vendor}|${info.architecture}|${info.description}|sg${broadcastLanes()}`;
}

/** The tiles worth timing on this adapter: a few broadcast depths where subgroups allow, a few tiled shapes. */
export function candidatesFor(): MatmulTile[] {
  const sg = broadcastLanes();
  const def = defaultTile();
  const out: MatmulTile[] = [def];
  const add = (t: MatmulTile) => {
    if (!out.some((o) => tileName(o) === tileName(t))) out.push(t);
  };
  if (sg) {
    // one column quad per lane only at 32 rows: at 16 or 24 it lost to the same rows with 2 quads
    // (bench/results/matmul-notes.md)
    for (const TM of [16, 24]) if (TM % sg === 0) add({ kind: 'broadcast', TM, CB: 2, textures: true });
    if (32 % sg === 0) {
      add({ kind: 'broadcast', TM: 32, textures: true });
      add({ kind: 'broadcast', TM: 32 });
    }
  }
  // on CPU adapters the tiled kernel is far slower than broadcast (bench/results/matmul-notes.md): not worth timing
  if (def.kind !== 'broadcast') for (const t of [DEFAULT_TILE, { BM: 32, BN: 64, BK: 16, TM: 4 }]) add(t);
  return out;
}

/** Keep the default unless a candidate beats it by more than this: close calls flip with the machine's load. */
export const SWITCH_MARGIN = 0.85;

// ---- cache -------------------------------------------------------------------------------------------

type CacheEntry = { tile: MatmulTile; ms: number; date: string };

function usable(t: MatmulTile): boolean {
  try {
    checkTile(t, 'tuneMatmul');
    return true;
  } catch {
    return false;
  }
}

/** Makes `tile` this device's matmul choice, keeping the rest of the record. */
function choose(tile: MatmulTile): void {
  setDeviceTuning(MATMUL_TUNING, { ...matmulTuning(), tile });
}

// ---- measuring ---------------------------------------------------------------------------------------

/**
 * Compiles each candidate and checks its output against the first candidate's, then times them in rounds, one
 * sample of ~25 ms per candidate per round, round-robin so that load from other processes spreads over all of
 * them; a candidate's time is its best sample. Candidates not reached within the budget are Infinity.
 */
async function measure(candidates: MatmulTile[], size: number, budgetMs: number): Promise<{ name: string; ms: number; tile: MatmulTile }[]> {
  const a = tensor(uniformArray(size * size, 1, -0.5, 0.5), [size, size]);
  const b = tensor(uniformArray(size * size, 2, -0.5, 0.5), [size, size]);
  const t0 = performance.now();
  const out = candidates.map((tile) => ({ name: tileName(tile), ms: Infinity, tile, k: 0 }));
  let reference: Float32Array | null = null;
  const timeOps = async (tile: MatmulTile, k: number) => {
    const s = performance.now();
    for (let i = 0; i < k; i++) matmulRaw(a, b, false, false, { tuning: { tile } }).dispose();
    await sync();
    return (performance.now() - s) / k;
  };
  try {
    for (const c of out) {
      if (reference && performance.now() - t0 > budgetMs / 2) break; // keep half the budget for timing
      const first = matmulRaw(a, b, false, false, { tuning: { tile: c.tile } }); // compiles
      const got = (await first.toArray()) as Float32Array;
      first.dispose();
      if (!reference) reference = got;
      else if (normalizedError(got, reference) > 1e-4) continue; // wrong here: never chosen
      const one = await timeOps(c.tile, 1);
      c.ms = one;
      c.k = Math.max(1, Math.min(64, Math.round(25 / Math.max(one, 0.05))));
    }
    for (let round = 0; round < 4 && performance.now() - t0 < budgetMs; round++) {
      for (const c of out) if (c.k > 0) c.ms = Math.min(c.ms, await timeOps(c.tile, c.k));
    }
  } finally {
    a.dispose();
    b.dispose();
  }
  return out.map(({ name, ms, tile }) => ({ name, ms, tile }));
}


/** Picks the fastest matmul tile for this adapter (measuring at most once per adapter) and makes it the device's choice. */
export async function tuneMatmul(opts: TuneOptions = {}): Promise<TuneResult> {
  const t0 = performance.now();
  const key = adapterKey();
  if (!opts.force && !opts.candidates && tunedFor?.key === key) {
    choose(tunedFor.result.choice.tile);
    return { ...tunedFor.result, source: 'memory', ms: performance.now() - t0 };
  }
  const file = await tuneCachePath('tune', opts.cacheFile);
  const cache = await readTuneCache<CacheEntry>(file);
  const hit = cache[key];
  if (!opts.force && !opts.candidates && hit && usable(hit.tile)) {
    choose(hit.tile);
    const result: TuneResult = { choice: { name: tileName(hit.tile), tile: hit.tile }, source: 'cache', ms: performance.now() - t0, timings: [] };
    tunedFor = { key, result };
    return result;
  }
  const candidates = (opts.candidates ?? candidatesFor()).filter(usable);
  if (candidates.length === 0) throw new Error('tuneMatmul: no usable candidate tile for this device');
  const timings = await measure(candidates, opts.size ?? 512, opts.budgetMs ?? 1500);
  let best = timings.reduce((x, y) => (y.ms < x.ms ? y : x));
  const def = timings.find((t) => tileName(t.tile) === tileName(defaultTile()));
  if (def && Number.isFinite(def.ms) && best.ms > def.ms * SWITCH_MARGIN) best = def;
  if (!Number.isFinite(best.ms)) throw new Error('tuneMatmul: every candidate failed its check');
  choose(best.tile);
  const result: TuneResult = {
    choice: { name: best.name, tile: best.tile },
    source: 'measured',
    ms: performance.now() - t0,
    timings: timings.map(({ name, ms }) => ({ name, ms })),
  };
  if (!opts.candidates) {
    cache[key] = { tile: best.tile, ms: best.ms, date: new Date().toISOString() };
    await writeTuneCache(file, cache);
    tunedFor = { key, result };
  }
  return result;
}

/** Forgets the in-process choice (tests; or after changing TuneOptions.candidates by hand). */
export function clearTuneMemo(): void {
  tunedFor = null;
}
