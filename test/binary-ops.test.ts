// The binary ops' table: numbers on either side, and a backward that computes only the gradients wanted.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { add, sub, mul, div, addRelu, relu, tensor, variable, backward, sum, tidy, recorderStats, sync } from '../nn/index.ts';
import { ref } from '../kernels/elementwise.ts';
import { opTest, assertClose } from './helpers/gradcheck.ts';
import type { Arr } from '../engine/ref.ts';

const t = suite('binary ops');

const full = (like: Arr, v: number): Arr => ({ data: new Float64Array(like.data.length).fill(v), shape: like.shape });
const ops = { add, sub, mul, div } as const;

for (const name of ['add', 'sub', 'mul', 'div'] as const) {
  const s = -1.75;
  // a number on the right: the reference is the broadcast op with a constant tensor
  opTest(`${name}(x, ${s}) [4,7]`, {
    shapes: [[4, 7]],
    range: [0.3, 2],
    ref: ([x]) => ref.binary(name, x, full(x, s)),
    refGrad: ([x], dy) => [ref.binaryBackward(name, x, full(x, s), dy)[0]],
    gpu: ([x]) => ops[name](x, s),
  }, t);
  opTest(`${name}(${s}, x) [4,7]`, {
    shapes: [[4, 7]],
    range: [0.3, 2],
    ref: ([x]) => ref.binary(name, full(x, s), x),
    refGrad: ([x], dy) => [ref.binaryBackward(name, full(x, s), x, dy)[1]],
    gpu: ([x]) => ops[name](s, x),
  }, t);
}

// relu(a + b) fused: the reference is the composition of the two references
for (const shape of [[1], [5, 9], [2, 7, 7, 12]]) {
  opTest(`addRelu ${JSON.stringify(shape)}`, {
    shapes: [shape, shape],
    ref: ([a, b]) => ref.unary('relu', ref.binary('add', a, b)),
    refGrad: ([a, b], dy) => {
      const g = ref.unaryBackward('relu', ref.binary('add', a, b), dy);
      return ref.binaryBackward('add', a, b, g);
    },
    gpu: ([a, b]) => addRelu(a, b),
  }, t);
}

t('addRelu takes two tensors of one shape, and matches relu(add()) bit for bit', async () => {
  const a = tensor([-1, 2, -3, 4, 0.5, -0.25], [2, 3]);
  const b = tensor([0.5, -2.5, 3, 1, -0.5, 0.25], [2, 3]);
  const fused = addRelu(a, b);
  const composed = tidy(() => relu(add(a, b)));
  assert.equal([...(await fused.toArray())], [...(await composed.toArray())]);
  const c = tensor([1, 2, 3]);
  assert.throws(() => addRelu(a, c), /addRelu: expected two tensors of one shape, got \[2, 3\] and \[3\]/);
  [a, b, c, fused, composed].forEach((v) => v.dispose());
});

t('two numbers, or a non-tensor operand, are rejected naming the op', () => {
  assert.throws(() => add(1 as any, 2 as any), /add: at least one operand must be a Tensor/);
  const x = tensor([1, 2]);
  assert.throws(() => mul(x, '2' as any), /mul: second operand must be a Tensor or a number, got string/);
  assert.throws(() => div(null as any, x), /div: first operand must be a Tensor or a number, got null/);
  x.dispose();
});

t('a backward skips the gradient of an input that needs none', async () => {
  // x needs a gradient, the broadcast constant c does not: only x's sum over the broadcast runs
  const x = variable(new Float32Array(64 * 32).fill(0.5), [64, 32]);
  const c = tensor(new Float32Array(32).fill(2), [32]);
  const dispatchesOfBackward = (f: () => void) => {
    const before = recorderStats().dispatches;
    f();
    return recorderStats().dispatches - before;
  };
  const y = tidy(() => sum(mul(x, c)));
  const withConst = dispatchesOfBackward(() => backward(y));
  assertClose(await x.grad!.toArray(), new Float32Array(64 * 32).fill(2), 1e-6, 'd/dx sum(x*c)');
  y.dispose();
  x.grad!.dispose();
  x.grad = null;
  // the same graph with c differentiable too costs more dispatches: c's gradient is computed and summed
  const cv = variable(new Float32Array(32).fill(2), [32]);
  const y2 = tidy(() => sum(mul(x, cv)));
  const withBoth = dispatchesOfBackward(() => backward(y2));
  assert.ok(withBoth > withConst, `backward with both inputs differentiable ran ${withBoth} dispatches, with one ${withConst}`);
  assertClose(await cv.grad!.toArray(), new Float32Array(32).fill(32), 1e-5, 'd/dc sum(x*c) = sum over rows of x');
  [x, c, cv, y2].forEach((v) => v.dispose());
  await sync();
});

t.run();
