import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkOp, rng } from './helpers/gradcheck.ts';
import { tensor, tidy } from '../engine/index.ts';
import { softmaxCrossEntropy, softmax, argmax, ref } from '../kernels/softmax.ts';

const t = suite('softmax');

for (const [N, K] of [[1, 1], [1, 10], [7, 3], [300, 10], [5, 257]]) {
  t(`softmaxCrossEntropy [${N}, ${K}]`, async () => {
    const r = rng(N * 31 + K);
    const labelsArr = Int32Array.from({ length: N }, () => Math.floor(r() * K));
    const labels = tensor(labelsArr, [N], { dtype: 'i32' });
    await checkOp({
      shapes: [[N, K]],
      range: [-4, 4],
      ref: ([x]) => ref.softmaxCrossEntropy(x, labelsArr),
      refGrad: ([x], dy) => [ref.softmaxCrossEntropyBackward(x, labelsArr, dy)],
      gpu: ([x]) => softmaxCrossEntropy(x, labels),
    });
    labels.dispose();
  });
}

t('softmax rows sum to 1 and argmax picks the first maximum', async () => {
  const x = tensor([1, 3, 3, -1, 0, 0, 0, 0, 5, 4, 2, 1], [3, 4]);
  const p = await tidy(() => softmax(x)).toArray();
  for (let r = 0; r < 3; r++) assert.ok(Math.abs(p[r * 4] + p[r * 4 + 1] + p[r * 4 + 2] + p[r * 4 + 3] - 1) < 1e-6);
  assert.equal(Array.from(await tidy(() => argmax(x)).toArray()), [1, 0, 0]);
  x.dispose();
});

t('an out-of-range label makes the loss NaN, never silently wrong; bad shapes throw', async () => {
  const x = tensor([1, 2, 3, 4], [2, 2]);
  const bad = tensor([0, 2], [2], { dtype: 'i32' });
  assert.ok(Number.isNaN(await tidy(() => softmaxCrossEntropy(x, bad)).item()));
  const f = tensor([0, 1], [2]);
  assert.throws(() => softmaxCrossEntropy(x, f), /softmaxCrossEntropy: labels must be i32 \[2\].*f32 \[2\]/);
  assert.throws(() => softmaxCrossEntropy(f, bad), /softmaxCrossEntropy: expected f32 logits \[N, K\]/);
  [x, bad, f].forEach((v) => v.dispose());
});

t.run();
