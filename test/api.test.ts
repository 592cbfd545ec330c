// The API a PyTorch or tfjs user reaches for: tensor methods, loss.backward(), model.parameters() into an
// optimizer, opt.zeroGrad(), batches() and gather(), dtype inference, typed toArray(), print/toString/inspect,
// and the errors of the autograd tape (a freed graph, a tape that grows without backward).

import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  tensor, variable, tidy, liveTensors, sync, backward, clearTape, tapeLength, setTapeWarning, noGrad, sum, mul,
  Sequential, Linear, ReLU, Adam, SGD, materialize, batches, gather, Tensor, type TypedArray,
} from '../nn/index.ts';
import { assertClose, rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('api');

// ---- the PyTorch-style loop of the README ("Coming from PyTorch") ----------------------------------------

/** y = x0·x1 + 0.5·sin(2·x0) on [-1, 1]²: not linear, so the hidden layer has to learn. */
function regressionData(n: number): { x: Tensor; y: Tensor } {
  const r = rng(7);
  const xs = new Float32Array(2 * n);
  const ys = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = 2 * r() - 1;
    const b = 2 * r() - 1;
    xs.set([a, b], 2 * i);
    ys[i] = a * b + 0.5 * Math.sin(2 * a);
  }
  return { x: tensor(xs, [n, 2]), y: tensor(ys, [n, 1]) };
}

// The loop below appears verbatim in README.md; the test after it checks that it still does.
const LOOP = `
const model = materialize(new Sequential(new Linear(2, 32), new ReLU(), new Linear(32, 1)), { seed: 0 });
const opt = new Adam(model.parameters(), { lr: 0.01 });
const loader = batches({ x, y }, { batchSize: 32, shuffle: true, seed: 0 });
for (let epoch = 0; epoch < 40; epoch++) {
  for (const { x: xb, y: yb } of loader) {
    opt.zeroGrad();
    const loss = tidy(() => model.forward(xb).sub(yb).pow(2).mean());
    loss.backward();
    opt.step();
    losses.push(loss);
  }
}`;

t('an MLP trained PyTorch-style: model.parameters(), methods, loss.backward(), opt.step(), opt.zeroGrad()', async () => {
  const live0 = liveTensors();
  const { x, y } = regressionData(256);
  const losses: Tensor[] = [];
  const model = materialize(new Sequential(new Linear(2, 32), new ReLU(), new Linear(32, 1)), { seed: 0 });
  const opt = new Adam(model.parameters(), { lr: 0.01 });
  const loader = batches({ x, y }, { batchSize: 32, shuffle: true, seed: 0 });
  for (let epoch = 0; epoch < 40; epoch++) {
    for (const { x: xb, y: yb } of loader) {
      opt.zeroGrad();
      const loss = tidy(() => model.forward(xb).sub(yb).pow(2).mean());
      loss.backward();
      opt.step();
      losses.push(loss);
    }
  }
  const values: number[] = [];
  for (const l of losses) values.push(await l.item()), l.dispose();
  const first = values.slice(0, 8).reduce((a, b) => a + b) / 8; // the first epoch
  const last = values.slice(-8).reduce((a, b) => a + b) / 8; // the last
  assert.ok(Number.isFinite(last), `final loss ${last}`);
  assert.ok(last < first / 10, `loss fell from ${first.toFixed(4)} to ${last.toFixed(4)}: expected at least 10x`);
  assert.is(tapeLength(), 0);
  opt.dispose();
  model.dispose();
  x.dispose();
  y.dispose();
  await sync();
  assert.is(liveTensors(), live0, 'the loop leaks nothing');
});

t('the README shows the same loop', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  for (const line of LOOP.trim().split('\n')) {
    if (line.includes('losses.push')) continue; // the test keeps the losses; the README prints them
    assert.ok(readme.includes(line), `README.md lacks the line: ${line}`);
  }
  // and the test above runs it: each line is in this file twice, in LOOP and in the test
  const body = readFileSync(new URL(import.meta.url), 'utf8');
  for (const line of LOOP.trim().split('\n')) assert.ok(body.split(line.trim()).length - 1 >= 2, `the test does not run: ${line}`);
});

