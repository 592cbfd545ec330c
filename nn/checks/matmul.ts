// Matmul op cases: aligned and ragged tiles, transposes as flags, batched and shared operands
// (see nn/checks/index.ts).

import { matmul } from '../index.ts';
import { ref } from '../../kernels/matmul.ts';
import type { NamedOpCase } from '../check.ts';

// [M, K, N, transA, transB, batchA, batchB]
const dims: [number, number, number, boolean, boolean, number, number][] = [
  [1, 1, 1, false, false, 0, 0],
  [5, 3, 7, false, false, 0, 0],
  [64, 32, 64, false, false, 0, 0], // exactly one tile: the aligned kernel
  [128, 48, 192, false, false, 0, 0], // several aligned tiles
  [65, 17, 63, false, false, 0, 0], // one past / one short of a tile
  [33, 70, 9, true, false, 0, 0],
  [33, 70, 9, false, true, 0, 0],
  [20, 31, 45, true, true, 0, 0],
  [200, 129, 150, false, false, 0, 0], // many workgroups
  [7, 9, 11, false, false, 3, 3], // batched
  [7, 9, 11, false, true, 4, 0], // batched A, shared B
  [7, 9, 11, true, false, 0, 2], // shared A, batched B
];

export const matmulCases: NamedOpCase[] = dims.map(([M, K, N, ta, tb, ba, bb]) => {
  const sa = ta ? [K, M] : [M, K];
  const sb = tb ? [N, K] : [K, N];
  return {
    name: `matmul M=${M} K=${K} N=${N} transA=${ta} transB=${tb} batch=${ba}/${bb}`,
    shapes: [ba ? [ba, ...sa] : sa, bb ? [bb, ...sb] : sb],
    ref: ([a, b]) => ref.matmul(a, b, ta, tb),
    refGrad: ([a, b], dy) => ref.matmulBackward(a, b, dy, ta, tb),
    gpu: ([a, b]) => matmul(a, b, ta, tb),
    tol: 1e-5,
  };
});
