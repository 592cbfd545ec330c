// The one kernel declaration (engine/kernel.ts): what it generates, how it packs uniforms, the errors it gives,
// the dump switch, and that every op family's pipelines are made through it.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineKernel, kernel, declaredKernels, dumpKernels, dumpWgslTo } from '../engine/kernel.ts';
import { pipelineSpecs } from '../engine/recorder.ts';
import {
  tensor, variable, tidy, backward, sync, noGrad, add, relu, sum, max, matmul, conv2d, batchNorm, maxPool2d,
  globalAvgPool, softmax, softmaxCrossEntropy, argmax, cosineLoss, materialize, Linear, SGD, Adam, LARS, emaUpdate,
  NonFiniteMonitor, swapHalves, type Tensor,
} from '../nn/index.ts';
import { gatherRows } from '../kernels/gather.ts';
import { knnVote } from '../kernels/knn.ts';
import { augmentViews, byolAugmentConfig, GpuDataset, syntheticShapes, Rng } from '../byol/index.ts';

const t = suite('kernel declaration');

t('the header, bindings and entry point are generated from the declaration', () => {
  const k = defineKernel({
    name: 'test.scale',
    uniforms: { n: 'u32', s: 'f32' },
    bindings: { x: 'read vec4<f32>', y: 'rw f32', flags: { rw: 'Flags' } },
    workgroupSize: [64, 2],
    flat: { limit: 'p.n' },
    header: 'struct Flags { hits: atomic<u32> }',
    body: '  y[i] = x[i].x * p.s;',
  });
  const w = k.wgsl;
  assert.match(w, 'struct P { n: u32, s: f32, }');
  assert.match(w, '@group(0) @binding(0) var<uniform> p: P;');
  assert.match(w, '@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;');
  assert.match(w, '@group(0) @binding(2) var<storage, read_write> y: array<f32>;');
  assert.match(w, '@group(0) @binding(3) var<storage, read_write> flags: Flags;');
  assert.match(w, '@compute @workgroup_size(64, 2, 1)');
  assert.match(w, 'let i = gid.x + gid.y * (nwg.x * 128u);');
  assert.match(w, 'if (i >= p.n) { return; }');
  assert.equal(k.spec.bindings, ['uniform', 'read', 'rw', 'rw']);
  assert.not.match(w, 'subgroup', 'no subgroup builtins unless enabled');
  const sg = defineKernel({ name: 'test.sg', bindings: { y: 'rw f32' }, workgroupSize: 8, enable: ['subgroups'], body: '  y[0] = f32(sgsize);' });
  assert.ok(sg.wgsl.startsWith('enable subgroups;'), sg.wgsl);
  assert.match(sg.wgsl, '@builtin(subgroup_size) sgsize: u32');
});

t('uniforms are packed by name with WGSL alignment (vec4 and arrays of vec4 on 16 bytes)', async () => {
  // s (f32) at 0, v (vec4) at 16, a (array<vec4<u32>, 2>) at 32: read each back through the kernel
  const k = defineKernel({
    name: 'test.packing',
    uniforms: { s: 'f32', v: 'vec4<f32>', a: 'array<vec4<u32>, 2>', last: 'i32' },
    bindings: { out: 'rw f32' },
    workgroupSize: 1,
    body: '  out[0] = p.s; out[1] = p.v.y; out[2] = p.v.w; out[3] = f32(p.a[1][2]); out[4] = f32(p.last);',
  });
  const out = tensor(new Float32Array(5));
  k.launch({ s: 1.5, v: [10, 20, 30, 40], a: [1, 2, 3, 4, 5, 6, 7, 8], last: -7, out }, [1]);
  assert.equal([...(await out.toArray())], [1.5, 20, 40, 7, -7]);
  out.dispose();
});

