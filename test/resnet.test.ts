// ResNet-18 against PyTorch: the same weights (a width-8 ResNet-18 with torchvision's structure and names, made by
// test/fixtures/torch/make_fixtures.py), the same input; outputs, input and parameter gradients and the BN running
// statistics after the forward must agree. Also: exported names and shapes match torchvision's resnet18 exactly.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { tensor, backward, tidy, noGrad, liveTensors, sync } from '../nn/index.ts';
import { materialize, torchStateDict, toTorchLayout } from '../nn/module.ts';
import { parseSafetensors, serializeSafetensors } from '../engine/safetensors.ts';
import { ResNet } from '../byol/resnet.ts';
import { exportTorchStateDict, importTorchStateDict } from '../byol/export.ts';
import { nchwToNhwc, cosine } from './helpers/layout.ts';
import { relErr } from './helpers/gradcheck.ts';

const t = suite('resnet');
const fixture = parseSafetensors(readFileSync(new URL('./fixtures/torch/resnet18_w8.safetensors', import.meta.url)));
const get = (n: string) => {
  const e = fixture.get(n);
  if (!e) throw new Error(`fixture has no '${n}'`);
  return e;
};

function torchWeights(): Map<string, { shape: number[]; data: Float32Array }> {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [n, e] of fixture) if (n.startsWith('param.')) m.set(n.slice(6), e);
  for (const [n, e] of fixture) {
    if (!n.startsWith('after.')) continue;
    const name = n.slice(6);
    m.set(name, { shape: e.shape, data: new Float32Array(e.data.length).fill(name.endsWith('running_var') ? 1 : 0) });
  }
  return m;
}

