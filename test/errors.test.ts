import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, variable, add, matmul, sum, relu, reshape, backward, tidy, clearTape } from '../nn/index.ts';
import { defineKernel } from '../engine/kernel.ts';
import { gpu } from '../engine/device.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('errors');

t('broadcast mismatch names the op and both shapes', () => {
  const a = tensor([1, 2, 3], [3]);
  const b = tensor([1, 2], [2]);
  throwsWith(() => add(a, b), 'add', '[3]', '[2]', 'broadcast');
  a.dispose();
  b.dispose();
});

t('matmul inner dimension mismatch', () => {
  const a = tensor(new Float32Array(6), [2, 3]);
  const b = tensor(new Float32Array(8), [4, 2]);
  throwsWith(() => matmul(a, b), 'matmul', '[2, 3]', '[4, 2]', 'inner');
  const v = tensor(new Float32Array(3), [3]);
  throwsWith(() => matmul(a, v), 'matmul', '2-D or 3-D');
  v.dispose();
  a.dispose();
  b.dispose();
});

t('dtype mismatch', () => {
  const a = tensor([1, 2], [2], { dtype: 'i32' });
  const b = tensor([1, 2], [2]);
  throwsWith(() => add(a, b), 'add', 'f32', 'i32');
  throwsWith(() => tensor([1], [1], { dtype: 'u32', requiresGrad: true }), 'tensor', 'require grad', 'u32');
  a.dispose();
  b.dispose();
});

t('use of a disposed tensor', () => {
  const a = tensor([1, 2]);
  a.dispose();
  throwsWith(() => relu(a), 'relu', 'after dispose', '[2]');
  throwsWith(() => sum(a), 'sum', 'after dispose');
});

t('bad shapes for tensor() and reshape', () => {
  throwsWith(() => tensor([1, 2, 3], [2, 2]), 'tensor', '3 values', '[2, 2]');
  throwsWith(() => tensor([1], [1.5]), 'tensor', 'invalid shape');
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  throwsWith(() => reshape(a, [4, 2]), 'reshape', '[2, 3]', '[4, 2]');
  throwsWith(() => sum(a, 2), 'sum', 'axis 2', '[2, 3]');
  throwsWith(() => sum(a, [0, 0]), 'sum', 'repeated axis');
  a.dispose();
});

t('backward through a non-scalar without a gradient names the shape', () => {
  const x = variable([1, 2, 3, 4], [2, 2]);
  const y = tidy(() => relu(x));
  throwsWith(() => backward(y), 'backward', '[2, 2]', 'non-scalar');
  const g = tensor([1, 1, 1], [3]);
  throwsWith(() => backward(y, g), 'backward', '[3]', '[2, 2]');
  clearTape();
  g.dispose();
  y.dispose();
  x.dispose();
});

t('a launch with a bad buffer range names the kernel, the binding and what was expected', () => {
  const fill = defineKernel({ name: 'rangeCheckFill', bindings: { o: 'rw f32' }, workgroupSize: 1, body: '  o[0] = 1.0;' });
  const y = tensor(new Float32Array(64), [64]);
  const { buffer, offset } = y.binding('test');
  const align = gpu('test').info.limits.minStorageBufferOffsetAlignment;
  throwsWith(() => fill.launch({ o: { buffer, offset, size: buffer.size + 4 } }, [1]), 'rangeCheckFill', 'binding 0', 'exceeds its buffer', `${buffer.size} bytes`);
  throwsWith(() => fill.launch({ o: { buffer, offset: offset + 4, size: 16 } }, [1]), 'rangeCheckFill', 'binding 0', 'minStorageBufferOffsetAlignment', `${align}`);
  throwsWith(() => fill.launch({ o: { buffer, offset, size: 6 } }, [1]), 'rangeCheckFill', 'binding 0', 'size 6', 'multiple of 4');
  throwsWith(() => fill.launch({ o: { buffer, offset, size: 0 } }, [1]), 'rangeCheckFill', 'not a valid buffer range');
  fill.launch({ o: { buffer, offset, size: 16 } }, [1]); // a good range still launches
  y.dispose();
});

t.run();