// ---- methods ---------------------------------------------------------------------------------------------

t('methods mirror the free functions; numbers broadcast as scalars', async () => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = tensor([10, 20, 30]);
  const w = tensor([1, 0, 0, 1, 1, 1], [3, 2]);
  const got = tidy(() => ({
    add: a.add(b), sub: a.sub(b), mul: a.mul(b), div: a.div(b),
    addN: a.add(1), subN: a.sub(1), mulN: a.mul(2), divN: a.div(4), pow: a.pow(2), neg: a.neg(),
    mm: a.matmul(w), relu: a.sub(3).relu(), exp: a.exp(), log: a.log(), sqrt: a.sqrt(),
    sum: a.sum(), sum1: a.sum(1), mean0: a.mean(0, true), max: a.max(), reshape: a.reshape(3, 2), reshape2: a.reshape([-1]),
    flat: a.flatten(), softmax: a.softmax(), argmax: a.argmax(),
  }));
  const v = async (k: keyof typeof got) => Array.from(await got[k].toArray());
  assert.equal(await v('add'), [11, 22, 33, 14, 25, 36]);
  assert.equal(await v('sub'), [-9, -18, -27, -6, -15, -24]);
  assert.equal(await v('mul'), [10, 40, 90, 40, 100, 180]);
  assertClose(await got.div.toArray(), [0.1, 0.1, 0.1, 0.4, 0.25, 0.2], 1e-6, 'div');
  assert.equal(await v('addN'), [2, 3, 4, 5, 6, 7]);
  assert.equal(await v('subN'), [0, 1, 2, 3, 4, 5]);
  assert.equal(await v('mulN'), [2, 4, 6, 8, 10, 12]);
  assert.equal(await v('divN'), [0.25, 0.5, 0.75, 1, 1.25, 1.5]);
  assert.equal(await v('pow'), [1, 4, 9, 16, 25, 36]);
  assert.equal(await v('neg'), [-1, -2, -3, -4, -5, -6]);
  assert.equal(await v('mm'), [4, 5, 10, 11]);
  assert.equal(await v('relu'), [0, 0, 0, 1, 2, 3]);
  assertClose(await got.exp.toArray(), [1, 2, 3, 4, 5, 6].map(Math.exp), 1e-5, 'exp');
  assertClose(await got.log.toArray(), [1, 2, 3, 4, 5, 6].map(Math.log), 1e-5, 'log');
  assertClose(await got.sqrt.toArray(), [1, 2, 3, 4, 5, 6].map(Math.sqrt), 1e-6, 'sqrt');
  assert.equal([await got.sum.item(), await got.max.item()], [21, 6]);
  assert.equal(await v('sum1'), [6, 15]);
  assert.equal([got.mean0.shape, await v('mean0')], [[1, 3], [2.5, 3.5, 4.5]]);
  assert.equal([got.reshape.shape, got.reshape2.shape, got.flat.shape], [[3, 2], [6], [6]]);
  assert.equal(got.argmax.dtype, 'i32');
  assert.equal(await v('argmax'), [2, 2]);
  assertClose(await got.softmax.toArray(), [0.0900306, 0.244728, 0.665241, 0.0900306, 0.244728, 0.665241], 1e-5, 'softmax');
  for (const x of [a, b, w, ...Object.values(got)]) x.dispose();
});

t('method errors name the op and what was expected', () => {
  const a = tensor([1, 2, 3]);
  const b = tensor([1, 2]);
  throwsWith(() => a.add([1, 2, 3] as any), 'add', 'an array', 'tensor()');
  throwsWith(() => a.mul('2' as any), 'mul', 'string');
  throwsWith(() => a.pow(b as any), 'pow', 'exponent must be a number');
  throwsWith(() => a.reshape(2, 2), 'reshape', '[3]', '[2, 2]');
  throwsWith(() => a.add(b), 'add', '[3]', '[2]', 'broadcast');
  a.dispose();
  b.dispose();
});