t('ResNet-18 (width 8) forward, gradients and running stats match PyTorch', async () => {
  const before = liveTensors();
  const model = materialize(new ResNet({ arch: 'resnet18', width: 8, stem: 'imagenet', inChannels: 3, numClasses: 10 }), { seed: 5 });
  importTorchStateDict(model, torchWeights());
  const xin = get('input');
  const x = tensor(nchwToNhwc(xin.data, xin.shape), [xin.shape[0], xin.shape[2], xin.shape[3], xin.shape[1]], { requiresGrad: true });
  model.train();
  const out = tidy(() => model.forward(x));
  const want = get('output');
  const got = await out.toArray();
  const e = relErr(got, want.data);
  assert.ok(e <= 1e-3, `output relative error ${e}`);
  const dy = tensor(get('dy').data, get('dy').shape);
  backward(out, dy);
  const gx = get('grad.input');
  const cx = cosine(await x.grad!.toArray(), nchwToNhwc(gx.data, gx.shape));
  assert.ok(cx >= 0.999, `input gradient cosine ${cx}`);
  const layouts = new Map(model.parameterSpecs().map(([n, p]) => [n, p.layout]));
  let worst = 1;
  let worstName = '';
  for (const [name, p] of model.namedParameters()) {
    assert.ok(p.grad, `${name} got no gradient`);
    const mine = toTorchLayout({ shape: p.shape, data: (await p.grad!.toArray()) as Float32Array }, layouts.get(name)!);
    const c = cosine(mine.data, get('grad.' + name).data);
    if (c < worst) (worst = c), (worstName = name);
  }
  assert.ok(worst >= 0.999, `worst parameter-gradient cosine ${worst} (${worstName})`);
  const state = await torchStateDict(model);
  for (const [n, e] of fixture) {
    if (!n.startsWith('after.')) continue;
    const r = relErr(state.get(n.slice(6))!.data, e.data);
    assert.ok(r <= 1e-3, `${n.slice(6)} after one training forward: relative error ${r}`);
  }
  out.dispose();
  dy.dispose();
  x.dispose();
  model.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('eval-mode outputs survive a safetensors round trip exactly', async () => {
  const a = materialize(new ResNet({ arch: 'resnet18', width: 8, stem: 'imagenet', inChannels: 3, numClasses: 10 }), { seed: 1 });
  const b = materialize(new ResNet({ arch: 'resnet18', width: 8, stem: 'imagenet', inChannels: 3, numClasses: 10 }), { seed: 2 });
  a.eval();
  b.eval();
  const xin = get('input');
  const x = tensor(nchwToNhwc(xin.data, xin.shape), [4, 32, 32, 3]);
  const bytes = serializeSafetensors(await exportTorchStateDict(a));
  importTorchStateDict(b, parseSafetensors(bytes));
  const outA = noGrad(() => tidy(() => a.forward(x)));
  const outB = noGrad(() => tidy(() => b.forward(x)));
  assert.equal(Array.from(await outB.toArray()), Array.from(await outA.toArray()));
  [x, outA, outB].forEach((v) => v.dispose());
  a.dispose();
  b.dispose();
});

t('a full-size ResNet-18 exports torchvision names and shapes, num_batches_tracked as int64', async () => {
  const want: Record<string, number[]> = JSON.parse(readFileSync(new URL('./fixtures/torch/torchvision_resnet18_keys.json', import.meta.url), 'utf8'));
  const model = materialize(new ResNet({ arch: 'resnet18', numClasses: 1000 }), { seed: 0 });
  const state = await exportTorchStateDict(model);
  assert.equal([...state.keys()].sort(), Object.keys(want).sort());
  for (const [n, e] of state) assert.equal(e.shape, want[n], n);
  assert.is(state.get('layer1.0.bn1.num_batches_tracked')!.dtype, 'I64');
  const round = parseSafetensors(serializeSafetensors(state));
  assert.is(round.get('bn1.num_batches_tracked')!.dtype, 'I64');
  model.dispose();
});

t('bad input: wrong channels, too small, wrong checkpoint names and shapes', () => {
  const model = materialize(new ResNet({ arch: 'resnet-small', width: 4, stem: 'small', inChannels: 1 }), { seed: 0 });
  const x3 = tensor(new Float32Array(2 * 16 * 16 * 3), [2, 16, 16, 3]);
  assert.throws(() => model.forward(x3), /ResNet\(resnet-small\).*\[2, 16, 16, 3\].*\[N, H, W, 1\]/);
  const tiny = tensor(new Float32Array(2 * 4 * 4), [2, 4, 4, 1]);
  assert.throws(() => model.forward(tiny), /too small/);
  const bad = new Map([['conv1.weight', { shape: [4, 1, 5, 5], data: new Float32Array(100) }]]);
  assert.throws(() => importTorchStateDict(model, bad), /conv1\.weight|missing|shape/);
  x3.dispose();
  tiny.dispose();
  model.dispose();
});

t('headChannels: a 1x1 conv + BN + ReLU after the last stage, then the pool; torch names conv_head / bn_head', async () => {
  const before = liveTensors();
  const cfg = { arch: 'resnet-small' as const, width: 4, stem: 'small' as const, inChannels: 1 };
  const headed = materialize(new ResNet({ ...cfg, headChannels: 12 }), { seed: 3 });
  const plain = materialize(new ResNet(cfg), { seed: 9 });
  assert.is(headed.featureDim, 12);
  assert.is(plain.featureDim, 32);
  const state = await exportTorchStateDict(headed);
  assert.equal(state.get('conv_head.weight')!.shape, [12, 32, 1, 1]);
  assert.equal(state.get('bn_head.weight')!.shape, [12]);
  assert.ok(!state.has('conv_head.bias'), 'the head conv is bias-free (BN follows it)');
  // the same stages in both: the head's output is computed by hand from the plain model's stage output
  importTorchStateDict(plain, new Map([...state].filter(([n]) => !n.startsWith('conv_head') && !n.startsWith('bn_head'))));
  headed.train();
  plain.train();
  const x = tensor(Float32Array.from({ length: 3 * 12 * 12 }, (_, i) => Math.sin(i * 0.37)), [3, 12, 12, 1]);
  const gotT = tidy(() => headed.forward(x));
  const wantT = tidy(() => {
    let h = plain.bn1.forward(plain.conv1.forward(x));
    for (const layer of plain.layers) h = layer.forward(h);
    return headed.avgpool.forward(headed.bnHead!.forward(headed.convHead!.forward(h)));
  });
  const [got, want] = [await gotT.toArray(), await wantT.toArray()];
  gotT.dispose();
  wantT.dispose();
  assert.is(got.length, 3 * 12);
  assert.ok(relErr(got, want) <= 1e-6, `head output vs by hand: ${relErr(got, want)}`);
  assert.ok(Array.from(got).every((v) => v >= 0), 'ReLU before the pool');
  const y = tidy(() => headed.forward(x));
  const dy = tensor(new Float32Array(36).fill(1), [3, 12]);
  backward(y, dy);
  for (const [name, p] of headed.namedParameters()) assert.ok(p.grad, `${name} got no gradient`);
  assert.throws(() => new ResNet({ ...cfg, headChannels: -1 }), /headChannels must be a non-negative integer.*-1/);
  assert.throws(() => new ResNet({ ...cfg, headChannels: 2.5 }), /headChannels/);
  y.dispose();
  dy.dispose();
  x.dispose();
  headed.dispose();
  plain.dispose();
  await sync();
  assert.is(liveTensors(), before, 'no tensors left behind');
});

t("stem 'small-s2': the small stem's conv at stride 2, the same parameters; the stages at half the resolution", async () => {
  const before = liveTensors();
  const cfg = { arch: 'resnet-small' as const, width: 4, inChannels: 1 };
  const strided = materialize(new ResNet({ ...cfg, stem: 'small-s2' }), { seed: 3 });
  const plain = materialize(new ResNet({ ...cfg, stem: 'small' }), { seed: 9 });
  assert.equal((await exportTorchStateDict(strided)).get('conv1.weight')!.shape, [4, 1, 3, 3]);
  importTorchStateDict(plain, await exportTorchStateDict(strided)); // the same weights and BN state in both
  strided.train();
  plain.train();
  // 13x13: odd, so the stride-2 stem's padding decides the 7x7 grid. The stem's output, subsampled by hand from the
  // stride-1 stem's conv (rows and columns 0, 2, ..., 12), must be what the strided stem computes.
  const x = tensor(Float32Array.from({ length: 2 * 13 * 13 }, (_, i) => Math.cos(i * 0.61)), [2, 13, 13, 1]);
  const gotT = tidy(() => strided.conv1.forward(x));
  const fullT = tidy(() => plain.conv1.forward(x));
  const [got, full] = [await gotT.toArray(), await fullT.toArray()];
  assert.equal(gotT.shape, [2, 7, 7, 4]);
  const want = new Float32Array(got.length);
  for (let n = 0; n < 2; n++) for (let i = 0; i < 7; i++) for (let j = 0; j < 7; j++) for (let c = 0; c < 4; c++) {
    want[((n * 7 + i) * 7 + j) * 4 + c] = full[((n * 13 + 2 * i) * 13 + 2 * j) * 4 + c];
  }
  assert.ok(relErr(got, want) <= 1e-6, `strided stem vs subsampled stride-1 conv: ${relErr(got, want)}`);
  const y = tidy(() => strided.forward(x));
  assert.equal(y.shape, [2, 32]);
  const dy = tensor(new Float32Array(64).fill(1), [2, 32]);
  backward(y, dy);
  for (const [name, p] of strided.namedParameters()) assert.ok(p.grad, `${name} got no gradient`);
  assert.throws(() => new ResNet({ ...cfg, stem: 'tiny' as never }), /unknown stem 'tiny'.*small, small-s2, imagenet/);
  for (const t of [x, gotT, fullT, y, dy]) t.dispose();
  strided.dispose();
  plain.dispose();
  await sync();
  assert.is(liveTensors(), before, 'no tensors left behind');
});

t.run();
