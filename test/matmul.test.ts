import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest, checkOp } from './helpers/gradcheck.ts';
import { matmul } from '../nn/index.ts';
import { tensor, sync, liveTensors, type Tensor } from '../nn/index.ts';
import { rng, relErr } from './helpers/gradcheck.ts';
import { ref, broadcastLanes, tileName, matmulRaw, matmulTuning, matmulTextureStats, DEFAULT_TILE, BROADCAST_TILE, type MatmulTile } from '../kernels/matmul.ts';

// [M, K, N, transA, transB, batchA, batchB]; each case also runs the backward, i.e. two more products with
// other transposes. The comments say which load paths a case reaches in the broadcast kernel.
const cases: [number, number, number, boolean, boolean, number, number][] = [
  [1, 1, 1, false, false, 0, 0],
  [5, 3, 7, false, false, 0, 0], // scalar loads everywhere, ragged K
  [64, 32, 64, false, false, 0, 0], // exactly one tiled tile: the aligned kernel; vec4 A, B and C
  [128, 48, 192, false, false, 0, 0], // several aligned tiles
  [65, 17, 63, false, false, 0, 0], // one past / one short of a tile
  [33, 70, 9, true, false, 0, 0],
  [33, 70, 9, false, true, 0, 0],
  [20, 31, 45, true, true, 0, 0],
  [200, 129, 150, false, false, 0, 0], // many workgroups, ragged K, scalar B and C
  [36, 20, 40, true, false, 0, 0], // transposed A read as vec4 along m (M % 4 == 0)
  [36, 20, 40, false, true, 0, 0], // transposed B read as vec4 along k (K % 4 == 0)
  [12, 10, 8, true, true, 0, 0], // vec4 transposed A with a ragged-K tail; scalar transposed B
  [70, 36, 70, false, false, 0, 0], // partial tiles in M and N with vec4 loads
  [40, 130, 36, true, true, 0, 0], // long main loop plus a 2-deep tail
  [7, 9, 11, false, false, 3, 3], // batched
  [7, 9, 11, false, true, 4, 0], // batched A, shared B
  [7, 9, 11, true, false, 0, 2], // shared A, batched B
  [8, 12, 16, false, false, 2, 2], // batched with vec4 loads (batch offsets in vec4 units)
  // operand textures (broadcast +textures): a 2-D operand whose stored rows are a multiple of 64 floats, K % 4 == 0
  [36, 64, 40, false, false, 0, 0], // A [36, 64] from a texture, B from a buffer; dB reads A transposed from one
  [64, 20, 40, true, false, 0, 0], // A stored [20, 64]: transposed A from a texture
  [36, 64, 40, false, true, 0, 0], // B stored [40, 64]: transposed B from a texture
  [20, 12, 64, false, false, 0, 0], // B [12, 64] from a texture
  [64, 64, 128, true, true, 0, 0], // both from textures, both transposed
  [64, 10, 12, true, false, 0, 0], // rows of 64 but K % 4 != 0: buffers and the K tail
  [8, 16, 64, false, false, 3, 0], // batched A, B [16, 64] shared by every batch from a texture
];

// Every kernel family this device can run, each on the cases that reach its code paths (a variant costs up to
// seconds of shader compilation on lavapipe the first time; Mesa caches it on disk after that):
// - tiled: aligned and not, transposes, batches, scalar and vec4 loads;
// - broadcast with textures at one subgroup of rows: every case (textures where shapes allow, buffers elsewhere);
// - broadcast with buffers at 16 rows (2 A loads per step) on the vec4-shaped cases;
// - the default tile (TM=16 with 2 column quads per lane, textures) on ragged K, transposes, partial tiles,
//   batches and textures; TM=32 with one quad (4 A loads per step) on partial tiles and both textures.
const lanes = broadcastLanes();
const tiles: [MatmulTile, number[] | null][] = [[DEFAULT_TILE, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15, 16, 17]]];
if (lanes) {
  tiles.push([{ kind: 'broadcast', TM: lanes % 4 === 0 ? lanes : 4 * lanes, textures: true }, null]);
  if (16 % lanes === 0) tiles.push([{ kind: 'broadcast', TM: 16 }, [2, 9, 10, 11, 13, 17, 18]]);
  tiles.push([BROADCAST_TILE, [1, 4, 5, 6, 8, 11, 12, 13, 15, 19, 21, 23, 25]]);
  tiles.push([{ kind: 'broadcast', TM: 32, textures: true }, [12, 22]]);
}

