// conv2d rows at ResNet layer shapes (stride 1, padding 1 = TF's 'same' for 3x3): forward, input gradient,
// weight gradient, and forward + both gradients. The peer runs tf.conv2d, Conv2DBackpropInput,
// Conv2DBackpropFilter and tf.grads of conv2d on identical NHWC/HWIO data. The rows run the adapter's default
// kernels (defaultConvTuning()); the '(tuneConv)' rows run tuneConv()'s choice on the same layer in the same run,
// without the peer, so that the two can be compared side by side.

import { tensor, conv2d, fmtShape } from '../../nn/index.ts';
import { conv2dBackwardInput, conv2dBackwardWeight, convOutSize, defaultConvTuning, type ConvGeom, type ConvTuning } from '../../kernels/conv2d.ts';
import { tuneConv } from '../../kernels/conv2d-tune.ts';
import type { BenchCase, SideOps } from '../case.ts';
import { randomData, readOurs, readPeer } from '../case.ts';
import type { Tf } from '../peer.ts';

type Which = 'fwd' | 'dx' | 'dW' | 'fwd+dx+dW';

/** The last result (the one compared between engines); the others are freed. */
function lastOf<T extends { dispose(): void }>(outs: T[]): T {
  outs.slice(0, -1).forEach((t) => t.dispose());
  return outs[outs.length - 1];
}

type Kernels = 'default' | 'tuned';

function convCase(which: Which, N: number, H: number, C: number, K: number, extra: Partial<BenchCase> = {}, kernels: Kernels = 'default'): BenchCase {
  const g: ConvGeom = { N, H, W: H, Cin: C, KH: 3, KW: 3, Cout: K, stride: 1, pad: 1, OH: convOutSize(H, 3, 1, 1), OW: convOutSize(H, 3, 1, 1) };
  const xs = [N, H, H, C];
  const ws = [3, 3, C, K];
  const ys = [N, g.OH, g.OW, K];
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const one = 2 * N * g.OH * g.OW * K * 9 * C;
  const c: BenchCase = {
    name: `conv2d ${which}${kernels === 'tuned' ? ' (tuneConv)' : ''}`,
    shape: `x ${fmtShape(xs)} w ${fmtShape(ws)}`,
    flops: which === 'fwd+dx+dW' ? 3 * one : one,
    ...extra,
    async ours(): Promise<SideOps> {
      const tuning: ConvTuning = kernels === 'tuned' ? (await tuneConv({ apply: false })).choice : defaultConvTuning();
      const x = tensor(randomData(size(xs), 1), xs);
      const w = tensor(randomData(size(ws), 2), ws);
      const dy = tensor(randomData(size(ys), 3), ys);
      const opts = { stride: 1, padding: 1, tuning };
      const run = () => {
        if (which === 'fwd') return [conv2d(x, w, null, opts)];
        if (which === 'dx') return [conv2dBackwardInput(dy, w, g, opts)];
        if (which === 'dW') return [conv2dBackwardWeight(x, dy, g, opts)];
        return [conv2d(x, w, null, opts), conv2dBackwardInput(dy, w, g, opts), conv2dBackwardWeight(x, dy, g, opts)];
      };
      return {
        op: () => run().forEach((t) => t.dispose()),
        output: readOurs(() => lastOf(run())),
        dispose: () => [x, w, dy].forEach((t) => t.dispose()),
      };
    },
    peer(tf: Tf): SideOps {
      const x = tf.tensor(randomData(size(xs), 1), xs) as any;
      const w = tf.tensor(randomData(size(ws), 2), ws) as any;
      const dy = tf.tensor(randomData(size(ys), 3), ys) as any;
      const attrs: any = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC', dilations: [1, 1] };
      const grads = tf.grads((a: any, b: any) => tf.conv2d(a, b, 1, 'same'));
      const run = (): any[] => {
        if (which === 'fwd') return [tf.conv2d(x, w, 1, 'same')];
        if (which === 'dx') return [tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: xs })];
        if (which === 'dW') return [tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: ws })];
        const [gx, gw] = grads([x, w], dy);
        return [gx, gw];
      };
      return {
        op: () => run().forEach((t) => t.dispose()),
        output: readPeer(() => lastOf(run())),
        dispose: () => [x, w, dy].forEach((t) => t.dispose()),
      };
    },
  };
  if (kernels === 'tuned') delete c.peer;
  return c;
}

// ResNet-18 (CIFAR-style) layer shapes at batch 32; the 32x32x64 layer is the baselines document's.
export const convCases: BenchCase[] = [
  convCase('fwd', 32, 32, 64, 64),
  convCase('dx', 32, 32, 64, 64),
  convCase('dW', 32, 32, 64, 64),
  convCase('fwd+dx+dW', 32, 32, 64, 64),
  // the same layer with tuneConv()'s choice, beside the default's rows of this run
  ...(['fwd', 'dx', 'dW', 'fwd+dx+dW'] as const).map((w) => convCase(w, 32, 32, 64, 64, {}, 'tuned')),
  // the later stages, forward and both gradients (full run only: tfjs takes seconds per dW here)
  ...([[16, 128], [8, 256], [4, 512]] as const).flatMap(([H, C]) =>
    (['fwd', 'dx', 'dW'] as const).flatMap((w) => [convCase(w, 32, H, C, C, { fullOnly: true }), convCase(w, 32, H, C, C, { fullOnly: true }, 'tuned')]),
  ),
];
