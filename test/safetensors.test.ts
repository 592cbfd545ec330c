import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serializeSafetensors, parseSafetensors, decodeSafetensors, type TensorEntry } from '../engine/safetensors.ts';
import { saveSafetensors, loadSafetensors, readSafetensors } from '../nn/safetensors-node.ts';
import { Linear, Sequential, ReLU, materialize } from '../nn/module.ts';
import { throwsWith, rejectsWith } from './helpers/errors.ts';

const t = suite('safetensors');

function sample(): Map<string, TensorEntry> {
  return new Map<string, TensorEntry>([
    ['conv.weight', { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 1e-30, -0, 7]) }],
    ['scalar', { shape: [], data: Float32Array.of(42) }],
    ['empty', { shape: [0, 4], data: new Float32Array(0) }],
    ['big', { shape: [1000], data: Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i)) }],
  ]);
}

/** A file built by hand from the format description, independent of serializeSafetensors. */
function handMade(header: object | string, data: number[]): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const f32le = (...v: number[]) => [...new Uint8Array(Float32Array.from(v).buffer)];

t('round trip with metadata, a scalar, an empty tensor; 8-byte aligned header; contiguous offsets', () => {
  const m = sample();
  const bytes = serializeSafetensors(m, { format: 'pt', step: '12' });
  const n = new DataView(bytes.buffer).getUint32(0, true);
  assert.is(new DataView(bytes.buffer).getUint32(4, true), 0);
  assert.is(n % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.equal(header.__metadata__, { format: 'pt', step: '12' });
  assert.equal(header['conv.weight'], { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
  assert.equal(header.scalar.data_offsets, [24, 28]);
  assert.equal(header.empty.data_offsets, [28, 28]);
  assert.is(bytes.length, 8 + n + 24 + 4 + 4000);
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.equal(metadata, { format: 'pt', step: '12' });
  assert.equal([...tensors.keys()], [...m.keys()]);
  for (const [k, e] of m) assert.equal(tensors.get(k), e, k);
  assert.ok(Object.is(tensors.get('conv.weight')!.data[4], -0), 'bit exact');
});

t('reads a hand-made file with F32, F16, BF16, F64 and I64 tensors in any header order', () => {
  const f16 = [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x35]; // 1, -2, 0.3125
  const bf16 = [0x80, 0x3f, 0x40, 0xc0]; // 1, -3
  const f64 = [...new Uint8Array(Float64Array.of(0.1).buffer)];
  const i64 = [...new Uint8Array(BigInt64Array.of(-5n, 7n).buffer)];
  const bytes = handMade({
    b: { dtype: 'F16', shape: [3], data_offsets: [8, 14] },
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    c: { dtype: 'BF16', shape: [2], data_offsets: [14, 18] },
    d: { dtype: 'F64', shape: [1], data_offsets: [18, 26] },
    e: { dtype: 'I64', shape: [2], data_offsets: [26, 42] },
  }, [...f32le(0.5, -1.5), ...f16, ...bf16, ...f64, ...i64]);
  const m = parseSafetensors(bytes, 'hand.safetensors');
  assert.equal(m.get('a'), { shape: [2], data: Float32Array.of(0.5, -1.5) });
  assert.equal(m.get('b'), { shape: [3], data: Float32Array.of(1, -2, 0.3125), dtype: 'F16' });
  assert.equal(m.get('c')!.data, Float32Array.of(1, -3));
  assert.equal(m.get('d')!.data, Float32Array.of(0.1));
  assert.equal(m.get('e')!.data, Float32Array.of(-5, 7));
});

t('reads a file written by the reference implementation (test/fixtures/safetensors/make_fixture.py)', async () => {
  const { tensors, metadata } = await readSafetensors(fileURLToPath(new URL('./fixtures/safetensors/python-made.safetensors', import.meta.url)));
  assert.ok(/^safetensors \d/.test(metadata.made_by), metadata.made_by);
  assert.equal(tensors.get('layer.weight'), { shape: [2, 3], data: Float32Array.from([0, 1, 2, 3, 4, 5], (v) => v / 4 - 0.5) });
  assert.equal(tensors.get('half'), { shape: [4], data: Float32Array.of(1, -2, 0.3125, 65504), dtype: 'F16' });
  assert.equal(tensors.get('double')!.data, Float32Array.of(0.1, -1e10));
  assert.equal(tensors.get('num_batches_tracked'), { shape: [], data: Float32Array.of(12345), dtype: 'I64' });
  assert.equal(tensors.get('bytes')!.data, Float32Array.of(0, 255));
  assert.equal(tensors.get('empty'), { shape: [0, 3], data: new Float32Array(0) });
});

t('corrupt headers are rejected with the file name and what is wrong', () => {
  const src = 'model.safetensors';
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const data = f32le(1, 2);
  throwsWith(() => parseSafetensors(new Uint8Array(5), src), src, 'truncated', '5 bytes');
  const huge = handMade(ok, data);
  new DataView(huge.buffer).setUint32(4, 1, true);
  throwsWith(() => parseSafetensors(huge, src), src, 'header length', 'not plausible');
  const long = handMade(ok, data);
  new DataView(long.buffer).setUint32(0, 5000, true);
  throwsWith(() => parseSafetensors(long, src), src, 'truncated', 'needs 5000 bytes');
  throwsWith(() => parseSafetensors(handMade('{"a": {', data), src), src, 'not valid JSON');
  throwsWith(() => parseSafetensors(handMade('[1, 2]', []), src), src, 'not a JSON object');
  const badUtf8 = handMade('{"a"}', []);
  badUtf8[9] = 0xff;
  throwsWith(() => parseSafetensors(badUtf8, src), src, 'UTF-8');
  throwsWith(() => parseSafetensors(handMade({ a: { ...ok.a, dtype: 'Q4' } }, data), src), src, "'a'", 'unsupported dtype "Q4"');
  throwsWith(() => parseSafetensors(handMade({ a: { ...ok.a, shape: [-2] } }, data), src), src, "'a'", 'invalid shape');
  throwsWith(() => parseSafetensors(handMade({ a: { ...ok.a, data_offsets: [8, 0] } }, data), src), src, 'invalid data_offsets');
  throwsWith(() => parseSafetensors(handMade({ a: { ...ok.a, shape: [3] } }, data), src), src, "'a'", '12 bytes', 'spanning 8 bytes');
  throwsWith(() => parseSafetensors(handMade({ __metadata__: { k: 1 }, ...ok }, data), src), src, "__metadata__ 'k'");
  const two = (o1: number[], o2: number[], bytes: number[]) =>
    handMade({ a: { dtype: 'F32', shape: [2], data_offsets: o1 }, b: { dtype: 'F32', shape: [1], data_offsets: o2 } }, bytes);
  throwsWith(() => parseSafetensors(two([0, 8], [4, 8], f32le(1, 2, 3)), src), src, "'b'", 'overlaps', "'a'");
  throwsWith(() => parseSafetensors(two([0, 8], [12, 16], f32le(1, 2, 3, 4)), src), src, 'gap of 4 bytes', "'b'");
  throwsWith(() => parseSafetensors(two([0, 8], [8, 12], f32le(1, 2)), src), src, 'truncated', "'b'", 'ends at data byte 12', 'only 8');
  throwsWith(() => parseSafetensors(handMade(ok, f32le(1, 2, 3)), src), src, '4 unexpected bytes after the last tensor');
});

t('every truncation of a valid file is rejected, never read as something else', () => {
  const bytes = serializeSafetensors(new Map([['w', { shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }], ['b', { shape: [2], data: Float32Array.of(7, 8) }]]));
  for (let len = 0; len < bytes.length; len++) {
    throwsWith(() => parseSafetensors(bytes.slice(0, len), 'cut.safetensors'), 'cut.safetensors');
  }
  assert.is(parseSafetensors(bytes).size, 2);
});

t('serialize validates its input', () => {
  throwsWith(() => serializeSafetensors(new Map([['w', { shape: [2, 2], data: new Float32Array(3) }]])), 'serializeSafetensors', "'w'", '[2, 2]', '3 Float32Array values');
  throwsWith(() => serializeSafetensors(new Map([['__metadata__', { shape: [1], data: new Float32Array(1) }]])), 'invalid tensor name');
  throwsWith(() => serializeSafetensors(new Map(), { step: 3 as unknown as string }), "metadata 'step'", 'string');
});

t('Node: atomic save leaves no temporary file; load round trip; overwrite; clear errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'st-'));
  try {
    const path = join(dir, 'ckpt.safetensors');
    await saveSafetensors(path, sample(), { epoch: '3' });
    assert.equal(readdirSync(dir), ['ckpt.safetensors']);
    const { tensors, metadata } = await readSafetensors(path);
    assert.equal(metadata, { epoch: '3' });
    for (const [k, e] of sample()) assert.equal(tensors.get(k), e, k);
    const small = new Map([['x', { shape: [1], data: Float32Array.of(9) }]]);
    await saveSafetensors(path, small);
    assert.equal((await loadSafetensors(path)).get('x')!.data, Float32Array.of(9));
    assert.equal(readdirSync(dir), ['ckpt.safetensors'], 'overwritten in place, no leftovers');

    await rejectsWith(saveSafetensors(join(dir, 'missing', 'x.safetensors'), small), 'saveSafetensors', join(dir, 'missing', 'x.safetensors'));
    await rejectsWith(saveSafetensors(join(dir, 'bad.safetensors'), new Map([['w', { shape: [2], data: new Float32Array(1) }]])), "'w'");
    assert.equal(readdirSync(dir), ['ckpt.safetensors'], 'failed saves leave nothing behind');

    const full = readFileSync(path);
    const cut = join(dir, 'cut.safetensors');
    writeFileSync(cut, full.subarray(0, full.length - 2));
    await rejectsWith(loadSafetensors(cut), cut, 'truncated');
    await rejectsWith(loadSafetensors(join(dir, 'nope.safetensors')), 'cannot read', 'nope.safetensors');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t('a model checkpoint through a file restores the model exactly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'st-'));
  const a = materialize(new Sequential(new Linear(3, 5), new ReLU(), new Linear(5, 2)), { seed: 1 });
  const b = materialize(new Sequential(new Linear(3, 5), new ReLU(), new Linear(5, 2)), { seed: 2 });
  try {
    const path = join(dir, 'model.safetensors');
    await saveSafetensors(path, await a.stateDict(), { format: 'byol-webgpu' });
    b.loadStateDict(await loadSafetensors(path));
    assert.equal(await b.arena!.read(), await a.arena!.read());
  } finally {
    a.dispose();
    b.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

t('parses bytes that are a view into a larger buffer (a Node Buffer from the shared pool)', () => {
  const bytes = serializeSafetensors(new Map([['a', { shape: [3], data: Float32Array.of(1.5, -2, 3.25) }]]));
  const pool = Buffer.alloc(bytes.length + 37);
  pool.set(bytes, 37);
  const view = pool.subarray(37); // Buffer.slice()/subarray() share memory; decoding must copy the right bytes
  assert.equal(Array.from(parseSafetensors(view).get('a')!.data), [1.5, -2, 3.25]);
});

t.run();