t('perWorkgroup: one workgroup per item, folded past the per-dimension limit, the surplus workgroups return', async () => {
  const k = defineKernel({
    name: 'test.perWorkgroup',
    uniforms: { n: 'u32' },
    bindings: { y: 'rw u32' },
    workgroupSize: 4,
    perWorkgroup: { index: 'item', limit: 'p.n' },
    body: '  if (li == 0u) { y[item] = item + 1u; }',
  });
  assert.match(k.wgsl, 'let item = wid.x + wid.y * nwg.x;');
  assert.match(k.wgsl, 'if (item >= p.n) { return; }');
  // 70001 items need two rows of workgroups (35001 each): the one past the end must write nothing
  const n = 70001;
  const y = tensor(new Uint32Array(n + 1), [n + 1]);
  k.launch({ n, y }, { workgroups: n });
  const v = await y.toArray();
  let bad = -1;
  for (let i = 0; i < n && bad < 0; i++) if (v[i] !== i + 1) bad = i;
  assert.is(bad, -1, `item ${bad} got ${v[bad]}`);
  assert.is(v[n], 0, 'the surplus workgroup wrote');
  y.dispose();
  assert.throws(() => defineKernel({ name: 'test.both', bindings: { y: 'rw f32' }, workgroupSize: 1, flat: { limit: '1u' }, perWorkgroup: { index: 'r', limit: '1u' }, body: '' }), /test\.both: a kernel is either flat or perWorkgroup/);
});

t('launches name the kernel in every argument error', () => {
  const k = defineKernel({ name: 'test.args', uniforms: { n: 'u32', v: 'vec4<f32>' }, bindings: { y: 'rw f32' }, workgroupSize: 1, body: '  y[0] = p.v.x;' });
  const y = tensor([0]);
  assert.throws(() => k.launch({ v: [1], y }, [1]), /test\.args: no value for uniform 'n' \(u32\)/);
  assert.throws(() => k.launch({ n: 1, v: [1, 2, 3, 4, 5], y }, [1]), /test\.args: uniform 'v' \(vec4<f32>\) holds 4 values, got 5/);
  assert.throws(() => k.launch({ n: 1, v: [1] }, [1]), /test\.args: no argument for binding 'y'/);
  assert.throws(() => k.launch({ n: y as any, v: [1], y }, [1]), /test\.args: uniform 'n' \(u32\) needs numbers/);
  assert.throws(() => defineKernel({ name: 'test.bad', bindings: { y: 'write f32' as any }, workgroupSize: 1, body: '' }), /test\.bad: binding 'y' must be 'read T', 'rw T' or 'texture'/);
  assert.throws(() => defineKernel({ name: 'test.bad2', uniforms: { m: 'mat4x4<f32>' as any }, bindings: {}, workgroupSize: 1, body: '' }), /test\.bad2: unsupported uniform type/);
  y.dispose();
});

t('variants are memoized under their key: one declaration, one pipeline', () => {
  let made = 0;
  const make = () => (made++, { name: 'test.memo', bindings: { y: 'rw f32' as const }, workgroupSize: 1, body: '  y[0] = 1.0;' });
  const a = kernel('test.memo|a', make);
  const b = kernel('test.memo|a', make);
  assert.is(a, b);
  assert.is(made, 1);
});

