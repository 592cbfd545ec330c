// The uvu face of the engine's framework-free checks (nn/check.ts): `opTest` makes each op test one line.
// The checks themselves (float64 reference vs finite differences, GPU forward and gradients vs the reference, no
// leaked buffers) live in the library so that the browser page runs them too.

import { test } from 'uvu';
import { checkOp, type OpCase, type Check } from '../../nn/check.ts';

export { rng, randArr, relErr, assertClose, checkRefGradient, checkOp, type OpCase, type NamedOpCase, type Check } from '../../nn/check.ts';

/** Registers a uvu test for an op case: `opTest('add [3,1]+[1,4]', {...})`. */
export function opTest(name: string, c: OpCase, t = test): void {
  t(name, () => checkOp(c));
}

/** Registers a uvu test for each shared check (nn/checks/, byol/checks.ts). */
export function checkTests(checks: Check[], t = test): void {
  for (const c of checks) t(c.name, () => c.run());
}
