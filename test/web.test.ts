// The browser page's parts that run without a browser: the bundle and its Node-only guard, the kernels' fit within
// browser adapter limits, the safetensors writer, the plot helpers and the demo trainer. The page itself is tested
// in Chromium by test/browser/run.ts (npm run test:browser).

import { CONV_SHAPES, EPILOGUE_SHAPES } from '../nn/checks/conv2d.ts';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildWeb } from '../byol/web/build.ts';
import { serializeSafetensors, decodeSafetensors } from '../engine/safetensors.ts';
import { niceTicks, logTicks, smooth, imageToRGBA } from '../byol/web/plot.ts';
import { wgslFootprint, engineNeeds } from '../byol/web/adapter.ts';
import { byolTrainer } from '../byol/web/byol-trainer.ts';
import { checkFamilies } from '../byol/checks.ts';
import { planChecks } from '../byol/web/checks.ts';
import type { TrainReporter } from '../byol/web/trainer.ts';
import { liveTensors, sync } from '../nn/index.ts';

const t = suite('web page');

t('the page bundles for the browser, with the browser stub of #node-gpu and no import of webgpu at all', async () => {
  const out = mkdtempSync(join(tmpdir(), 'byol-web-'));
  try {
    const b = await buildWeb({ outdir: out });
    assert.ok(b.bundleBytes > 10_000, 'a real bundle');
    assert.ok(b.inputs.some((p) => p.endsWith('engine/device.ts')) && b.inputs.some((p) => p.endsWith('nn/checks/matmul.ts')));
    // the page's checks come from the library (nn/check.ts), not from the tests or their framework
    assert.not.ok(b.inputs.some((p) => /(^|\/)test\/|node_modules\/uvu\//.test(p)), 'no test file or uvu in the bundle');
    assert.not.ok(b.inputs.some((p) => /node_modules\/(webgpu|pngjs)\//.test(p)), 'no Node-only package in the bundle');
    const js = readFileSync(join(out, 'main.js'), 'utf8');
    assert.ok(b.inputs.some((p) => p.endsWith('engine/node-gpu.browser.ts')) && !b.inputs.some((p) => /engine\/(node-gpu|lavapipe)\.ts$/.test(p)), 'the browser stub, not Dawn');
    assert.not.match(js, /import\(["']webgpu["']\)/, 'no import of webgpu');
    assert.not.match(js, /^import .* from ["'](node:|fs|path|zlib)/m);
    assert.ok(readFileSync(join(out, 'index.html'), 'utf8').includes('src="./main.js"'));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

t('the build fails when a Node-only module reaches the bundle', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-web-guard-'));
  try {
    const cases: [string, string][] = [
      ["import { readFileSync } from 'node:fs'; console.log(readFileSync);", 'node:fs'],
      ["import * as z from 'zlib'; console.log(z);", 'zlib'],
      ["import { join } from 'path'; console.log(join);", 'path'],
      ["import { PNG } from 'pngjs'; console.log(PNG);", 'pngjs'],
      ["import { create } from 'webgpu'; console.log(create);", 'webgpu'],
      ["const m = await import('webgpu'); console.log(m);", 'webgpu'],
    ];
    for (const [src, mod] of cases) {
      const entry = join(dir, 'entry.ts');
      writeFileSync(entry, src);
      let msg = '';
      try {
        await buildWeb({ outdir: join(dir, 'out'), entry });
      } catch (e) {
        msg = (e as Error).message;
      }
      assert.ok(msg.includes(`Node-only module '${mod}'`) && msg.includes('entry.ts'), `${mod}: got ${JSON.stringify(msg)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t('every engine kernel fits the smallest browser limits (SwiftShader: 256 invocations, 32 KiB, 10 buffers)', () => {
  const fp = wgslFootprint(`
    var<workgroup> As: array<vec4<f32>, 256>;
    var<workgroup> part: array<f32, 64>;
    @group(0) @binding(1) var<storage, read> A: array<f32>;
    @group(0) @binding(2) var<storage, read_write> C: array<f32>;
    @compute @workgroup_size(16, 8, 1) fn main() {}`);
  assert.equal(fp, { size: [16, 8, 1], invocations: 128, workgroupBytes: 256 * 16 + 64 * 4, storageBuffers: 2 });
  const need = engineNeeds();
  assert.ok(need.invocations <= 256, `invocations ${need.invocations}`);
  assert.ok(need.workgroupBytes <= 32768, `workgroup memory ${need.workgroupBytes}`);
  assert.ok(need.storageBuffers <= 10, `storage buffers ${need.storageBuffers}`);
  assert.is(need.workgroupBytes, 8192, 'the default 64x64x16 matmul tile stages 2 x 64 x 16 floats');
});

t('the page runs a check for every kernel family, each named uniquely within its family', () => {
  const families = Object.keys(checkFamilies);
  for (const f of ['elementwise', 'reduce', 'matmul', 'conv2d', 'batchnorm', 'batchnorm-conv', 'pool', 'softmax', 'cosine', 'optim', 'ema', 'gather', 'knn', 'augment']) {
    assert.ok(families.includes(f) && checkFamilies[f].length > 0, `family ${f} has checks`);
  }
  for (const [f, list] of Object.entries(checkFamilies)) {
    const names = list.map((c) => c.name);
    assert.is(new Set(names).size, names.length, `${f}: duplicate check names`);
  }
  assert.is(planChecks().length, Object.values(checkFamilies).reduce((n, l) => n + l.length, 0));
  // conv2d on the adapter's own variant, over every shape the Node tests force each variant on, with and without
  // an epilogue
  assert.is(checkFamilies.conv2d.length, CONV_SHAPES.length + EPILOGUE_SHAPES.length, 'the page checks conv2d on every shared shape');
});

t('the page\'s checkpoint format: safetensors header layout, 8-byte alignment and a round trip', () => {
  const a = { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-8, -7]) };
  const b = { shape: [3], data: Float32Array.from([0.25, 0.5, 0.75]) };
  const bytes = serializeSafetensors(new Map([['fc.weight', a], ['fc.bias', b]]), { format: 'pt' });
  const headLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.is((8 + headLen) % 8, 0, 'data starts 8-aligned');
  assert.is(bytes.length, 8 + headLen + 9 * 4);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headLen)));
  assert.equal(header['fc.weight'], { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
  assert.equal(header['fc.bias'], { dtype: 'F32', shape: [3], data_offsets: [24, 36] });
  assert.equal(header.__metadata__, { format: 'pt' });
  const back = decodeSafetensors(bytes).tensors;
  assert.equal([...back.get('fc.weight')!.data], [...a.data]);
  assert.equal([...back.get('fc.bias')!.data], [...b.data]);
});

t('plot helpers: ticks, smoothing, NHWC to RGBA', () => {
  assert.equal(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.equal(niceTicks(1, 300, 6), [50, 100, 150, 200, 250, 300]);
  assert.equal(logTicks(Math.log10(0.06), Math.log10(1.6)), [0.1, 0.2, 0.5, 1]);
  assert.equal(logTicks(-3, 1), [0.001, 0.01, 0.1, 1, 10]);
  assert.equal(smooth([2, 2, 2], 0.9), [2, 2, 2], 'debiased: a constant stays constant');
  const rgb = imageToRGBA({ data: [0, 0.5, 1, 1, 1, 1], n: 2, h: 1, w: 1, c: 3 }, 0, [0, 1]);
  assert.equal([...rgb], [0, 128, 255, 255], 'Uint8ClampedArray rounds 127.5 to even');
  const gray = imageToRGBA({ data: [-2, 2, 0, 0], n: 1, h: 2, w: 2, c: 1 }, 0, 'auto');
  assert.equal([...gray.subarray(0, 8)], [0, 0, 0, 255, 255, 255, 255, 255]);
  assert.throws(() => imageToRGBA({ data: [0, 0], n: 1, h: 1, w: 1, c: 2 }, 0), /1, 3 or 4 channels, got 2/);
});

function reporter(stopAfter = Infinity) {
  const r = { losses: [] as number[], previews: 0, status: '', steps: 0, knn: null as number | null };
  const rep: TrainReporter = {
    step(loss) {
      r.losses.push(loss);
      r.steps++;
    },
    preview(batch) {
      assert.is(batch.data.length, batch.n * batch.h * batch.w * batch.c);
      r.previews++;
    },
    knn(a) {
      r.knn = a;
    },
    status(s) {
      r.status = s;
    },
    get stopped() {
      return r.steps >= stopAfter;
    },
  };
  return { r, rep };
}

t('the page\'s BYOL trainer trains, reports views and kNN, writes a torchvision-named checkpoint and leaks nothing', async () => {
  await sync();
  const before = liveTensors();
  const { r, rep } = reporter();
  const res = await byolTrainer.train(rep, { steps: 12 });
  assert.is(r.losses.length, 12);
  assert.ok(r.losses.every(Number.isFinite), 'finite losses');
  assert.ok(r.previews >= 1, 'augmentation preview');
  assert.ok(r.knn !== null && r.knn > 0.1, `kNN accuracy above chance, got ${r.knn}`);
  const ck = await res.checkpoint!();
  assert.is(ck.filename, 'byol-encoder.safetensors');
  const names = [...decodeSafetensors(ck.bytes).tensors.keys()];
  for (const n of ['conv1.weight', 'bn1.running_mean', 'layer4.0.conv2.weight', 'layer2.0.downsample.0.weight']) assert.ok(names.includes(n), n);
  res.dispose();
  await sync();
  assert.is(liveTensors(), before, 'the model, data and optimizer state are freed');
});

t('the BYOL trainer stops when the reporter says so', async () => {
  const { r, rep } = reporter(3);
  const res = await byolTrainer.train(rep, { steps: 100 });
  assert.is(r.losses.length, 3);
  res.dispose();
});

t.run();
