// Lifecycle: releaseDevice() with readbacks still pending (they reject; nothing is ever an unhandled rejection),
// and the strict PyTorch state-dict import (wrong shapes, unknown names, num_batches_tracked).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  getDevice, releaseDevice, tensor, exp, sum, sync, materialize, Sequential, Conv2d, BatchNorm, Linear, liveTensors, Adam,
  DeviceLostError, type TensorEntry,
} from '../nn/index.ts';
import { exportTorchStateDict, importTorchStateDict } from '../byol/export.ts';
import { rejectsWith, throwsWith } from './helpers/errors.ts';

const t = suite('lifecycle');

t('releaseDevice() with readbacks nobody awaits: they reject, and no rejection is unhandled', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  const model = materialize(new Linear(64, 64), { seed: 0 });
  const opt = new Adam(model, { lr: 0.1 });
  const x = tensor(new Float32Array(64 * 64).fill(0.5), [64, 64]);
  const y = exp(x);
  const s = sum(y);
  try {
    // started and dropped, as `loss.item()` without await at the end of a script
    void y.toArray();
    void s.item();
    void s.print();
    void sync();
    void model.arena!.read();
    void model.stateDict();
    void opt.stateDict();
    const awaited = s.item();
    releaseDevice();
    await rejectsWith(awaited, 'WebGPU device lost', 'released by releaseDevice()');
    try {
      await y.toArray();
      assert.unreachable('a tensor of the released device cannot be read');
    } catch (e) {
      assert.match((e as Error).message, /toArray|released/);
    }
    // unhandled rejections are reported after the microtask queue drains: give them several turns
    for (let k = 0; k < 5; k++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(unhandled.map((e) => (e as Error)?.message ?? String(e)), [], 'no unhandled rejection');
  } finally {
    process.off('unhandledRejection', onUnhandled);
    for (const v of [x, y, s]) v.dispose();
    opt.dispose();
    model.dispose();
    await getDevice();
  }
  assert.is(liveTensors(), 0);
});

t('a real device loss still rejects awaited readbacks loudly (only releaseDevice() is quiet)', async () => {
  const x = tensor([1, 2, 3]);
  const { simulateDeviceLoss } = await import('../engine/device.ts');
  const pending = x.toArray();
  simulateDeviceLoss('test');
  try {
    await pending;
    assert.unreachable('expected a rejection');
  } catch (e) {
    assert.ok(e instanceof DeviceLostError);
    assert.match((e as Error).message, /unknown: test/);
  }
  x.dispose();
  releaseDevice();
  await getDevice();
});

