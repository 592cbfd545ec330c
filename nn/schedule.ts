// BYOL's schedules (byol/utils/schedules.py): learning rate with linear warm-up then cosine decay to zero,
// scaled by batch/256; and the target EMA rate tau rising from tau_base to 1 on a cosine.

export interface WarmupCosineOptions {
  /** LR for a batch of 256; the schedule scales it by batchSize / 256. */
  baseLr: number;
  batchSize: number;
  warmupSteps: number;
  totalSteps: number;
}

function cosineDecay(step: number, maxSteps: number, initial: number): number {
  const k = Math.min(Math.max(step, 0), maxSteps);
  return initial * 0.5 * (1 + Math.cos((Math.PI * k) / maxSteps));
}

/** lr(step): step/W · scaled for step < W, then scaled · (1 + cos(π (step−W)/(K−W)))/2, 0 from K on. */
export function warmupCosine(step: number, o: WarmupCosineOptions): number {
  const { baseLr, batchSize, warmupSteps: W, totalSteps: K } = o;
  if (!Number.isFinite(step) || step < 0) throw new Error(`warmupCosine: step must be >= 0, got ${step}`);
  if (!(baseLr >= 0) || !(batchSize > 0)) throw new Error(`warmupCosine: need baseLr >= 0 and batchSize > 0, got ${baseLr} and ${batchSize}`);
  if (!Number.isInteger(W) || W < 0 || !Number.isInteger(K) || K <= W) {
    throw new Error(`warmupCosine: need integers 0 <= warmupSteps < totalSteps, got warmupSteps ${W}, totalSteps ${K}`);
  }
  const scaled = (baseLr * batchSize) / 256;
  if (step < W) return (step / W) * scaled;
  return cosineDecay(step - W, K - W, scaled);
}

/** tau(k) = 1 − (1 − tauBase)·(cos(πk/K) + 1)/2, k clipped at K: tauBase at 0, 1 at K. */
export function emaTau(step: number, totalSteps: number, tauBase: number): number {
  if (!Number.isFinite(step) || step < 0) throw new Error(`emaTau: step must be >= 0, got ${step}`);
  if (!(totalSteps > 0)) throw new Error(`emaTau: totalSteps must be > 0, got ${totalSteps}`);
  if (!(tauBase >= 0 && tauBase <= 1)) throw new Error(`emaTau: tauBase must be in [0, 1], got ${tauBase}`);
  return 1 - (1 - tauBase) * cosineDecay(step, totalSteps, 1);
}
