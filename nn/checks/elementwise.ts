// Elementwise op cases: unary maps, scalar ops and broadcasting binary ops (see nn/checks/index.ts).

import { relu, exp, log, sqrt, neg, addScalar, mulScalar, powScalar, add, sub, mul, div, reshape } from '../index.ts';
import { ref } from '../../kernels/elementwise.ts';
import type { NamedOpCase } from '../check.ts';

export const elementwiseCases: NamedOpCase[] = [];

const unaries = [
  ['relu', relu, [-1, 1]],
  ['exp', exp, [-2, 2]],
  ['log', log, [0.1, 3]],
  ['sqrt', sqrt, [0.1, 3]],
  ['neg', neg, [-1, 1]],
] as const;

for (const [name, fn, range] of unaries) {
  for (const shape of [[1], [7, 13], [3, 1, 5, 67]]) {
    elementwiseCases.push({
      name: `${name} ${JSON.stringify(shape)}`,
      shapes: [shape],
      range: range as [number, number],
      ref: ([x]) => ref.unary(name, x),
      refGrad: ([x], dy) => [ref.unaryBackward(name, x, dy)],
      gpu: ([x]) => fn(x),
    });
  }
}
// large enough for a 2-D grid of workgroups is covered by the 70k case
elementwiseCases.push({
  name: 'relu [70001] (many workgroups)',
  shapes: [[70001]],
  ref: ([x]) => ref.unary('relu', x),
  refGrad: ([x], dy) => [ref.unaryBackward('relu', x, dy)],
  gpu: ([x]) => relu(x),
});

const scalars = [
  ['addScalar', addScalar, 0.75, [-1, 1]],
  ['mulScalar', mulScalar, -1.5, [-1, 1]],
  ['powScalar', powScalar, 2.5, [0.2, 2]],
] as const;
for (const [name, fn, s, range] of scalars) {
  elementwiseCases.push({
    name: `${name} ${s} [5,9]`,
    shapes: [[5, 9]],
    range: range as [number, number],
    ref: ([x]) => ref.unary(name, x, s),
    refGrad: ([x], dy) => [ref.unaryBackward(name, x, dy, s)],
    gpu: ([x]) => fn(x, s),
  });
}

const binaries = [['add', add], ['sub', sub], ['mul', mul], ['div', div]] as const;
const pairs: [number[], number[]][] = [
  [[7, 13], [7, 13]],
  [[1], [1]],
  [[4, 1, 5], [3, 1]],
  [[2, 3, 4, 5], [5]],
  [[1, 6], [9, 1]],
  [[301, 17], [301, 1]],
];
for (const [name, fn] of binaries) {
  for (const [sa, sb] of pairs) {
    elementwiseCases.push({
      name: `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`,
      shapes: [sa, sb],
      range: name === 'div' ? [[-1, 1], [0.5, 2]] : [-1, 1],
      ref: ([a, b]) => ref.binary(name, a, b),
      refGrad: ([a, b], dy) => ref.binaryBackward(name, a, b, dy),
      gpu: ([a, b]) => fn(a, b),
    });
  }
}

elementwiseCases.push({
  name: 'reshape then mul keeps gradients',
  shapes: [[6, 4], [3, 8]],
  ref: ([a, b]) => ref.binary('mul', { data: a.data, shape: [3, 8] }, b),
  refGrad: ([a, b], dy) => {
    const [da, db] = ref.binaryBackward('mul', { data: a.data, shape: [3, 8] }, b, dy);
    return [{ data: da.data, shape: [6, 4] }, db];
  },
  gpu: ([a, b]) => mul(reshape(a, [3, -1]), b),
});
