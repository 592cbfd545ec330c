// The training CLI's input checks: negative numbers get our own message, the data is validated before --out is
// created, a PNG folder without test/ trains with --no-eval (and says what to do without it), final.json names
// the data set, and PNG decoder errors are in our words.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { PNG } from 'pngjs';
import { train, TRAIN_DEFAULTS, type TrainOptions } from '../byol/train.ts';
import { parseTrainArgs } from '../byol/cli.ts';
import { loadDataset } from '../byol/data/dataset.ts';
import { loadImageFolder } from '../byol/data/folder.ts';
import { liveTensors, sync } from '../nn/index.ts';
import { rejectsWith, throwsWith } from './helpers/errors.ts';

const t = suite('cli input');
const root = mkdtempSync(join(tmpdir(), 'byol-cli-input-'));
t.after(() => rmSync(root, { recursive: true, force: true }));
let count = 0;
const fresh = (name: string) => join(root, `${name}${count++}`);
const quiet = () => {};

function pngBytes(size: number, seed: number): Buffer {
  const data = Buffer.alloc(size * size * 4);
  for (let i = 0; i < size * size; i++) {
    const v = (i * 37 + seed * 101) % 256;
    data.set([v, v, v, 255], 4 * i);
  }
  return PNG.sync.write({ width: size, height: size, data } as PNG);
}

/** A folder of `perClass` 8x8 grey PNGs in each of two class subfolders (no train/ or test/). */
function pngFolder(perClass: number, name = 'pngs'): string {
  const dir = fresh(name);
  for (const cls of ['a', 'b']) {
    mkdirSync(join(dir, cls), { recursive: true });
    for (let i = 0; i < perClass; i++) writeFileSync(join(dir, cls, `${i}.png`), pngBytes(8, i + (cls === 'b' ? 50 : 0)));
  }
  return dir;
}

function tiny(out: string, dataPath: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return {
    ...TRAIN_DEFAULTS, data: 'folder', dataPath, out,
    width: 4, batchSize: 8, projHidden: 16, projDim: 8, predHidden: 16, epochs: 1,
    maxSteps: 2, checkpointEvery: 2, logEvery: 1, evaluate: 'none', quiet: true, ...extra,
  };
}

t('negative numbers get our own message, not the parser\'s "ambiguous"', () => {
  throwsWith(() => parseTrainArgs(['--width', '-3']), "--width: expected an integer >= 1, got '-3'");
  throwsWith(() => parseTrainArgs(['--batch', '-64']), "--batch: expected an integer >= 2, got '-64'");
  throwsWith(() => parseTrainArgs(['--lr', '-0.5']), "--lr: expected a number >= 0, got '-0.5'");
  throwsWith(() => parseTrainArgs(['--seed', '-1', '--width', '8']), "--seed: expected an integer >= 0, got '-1'");
  throwsWith(() => parseTrainArgs(['--solarize', '-.2']), "--solarize: expected a number >= 0, got '-.2'");
  throwsWith(() => parseTrainArgs(['--head-channels', '-x']), "--head-channels: expected an integer >= 0, got '-x'");
  assert.not.throws(() => parseTrainArgs(['--width', '8', '--no-eval']));
  assert.is(parseTrainArgs(['--stem', 'small-s2']).stem, 'small-s2');
  throwsWith(() => parseTrainArgs(['--stem', 's2']), "--stem: expected one of small, small-s2, imagenet, got 's2'");
  // --preset: its values over the defaults, flags over the preset, the rest the defaults
  const long = parseTrainArgs(['--preset', 'long']);
  assert.is(long.headChannels, 512);
  assert.is(long.epochs, 24);
  assert.is(long.width, parseTrainArgs([]).width);
  assert.equal(parseTrainArgs(['--epochs', '2', '--preset', 'long']).epochs, 2);
  assert.equal(parseTrainArgs(['--preset', 'default']), parseTrainArgs([]));
  throwsWith(() => parseTrainArgs(['--preset', 'longer']), "--preset: expected one of default, long, got 'longer'");
  // a flag after a string option is still a flag, not its value
  assert.throws(() => parseTrainArgs(['--width', '--no-eval']), (e: Error) => !/ambiguous/.test(e.message) || /--width/.test(e.message));
});

t('fractional epochs: parsed as a number > 0; the run takes round(steps per epoch x epochs) steps', async () => {
  assert.is(parseTrainArgs(['--epochs', '1.5']).epochs, 1.5);
  throwsWith(() => parseTrainArgs(['--epochs', '0']), "--epochs: expected a number > 0, got '0'");
  throwsWith(() => parseTrainArgs(['--epochs', '-1']), "--epochs: expected a number > 0, got '-1'");
  throwsWith(() => parseTrainArgs(['--epochs', 'two']), "--epochs: expected a number > 0, got 'two'");
  await rejectsWith(train(tiny(fresh('out'), pngFolder(8, 'zero'), { epochs: 0 }), quiet), 'epochs must be a number > 0, got 0');
  await sync();
  const live0 = liveTensors();
  const out = fresh('out');
  // 16 images at batch 8: 2 steps per epoch, so 1.5 epochs is 3 steps (the third from epoch 2's shuffled order)
  const report = await train(tiny(out, pngFolder(8, 'frac'), { epochs: 1.5, maxSteps: undefined, checkpointEvery: 100 }), quiet);
  assert.is(report.steps, 3);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.is(config.totalSteps, 3);
  assert.is(config.epochs, 1.5);
  await sync();
  assert.is(liveTensors(), live0);
});

