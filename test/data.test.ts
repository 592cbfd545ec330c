// Data loaders on small fixtures written here into a temp folder (IDX, CIFAR-10 binary, PNG folders), their
// errors on broken input, the real Fashion-MNIST files when installed, and the GPU gather against the CPU data.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, deflateSync, crc32 } from 'node:zlib';
import { PNG } from 'pngjs';
import { tensor, liveTensors, sync, gpu } from '../nn/index.ts';
import { loadDataset, loadFashionMnist, validateDataset, channelStats, DEFAULT_PATHS, type ImageDataset } from '../byol/data/dataset.ts';
import { parseIdx } from '../byol/data/idx.ts';
import { loadCifar10, parseCifarBatch, CIFAR10_TRAIN_FILES } from '../byol/data/cifar.ts';
import { loadImageFolder } from '../byol/data/folder.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import { rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('data');
const root = mkdtempSync(join(tmpdir(), 'byol-data-test-'));
let dirCount = 0;
const freshDir = (name = 'd') => {
  const d = join(root, `${name}${dirCount++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

// ---- fixtures -------------------------------------------------------------------------------------------

function idxBytes(dims: number[], data: ArrayLike<number>, ndimsOverride?: number): Uint8Array {
  const head = new Uint8Array(4 + 4 * dims.length);
  const view = new DataView(head.buffer);
  head[2] = 0x08;
  head[3] = ndimsOverride ?? dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  out.set(Uint8Array.from(data), head.length);
  return out;
}

function randomBytes(n: number, seed: number, max = 256): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * max));
}

/** A Fashion-MNIST-style folder: `split` images [n, h, w] and labels, gzipped unless told otherwise. */
function writeIdxPair(dir: string, split: 'train' | 'test', pixels: Uint8Array, labels: number[], h: number, w: number, gz = true) {
  const prefix = split === 'train' ? 'train' : 't10k';
  const z = (b: Uint8Array) => (gz ? gzipSync(b) : b);
  const ext = gz ? '.gz' : '';
  writeFileSync(join(dir, `${prefix}-images-idx3-ubyte${ext}`), z(idxBytes([labels.length, h, w], pixels)));
  writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte${ext}`), z(idxBytes([labels.length], labels)));
}

function writePng(path: string, w: number, h: number, rgba: Uint8Array, colorType: 0 | 2 | 4 | 6 = 6, bitDepth: 8 | 16 = 8) {
  let data = Buffer.from(rgba);
  if (bitDepth === 16) {
    // pngjs takes 16-bit input as native-endian u16 RGBA, read through data.buffer from offset 0 (so no pooled Buffer)
    const u16 = new Uint16Array(rgba.length);
    for (let i = 0; i < rgba.length; i++) u16[i] = rgba[i] * 257;
    data = Buffer.from(u16.buffer);
  }
  writeFileSync(path, PNG.sync.write({ width: w, height: h, data } as PNG, { colorType, bitDepth, inputColorType: 6 }));
}

/** A palette PNG (colour type 3) written by hand: pngjs cannot encode palettes. */
function writePalettePng(path: string, w: number, h: number, palette: [number, number, number][], indices: Uint8Array) {
  const chunk = (type: string, body: Uint8Array) => {
    const out = new Uint8Array(12 + body.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, body.length, false);
    out.set(Buffer.from(type, 'ascii'), 4);
    out.set(body, 8);
    v.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)), false);
    return out;
  };
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w, false);
  new DataView(ihdr.buffer).setUint32(4, h, false);
  ihdr.set([8, 3, 0, 0, 0], 8);
  const raw = new Uint8Array(h * (w + 1));
  for (let y = 0; y < h; y++) raw.set(indices.subarray(y * w, (y + 1) * w), y * (w + 1) + 1); // filter byte 0
  const parts = [Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('PLTE', Uint8Array.from(palette.flat())), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))];
  writeFileSync(path, Buffer.concat(parts));
}