t('BYOL_DUMP_WGSL: dumpWgslTo writes every declared kernel, and each later one, to a file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-dump-'));
  try {
    await dumpWgslTo(dir);
    const before = readdirSync(dir).length;
    // one file per distinct kernel: variants under different keys that generate the same WGSL share a file
    const distinct = new Set([...declaredKernels().values()].map((k) => `${k.name}\n${k.wgsl}`));
    assert.is(before, distinct.size, 'one file per distinct declared kernel');
    kernel('test.dump|late', () => ({ name: 'test.dumpLate', bindings: { y: 'rw f32' }, workgroupSize: 1, body: '  y[0] = 2.0;' }));
    const late = readdirSync(dir).filter((f) => f.startsWith('test.dumpLate.'));
    assert.is(late.length, 1, 'a kernel declared later is written too');
    const text = readFileSync(join(dir, late[0]), 'utf8');
    assert.match(text, '// test.dump|late');
    assert.match(text, 'y[0] = 2.0;');
  } finally {
    dumpKernels(null);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** One forward and backward (where there is one) of every op family, the augmentations and the data set. */
async function runEveryFamily(): Promise<void> {
  const x = variable(Array.from({ length: 2 * 6 * 6 * 4 }, (_, i) => Math.sin(i)), [2, 6, 6, 4]);
  const w = variable(Array.from({ length: 3 * 3 * 4 * 4 }, (_, i) => Math.cos(i) * 0.1), [3, 3, 4, 4]);
  const gamma = variable([1, 1, 1, 1]);
  const beta = variable([0, 0, 0, 0]);
  const stats = { runningMean: tensor([0, 0, 0, 0]), runningVar: tensor([1, 1, 1, 1]) };
  tidy(() => {
    const y = conv2d(x, w, null, { stride: 1, padding: 1 });
    const b = batchNorm(y, gamma, beta, stats, { training: true, relu: true });
    const p = maxPool2d(b, { kernel: 2, stride: 2, padding: 0 });
    const g = globalAvgPool(p);
    const h = matmul(g, g, false, true);
    const logits = add(relu(h), max(h, -1, true));
    const l1 = softmaxCrossEntropy(logits, tensor(new Int32Array([0, 1]), [2], { dtype: 'i32' }));
    const l2 = cosineLoss(logits, noGrad(() => softmax(logits)));
    backward(add(sum(l1), l2));
  });
  tidy(() => {
    batchNorm(x, gamma, beta, stats, { training: false });
    argmax(x);
    gatherRows(tensor([1, 2, 3, 4], [2, 2]), tensor(new Int32Array([1, 0]), [2], { dtype: 'i32' }));
    swapHalves(tensor([1, 2, 3, 4], [2, 2]));
    knnVote(tensor([0.9, 0.1, 0.5, 0.3], [2, 2]), tensor(new Int32Array([0, 1]), [2], { dtype: 'i32' }), { k: 1, temperature: 0.1, numClasses: 2 });
  });
  for (const Opt of [SGD, Adam, LARS] as const) {
    const model = materialize(new Linear(4, 3), { seed: 1 });
    const target = materialize(new Linear(4, 3), { seed: 2 });
    const opt = new Opt(model, { lr: 0.01 } as any);
    tidy(() => backward(sum(model.forward(tensor([1, 2, 3, 4], [1, 4])))));
    opt.step(0.01);
    emaUpdate(target.arena!, model.arena!, 0.99);
    model.dispose();
    target.dispose();
  }
  const monitor = new NonFiniteMonitor();
  monitor.check(x, 'x');
  monitor.nextStep();
  await monitor.poll();
  monitor.dispose();
  const ds = syntheticShapes(8, 12);
  const data = new GpuDataset(ds);
  const batch = data.gather(Int32Array.from([0, 1, 2, 3]));
  const views = augmentViews(batch, new Rng(0), byolAugmentConfig({ imageSize: 12 }));
  views.forEach((v: Tensor) => v.dispose());
  batch.dispose();
  await sync(); // the data set's buffers are destroyed at once, not after the recorded gather
  data.dispose();
  [x, w, gamma, beta, stats.runningMean, stats.runningVar].forEach((v) => v.dispose());
  await sync();
}

t('every pipeline made by every op family comes from the kernel declaration', async () => {
  await runEveryFamily();
  const declaredSpecs = new Set([...declaredKernels().values()].map((k) => k.spec));
  const specs = pipelineSpecs();
  const foreign = specs.filter((s) => !declaredSpecs.has(s)).map((s) => s.name);
  assert.equal(foreign, [], `pipelines made outside the declaration: ${foreign.join(', ')}`);
  const names = specs.map((s) => s.name);
  const families = ['add', 'relu', 'sum', 'max', 'matmul', 'conv2d', 'batchNorm', 'maxPool2d', 'softmax', 'softmaxCrossEntropy',
    'argmax', 'cosineLoss', 'gatherRows', 'swapHalves', 'knnVote', 'optim.sgd', 'optim.adam', 'optim.lars', 'arena.', 'ema', 'nonFinite',
    'augment.', 'gpuDataset.'];
  const missing = families.filter((f) => !names.some((n) => n.startsWith(f)));
  assert.equal(missing, [], `families whose pipelines were not seen: ${missing.join(', ')} (seen: ${[...new Set(names)].join(', ')})`);
});

t.run();
