// The training progress bar: its images/s and ETA leave out the first step's pipeline compilation, for fresh and
// resumed runs; plain lines every 5% off a terminal, redraws at most every 200 ms on one.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Progress, fmtTime, type ProgressIO } from '../byol/progress.ts';

const t = suite('progress');

function fakeIO(tty = false): ProgressIO & { lines: string[]; at: number } {
  const io = { lines: [] as string[], at: 0, tty, now: () => io.at, write: (s: string) => void io.lines.push(s) };
  return io;
}

/** Steps from..to, the first taking firstMs (compilation), each later one stepMs. */
function run(p: Progress, io: ReturnType<typeof fakeIO>, from: number, to: number, firstMs: number, stepMs: number): void {
  for (let s = from; s <= to; s++) {
    io.at += s === from ? firstMs : stepMs;
    p.update(s, 0.5);
  }
}

t('the rate and ETA leave out the first step, which compiles', () => {
  const io = fakeIO();
  const p = new Progress(100, 0, 10, true, io);
  run(p, io, 1, 60, 30000, 100); // 30 s to compile, then 10 steps of 10 images a second
  assert.ok(io.lines.length >= 10, io.lines.join(''));
  for (const line of io.lines.slice(1)) {
    const step = Number(/step (\d+)\//.exec(line)![1]);
    // e.g. 50 steps left at 0.1 s: 0:05, where a rate since the start would say 14 img/s and 0:35
    assert.ok(line.endsWith(` 100 img/s ETA ${fmtTime((100 - step) * 0.1)}\n`), line);
  }
});

t('a resumed run measures from its own first step, not from step 0', () => {
  const io = fakeIO();
  const p = new Progress(1000, 500, 64, true, io);
  run(p, io, 501, 1000, 20000, 500);
  const last = io.lines[io.lines.length - 1];
  assert.match(last, /step 1000\/1000 loss 0\.5000 128 img\/s ETA 0:00\n$/);
  assert.match(io.lines[0], /step 501\/1000 .* 3 img\/s ETA 2:4[0-9]:[0-9]{2}\n$/); // the first line: since the start, compilation included
});

t('off a terminal a line every 5%; on one, redraws in place at most every 200 ms', () => {
  const plain = fakeIO();
  run(new Progress(200, 0, 1, true, plain), plain, 1, 200, 10, 10);
  assert.ok(plain.lines.length <= 21 && plain.lines.length >= 19, `${plain.lines.length} lines`);
  assert.ok(plain.lines.every((l) => l.endsWith('\n') && !l.startsWith('\r')));
  const term = fakeIO(true);
  const p = new Progress(200, 0, 1, true, term);
  run(p, term, 1, 200, 10, 10); // 2 s in all: about 10 redraws, and the last step always
  p.finish();
  assert.ok(term.lines.length >= 9 && term.lines.length <= 13, `${term.lines.length} writes`);
  assert.ok(term.lines.slice(0, -1).every((l) => l.startsWith('\r') && l.endsWith('\x1b[K')));
  assert.match(term.lines[term.lines.length - 2], /step 200\/200/);
  assert.is(term.lines[term.lines.length - 1], '\n');
  const quiet = fakeIO();
  run(new Progress(10, 0, 1, false, quiet), quiet, 1, 10, 10, 10);
  assert.equal(quiet.lines, []);
});

t('fmtTime', () => {
  assert.is(fmtTime(NaN), '--:--');
  assert.is(fmtTime(65), '1:05');
  assert.is(fmtTime(3600 + 62), '1:01:02');
});

t.run();
