// BYOL's projector and predictor: Linear(in -> hidden, bias) -> BatchNorm -> ReLU -> Linear(hidden -> out, no
// bias). The output is not batch-normalized (BYOL paper, unlike SimCLR). BN and ReLU are one fused pass.

import { Sequential, Linear } from '../nn/module.ts';
import { BatchNorm } from '../nn/layers.ts';

export function mlpHead(inDim: number, hidden: number, outDim: number): Sequential {
  return new Sequential(new Linear(inDim, hidden), new BatchNorm(hidden, { relu: true }), new Linear(hidden, outDim, { bias: false }));
}
