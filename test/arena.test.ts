import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, mul, sum, add, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { Arena, ArenaLayout, ARENA_ALIGN, NORM_CHUNK, KIND_CODE, arenaStats, type SegmentSpec } from '../engine/arena.ts';
import { rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('arena');

// awkward sizes: 1, 3, 257, 1000 and one spanning several reduction chunks
const SPECS: SegmentSpec[] = [
  { name: 'a.weight', shape: [1], kind: 'weight' },
  { name: 'a.bias', shape: [3], kind: 'bias' },
  { name: 'bn.weight', shape: [257], kind: 'norm' },
  { name: 'b.weight', shape: [10, 100], kind: 'weight' },
  { name: 'c.weight', shape: [97, 101], kind: 'weight' },
];

function randomPacked(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
}

t('layout: aligned offsets, packed offsets, numel and length', () => {
  const L = new ArenaLayout(SPECS);
  assert.equal(L.segments.map((s) => s.offset), [0, 64, 128, 128 + 320, 128 + 320 + 1024]);
  assert.equal(L.segments.map((s) => s.packedOffset), [0, 1, 4, 261, 1261]);
  for (const s of L.segments) assert.is(s.offset % ARENA_ALIGN, 0);
  assert.is(L.numel, 1 + 3 + 257 + 1000 + 9797);
  assert.is(L.length, 128 + 320 + 1024 + Math.ceil(9797 / 64) * 64);
  assert.equal(L.segments.map((s) => s.chunks), [1, 1, 1, 1, Math.ceil(9797 / NORM_CHUNK)]);
});

t('segment table: entries, sentinel, block index and chunks tile every segment', async () => {
  const arena = new Arena(SPECS);
  const L = arena.layout;
  const b = L.tableBases;
  const tab = (await arena.table.toArray()) as Uint32Array;
  assert.equal([...tab], [...L.tableData()], 'GPU table equals the layout table');
  for (const s of L.segments) {
    assert.equal([...tab.subarray(4 * s.index, 4 * s.index + 4)], [s.offset, s.size, KIND_CODE[s.kind], s.firstChunk]);
    for (let blk = s.offset / 64; blk < Math.ceil((s.offset + s.size) / 64); blk++) assert.is(tab[b.block + blk], s.index);
    let covered = s.offset;
    for (let c = s.firstChunk; c < s.firstChunk + s.chunks; c++) {
      const [seg, start, end] = tab.subarray(b.chunk + 4 * c, b.chunk + 4 * c + 3);
      assert.is(seg, s.index);
      assert.is(start, covered);
      covered = end;
    }
    assert.is(covered, s.offset + s.size, `chunks of ${s.name} end at its end`);
  }
  const S = L.segments.length;
  assert.equal([tab[4 * S], tab[4 * S + 3]], [L.length, L.nChunks], 'sentinel');
  arena.dispose();
});

t('parameters are views of one buffer; write/read round trip; padding stays zero', async () => {
  const arena = new Arena(SPECS);
  assert.is(arena.params.length, SPECS.length);
  for (const p of arena.params) {
    assert.is(p.storage, arena.params[0].storage, 'one storage');
    assert.is(p.requiresGrad, true);
    assert.is(p.byteOffset % 256, 0);
  }
  const data = randomPacked(arena.numel, 1);
  arena.write(data);
  assert.equal(await arena.read(), data);
  for (const s of arena.segments) {
    assert.equal(await arena.params[s.index].toArray(), data.subarray(s.packedOffset, s.packedOffset + s.size), s.name);
    assert.equal(arena.params[s.index].shape, [...s.shape]);
  }
  const flat = (await arena.data.flat.toArray()) as Float32Array;
  let padding = 0;
  for (const s of arena.segments) for (let i = s.offset + s.size; i < Math.ceil((s.offset + s.size) / 64) * 64; i++) padding += Math.abs(flat[i]);
  assert.is(padding, 0);
  throwsWith(() => arena.write(new Float32Array(5)), 'Arena.write', '5 values', `${arena.numel} parameters`);
  arena.dispose();
});

t('gatherGrads copies each .grad into the gradient buffer, disposes it, and zero-fills missing ones', async () => {
  const arena = new Arena(SPECS);
  const data = randomPacked(arena.numel, 2);
  arena.write(data);
  arena.grad.write(randomPacked(arena.numel, 3)); // stale gradients that must be overwritten
  await sync();
  const before = liveTensors();
  const [p0, p1, , p3, p4] = arena.params;
  const c = tensor(Float32Array.from({ length: 1000 }, (_, i) => i / 1000), [10, 100]);
  // d/dp0 sum(p0*p0) = 2 p0; d/dp1 sum(3 p1) = 3; d/dp3 sum(p3*c) = c; d/dp4 sum(p4*p4) = 2 p4; bn.weight: no grad
  tidy(() => backward(add(add(sum(mul(p0, p0)), sum(mul(p1, tensor([3, 3, 3])))), add(sum(mul(p3, c)), sum(mul(p4, p4))))));
  assert.ok(p0.grad && p4.grad);
  arena.gatherGrads();
  for (const p of arena.params) assert.is(p.grad, null);
  const g = await arena.readGrads();
  const want = new Float32Array(arena.numel);
  const seg = arena.segments;
  for (let i = 0; i < 1; i++) want[seg[0].packedOffset + i] = 2 * data[seg[0].packedOffset + i];
  want.fill(3, seg[1].packedOffset, seg[1].packedOffset + 3);
  for (let i = 0; i < 1000; i++) want[seg[3].packedOffset + i] = Math.fround(i / 1000);
  for (let i = 0; i < 9797; i++) want[seg[4].packedOffset + i] = 2 * data[seg[4].packedOffset + i];
  assert.equal(g, want);
  c.dispose();
  await sync();
  assert.is(liveTensors(), before, 'gradients were released');
  // no gradients at all: one clear of the whole buffer
  arena.grad.write(randomPacked(arena.numel, 4));
  arena.gatherGrads();
  assert.ok((await arena.readGrads()).every((v) => v === 0));
  arena.dispose();
});

t('copyFrom: equal layouts and a prefix layout in one copy; mismatches are named', async () => {
  const a = new Arena(SPECS);
  const b = new Arena(SPECS);
  const prefix = new Arena(SPECS.slice(0, 3));
  const data = randomPacked(a.numel, 5);
  a.write(data);
  b.copyFrom(a);
  assert.equal(await b.read(), data);
  prefix.copyFrom(a);
  assert.equal(await prefix.read(), data.subarray(0, prefix.numel));
  throwsWith(() => a.copyFrom(prefix), 'copyFrom', 'layouts differ', '5 segments vs only 3');
  const other = new Arena([{ name: 'a.weight', shape: [1], kind: 'weight' }, { name: 'a.bias', shape: [4], kind: 'bias' }]);
  throwsWith(() => other.copyFrom(a), 'copyFrom', "'a.bias' [4] bias vs 'a.bias' [3] bias");
  for (const x of [a, b, prefix, other]) x.dispose();
});

t('construction errors and use after dispose', () => {
  throwsWith(() => new Arena([]), 'at least one segment');
  throwsWith(() => new Arena([SPECS[0], SPECS[0]]), "duplicate segment name 'a.weight'");
  throwsWith(() => new Arena([{ name: 'x', shape: [0, 3], kind: 'weight' }]), "'x'", '[0, 3]', 'no elements');
  throwsWith(() => new Arena([{ name: 'x', shape: [2.5], kind: 'weight' }]), "'x'", 'invalid shape');
  throwsWith(() => new Arena([{ name: 'x', shape: [2], kind: 'gamma' as never }]), "'gamma'", 'weight, bias or norm');
  const a = new Arena(SPECS, 'net');
  const p = a.params[0];
  a.dispose();
  throwsWith(() => a.gatherGrads(), 'net.gatherGrads', 'disposed');
  throwsWith(() => p.binding('relu'), 'relu', 'after dispose');
  throwsWith(() => a.param('nope'), "no parameter named 'nope'");
});

t('arenas made inside tidy() survive it; dispose frees their buffers', async () => {
  const before = arenaStats();
  const live = liveTensors();
  const a = tidy(() => new Arena(SPECS));
  assert.is(a.params[0].disposed, false);
  assert.is(arenaStats().buffers, before.buffers + 2, 'parameter and gradient buffers');
  assert.is(arenaStats().bytes, before.bytes + 2 * a.length * 4);
  assert.is(liveTensors(), live + 1, 'the segment table is a pooled tensor');
  a.dispose();
  a.dispose(); // idempotent
  await sync();
  assert.equal(arenaStats(), before);
  assert.is(liveTensors(), live);
});

t.run();
