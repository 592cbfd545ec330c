// One square 3x3 layer (stride 1, padding 1, Cin = Cout = C) and its three conv2d directions under a given tuning,
// for the scripts that compare tunings or inspect kernels on one layer (bench/conv-ab.ts, bench/lavapipe-asm.ts).

import { tensor, type Tensor } from '../../nn/index.ts';
import { conv2dRaw, conv2dBackwardInput, conv2dBackwardWeight, type ConvTuningOverrides } from '../../kernels/conv2d.ts';

export type ConvDirection = 'fwd' | 'dx' | 'dW';

export interface ConvLayer {
  /** runs one direction with `tuning`; the caller disposes the result */
  ops: Record<ConvDirection, (tuning: ConvTuningOverrides) => Tensor>;
  dispose(): void;
}

/** x, w and dy of an N x H x H x C layer filled by `fill` (element index -> value). */
export function convLayer(N: number, H: number, C: number, fill: (i: number) => number): ConvLayer {
  const data = (n: number) => Float32Array.from({ length: n }, (_, i) => fill(i));
  const x = tensor(data(N * H * H * C), [N, H, H, C]);
  const w = tensor(data(9 * C * C), [3, 3, C, C]);
  const dy = tensor(data(N * H * H * C), [N, H, H, C]);
  const g = { N, H, W: H, Cin: C, KH: 3, KW: 3, Cout: C, stride: 1, pad: 1, OH: H, OW: H };
  return {
    ops: {
      fwd: (tuning) => conv2dRaw(x, w, null, { padding: 1, tuning }),
      dx: (tuning) => conv2dBackwardInput(dy, w, g, { tuning }),
      dW: (tuning) => conv2dBackwardWeight(x, dy, g, { tuning }),
    },
    dispose: () => [x, w, dy].forEach((t) => t.dispose()),
  };
}
