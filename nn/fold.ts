// Inference-only forward of a model in eval mode with every BatchNorm folded into the Conv2d or Linear that
// feeds it: with the running statistics fixed, BN is a per-channel affine map, so
//   bn(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)
// (the output channel is the last axis of both HWIO conv weights and [in, out] Linear weights). A folded conv
// writes the normalized activation directly, with the BN's residual addition and ReLU in its epilogue, so BN's
// dispatches and every read and write of the activation between the conv and the next layer disappear (a folded
// Linear's BN keeps its ReLU and addition as ops).
//
// Which layer feeds which BN is found by tracing, not by knowing the architecture: one eval-mode forward on a
// sample runs with every module's forward wrapped, and a BN whose input is the very tensor a Conv2d or Linear
// returned (each called once in the forward, the conv's output read by no other module) is folded into it. An
// op outside any module that also reads the conv's output (which a module-level trace cannot see) would now get
// a placeholder, so the folded forward is checked against the traced one on the same sample before it is handed
// out. The model's own code (ResNet blocks, Sequential) runs unchanged: during a folded forward the
// folded modules' forward methods are replaced on the instances, and restored afterwards.

import { Tensor, tensor, empty, keep, tidy, fmtShape } from '../engine/tensor.ts';
import { noGrad } from '../engine/tape.ts';
import { add, addRelu, relu } from '../kernels/elementwise.ts';
import { full } from '../engine/ew.ts';
import { matmul } from '../kernels/matmul.ts';
import { conv2d, convOutSize } from '../kernels/conv2d.ts';
import { Module, Linear } from './module.ts';
import { Conv2d, BatchNorm } from './layers.ts';

export interface FoldOptions {
  /** Largest |folded - unfolded| on the sample, relative to max(1, max |unfolded|), that is accepted (default 1e-3). */
  tolerance?: number;
}

export interface FoldedNetwork {
  /** The eval-mode forward with the folded layers: no tape, nothing saved for a backward; only the output outlives it. */
  forward(x: Tensor): Tensor;
  /** The folded pairs, by dotted module name ('' for the root). */
  readonly folded: { layer: string; bn: string }[];
  /** BatchNorms that could not be folded (they still run, with their running statistics). */
  readonly unfolded: string[];
  /** Largest |folded - unfolded| on the sample, relative as in FoldOptions.tolerance. */
  readonly sampleError: number;
  /** Frees the folded weights (the model is untouched). */
  dispose(): void;
}

type Forward = (x: Tensor, residual?: Tensor) => Tensor;

/** Replaces `forward` on each instance for the duration of fn, then restores what the instance had. */
function withForwards<T>(overrides: Map<Module, Forward>, fn: () => T): T {
  const saved: [Module, PropertyDescriptor | undefined][] = [];
  for (const [m, f] of overrides) {
    saved.push([m, Object.getOwnPropertyDescriptor(m, 'forward')]);
    Object.defineProperty(m, 'forward', { value: f, configurable: true, writable: true });
  }
  try {
    return fn();
  } finally {
    for (const [m, d] of saved) {
      if (d) Object.defineProperty(m, 'forward', d);
      else delete (m as { forward?: Forward }).forward;
    }
  }
}

async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from((await t.toArray()) as Float32Array);
}

/**
 * Folds every BatchNorm of `model` (in eval mode, materialized) that directly follows a Conv2d or Linear into it,
 * tracing one forward on `sample` to find the pairs, and returns an inference-only forward that matches the
 * eval-mode forward to float32 rounding (checked on the sample; throws if it does not). The folded weights are
 * computed in float64 from the current parameters and running statistics: fold again after they change.
 */