/** RGBA pixels whose RGB are random; grey when `grey` (r = g = b). */
function rgbaPixels(n: number, seed: number, grey = false): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(4 * n);
  for (let p = 0; p < n; p++) {
    const v = [0, 1, 2].map(() => Math.floor(r() * 256));
    if (grey) v[1] = v[2] = v[0];
    out.set([...v, 255], 4 * p);
  }
  return out;
}

// ---- IDX / Fashion-MNIST format ----------------------------------------------------------------------------

t('IDX pair (.gz and plain) loads pixels and labels exactly', () => {
  const dir = freshDir('idx');
  const px = randomBytes(5 * 4 * 3, 1);
  writeIdxPair(dir, 'train', px, [3, 0, 9, 1, 1], 4, 3);
  const pxTest = randomBytes(2 * 4 * 3, 2);
  writeIdxPair(dir, 'test', pxTest, [7, 2], 4, 3, false);
  const ds = loadDataset({ kind: 'fashion-mnist', path: dir, split: 'train' });
  assert.equal([ds.n, ds.height, ds.width, ds.channels], [5, 4, 3, 1]);
  assert.equal([...ds.images], [...px]);
  assert.equal([...ds.labels!], [3, 0, 9, 1, 1]);
  assert.is(ds.classes.length, 10);
  assert.is(ds.classes[9], 'Ankle boot');
  const te = loadFashionMnist(dir, 'test');
  assert.equal([...te.images], [...pxTest]);
  assert.equal([...te.labels!], [7, 2]);
});

t('IDX errors: truncated payload, truncated gzip, bad magic, wrong rank, label range, count mismatch, missing file', () => {
  const dir = freshDir('idxbad');
  const good = idxBytes([3, 4, 4], randomBytes(48, 3));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idxBytes([3], [1, 2, 3])));
  const img = join(dir, 'train-images-idx3-ubyte.gz');
  const load = () => loadFashionMnist(dir, 'train');

  writeFileSync(img, gzipSync(good.subarray(0, good.length - 10)));
  throwsWith(load, 'train-images-idx3-ubyte.gz', 'expected 48 bytes of pixels after the header', 'found 38');

  const gz = gzipSync(good);
  writeFileSync(img, gz.subarray(0, gz.length - 12));
  throwsWith(load, 'train-images-idx3-ubyte.gz', 'not a valid gzip file');

  writeFileSync(img, idxBytes([3, 4, 4], randomBytes(48, 3)));
  throwsWith(load, 'train-images-idx3-ubyte.gz', 'expected a gzip file');

  const badMagic = good.slice();
  badMagic[0] = 0x12;
  writeFileSync(img, gzipSync(badMagic));
  throwsWith(load, 'train-images-idx3-ubyte.gz', 'bad IDX magic number 12 00 08 03');

  writeFileSync(img, gzipSync(idxBytes([48], randomBytes(48, 3))));
  throwsWith(load, 'train-images-idx3-ubyte.gz', 'expected an IDX file with 3 dimensions', 'declares 1');

  writeFileSync(img, gzipSync(good.subarray(0, 10)));
  throwsWith(load, 'truncated IDX header');

  const floats = good.slice();
  floats[2] = 0x0d;
  writeFileSync(img, gzipSync(floats));
  throwsWith(load, 'element type 0x0d is not supported');

  writeFileSync(img, gzipSync(good));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idxBytes([3], [1, 12, 3])));
  throwsWith(load, 'train-labels-idx1-ubyte.gz', 'label 12 at index 1 is out of range 0..9');

  writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idxBytes([2], [1, 2])));
  throwsWith(load, 'has 2 labels but', 'has 3 images');

  throwsWith(() => loadFashionMnist(dir, 'test'), 't10k-images-idx3-ubyte.gz not found', 'dataset-fashion-mnist');
  throwsWith(() => parseIdx(Uint8Array.from([0, 0]), 'x.idx'), 'x.idx', 'too short');
});

