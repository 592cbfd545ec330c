// Runs the engine's gradient checks in the page: the very op cases of the Node suites (test/cases/) through the
// very checker (test/helpers/gradcheck.ts: float64 reference vs finite differences, GPU forward and gradients vs
// the reference, no leaked buffers), one case at a time, reporting each result as it lands.

import { checkOp } from '../../test/helpers/gradcheck.ts';
import { caseFamilies } from '../../test/cases/index.ts';
import { clearTape } from '../../nn/index.ts';

export interface CheckResult {
  family: string;
  name: string;
  ok: boolean;
  /** the assertion or GPU error message when !ok */
  err: string | null;
  ms: number;
}

export interface CheckPlan {
  family: string;
  name: string;
}

/** The cases whose "family name" contains `filter` (all when empty), in run order. */
export function planChecks(filter = ''): CheckPlan[] {
  const out: CheckPlan[] = [];
  for (const [family, cases] of Object.entries(caseFamilies)) {
    for (const c of cases) if (`${family} ${c.name}`.includes(filter)) out.push({ family, name: c.name });
  }
  return out;
}

/** Runs the planned cases in order; onResult sees each result (and may update the page) before the next starts. */
export async function runChecks(plan: CheckPlan[], onResult: (r: CheckResult) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const p of plan) {
    const c = caseFamilies[p.family].find((k) => k.name === p.name)!;
    const t0 = performance.now();
    let err: string | null = null;
    try {
      await checkOp(c);
    } catch (e) {
      err = (e as Error)?.message ?? String(e);
      clearTape(); // a case that failed before its backward leaves records that would leak into the next one
    }
    const r = { family: p.family, name: p.name, ok: err === null, err, ms: performance.now() - t0 };
    results.push(r);
    onResult(r);
    // let the page paint between cases: a check awaits the GPU, but its CPU reference work does not yield
    await new Promise((res) => setTimeout(res, 0));
  }
  return results;
}
