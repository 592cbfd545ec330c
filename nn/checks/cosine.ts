// cosineLoss op cases (BYOL's loss; z is a constant of it): scalar (D odd) and vec4 (D % 4 == 0) kernels, one row
// to many workgroups of rows, D beyond the lanes, and correlated p and z (see nn/checks/index.ts).

import { add, mulScalar } from '../index.ts';
import { cosineLoss, ref } from '../../kernels/cosine.ts';
import type { NamedOpCase } from '../check.ts';

export const cosineCases: NamedOpCase[] = [
  ...[[1, 3], [5, 256], [33, 129], [256, 64], [3, 4099], [70000, 4]].map((shape): NamedOpCase => ({
    name: `cosineLoss ${JSON.stringify(shape)}`,
    shapes: [shape, shape],
    noGrad: [1],
    ref: ([p, z]) => ref.cosineLoss(p, z),
    refGrad: ([p, z], dy) => ref.cosineLossBackward(p, z, dy),
    gpu: ([p, z]) => cosineLoss(p, z),
    tol: 1e-5,
  })),
  // p and z correlated, so the loss sits well below 2 and the second term of the gradient matters
  {
    name: 'cosineLoss [9,40] with p = z + noise',
    shapes: [[9, 40], [9, 40]],
    noGrad: [1],
    ref: ([p, z]) => ref.cosineLoss({ data: p.data.map((v, i) => z.data[i] + 0.3 * v), shape: p.shape }, z),
    refGrad: ([p, z], dy) => {
      const [dq] = ref.cosineLossBackward({ data: p.data.map((v, i) => z.data[i] + 0.3 * v), shape: p.shape }, z, dy);
      return [{ data: dq.data.map((v) => 0.3 * v), shape: dq.shape }, { data: new Float64Array(z.data.length), shape: z.shape }];
    },
    gpu: ([p, z]) => cosineLoss(add(z, mulScalar(p, 0.3)), z),
    tol: 1e-5,
  },
];
