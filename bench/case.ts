// What a benchmark row is. A case is a small declarative entry: a name, the shape it runs at, the work per op
// (FLOPs, or bytes for memory-bound ops), and one builder per engine that makes the case's inputs and returns
// a closure recording a single op. The two builders are independent (same seeded data), so the peer's half can
// run in another process (bench/peer-worker.ts). bench/run.ts times the closures and compares the outputs.

import { uniformArray } from '../engine/random.ts';
import type { Tf } from './peer.ts';
import type { Tensor } from '../engine/tensor.ts';

export interface SideOps {
  /** Records one op (no waiting); disposes what it creates. */
  op: () => void;
  /** Runs one op and reads its output back: the cross-check between engines (also a warm-up). */
  output?: () => Promise<Float32Array>;
  /** Frees this side's inputs. */
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
  /** images per op, for training steps → images/s column */
  images?: number;
  /**
   * model FLOPs per op, counted analytically from the layer shapes (training steps: conv and linear multiply-adds
   * x2, forward + backward), for the step's FLOP rate beside the matmul 1024 rate of the same run
   */
  modelFlops?: number;
  /** the case for the PyTorch peer (bench/peer-torch.py), as JSON; absent where that peer has no such case */
  torch?: Record<string, unknown>;
  /** only in the full run (slow for the peer, e.g. tfjs matmul 2048 takes ~4 s per op) */
  fullOnly?: boolean;
  /** longest the peer may spend sampling this case, ms (default: the run's budget) */
  peerBudgetMs?: number;
  /** our engine's op; the device is ready */
  ours: () => SideOps | Promise<SideOps>;
  /** the same op in tfjs-backend-webgpu on identical inputs; absent where the peer has no such op */
  peer?: (tf: Tf) => SideOps | Promise<SideOps>;
}

/** Deterministic uniform values in [-1, 1) from the engine's Rng, so both sides see identical inputs. */
export function randomData(n: number, seed = 1): Float32Array {
  return uniformArray(n, seed);
}

/** An output(): records the op, reads its result with `read` and frees it. */
function readAndFree<T extends { dispose(): void }>(run: () => T, read: (t: T) => Promise<unknown>): () => Promise<Float32Array> {
  return async () => {
    const t = run();
    try {
      return (await read(t)) as Float32Array;
    } finally {
      t.dispose();
    }
  };
}

/** An output() for our side. */
export const readOurs = (run: () => Tensor) => readAndFree(run, (t) => t.toArray());

/** The same for a tfjs op's result. */
export const readPeer = (run: () => { data(): Promise<unknown>; dispose(): void }) => readAndFree(run, (t) => t.data());

/** max |a - b| / max(|b|, 1e-3): the same normalized error the op tests use. */
export { normalizedError as normalizedDiff } from '../engine/ref.ts';
