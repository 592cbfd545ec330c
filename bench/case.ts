// What a benchmark row is. A case is a small declarative entry: a name, the shape it runs at, the work per op
// (FLOPs, or bytes for memory-bound ops) and a setup that builds the same inputs for our engine and for the
// peer and returns one closure per side that records a single op. bench/run.ts times the closures.

import type { Tf } from './peer.ts';

export interface CaseOps {
  /** Records one op of our engine (no waiting); disposes what it creates. */
  ours: () => void;
  /** The same op in tfjs-backend-webgpu; absent where the peer has no such op. */
  peer?: () => void;
  /** Runs both once and returns the normalized max difference of their outputs (also warms both up). */
  check?: () => Promise<number>;
  /** Frees the inputs of both sides. */
  dispose: () => void;
}

export interface BenchCase {
  /** what runs, e.g. 'matmul' or 'mlp fc1 dW' */
  name: string;
  /** the shapes, e.g. '[256, 512]ᵀ·[256, 4096]' */
  shape: string;
  /** floating-point operations per op (multiply-add = 2) → GFLOPS column */
  flops?: number;
  /** bytes read + written per op, for memory-bound ops → GB/s column */
  bytes?: number;
  /** only in the full run (slow for the peer, e.g. tfjs matmul 2048 takes ~4 s per op) */
  fullOnly?: boolean;
  /** longest the peer may spend sampling this case, ms (default: the run's budget) */
  peerBudgetMs?: number;
  setup: (tf: Tf | null) => CaseOps | Promise<CaseOps>;
}

/** Deterministic uniform values in [-1, 1) (mulberry32), so both sides see identical inputs. */
export function randomData(n: number, seed = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

/** max |a - b| / max(|b|, 1e-3): the same normalized error the op tests use. */
export function normalizedDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let err = 0;
  let scale = 1e-3;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= err)) err = Number.isNaN(d) ? Infinity : d;
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
}