// ---- CIFAR-10 ------------------------------------------------------------------------------------------------

function cifarRecords(labels: number[], seed: number): Uint8Array {
  const px = randomBytes(labels.length * 3072, seed);
  const out = new Uint8Array(labels.length * 3073);
  labels.forEach((l, i) => {
    out[i * 3073] = l;
    out.set(px.subarray(i * 3072, (i + 1) * 3072), i * 3073 + 1);
  });
  return out;
}

t('CIFAR-10 batches: CHW records become NHWC, batches concatenate in order', () => {
  const dir = freshDir('cifar');
  const batches = CIFAR10_TRAIN_FILES.map((f, k) => {
    const rec = cifarRecords([k, (k + 3) % 10], 10 + k);
    writeFileSync(join(dir, f), rec);
    return rec;
  });
  writeFileSync(join(dir, 'test_batch.bin'), cifarRecords([9], 20));
  const ds = loadCifar10(dir, 'train');
  assert.equal([ds.n, ds.height, ds.width, ds.channels], [10, 32, 32, 3]);
  assert.equal([...ds.labels!], [0, 3, 1, 4, 2, 5, 3, 6, 4, 7]);
  assert.is(ds.classes[0], 'airplane');
  // pixel (y, x, c) of image i = byte 1 + c*1024 + y*32 + x of its record
  for (const [i, y, x, c] of [[0, 0, 0, 0], [1, 5, 7, 2], [9, 31, 31, 1], [6, 17, 2, 0]]) {
    const rec = batches[Math.floor(i / 2)];
    const want = rec[(i % 2) * 3073 + 1 + c * 1024 + y * 32 + x];
    assert.is(ds.images[((i * 32 + y) * 32 + x) * 3 + c], want, `pixel ${[i, y, x, c]}`);
  }
  const te = loadDataset({ kind: 'cifar10', path: dir, split: 'test' });
  assert.is(te.n, 1);
  assert.equal([...te.labels!], [9]);
});

t('CIFAR-10 errors: truncated file, label out of range, missing batch', () => {
  throwsWith(() => parseCifarBatch(new Uint8Array(3073 * 2 - 5), 'data_batch_3.bin'), 'data_batch_3.bin', 'not a multiple of the CIFAR record size 3073');
  throwsWith(() => parseCifarBatch(new Uint8Array(0), 'test_batch.bin'), 'test_batch.bin', 'empty');
  throwsWith(() => parseCifarBatch(cifarRecords([1, 10], 5), 'b.bin'), 'b.bin', 'label 10 of record 1 is out of range 0..9');
  const dir = freshDir('cifarbad');
  writeFileSync(join(dir, 'data_batch_1.bin'), cifarRecords([1], 1));
  throwsWith(() => loadCifar10(dir, 'train'), 'data_batch_2.bin not found');
  throwsWith(() => loadDataset({ kind: 'cifar10', path: join(dir, 'nope'), split: 'train' }), 'nope', 'not found');
});

// ---- PNG folders ---------------------------------------------------------------------------------------------