export async function foldBatchNorm(model: Module, sample: Tensor, opts: FoldOptions = {}): Promise<FoldedNetwork> {
  const what = 'foldBatchNorm';
  const tolerance = opts.tolerance ?? 1e-3;
  const modules = model.namedModules();
  const training = modules.filter(([, m]) => m.training).map(([n]) => `'${n}'`);
  if (training.length) throw new Error(`${what}: the model must be in eval mode (call model.eval()); in training mode: ${training.slice(0, 5).join(', ')}`);
  sample.assertLive(what);
  const names = new Map(modules.map(([n, m]) => [m, n]));

  // the trace: every module call with its input and output tensors (compared by identity only)
  const calls: { m: Module; x: Tensor; y: Tensor; residual?: Tensor }[] = [];
  const tracers = new Map<Module, Forward>();
  for (const [, m] of modules) {
    const f = (m.forward as Forward).bind(m);
    tracers.set(m, (x, residual) => {
      const y = residual ? f(x, residual) : f(x);
      calls.push({ m, x, y, residual });
      return y;
    });
  }
  const reference = noGrad(() => tidy(() => withForwards(tracers, () => model.forward(sample))));
  if (!(reference instanceof Tensor)) throw new Error(`${what}: the model's forward returned ${String(reference)}, expected a Tensor`);

  const count = new Map<Module, number>();
  for (const c of calls) count.set(c.m, (count.get(c.m) ?? 0) + 1);
  const pairs: { layer: Conv2d | Linear; bn: BatchNorm }[] = [];
  const unfolded: string[] = [];
  for (const c of calls) {
    if (!(c.m instanceof BatchNorm)) continue;
    // the innermost module that returned the BN's input (its parents return the same tensor later in the trace)
    const producer = calls.find((p) => p.y === c.x);
    const ok = producer && (producer.m instanceof Conv2d || producer.m instanceof Linear) &&
      count.get(producer.m) === 1 && count.get(c.m) === 1 &&
      !calls.some((o) => (o.x === c.x && o.m !== c.m && !o.m.namedModules().some(([, d]) => d === c.m)) || o.residual === c.x);
    if (ok) pairs.push({ layer: producer!.m as Conv2d | Linear, bn: c.m });
    else unfolded.push(names.get(c.m)!);
  }

  const owned: Tensor[] = [];
  const overrides = new Map<Module, Forward>();
  // A folded conv runs where its BN is called, with the BN's residual addition and ReLU in the conv's epilogue
  // (ConvEpilogue), so neither costs a pass over the activation. The conv's forward returns a placeholder of its
  // output's shape, which only its BN reads (the trace checked that no other module does; the sample check below
  // catches an op outside the modules that would read it). Placeholder -> the conv's input.
  const deferred = new Map<Tensor, Tensor>();
  // during the sample check the placeholders hold NaN, so an op that reads one shows in the check's output whatever
  // the pool's buffer last held (with the pool's reuse order that can be the very values the trace computed)
  let poison = false;
  try {
    for (const { layer, bn } of pairs) {
      const [w, gamma, beta, mu, v] = await Promise.all([layer.weight.value, bn.weight.value, bn.bias.value, bn.runningMean.value, bn.runningVar.value].map(read));
      const b = layer.bias ? await read(layer.bias.value) : null;
      const C = bn.numFeatures;
      const cout = layer.weight.shape[layer.weight.shape.length - 1];
      if (cout !== C) throw new Error(`${what}: '${names.get(layer)}' has ${cout} outputs but '${names.get(bn)}' normalizes ${C} channels`);
      const s = gamma.map((g, c) => g / Math.sqrt(v[c] + bn.eps));
      const wf = new Float32Array(w.length);
      for (let i = 0; i < w.length; i++) wf[i] = w[i] * s[i % C];
      const bf = new Float32Array(C);
      for (let c = 0; c < C; c++) bf[c] = ((b ? b[c] : 0) - mu[c]) * s[c] + beta[c];
      const W = keep(tensor(wf, layer.weight.shape));
      const B = keep(tensor(bf, [C]));
      owned.push(W, B);
      if (layer instanceof Conv2d) {
        const [KH, KW] = layer.weight.shape;
        overrides.set(layer, (x) => {
          if (x.rank !== 4) throw new Error(`${what}: '${names.get(layer)}' got ${fmtShape(x.shape)}, expected NHWC [N, H, W, C]`);
          const [N, H, Wd] = x.shape;
          const shape = [N, convOutSize(H, KH, layer.stride, layer.padding), convOutSize(Wd, KW, layer.stride, layer.padding), cout];
          const placeholder = poison ? full(shape, NaN) : empty(shape, 'f32', what);
          deferred.set(placeholder, x);
          return placeholder;
        });
        overrides.set(bn, (placeholder, residual) => {
          const x = deferred.get(placeholder);
          if (!x) throw new Error(`${what}: '${names.get(bn)}' was called on a tensor its conv '${names.get(layer)}' did not return`);
          deferred.delete(placeholder);
          return conv2d(x, W, B, { stride: layer.stride, padding: layer.padding, epilogue: { add: residual ?? undefined, relu: bn.relu } });
        });
      } else {
        const lin = layer;
        overrides.set(lin, (x) => {
          if (x.rank < 2 || x.shape[x.rank - 1] !== lin.inFeatures) throw new Error(`${what}: Linear(${lin.inFeatures}→${lin.outFeatures}) got ${fmtShape(x.shape)}`);
          return add(matmul(x, W), B);
        });
        // the Linear now computes bn(linear(x)); a residual is still added, and the ReLU applied
        overrides.set(bn, (x, residual) => {
          if (residual) return bn.relu ? addRelu(x, residual) : add(x, residual);
          return bn.relu ? relu(x) : x.share();
        });
      }
    }
    const forward = (x: Tensor) => {
      try {
        return noGrad(() => tidy(() => withForwards(overrides, () => model.forward(x))));
      } finally {
        deferred.clear(); // placeholders of a forward that threw
      }
    };

    // the check: the folded forward against the traced one on the same sample
    const diff = noGrad(() => tidy(() => {
      poison = true;
      let y: Tensor;
      try {
        y = forward(sample);
      } finally {
        poison = false;
      }
      if (y.shape.length !== reference.shape.length || y.shape.some((d, i) => d !== reference.shape[i])) {
        throw new Error(`${what}: the folded forward returned ${fmtShape(y.shape)}, the model ${fmtShape(reference.shape)}`);
      }
      return [y, reference];
    }));
    const [yf, yr] = await Promise.all(diff.map((t) => t.toArray()));
    diff[0].dispose();
    let maxDiff = 0;
    let maxRef = 0;
    for (let i = 0; i < yr.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(yf[i] - yr[i]));
      maxRef = Math.max(maxRef, Math.abs(yr[i]));
    }
    if (!(maxDiff <= Number.MAX_VALUE)) maxDiff = Infinity; // NaN
    const sampleError = maxDiff / Math.max(1, maxRef);
    if (!(sampleError <= tolerance)) {
      throw new Error(`${what}: the folded forward differs from the eval-mode forward by ${maxDiff.toExponential(3)} (max |y| ${maxRef.toExponential(3)}) on a sample ${fmtShape(sample.shape)}; ` +
        `an op outside the modules may read a folded layer's output (pairs: ${pairs.map((p) => `${names.get(p.layer)}+${names.get(p.bn)}`).join(', ')})`);
    }
    let disposed = false;
    return {
      forward: (x) => {
        if (disposed) throw new Error(`${what}: this folded network was disposed`);
        return forward(x);
      },
      folded: pairs.map((p) => ({ layer: names.get(p.layer)!, bn: names.get(p.bn)! })),
      unfolded,
      sampleError,
      dispose: () => {
        disposed = true;
        for (const t of owned.splice(0)) t.dispose();
      },
    };
  } catch (e) {
    for (const t of owned) t.dispose();
    throw e;
  } finally {
    reference.dispose();
  }
}
