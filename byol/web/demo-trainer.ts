// A small live demo of the engine's training path for the page, until BYOL is plugged in: an MLP learns a
// 24x24 grayscale picture from pixel coordinates (matmul, broadcast add, relu, mean-squared error, backward),
// and SGD with momentum updates the weights with ew() kernels. Runs the same in Node and in the browser.

import { tensor, zeros, matmul, add, sub, mul, mean, relu, backward, tidy, keep, type Tensor } from '../../engine/index.ts';
import { ew } from '../../kernels/elementwise.ts';
import { encodeSafetensors } from './safetensors.ts';
import type { Trainer, TrainReporter, TrainOptions, TrainResult } from './trainer.ts';

export const DEMO_SIZE = 24;
const HIDDEN = 48;
const FREQS = 4; // Fourier features of the coordinates: a plain MLP on (x, y) learns sharp edges very slowly
const IN = 2 + 4 * FREQS;

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The picture to learn: a ring and a bar, values in [0, 1]. */
export function demoTarget(size = DEMO_SIZE): Float32Array {
  const img = new Float32Array(size * size);
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) {
      const x = (2 * c + 1) / size - 1;
      const y = (2 * r + 1) / size - 1;
      const ring = Math.exp(-(((Math.hypot(x + 0.15, y + 0.1) - 0.5) / 0.12) ** 2));
      const bar = Math.abs(x - 0.55) < 0.12 && Math.abs(y) < 0.75 ? 0.8 : 0;
      img[r * size + c] = Math.min(1, ring + bar);
    }
  }
  return img;
}

/** Inputs [size², IN]: x, y and sin/cos of x, y at FREQS octaves. */
export function demoInputs(size = DEMO_SIZE): Float32Array {
  const out = new Float32Array(size * size * IN);
  for (let p = 0; p < size * size; p++) {
    const x = (2 * (p % size) + 1) / size - 1;
    const y = (2 * Math.floor(p / size) + 1) / size - 1;
    const row = out.subarray(p * IN, (p + 1) * IN);
    row[0] = x;
    row[1] = y;
    for (let f = 0; f < FREQS; f++) {
      const w = Math.PI * 2 ** f;
      row.set([Math.sin(w * x), Math.cos(w * x), Math.sin(w * y), Math.cos(w * y)], 2 + 4 * f);
    }
  }
  return out;
}

interface Param {
  name: string;
  value: Tensor;
  velocity: Tensor;
}

function initParams(seed: number): Param[] {
  const r = rng(seed);
  const layer = (name: string, fanIn: number, fanOut: number): Param[] => {
    const bound = Math.sqrt(6 / fanIn); // He uniform, for relu
    const w = Float32Array.from({ length: fanIn * fanOut }, () => (2 * r() - 1) * bound);
    return [
      { name: `${name}.weight`, value: tensor(w, [fanIn, fanOut], { requiresGrad: true }), velocity: zeros([fanIn, fanOut]) },
      { name: `${name}.bias`, value: tensor(new Float32Array(fanOut), [fanOut], { requiresGrad: true }), velocity: zeros([fanOut]) },
    ];
  };
  return [...layer('fc1', IN, HIDDEN), ...layer('fc2', HIDDEN, HIDDEN), ...layer('fc3', HIDDEN, 1)];
}

function forward(p: Param[], x: Tensor): Tensor {
  const h1 = relu(add(matmul(x, p[0].value), p[1].value));
  const h2 = relu(add(matmul(h1, p[2].value), p[3].value));
  return add(matmul(h2, p[4].value), p[5].value);
}

/** v = momentum·v + g; w = w - lr·v, each one ew() dispatch; swaps in the new tensors. */
function sgdStep(params: Param[], lr: number, momentum: number): void {
  for (const p of params) {
    const g = p.value.grad;
    if (!g) throw new Error(`demo trainer: parameter ${p.name} got no gradient`);
    const v = keep(ew('sgd.velocity', 's0 * a + b', [p.velocity, g], p.velocity.shape, [momentum]));
    const w = keep(ew('sgd.update', 'a - s0 * b', [p.value, v], p.value.shape, [lr]));
    w.requiresGrad = true;
    p.velocity.dispose();
    p.value.dispose(); // disposes its .grad too
    p.velocity = v;
    p.value = w;
  }
}

export const demoTrainer: Trainer = {
  name: 'Demo: an MLP learns a picture',
  description:
    `A ${IN}→${HIDDEN}→${HIDDEN}→1 ReLU MLP maps pixel coordinates (with Fourier features) to the ${DEMO_SIZE}×${DEMO_SIZE} ` +
    'picture on the left, trained with mean-squared error, the engine\'s backward and SGD with momentum. ' +
    'A stand-in for BYOL, which reports through the same panel.',
  unit: 'pixels',
  defaultSteps: 300,
  async train(reporter: TrainReporter, opts: TrainOptions): Promise<TrainResult> {
    const target = demoTarget();
    const n = DEMO_SIZE * DEMO_SIZE;
    const x = tensor(demoInputs(), [n, IN]);
    const y = tensor(target, [n, 1]);
    const params = initParams(7);
    const lr = 0.05;
    const momentum = 0.9;
    try {
      for (let step = 1; step <= opts.steps && !reporter.stopped; step++) {
        const showPreview = step === 1 || step % 10 === 0 || step === opts.steps;
        const { loss, pred } = tidy(() => {
          const out = forward(params, x);
          const d = sub(out, y);
          const loss = mean(mul(d, d));
          backward(loss);
          sgdStep(params, lr, momentum);
          return { loss, pred: showPreview ? out : null };
        });
        const value = await loss.item();
        loss.dispose();
        reporter.step(value, n);
        if (pred) {
          const img = await pred.toArray();
          pred.dispose();
          const both = new Float32Array(2 * n);
          both.set(target);
          both.set(img, n);
          reporter.preview({ data: both, n: 2, h: DEMO_SIZE, w: DEMO_SIZE, c: 1 }, {
            labels: ['target', `step ${step}`], cols: 2, range: [0, 1], caption: 'The picture and what the MLP draws now',
          });
          reporter.status(`step ${step} of ${opts.steps}, lr ${lr}, momentum ${momentum}`);
        }
      }
    } catch (e) {
      for (const p of params) p.value.dispose(), p.velocity.dispose();
      throw e;
    } finally {
      x.dispose();
      y.dispose();
    }
    return {
      async checkpoint() {
        const tensors = [];
        for (const p of params) tensors.push({ name: p.name, shape: p.value.shape, data: (await p.value.toArray()) as Float32Array });
        const bytes = encodeSafetensors(tensors, { model: 'byol-webgpu demo MLP', layout: 'weight [in, out] (transpose for torch.nn.Linear)' });
        return { bytes, filename: 'demo-mlp.safetensors' };
      },
      dispose() {
        for (const p of params) {
          p.value.dispose();
          p.velocity.dispose();
        }
      },
    };
  },
};