t('methods record gradients, and loss.backward() is backward(loss)', async () => {
  const x = variable([1, -2, 3]);
  const w = variable([0.5, 0.5, 0.5], [3, 1]);
  const loss = tidy(() => x.reshape(1, 3).matmul(w).mul(2).add(1).sum());
  loss.backward();
  assertClose(await x.grad!.toArray(), [1, 1, 1], 1e-6, 'd/dx');
  assertClose(await w.grad!.toArray(), [2, -4, 6], 1e-6, 'd/dw');
  assert.is(tapeLength(), 0);
  for (const v of [loss, x, w]) v.dispose();
});

// ---- autograd errors -------------------------------------------------------------------------------------

t('a second backward through a freed graph says so (not "does not require grad")', () => {
  const x = variable([1, 2, 3]);
  const loss = tidy(() => sum(mul(x, x)));
  backward(loss);
  throwsWith(() => backward(loss), 'backward', 'already freed by an earlier backward()', 'run the forward pass again');
  throwsWith(() => loss.backward(), 'already freed by an earlier backward()');
  const l2 = tidy(() => x.mul(x).sum());
  clearTape();
  throwsWith(() => l2.backward(), 'freed by clearTape()');
  const c = noGrad(() => tidy(() => x.mul(2).sum()));
  throwsWith(() => c.backward(), 'does not require grad');
  for (const v of [x, loss, l2, c]) v.dispose();
});

t('one warning when the tape grows past its bound without a backward', () => {
  const prev = setTapeWarning(20);
  const warn = console.warn;
  const seen: string[] = [];
  console.warn = (m: string) => seen.push(String(m));
  const w = variable([1, 2]);
  try {
    // evaluation without noGrad: every forward records and nothing is differentiated
    for (let i = 0; i < 30; i++) tidy(() => void w.mul(2).add(1));
    assert.is(seen.length, 1, 'warned once');
    assert.match(seen[0], /autograd tape holds 20 ops without a backward\(\)/);
    assert.match(seen[0], /noGrad\(\)/);
    assert.match(seen[0], /clearTape\(\)/);
  } finally {
    console.warn = warn;
    clearTape();
    setTapeWarning(prev);
    w.dispose();
  }
  throwsWith(() => setTapeWarning(0), 'setTapeWarning', '>= 1');
});

// ---- dtype, toArray, printing ----------------------------------------------------------------------------

t('tensor() infers the dtype from typed arrays; toArray() is typed by dtype', async () => {
  const i = tensor(new Int32Array([1, -2, 3]));
  const u = tensor(Uint32Array.of(7, 4000000000));
  const f = tensor([1.5, 2.5]);
  const forced = tensor(new Int32Array([4, 5]), [2], { dtype: 'f32' });
  assert.equal([i.dtype, u.dtype, f.dtype, forced.dtype], ['i32', 'u32', 'f32', 'f32']);
  // compile-time: these annotations fail `tsc` if toArray() returns the union
  const ia: Int32Array = await i.toArray();
  const ua: Uint32Array = await u.toArray();
  const fa: Float32Array = await f.toArray();
  const any: TypedArray = await (f as Tensor).toArray();
  assert.equal([Array.from(ia), Array.from(ua), Array.from(fa), any.length], [[1, -2, 3], [7, 4000000000], [1.5, 2.5], 2]);
  assert.ok(ia instanceof Int32Array && ua instanceof Uint32Array && fa instanceof Float32Array);
  assert.equal(ia.reduce((s, v) => s + v, 0), 2); // methods callable without a cast
  assert.equal(Array.from(await forced.toArray()), [4, 5]);
  throwsWith(() => tensor(new Int32Array(2), [2], { requiresGrad: true }), 'only f32 tensors can require grad', 'Int32Array', "dtype: 'f32'");
  throwsWith(() => tensor([1], [1], { dtype: 'f16' as any }), "unknown dtype 'f16'");
  const v = variable(new Int32Array([1, 2])); // a variable is always f32
  assert.is(v.dtype, 'f32');
  for (const x of [i, u, f, forced, v]) x.dispose();
});