t('PNG folder with two classes: sorted class order, labels, exact RGB pixels; symbolic links followed', () => {
  const dir = freshDir('png');
  const w = 5;
  const h = 3;
  const pix: Record<string, Uint8Array> = {};
  let seed = 0;
  for (const [cls, names] of [['dog', ['b.png', 'a.png']], ['cat', ['z.png']]] as const) {
    mkdirSync(join(dir, cls));
    for (const n of names) {
      pix[`${cls}/${n}`] = rgbaPixels(w * h, ++seed);
      writePng(join(dir, cls, n), w, h, pix[`${cls}/${n}`], 2);
    }
  }
  writeFileSync(join(dir, 'dog', 'notes.txt'), 'not an image');
  const linked = freshDir('pnglinks');
  symlinkSync(join(dir, 'cat'), join(linked, 'cat'));
  mkdirSync(join(linked, 'dog'));
  symlinkSync(join(dir, 'dog', 'a.png'), join(linked, 'dog', 'a.png'));
  symlinkSync(join(dir, 'dog', 'b.png'), join(linked, 'dog', 'b.png'));
  for (const ds of [loadImageFolder(dir), loadImageFolder(linked)]) {
    assert.equal(ds.classes, ['cat', 'dog']);
    assert.equal([ds.n, ds.height, ds.width, ds.channels], [3, 3, 5, 3]);
    assert.equal([...ds.labels!], [0, 1, 1]);
    ['cat/z.png', 'dog/a.png', 'dog/b.png'].forEach((k, i) => {
      for (let p = 0; p < w * h; p++) for (let c = 0; c < 3; c++) assert.is(ds.images[(i * w * h + p) * 3 + c], pix[k][4 * p + c], `${k} pixel ${p}`);
    });
  }
});

t('PNG colour types: grey, grey+alpha, 16-bit, palette, RGBA; channels from the data or forced', () => {
  const w = 4;
  const h = 2;
  const grey = rgbaPixels(w * h, 7, true);
  const dir = freshDir('pnggrey');
  writePng(join(dir, '1.png'), w, h, grey, 0);
  writePng(join(dir, '2.png'), w, h, grey, 4);
  writePng(join(dir, '3.png'), w, h, grey, 0, 16);
  const ds = loadImageFolder(dir);
  assert.is(ds.channels, 1);
  assert.is(ds.labels, null);
  for (let i = 0; i < 3; i++) for (let p = 0; p < w * h; p++) assert.is(ds.images[i * w * h + p], grey[4 * p], `grey image ${i} pixel ${p}`);

  // one colour image makes the whole set RGB; grey images are replicated
  const colour = rgbaPixels(w * h, 8);
  writePng(join(dir, '4.png'), w, h, colour, 6, 16);
  const palette: [number, number, number][] = [[10, 20, 30], [200, 100, 0], [0, 0, 255]];
  const indices = Uint8Array.from({ length: w * h }, (_, i) => i % 3);
  writePalettePng(join(dir, '5.png'), w, h, palette, indices);
  const rgb = loadImageFolder(dir);
  assert.is(rgb.channels, 3);
  for (let p = 0; p < w * h; p++) {
    for (let c = 0; c < 3; c++) {
      assert.is(rgb.images[p * 3 + c], grey[4 * p], 'grey replicated');
      assert.is(rgb.images[(3 * w * h + p) * 3 + c], colour[4 * p + c], '16-bit RGBA scaled to 8 bits');
      assert.is(rgb.images[(4 * w * h + p) * 3 + c], palette[indices[p]][c], 'palette');
    }
  }
  const forced = loadImageFolder(dir, { channels: 1 });
  assert.is(forced.channels, 1);
  for (let p = 0; p < w * h; p++) {
    const [r, g, b] = palette[indices[p]];
    assert.is(forced.images[4 * w * h + p], Math.round(0.2989 * r + 0.587 * g + 0.114 * b), 'luma of a colour pixel');
    assert.is(forced.images[p], grey[4 * p], 'grey stays exact');
  }
});

