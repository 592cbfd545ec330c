// matmul rows: square sizes, and the BYOL projector/predictor MLP shapes (batch 256, 512 → 4096 → 256) in the
// forward and in both backward products, with the transposes the backward uses (flags, never copies).

import { tensor, matmul, fmtShape } from '../../nn/index.ts';
import type { BenchCase } from '../case.ts';
import { randomData, readOurs, readPeer } from '../case.ts';

export function matmulCase(name: string, M: number, K: number, N: number, transA = false, transB = false, extra: Partial<BenchCase> = {}): BenchCase {
  const sa = transA ? [K, M] : [M, K];
  const sb = transB ? [N, K] : [K, N];
  return {
    name,
    shape: `${fmtShape(sa)}${transA ? 'ᵀ' : ''}·${fmtShape(sb)}${transB ? 'ᵀ' : ''}`,
    flops: 2 * M * N * K,
    ...extra,
    ours() {
      const a = tensor(randomData(M * K, 1), sa);
      const b = tensor(randomData(K * N, 2), sb);
      return {
        op: () => matmul(a, b, transA, transB).dispose(),
        output: readOurs(() => matmul(a, b, transA, transB)),
        dispose: () => {
          a.dispose();
          b.dispose();
        },
      };
    },
    peer(tf) {
      const a = tf.tensor(randomData(M * K, 1), sa);
      const b = tf.tensor(randomData(K * N, 2), sb);
      return {
        op: () => tf.matMul(a, b, transA, transB).dispose(),
        output: readPeer(() => tf.matMul(a, b, transA, transB)),
        dispose: () => {
          a.dispose();
          b.dispose();
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