t('data is validated before --out is created: a missing path, a corrupt PNG, fewer images than one batch', async () => {
  await sync();
  const live0 = liveTensors();
  const missingOut = fresh('out');
  await rejectsWith(train(tiny(missingOut, join(root, 'no-such-folder')), quiet), 'no-such-folder', 'not found');
  assert.not.ok(existsSync(missingOut), 'no --out after a missing data path');

  const corrupt = pngFolder(8, 'corrupt');
  const png = readFileSync(join(corrupt, 'a', '0.png'));
  writeFileSync(join(corrupt, 'a', '3.png'), png.subarray(0, png.length - 20)); // cut off inside the image data
  const corruptOut = fresh('out');
  await rejectsWith(train(tiny(corruptOut, corrupt), quiet), '3.png', 'unreadable PNG', 'truncated');
  assert.not.ok(existsSync(corruptOut), 'no --out after a corrupt PNG');

  const few = pngFolder(2, 'few');
  const fewOut = fresh('out');
  await rejectsWith(train(tiny(fewOut, few), quiet), '4 images, fewer than one batch of 8', '--batch');
  assert.not.ok(existsSync(fewOut), 'no --out after too few images');
  await sync();
  assert.is(liveTensors(), live0);
});

t('a PNG folder without test/: trains with --no-eval; without it, a clear error and no --out', async () => {
  await sync();
  const live0 = liveTensors();
  const dir = pngFolder(8, 'mypets');
  const errOut = fresh('out');
  await rejectsWith(train(tiny(errOut, dir, { evaluate: 'full' }), quiet), dir, 'has no test/ subfolder', '--no-eval', 'train/ and test/');
  assert.not.ok(existsSync(errOut));

  const out = fresh('out');
  const opts = { ...parseTrainArgs(['--data', 'folder', '--data-path', dir, '--no-eval', '--out', out]), ...tiny(out, dir) };
  assert.is(opts.evaluate, 'none');
  const report = await train(opts, quiet);
  assert.is(report.steps, 2);
  const final = JSON.parse(readFileSync(join(out, 'final.json'), 'utf8'));
  assert.is(final.data, basename(dir), 'final.json names the folder, not "train"');
  assert.is(final.data_kind, 'folder');
  assert.is(final.data_path, dir);
  await sync();
  assert.is(liveTensors(), live0);
});

t('a folder with train/ and test/ is named after the folder, with the split', () => {
  const dir = fresh('flowers');
  for (const split of ['train', 'test']) {
    mkdirSync(join(dir, split, 'x'), { recursive: true });
    writeFileSync(join(dir, split, 'x', '0.png'), pngBytes(4, 1));
  }
  assert.is(loadDataset({ kind: 'folder', path: dir, split: 'train' }).name, `${basename(dir)}-train`);
  assert.is(loadDataset({ kind: 'folder', path: dir, split: 'test' }).name, `${basename(dir)}-test`);
  assert.is(loadDataset({ kind: 'folder', path: join(dir, 'train'), split: 'train' }).name, 'train', 'a flat folder keeps its own name');
});

t('PNG decoder errors are in our words (no pngjs plumbing, no "waitng")', () => {
  const dir = fresh('decode');
  mkdirSync(dir);
  const good = pngBytes(8, 3);
  writeFileSync(join(dir, 'ok.png'), good);
  const idat = good.indexOf('IDAT');
  const idatLength = good.readUInt32BE(idat - 4);
  const crc = Buffer.from(good);
  crc[idat + 4 + idatLength] ^= 0xff;
  const cases: [string, Buffer, string][] = [
    ['truncated', good.subarray(0, good.length - 20), 'truncated: the file ends before its image data does'],
    ['header only', good.subarray(0, 40), 'truncated'],
    ['damaged image data', Buffer.from(good).fill(7, idat + 6, idat + 4 + idatLength), 'corrupt: its image data or a checksum is damaged'],
    ['bad checksum', crc, 'corrupt'],
  ];
  for (const [what, bytes, expected] of cases) {
    writeFileSync(join(dir, 'bad.png'), bytes);
    try {
      loadImageFolder(dir);
      assert.unreachable(`${what}: expected an error`);
    } catch (e) {
      const msg = (e as Error).message;
      assert.ok(msg.includes('bad.png') && msg.includes('unreadable PNG') && msg.includes(expected), `${what}: ${msg}`);
      assert.not.match(msg, /waitng|read requests|unrecognised content|stream/, `${what}: pngjs's words leaked: ${msg}`);
    }
  }
});

t.run();