t('PNG folder errors: missing, empty, no PNGs, mixed sizes, unreadable, not PNG, empty class, files beside classes', () => {
  throwsWith(() => loadImageFolder(join(root, 'missing')), 'missing', 'not found');
  const empty = freshDir('empty');
  throwsWith(() => loadImageFolder(empty), empty, 'empty folder');
  const noPng = freshDir('nopng');
  writeFileSync(join(noPng, 'a.jpg'), 'x');
  throwsWith(() => loadImageFolder(noPng), noPng, 'no PNG images', 'a.jpg');

  const mixed = freshDir('mixed');
  mkdirSync(join(mixed, 'a'));
  mkdirSync(join(mixed, 'b'));
  writePng(join(mixed, 'a', 'x.png'), 4, 4, rgbaPixels(16, 1));
  writePng(join(mixed, 'b', 'y.png'), 5, 3, rgbaPixels(15, 2));
  throwsWith(() => loadImageFolder(mixed), 'a/x.png is 4x4', 'b/y.png is 5x3', 'same size');

  const bad = freshDir('bad');
  const png = PNG.sync.write({ width: 4, height: 4, data: Buffer.from(rgbaPixels(16, 3)) } as PNG);
  writeFileSync(join(bad, 'ok.png'), png);
  const corrupt = Buffer.from(png);
  corrupt.fill(7, 40, 60); // garbage inside the IDAT chunk, header intact
  writeFileSync(join(bad, 'broken.png'), corrupt);
  throwsWith(() => loadImageFolder(bad), 'broken.png', 'unreadable PNG');
  writeFileSync(join(bad, 'broken.png'), 'this is text, not a PNG');
  throwsWith(() => loadImageFolder(bad), 'broken.png', 'not a PNG file');

  const emptyClass = freshDir('emptyclass');
  mkdirSync(join(emptyClass, 'a'));
  mkdirSync(join(emptyClass, 'b'));
  writePng(join(emptyClass, 'a', 'x.png'), 4, 4, rgbaPixels(16, 1));
  throwsWith(() => loadImageFolder(emptyClass), "class folder 'b' has no PNG images");

  writePng(join(emptyClass, 'loose.png'), 4, 4, rgbaPixels(16, 1));
  throwsWith(() => loadImageFolder(emptyClass), 'mixes PNG files', 'loose.png', 'subfolders');
});

t('folder splits: train/ and test/ subfolders, or the folder itself as train', () => {
  const dir = freshDir('splits');
  for (const split of ['train', 'test']) {
    for (const cls of ['x', 'y']) {
      mkdirSync(join(dir, split, cls), { recursive: true });
      writePng(join(dir, split, cls, '0.png'), 3, 3, rgbaPixels(9, 4, true));
    }
  }
  writePng(join(dir, 'train', 'y', '1.png'), 3, 3, rgbaPixels(9, 5, true));
  const tr = loadDataset({ kind: 'folder', path: dir, split: 'train' });
  const te = loadDataset({ kind: 'folder', path: dir, split: 'test' });
  assert.equal([tr.n, te.n], [3, 2]);
  assert.equal([...tr.labels!], [0, 1, 1]);
  const flat = join(dir, 'train', 'x');
  assert.is(loadDataset({ kind: 'folder', path: flat, split: 'train' }).n, 1);
  throwsWith(() => loadDataset({ kind: 'folder', path: flat, split: 'test' }), "no 'test' subfolder");
  throwsWith(() => loadDataset({ kind: 'folder', split: 'train' }), "kind 'folder' needs a path");
  throwsWith(() => loadDataset({ kind: 'mnist' as any, split: 'train' }), "unknown kind 'mnist'");
  throwsWith(() => loadDataset({ kind: 'fashion-mnist', split: 'val' as any }), "split must be 'train' or 'test'");
});

t('validateDataset rejects labels out of range and inconsistent sizes; channelStats is exact', () => {
  const ds: ImageDataset = { name: 'toy', images: Uint8Array.from([0, 255, 51, 102]), labels: Int32Array.from([0, 2]), n: 2, height: 1, width: 1, channels: 2, classes: ['a', 'b'] };
  throwsWith(() => validateDataset(ds), "data set 'toy'", 'label 2 at index 1 is out of range 0..1');
  ds.labels = Int32Array.from([0, -1]);
  throwsWith(() => validateDataset(ds), 'label -1 at index 1');
  ds.labels = Int32Array.from([0, 1]);
  validateDataset(ds);
  const st = channelStats(ds);
  assertNear(st.mean, [(0 + 51) / 2 / 255, (255 + 102) / 2 / 255], 1e-12);
  assertNear(st.std, [51 / 2 / 255, 153 / 2 / 255], 1e-12);
  throwsWith(() => validateDataset({ ...ds, images: new Uint8Array(3) }), '3 pixel bytes do not match');
  throwsWith(() => validateDataset({ ...ds, labels: Int32Array.from([0]) }), '1 labels for 2 images');
});

