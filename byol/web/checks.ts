// Runs the engine's checks in the page: every kernel family's checks (byol/checks.ts: the very checks the Node
// suites run, through nn/check.ts: float64 reference vs finite differences, GPU forward and gradients vs the
// reference, no leaked buffers), one at a time, reporting each result as it lands.

import { checkFamilies } from '../checks.ts';
import { clearTape } from '../../nn/index.ts';

export interface CheckResult {
  family: string;
  name: string;
  ok: boolean;
  /** the error message when !ok */
  err: string | null;
  ms: number;
}

export interface CheckPlan {
  family: string;
  name: string;
}

/** The families in run order. */
export const checkFamilyNames = Object.keys(checkFamilies);

/** The checks whose "family name" contains `filter` (all when empty), less the families in `skip`, in run order. */
export function planChecks(filter = '', skip: string[] = []): CheckPlan[] {
  const out: CheckPlan[] = [];
  for (const [family, checks] of Object.entries(checkFamilies)) {
    if (skip.includes(family)) continue;
    for (const c of checks) if (`${family} ${c.name}`.includes(filter)) out.push({ family, name: c.name });
  }
  return out;
}

/** Thrown by runChecks when a check outlives its time limit: the GPU may still be busy with it, so nothing after it runs. */
export class CheckTimeout extends Error {}

/**
 * Runs the planned checks in order; onResult sees each result (and may update the page) before the next starts.
 * A check that takes longer than limitMs (0: no limit) is reported as failed and ends the run with a CheckTimeout:
 * its GPU work (a pipeline compile on a CPU adapter, say) cannot be cancelled, and every later check would queue
 * behind it.
 */
export async function runChecks(plan: CheckPlan[], onResult: (r: CheckResult) => void, limitMs = 0): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const p of plan) {
    const c = checkFamilies[p.family].find((k) => k.name === p.name)!;
    const t0 = performance.now();
    let err: string | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    try {
      const limit = new Promise<never>((_, reject) => {
        if (limitMs > 0) timer = setTimeout(() => reject(new CheckTimeout(`did not finish within ${limitMs / 1000} s`)), limitMs);
      });
      await Promise.race([c.run(), limit]);
    } catch (e) {
      timedOut = e instanceof CheckTimeout;
      err = (e as Error)?.message ?? String(e);
      if (!timedOut) clearTape(); // a check that failed before its backward leaves records that would leak into the next one
    } finally {
      clearTimeout(timer);
    }
    const r = { family: p.family, name: p.name, ok: err === null, err, ms: performance.now() - t0 };
    results.push(r);
    onResult(r);
    if (timedOut) throw new CheckTimeout(`${p.family}: ${p.name} ${err}; the GPU may still be working on it, so the remaining checks were not run. Reload the page.`);
    // let the page paint between checks: a check awaits the GPU, but its CPU reference work does not yield
    await new Promise((res) => setTimeout(res, 0));
  }
  return results;
}