for (const [tile, only] of tiles) {
  const t = suite(`matmul ${tileName(tile)}`);
  for (const [i, [M, K, N, ta, tb, ba, bb]] of cases.entries()) {
    if (only && !only.includes(i)) continue;
    const sa = ta ? [K, M] : [M, K];
    const sb = tb ? [N, K] : [K, N];
    const shapes = [ba ? [ba, ...sa] : sa, bb ? [bb, ...sb] : sb];
    opTest(`matmul M=${M} K=${K} N=${N} transA=${ta} transB=${tb} batch=${ba}/${bb}`, {
      shapes,
      ref: ([a, b]) => ref.matmul(a, b, ta, tb),
      refGrad: ([a, b], dy) => ref.matmulBackward(a, b, dy, ta, tb),
      gpu: ([a, b]) => matmul(a, b, ta, tb, { tuning: { tile } }), // the backward's products use the tile too
      tol: 1e-5,
    }, t);
  }
  t.run();
}

// the broadcast kernel's tile orders: 11 row tiles in groups of 1, 3 (a partial last group), 8 and 16 (one
// group), and the 2-D column-first order (0); batched, ragged in every dimension
if (lanes) {
  const orders = suite('matmul tile orders');
  for (const group of [0, 1, 3, 8, 16]) {
    orders(`matmul in row groups of ${group || '(2-D order)'}`, async () => {
      await checkOp({
        shapes: [[2, 11 * BROADCAST_TILE.TM - 5, 36], [2, 36, 4 * lanes * 3 - 6]],
        ref: ([a, b]) => ref.matmul(a, b, false, false),
        refGrad: ([a, b], dy) => ref.matmulBackward(a, b, dy, false, false),
        gpu: ([a, b]) => matmul(a, b, false, false, { tuning: { tile: BROADCAST_TILE, group } }),
        tol: 1e-5,
      });
    });
  }
  orders.run();
}

const errs = suite('matmul tiles');
errs('matmul rejects a broadcast tile the device cannot run', () => {
  const bad: MatmulTile = { kind: 'broadcast', TM: 6 };
  const [a, b] = [tensor(new Float32Array(4), [2, 2]), tensor(new Float32Array(4), [2, 2])];
  try {
    assert.throws(() => matmul(a, b, false, false, { tuning: { tile: bad } }), lanes ? /multiple of 4/ : /subgroups/);
  } finally {
    a.dispose();
    b.dispose();
  }
});
errs('a per-call tuning applies to that call only and is checked', async () => {
  const [a, b] = [tensor(Float32Array.from({ length: 12 }, (_, i) => i - 5), [3, 4]), tensor(Float32Array.from({ length: 8 }, (_, i) => 2 - i), [4, 2])];
  const before = JSON.stringify(matmulTuning());
  const c = matmul(a, b, false, false, { tuning: { tile: DEFAULT_TILE, group: 0 } });
  assert.is(JSON.stringify(matmulTuning()), before, 'the device record is unchanged');
  const want = ref.matmul({ data: Float64Array.from(await a.toArray()), shape: [3, 4] }, { data: Float64Array.from(await b.toArray()), shape: [4, 2] });
  assert.ok(relErr(await c.toArray(), want.data) < 1e-5);
  assert.throws(() => matmul(a, b, false, false, { tuning: { group: -1 } }), /matmul: tuning.group/);
  assert.throws(() => matmul(a, b, false, false, { tuning: { tile: { BM: 64, BN: 64, BK: 16, TM: 3 } } }), /matmul: tiled 64x64x16 TM=3/);
  for (const t of [a, b, c]) t.dispose();
});
if (lanes) {
  errs('the operand-texture cache stays under its cap, and evicted textures are not destroyed while in use', async () => {
    const before = liveTensors();
    const small = { tile: BROADCAST_TILE, textureCacheBytes: 48 * 1024 }; // room for about one [64, 128] operand
    const r = rng(3);
    const outs: [Tensor, Tensor][] = [];
    const made: Tensor[] = [];
    for (const [M, K, N] of [[64, 128, 64], [32, 64, 128], [64, 64, 64], [128, 64, 64]]) {
      const a = tensor(Float32Array.from({ length: M * K }, () => r() - 0.5), [M, K]);
      const b = tensor(Float32Array.from({ length: K * N }, () => r() - 0.5), [K, N]);
      const got = matmulRaw(a, b, false, false, { tuning: small }); // recorded, not yet submitted
      const want = matmulRaw(a, b, false, false, { tuning: { tile: DEFAULT_TILE } });
      made.push(a, b, got, want);
      outs.push([got, want]);
      assert.ok(matmulTextureStats().bytes <= 48 * 1024 + M * K * 4 + K * N * 4, `cache bytes ${matmulTextureStats().bytes}`);
    }
    for (const [i, [got, want]] of outs.entries()) {
      assert.ok(relErr(await got.toArray(), await want.toArray()) < 1e-5, `product ${i} through textures matches the tiled kernel`);
    }
    for (const t of made) t.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });
}
errs.run();