function assertNear(got: number[], want: number[], tol: number) {
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) <= tol, `${g} vs ${want[i]}`));
}

// ---- real Fashion-MNIST ------------------------------------------------------------------------------------

const fashionDir = DEFAULT_PATHS['fashion-mnist'];
const haveFashion = existsSync(join(fashionDir, 'train-images-idx3-ubyte.gz'));
if (!haveFashion) console.log(`data.test: skipping the real Fashion-MNIST checks (${fashionDir} not found; bash engine/setup.sh --data installs it)`);
let fashionTrain: ImageDataset | null = null;

(haveFashion ? t : t.skip)('Fashion-MNIST (Debian files): 60000/10000 images of 28x28x1, 10 balanced classes, known mean/std', () => {
  const tr = (fashionTrain = loadDataset({ kind: 'fashion-mnist', split: 'train' }));
  const te = loadDataset({ kind: 'fashion-mnist', split: 'test' });
  assert.equal([tr.n, tr.height, tr.width, tr.channels], [60000, 28, 28, 1]);
  assert.equal([te.n, te.height, te.width, te.channels], [10000, 28, 28, 1]);
  const counts = new Array(10).fill(0);
  for (const l of tr.labels!) counts[l]++;
  assert.equal(counts, new Array(10).fill(6000));
  const st = channelStats(tr);
  assert.ok(Math.abs(st.mean[0] - 0.2860) < 1e-3 && Math.abs(st.std[0] - 0.3530) < 1e-3, `mean ${st.mean} std ${st.std}`);
});

// ---- GPU gather ----------------------------------------------------------------------------------------------

function toyDataset(n: number, h: number, w: number, c: number, seed: number): ImageDataset {
  const r = rng(seed);
  return {
    name: `toy${n}x${h}x${w}x${c}`,
    images: randomBytes(n * h * w * c, seed),
    labels: Int32Array.from({ length: n }, () => Math.floor(r() * 4)),
    n, height: h, width: w, channels: c,
    classes: ['a', 'b', 'c', 'd'],
  };
}

async function checkGather(gds: GpuDataset, ds: ImageDataset, idx: number[]) {
  const per = ds.height * ds.width * ds.channels;
  const want = new Float32Array(idx.length * per);
  idx.forEach((k, b) => {
    for (let e = 0; e < per; e++) want[b * per + e] = ds.images[k * per + e] / 255;
  });
  const it = tensor(idx, [idx.length], { dtype: 'i32' });
  for (const indices of [Int32Array.from(idx), it]) {
    const x = gds.gather(indices);
    assert.equal(x.shape, [idx.length, ds.height, ds.width, ds.channels]);
    const got = await x.toArray();
    for (let i = 0; i < want.length; i++) if (got[i] !== Math.fround(want[i])) assert.unreachable(`gather element ${i}: got ${got[i]}, want ${want[i]}`);
    const l = gds.labelsOf(indices);
    assert.equal([...(await l.toArray())], idx.map((k) => ds.labels![k]));
    x.dispose();
    l.dispose();
  }
  it.dispose();
}

t('GpuDataset.gather and labelsOf equal the CPU data (one chunk, odd image size)', async () => {
  const before = liveTensors();
  const ds = toyDataset(37, 5, 3, 3, 11); // 45 bytes per image: images straddle u32 words
  const gds = new GpuDataset(ds);
  assert.is(gds.chunkCount, 1);
  await checkGather(gds, ds, [0, 36, 5, 5, 17, 1, 2]);
  gds.dispose();
  await sync();
  assert.is(liveTensors(), before, 'no buffers leaked');
});