t('print(), toString() and util.inspect show dtype, shape and, once read, leading values', async () => {
  const x = tensor(Float32Array.from({ length: 20 }, (_, k) => k / 4), [4, 5]);
  const s0 = String(x);
  assert.match(s0, /^Tensor#\d+\(f32 \[4, 5\]\)$/);
  assert.is(inspect(x), s0, 'inspect shows toString(), not storage or _node');
  assert.not.match(inspect({ wrapped: x }), /storage|_node|GPUBuffer/);
  const log = console.log;
  const printed: string[] = [];
  console.log = (m: string) => printed.push(m);
  let text: string;
  try {
    text = await x.print();
  } finally {
    console.log = log;
  }
  assert.equal(printed, [text]);
  assert.match(text, /^tensor\(\[\[0, 0.25, 0.5, 0.75, 1\],\n {8}\[1.25, /);
  assert.match(text, /dtype=f32, shape=\[4, 5\]\)$/);
  assert.match(String(x), /^Tensor#\d+\(f32 \[4, 5\]\) last read \[0, 0.25, 0.5, 0.75, 1, 1.25, \.\.\.\]$/);
  const big = tensor(new Int32Array(100).map((_, k) => k));
  const bigText = await noPrint(() => big.print());
  assert.match(bigText, /^tensor\(\[0, 1, 2, \.\.\., 97, 98, 99\], dtype=i32, shape=\[100\]\)$/);
  const w = variable([1, 2]);
  assert.match(String(w), /f32 \[2\], requiresGrad/);
  x.dispose();
  assert.match(String(x), /disposed\)$/);
  big.dispose();
  w.dispose();
});

async function noPrint<T>(fn: () => Promise<T>): Promise<T> {
  const log = console.log;
  console.log = () => {};
  try {
    return await fn();
  } finally {
    console.log = log;
  }
}

// ---- modules and optimizers ------------------------------------------------------------------------------

t('parameters() / namedParameters() in PyTorch order; optimizers take model.parameters(); zeroGrad()', async () => {
  const model = materialize(new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 2, { bias: false })), { seed: 1 });
  assert.equal(model.namedParameters().map(([n, p]) => `${n} ${p.shape.join('x')}`), ['0.weight 3x4', '0.bias 4', '2.weight 4x2']);
  assert.is(model.parameters().length, 3);
  const opt = new SGD(model.parameters(), { lr: 0.1 });
  const before = await model.parameters()[2].toArray();
  const x = tensor([1, 2, 3, -1, 0, 1], [2, 3]);
  const loss = tidy(() => model.forward(x).sum());
  loss.backward();
  assert.ok(model.parameters().every((p) => p.grad), 'every parameter has a gradient');
  opt.zeroGrad();
  assert.ok(model.parameters().every((p) => !p.grad), 'zeroGrad() drops them');
  opt.step(); // nothing to apply: the weights stay
  assert.equal(Array.from(await model.parameters()[2].toArray()), Array.from(before));
  const l2 = tidy(() => model.forward(x).sum());
  l2.backward();
  opt.step();
  assert.ok(model.parameters().every((p) => !p.grad), 'step() consumes the gradients');
  assert.not.equal(Array.from(await model.parameters()[2].toArray()), Array.from(before));
  throwsWith(() => new SGD(model.parameters().slice(1), { lr: 0.1 }), 'SGD', '2 of the 3 parameters', 'all of model.parameters()');
  throwsWith(() => new Adam([x], { lr: 0.1 }), 'Adam', 'not a parameter of a materialized module');
  throwsWith(() => new Adam([], { lr: 0.1 }), 'Adam', 'empty parameter list');
  const other = materialize(new Linear(2, 2), { seed: 2 });
  throwsWith(() => new SGD([...model.parameters(), ...other.parameters()], { lr: 0.1 }), 'different models');
  for (const v of [x, loss, l2]) v.dispose();
  opt.dispose();
  model.dispose();
  other.dispose();
});

// ---- data ------------------------------------------------------------------------------------------------

t('batches() over GPU tensors: every row once per epoch, a new seeded order each epoch, nothing leaked', async () => {
  const live0 = liveTensors();
  const n = 10;
  const x = tensor(Float32Array.from({ length: 2 * n }, (_, k) => k), [n, 2]);
  const y = tensor(Int32Array.from({ length: n }, (_, k) => 100 + k));
  const loader = batches({ x, y }, { batchSize: 4, shuffle: true, seed: 3 });
  assert.is(loader.length, 3);
  const epochs: number[][] = [];
  for (let e = 0; e < 2; e++) {
    const rows: number[] = [];
    const sizes: number[] = [];
    for (const b of loader) {
      const yb: Int32Array = await b.y.toArray(); // the dtype survives: typed as i32
      const xb = await b.x.toArray();
      sizes.push(b.x.shape[0]);
      yb.forEach((v, i) => {
        rows.push(v - 100);
        assert.equal([xb[2 * i], xb[2 * i + 1]], [2 * (v - 100), 2 * (v - 100) + 1], 'x and y rows stay paired');
      });
    }
    assert.equal(sizes, [4, 4, 2]);
    assert.equal([...rows].sort((a, b) => a - b), [...Array(n).keys()], 'every row once');
    epochs.push(rows);
  }
  assert.not.equal(epochs[0], epochs[1], 'a new order each epoch');
  const again: number[] = [];
  for (const b of batches({ y }, { batchSize: 4, shuffle: true, seed: 3 })) again.push(...Array.from(await b.y.toArray(), (v) => v - 100));
  assert.equal(again, epochs[0], 'the same seed gives the same order');
  const ordered: number[] = [];
  for (const b of batches({ y }, { batchSize: 3, dropLast: true })) ordered.push(...(await b.y.toArray()));
  assert.equal(ordered, [100, 101, 102, 103, 104, 105, 106, 107, 108]);
  for (const b of loader) {
    void b;
    break; // an early break frees the batch and the permutation too
  }
  await sync();
  assert.is(liveTensors(), live0 + 2, 'only x and y remain');
  const y3 = tensor([1, 2, 3]);
  throwsWith(() => batches({ x, y: y3 }, { batchSize: 2 }), 'batches', "'y' has 3 rows", "'x' has 10");
  y3.dispose();
  throwsWith(() => batches({ x }, { batchSize: 0 }), 'batchSize must be an integer >= 1');
  throwsWith(() => batches({}, { batchSize: 2 }), 'expected an object of tensors');
  const v = variable([1, 2]);
  throwsWith(() => batches({ v }, { batchSize: 1 }), "'v' requires grad");
  for (const z of [x, y, v]) z.dispose();
  clearTape();
});

t('gather(): rows by index, from numbers or an i32 tensor', async () => {
  const x = tensor([0, 1, 10, 11, 20, 21], [3, 2]);
  const g = gather(x, [2, 0, 2]);
  assert.equal([g.shape, Array.from(await g.toArray())], [[3, 2], [20, 21, 0, 1, 20, 21]]);
  const idx = tensor(new Int32Array([1]));
  const h = gather(x, idx);
  assert.equal(Array.from(await h.toArray()), [10, 11]);
  throwsWith(() => gather(x, [0, 3]), 'gather', 'index 3 at position 1', '[3, 2]', '[0, 3)');
  throwsWith(() => gather(x, [1.5]), 'gather', 'index 1.5');
  for (const z of [x, g, idx, h]) z.dispose();
});

t.run();