t('a script that ends with releaseDevice() while item() is still pending exits cleanly (exit code 0)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-lifecycle-'));
  const script = join(dir, 'script.mts');
  const barrel = new URL('../nn/index.ts', import.meta.url).href;
  writeFileSync(script, `import { getDevice, releaseDevice, tensor } from '${barrel}';
await getDevice();
const loss = tensor(new Float32Array(4096).fill(1)).sum();
loss.item(); // started, never awaited
releaseDevice();
await new Promise((r) => setTimeout(r, 100));
console.log('script ended');
`);
  try {
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: fileURLToPath(new URL('..', import.meta.url)), env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' } });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c, out }));
    });
    assert.ok(out.includes('script ended'), out);
    assert.not.match(out, /DeviceLostError|Unhandled|unhandled/, 'no unhandled rejection');
    assert.is(code, 0, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- strict importTorchStateDict ---------------------------------------------------------------------------

function convBn() {
  return materialize(new Sequential(new Conv2d(1, 2, 3), new BatchNorm(2)), { seed: 3 });
}

t('importTorchStateDict: a round trip keeps num_batches_tracked; a missing counter loads as 0 (as torch)', async () => {
  const a = convBn();
  (a.layers[1] as BatchNorm).numBatchesTracked = 5;
  const state = await exportTorchStateDict(a);
  assert.equal([...state.keys()].sort(), ['0.weight', '1.bias', '1.num_batches_tracked', '1.running_mean', '1.running_var', '1.weight']);
  const b = convBn();
  importTorchStateDict(b, state);
  assert.is((b.layers[1] as BatchNorm).numBatchesTracked, 5);
  importTorchStateDict(b, withEntry(state, '1.num_batches_tracked', { shape: [1], data: Float32Array.of(9), dtype: 'I64' }));
  assert.is((b.layers[1] as BatchNorm).numBatchesTracked, 9, 'shape [1] is a scalar from an old checkpoint');
  const noCounter = new Map(state);
  noCounter.delete('1.num_batches_tracked');
  importTorchStateDict(b, noCounter);
  assert.is((b.layers[1] as BatchNorm).numBatchesTracked, 0);
  a.dispose();
  b.dispose();
});

t('importTorchStateDict (strict) rejects wrong shapes and unknown names, num_batches_tracked included', async () => {
  const a = convBn();
  const state = await exportTorchStateDict(a);
  const b = convBn();
  (b.layers[1] as BatchNorm).numBatchesTracked = 4;
  const counter = (shape: number[], ...v: number[]): TensorEntry => ({ shape, data: Float32Array.from(v), dtype: 'I64' });
  throwsWith(() => importTorchStateDict(b, withEntry(state, '1.num_batches_tracked', counter([3], 1, 2, 3))), 'importTorchStateDict', "'1.num_batches_tracked' has shape [3]", 'but [] in the model');
  throwsWith(() => importTorchStateDict(b, withEntry(state, '1.num_batches_tracked', counter([1, 1], 1))), "'1.num_batches_tracked' has shape [1, 1]");
  throwsWith(() => importTorchStateDict(b, withEntry(state, '1.num_batches_tracked', counter([], -1))), "is -1, expected a batch count");
  throwsWith(() => importTorchStateDict(b, withEntry(state, '7.num_batches_tracked', counter([], 1))), "unexpected entry '7.num_batches_tracked'", "no BatchNorm named '7'");
  throwsWith(() => importTorchStateDict(b, withEntry(state, '0.num_batches_tracked', counter([], 1))), "unexpected entry '0.num_batches_tracked'", "no BatchNorm named '0'");
  throwsWith(() => importTorchStateDict(b, withEntry(state, 'num_batches_tracked', counter([], 1))), "unexpected entry 'num_batches_tracked'", 'at its root');
  throwsWith(() => importTorchStateDict(b, withEntry(state, 'fc.weight', { shape: [2, 2], data: new Float32Array(4) })), "unexpected 1 entry: 'fc.weight'");
  throwsWith(() => importTorchStateDict(b, withEntry(state, '1.running_mean', { shape: [3], data: new Float32Array(3) })), "'1.running_mean' has shape [3]", '[2] in the model');
  throwsWith(() => importTorchStateDict(b, withEntry(state, '0.weight', { shape: [2, 1, 3, 2], data: new Float32Array(12) })), "'0.weight' has shape [2, 1, 3, 2]", 'but [2, 1, 3, 3] in PyTorch layout');
  const missing = new Map(state);
  missing.delete('1.running_var');
  throwsWith(() => importTorchStateDict(b, missing), "missing 1 entry: '1.running_var'");
  assert.is((b.layers[1] as BatchNorm).numBatchesTracked, 4, 'a rejected load changes nothing');
  // not strict: unknown names are skipped, shapes are still checked
  importTorchStateDict(b, withEntry(withEntry(state, '7.num_batches_tracked', counter([], 1)), 'fc.weight', { shape: [1], data: new Float32Array(1) }), { strict: false });
  throwsWith(() => importTorchStateDict(b, withEntry(state, '1.num_batches_tracked', counter([3], 1, 2, 3)), { strict: false }), 'has shape [3]');
  a.dispose();
  b.dispose();
});

function withEntry(state: ReadonlyMap<string, TensorEntry>, name: string, e: TensorEntry): Map<string, TensorEntry> {
  const out = new Map(state);
  out.set(name, e);
  return out;
}

t.run();