t('GpuDataset splits data over several buffers and gathers across them in one dispatch', async () => {
  const ds = toyDataset(13, 3, 3, 1, 12); // 9 bytes per image
  const gds = new GpuDataset(ds, { maxChunkBytes: 40 }); // 4 images per chunk -> 4 chunks
  assert.equal([gds.imagesPerChunk, gds.chunkCount], [4, 4]);
  await checkGather(gds, ds, [12, 0, 3, 4, 7, 8, 11, 9, 2]);
  gds.dispose();
  const maxBuffers = gpu().device.limits.maxStorageBuffersPerShaderStage;
  const many = toyDataset(maxBuffers, 3, 3, 1, 14); // one image per chunk: 2 buffers too many with indices and output
  throwsWith(() => new GpuDataset(many, { maxChunkBytes: 12 }), `needs ${maxBuffers} buffers`, 'maxStorageBuffersPerShaderStage');
  throwsWith(() => new GpuDataset(ds, { maxChunkBytes: 8 }), 'one image', '9 bytes', 'exceeds');
});

t('GpuDataset of CIFAR-10 train size (150 MB) is split at the 128 MiB binding limit', async () => {
  const n = 50000;
  const images = new Uint8Array(n * 3072);
  for (let i = 0; i < n; i++) images.fill(i % 251, i * 3072, i * 3072 + 3072);
  images[43690 * 3072 + 7] = 77; // an image just past the first chunk
  const ds: ImageDataset = { name: 'cifar-size', images, labels: null, n, height: 32, width: 32, channels: 3, classes: [] };
  const gds = new GpuDataset(ds, { maxChunkBytes: 128 * 2 ** 20 });
  assert.equal([gds.imagesPerChunk, gds.chunkCount], [43690, 2]);
  const x = gds.gather(Int32Array.from([43689, 43690, 49999, 0]));
  const got = await x.toArray();
  assert.equal([got[0], got[3072 + 7], got[3072 + 8], got[2 * 3072 + 100], got[3 * 3072]].map((v) => Math.round(v * 255)), [43689 % 251, 77, 43690 % 251, 49999 % 251, 0]);
  x.dispose();
  throwsWith(() => gds.labelsOf(Int32Array.from([0])), "'cifar-size' has no labels");
  gds.dispose();
});

t('GpuDataset errors: bad indices, wrong index dtype, use after dispose', () => {
  const ds = toyDataset(4, 2, 2, 1, 13);
  const gds = new GpuDataset(ds);
  throwsWith(() => gds.gather(Int32Array.from([0, 4])), 'gather', 'index 4 at position 1 is out of range 0..3');
  throwsWith(() => gds.labelsOf(Int32Array.from([-1])), 'labelsOf', 'index -1');
  throwsWith(() => gds.gather(new Int32Array(0)), 'empty index list');
  const f = tensor([0, 1], [2]);
  throwsWith(() => gds.gather(f), 'gather', 'i32 tensor of rank 1', 'f32 [2]');
  f.dispose();
  gds.dispose();
  throwsWith(() => gds.gather(Int32Array.from([0])), 'was disposed');
  throwsWith(() => new GpuDataset({ ...ds, images: new Uint8Array(3) }), 'has 3 pixel bytes');
});

(haveFashion ? t : t.skip)('Fashion-MNIST on the GPU: gathered batches equal the files', async () => {
  const ds = fashionTrain ?? loadDataset({ kind: 'fashion-mnist', split: 'train' });
  const gds = new GpuDataset(ds);
  assert.is(gds.chunkCount, 1);
  await checkGather(gds, ds, [0, 59999, 12345, 7, 30000]);
  gds.dispose();
});

t.after(() => rmSync(root, { recursive: true, force: true }));

t.run();
