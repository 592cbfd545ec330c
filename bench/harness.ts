// Timing machinery shared by bench/run.ts, bench/matmul-ladder.ts and the quick scripts (reduce-quick.ts,
// bn-quick.ts): how a sample is taken, what the machine is, and how much CPU other processes took while we
// measured (on a 2-core CPU "GPU" that decides everything).
//
// A sample = `k` launches recorded back to back, then one wait for the queue; per-op time = sample / k, with k
// chosen from one calibration op so that a sample lasts >= targetMs. The ratio is taken from wall-clock time in
// the JS thread, so it includes Dawn's per-dispatch cost; where the adapter has timestamp queries our side also
// reports GPU time between two stamps around the k ops (bench/gpu-timer.ts).

import { loadavg } from 'node:os';
import { readFileSync } from 'node:fs';

export interface Sample {
  /** wall-clock ms per op */
  ms: number;
  /** CPU ms per op of the process that ran the ops (lavapipe's threads included) */
  cpuMs: number;
  /** GPU ms per op from timestamp queries, where the side has them */
  gpuMs?: number;
}

export interface Side {
  /** Runs k ops back to back, waits for the last one, and times them. */
  run: (k: number) => Promise<Sample>;
  /** this side's sampling budget, ms, overriding MeasureOptions.budgetMs (e.g. for a peer taking seconds per op) */
  budgetMs?: number;
}

/** A side in this process: `op` records one op, `sync` waits for the device. */
export function localSide(op: () => void, sync: () => Promise<void>, budgetMs?: number, timer?: { begin(): void; end(): Promise<number> } | null): Side {
  return {
    budgetMs,
    run: async (k) => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      timer?.begin();
      for (let i = 0; i < k; i++) op();
      const gpu = timer ? await timer.end() : null; // end() waits for the device
      await sync();
      const ms = (performance.now() - t0) / k;
      const c = process.cpuUsage(c0);
      return { ms, cpuMs: (c.user + c.system) / 1000 / k, ...(gpu !== null ? { gpuMs: gpu / k } : {}) };
    },
  };
}

export interface Timing {
  medianMs: number;
  minMs: number;
  /** median CPU time per op of the process that ran the side (lavapipe's threads included), ms: less sensitive to other load */
  cpuMs: number;
  /** median GPU time per op from timestamp queries, or null where the side has none */
  gpuMs: number | null;
  /** ops per sample */
  k: number;
  samples: number;
  /** first op including pipeline compilation, ms (or the first timed op, when a check ran the first) */
  firstMs: number;
}

export interface MeasureOptions {
  /** a sample should last at least this long */
  targetMs?: number;
  /** samples to take, at most */
  samples?: number;
  /** stop after this much sampling time once `minSamples` are in */
  budgetMs?: number;
  minSamples?: number;
  /** run one op before calibrating (false when the caller already ran each side once, e.g. in a check) */
  warm?: boolean;
}

const now = () => performance.now();

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Warm-up and calibration for one side: the first op (compiles pipelines), then one timed op that sets k. An op
 * that alone lasts a whole sample (tfjs matmul 2048: ~4 s) counts as the first sample instead of being redone.
 */
async function prepare(side: Side, targetMs: number, warm: boolean): Promise<{ k: number; firstMs: number; first?: Sample }> {
  let firstMs = NaN;
  if (warm) firstMs = (await side.run(1)).ms;
  const one = await side.run(1);
  if (!warm) firstMs = one.ms;
  const k = Math.max(1, Math.min(2000, Math.ceil(targetMs / Math.max(one.ms, 1e-3))));
  return { k, firstMs, first: k === 1 ? one : undefined };
}

/**
 * Measures several sides of one case with their samples interleaved (ours, peer, ours, peer, ...), so that
 * load from other processes hits them alike and the ratio stays meaningful on a busy machine.
 */
export async function measureInterleaved(sides: Side[], opts: MeasureOptions = {}): Promise<Timing[]> {
  const targetMs = opts.targetMs ?? 200;
  const maxSamples = opts.samples ?? 7;
  const minSamples = Math.min(opts.minSamples ?? 2, maxSamples);
  const budgetMs = opts.budgetMs ?? 20_000;
  const prep: { k: number; firstMs: number; first?: Sample }[] = [];
  for (const s of sides) prep.push(await prepare(s, targetMs, opts.warm ?? true));
  const times: number[][] = prep.map((p) => (p.first ? [p.first.ms] : []));
  const cpu: number[][] = prep.map((p) => (p.first ? [p.first.cpuMs] : []));
  const gpuT: number[][] = prep.map((p) => (p.first?.gpuMs !== undefined ? [p.first.gpuMs] : []));
  const spent = sides.map(() => 0);
  for (let r = 0; r < maxSamples; r++) {
    let any = false;
    for (let i = 0; i < sides.length; i++) {
      if (times[i].length >= maxSamples) continue;
      if (times[i].length >= minSamples && spent[i] > (sides[i].budgetMs ?? budgetMs)) continue;
      const t0 = now();
      const r = await sides[i].run(prep[i].k);
      times[i].push(r.ms);
      cpu[i].push(r.cpuMs);
      if (r.gpuMs !== undefined) gpuT[i].push(r.gpuMs);
      spent[i] += now() - t0;
      any = true;
    }
    if (!any) break;
  }
  return sides.map((_, i) => ({
    medianMs: median(times[i]),
    minMs: Math.min(...times[i]),
    cpuMs: median(cpu[i]),
    gpuMs: gpuT[i].length ? median(gpuT[i]) : null,
    k: prep[i].k,
    samples: times[i].length,
    firstMs: prep[i].firstMs,
  }));
}

// ---- machine and load --------------------------------------------------------------------------------

/** The CPU's model name (engine/lavapipe.ts keys its measured width by it). */
export { cpuModel } from '../engine/lavapipe.ts';

function busyJiffies(): number | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] ?? 0);
  } catch {
    return null;
  }
}

/**
 * CPU used by other processes while a stretch of work ran, as a percentage of one core. lavapipe's worker
 * threads live in this process, so process.cpuUsage() counts them as ours.
 */
export class ForeignCpu {
  private t0 = now();
  private busy0 = busyJiffies();
  private own0 = process.cpuUsage();

  /**
   * Percent of one core used by other processes since construction; null where /proc/stat is missing.
   * `alsoOursMs`: CPU time of helper processes of ours over the same stretch (the peer's child process).
   */
  percent(alsoOursMs = 0): number | null {
    const busy1 = busyJiffies();
    if (this.busy0 === null || busy1 === null) return null;
    const wallS = (now() - this.t0) / 1000;
    if (wallS <= 0) return 0;
    const own = process.cpuUsage(this.own0);
    const ownS = (own.user + own.system) / 1e6 + alsoOursMs / 1000;
    const busyS = (busy1 - this.busy0) / 100; // USER_HZ is 100 on Linux
    return Math.max(0, ((busyS - ownS) / wallS) * 100);
  }
}

export function loadAverage(): string {
  return loadavg().map((x) => x.toFixed(2)).join(' ');
}

// ---- output -------------------------------------------------------------------------------------------

export function fmtMs(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms)) return '-';
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

export function fmtRate(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return '-';
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

export function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
