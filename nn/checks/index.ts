// The engine's checks by kernel family, as plain data and framework-free functions (nn/check.ts): the Node tests
// (test/*.test.ts) register each one with uvu, and the browser page (byol/web/, through byol/checks.ts) runs them
// on its adapter, so both run exactly the same checks. Nothing here may import a Node-only module or test/.

import { opChecks, type Check } from '../check.ts';
import { elementwiseCases } from './elementwise.ts';
import { reduceCases } from './reduce.ts';
import { matmulCases } from './matmul.ts';
import { conv2dCases } from './conv2d.ts';
import { batchNormCases } from './batchnorm.ts';
import { batchNormConvCases } from './batchnorm-conv.ts';
import { poolCases } from './pool.ts';
import { softmaxCases } from './softmax.ts';
import { cosineCases } from './cosine.ts';
import { optimChecks } from './optim.ts';
import { emaChecks } from './ema.ts';
import { gatherChecks } from './gather.ts';
import { knnChecks } from './knn.ts';

export { elementwiseCases, reduceCases, matmulCases, conv2dCases, batchNormCases, batchNormConvCases, poolCases, softmaxCases, cosineCases };
export { optimChecks, emaChecks, gatherChecks, knnChecks };

/** Every check of the engine's kernels and optimizers by family, in the order the page runs them. */
export const engineChecks: Record<string, Check[]> = {
  elementwise: opChecks(elementwiseCases),
  reduce: opChecks(reduceCases),
  matmul: opChecks(matmulCases),
  conv2d: opChecks(conv2dCases),
  batchnorm: opChecks(batchNormCases),
  'batchnorm-conv': opChecks(batchNormConvCases),
  pool: opChecks(poolCases),
  softmax: opChecks(softmaxCases),
  cosine: opChecks(cosineCases),
  optim: optimChecks,
  ema: emaChecks,
  gather: gatherChecks,
  knn: knnChecks,
};
