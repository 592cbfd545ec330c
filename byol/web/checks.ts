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

/** The checks whose "family name" contains `filter` (all when empty), in run order. */
export function planChecks(filter = ''): CheckPlan[] {
  const out: CheckPlan[] = [];
  for (const [family, checks] of Object.entries(checkFamilies)) {
    for (const c of checks) if (`${family} ${c.name}`.includes(filter)) out.push({ family, name: c.name });
  }
  return out;
}

/** Runs the planned checks in order; onResult sees each result (and may update the page) before the next starts. */
export async function runChecks(plan: CheckPlan[], onResult: (r: CheckResult) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const p of plan) {
    const c = checkFamilies[p.family].find((k) => k.name === p.name)!;
    const t0 = performance.now();
    let err: string | null = null;
    try {
      await c.run();
    } catch (e) {
      err = (e as Error)?.message ?? String(e);
      clearTape(); // a check that failed before its backward leaves records that would leak into the next one
    }
    const r = { family: p.family, name: p.name, ok: err === null, err, ms: performance.now() - t0 };
    results.push(r);
    onResult(r);
    // let the page paint between checks: a check awaits the GPU, but its CPU reference work does not yield
    await new Promise((res) => setTimeout(res, 0));
  }
  return results;
}
