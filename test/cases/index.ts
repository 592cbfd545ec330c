// The op cases of the gradient-check suites as plain data, shared by the Node tests (test/*.test.ts) and the
// browser page (byol/web/), so both run exactly the same checks. Nothing here may import Node-only modules.

import type { OpCase } from '../helpers/gradcheck.ts';
import { elementwiseCases } from './elementwise.ts';
import { reduceCases } from './reduce.ts';
import { matmulCases } from './matmul.ts';

export type NamedOpCase = OpCase & { name: string };

export { elementwiseCases, reduceCases, matmulCases };

/** Every case list by kernel family, in the order the page runs them. */
export const caseFamilies: Record<string, NamedOpCase[]> = {
  elementwise: elementwiseCases,
  reduce: reduceCases,
  matmul: matmulCases,
};
