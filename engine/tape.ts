// Autograd tape. Each differentiable op appends a record while grad mode is on and an input requires grad.
// backward() walks the records in reverse, accumulating gradients into leaves' .grad, and then releases the
// whole tape (PyTorch's retain_graph=False): one forward and one backward per training step.

import { Tensor, tidy, keep, fmtShape, type TapeNode } from './tensor.ts';
import { onRelease } from './device.ts';
import { ew, onesLike } from './ew.ts';

let tape: TapeNode[] = [];
let gradEnabled = true;
// A tape this long without a backward() is almost always forward passes that nobody differentiates (evaluation
// without noGrad, logits kept outside tidy): every record holds its saved tensors on the GPU until backward()
// or clearTape(). Warned once per process; setTapeWarning() moves the bound.
let warnAt = 10_000;
let warned = false;
// records of a released (or lost) device refer to dead tensors: a new device starts with an empty tape
onRelease(() => clearTape());

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording: for the target network, evaluation and optimizer updates. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      return r.finally(() => {
        gradEnabled = prev;
      }) as T;
    }
    gradEnabled = prev;
    return r;
  } catch (e) {
    gradEnabled = prev;
    throw e;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad);
}

/**
 * Records an op. `save` lists the tensors its backward reads; they are shared (not copied) and released after
 * backward. The backward is told which inputs need a gradient and returns null for the others. Call only when
 * needsGrad(...inputs) is true.
 */
export function record(
  op: string,
  inputs: Tensor[],
  output: Tensor,
  backward: (dy: Tensor, saved: Tensor[], needs: boolean[], take: (k: number) => Tensor | null) => (Tensor | null)[],
  save: Tensor[] = [],
): void {
  const saved = save.map((t) => keep(t.share()));
  // which inputs want a gradient, so a backward computes only those (null for the others)
  const needs = inputs.map((t) => t.requiresGrad);
  const node: TapeNode = { op, inputs, output, saved, backward: (dy, take) => backward(dy, saved, needs, take) };
  output.requiresGrad = true;
  output._node = node;
  tape.push(node);
  if (tape.length >= warnAt && !warned) {
    warned = true;
    console.warn(`byol-webgpu: the autograd tape holds ${tape.length} ops without a backward() (last: '${op}'), and each keeps ` +
      'the tensors its gradient needs on the GPU. Run forward passes that are not differentiated under noGrad() ' +
      '(and inside tidy()), or call clearTape(); setTapeWarning() changes this bound.');
  }
}

/** Sets the tape length that triggers the one-time warning about forward passes never differentiated (Infinity: off). */
export function setTapeWarning(ops: number): number {
  if (!(ops >= 1)) throw new Error(`setTapeWarning: expected a number of ops >= 1 (or Infinity), got ${ops}`);
  const prev = warnAt;
  warnAt = ops;
  warned = false;
  return prev;
}

/** A detached view: same data, no gradient history. */
export function detach(t: Tensor): Tensor {
  return t.share();
}

export function tapeLength(): number {
  return tape.length;
}

/** Drops every record without computing gradients (e.g. after a forward pass that will not be differentiated). */
export function clearTape(): void {
  freeTape('clearTape');
}

function freeTape(by: 'backward' | 'clearTape'): void {
  for (const n of tape) {
    for (const s of n.saved) s.dispose();
    // the graph is gone: the output is now a constant for any later graph
    n.output._node = null;
    n.output.requiresGrad = false;
    n.output._graphFreed = by;
  }
  tape = [];
}

/**
 * Computes gradients of `root` with respect to every tensor that requires grad and accumulates them into
 * leaves' `.grad`. A non-scalar root needs an explicit gradient of its shape.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  root.assertLive('backward');
  if (!root.requiresGrad && root._graphFreed) {
    const by = root._graphFreed === 'backward' ? 'an earlier backward()' : 'clearTape()';
    throw new Error(`backward: the graph that computed tensor ${fmtShape(root.shape)} was already freed by ${by}; ` +
      'backward() releases the whole tape (as PyTorch without retain_graph), so run the forward pass again before a second backward');
  }
  if (!root.requiresGrad) throw new Error(`backward: tensor ${fmtShape(root.shape)} does not require grad (no input of the graph has requiresGrad, or it was computed under noGrad)`);
  if (!grad && root.size !== 1) {
    throw new Error(`backward: root has shape ${fmtShape(root.shape)}; backward through a non-scalar needs a gradient of the same shape`);
  }
  if (grad && (grad.shape.length !== root.shape.length || grad.shape.some((d, i) => d !== root.shape[i]))) {
    throw new Error(`backward: gradient shape ${fmtShape(grad.shape)} does not match root shape ${fmtShape(root.shape)}`);
  }
  const grads = new Map<Tensor, Tensor>();
  const seed = keep(grad ? grad.share() : onesLike(root));
  grads.set(root, seed);
  const accumulate = (t: Tensor, g: Tensor, op: string) => {
    if (g.shape.length !== t.shape.length || g.shape.some((d, i) => d !== t.shape[i])) {
      throw new Error(`backward of ${op}: gradient ${fmtShape(g.shape)} does not match input ${fmtShape(t.shape)} (engine bug)`);
    }
    if (!t._node) {
      // a leaf: accumulate into .grad, which outlives this call
      if (t.disposed) return;
      if (t.grad) {
        const sum = keep(tidy(() => ew('grad.accumulate', 'a + b', [t.grad!, g], g.shape)));
        t.grad.dispose();
        t.grad = sum;
      } else t.grad = keep(g.share());
      return;
    }
    const prev = grads.get(t);
    grads.set(t, prev ? keep(ew('grad.accumulate', 'a + b', [prev, g], g.shape)) : keep(g.share()));
    prev?.dispose();
  };
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    for (let i = tape.length - 1; i >= 0; i--) {
      const node = tape[i];
      const dy = grads.get(node.output);
      if (!dy) continue;
      grads.delete(node.output);
      // an input's pending gradient, handed over to the backward (which owns it from then on); leaves keep
      // theirs in .grad, which take() never touches
      const take = (k: number): Tensor | null => {
        const t = node.inputs[k];
        const g = t && t._node ? grads.get(t) : undefined;
        if (!g || node.inputs.indexOf(t) !== k) return null;
        grads.delete(t);
        return g;
      };
      tidy(() => {
        const gs = node.backward(dy, take);
        gs.forEach((g, k) => {
          const x = node.inputs[k];
          if (g && x.requiresGrad) accumulate(x, g, node.op);
        });
      });
      dy.dispose();
    }
  } finally {
    gradEnabled = prev;
    for (const g of grads.values()) g.dispose();
    freeTape('backward');
  }
}
