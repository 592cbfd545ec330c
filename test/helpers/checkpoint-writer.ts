// Child process for the checkpoint crash test: saves checkpoints of known content in a loop and reports each
// completed save on stdout, until the parent kills it with SIGKILL. Usage: checkpoint-writer.ts <dir> <floats>

import { saveCheckpoint } from '../../nn/checkpoint-node.ts';

/** The content of step `step`: the parent recomputes it to check what it loads. */
export function stepData(step: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = step * 1000 + (i % 997);
  return out;
}

if (process.argv[1]?.endsWith('checkpoint-writer.ts')) {
  const dir = process.argv[2];
  const n = Number(process.argv[3]);
  for (let step = 1; ; step++) {
    const tensors = new Map([
      ['params', { shape: [n], data: stepData(step, n) }],
      ['opt.momentum', { shape: [3, 5], data: stepData(step + 1, 15) }],
    ]);
    await saveCheckpoint(dir, step, { tensors, meta: { step, lr: 0.1 * step, note: 'x'.repeat(step % 40) } }, { keep: 2 });
    process.stdout.write(`saved ${step}\n`);
  }
}
