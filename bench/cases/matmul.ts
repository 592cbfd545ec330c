// matmul rows: square sizes, and the BYOL projector/predictor MLP shapes (batch 256, 512 → 4096 → 256) in the
// forward and in both backward products, with the transposes the backward uses (flags, never copies).

import { tensor, matmul, fmtShape } from '../../engine/index.ts';
import type { BenchCase } from '../case.ts';
import { randomData, normalizedDiff } from '../case.ts';

export function matmulCase(name: string, M: number, K: number, N: number, transA = false, transB = false, extra: Partial<BenchCase> = {}): BenchCase {
  const sa = transA ? [K, M] : [M, K];
  const sb = transB ? [N, K] : [K, N];
  return {
    name,
    shape: `${fmtShape(sa)}${transA ? 'ᵀ' : ''}·${fmtShape(sb)}${transB ? 'ᵀ' : ''}`,
    flops: 2 * M * N * K,
    ...extra,
    setup(tf) {
      const ad = randomData(M * K, 1);
      const bd = randomData(K * N, 2);
      const a = tensor(ad, sa);
      const b = tensor(bd, sb);
      const pa = tf?.tensor(ad, sa);
      const pb = tf?.tensor(bd, sb);
      return {
        ours: () => matmul(a, b, transA, transB).dispose(),
        peer: tf ? () => tf.matMul(pa!, pb!, transA, transB).dispose() : undefined,
        check: tf
          ? async () => {
              const c = matmul(a, b, transA, transB);
              const got = await c.toArray();
              c.dispose();
              const pc = tf.matMul(pa!, pb!, transA, transB);
              const want = await pc.data();
              pc.dispose();
              return normalizedDiff(got, want);
            }
          : undefined,
        dispose: () => {
          a.dispose();
          b.dispose();
          pa?.dispose();
          pb?.dispose();
        },
      };
    },
  };
}

export const matmulCases: BenchCase[] = [
  matmulCase('matmul', 256, 256, 256),
  matmulCase('matmul', 512, 512, 512),
  matmulCase('matmul', 1024, 1024, 1024),
  matmulCase('matmul', 2048, 2048, 2048, false, false, { fullOnly: true, peerBudgetMs: 1 }),
  // projector fc1: x [256, 512] · W [512, 4096]; backward dx = dy · Wᵀ, dW = xᵀ · dy
  matmulCase('mlp fc1 fwd', 256, 512, 4096),
  matmulCase('mlp fc1 dx', 256, 4096, 512, false, true),
  matmulCase('mlp fc1 dW', 512, 256, 4096, true, false),
  // projector fc2: h [256, 4096] · W [4096, 256]; backward dx = dy · Wᵀ, dW = hᵀ · dy
  matmulCase('mlp fc2 fwd', 256, 4096, 256),
  matmulCase('mlp fc2 dx', 256, 256, 4096, false, true),
  matmulCase('mlp fc2 dW', 4096, 256, 256, true, false),
];
